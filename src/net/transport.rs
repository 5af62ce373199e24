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

/// What carries a connection's bytes (the peers panel and `--json` say it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
        })
    }
}

/// An established byte stream to a peer, before or after the BitTorrent handshake.
pub struct PeerStream {
    pub read: BoxRead,
    pub write: BoxWrite,
    pub remote: SocketAddr,
    pub transport: Transport,
}

impl PeerStream {
    /// A TCP connection, split into owned halves (no lock between them).
    pub fn from_tcp(stream: TcpStream, remote: SocketAddr) -> std::io::Result<PeerStream> {
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(PeerStream { read: Box::new(read), write: Box::new(write), remote, transport: Transport::Tcp })
    }
}

/// Dials `addr` over TCP from `bind` (unless unspecified or of the other family).
pub async fn connect_tcp(bind: IpAddr, addr: SocketAddr) -> std::io::Result<PeerStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if !bind.is_unspecified() && bind.is_ipv4() == addr.is_ipv4() {
        socket.bind(SocketAddr::new(bind, 0))?;
    }
    let stream = socket.connect(addr).await?;
    PeerStream::from_tcp(stream, addr)
}
