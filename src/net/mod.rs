//! What every torrent of a client shares, knowing no torrent: our peer id,
//! the listening address, the rate caps, the connection slots, the tracker
//! client, the peer transports and the one UDP socket.
//!
//! A new transport (uTP, an encrypted stream) is a new file here that
//! yields a [`transport::PeerStream`]; a new kind of datagram on the UDP
//! port is a new [`udp::DatagramKind`] and a sink registered for it.

pub mod dial;
pub mod handshake;
pub mod mse;
pub mod portmap;
pub mod ratelimit;
pub mod transport;
pub mod udp;
pub mod utp;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use ccfd_tracker::{TrackerClient, TrackerError, UdpTiming};
use rand::Rng;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use handshake::Us;
pub use mse::Encryption;
use portmap::{ExternalIp, PortMapper, Ports};
use ratelimit::RateLimiter;
use transport::{PeerStream, Transport};
use udp::UdpEndpoint;
use utp::UtpSocket;

/// Inbound encrypted handshakes per second, on average.
const MSE_PER_SECOND: f64 = 100.0;
const MSE_BURST: f64 = 200.0;

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
    /// We run a DHT node (said in every handshake, BEP 5).
    pub dht: bool,
    /// Message stream encryption: prefer, require, or off.
    pub encryption: Encryption,
    /// Peer transports (`--no-tcp`, `--no-utp` turn one off).
    pub tcp: bool,
    pub utp: bool,
    /// Ask the router (UPnP IGD, NAT-PMP/PCP) to forward our ports; never
    /// on a loopback bind.
    pub port_mapping: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            bind: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: 6881,
            upload_rate: None,
            download_rate: None,
            udp_timing: UdpTiming::default(),
            max_connections: 200,
            dht: false,
            encryption: Encryption::Prefer,
            tcp: true,
            utp: true,
            port_mapping: false,
        }
    }
}

/// Where inbound connections come from.
pub struct Listeners {
    pub tcp: Option<TcpListener>,
    pub utp: Option<tokio::sync::mpsc::Receiver<PeerStream>>,
}

/// The client-wide resources.
pub struct Net {
    pub peer_id: [u8; 20],
    pub bind: IpAddr,
    pub listen_addr: SocketAddr,
    pub upload: RateLimiter,
    pub download: RateLimiter,
    pub trackers: TrackerClient,
    /// The one UDP socket: coded datagrams, uTP, DHT.
    pub udp: Arc<UdpEndpoint>,
    /// uTP connections on it, unless `--no-utp`.
    utp: Option<Arc<UtpSocket>>,
    /// TCP connections, unless `--no-tcp`.
    tcp: bool,
    pub shutdown: CancellationToken,
    /// Message stream encryption: prefer, require, or off.
    pub encryption: Encryption,
    connections: Arc<AtomicUsize>,
    max_connections: usize,
    dht: bool,
    /// Encrypted handshakes we accept per second (each costs a Diffie-Hellman).
    mse_budget: parking_lot::Mutex<(f64, std::time::Instant)>,
    /// Our address as a router reports it, once port mapping has one.
    pub external_ip: ExternalIp,
    port_mapper: Option<PortMapper>,
}

