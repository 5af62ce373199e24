//! How fast a peer delivers to us right now, for deadline planning.
//!
//! The session's per-peer rates are tit-for-tat rates: averaged over a
//! rechoke interval (10 s), so after a peer unchokes us they take ten
//! seconds to show what it sends. A deadline plan made on them thinks a
//! freshly unchoked 14 kB/s peer does 1 kB/s and gives it nothing urgent
//! while pieces run late. This meter looks only at the last few seconds in
//! which the peer was unchoking us, so it is right within a second or two
//! of an unchoke. Pure: time comes in as a value.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Seconds of deliveries the rate is taken over.
const WINDOW: Duration = Duration::from_secs(3);
/// Less observation than this gives no rate (the planner's prior applies).
const MIN_OBSERVED: Duration = Duration::from_millis(800);

/// Bytes a peer delivered while it unchoked us, over a short window.
#[derive(Debug, Default)]
pub struct DeliveryRate {
    /// Since when the peer has been unchoking us (`None`: it chokes us).
    unchoked_since: Option<Instant>,
    /// Deliveries inside the window, oldest first.
    deliveries: VecDeque<(Instant, u64)>,
}

impl DeliveryRate {
    /// The peer unchoked us: measuring starts afresh.
    pub fn unchoked(&mut self, now: Instant) {
        self.unchoked_since = Some(now);
        self.deliveries.clear();
    }

    /// The peer choked us: what it did before says little about its next unchoke.
    pub fn choked(&mut self) {
        self.unchoked_since = None;
        self.deliveries.clear();
    }

    /// `bytes` of payload arrived.
    pub fn record(&mut self, now: Instant, bytes: u64) {
        self.deliveries.push_back((now, bytes));
        self.forget_before(now);
    }

    /// Bytes per second over the window, or `None` while the peer chokes us
    /// or has not been observed long enough to say.
    pub fn rate(&self, now: Instant) -> Option<f64> {
        let since = self.unchoked_since?;
        let observed = now.saturating_duration_since(since).min(WINDOW);
        if observed < MIN_OBSERVED {
            return None;
        }
        let start = now.checked_sub(observed).unwrap_or(since);
        let bytes: u64 = self.deliveries.iter().filter(|(at, _)| *at > start).map(|(_, b)| b).sum();
        Some(bytes as f64 / observed.as_secs_f64())
    }

    fn forget_before(&mut self, now: Instant) {
        while self.deliveries.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > WINDOW) {
            self.deliveries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn no_rate_while_choked_or_just_unchoked() {
        let t0 = Instant::now();
        let mut r = DeliveryRate::default();
        assert_eq!(r.rate(t0), None);
        r.unchoked(t0);
        r.record(ms(t0, 100), 16_384);
        assert_eq!(r.rate(ms(t0, 500)), None);
    }

    #[test]
    fn a_fresh_unchoke_is_measured_over_the_time_since_it() {
        // 14 kB/s from the unchoke on: right after 1.2 s, not 10 s later.
        let t0 = Instant::now();
        let mut r = DeliveryRate::default();
        r.unchoked(t0);
        for i in 1..=12 {
            r.record(ms(t0, i * 100), 1_400);
        }
        let rate = r.rate(ms(t0, 1_200)).unwrap();
        assert!((rate - 14_000.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn only_the_window_counts_and_a_choke_forgets() {
        let t0 = Instant::now();
        let mut r = DeliveryRate::default();
        r.unchoked(t0);
        r.record(ms(t0, 500), 100_000); // a burst long ago
        for i in 0..30 {
            r.record(ms(t0, 5_100 + i * 100), 1_000);
        }
        let rate = r.rate(ms(t0, 8_000)).unwrap();
        assert!((rate - 10_000.0).abs() < 1.0, "{rate}");
        // A stalled peer's rate falls as the window empties.
        assert!(r.rate(ms(t0, 10_000)).unwrap() < rate / 2.0);
        r.choked();
        assert_eq!(r.rate(ms(t0, 10_000)), None);
    }
}
