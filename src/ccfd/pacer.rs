//! Pacing of one connection's coded datagrams (pure: time comes in as a
//! value, except for the sleep in `wait`).
//!
//! The rate steps up while the receiver sees less queuing delay than the
//! target and down while it sees more (LEDBAT-like), but never below
//! about the rate at which its datagrams are seen to reach the receiver:
//! steps on delay alone undershoot far below the bottleneck while the
//! delay signal lags (measured: 0.4-1.4x the link, 0.77 of it on average).
//! Random loss does not slow it; queues do.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::proto::FEEDBACK_EVERY;

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
    round_trip: RoundTrip,
    last_feedback: Option<Instant>,
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
            round_trip: RoundTrip::default(),
            last_feedback: None,
        }
    }

    /// Waits until datagram `seq` of `len` bytes may leave.
    pub async fn wait(&mut self, len: usize, seq: u32) {
        self.delivery.on_send(len);
        let now = Instant::now();
        self.sent.on_send(now);
        if self.next > now + Duration::from_millis(1) {
            tokio::time::sleep_until(self.next.into()).await;
        }
        self.next = self.next.max(now) + Duration::from_secs_f64(len as f64 / self.rate);
        self.round_trip.on_send(seq, Instant::now());
    }

    /// Datagrams this connection sent per second lately, bursts and idle
    /// gaps averaged out (whatever held them back: our pacing, the shared
    /// upload cap, or the receiver's credits).
    pub fn packets_per_second(&self, now: Instant) -> f64 {
        self.sent.per_second(now)
    }

    /// Feedback from the receiver: how many of our datagrams it has
    /// received so far, the highest sequence number it saw, and a one-way
    /// delay sample (its clock minus our stamp).
    pub fn on_feedback(&mut self, now: Instant, received: u32, highest_seq: u32, delay_us: u32) {
        let highest_sent_at = self.round_trip.on_feedback(highest_seq, now);
        // Increases are per round trip, not per feedback: on a long path
        // the delay signal lags a round trip, and steps every 20 ms would
        // overshoot the bottleneck by a third before it shows (measured on
        // an emulated 100 ms path: a quarter of the packets dropped at its
        // queue). Paths under the feedback period step as before.
        let since = self.last_feedback.map_or(FEEDBACK_EVERY, |t| now.saturating_duration_since(t));
        self.last_feedback = Some(now);
        let per_round_trip = self.round_trip.min().map_or(FEEDBACK_EVERY, |r| r.max(FEEDBACK_EVERY));
        let growth_share = (since.as_secs_f64() / per_round_trip.as_secs_f64()).min(1.0);
        let first = *self.first_delay.get_or_insert(delay_us);
        let d = i64::from(delay_us.wrapping_sub(first) as i32);
        self.base_delay = self.base_delay.min(d);
        let queuing = d - self.base_delay;
        let Some(delivered) = self.delivery.on_feedback(now, received, highest_sent_at) else {
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
        let step = if off_target > 0.0 { STEP * off_target * growth_share } else { STEP * off_target };
        self.rate = (self.rate * (1.0 + step)).max(floor).clamp(MIN_RATE, self.ceiling);
        tracing::trace!(rate = self.rate as u64, delivered = delivered as u64, queuing, "coded pacing");
    }
}

/// Send times of this many recent datagrams are kept to time round trips.
const ROUND_TRIP_SENDS: usize = 4096;

/// The path's round trip, as the least time from sending a datagram to
/// feedback naming it as the highest seen (so at most one feedback period
/// over the true round trip).
#[derive(Default)]
struct RoundTrip {
    sends: VecDeque<(u32, Instant)>,
    least: Option<Duration>,
}

impl RoundTrip {
    fn on_send(&mut self, seq: u32, at: Instant) {
        if self.sends.len() == ROUND_TRIP_SENDS {
            self.sends.pop_front();
        }
        self.sends.push_back((seq, at));
    }

    /// When datagram `seq` left, if it is one of the recent ones.
    fn sent_at(&self, seq: u32) -> Option<Instant> {
        let &(first, _) = self.sends.front()?;
        // Sequence numbers rise (probes take some too, unrecorded), so
        // search by the offset from the oldest kept.
        let offset = seq.wrapping_sub(first);
        let at = self.sends.partition_point(|(s, _)| s.wrapping_sub(first) < offset);
        self.sends.get(at).filter(|(s, _)| *s == seq).map(|&(_, sent)| sent)
    }

    /// Feedback naming `highest_seq` arrived: a round-trip sample, and
    /// when that datagram was sent (for the delivery rate's span).
    fn on_feedback(&mut self, highest_seq: u32, now: Instant) -> Option<Instant> {
        let sent = self.sent_at(highest_seq)?;
        let sample = now.saturating_duration_since(sent);
        self.least = Some(self.least.map_or(sample, |l| l.min(sample)));
        Some(sent)
    }

