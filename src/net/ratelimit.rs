//! Token-bucket rate limits shared by every peer of a client.
//!
//! `TokenBucket` is pure (time is passed in); `RateLimiter` wraps it for
//! async callers. Caps apply to loopback peers too: tests and the VoD world
//! depend on that.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// A bucket of `rate` bytes per second holding at most `burst` bytes.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. The burst is a quarter second of traffic, at least 32 KiB
    /// so one block always fits.
    pub fn new(rate_bytes_per_sec: u64, now: Instant) -> TokenBucket {
        let rate = rate_bytes_per_sec as f64;
        let burst = (rate / 4.0).max(32.0 * 1024.0);
        TokenBucket { rate, burst, tokens: burst, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `n` bytes' worth of tokens, going into debt if needed; returns how
    /// long the caller must wait before sending them. Debt makes large sends
    /// (bigger than the burst) still average out to the rate.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// An optional shared cap: `None` means unlimited. The rate can change
/// while running (a world peer whose uplink degrades).
#[derive(Debug, Default)]
pub struct RateLimiter {
    bucket: Mutex<Option<TokenBucket>>,
}

impl RateLimiter {
    /// `rate` in bytes per second; 0 or `None` is unlimited.
    pub fn new(rate: Option<u64>) -> RateLimiter {
        RateLimiter { bucket: Mutex::new(rate.filter(|&r| r > 0).map(|r| TokenBucket::new(r, Instant::now()))) }
    }

    pub fn is_limited(&self) -> bool {
        self.bucket.lock().is_some()
    }

    /// The cap in bytes per second, if any.
    pub fn rate(&self) -> Option<u64> {
        self.bucket.lock().as_ref().map(|b| b.rate as u64)
    }

    /// Replaces the cap (0 or `None`: unlimited).
    pub fn set_rate(&self, rate: Option<u64>) {
        *self.bucket.lock() = rate.filter(|&r| r > 0).map(|r| TokenBucket::new(r, Instant::now()));
    }

    /// Waits until `n` bytes may pass.
    pub async fn acquire(&self, n: u64) {
        let wait = match self.bucket.lock().as_mut() {
            Some(b) => b.take(n, Instant::now()),
            None => return,
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_run_average_is_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100_000, t0);
        // Send 1 MB in 16 KiB blocks as fast as allowed: the last block may go
        // at ~ (1 MB - burst) / rate seconds.
        let mut now = t0;
        let mut sent = 0u64;
        while sent < 1_000_000 {
            now += b.take(16384, now);
            sent += 16384;
        }
        let secs = now.duration_since(t0).as_secs_f64();
        let expect = (sent as f64 - 32.0 * 1024.0) / 100_000.0;
        assert!((secs - expect).abs() < 0.2, "took {secs}, expected about {expect}");
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000, t0);
        let later = t0 + Duration::from_secs(100);
        assert_eq!(b.take(250_000, later), Duration::ZERO);
        assert!(b.take(100_000, later) > Duration::ZERO, "burst is a quarter second, not 100 s");
    }
}
