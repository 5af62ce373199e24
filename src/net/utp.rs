//! uTP (BEP 29) on the shared UDP port: the socket's uTP datagrams are
//! matched to connections by address and connection id, each connection
//! (`ccfd_utp::Connection`, sans I/O) is driven by a small task of its own
//! (timers, sending), and is read and written through a [`PeerStream`]
//! like any TCP connection. A SYN for an unknown id opens an inbound
//! connection, within the caps.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ccfd_utp::{Closed, Connection, Kind, Packet, State};
use parking_lot::Mutex;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::transport::{Obfuscation, PeerStream, Transport};
use super::udp::{DatagramKind, DatagramSink, UdpEndpoint};

/// uTP connections at once, inbound and outbound.
const MAX_CONNECTIONS: usize = 512;
/// Inbound connections waiting for the accept loop, at most.
const ACCEPT_QUEUE: usize = 64;
/// A connection the application dropped gets this long to finish its FIN.
const LINGER: Duration = Duration::from_secs(10);

/// The client's uTP endpoint.
pub struct UtpSocket {
    /// Itself, for the tasks of inbound connections.
    me: std::sync::Weak<UtpSocket>,
    endpoint: Arc<UdpEndpoint>,
    conns: Mutex<HashMap<(SocketAddr, u16), Arc<Shared>>>,
    accept: mpsc::Sender<PeerStream>,
    shutdown: CancellationToken,
}

struct Shared {
    remote: SocketAddr,
    inner: Mutex<Inner>,
    /// Wakes the connection's task: something to send, or a state to report.
    wake: Notify,
}

struct Inner {
    conn: Connection,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// Wakes whoever waits for the connection to open.
    opened: Option<Waker>,
    /// Both halves of the stream are gone.
    dropped_halves: u8,
}

impl Inner {
    fn wake_all(&mut self) {
        for w in [self.reader.take(), self.writer.take(), self.opened.take()].into_iter().flatten() {
            w.wake();
        }
    }
}

impl UtpSocket {
    /// Becomes `endpoint`'s uTP sink; inbound connections arrive on the
    /// returned receiver.
    pub fn start(endpoint: Arc<UdpEndpoint>, shutdown: CancellationToken) -> (Arc<UtpSocket>, mpsc::Receiver<PeerStream>) {
        let (accept, accepted) = mpsc::channel(ACCEPT_QUEUE);
        let socket = Arc::new_cyclic(|me| UtpSocket {
            me: me.clone(),
            endpoint: endpoint.clone(),
            conns: Mutex::new(HashMap::new()),
            accept,
            shutdown,
        });
        endpoint.route(DatagramKind::Utp, socket.clone());
        (socket, accepted)
    }

    /// Opens a connection to `addr`; resolves once the peer answered the SYN.
    pub async fn connect(self: &Arc<Self>, addr: SocketAddr) -> io::Result<PeerStream> {
        let shared = {
            let mut conns = self.conns.lock();
            if conns.len() >= MAX_CONNECTIONS {
                return Err(io::Error::other("too many uTP connections"));
            }
            let mut rng = rand::rng();
            let recv_id = loop {
                let id: u16 = rng.random();
                if !conns.contains_key(&(addr, id)) {
                    break id;
                }
            };
            let conn = Connection::connect(Instant::now(), recv_id, rng.random());
            let shared = Arc::new(Shared {
                remote: addr,
                inner: Mutex::new(Inner { conn, reader: None, writer: None, opened: None, dropped_halves: 0 }),
                wake: Notify::new(),
            });
            conns.insert((addr, recv_id), shared.clone());
            shared
        };
        tokio::spawn(drive(self.clone(), shared.clone()));
        Opened(&shared).await?;
        Ok(stream(shared, true))
    }

    fn remove(&self, shared: &Shared) {
        let id = shared.inner.lock().conn.recv_id();
        self.conns.lock().remove(&(shared.remote, id));
    }
}

/// Resolves when the connection opens (or fails).
struct Opened<'a>(&'a Arc<Shared>);

