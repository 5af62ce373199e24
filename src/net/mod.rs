//! What every torrent of a client shares, knowing no torrent: our peer id,
//! the listening address, the rate caps, the connection slots, the tracker
//! client, the peer transports and the one UDP socket.
//!
//! A new transport (uTP, an encrypted stream) is a new file here that
//! yields a [`transport::PeerStream`]; a new kind of datagram on the UDP
//! port is a new [`udp::DatagramKind`] and a sink registered for it.

pub mod handshake;
pub mod ratelimit;
pub mod transport;
pub mod udp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use ccfd_tracker::{TrackerClient, TrackerError, UdpTiming};
use rand::Rng;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use ratelimit::RateLimiter;
use transport::PeerStream;
use udp::UdpEndpoint;

/// Peer id prefix (Azureus style): client code CB, version 0.1.0.0.
pub const PEER_ID_PREFIX: &[u8; 8] = b"-CB0100-";

/// Why the client's network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tracker(#[from] TrackerError),
}

/// The network settings every torrent of a client shares.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Address for the listener and every outgoing socket (each test peer gets its own 127.0.0.x).
    pub bind: IpAddr,
    /// Listen port (TCP, and UDP where it is free); 0 picks a free one.
    pub port: u16,
    /// Upload cap in bytes per second, over all peers.
    pub upload_rate: Option<u64>,
    /// Download cap in bytes per second, over all peers.
    pub download_rate: Option<u64>,
    pub udp_timing: UdpTiming,
    /// Connections over all torrents, inbound and outbound together.
    pub max_connections: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 6881,
            upload_rate: None,
            download_rate: None,
            udp_timing: UdpTiming::default(),
            max_connections: 200,
        }
    }
}

/// The client-wide resources.
pub struct Net {
    pub peer_id: [u8; 20],
    pub bind: IpAddr,
    pub listen_addr: SocketAddr,
    pub upload: RateLimiter,
    pub download: RateLimiter,
    pub trackers: TrackerClient,
    /// The one UDP socket: coded datagrams today, uTP and DHT next.
    pub udp: Arc<UdpEndpoint>,
    pub shutdown: CancellationToken,
    connections: Arc<AtomicUsize>,
    max_connections: usize,
}

impl Net {
    /// Binds the TCP listener and the UDP socket (on the same port when
    /// it is free); the caller runs the accept loop on the listener.
    pub async fn start(config: &NetConfig) -> Result<(Arc<Net>, TcpListener), NetError> {
        let addr = SocketAddr::new(config.bind, config.port);
        let listen = |source| NetError::Listen { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(listen)?;
        let listen_addr = listener.local_addr().map_err(listen)?;
        let shutdown = CancellationToken::new();
        let udp = UdpEndpoint::bind(config.bind, listen_addr.port(), shutdown.clone()).await.map_err(listen)?;
        let bind = (!config.bind.is_unspecified()).then_some(config.bind);
        let net = Net {
            peer_id: new_peer_id(),
            bind: config.bind,
            listen_addr,
            upload: RateLimiter::new(config.upload_rate),
            download: RateLimiter::new(config.download_rate),
            trackers: TrackerClient::new(bind, config.udp_timing)?,
            udp,
            shutdown,
            connections: Arc::new(AtomicUsize::new(0)),
            max_connections: config.max_connections,
        };
        Ok((Arc::new(net), listener))
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

    /// Opens a connection to a peer from our bind address.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<PeerStream> {
        transport::connect_tcp(self.bind, addr).await
    }
}

/// A random peer id with our client prefix.
fn new_peer_id() -> [u8; 20] {
    let mut peer_id = [0u8; 20];
    peer_id[..8].copy_from_slice(PEER_ID_PREFIX);
    let mut rng = rand::rng();
    for b in &mut peer_id[8..] {
        *b = rng.sample(rand::distr::Alphanumeric);
    }
    peer_id
}

/// One of the client's connection slots, held for a connection's life.
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one connection uploaded since the swarm last looked, and the
/// torrent's running total: the plain uploader and the coded sender add
/// to it without a lock, the swarm's tick takes the per-connection part
/// for tit-for-tat rates.
#[derive(Debug, Default)]
pub struct Traffic {
    up_tick: AtomicU64,
    total_up: Arc<AtomicU64>,
}

impl Traffic {
    /// A connection's counter adding to the torrent's `total_up`.
    pub fn new(total_up: Arc<AtomicU64>) -> Traffic {
        Traffic { up_tick: AtomicU64::new(0), total_up }
    }

    pub fn uploaded(&self, bytes: u64) {
        self.up_tick.fetch_add(bytes, Ordering::Relaxed);
        self.total_up.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes uploaded since the last call.
    pub fn take_uploaded(&self) -> u64 {
        self.up_tick.swap(0, Ordering::Relaxed)
    }
}
