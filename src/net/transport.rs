//! A peer connection's byte stream, whatever carries it.
//!
//! The peer wire reads and writes boxed `AsyncRead` / `AsyncWrite` halves,
//! so a connection over TCP, uTP or an encrypted stream looks the same to
//! it; each transport only has to produce a [`PeerStream`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

/// The reading half of a peer connection.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a peer connection.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// How a connection's bytes travel (for the peers panel and `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Obfuscation {
    /// A plain BitTorrent connection.
    None,
    /// MSE handshake, then plaintext.
    Handshake,
    /// MSE handshake, then RC4 for everything.
    Rc4,
}

impl Obfuscation {
    /// The name in reports: `plain`, `mse` (handshake hidden), `rc4`.
    pub fn name(self) -> &'static str {
        match self {
            Obfuscation::None => "plain",
            Obfuscation::Handshake => "mse",
            Obfuscation::Rc4 => "rc4",
        }
    }
}

/// What carries a connection's bytes (the peers panel and `--json` say it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    /// BEP 29, on the shared UDP port.
    Utp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Utp => "utp",
        })
    }
}

/// An established byte stream to a peer, before or after the BitTorrent handshake.
pub struct PeerStream {
    pub read: BoxRead,
    pub write: BoxWrite,
    pub remote: SocketAddr,
    pub transport: Transport,
    /// We dialed it (it accepts connections at `remote`).
    pub outgoing: bool,
    /// Whether (and how) the bytes are encrypted (MSE).
    pub obfuscation: Obfuscation,
    /// What the kernel measures of a TCP path (`None` over uTP): whether
    /// coded cooperation can win on it.
    pub probe: Option<TcpProbe>,
}

impl PeerStream {
    /// A TCP connection, split into owned halves (no lock between them);
    /// `outgoing` if we dialed it. A v4-mapped address is the IPv4 peer itself.
    pub fn from_tcp(stream: TcpStream, remote: SocketAddr, outgoing: bool) -> std::io::Result<PeerStream> {
        stream.set_nodelay(true)?;
        // A second descriptor of the same socket: the halves own the first.
        let probe = std::os::fd::AsFd::as_fd(&stream).try_clone_to_owned().ok().map(TcpProbe);
        let (read, write) = stream.into_split();
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        Ok(PeerStream {
            read: Box::new(read),
            write: Box::new(write),
            remote,
            transport: Transport::Tcp,
            outgoing,
            obfuscation: Obfuscation::None,
            probe,
        })
    }
}

/// A TCP connection's path as the kernel measures it (`TCP_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSample {
    /// The least round trip seen (the handshake's at first): the path's
    /// own delay, which a slow connection's smoothed RTT overstates by
    /// its delayed acknowledgements (3-9 ms on loopback at 1 kB/s).
    pub rtt: std::time::Duration,
}

/// Reads `TCP_INFO` of one connection's socket, through its own descriptor.
#[derive(Debug)]
pub struct TcpProbe(std::os::fd::OwnedFd);

impl TcpProbe {
    /// The path now; `None` if the kernel will not say.
    pub fn sample(&self) -> Option<PathSample> {
        use std::os::fd::AsRawFd;
        // SAFETY: tcp_info is a plain C struct for which all zero bytes are valid.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: the descriptor is ours and open (a dup of the socket), and
        // getsockopt writes at most `len` bytes into `info`, which has that many.
        let rc = unsafe {
            libc::getsockopt(self.0.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len)
        };
        (rc == 0).then(|| PathSample {
            rtt: std::time::Duration::from_micros(u64::from(if info.tcpi_min_rtt > 0 { info.tcpi_min_rtt } else { info.tcpi_rtt })),
        })
    }
}

/// Dials `addr` over TCP from `bind` (unless unspecified or of the other family).
pub async fn connect_tcp(bind: IpAddr, addr: SocketAddr) -> std::io::Result<PeerStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if !bind.is_unspecified() && bind.is_ipv4() == addr.is_ipv4() {
        socket.bind(SocketAddr::new(bind, 0))?;
    }
    let stream = socket.connect(addr).await?;
    PeerStream::from_tcp(stream, addr, true)
}