impl std::future::Future for Opened<'_> {
    type Output = io::Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.0.inner.lock();
        match inner.conn.state() {
            State::Connected => Poll::Ready(Ok(())),
            State::Closed(how) => Poll::Ready(Err(closed_error(how))),
            State::SynSent => {
                inner.opened = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

fn closed_error(how: Closed) -> io::Error {
    match how {
        Closed::Finished => io::ErrorKind::UnexpectedEof.into(),
        Closed::Reset => io::ErrorKind::ConnectionReset.into(),
        Closed::TimedOut => io::ErrorKind::TimedOut.into(),
    }
}

fn stream(shared: Arc<Shared>, outgoing: bool) -> PeerStream {
    let remote = shared.remote;
    PeerStream {
        read: Box::new(UtpRead(shared.clone())),
        write: Box::new(UtpWrite(shared)),
        remote,
        transport: Transport::Utp,
        outgoing,
        obfuscation: Obfuscation::None,
        probe: None,
    }
}

impl DatagramSink for UtpSocket {
    fn deliver(&self, from: SocketAddr, bytes: &[u8], at: Instant) {
        let Ok(packet) = Packet::parse(bytes) else { return };
        let h = packet.header;
        // Packets after the SYN carry our receive id; a SYN names the
        // initiator's, and ours is one more.
        let id = if h.kind == Kind::Syn { h.conn_id.wrapping_add(1) } else { h.conn_id };
        let known = self.conns.lock().get(&(from, id)).cloned();
        let shared = match known {
            Some(s) => s,
            None if h.kind == Kind::Syn => {
                let mut conns = self.conns.lock();
                if conns.len() >= MAX_CONNECTIONS || self.accept.capacity() == 0 {
                    return;
                }
                let conn = Connection::accept(at, &h, rand::rng().random());
                let shared = Arc::new(Shared {
                    remote: from,
                    inner: Mutex::new(Inner { conn, reader: None, writer: None, opened: None, dropped_halves: 0 }),
                    wake: Notify::new(),
                });
                conns.insert((from, id), shared.clone());
                drop(conns);
                if self.accept.try_send(stream(shared.clone(), false)).is_err() {
                    self.conns.lock().remove(&(from, id));
                    return;
                }
                // The task sends the SYN-ACK and runs the connection.
                if let Some(me) = self.me.upgrade() {
                    tokio::spawn(drive(me, shared.clone()));
                }
                return;
            }
            None => return,
        };
        let mut inner = shared.inner.lock();
        inner.conn.handle(at, &packet);
        inner.wake_all();
        drop(inner);
        shared.wake.notify_one();
    }
}

/// A connection's task; it leaves the table when the connection ends.
async fn drive(socket: Arc<UtpSocket>, shared: Arc<Shared>) {
    run(&socket.endpoint, &socket.shutdown, &shared).await;
    socket.remove(&shared);
}

/// Sends what the connection has to send, runs its timers, and ends once
/// it is closed and quiet.
async fn run(endpoint: &UdpEndpoint, shutdown: &CancellationToken, shared: &Shared) {
    let mut dropped_at: Option<Instant> = None;
    loop {
        let (outgoing, timer, closed) = {
            let mut inner = shared.inner.lock();
            let now = Instant::now();
            inner.conn.on_timer(now);
            let mut out = Vec::new();
            let mut gave_up = false;
            if inner.dropped_halves >= 2 {
                let since = *dropped_at.get_or_insert(now);
                inner.conn.close();
                if now.duration_since(since) >= LINGER {
                    out.push(inner.conn.reset(now));
                    gave_up = true;
                }
            }
            while let Some(d) = inner.conn.poll_transmit(now) {
                out.push(d);
            }
            let closed = gave_up || matches!(inner.conn.state(), State::Closed(_));
            inner.wake_all();
            (out, inner.conn.next_timer(), closed)
        };
        for d in outgoing {
            let _ = endpoint.send_to(&d, shared.remote).await;
        }
        if closed {
            return;
        }
        let wake = timer.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let linger = dropped_at.map(|t| t + LINGER).unwrap_or(wake);
        tokio::select! {
            _ = shutdown.cancelled() => {
                let reset = { shared.inner.lock().conn.reset(Instant::now()) };
                let _ = endpoint.send_to(&reset, shared.remote).await;
                return;
            }
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep_until(wake.min(linger).into()) => {}
        }
    }
}

struct UtpRead(Arc<Shared>);
struct UtpWrite(Arc<Shared>);

impl AsyncRead for UtpRead {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.0.inner.lock();
        let n = inner.conn.read(buf.initialize_unfilled());
        if n > 0 {
            buf.advance(n);
            drop(inner);
            self.0.wake.notify_one();
            return Poll::Ready(Ok(()));
        }
        if inner.conn.at_eof() {
            return Poll::Ready(Ok(()));
        }
        if let State::Closed(how) = inner.conn.state() {
            return Poll::Ready(if how == Closed::Finished { Ok(()) } else { Err(closed_error(how)) });
        }
        inner.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for UtpWrite {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut inner = self.0.inner.lock();
        if let State::Closed(how) = inner.conn.state() {
            return Poll::Ready(Err(if how == Closed::Finished { io::ErrorKind::BrokenPipe.into() } else { closed_error(how) }));
        }
        let n = inner.conn.write(buf);
        if n == 0 && !buf.is_empty() {
            inner.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        drop(inner);
        self.0.wake.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.inner.lock().conn.close();
        self.0.wake.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for UtpRead {
    fn drop(&mut self) {
        self.0.inner.lock().dropped_halves += 1;
        self.0.wake.notify_one();
    }
}

impl Drop for UtpWrite {
    fn drop(&mut self) {
        self.0.inner.lock().dropped_halves += 1;
        self.0.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn two_endpoints_talk_over_utp_and_close() {
        let shutdown = CancellationToken::new();
        let a = UdpEndpoint::bind("127.0.0.1".parse().unwrap(), 0, shutdown.clone()).await.unwrap();
        let b = UdpEndpoint::bind("127.0.0.1".parse().unwrap(), 0, shutdown.clone()).await.unwrap();
        let (ua, _) = UtpSocket::start(a, shutdown.clone());
        let (_ub, mut accepted) = UtpSocket::start(b.clone(), shutdown.clone());
        let to = SocketAddr::new("127.0.0.1".parse().unwrap(), b.port());
        let server = tokio::spawn(async move {
            let mut s = accepted.recv().await.unwrap();
            let mut got = vec![0u8; 300_000];
            s.read.read_exact(&mut got).await.unwrap();
            s.write.write_all(&got[..1000]).await.unwrap();
            s.write.shutdown().await.unwrap();
            got
        });
        let mut c = tokio::time::timeout(Duration::from_secs(5), ua.connect(to)).await.unwrap().unwrap();
        assert_eq!(c.transport, Transport::Utp);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        c.write.write_all(&data).await.unwrap();
        let mut back = vec![0u8; 1000];
        tokio::time::timeout(Duration::from_secs(10), c.read.read_exact(&mut back)).await.unwrap().unwrap();
        assert_eq!(&back[..], &data[..1000]);
        assert_eq!(server.await.unwrap(), data);
        let mut rest = Vec::new();
        let eof = tokio::time::timeout(Duration::from_secs(10), c.read.read_to_end(&mut rest)).await.unwrap();
        assert!(eof.is_ok() && rest.is_empty(), "the peer's FIN is our EOF");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn nobody_answers_a_syn_to_a_silent_port() {
        let shutdown = CancellationToken::new();
        let a = UdpEndpoint::bind("127.0.0.1".parse().unwrap(), 0, shutdown.clone()).await.unwrap();
        let (ua, _) = UtpSocket::start(a, shutdown.clone());
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = tokio::time::timeout(Duration::from_secs(3), ua.connect(silent.local_addr().unwrap())).await;
        assert!(r.is_err(), "still trying after 3 s: the caller's timeout decides");
        shutdown.cancel();
    }
}
