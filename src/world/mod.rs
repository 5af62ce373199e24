//! An in-process swarm harness: a built-in tracker, library-face peers on
//! their own 127.x.y.z addresses with rate caps, and fault-injecting proxies
//! (resets, stalls, garbage, slow links) in front of any peer.
//!
//! Scenario tests and the distribution benchmark build their swarms from it;
//! joins and leaves are scripted by the caller (`peer()` to join, `close()`
//! or drop to leave), so a scenario reads top to bottom like its story.

pub mod vod;
pub mod vodserver;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Peer, PeerOptions};
use crate::net::ratelimit::RateLimiter;
use ccfd_tracker::registry::Limits;

/// Deterministic pseudo-random bytes (xorshift64): stand-in movies and
/// payloads that reproduce from their seed.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tracker and the address plan of one swarm.
pub struct World {
    /// Taken on drop, to shut down without blocking (a world may be dropped in async code).
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    announce: String,
    /// First two octets after 127 of every address in this world.
    net: [u8; 2],
    next_host: AtomicU8,
    /// Settings for every peer this world makes (bind and port are set per peer).
    pub options: PeerOptions,
}

impl World {
    /// Starts a tracker on 127.`a`.`b`.1; peers get 127.`a`.`b`.2 upwards.
    /// Distinct `(a, b)` keep concurrent worlds apart.
    pub fn new(a: u8, b: u8) -> std::io::Result<World> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().thread_name("ccfd-world").build()?;
        let shutdown = CancellationToken::new();
        let ip = IpAddr::V4(Ipv4Addr::new(127, a, b, 1));
        // A short interval: peers that left without a word vanish from replies quickly.
        let limits = Limits { interval: Duration::from_secs(10), ..Limits::default() };
        let start = ccfd_tracker::server::start(Some(SocketAddr::new(ip, 0)), None, limits, shutdown.clone());
        // Blocks on another thread, so a world can be made from async code too.
        let addrs = std::thread::scope(|s| s.spawn(|| runtime.block_on(start)).join())
            .map_err(|_| std::io::Error::other("tracker start panicked"))??;
        let announce = addrs.announce_url().unwrap_or_default();
        Ok(World { runtime: Some(runtime), shutdown, announce, net: [a, b], next_host: AtomicU8::new(2), options: PeerOptions::default() })
    }

    /// The tracker's announce URL.
    pub fn tracker(&self) -> &str {
        &self.announce
    }

    /// A fresh address in this world.
    pub fn next_ip(&self) -> IpAddr {
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        IpAddr::V4(Ipv4Addr::new(127, self.net[0], self.net[1], host))
    }

    /// A peer joins, capped at `up` and `down` bytes per second.
    pub fn peer(&self, up: Option<u64>, down: Option<u64>) -> Result<Peer, ApiError> {
        let options = PeerOptions { bind: self.next_ip(), port: 0, ..self.options.clone() };
        Peer::with_options(&self.announce, up, down, options)
    }

    /// Starts a fault-injecting proxy in front of `target` on a fresh
    /// address. Callable from async code too (it never blocks on the runtime).
    pub fn proxy(&self, target: SocketAddr, faults: Faults) -> std::io::Result<FaultProxy> {
        let listener = std::net::TcpListener::bind(SocketAddr::new(self.next_ip(), 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let (task_stats, shutdown) = (stats.clone(), self.shutdown.child_token());
        let Some(runtime) = &self.runtime else { return Err(std::io::Error::other("world is shut down")) };
        runtime.spawn(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => proxy_loop(listener, target, faults, task_stats, shutdown).await,
                Err(e) => tracing::warn!(error = %e, "proxy cannot listen"),
            }
        });
        Ok(FaultProxy { addr, stats })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What goes wrong on a proxied link. Every connection draws its own fate
/// from `seed`, so a run is reproducible.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Bytes per second towards the connecting side; `None` is unlimited.
    pub rate: Option<u64>,
    /// Mean time until the connection is reset (TCP RST); `None`: never.
    pub mean_lifetime: Option<Duration>,
    /// Chance that a connection goes silent for good at some point.
    pub stall_chance: f64,
    /// Chance that a connection gets a burst of random bytes injected.
    pub garbage_chance: f64,
    pub seed: u64,
}

/// Counters of one proxy, for assertions.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub resets: AtomicU64,
    pub stalls: AtomicU64,
    pub garbage: AtomicU64,
    /// Bytes forwarded towards the connecting side.
    pub bytes_down: AtomicU64,
}

/// A running proxy: connect to `addr` to reach the target through the faults.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub stats: Arc<ProxyStats>,
}

async fn proxy_loop(listener: TcpListener, target: SocketAddr, faults: Faults, stats: Arc<ProxyStats>, shutdown: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(faults.seed);
    let limiter = Arc::new(RateLimiter::new(faults.rate));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((inbound, _)) = accepted else { continue };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let fate = Fate {
            lifetime: faults.mean_lifetime.map(|m| m.mul_f64(-(1.0 - rng.random::<f64>()).ln())),
            stall_after: rng.random_bool(faults.stall_chance.clamp(0.0, 1.0)).then(|| rng.random_range(0..200_000)),
            garbage_after: rng.random_bool(faults.garbage_chance.clamp(0.0, 1.0)).then(|| rng.random_range(0..200_000)),
            garbage_seed: rng.random(),
        };
        tokio::spawn(proxy_connection(inbound, target, fate, limiter.clone(), stats.clone(), shutdown.clone()));
    }
}

/// The faults one connection will suffer.
struct Fate {
    lifetime: Option<Duration>,
    /// Bytes forwarded downstream before the link goes silent.
    stall_after: Option<u64>,
    /// Bytes forwarded downstream before random bytes are injected.
    garbage_after: Option<u64>,
    garbage_seed: u64,
}

async fn proxy_connection(
    inbound: TcpStream,
    target: SocketAddr,
    fate: Fate,
    limiter: Arc<RateLimiter>,
    stats: Arc<ProxyStats>,
    shutdown: CancellationToken,
) {
    let Ok(outbound) = TcpStream::connect(target).await else { return };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let reset = {
        let up = tokio::io::copy(&mut in_read, &mut out_write);
        let down = async {
            let mut buf = vec![0u8; 16 * 1024];
            let mut sent = 0u64;
            let mut rng = StdRng::seed_from_u64(fate.garbage_seed);
            loop {
                let n = out_read.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                if fate.stall_after.is_some_and(|at| sent >= at) {
                    stats.stalls.fetch_add(1, Ordering::Relaxed);
                    // Silent for good: the peer must notice by its own timeouts.
                    std::future::pending::<()>().await;
                }
                limiter.acquire(n as u64).await;
                in_write.write_all(&buf[..n]).await?;
                stats.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
                if fate.garbage_after.is_some_and(|at| sent < at && sent + n as u64 >= at) {
                    stats.garbage.fetch_add(1, Ordering::Relaxed);
                    let junk: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                    in_write.write_all(&junk).await?;
                }
                sent += n as u64;
            }
        };
        let lifetime = async {
            match fate.lifetime {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = up => false,
            _ = down => false,
            _ = shutdown.cancelled() => false,
            _ = lifetime => true,
        }
    };
    if reset {
        stats.resets.fetch_add(1, Ordering::Relaxed);
        // Linger 0: closing sends RST, like a crashed or vanished peer.
        if let (Ok(i), Ok(o)) = (in_read.reunite(in_write), out_read.reunite(out_write)) {
            let _ = i.set_zero_linger();
            let _ = o.set_zero_linger();
        }
    }
}
