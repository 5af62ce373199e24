//! One direction of an emulated link, as a pure model: given when a packet
//! reaches the link and how big it is, say when it leaves the far end, or
//! that it was lost. Time is a `Duration` since the emulator started, so the
//! model is tested without a clock or a socket.
//!
//! The order of the stages is the order of a real access link: random or
//! bursty loss first (as netem applies it), then a drop-tail queue in front
//! of a transmitter that sends at the link's rate, then the propagation
//! delay with optional jitter. Packets never overtake each other unless the
//! spec allows reordering.

use std::time::Duration;

use rand::Rng;

/// How packets are lost on the wire, before the queue.
#[derive(Clone, Debug, PartialEq)]
pub enum Loss {
    None,
    /// Each packet is lost with this probability, independently.
    Random(f64),
    /// Gilbert-Elliott: a good and a bad state; bursts of loss while bad.
    Bursty {
        good_to_bad: f64,
        bad_to_good: f64,
        loss_when_bad: f64,
        loss_when_good: f64,
    },
}

impl Loss {
    /// The long-run share of packets lost, for reports and checks.
    pub fn mean(&self) -> f64 {
        match *self {
            Loss::None => 0.0,
            Loss::Random(p) => p,
            Loss::Bursty { good_to_bad, bad_to_good, loss_when_bad, loss_when_good } => {
                let total = good_to_bad + bad_to_good;
                if total <= 0.0 {
                    return loss_when_good;
                }
                let bad_share = good_to_bad / total;
                bad_share * loss_when_bad + (1.0 - bad_share) * loss_when_good
            }
        }
    }
}

/// What a link does to packets in one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSpec {
    /// Bits per second the transmitter sends at; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Each packet's delay is moved by up to this much either way.
    pub jitter: Duration,
    pub loss: Loss,
    /// Bytes the queue in front of the transmitter holds; a packet that
    /// does not fit is dropped (drop-tail).
    pub queue_bytes: u64,
    /// Whether jitter may reorder packets (off: a packet never arrives
    /// before the one sent ahead of it).
    pub reorder: bool,
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec { rate_bps: None, delay: Duration::ZERO, jitter: Duration::ZERO, loss: Loss::None, queue_bytes: 1 << 20, reorder: false }
    }
}

/// What became of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It leaves the far end of the link at this time.
    Arrives(Duration),
    /// Lost on the wire.
    Lost,
    /// Dropped because the queue was full.
    QueueFull,
}

/// Counters a run reports per link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub packets: u64,
    pub bytes: u64,
    pub lost: u64,
    pub queue_drops: u64,
    /// The most bytes that waited in the queue at once.
    pub peak_queue_bytes: u64,
}

/// One direction of a link with its state.
#[derive(Debug)]
pub struct Link {
    spec: LinkSpec,
    /// When the transmitter finishes the last packet it accepted.
    busy_until: Duration,
    /// When the last accepted packet arrives at the far end.
    last_arrival: Duration,
    bad_state: bool,
    stats: LinkStats,
}

impl Link {
    pub fn new(spec: LinkSpec) -> Link {
        Link { spec, busy_until: Duration::ZERO, last_arrival: Duration::ZERO, bad_state: false, stats: LinkStats::default() }
    }

