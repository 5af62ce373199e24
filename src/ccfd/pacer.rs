//! Pacing of one connection's coded datagrams (pure: time comes in as a
//! value, except for the sleep in `wait`).
//!
//! The rate steps up while the receiver sees less queuing delay than the
//! target and down while it sees more (LEDBAT-like), but never below
//! about the rate at which its datagrams are seen to pass the path: steps
//! on delay alone undershoot far below the bottleneck while the delay
//! signal lags (measured: 0.4-1.4x the link, 0.77 of it on average).
//! Random loss does not slow it; queues do.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Start rate, floor and ceiling (bytes per second).
const START_RATE: f64 = 256_000.0;
const MIN_RATE: f64 = 16_000.0;
const MAX_RATE: f64 = 400_000_000.0;
/// The queuing delay the pacer aims to keep at the bottleneck.
const TARGET_DELAY_US: i64 = 15_000;

/// Paces one connection's datagrams (module docs).
pub struct Pacer {
    rate: f64,
    ceiling: f64,
    next: Instant,
    first_delay: Option<u32>,
    base_delay: i64,
    delivery: DeliveryRate,
    sent: PacketRate,
}

impl Pacer {
    /// A pacer within `cap` (bytes per second; the client's upload cap).
    pub fn new(cap: Option<u64>) -> Pacer {
        // Never under the floor: a cap below it (a few kB/s) is the token
        // bucket's to enforce, and clamp wants floor <= ceiling.
        let ceiling = cap.map_or(MAX_RATE, |c| c as f64 * 1.1).max(MIN_RATE);
        Pacer {
            rate: START_RATE.min(ceiling),
            ceiling,
            next: Instant::now(),
            first_delay: None,
            base_delay: i64::MAX,
            delivery: DeliveryRate::default(),
            sent: PacketRate::default(),
        }
    }

    /// Waits until a datagram of `len` bytes may leave.
    pub async fn wait(&mut self, len: usize) {
        self.delivery.on_send(len);
        let now = Instant::now();
        self.sent.on_send(now);
        if self.next > now + Duration::from_millis(1) {
            tokio::time::sleep_until(self.next.into()).await;
        }
        self.next = self.next.max(now) + Duration::from_secs_f64(len as f64 / self.rate);
    }

    /// Datagrams this connection sent per second lately, bursts and idle
    /// gaps averaged out (whatever held them back: our pacing, the shared
    /// upload cap, or the receiver's credits).
    pub fn packets_per_second(&self, now: Instant) -> f64 {
        self.sent.per_second(now)
    }

    /// Feedback from the receiver: the highest sequence number it has seen
    /// and a one-way delay sample (its clock minus our stamp).
    pub fn on_feedback(&mut self, now: Instant, highest_seq: u32, delay_us: u32) {
        let first = *self.first_delay.get_or_insert(delay_us);
        let d = i64::from(delay_us.wrapping_sub(first) as i32);
        self.base_delay = self.base_delay.min(d);
        let queuing = d - self.base_delay;
        let Some(delivered) = self.delivery.on_feedback(now, highest_seq) else {
            // No estimate yet: grow while no queue shows.
            if queuing < TARGET_DELAY_US / 2 {
                self.rate *= 1.25;
            }
            self.rate = self.rate.clamp(MIN_RATE, self.ceiling);
            return;
        };
        let off_target = ((TARGET_DELAY_US - queuing) as f64 / TARGET_DELAY_US as f64).clamp(-2.0, 1.0);
        // Steps of a few percent per sample, as LEDBAT, but never below
        // (a little under) what the path is seen to pass: the steps alone
        // undershoot far below it while the delay signal lags.
        let floor = delivered * (1.0 + PACING_GAIN * off_target.max(-1.0));
        self.rate = (self.rate * (1.0 + STEP * off_target)).max(floor).clamp(MIN_RATE, self.ceiling);
        tracing::trace!(rate = self.rate as u64, delivered = delivered as u64, queuing, "coded pacing");
    }
}

