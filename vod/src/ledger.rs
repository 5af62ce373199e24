//! The penalty ledger: what the swarm delivered in time, and what the VoD
//! server had to fill in.

/// Per-piece record of a streaming session.
#[derive(Debug, Clone)]
pub struct Ledger {
    deadlines: Vec<f64>,
    lengths: Vec<u64>,
    /// When each piece was verified (seconds since start).
    arrived: Vec<Option<f64>>,
    server_bytes: Vec<u64>,
    /// Bytes that arrived twice (a duplicate request, a late peer block after the server's copy).
    duplicate_bytes: u64,
    /// Bytes of the opening needed at D (R * P), for the startup time.
    opening: u64,
    /// Set when playback pauses for missing bytes (no VoD server): stalls
    /// are then the rebuffering events, not late pieces.
    rebuffering: Option<Rebuffering>,
}

/// The pauses of a player that waits for bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Rebuffering {
    events: u32,
    seconds: f64,
}

/// One piece as the ledger saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PieceRecord {
    /// Seconds since start (infinite: before the playback origin).
    pub deadline: f64,
    pub arrived: Option<f64>,
    pub server_bytes: u64,
}

/// The numbers a run is judged by.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub total_bytes: u64,
    /// Bytes the VoD server served: the penalty to minimise.
    pub server_bytes: u64,
    /// `server_bytes` as a share of the movie, 0..1.
    pub server_share: f64,
    /// Pieces the swarm did not deliver by their deadline (the server filled them).
    pub missed_pieces: u32,
    pub pieces: u32,
    /// Share of the pieces due so far that arrived from peers alone, in time.
    pub continuity: f64,
    /// When the opening (the bytes due at D) was complete, seconds.
    pub startup_seconds: Option<f64>,
    /// Pieces that were not there at their deadline (playback would freeze).
    pub stalls: u32,
    /// Sum of how late those pieces were, seconds.
    pub stall_seconds: f64,
    pub duplicate_bytes: u64,
}

impl Ledger {
    /// A ledger for pieces with the given deadlines and lengths (the bytes
    /// of each piece that belong to the movie: 0 for pieces of other files
    /// of the torrent, which do not count); `opening` is how many leading
    /// bytes must be present at the startup delay.
    pub fn new(deadlines: Vec<f64>, lengths: Vec<u64>, opening: u64) -> Ledger {
        let n = deadlines.len();
        Ledger { deadlines, lengths, arrived: vec![None; n], server_bytes: vec![0; n], duplicate_bytes: 0, opening, rebuffering: None }
    }

    /// A ledger for playback that pauses for missing bytes (no VoD server):
    /// its stalls are the pauses, and pieces late before playback starts
    /// only delay the start.
    pub fn rebuffering(mut self) -> Ledger {
        self.rebuffering = Some(Rebuffering::default());
        self
    }

    /// Playback paused `secs` for missing bytes; `new_stall` when the
    /// pause starts (rather than goes on). From then on stalls count pauses.
    pub fn rebuffered(&mut self, secs: f64, new_stall: bool) {
        let r = self.rebuffering.get_or_insert_with(Rebuffering::default);
        r.events += u32::from(new_stall);
        r.seconds += secs.max(0.0);
    }

    /// Re-plans deadlines (after a seek). A piece that already arrived keeps
    /// the deadline it was judged by, so its record (in time, late, from the
    /// server) stands.
    pub fn set_deadlines(&mut self, deadlines: Vec<f64>) {
        if deadlines.len() != self.deadlines.len() {
            return;
        }
        for (i, d) in deadlines.into_iter().enumerate() {
            if self.arrived[i].is_none() {
                self.deadlines[i] = d;
            }
        }
    }

    /// Piece `piece`'s record: its deadline, when it arrived, and how many
    /// of its bytes the server sent.
    pub fn piece(&self, piece: u32) -> Option<PieceRecord> {
        let i = piece as usize;
        Some(PieceRecord { deadline: *self.deadlines.get(i)?, arrived: self.arrived[i], server_bytes: self.server_bytes[i] })
    }

    /// Bytes of piece `piece` that came from the server.
    pub fn server_fetched(&mut self, piece: u32, bytes: u64) {
        if let Some(b) = self.server_bytes.get_mut(piece as usize) {
            *b += bytes;
        }
    }

    pub fn duplicate(&mut self, bytes: u64) {
        self.duplicate_bytes += bytes;
    }

    /// Piece `piece` was verified at `now` (pieces held from the start arrive at 0).
    pub fn arrived(&mut self, piece: u32, now: f64) {
        if let Some(a) = self.arrived.get_mut(piece as usize) {
            a.get_or_insert(now);
        }
    }

    pub fn server_bytes(&self) -> u64 {
        self.server_bytes.iter().sum()
    }