    pub fn spec(&self) -> &LinkSpec {
        &self.spec
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// A packet of `bytes` reaches the link at `now`.
    pub fn admit(&mut self, now: Duration, bytes: u32, rng: &mut impl Rng) -> Fate {
        self.stats.packets += 1;
        if self.lost_on_wire(rng) {
            self.stats.lost += 1;
            return Fate::Lost;
        }
        let leaves = match self.spec.rate_bps {
            Some(rate) if rate > 0 => {
                let waiting = self.queued_bytes(now, rate);
                if waiting + u64::from(bytes) > self.spec.queue_bytes.max(u64::from(bytes)) {
                    self.stats.queue_drops += 1;
                    return Fate::QueueFull;
                }
                self.stats.peak_queue_bytes = self.stats.peak_queue_bytes.max(waiting + u64::from(bytes));
                let start = self.busy_until.max(now);
                self.busy_until = start + transmit_time(bytes, rate);
                self.busy_until
            }
            _ => now,
        };
        let mut arrives = leaves + self.spec.delay;
        if !self.spec.jitter.is_zero() {
            let jitter = self.spec.jitter.as_secs_f64();
            let shift = rng.random_range(-jitter..=jitter);
            arrives = Duration::from_secs_f64((arrives.as_secs_f64() + shift).max(leaves.as_secs_f64()));
        }
        if !self.spec.reorder {
            arrives = arrives.max(self.last_arrival);
        }
        self.last_arrival = self.last_arrival.max(arrives);
        self.stats.bytes += u64::from(bytes);
        Fate::Arrives(arrives)
    }

    /// Bytes still waiting for the transmitter at `now` (the packet being
    /// sent counts until it is gone).
    fn queued_bytes(&self, now: Duration, rate_bps: u64) -> u64 {
        let backlog = self.busy_until.saturating_sub(now);
        (backlog.as_secs_f64() * rate_bps as f64 / 8.0).ceil() as u64
    }

    fn lost_on_wire(&mut self, rng: &mut impl Rng) -> bool {
        match self.spec.loss {
            Loss::None => false,
            Loss::Random(p) => rng.random_bool(p.clamp(0.0, 1.0)),
            Loss::Bursty { good_to_bad, bad_to_good, loss_when_bad, loss_when_good } => {
                let flip = if self.bad_state { bad_to_good } else { good_to_bad };
                if rng.random_bool(flip.clamp(0.0, 1.0)) {
                    self.bad_state = !self.bad_state;
                }
                let p = if self.bad_state { loss_when_bad } else { loss_when_good };
                rng.random_bool(p.clamp(0.0, 1.0))
            }
        }
    }
}

/// How long `bytes` take to leave a transmitter of `rate_bps`.
pub fn transmit_time(bytes: u32, rate_bps: u64) -> Duration {
    Duration::from_nanos(u64::from(bytes) * 8 * 1_000_000_000 / rate_bps.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delay_alone_shifts_every_packet() {
        let mut link = Link::new(LinkSpec { delay: ms(25), ..LinkSpec::default() });
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(link.admit(ms(0), 1500, &mut rng), Fate::Arrives(ms(25)));
        assert_eq!(link.admit(ms(3), 1500, &mut rng), Fate::Arrives(ms(28)));
    }

    #[test]
    fn the_rate_spaces_packets_and_a_full_queue_drops() {
        // 1.2 Mbit/s: a 1500-byte packet takes 10 ms; the queue holds two.
        let spec = LinkSpec { rate_bps: Some(1_200_000), delay: ms(5), queue_bytes: 3000, ..LinkSpec::default() };
        let mut link = Link::new(spec);
        let mut rng = StdRng::seed_from_u64(2);
        assert_eq!(link.admit(ms(0), 1500, &mut rng), Fate::Arrives(ms(15)));
        assert_eq!(link.admit(ms(0), 1500, &mut rng), Fate::Arrives(ms(25)));
        assert_eq!(link.admit(ms(0), 1500, &mut rng), Fate::QueueFull);
        // 10 ms later one packet has left: room for one more.
        assert_eq!(link.admit(ms(10), 1500, &mut rng), Fate::Arrives(ms(35)));
        assert_eq!(link.stats().queue_drops, 1);
        assert_eq!(link.stats().peak_queue_bytes, 3000);
        // An idle link sends at once.
        assert_eq!(link.admit(ms(100), 1500, &mut rng), Fate::Arrives(ms(115)));
    }

    #[test]
    fn random_loss_matches_its_probability() {
        let mut link = Link::new(LinkSpec { loss: Loss::Random(0.02), ..LinkSpec::default() });
        let mut rng = StdRng::seed_from_u64(3);
        let lost = (0..100_000).filter(|i| link.admit(ms(*i), 100, &mut rng) == Fate::Lost).count();
        assert!((1_800..2_200).contains(&lost), "{lost} lost of 100000 at 2%");
    }

    #[test]
    fn bursty_loss_has_its_mean_and_comes_in_runs() {
        let loss = Loss::Bursty { good_to_bad: 0.01, bad_to_good: 0.25, loss_when_bad: 0.5, loss_when_good: 0.0 };
        let mean = loss.mean();
        let mut link = Link::new(LinkSpec { loss, ..LinkSpec::default() });
        let mut rng = StdRng::seed_from_u64(4);
        let fates: Vec<bool> = (0..200_000).map(|i| link.admit(ms(i), 100, &mut rng) == Fate::Lost).collect();
        let share = fates.iter().filter(|l| **l).count() as f64 / fates.len() as f64;
        assert!((share - mean).abs() < mean * 0.15, "share {share} against mean {mean}");
        // A loss is followed by another far more often than the mean says.
        let after_loss = fates.windows(2).filter(|w| w[0]).count();
        let both = fates.windows(2).filter(|w| w[0] && w[1]).count();
        assert!(both as f64 / after_loss as f64 > 3.0 * mean, "losses do not cluster");
    }

    #[test]
    fn jitter_never_reorders_unless_asked() {
        let spec = LinkSpec { delay: ms(20), jitter: ms(10), ..LinkSpec::default() };
        let mut link = Link::new(spec.clone());
        let mut rng = StdRng::seed_from_u64(5);
        let mut last = Duration::ZERO;
        for i in 0..1000 {
            let Fate::Arrives(t) = link.admit(Duration::from_micros(i * 100), 100, &mut rng) else { panic!() };
            assert!(t >= last);
            assert!(t >= Duration::from_micros(i * 100) + ms(10));
            last = t;
        }
        let mut reordering = Link::new(LinkSpec { reorder: true, ..spec });
        let arrivals: Vec<Duration> = (0..1000)
            .map(|i| match reordering.admit(Duration::from_micros(i * 100), 100, &mut rng) {
                Fate::Arrives(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(arrivals.windows(2).any(|w| w[1] < w[0]), "reorder allowed but never happened");
    }
}