/// The floor's margin: how far above (or below) the delivery rate the floor
/// sits when the queue is empty (or twice the target or more).
const PACING_GAIN: f64 = 0.25;
/// The rate's step per feedback (about every 20 ms), as a share of the
/// rate: +5% at an empty queue, -10% at three times the target.
const STEP: f64 = 0.05;
/// A delivery-rate sample spans at least this long (shorter spans are
/// all feedback jitter).
const DELIVERY_SPAN: Duration = Duration::from_millis(40);
/// Delivery samples kept; the estimate is their maximum (idle gaps and
/// jitter make samples low, rarely high).
const DELIVERY_SAMPLES: usize = 4;

/// The rate at which our datagrams pass the path, from the sequence
/// numbers the receiver reports: every packet up to the highest one it saw
/// has left the bottleneck (lost or not).
#[derive(Default)]
struct DeliveryRate {
    /// Mean datagram size (bytes), to turn packets into bytes.
    mean_len: f64,
    mark: Option<(Instant, u32)>,
    samples: VecDeque<f64>,
}

impl DeliveryRate {
    fn on_send(&mut self, len: usize) {
        self.mean_len = if self.mean_len == 0.0 { len as f64 } else { self.mean_len * 0.99 + len as f64 * 0.01 };
    }

    /// The current estimate (bytes per second), once there is one.
    fn on_feedback(&mut self, now: Instant, highest_seq: u32) -> Option<f64> {
        let Some((at, seq)) = self.mark else {
            self.mark = Some((now, highest_seq));
            return None;
        };
        let span = now.duration_since(at);
        let packets = highest_seq.wrapping_sub(seq);
        // Reordered feedback (an older highest_seq) is ignored.
        if packets < u32::MAX / 2 && span >= DELIVERY_SPAN {
            self.mark = Some((now, highest_seq));
            if self.samples.len() == DELIVERY_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back(f64::from(packets) * self.mean_len / span.as_secs_f64());
        }
        self.samples.iter().copied().reduce(f64::max)
    }
}

/// The time constant of `PacketRate`: long enough to average a shared
/// upload cap's bursts (a block's worth of tokens at a time, a second apart
/// at 14 kB/s) into one rate.
const PACKET_RATE_TAU: f64 = 1.0;

/// An exponentially weighted count of datagrams per second.
#[derive(Default)]
struct PacketRate {
    rate: f64,
    last: Option<Instant>,
}

impl PacketRate {
    fn on_send(&mut self, now: Instant) {
        self.rate = self.per_second(now) + 1.0 / PACKET_RATE_TAU;
        self.last = Some(now);
    }

    fn per_second(&self, now: Instant) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        self.rate * (-now.saturating_duration_since(last).as_secs_f64() / PACKET_RATE_TAU).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delivery_rate_counts_packets_past_the_path_over_spans_long_enough() {
        let mut d = DeliveryRate::default();
        d.on_send(1000);
        let t0 = Instant::now();
        assert_eq!(d.on_feedback(t0, 10), None);
        // 10 ms is jitter, not a sample.
        assert_eq!(d.on_feedback(t0 + 10 * MS, 20), None);
        // 50 packets of 1000 bytes in 50 ms: 1 MB/s.
        let r = d.on_feedback(t0 + 50 * MS, 60).unwrap();
        assert!((r - 1e6).abs() < 1.0, "{r}");
        // A slower span does not lower the estimate (its maximum)...
        assert!((d.on_feedback(t0 + 100 * MS, 70).unwrap() - 1e6).abs() < 1.0);
        // ...until the fast one has left the window.
        for i in 0..DELIVERY_SAMPLES as u32 {
            d.on_feedback(t0 + (150 + 50 * i) * MS, 80 + 10 * i);
        }
        let r = d.on_feedback(t0 + 400 * MS, 130).unwrap();
        assert!((r - 200_000.0).abs() < 1.0, "{r}");
    }

    #[test]
    fn packet_rate_settles_on_the_mean_rate_of_bursts() {
        let mut r = PacketRate::default();
        let t0 = Instant::now();
        assert_eq!(r.per_second(t0), 0.0);
        // Steady 100 packets per second for 5 s: close to 100.
        for i in 0..500 {
            r.on_send(t0 + 10 * MS * i);
        }
        let steady = r.per_second(t0 + 5000 * MS);
        assert!((steady - 100.0).abs() < 2.0, "{steady}");
        // Bursts of 16 packets once a second (a 16 KiB block of a shared
        // cap's tokens at a time): about 16, never far above it.
        let mut r = PacketRate::default();
        let mut peak = 0.0f64;
        for burst in 0..10 {
            for i in 0..16 {
                let t = t0 + 1000 * MS * burst + MS * i;
                r.on_send(t);
                peak = peak.max(r.per_second(t));
            }
        }
        assert!((16.0..26.0).contains(&peak), "{peak}");
        // Idle: it fades.
        assert!(r.per_second(t0 + 20_000 * MS) < 0.01);
    }