    /// The figures as of `now`; pieces not yet due do not count against
    /// continuity.
    pub fn report(&self, now: f64) -> Report {
        let total_bytes: u64 = self.lengths.iter().sum();
        let server_bytes = self.server_bytes();
        let (mut due, mut clean, mut missed, mut stalls, mut stall_seconds) = (0u32, 0u32, 0u32, 0u32, 0f64);
        for i in 0..self.deadlines.len() {
            if self.lengths.get(i).copied().unwrap_or(0) == 0 {
                continue;
            }
            let deadline = self.deadlines[i];
            if self.server_bytes[i] > 0 {
                missed += 1;
            }
            let late = match self.arrived[i] {
                Some(t) => (t - deadline).max(0.0),
                None if now > deadline => now - deadline,
                None => continue,
            };
            if deadline > now && self.arrived[i].is_some() || deadline <= now {
                due += 1;
                if late == 0.0 && self.server_bytes[i] == 0 {
                    clean += 1;
                }
            }
            if late > 0.0 {
                stalls += 1;
                stall_seconds += late;
            }
        }
        let mut covered = 0u64;
        let mut startup = Some(0f64);
        // Pieces of length 0 hold no byte of the movie (one file of many).
        for (len, arrived) in self.lengths.iter().zip(&self.arrived).filter(|(len, _)| **len > 0) {
            if covered >= self.opening {
                break;
            }
            startup = match (startup, arrived) {
                (Some(s), Some(a)) => Some(s.max(*a)),
                _ => None,
            };
            covered += len;
        }
        if let Some(r) = self.rebuffering {
            // The clock paused instead: pieces were late only by the pause.
            stalls = r.events;
            stall_seconds = r.seconds;
        }
        Report {
            total_bytes,
            server_bytes,
            server_share: if total_bytes > 0 { server_bytes as f64 / total_bytes as f64 } else { 0.0 },
            missed_pieces: missed,
            pieces: self.deadlines.len() as u32,
            continuity: if due > 0 { f64::from(clean) / f64::from(due) } else { 1.0 },
            startup_seconds: startup,
            stalls,
            stall_seconds,
            duplicate_bytes: self.duplicate_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_bytes_missed_pieces_and_continuity() {
        // Four pieces of 100 bytes due at 1, 2, 3, 4 s; the opening is the first 150 bytes.
        let mut l = Ledger::new(vec![1.0, 2.0, 3.0, 4.0], vec![100; 4], 150);
        l.arrived(0, 0.5);
        l.server_fetched(1, 60); // the server filled 60 bytes of piece 1
        l.arrived(1, 1.9);
        l.arrived(2, 3.5); // late by 0.5 s
        let r = l.report(3.6);
        assert_eq!(r.server_bytes, 60);
        assert!((r.server_share - 0.15).abs() < 1e-12);
        assert_eq!(r.missed_pieces, 1);
        // Due so far: pieces 0, 1, 2; only piece 0 came from peers alone in time.
        assert!((r.continuity - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.stalls, 1);
        assert!((r.stall_seconds - 0.5).abs() < 1e-12);
        assert_eq!(r.startup_seconds, Some(1.9), "the opening spans pieces 0 and 1");
    }

    #[test]
    fn a_piece_overdue_and_absent_is_a_stall_that_grows() {
        let mut l = Ledger::new(vec![1.0], vec![10], 10);
        assert_eq!(l.report(0.5).stalls, 0);
        let r = l.report(3.0);
        assert_eq!((r.stalls, r.stall_seconds), (1, 2.0));
        assert_eq!(r.startup_seconds, None);
        l.arrived(0, 3.0);
        l.arrived(0, 9.0); // the first arrival counts
        assert_eq!(l.report(10.0).stall_seconds, 2.0);
    }

    #[test]
    fn pauses_are_the_stalls_when_playback_waits() {
        let mut l = Ledger::new(vec![1.0, 2.0], vec![10; 2], 10);
        l.arrived(0, 1.5);
        l.rebuffered(0.05, true);
        l.rebuffered(0.45, false);
        l.rebuffered(0.2, true);
        let r = l.report(5.0);
        assert_eq!(r.stalls, 2);
        assert!((r.stall_seconds - 0.7).abs() < 1e-12);
    }

    #[test]
    fn a_seek_replans_missing_pieces_and_keeps_past_records() {
        // Piece 0 arrived late (deadline 1, arrived 2); then the viewer seeks
        // past piece 1 at t = 2: piece 1 loses its deadline, piece 2 gets a later one.
        let mut l = Ledger::new(vec![1.0, 2.0, 3.0], vec![10; 3], 10);
        l.arrived(0, 2.0);
        l.set_deadlines(vec![f64::INFINITY, f64::INFINITY, 8.0]);
        assert_eq!(l.piece(0).unwrap().deadline, 1.0);
        assert_eq!(l.piece(1).unwrap().deadline, f64::INFINITY);
        assert_eq!(l.piece(2), Some(PieceRecord { deadline: 8.0, arrived: None, server_bytes: 0 }));
        assert_eq!(l.piece(3), None);
        let r = l.report(5.0);
        assert_eq!((r.stalls, r.stall_seconds), (1, 1.0));
    }
}
