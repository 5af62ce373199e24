//! The client's one UDP socket, shared by every protocol that speaks UDP,
//! and the demultiplexer that hands each datagram to its protocol.
//!
//! The kinds are told apart by the first byte, as libtorrent does on its
//! shared port: a coded (ccfd) datagram starts with a token the receiver
//! chose, and ours always have the top bit set; a DHT KRPC message is a
//! bencoded dictionary (`d`); a uTP packet starts with its type and
//! version nibbles (0x01, 0x11, 0x21, 0x31, 0x41) and is at least 20
//! bytes. Anything else is dropped before any work.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Largest datagram the socket reads; longer ones are cut and then refused by their parser.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// The protocols that share the UDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatagramKind {
    /// Coded cooperation: the receiver's token leads, top bit set.
    Coded,
    /// BEP 5 DHT: a bencoded dictionary.
    Krpc,
    /// BEP 29 uTP.
    Utp,
}

/// Which protocol a datagram belongs to, from its first bytes.
pub fn classify(bytes: &[u8]) -> Option<DatagramKind> {
    match *bytes.first()? {
        0x80..=0xff => Some(DatagramKind::Coded),
        b'd' => Some(DatagramKind::Krpc),
        0x01 | 0x11 | 0x21 | 0x31 | 0x41 if bytes.len() >= 20 => Some(DatagramKind::Utp),
        _ => None,
    }
}

/// Marks a token chosen by a receiver so the demultiplexer knows it.
pub fn mark_token(token: &mut [u8; 8]) {
    token[0] |= 0x80;
}

/// A protocol's receiver on the shared socket. `deliver` runs on the
/// receive loop: it must not block (queue the bytes, or drop them).
pub trait DatagramSink: Send + Sync {
    fn deliver(&self, from: SocketAddr, bytes: &[u8], at: Instant);
}

/// The shared socket.
pub struct UdpEndpoint {
    socket: UdpSocket,
    port: u16,
    /// Bound to an IPv6 address: IPv4 peers are reached as v4-mapped addresses.
    v6: bool,
    sinks: RwLock<HashMap<DatagramKind, Arc<dyn DatagramSink>>>,
}

impl UdpEndpoint {
    /// Binds `ip:port`, or any free port if that one is taken (a uTP or DHT
    /// peer then learns the port from the extended handshake), and
    /// receives until `shutdown`.
    pub async fn bind(ip: IpAddr, port: u16, shutdown: CancellationToken) -> std::io::Result<Arc<UdpEndpoint>> {
        let socket = match bind_udp(SocketAddr::new(ip, port)) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%ip, port, error = %e, "UDP port taken; using a free one");
                bind_udp(SocketAddr::new(ip, 0))?
            }
        };
        let local = socket.local_addr()?;
        let endpoint = Arc::new(UdpEndpoint { socket, port: local.port(), v6: local.is_ipv6(), sinks: RwLock::new(HashMap::new()) });
        tokio::spawn(receive_loop(endpoint.clone(), shutdown));
        Ok(endpoint)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the socket speaks IPv6 (and, bound to `::`, IPv4 as well).
    pub fn is_ipv6(&self) -> bool {
        self.v6
    }

    /// Routes datagrams of `kind` to `sink` from now on.
    pub fn route(&self, kind: DatagramKind, sink: Arc<dyn DatagramSink>) {
        self.sinks.write().insert(kind, sink);
    }

    /// Sends one datagram; an error (a full buffer, an unreachable port)
    /// is the caller's loss to count.
    pub async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        let to = match to {
            SocketAddr::V4(v4) if self.v6 => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
            other => other,
        };
        self.socket.send_to(datagram, to).await
    }
}

/// A UDP socket on `addr`; on an IPv6 address it takes IPv4 too (dual
/// stack), whatever the system's default.
/// The UDP socket's kernel buffers, each way, asked for.
const SOCKET_BUFFER: usize = 4 << 20;

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    // uTP and coded senders burst hundreds of datagrams after a loss; the
    // default 208 KiB would drop the very resends that repair it. The
    // kernel caps these at net.core.{r,w}mem_max; a refusal is no error.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn receive_loop(endpoint: Arc<UdpEndpoint>, shutdown: CancellationToken) {
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = endpoint.socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors from earlier sends surface here: nothing to do.
                Err(_) => continue,
            },
        };
        let bytes = &buf[..n];
        let Some(kind) = classify(bytes) else { continue };
        // An IPv4 peer on a dual-stack socket is itself, not a v4-mapped v6 address.
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let sink = endpoint.sinks.read().get(&kind).cloned();
        if let Some(sink) = sink {
            sink.deliver(from, bytes, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart_by_the_first_byte() {
        let mut token = [0x12u8; 8];
        mark_token(&mut token);
        assert_eq!(classify(&token), Some(DatagramKind::Coded));
        assert_eq!(classify(b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:qe"), Some(DatagramKind::Krpc));
        let mut syn = [0u8; 20];
        syn[0] = 0x41;
        assert_eq!(classify(&syn), Some(DatagramKind::Utp));
        assert_eq!(classify(&syn[..19]), None, "too short for a uTP header");
        assert_eq!(classify(&[0x00, 0, 0, 1]), None);
        assert_eq!(classify(&[]), None);
    }

    struct Count(std::sync::atomic::AtomicUsize);
    impl DatagramSink for Count {
        fn deliver(&self, _: SocketAddr, _: &[u8], _: Instant) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn each_kind_reaches_its_sink_and_garbage_none() {
        let shutdown = CancellationToken::new();
        let endpoint = UdpEndpoint::bind("127.0.0.1".parse().unwrap(), 0, shutdown.clone()).await.unwrap();
        let krpc = Arc::new(Count(Default::default()));
        let coded = Arc::new(Count(Default::default()));
        endpoint.route(DatagramKind::Krpc, krpc.clone());
        endpoint.route(DatagramKind::Coded, coded.clone());
        let to = SocketAddr::new("127.0.0.1".parse().unwrap(), endpoint.port());
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for d in [&b"d1:y1:qe"[..], &[0xff; 30], &[0x00; 30], &[0x41; 25], b"x"] {
            sender.send_to(d, to).await.unwrap();
        }
        sender.send_to(b"de", to).await.unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while krpc.0.load(std::sync::atomic::Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(krpc.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(coded.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        shutdown.cancel();
    }
}