    #[test]
    fn reordered_feedback_is_ignored() {
        let mut d = DeliveryRate::default();
        d.on_send(1000);
        let t0 = Instant::now();
        d.on_feedback(t0, 100);
        assert_eq!(d.on_feedback(t0 + 50 * MS, 90), None);
        assert!(d.on_feedback(t0 + 100 * MS, 200).is_some());
    }

    /// Feeds the pacer `n` feedback samples 50 ms apart at `rate` packets of
    /// 1000 bytes per second with `queuing_us` of queue.
    fn feed(p: &mut Pacer, t: &mut Instant, seq: &mut u32, n: u32, packets_per_s: u32, queuing_us: u32) {
        for _ in 0..n {
            *t += 50 * MS;
            *seq += packets_per_s / 20;
            p.on_feedback(*t, *seq, 1_000 + queuing_us);
        }
    }

    #[test]
    fn pacer_steps_on_queuing_delay_but_not_below_the_delivery_rate() {
        let mut p = Pacer::new(None);
        p.delivery.on_send(1000);
        let (mut t, mut seq) = (Instant::now(), 0);
        p.on_feedback(t, seq, 1_000);
        // No queue: at least 25% above the 1 MB/s that passes, and growing.
        feed(&mut p, &mut t, &mut seq, 5, 1000, 0);
        let probing = p.rate;
        assert!(probing >= 1.25e6 - 1.0, "{probing}");
        feed(&mut p, &mut t, &mut seq, 1, 1000, 0);
        assert!(p.rate > probing);
        // At the target: steady.
        let before = p.rate;
        feed(&mut p, &mut t, &mut seq, 3, 1000, TARGET_DELAY_US as u32);
        assert!((p.rate - before).abs() < 1.0, "{} vs {before}", p.rate);
        // A long queue: steps down, but the path still passes 1 MB/s, so
        // never below 0.75 of that.
        let before = p.rate;
        feed(&mut p, &mut t, &mut seq, 1, 1000, 3 * TARGET_DELAY_US as u32);
        assert!(p.rate < before);
        feed(&mut p, &mut t, &mut seq, 40, 1000, 3 * TARGET_DELAY_US as u32);
        assert!((p.rate - 0.75e6).abs() < 1.0, "{}", p.rate);
    }

    #[test]
    fn a_cap_under_the_floor_rate_is_left_to_the_token_bucket() {
        // 8 kB/s: below MIN_RATE. Feedback of any kind must not panic.
        let mut p = Pacer::new(Some(8_000));
        p.delivery.on_send(1000);
        let (mut t, mut seq) = (Instant::now(), 0);
        p.on_feedback(t, seq, 1_000);
        feed(&mut p, &mut t, &mut seq, 5, 8, 0);
        feed(&mut p, &mut t, &mut seq, 5, 8, 3 * TARGET_DELAY_US as u32);
        assert_eq!(p.rate, MIN_RATE);
    }

    #[test]
    fn pacer_grows_from_its_start_until_there_is_an_estimate_and_keeps_under_the_cap() {
        let mut p = Pacer::new(Some(100_000));
        p.delivery.on_send(1000);
        assert!(p.rate < 110_001.0);
        let (mut t, mut seq) = (Instant::now(), 0);
        p.on_feedback(t, seq, 1_000);
        feed(&mut p, &mut t, &mut seq, 5, 1000, 0);
        assert!(p.rate < 110_001.0, "{}", p.rate);

        let mut p = Pacer::new(None);
        let t = Instant::now();
        p.on_feedback(t, 0, 1_000);
        let start = p.rate;
        p.on_feedback(t + MS, 1, 1_000);
        assert!(p.rate > start, "no estimate yet, no queue: grow");
    }
}
