//! The playback clock: B(t) and deadlines.

/// A movie being played: rate, startup delay, prefetch, and where playback
/// (re)started after a seek.
#[derive(Debug, Clone, PartialEq)]
pub struct Playback {
    /// Bytes per second (the command line's kB/s times 1000).
    pub rate: f64,
    /// Startup delay D, seconds.
    pub delay: f64,
    /// Prefetch P, seconds: how far ahead of the play head bytes must be.
    pub prefetch: f64,
    /// Length of the movie in bytes.
    pub total: u64,
    /// Byte where playback starts (0, or a seek target).
    origin: u64,
    /// Time the playback clock was (re)started at.
    start: f64,
}

impl Playback {
    /// A clock that starts at time 0 from byte 0. Rates must be positive.
    pub fn new(rate: f64, delay: f64, prefetch: f64, total: u64) -> Playback {
        Playback { rate: rate.max(1.0), delay: delay.max(0.0), prefetch: prefetch.max(0.0), total, origin: 0, start: 0.0 }
    }

    /// Restarts playback at byte `byte` at time `now` (a seek): deadlines are
    /// re-planned from there, with the same delay and prefetch.
    pub fn seek(&mut self, byte: u64, now: f64) {
        self.origin = byte.min(self.total);
        self.start = now;
    }

    /// The player waited `secs` for bytes (rebuffering): the clock and
    /// every deadline after it move that much later.
    pub fn pause(&mut self, secs: f64) {
        self.start += secs.max(0.0);
    }

    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// B(t): bytes (from the origin on) that must be present at time `t`.
    pub fn required_bytes(&self, t: f64) -> u64 {
        let need = self.rate * (self.prefetch + (t - self.start) - self.delay);
        (need.max(0.0) as u64).min(self.total - self.origin)
    }

    /// The time byte `b` must have arrived by. Bytes before the origin have
    /// no deadline (`f64::INFINITY`).
    pub fn byte_deadline(&self, b: u64) -> f64 {
        if b < self.origin {
            return f64::INFINITY;
        }
        self.start + self.delay - self.prefetch + (b - self.origin) as f64 / self.rate
    }

    /// Deadline of the byte range `[start, end)`: that of its last byte, or
    /// of the origin when the range straddles it.
    pub fn range_deadline(&self, start: u64, end: u64) -> f64 {
        if end <= self.origin {
            return f64::INFINITY;
        }
        self.byte_deadline(end.saturating_sub(1).max(start).max(self.origin))
    }

    /// Byte being played at time `t` (the play head), from the origin.
    pub fn play_head(&self, t: f64) -> u64 {
        let played = self.rate * ((t - self.start) - self.delay);
        self.origin + (played.max(0.0) as u64).min(self.total - self.origin)
    }

    /// When playback of the whole movie ends, if nothing stalls.
    pub fn end_time(&self) -> f64 {
        self.start + self.delay + (self.total - self.origin) as f64 / self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workshop_numbers() {
        // R = 5 kB/s, D = 6 s, P = 2 s: 10 kB by t = 6 s, 70 kB by t = 18 s.
        let p = Playback::new(5000.0, 6.0, 2.0, 1_000_000);
        assert_eq!(p.required_bytes(6.0), 10_000);
        assert_eq!(p.required_bytes(18.0), 70_000);
        assert_eq!(p.required_bytes(0.0), 0);
        assert_eq!(p.required_bytes(4.0), 0, "nothing is due before D - P");
        // The inverse: byte 10 000 is due at 6 s; the 70 000th byte at 18 s.
        assert!((p.byte_deadline(10_000) - 6.0).abs() < 1e-9);
        assert!((p.byte_deadline(69_999) - (18.0 - 0.0002)).abs() < 1e-9);
        assert_eq!(p.play_head(6.0), 0);
        assert_eq!(p.play_head(8.0), 10_000);
    }

    #[test]
    fn required_bytes_are_capped_by_the_movie() {
        let p = Playback::new(1000.0, 1.0, 0.0, 5000);
        assert_eq!(p.required_bytes(1000.0), 5000);
        assert!((p.end_time() - 6.0).abs() < 1e-9);
    }

    #[test]
    fn a_seek_restarts_the_clock_at_the_target() {
        let mut p = Playback::new(1000.0, 2.0, 1.0, 100_000);
        p.seek(50_000, 10.0);
        assert_eq!(p.byte_deadline(10), f64::INFINITY, "bytes before the seek point are not due");
        assert!((p.byte_deadline(50_000) - 11.0).abs() < 1e-9);
        assert_eq!(p.required_bytes(13.0), 2000);
        assert_eq!(p.play_head(13.0), 51_000);
        assert!((p.range_deadline(49_000, 51_000) - (11.0 + 0.999)).abs() < 1e-9);
        assert_eq!(p.range_deadline(0, 50_000), f64::INFINITY);
    }

    #[test]
    fn a_pause_moves_the_clock_and_the_deadlines() {
        let mut p = Playback::new(1000.0, 2.0, 1.0, 100_000);
        p.pause(3.0);
        assert_eq!(p.play_head(5.0), 0, "the head waited");
        assert_eq!(p.play_head(6.0), 1000);
        assert!((p.byte_deadline(0) - 4.0).abs() < 1e-9);
    }
}
