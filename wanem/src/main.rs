//! ccfd-wanem: a WAN emulator for the tests and benches of ccfd-bt.
//!
//! This kernel has no netem, so paths with delay and loss are made in user
//! space: an iptables rule in a private network namespace queues the
//! kernel's own TCP and UDP packets (NFQUEUE), and this program lets each go
//! on at the time an emulated link would deliver it, or drops it. Nothing is
//! copied or re-sent: the packets stay in the kernel, so what is measured is
//! the kernel's TCP and our UDP on a path with the configured properties.
//! `scripts/wan.py` sets up the namespace and the rule.

mod link;
mod nfqueue;
mod spec;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rand::rngs::StdRng;
use rand::SeedableRng;

use link::{Fate, Link};
use nfqueue::{NfQueue, Queued};
use spec::RoutedSpec;

#[derive(Parser, Debug)]
#[command(name = "ccfd-wanem", about = "Delay, loss and rate caps on a namespace's loopback, through NFQUEUE")]
struct Args {
    /// The NFQUEUE number the iptables rule queues packets to.
    #[arg(long, default_value_t = 0)]
    queue_num: u16,
    /// One direction of a link, repeatable:
    /// from=IP,to=IP,rate=8mbit,delay=25ms,jitter=2ms,loss=0.5%|ge:P_GB:P_BG:LOSS_BAD,queue=100kB[,reorder].
    /// A packet passes every link that matches it, in the order given.
    #[arg(long = "link", required = true)]
    links: Vec<String>,
    /// Writes per-link counters as JSON here, every second and at exit.
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Seeds the loss and jitter draws, so runs can be repeated.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The most packets the kernel holds for us at once.
    #[arg(long, default_value_t = 65_536)]
    max_held: u32,
    /// Stops after this many seconds (0: at SIGTERM or SIGINT).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// A packet on its way: the next link it reaches, and when.
struct InFlight {
    at: Duration,
    order: u64,
    id: u32,
    len: u32,
    route: Rc<[usize]>,
    stage: usize,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// The emulator's state between wake-ups.
struct Emulator {
    specs: Vec<RoutedSpec>,
    links: Vec<Link>,
    routes: HashMap<(Ipv4Addr, Ipv4Addr), Rc<[usize]>>,
    pending: BinaryHeap<Reverse<InFlight>>,
    rng: StdRng,
    order: u64,
    unrouted: u64,
    peak_held: usize,
    /// How late verdicts were against the model's time, for the report.
    late_max: Duration,
    late_total: Duration,
    verdicts: u64,
}

impl Emulator {
    /// Where a new packet goes first; `None` if no link carries it.
    fn arrive(&mut self, packet: Queued, now: Duration) -> Option<InFlight> {
        let (src, dst) = ipv4_addresses(&packet.head)?;
        let specs = &self.specs;
        let route = self.routes.entry((src, dst)).or_insert_with(|| spec::route(specs, src, dst).into()).clone();
        if route.is_empty() {
            return None;
        }
        self.order += 1;
        Some(InFlight { at: now, order: self.order, id: packet.id, len: packet.len, route, stage: 0 })
    }

    /// Moves a due packet through its next link: Some(true) to deliver now,
    /// Some(false) to drop, None if it was scheduled further.
    fn step(&mut self, mut packet: InFlight) -> Option<(u32, bool)> {
        let Some(&link) = packet.route.get(packet.stage) else {
            return Some((packet.id, true));
        };
        match self.links[link].admit(packet.at, packet.len, &mut self.rng) {
            Fate::Arrives(at) => {
                packet.at = at;
                packet.stage += 1;
                self.order += 1;
                packet.order = self.order;
                self.pending.push(Reverse(packet));
                None
            }
            Fate::Lost | Fate::QueueFull => Some((packet.id, false)),
        }
    }