    fn min(&self) -> Option<Duration> {
        self.least
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

/// The rate at which our datagrams reach the receiver, from its count of
/// datagrams received. Not from the highest sequence number it saw: a
/// packet dropped at a full bottleneck queue would count as passed, and the
/// estimate (the rate's floor) would climb with the overload (measured on
/// an emulated 8 Mbit/s link, scripts/bench_wan.py: 24% of the packets
/// dropped at its queue). Random loss makes the estimate low by its share,
/// which the floor's margin and the steps cover.
///
/// A sample's span is the longer of the time between the two feedbacks'
/// arrivals and the time between sending the datagrams they name as the
/// highest seen (as BBR times its delivery rate): feedback rides on TCP, and
/// after a lost segment several arrive at once; timed by arrival alone, a
/// 2% lossy 100 ms path read 2-6x its rate.
#[derive(Default)]
struct DeliveryRate {
    /// Mean datagram size (bytes), to turn packets into bytes.
    mean_len: f64,
    /// The last sample's feedback: when it arrived, the count it gave, and
    /// when its highest datagram was sent (if known).
    mark: Option<(Instant, u32, Option<Instant>)>,
    samples: VecDeque<f64>,
}

impl DeliveryRate {
    fn on_send(&mut self, len: usize) {
        self.mean_len = if self.mean_len == 0.0 { len as f64 } else { self.mean_len * 0.99 + len as f64 * 0.01 };
    }

    /// The current estimate (bytes per second), once there is one.
    fn on_feedback(&mut self, now: Instant, received: u32, highest_sent_at: Option<Instant>) -> Option<f64> {
        let Some((at, count, sent_then)) = self.mark else {
            self.mark = Some((now, received, highest_sent_at));
            return None;
        };
        let send_span = match (sent_then, highest_sent_at) {
            (Some(then), Some(sent)) => sent.saturating_duration_since(then),
            _ => Duration::ZERO,
        };
        let span = now.saturating_duration_since(at).max(send_span);
        let packets = received.wrapping_sub(count);
        // Reordered feedback (an older count) is ignored.
        if packets < u32::MAX / 2 && span >= DELIVERY_SPAN {
            self.mark = Some((now, received, highest_sent_at));
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
    fn delivery_rate_counts_packets_received_over_spans_long_enough() {
        let mut d = DeliveryRate::default();
        d.on_send(1000);
        let t0 = Instant::now();
        assert_eq!(d.on_feedback(t0, 10, None), None);
        // 10 ms is jitter, not a sample.
        assert_eq!(d.on_feedback(t0 + 10 * MS, 20, None), None);
        // 50 packets of 1000 bytes in 50 ms: 1 MB/s.
        let r = d.on_feedback(t0 + 50 * MS, 60, None).unwrap();
        assert!((r - 1e6).abs() < 1.0, "{r}");
        // A slower span does not lower the estimate (its maximum)...
        assert!((d.on_feedback(t0 + 100 * MS, 70, None).unwrap() - 1e6).abs() < 1.0);
        // ...until the fast one has left the window.
        for i in 0..DELIVERY_SAMPLES as u32 {
            d.on_feedback(t0 + (150 + 50 * i) * MS, 80 + 10 * i, None);
        }
        let r = d.on_feedback(t0 + 400 * MS, 130, None).unwrap();
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
        d.on_feedback(t0, 100, None);
        assert_eq!(d.on_feedback(t0 + 50 * MS, 90, None), None);
        assert!(d.on_feedback(t0 + 100 * MS, 200, None).is_some());
    }

    /// Feeds the pacer `n` feedback samples 50 ms apart at `rate` packets of
    /// 1000 bytes per second with `queuing_us` of queue.
    fn feed(p: &mut Pacer, t: &mut Instant, received: &mut u32, n: u32, packets_per_s: u32, queuing_us: u32) {
        for _ in 0..n {
            *t += 50 * MS;
            *received += packets_per_s / 20;
            p.on_feedback(*t, *received, *received, 1_000 + queuing_us);
        }
    }

    #[test]
    fn pacer_steps_on_queuing_delay_but_not_below_the_delivery_rate() {
        let mut p = Pacer::new(None);
        p.delivery.on_send(1000);
        let (mut t, mut received) = (Instant::now(), 0);
        p.on_feedback(t, received, received, 1_000);
        // No queue: at least 25% above the 1 MB/s that passes, and growing.
        feed(&mut p, &mut t, &mut received, 5, 1000, 0);
        let probing = p.rate;
        assert!(probing >= 1.25e6 - 1.0, "{probing}");
        feed(&mut p, &mut t, &mut received, 1, 1000, 0);
        assert!(p.rate > probing);
        // At the target: steady.
        let before = p.rate;
        feed(&mut p, &mut t, &mut received, 3, 1000, TARGET_DELAY_US as u32);
        assert!((p.rate - before).abs() < 1.0, "{} vs {before}", p.rate);
        // A long queue: steps down, but the path still passes 1 MB/s, so
        // never below 0.75 of that.
        let before = p.rate;
        feed(&mut p, &mut t, &mut received, 1, 1000, 3 * TARGET_DELAY_US as u32);
        assert!(p.rate < before);
        feed(&mut p, &mut t, &mut received, 40, 1000, 3 * TARGET_DELAY_US as u32);
        assert!((p.rate - 0.75e6).abs() < 1.0, "{}", p.rate);
    }

    #[test]
    fn a_cap_under_the_floor_rate_is_left_to_the_token_bucket() {
        // 8 kB/s: below MIN_RATE. Feedback of any kind must not panic.
        let mut p = Pacer::new(Some(8_000));
        p.delivery.on_send(1000);
        let (mut t, mut received) = (Instant::now(), 0);
        p.on_feedback(t, received, received, 1_000);
        feed(&mut p, &mut t, &mut received, 5, 8, 0);
        feed(&mut p, &mut t, &mut received, 5, 8, 3 * TARGET_DELAY_US as u32);
        assert_eq!(p.rate, MIN_RATE);
    }

    #[test]
    fn pacer_grows_from_its_start_until_there_is_an_estimate_and_keeps_under_the_cap() {
        let mut p = Pacer::new(Some(100_000));
        p.delivery.on_send(1000);
        assert!(p.rate < 110_001.0);
        let (mut t, mut received) = (Instant::now(), 0);
        p.on_feedback(t, received, received, 1_000);
        feed(&mut p, &mut t, &mut received, 5, 1000, 0);
        assert!(p.rate < 110_001.0, "{}", p.rate);

        let mut p = Pacer::new(None);
        let t = Instant::now();
        p.on_feedback(t, 0, 0, 1_000);
        let start = p.rate;
        p.on_feedback(t + MS, 1, 1, 1_000);
        assert!(p.rate > start, "no estimate yet, no queue: grow");
    }

    #[test]
    fn round_trips_are_timed_from_the_datagram_the_feedback_names() {
        let mut r = RoundTrip::default();
        let t0 = Instant::now();
        r.on_feedback(5, t0);
        assert_eq!(r.min(), None, "nothing sent yet");
        // Sequence numbers 3 and 6 went to probes: not recorded.
        for (i, seq) in [0u32, 1, 2, 4, 5, 7].iter().enumerate() {
            r.on_send(*seq, t0 + MS * i as u32);
        }
        r.on_feedback(5, t0 + 104 * MS);
        assert_eq!(r.min(), Some(100 * MS));
        r.on_feedback(6, t0 + 106 * MS);
        assert_eq!(r.min(), Some(100 * MS), "an unrecorded probe is no sample");
        r.on_feedback(7, t0 + 95 * MS);
        assert_eq!(r.min(), Some(90 * MS), "the least sample");
    }

    #[test]
    fn on_a_long_path_the_rate_grows_per_round_trip_not_per_feedback() {
        // Same empty-queue feedback, 20 ms apart, for 1 s; with nothing
        // delivered yet to set a floor after the first sample.
        let grow = |round_trip: Duration| {
            let mut p = Pacer::new(None);
            p.delivery.on_send(1000);
            let t0 = Instant::now();
            p.round_trip.on_send(0, t0);
            p.on_feedback(t0 + round_trip, 0, 0, 1_000);
            p.on_feedback(t0 + round_trip + 40 * MS, 1, 1, 1_000);
            let start = p.rate;
            for i in 1..=50u32 {
                p.on_feedback(t0 + round_trip + 40 * MS + 20 * MS * i, 1, 1, 1_000);
            }
            p.rate / start
        };
        let short = grow(10 * MS);
        let long = grow(100 * MS);
        // 50 steps of 5% against 10 steps of 5% (one per 100 ms).
        assert!((short - 1.05f64.powi(50)).abs() < 0.5, "{short}");
        assert!((long - 1.05f64.powi(10)).abs() < 0.1, "{long}");
    }

    #[test]
    fn feedback_that_arrives_bunched_is_timed_by_its_sends() {
        // 1 MB/s for 200 ms; the feedback for the first and last 100 ms
        // arrives 5 ms apart (held behind a lost TCP segment).
        let mut d = DeliveryRate::default();
        d.on_send(1000);
        let t0 = Instant::now();
        d.on_feedback(t0 + 300 * MS, 100, Some(t0 + 100 * MS));
        let r = d.on_feedback(t0 + 345 * MS, 200, Some(t0 + 200 * MS)).unwrap();
        assert!((r - 1e6).abs() < 1.0, "timed by arrival it would read 2.2 MB/s: {r}");
    }
}
