//! One BitTorrent client: a peer id, a listening socket, shared rate caps,
//! and the torrents (sessions) it runs. Inbound connections are routed to a
//! session by the info-hash in their handshake.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::ratelimit::RateLimiter;
use crate::session::Session;
use ccfd_proto::metainfo::InfoHash;
use ccfd_proto::wire::{Handshake, HANDSHAKE_LEN};
use ccfd_tracker::{TrackerClient, TrackerError, UdpTiming};

/// Peer id prefix (Azureus style): client code CB, version 0.1.0.0.
pub const PEER_ID_PREFIX: &[u8; 8] = b"-CB0100-";
/// How long a remote peer may take to send its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tracker(#[from] TrackerError),
}

/// Network settings shared by every torrent of a client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Address for the listener and every outgoing socket (each test peer gets its own 127.0.0.x).
    pub bind: IpAddr,
    /// Listen port; 0 picks a free one.
    pub port: u16,
    /// Upload cap in bytes per second, over all peers.
    pub upload_rate: Option<u64>,
    /// Download cap in bytes per second, over all peers.
    pub download_rate: Option<u64>,
    pub udp_timing: UdpTiming,
    /// Connections over all torrents, inbound and outbound together.
    pub max_connections: usize,
    /// Offer coded cooperation (ccfd) to peers; `--no-coded` turns it off.
    pub coded: bool,
    /// Drops and delays our inbound coded datagrams (tests of lossy links).
    pub udp_shim: Option<crate::coded::UdpShim>,
    /// Corrupts every coded payload we send: the polluter of the hostile-peer tests.
    pub coded_polluter: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 6881,
            upload_rate: None,
            download_rate: None,
            udp_timing: UdpTiming::default(),
            max_connections: 200,
            coded: true,
            udp_shim: None,
            coded_polluter: false,
        }
    }
}

/// What every session of a client shares.
pub struct ClientShared {
    pub peer_id: [u8; 20],
    pub bind: IpAddr,
    pub listen_addr: SocketAddr,
    pub upload: RateLimiter,
    pub download: RateLimiter,
    pub trackers: TrackerClient,
    sessions: Mutex<HashMap<InfoHash, Arc<Session>>>,
    pub shutdown: CancellationToken,
    connections: Arc<AtomicUsize>,
    max_connections: usize,
    /// The coded-UDP transport, when coded cooperation is on.
    pub coded: Option<Arc<crate::coded::CodedTransport>>,
    pub coded_polluter: bool,
}

/// One of the client's connection slots, held for a connection's life.
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClientShared {
    pub(crate) fn add_session(&self, session: Arc<Session>) {
        self.sessions.lock().insert(session.meta.info_hash, session);
    }

    pub(crate) fn remove_session(&self, info_hash: &InfoHash) {
        self.sessions.lock().remove(info_hash);
    }

    /// The upload cap in bytes per second, if any.
    pub fn upload_cap(&self) -> Option<u64> {
        self.upload.rate()
    }

    /// Takes a connection slot, or `None` when the client-wide cap is reached.
    pub fn connection_slot(&self) -> Option<ConnectionSlot> {
        let taken = self.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_connections).then_some(n + 1));
        taken.ok().map(|_| ConnectionSlot(self.connections.clone()))
    }

    fn session(&self, info_hash: &InfoHash) -> Option<Arc<Session>> {
        self.sessions.lock().get(info_hash).cloned()
    }

    /// Opens a TCP connection from our bind address.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if !self.bind.is_unspecified() && self.bind.is_ipv4() == addr.is_ipv4() {
            socket.bind(SocketAddr::new(self.bind, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// A running client.
#[derive(Clone)]
pub struct Client {
    pub shared: Arc<ClientShared>,
}

impl Client {
    /// Binds the listener and starts accepting peers.
    pub async fn start(config: ClientConfig) -> Result<Client, ClientError> {
        let addr = SocketAddr::new(config.bind, config.port);
        let listener = TcpListener::bind(addr).await.map_err(|source| ClientError::Listen { addr, source })?;
        let listen_addr = listener.local_addr().map_err(|source| ClientError::Listen { addr, source })?;
        let mut peer_id = [0u8; 20];
        peer_id[..8].copy_from_slice(PEER_ID_PREFIX);
        {
            let mut rng = rand::rng();
            for b in &mut peer_id[8..] {
                *b = rng.sample(rand::distr::Alphanumeric);
            }
        }
        let bind = (!config.bind.is_unspecified()).then_some(config.bind);
        let shutdown = CancellationToken::new();
        let coded = match config.coded {
            true => Some(
                crate::coded::CodedTransport::start(config.bind, config.udp_shim, shutdown.clone())
                    .await
                    .map_err(|source| ClientError::Listen { addr, source })?,
            ),
            false => None,
        };
        let shared = Arc::new(ClientShared {
            peer_id,
            bind: config.bind,
            listen_addr,
            upload: RateLimiter::new(config.upload_rate),
            download: RateLimiter::new(config.download_rate),
            trackers: TrackerClient::new(bind, config.udp_timing)?,
            sessions: Mutex::new(HashMap::new()),
            shutdown,
            connections: Arc::new(AtomicUsize::new(0)),
            max_connections: config.max_connections,
            coded,
            coded_polluter: config.coded_polluter,
        });
        tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(Client { shared })
    }

    /// The address peers reach us on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen_addr
    }

    /// Stops the listener and every session's tasks.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }
}

async fn accept_loop(shared: Arc<ClientShared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, addr)) => {
                let Some(slot) = shared.connection_slot() else {
                    tracing::debug!(%addr, "inbound connection refused: connection limit");
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = accept_one(shared, stream, addr).await {
                        tracing::debug!(%addr, error = %e, "inbound connection refused");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn accept_one(shared: Arc<ClientShared>, mut stream: TcpStream, addr: SocketAddr) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = [0u8; HANDSHAKE_LEN];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut buf)).await??;
    let theirs = Handshake::parse(&buf)?;
    let session = shared.session(&theirs.info_hash).ok_or_else(|| anyhow::anyhow!("unknown info-hash {}", theirs.info_hash))?;
    let ours = Handshake::new(theirs.info_hash, shared.peer_id);
    stream.write_all(&ours.to_bytes()).await?;
    crate::peer::run(session, stream, addr, theirs).await;
    Ok(())
}
