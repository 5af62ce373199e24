//! Coded cooperation (ccfd, docs/ccfd-extension.md): blocks as network-coded
//! packets over UDP between peers that both offer the extension in their
//! BEP 10 handshake; control stays on the TCP connection.
//!
//! `CodedTransport` owns the client's UDP socket: it routes each datagram
//! by its token to the one connection that registered it (a datagram with
//! an unknown token, or from another address than the connection's peer,
//! is dropped before any work). `link` holds one connection's side: the
//! sender task (paced by `pacer`) and the receiver's wants. The decoders live in the
//! session (`session::coded`), because several peers feed one block.

pub mod link;
pub mod pacer;
pub mod proto;
mod queue;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use proto::{datagram_header, DatagramHeader, MAX_DATAGRAM};

/// Datagrams queued for one connection before more are dropped (a full
/// socket buffer would drop them too).
const INBOUND_QUEUE: usize = 4096;

/// A test shim on the receive path: drops and delays datagrams, seeded,
/// as a lossy network would.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UdpShim {
    /// Share of datagrams dropped, 0..1.
    pub loss: f64,
    pub delay: Duration,
    pub seed: u64,
    /// Every datagram after this many is dropped: a path that breaks mid-transfer.
    pub cut_after: Option<u64>,
}

/// One datagram for a connection, with its arrival time.
#[derive(Debug)]
pub struct Arrival {
    pub header: DatagramHeader,
    pub bytes: Vec<u8>,
    pub at: Instant,
    /// The transport's clock when the datagram left the socket (for the
    /// one-way delay sample: our processing backlog is not network queuing).
    pub stamp_us: u32,
}

struct Inbound {
    from: IpAddr,
    tx: mpsc::Sender<Arrival>,
}

/// The client's UDP socket for coded packets.
pub struct CodedTransport {
    socket: Arc<UdpSocket>,
    pub port: u16,
    links: Mutex<HashMap<[u8; 8], Inbound>>,
    /// Clock for send stamps (microseconds since the transport started).
    epoch: Instant,
}

impl CodedTransport {
    /// Binds a UDP socket on `bind` (any free port) and starts receiving.
    pub async fn start(bind: IpAddr, shim: Option<UdpShim>, shutdown: CancellationToken) -> std::io::Result<Arc<CodedTransport>> {
        let socket = Arc::new(UdpSocket::bind(SocketAddr::new(bind, 0)).await?);
        let port = socket.local_addr()?.port();
        let transport = Arc::new(CodedTransport { socket, port, links: Mutex::new(HashMap::new()), epoch: Instant::now() });
        tokio::spawn(receive_loop(transport.clone(), shim, shutdown));
        Ok(transport)
    }

    /// Registers a connection to `from`: its fresh random token and the
    /// receiver of its datagrams.
    pub fn register(&self, from: IpAddr) -> ([u8; 8], mpsc::Receiver<Arrival>) {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let mut links = self.links.lock();
        let mut token: [u8; 8] = rand::rng().random();
        while links.contains_key(&token) {
            token = rand::rng().random();
        }
        links.insert(token, Inbound { from, tx });
        (token, rx)
    }

    pub fn unregister(&self, token: &[u8; 8]) {
        self.links.lock().remove(token);
    }

    /// Microseconds on this transport's clock (wrapping), for send stamps.
    pub fn stamp(&self) -> u32 {
        self.epoch.elapsed().as_micros() as u32
    }

    /// Sends one datagram; errors (a full buffer, an unreachable port) count as loss.
    pub async fn send(&self, to: SocketAddr, datagram: &[u8]) {
        if let Err(e) = self.socket.send_to(datagram, to).await {
            tracing::trace!(%to, error = %e, "coded datagram not sent");
        }
    }
}

async fn receive_loop(transport: Arc<CodedTransport>, shim: Option<UdpShim>, shutdown: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(shim.map_or(0, |s| s.seed));
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut accepted = 0u64;
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = transport.socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let Ok(header) = datagram_header(&buf[..n]) else { continue };
        let tx = match transport.links.lock().get(&header.token) {
            Some(inbound) if inbound.from == from.ip() => inbound.tx.clone(),
            _ => continue,
        };
        let at = Instant::now();
        let arrival = Arrival { header, bytes: buf[..n].to_vec(), at, stamp_us: transport.stamp() };
        accepted += 1;
        match shim {
            Some(s) if s.cut_after.is_some_and(|n| accepted > n) => {}
            Some(s) if rng.random_bool(s.loss.clamp(0.0, 1.0)) => {}
            Some(s) if !s.delay.is_zero() => {
                let delayed = Arrival { at: at + s.delay, stamp_us: arrival.stamp_us.wrapping_add(s.delay.as_micros() as u32), ..arrival };
                tokio::spawn(async move {
                    tokio::time::sleep(s.delay).await;
                    let _ = tx.try_send(delayed);
                });
            }
            _ => {
                let _ = tx.try_send(arrival);
            }
        }
    }
}
