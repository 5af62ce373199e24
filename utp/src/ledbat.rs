//! LEDBAT (RFC 6817, as BEP 29 and libutp use it): the window grows while
//! the one-way delay our packets see stays under a 100 ms target above the
//! lowest delay seen lately, and shrinks as queues build, so a uTP
//! transfer yields to everything else on the path; a loss halves it, a
//! timeout starts over from one packet. Pure: delays and time come in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Queuing delay LEDBAT aims at.
const TARGET_US: f64 = 100_000.0;
/// Window growth per round trip at zero queuing delay, bytes.
const MAX_GAIN_PER_RTT: f64 = 3000.0;
/// Delay samples kept for the current-delay filter.
const CURRENT_SAMPLES: usize = 3;
/// The base delay is the lowest sample over this many one-minute buckets.
const BASE_BUCKETS: usize = 2;
const BUCKET: Duration = Duration::from_secs(60);

/// One connection's congestion window.
#[derive(Debug, Clone)]
pub struct Ledbat {
    mss: f64,
    window: f64,
    slow_start: bool,
    ssthresh: f64,
    current: VecDeque<u32>,
    /// Lowest sample per minute, newest last.
    base: VecDeque<(Instant, u32)>,
    max_window: f64,
}

impl Ledbat {
    /// Starts at two packets, in slow start, capped at `max_window` bytes.
    pub fn new(mss: usize, max_window: usize) -> Ledbat {
        let mss = mss as f64;
        Ledbat {
            mss,
            window: 2.0 * mss,
            slow_start: true,
            ssthresh: max_window as f64,
            current: VecDeque::new(),
            base: VecDeque::new(),
            max_window: max_window as f64,
        }
    }

    /// The window in bytes.
    pub fn window(&self) -> usize {
        self.window as usize
    }

    /// A one-way delay sample of our packets (the peer's clock minus ours:
    /// only differences between samples matter).
    pub fn on_delay(&mut self, now: Instant, delay_us: u32) {
        if self.current.len() >= CURRENT_SAMPLES {
            self.current.pop_front();
        }
        self.current.push_back(delay_us);
        match self.base.back_mut() {
            Some((start, min)) if now.duration_since(*start) < BUCKET => *min = (*min).min(delay_us),
            _ => {
                if self.base.len() >= BASE_BUCKETS {
                    self.base.pop_front();
                }
                self.base.push_back((now, delay_us));
            }
        }
    }

    /// Queuing delay now: the filtered current delay above the base.
    pub fn queuing_delay(&self) -> Option<u32> {
        let current = *self.current.iter().min()?;
        let base = self.base.iter().map(|(_, d)| *d).min()?;
        Some(current.saturating_sub(base))
    }

    /// `acked` bytes left the network.
    pub fn on_ack(&mut self, acked: usize) {
        let acked = acked as f64;
        let Some(delay) = self.queuing_delay() else {
            // No delay sample yet: grow as slow start would.
            self.window = (self.window + acked.min(self.mss)).min(self.max_window);
            return;
        };
        let off_target = (TARGET_US - f64::from(delay)) / TARGET_US;
        let window_factor = acked.min(self.window) / self.window.max(acked);
        let gain = MAX_GAIN_PER_RTT * off_target * window_factor;
        let mut next = self.window + gain;
        if self.slow_start {
            let doubled = self.window + window_factor * self.mss;
            if doubled > self.ssthresh || f64::from(delay) > 0.9 * TARGET_US {
                self.slow_start = false;
                self.ssthresh = self.window;
            } else {
                next = next.max(doubled);
            }
        }
        self.window = next.clamp(self.mss, self.max_window);
    }

    /// A packet was lost (three duplicate acks, or a selective ack past it).
    pub fn on_loss(&mut self) {
        self.window = (self.window / 2.0).max(self.mss);
        self.ssthresh = self.window;
        self.slow_start = false;
    }

    /// The retransmission timer fired: start over from one packet.
    pub fn on_timeout(&mut self) {
        self.ssthresh = (self.window / 2.0).max(self.mss);
        self.window = self.mss;
        self.slow_start = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_while_the_delay_is_low_and_shrinks_when_queues_build() {
        let t = Instant::now();
        let mut l = Ledbat::new(1000, 1 << 20);
        l.on_delay(t, 5_000);
        for _ in 0..200 {
            l.on_delay(t, 5_000);
            l.on_ack(1000);
        }
        let grown = l.window();
        assert!(grown > 20_000, "slow start and gain at zero queuing: {grown}");
        // 150 ms of queuing above the base: off target, the window falls.
        for _ in 0..200 {
            l.on_delay(t, 155_000);
            l.on_ack(1000);
        }
        assert!(l.window() < grown, "{} < {grown}", l.window());
        assert_eq!(l.queuing_delay(), Some(150_000));
    }

    #[test]
    fn loss_halves_and_a_timeout_restarts_from_one_packet() {
        let mut l = Ledbat::new(1000, 1 << 20);
        for _ in 0..50 {
            l.on_ack(1000);
        }
        let w = l.window();
        l.on_loss();
        assert_eq!(l.window(), w / 2);
        l.on_timeout();
        assert_eq!(l.window(), 1000);
        for _ in 0..10_000 {
            l.on_ack(1000);
        }
        assert_eq!(l.window(), 1 << 20, "capped");
    }

    #[test]
    fn the_base_is_the_lowest_delay_of_the_last_two_minutes() {
        let t = Instant::now();
        let mut l = Ledbat::new(1000, 1 << 20);
        l.on_delay(t, 10_000);
        for _ in 0..3 {
            l.on_delay(t + BUCKET, 20_000);
        }
        assert_eq!(l.queuing_delay(), Some(10_000), "20 ms now against a 10 ms base");
        for _ in 0..3 {
            l.on_delay(t + 2 * BUCKET, 30_000);
        }
        // The first minute's 10 ms has aged out; 20 ms is the base now.
        assert_eq!(l.queuing_delay(), Some(10_000));
    }
}
