//! One BitTorrent client: the network it shares (`net::Net`), the coded
//! cooperation router, and the torrents it runs. Inbound connections are
//! routed to a torrent by the info-hash in their handshake; `add_torrent`
//! is the one way to start a torrent.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ccfd_proto::metainfo::{InfoHash, Metainfo};
use ccfd_proto::wire::Handshake;
use ccfd_tracker::UdpTiming;
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::ccfd::{CodedRouter, UdpShim};
use crate::discovery::dht::{Dht, DhtConfig};
use crate::net::handshake::{handshake, HandshakeError, Side, HANDSHAKE_TIMEOUT};
use crate::net::mse::{self, Encryption, MseError, MseReader, BT_PROTOCOL};
use crate::net::transport::PeerStream;
use crate::net::{Listeners, Net, NetConfig, NetError};
use crate::storage::{OpenMode, StorageError};
use crate::swarm::{CodedSetup, Services, Swarm, TorrentConfig};
use crate::torrent::Torrent;

/// Why a client could not start.
pub type ClientError = NetError;

/// Settings of a whole client.
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
    /// Paths with a shorter TCP round trip (and no loss) get plain blocks
    /// from coded peers (`ccfd::coding_pays`); zero: coded on every path.
    pub coded_min_rtt: std::time::Duration,
    /// Drops and delays our inbound coded datagrams (tests of lossy links).
    pub udp_shim: Option<UdpShim>,
    /// Corrupts every coded payload we send: the polluter of the hostile-peer tests.
    pub coded_polluter: bool,
    /// Run a DHT node (BEP 5) on the shared UDP port; `None`: no DHT.
    pub dht: Option<DhtConfig>,
    /// Message stream encryption (MSE/PE): prefer (the default), require, off.
    pub encryption: Encryption,
    /// Peer transports: TCP and uTP (BEP 29); `--no-tcp` / `--no-utp` turn one off.
    pub tcp: bool,
    pub utp: bool,
    /// Map our ports on the router (UPnP IGD, NAT-PMP/PCP); the binary
    /// turns it on, `--no-port-mapping` off; never on a loopback bind.
    pub port_mapping: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let net = NetConfig::default();
        ClientConfig {
            bind: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: net.port,
            upload_rate: None,
            download_rate: None,
            udp_timing: net.udp_timing,
            max_connections: net.max_connections,
            coded: true,
            coded_min_rtt: crate::ccfd::DEFAULT_MIN_RTT,
            udp_shim: None,
            coded_polluter: false,
            dht: None,
            encryption: Encryption::Prefer,
            tcp: true,
            utp: true,
            port_mapping: false,
        }
    }
}

/// A running client.
#[derive(Clone)]
pub struct Client {
    pub net: Arc<Net>,
    services: Services,
    torrents: Arc<Mutex<HashMap<InfoHash, Arc<Swarm>>>>,
}

impl Client {
    /// Binds the listener and the UDP socket and starts accepting peers.
    pub async fn start(config: ClientConfig) -> Result<Client, ClientError> {
        let net_config = NetConfig {
            bind: config.bind,
            port: config.port,
            upload_rate: config.upload_rate,
            download_rate: config.download_rate,
            udp_timing: config.udp_timing,
            max_connections: config.max_connections,
            dht: config.dht.is_some(),
            encryption: config.encryption,
            tcp: config.tcp,
            utp: config.utp,
            port_mapping: config.port_mapping,
        };
        let (net, listeners) = Net::start(&net_config).await?;
        let coded = config.coded.then(|| CodedSetup {
            router: CodedRouter::start(net.udp.clone(), config.udp_shim),
            polluter: config.coded_polluter,
            min_rtt: config.coded_min_rtt,
        });
        let dht = config.dht.map(|c| Dht::start(net.udp.clone(), c, net.shutdown.clone()));
        let client = Client { net, services: Services { coded, dht }, torrents: Arc::new(Mutex::new(HashMap::new())) };
        tokio::spawn(accept_loop(client.clone(), listeners));
        Ok(client)
    }