impl Net {
    /// Binds the TCP listener and the UDP socket (on the same port when
    /// it is free); the caller runs the accept loop on the listener.
    pub async fn start(config: &NetConfig) -> Result<(Arc<Net>, Listeners), NetError> {
        let addr = SocketAddr::new(config.bind, config.port);
        let listen = |source| NetError::Listen { addr, source };
        let shutdown = CancellationToken::new();
        // TCP first (it fixes the port when asked for any); the UDP socket
        // takes the same port, so uTP, DHT and coded datagrams share it.
        let tcp = match config.tcp {
            true => Some(match bind_tcp(addr) {
                Ok(l) => l,
                // `::` where the system has no IPv6: IPv4 alone.
                Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
                    tracing::warn!(error = %e, "no IPv6 here; listening on IPv4 only");
                    bind_tcp(SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), config.port)).map_err(listen)?
                }
                Err(e) => return Err(listen(e)),
            }),
            false => None,
        };
        let tcp_addr = tcp.as_ref().map(|l| l.local_addr()).transpose().map_err(listen)?;
        let udp_ip = match tcp_addr {
            Some(a) if a.is_ipv4() && config.bind.is_unspecified() => a.ip(),
            _ => config.bind,
        };
        let udp = UdpEndpoint::bind(udp_ip, tcp_addr.map_or(config.port, |a| a.port()), shutdown.clone()).await.map_err(listen)?;
        let listen_addr = tcp_addr.unwrap_or_else(|| SocketAddr::new(udp_ip, udp.port()));
        let (utp, utp_accept) = match config.utp {
            true => {
                let (socket, accepted) = UtpSocket::start(udp.clone(), shutdown.clone());
                (Some(socket), Some(accepted))
            }
            false => (None, None),
        };
        let bind = (!config.bind.is_unspecified()).then_some(config.bind);
        let external_ip = ExternalIp::default();
        let port_mapper = (config.port_mapping && portmap::worth_mapping(config.bind)).then(|| {
            let ports = Ports { tcp: tcp_addr.map(|a| a.port()), udp: udp.port() };
            PortMapper::start(config.bind, ports, external_ip.clone(), shutdown.clone())
        });
        let net = Net {
            peer_id: new_peer_id(),
            bind: config.bind,
            listen_addr,
            upload: RateLimiter::new(config.upload_rate),
            download: RateLimiter::new(config.download_rate),
            trackers: TrackerClient::new(bind, config.udp_timing)?,
            udp,
            utp,
            tcp: config.tcp,
            shutdown,
            connections: Arc::new(AtomicUsize::new(0)),
            max_connections: config.max_connections,
            dht: config.dht,
            encryption: config.encryption,
            mse_budget: parking_lot::Mutex::new((MSE_BURST, std::time::Instant::now())),
            external_ip,
            port_mapper,
        };
        Ok((Arc::new(net), Listeners { tcp, utp: utp_accept }))
    }

    /// Whether an inbound encrypted handshake may start now (a stranger
    /// cannot make us compute Diffie-Hellman keys without bound).
    pub fn allow_incoming_mse(&self) -> bool {
        let mut budget = self.mse_budget.lock();
        let now = std::time::Instant::now();
        budget.0 = (budget.0 + now.duration_since(budget.1).as_secs_f64() * MSE_PER_SECOND).min(MSE_BURST);
        budget.1 = now;
        if budget.0 < 1.0 {
            return false;
        }
        budget.0 -= 1.0;
        true
    }

    /// Waits until the port mappings are removed (after shutdown).
    pub async fn closed(&self) {
        if let Some(mapper) = &self.port_mapper {
            mapper.closed().await;
        }
    }

    /// Who we say we are in handshakes.
    pub fn us(&self) -> Us {
        Us { peer_id: self.peer_id, dht: self.dht }
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
    pub async fn connect(&self, addr: SocketAddr, transport: Transport) -> std::io::Result<PeerStream> {
        match transport {
            Transport::Tcp if self.tcp => transport::connect_tcp(self.bind, addr).await,
            Transport::Utp => match &self.utp {
                Some(utp) => utp.connect(addr).await,
                None => Err(std::io::Error::other("uTP is off")),
            },
            Transport::Tcp => Err(std::io::Error::other("TCP is off")),
        }
    }

    /// Connects over whichever of `transports` answers first (as libtorrent
    /// races uTP and TCP); the slower attempt is dropped before a byte is
    /// sent on it.
    pub async fn connect_first(&self, addr: SocketAddr, transports: &[Transport]) -> std::io::Result<PeerStream> {
        let mut attempts: futures::stream::FuturesUnordered<_> = transports.iter().map(|&t| self.connect(addr, t)).collect();
        let mut last = std::io::Error::other("no transport to dial on");
        while let Some(result) = futures::StreamExt::next(&mut attempts).await {
            match result {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The transports we may dial on, in the order to prefer on a tie.
    pub fn transports(&self) -> Vec<Transport> {
        let mut out = Vec::new();
        if self.tcp {
            out.push(Transport::Tcp);
        }
        if self.utp.is_some() {
            out.push(Transport::Utp);
        }
        out
    }
}

/// The TCP listener on `addr`; on an IPv6 address it takes IPv4 too (dual
/// stack), whatever the system's default.
fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
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