    fn report(&self) -> serde_json::Value {
        let links: Vec<serde_json::Value> = self
            .specs
            .iter()
            .zip(&self.links)
            .map(|(spec, link)| {
                let s = link.stats();
                serde_json::json!({
                    "from": spec.from.map(|a| a.to_string()),
                    "to": spec.to.map(|a| a.to_string()),
                    "rate_bps": link.spec().rate_bps,
                    "delay_ms": link.spec().delay.as_secs_f64() * 1e3,
                    "loss_mean": link.spec().loss.mean(),
                    "packets": s.packets,
                    "bytes": s.bytes,
                    "lost": s.lost,
                    "queue_drops": s.queue_drops,
                    "peak_queue_bytes": s.peak_queue_bytes,
                })
            })
            .collect();
        let late_mean_us = if self.verdicts == 0 { 0.0 } else { self.late_total.as_secs_f64() * 1e6 / self.verdicts as f64 };
        serde_json::json!({
            "links": links,
            "unrouted": self.unrouted,
            "peak_held": self.peak_held,
            "late_max_us": self.late_max.as_secs_f64() * 1e6,
            "late_mean_us": late_mean_us,
        })
    }
}

/// The source and destination of an IPv4 packet from its first bytes.
fn ipv4_addresses(head: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if head.len() < 20 || head[0] >> 4 != 4 {
        return None;
    }
    let src = Ipv4Addr::new(head[12], head[13], head[14], head[15]);
    let dst = Ipv4Addr::new(head[16], head[17], head[18], head[19]);
    Some((src, dst))
}

fn write_stats(path: &Option<PathBuf>, emulator: &Emulator) {
    if let Some(path) = path {
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, emulator.report().to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let specs: Vec<RoutedSpec> =
        args.links.iter().map(|t| spec::parse_link(t).with_context(|| format!("--link {t}"))).collect::<Result<_, _>>()?;
    let mut queue = NfQueue::bind(args.queue_num, args.max_held)
        .with_context(|| format!("binding NFQUEUE {} (needs root and CONFIG_NETFILTER_NETLINK_QUEUE)", args.queue_num))?;
    // SAFETY: the handler only stores to an atomic; prctl only sets this
    // thread's timer slack (1 ns: verdicts on time, not 50 us late).
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut emulator = Emulator {
        links: specs.iter().map(|s| Link::new(s.link.clone())).collect(),
        specs,
        routes: HashMap::new(),
        pending: BinaryHeap::new(),
        rng: StdRng::seed_from_u64(args.seed),
        order: 0,
        unrouted: 0,
        peak_held: 0,
        late_max: Duration::ZERO,
        late_total: Duration::ZERO,
        verdicts: 0,
    };
    println!("ready");
    let start = Instant::now();
    let stop_at = (args.seconds > 0).then(|| Duration::from_secs(args.seconds));
    let mut next_stats = Duration::from_secs(1);
    let mut arrived = Vec::new();
    while !STOP.load(Ordering::Relaxed) && stop_at.is_none_or(|s| start.elapsed() < s) {
        let now = start.elapsed();
        let next_due = emulator.pending.peek().map(|Reverse(p)| p.at.saturating_sub(now));
        let timeout = next_due.unwrap_or(Duration::from_millis(200)).min(Duration::from_millis(200));
        queue.wait(Some(timeout))?;
        // Packets already due go first: a link admits in time order.
        let now = start.elapsed();
        while emulator.pending.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(packet)) = emulator.pending.pop() else { break };
            let due = packet.at;
            if let Some((id, accept)) = emulator.step(packet) {
                let late = now.saturating_sub(due);
                emulator.late_max = emulator.late_max.max(late);
                emulator.late_total += late;
                emulator.verdicts += 1;
                queue.verdict(id, accept).context("verdict")?;
            }
        }
        queue.drain(&mut arrived).context("reading the queue")?;
        let now = start.elapsed();
        for packet in arrived.drain(..) {
            let id = packet.id;
            match emulator.arrive(packet, now) {
                Some(first) => {
                    if let Some((id, accept)) = emulator.step(first) {
                        queue.verdict(id, accept).context("verdict")?;
                    }
                }
                None => {
                    emulator.unrouted += 1;
                    queue.verdict(id, true).context("verdict")?;
                }
            }
        }
        emulator.peak_held = emulator.peak_held.max(emulator.pending.len());
        if now >= next_stats {
            write_stats(&args.stats, &emulator);
            next_stats = now + Duration::from_secs(1);
        }
    }
    // Let whatever is held go, so no connection is left hanging.
    while let Some(Reverse(packet)) = emulator.pending.pop() {
        let _ = queue.verdict(packet.id, true);
    }
    write_stats(&args.stats, &emulator);
    Ok(())
}
