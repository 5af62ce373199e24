//! Coded datagrams in and out of the client's shared UDP socket.
//!
//! Every connection that offers ccfd registers a fresh random token; the
//! router is the shared socket's sink for coded datagrams and hands each
//! one to the connection whose token it carries, if it comes from that
//! connection's peer. A datagram with an unknown token, or from another
//! address, is dropped before any work.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use super::proto::{datagram_header, DatagramHeader};
use crate::net::udp::{mark_token, DatagramKind, DatagramSink, UdpEndpoint};

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
    /// The router's clock when the datagram left the socket (for the
    /// one-way delay sample: our processing backlog is not network queuing).
    pub stamp_us: u32,
}

struct Inbound {
    from: IpAddr,
    tx: mpsc::Sender<Arrival>,
}

/// The shim's random state and count.
struct Shim {
    config: UdpShim,
    rng: Mutex<StdRng>,
    accepted: AtomicU64,
}

/// The client's coded datagrams.
pub struct CodedRouter {
    endpoint: Arc<UdpEndpoint>,
    links: Mutex<HashMap<[u8; 8], Inbound>>,
    /// Clock for send stamps (microseconds since the router started).
    epoch: Instant,
    shim: Option<Shim>,
}

impl CodedRouter {
    /// Becomes `endpoint`'s sink for coded datagrams.
    pub fn start(endpoint: Arc<UdpEndpoint>, shim: Option<UdpShim>) -> Arc<CodedRouter> {
        let shim = shim.map(|config| Shim { config, rng: Mutex::new(StdRng::seed_from_u64(config.seed)), accepted: AtomicU64::new(0) });
        let router = Arc::new(CodedRouter { endpoint: endpoint.clone(), links: Mutex::new(HashMap::new()), epoch: Instant::now(), shim });
        endpoint.route(DatagramKind::Coded, router.clone());
        router
    }

    /// The UDP port our offers name.
    pub fn port(&self) -> u16 {
        self.endpoint.port()
    }

    /// Registers a connection to `from`: its fresh random token (top bit
    /// set, as the demultiplexer expects) and the receiver of its datagrams.
    pub fn register(&self, from: IpAddr) -> ([u8; 8], mpsc::Receiver<Arrival>) {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let mut links = self.links.lock();
        let token = loop {
            let mut token: [u8; 8] = rand::rng().random();
            mark_token(&mut token);
            if !links.contains_key(&token) {
                break token;
            }
        };
        links.insert(token, Inbound { from, tx });
        (token, rx)
    }

    pub fn unregister(&self, token: &[u8; 8]) {
        self.links.lock().remove(token);
    }

    /// Microseconds on this router's clock (wrapping), for send stamps.
    pub fn stamp(&self) -> u32 {
        self.epoch.elapsed().as_micros() as u32
    }

    /// Sends one datagram; errors (a full buffer, an unreachable port) count as loss.
    pub async fn send(&self, to: SocketAddr, datagram: &[u8]) {
        if let Err(e) = self.endpoint.send_to(datagram, to).await {
            tracing::trace!(%to, error = %e, "coded datagram not sent");
        }
    }
}

impl DatagramSink for CodedRouter {
    fn deliver(&self, from: SocketAddr, bytes: &[u8], at: Instant) {
        let Ok(header) = datagram_header(bytes) else { return };
        let tx = match self.links.lock().get(&header.token) {
            Some(inbound) if inbound.from == from.ip() => inbound.tx.clone(),
            _ => return,
        };
        let arrival = Arrival { header, bytes: bytes.to_vec(), at, stamp_us: self.stamp() };
        let Some(shim) = &self.shim else {
            let _ = tx.try_send(arrival);
            return;
        };
        let s = shim.config;
        let accepted = shim.accepted.fetch_add(1, Ordering::Relaxed) + 1;
        if s.cut_after.is_some_and(|n| accepted > n) || shim.rng.lock().random_bool(s.loss.clamp(0.0, 1.0)) {
            return;
        }
        if s.delay.is_zero() {
            let _ = tx.try_send(arrival);
            return;
        }
        let delayed = Arrival { at: at + s.delay, stamp_us: arrival.stamp_us.wrapping_add(s.delay.as_micros() as u32), ..arrival };
        tokio::spawn(async move {
            tokio::time::sleep(s.delay).await;
            let _ = tx.try_send(delayed);
        });
    }
}