    /// The address peers reach us on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.net.listen_addr
    }

    /// Opens a torrent's storage (re-checking what is there) and starts it:
    /// its swarm, its tasks, and the routing of its inbound peers.
    pub async fn add_torrent(
        &self,
        meta: Arc<Metainfo>,
        root: &Path,
        mode: OpenMode,
        config: TorrentConfig,
        peers: Vec<SocketAddr>,
    ) -> Result<Arc<Torrent>, StorageError> {
        let torrent = Torrent::start(self.net.clone(), self.services.clone(), meta.clone(), root, mode, config, peers).await?;
        let mut torrents = self.torrents.lock();
        torrents.retain(|_, s| !s.shutdown.is_cancelled());
        torrents.insert(meta.info_hash, torrent.swarm().clone());
        Ok(torrent)
    }

    /// The running torrent an encrypted handshake names by `HASH('req2', info-hash)`.
    fn torrent_by_req2(&self, wanted: &[u8; 20]) -> Option<InfoHash> {
        self.torrents.lock().iter().filter(|(_, s)| !s.shutdown.is_cancelled()).map(|(h, _)| *h).find(|h| mse::req2(h) == *wanted)
    }

    /// The running torrent with this info-hash, if any.
    fn swarm(&self, info_hash: &InfoHash) -> Option<Arc<Swarm>> {
        self.torrents.lock().get(info_hash).filter(|s| !s.shutdown.is_cancelled()).cloned()
    }

    /// The client's DHT node, if it runs one.
    pub fn dht(&self) -> Option<&Dht> {
        self.services.dht.as_ref()
    }

    /// Stops the listener and every torrent's tasks.
    pub fn shutdown(&self) {
        self.net.shutdown.cancel();
    }

    /// Stops everything, and waits (briefly) for what must be saved or
    /// undone: the DHT's routing table, the router's port mappings.
    pub async fn close(&self) {
        self.shutdown();
        if let Some(dht) = &self.services.dht {
            dht.closed().await;
        }
        self.net.closed().await;
    }
}

/// Takes inbound connections, TCP and uTP alike, within the client's
/// connection slots, and hands each to `accept_one`.
async fn accept_loop(client: Client, listeners: Listeners) {
    let Listeners { tcp, mut utp } = listeners;
    loop {
        let stream = tokio::select! {
            _ = client.net.shutdown.cancelled() => return,
            accepted = accept_tcp(&tcp) => match accepted.and_then(|(s, addr)| PeerStream::from_tcp(s, addr, false)) {
                Ok(stream) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(stream) = next_utp(&mut utp) => stream,
        };
        let Some(slot) = client.net.connection_slot() else {
            tracing::debug!(addr = %stream.remote, "inbound connection refused: connection limit");
            continue;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let _slot = slot;
            accept_one(client, stream).await;
        });
    }
}

async fn accept_tcp(listener: &Option<TcpListener>) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn next_utp(accepted: &mut Option<tokio::sync::mpsc::Receiver<PeerStream>>) -> Option<PeerStream> {
    match accepted {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Why an inbound connection was turned away.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error(transparent)]
    Mse(#[from] MseError),
    #[error("a plain handshake, and encryption is required")]
    PlainHandshake,
    #[error("an encrypted handshake, and encryption is off")]
    EncryptedHandshake,
    #[error("too many encrypted handshakes at once")]
    MseBusy,
}

/// Handshakes an inbound connection (plain, or encrypted: told apart by
/// its first 20 bytes) and hands it to its torrent.
async fn accept_one(client: Client, stream: PeerStream) {
    let addr = stream.remote;
    match open_inbound(&client, stream).await {
        Ok((stream, theirs)) => {
            if let Some(swarm) = client.swarm(&theirs.info_hash) {
                crate::peer::run(swarm, stream, theirs).await;
            }
        }
        Err(e) => tracing::debug!(%addr, error = %e, "inbound connection refused"),
    }
}

async fn open_inbound(client: &Client, mut stream: PeerStream) -> Result<(PeerStream, Handshake), Refused> {
    let mut first = [0u8; 20];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read.read_exact(&mut first))
        .await
        .map_err(|_| HandshakeError::TimedOut)?
        .map_err(HandshakeError::from)?;
    let policy = client.net.encryption;
    if &first == BT_PROTOCOL {
        if policy == Encryption::Require {
            return Err(Refused::PlainHandshake);
        }
        stream.read = Box::new(MseReader::prefixed(stream.read, first.to_vec()));
    } else {
        if policy == Encryption::Off {
            return Err(Refused::EncryptedHandshake);
        }
        if !client.net.allow_incoming_mse() {
            return Err(Refused::MseBusy);
        }
        let torrent_of = |wanted: &[u8; 20]| client.torrent_by_req2(wanted);
        stream = mse::receive(stream, first.to_vec(), policy, &torrent_of).await?.0;
    }
    let serves = |h: &InfoHash| client.swarm(h).map(|s| s.us());
    let theirs = handshake(&mut stream, Side::Listener(&serves), client.net.us()).await?;
    Ok((stream, theirs))
}
