//! The pure half of streaming: the playback schedule a torrent's picker
//! follows while a stream runs. `StreamPlan` holds the clock and deadlines
//! (swapped whole on a seek), the server estimate and the pieces claimed for
//! the VoD server; `pick` orders one peer's requests by deadline and
//! feasibility (`ccfd_vod::plan`), the rest rarest-first. The task that
//! fetches from the VoD server is `stream::fallback`.
//!
//! The movie may be one file of many: playback bytes count from the file's
//! first byte (`FileSpan`), and pieces outside the file have no deadline.

use std::collections::HashSet;
use std::sync::Arc;

use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::wire::BlockRef;
use ccfd_vod::plan::{fallback_time, PeerView, PieceView, Policy};
use ccfd_vod::Playback;
use parking_lot::Mutex;
use rand::Rng;

use super::picker::{PeerKey, PickPlan, Picker, PieceState, Progress};

/// The picker key of the VoD server's requests.
pub const SERVER_KEY: PeerKey = PeerKey::MAX;
// The planner's block budgets are in the wire's request size.
const _: () = assert!(ccfd_vod::plan::BLOCK == ccfd_proto::wire::BLOCK_SIZE as u64);

/// How peers' requests are chosen while streaming (the baselines exist
/// for the benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickMode {
    /// Earliest deadline first with feasibility triage (`ccfd_vod::plan`).
    Deadline,
    /// The plain picker: rarest-first, ignoring deadlines.
    RarestFirst,
    /// Pieces in file order.
    Sequential,
}

/// Where the streamed file sits in the torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpan {
    /// Torrent offset of the file's first byte.
    pub offset: u64,
    pub piece_length: u64,
    /// Pieces in the whole torrent.
    pub piece_count: u32,
}

impl FileSpan {
    /// The piece holding byte `byte` of the file.
    pub fn piece_of(&self, byte: u64) -> u32 {
        ((self.offset + byte) / self.piece_length) as u32
    }
}

/// What the session's picker consults while streaming.
#[derive(Debug)]
pub struct StreamPlan {
    pub policy: Policy,
    pub mode: PickMode,
    pub span: FileSpan,
    /// Pieces of other files wanted before the opening (subtitles): due
    /// when the first byte of the movie is.
    pub early: Vec<u32>,
    /// Pieces a player asked for outside playback (the index at a file's
    /// end): due when asked, without moving the playback clock.
    asap: Mutex<Vec<(u32, f64)>>,
    /// The playback clock and its deadlines; a seek swaps in a new one.
    schedule: Mutex<Arc<Schedule>>,
    /// Measured server latency and rate (for the fallback moment).
    pub server: Mutex<ServerEstimate>,
    /// Pieces handed to the server: no peer requests for them.
    pub claimed: Mutex<HashSet<u32>>,
    /// Pieces the server fetches at once, not at their cut-off: the opening
    /// of a seek the swarm cannot bring in time (`server_at_once`).
    server_now: Mutex<HashSet<u32>>,
    /// No VoD server: peers must fetch even the pieces past their deadline.
    pub serverless: bool,
}

/// Most pieces a player's probe reads may make urgent (a bound on what
/// reads from outside can make us track).
const MAX_ASAP: usize = 256;

/// Without a server, an overdue piece is planned as if due this many
/// seconds from now: each peer takes on what it can deliver by then.
const SERVERLESS_SLACK: f64 = 1.0;

/// The playback clock and the deadline of each piece it implies (seconds
/// since the session started). Replaced whole on a seek, so a reader never
/// sees a clock and deadlines that disagree.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub playback: Playback,
    pub deadlines: Vec<f64>,
}

/// The VoD server's measured behaviour.
#[derive(Debug, Clone, Copy)]
pub struct ServerEstimate {
    pub latency: f64,
    pub rate: f64,
}

impl StreamPlan {
    /// A plan for playing the file at `span` (its length is `playback.total`).
    pub fn new(playback: Playback, policy: Policy, mode: PickMode, span: FileSpan) -> StreamPlan {
        let deadlines = piece_deadlines(&playback, &span);
        StreamPlan {
            policy,
            mode,
            span,
            early: Vec::new(),
            asap: Mutex::new(Vec::new()),
            schedule: Mutex::new(Arc::new(Schedule { playback, deadlines })),
            server: Mutex::new(ServerEstimate { latency: 0.1, rate: 1_000_000.0 }),
            claimed: Mutex::new(HashSet::new()),
            server_now: Mutex::new(HashSet::new()),
            serverless: false,
        }
    }

    /// The same plan for a stream without a VoD server.
    pub fn serverless(mut self, serverless: bool) -> StreamPlan {
        self.serverless = serverless;
        self
    }

    /// The moment the planner must have piece `p` by from peers: the
    /// server's cut-off, or (without a server) never before `now` plus a
    /// little, since no one else will fetch it.
    fn peer_cutoff(&self, p: &PieceView, now: f64) -> f64 {
        if self.serverless {
            p.deadline.max(now + SERVERLESS_SLACK)
        } else {
            self.cutoff(p.deadline, p.remaining)
        }
    }

    /// The same plan with `early` pieces due at the opening.
    pub fn with_early(mut self, early: Vec<u32>) -> StreamPlan {
        self.early = early;
        let schedule = Arc::new(self.schedule_for(self.schedule().playback.clone()));
        *self.schedule.get_mut() = schedule;
        self
    }

    fn schedule_for(&self, playback: Playback) -> Schedule {
        let mut deadlines = piece_deadlines(&playback, &self.span);
        let opening = playback.byte_deadline(playback.origin());
        for &p in &self.early {
            if let Some(d) = deadlines.get_mut(p as usize) {
                *d = d.min(opening);
            }
        }
        for &(p, at) in self.asap.lock().iter() {
            if let Some(d) = deadlines.get_mut(p as usize) {
                *d = d.min(at);
            }
        }
        Schedule { playback, deadlines }
    }

    /// The clock and deadlines now.
    pub fn schedule(&self) -> Arc<Schedule> {
        self.schedule.lock().clone()
    }

    /// Restarts playback at byte `byte` at time `now` (a seek): every
    /// deadline is re-planned from there; bytes before it have none.
    pub fn seek(&self, byte: u64, now: f64) -> Arc<Schedule> {
        let mut playback = self.schedule().playback.clone();
        playback.seek(byte, now);
        let schedule = Arc::new(self.schedule_for(playback));
        *self.schedule.lock() = schedule.clone();
        // The last seek's urgent pieces are ordinary again.
        self.server_now.lock().clear();
        schedule
    }

    /// Pieces of a seek's opening (due within `within` seconds of `now`),
    /// in playback order: what `server_at_once` weighs.
    pub fn opening_pieces(&self, now: f64, within: f64) -> Vec<u32> {
        let schedule = self.schedule();
        let first = self.span.piece_of(schedule.playback.origin());
        (first..self.span.piece_count).take_while(|&p| schedule.deadlines[p as usize] <= now + within).collect()
    }

    /// The server fetches `pieces` at once (with no server, nothing does).
    pub fn to_server_now(&self, pieces: impl IntoIterator<Item = u32>) {
        if !self.serverless {
            self.server_now.lock().extend(pieces);
        }
    }

    /// Whether the server should fetch `piece` now rather than at its cut-off.
    pub fn is_server_now(&self, piece: u32) -> bool {
        self.server_now.lock().contains(&piece)
    }

    /// A player reads bytes away from playback that it needs before it
    /// plays (a probe for the index at the end of the file, or another
    /// file of the torrent): `pieces` are due at `due`, and the playback
    /// clock stays where it is. Earlier such pieces that `has` are dropped.
    pub fn fetch_soon(&self, pieces: impl IntoIterator<Item = u32>, due: f64, has: impl Fn(u32) -> bool) -> Arc<Schedule> {
        {
            let mut asap = self.asap.lock();
            asap.retain(|&(p, _)| !has(p));
            for p in pieces {
                if !asap.iter().any(|&(q, _)| q == p) && asap.len() < MAX_ASAP {
                    asap.push((p, due));
                }
            }
        }
        let schedule = Arc::new(self.schedule_for(self.schedule().playback.clone()));
        *self.schedule.lock() = schedule.clone();
        schedule
    }

    /// Playback waited `secs` for missing bytes (no VoD server): every
    /// deadline moves that much later.
    pub fn pause(&self, secs: f64) -> Arc<Schedule> {
        let mut playback = self.schedule().playback.clone();
        playback.pause(secs);
        let schedule = Arc::new(self.schedule_for(playback));
        *self.schedule.lock() = schedule.clone();
        schedule
    }

    /// Bytes of the file present without a gap from the play origin on,
    /// given which pieces are verified.
    pub fn contiguous(&self, has: impl Fn(u32) -> bool) -> u64 {
        let schedule = self.schedule();
        let playback = &schedule.playback;
        let span = &self.span;
        let end = span.offset + playback.total;
        let mut piece = span.piece_of(playback.origin());
        while u64::from(piece) * span.piece_length < end && has(piece) {
            piece += 1;
        }
        (u64::from(piece) * span.piece_length).min(end).saturating_sub(span.offset + playback.origin())
    }

    /// When the server must be asked for `remaining` bytes of a piece due at `deadline`.
    pub fn cutoff(&self, deadline: f64, remaining: u64) -> f64 {
        let server = *self.server.lock();
        fallback_time(deadline, remaining, server.latency, server.rate, self.policy.margin)
    }
}

/// What the swarm offers the opening of a seek, as the swarm sees it now.
#[derive(Debug, Clone, Default)]
pub struct SwarmOffer {
    /// The opening's pieces in playback order: index, bytes still missing,
    /// and how many connected peers have it.
    pub pieces: Vec<(u32, u64, u32)>,
    /// Connected peers that unchoke us.
    pub unchoking: usize,
    /// Their summed download rate (each at least the policy's prior),
    /// bytes per second.
    pub rate: f64,
}

/// Which pieces of a seek's opening the VoD server fetches at once, since
/// the swarm cannot deliver them within `delay` seconds: every one when no
/// peer unchokes us; otherwise those no connected peer has, and those past
/// what the unchoking peers' rate brings in `delay` (in playback order).
pub fn server_at_once(offer: &SwarmOffer, delay: f64) -> Vec<u32> {
    let mut budget = if offer.unchoking == 0 { 0.0 } else { offer.rate * delay };
    let mut out = Vec::new();
    for &(piece, remaining, holders) in offer.pieces.iter().filter(|p| p.1 > 0) {
        if holders > 0 && remaining as f64 <= budget {
            budget -= remaining as f64;
        } else {
            out.push(piece);
        }
    }
    out
}

/// Deadline of every piece of the torrent under `playback` of the file at
/// `span`: that of the piece's last byte inside the file; infinite for
/// pieces without a byte of it.
pub fn piece_deadlines(playback: &Playback, span: &FileSpan) -> Vec<f64> {
    let (start, end) = (span.offset, span.offset + playback.total);
    (0..u64::from(span.piece_count))
        .map(|i| {
            let (a, b) = ((i * span.piece_length).max(start), ((i + 1) * span.piece_length).min(end));
            if a >= b {
                f64::INFINITY
            } else {
                playback.range_deadline(a - start, b - start)
            }
        })
        .collect()
}

/// Requests for one peer while streaming: pieces due within the horizon by
/// deadline and feasibility, the rest rarest-first.
#[allow(clippy::too_many_arguments)]
pub fn pick(
    plan: &StreamPlan,
    picker: &mut Picker,
    key: PeerKey,
    has: &Bitfield,
    max: usize,
    peer: PeerView,
    now: f64,
    rng: &mut impl Rng,
) -> Vec<BlockRef> {
    let claimed = plan.claimed.lock().clone();
    let schedule = plan.schedule();
    match plan.mode {
        PickMode::Deadline => {}
        PickMode::RarestFirst => {
            let plan = PickPlan { urgent: &[], duplicate: &[], skip: &|i| claimed.contains(&i) };
            return picker.pick_planned(key, has, max, &plan, rng);
        }
        PickMode::Sequential => {
            // In file order from the play origin on, then the bytes before it.
            let first = plan.span.piece_of(schedule.playback.origin());
            let count = schedule.deadlines.len() as u32;
            let order: Vec<u32> = (first..count)
                .chain(0..first)
                .filter(|&i| {
                    !claimed.contains(&i)
                        && picker.is_wanted(i)
                        && matches!(picker.state(i), Some(PieceState::Missing | PieceState::Active))
                })
                .collect();
            let order: Vec<(u32, usize)> = order.into_iter().map(|i| (i, usize::MAX)).collect();
            let plan = PickPlan { urgent: &order, duplicate: &[], skip: &|i| claimed.contains(&i) };
            return picker.pick_planned(key, has, max, &plan, rng);
        }
    }
    let horizon = now + plan.policy.horizon;
    let mut pieces: Vec<PieceView> = schedule
        .deadlines
        .iter()
        .enumerate()
        .filter(|&(i, &d)| d <= horizon && !claimed.contains(&(i as u32)))
        .filter_map(|(i, &deadline)| {
            let index = i as u32;
            matches!(picker.state(index), Some(PieceState::Missing | PieceState::Active)).then(|| {
                let Progress { remaining, unrequested } = picker.progress(index);
                PieceView { index, deadline, remaining, unrequested }
            })
        })
        .collect();
    pieces.sort_by(|a, b| a.deadline.total_cmp(&b.deadline));
    let peer_plan = plan.policy.plan_for_peer(now, &pieces, &peer, |i| has.get(i), |p| plan.peer_cutoff(p, now));
    let reserved = |i: u32| schedule.deadlines.get(i as usize).is_some_and(|&d| d <= horizon) || claimed.contains(&i);
    // Urgent blocks first, then one block of each long shot.
    let block = ccfd_vod::plan::BLOCK;
    let order: Vec<(u32, usize)> = peer_plan
        .urgent
        .iter()
        .map(|t| (t.piece, t.bytes.div_ceil(block) as usize))
        .chain(peer_plan.long_shots.iter().map(|&i| (i, 1)))
        .collect();
    picker.pick_planned(key, has, max, &PickPlan { urgent: &order, duplicate: &peer_plan.duplicate, skip: &reserved }, rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_deadlines_follow_the_last_byte() {
        let p = Playback::new(1000.0, 6.0, 2.0, 2500);
        let d = piece_deadlines(&p, &FileSpan { offset: 0, piece_length: 1000, piece_count: 3 });
        assert_eq!(d.len(), 3);
        assert!((d[0] - (4.0 + 0.999)).abs() < 1e-9);
        assert!((d[2] - (4.0 + 2.499)).abs() < 1e-9);
    }

    #[test]
    fn without_a_server_overdue_pieces_are_still_fetched_from_peers() {
        use rand::SeedableRng;
        const PIECE: u64 = 16384;
        let playback = Playback::new(1000.0, 0.0, 0.0, 4 * PIECE);
        let span = FileSpan { offset: 0, piece_length: PIECE, piece_count: 4 };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut picker = Picker::new(PIECE, 4 * PIECE, Bitfield::new(4), &mut rng);
        let has = Bitfield::full(4);
        // At t = 100 s every piece is past its deadline.
        for serverless in [false, true] {
            let plan = StreamPlan::new(playback.clone(), Policy::default(), PickMode::Deadline, span).serverless(serverless);
            let got = pick(&plan, &mut picker, 1, &has, 4, PeerView { rate: 0.0, queued: 0 }, 100.0, &mut rng);
            assert_eq!(got.is_empty(), !serverless, "serverless {serverless}: {got:?}");
            if serverless {
                assert_eq!(got[0].piece, 0, "earliest deadline first");
            }
        }
    }

    #[test]
    fn a_seeks_opening_goes_to_the_server_only_where_the_swarm_falls_short() {
        let pieces = vec![(10, 65_536, 3), (11, 65_536, 0), (12, 65_536, 2), (13, 0, 0), (14, 65_536, 1)];
        // Nobody unchokes us: every missing piece, at once.
        let choked = SwarmOffer { pieces: pieces.clone(), unchoking: 0, rate: 1e9 };
        assert_eq!(server_at_once(&choked, 6.0), vec![10, 11, 12, 14]);
        // A fast swarm: only the piece no peer has.
        let fast = SwarmOffer { pieces: pieces.clone(), unchoking: 2, rate: 1e6 };
        assert_eq!(server_at_once(&fast, 6.0), vec![11]);
        // 30 kB/s for 6 s brings 180 kB: pieces 10 and 12, not 14.
        let slow = SwarmOffer { pieces, unchoking: 1, rate: 30_000.0 };
        assert_eq!(server_at_once(&slow, 6.0), vec![11, 14]);
    }

    #[test]
    fn a_seek_clears_the_last_seeks_server_pieces() {
        let p = Playback::new(1000.0, 6.0, 2.0, 10_000);
        let plan = StreamPlan::new(p, Policy::default(), PickMode::Deadline, FileSpan { offset: 0, piece_length: 1000, piece_count: 10 });
        plan.seek(5000, 1.0);
        // Due within D = 6 s of t = 1: bytes up to 5000 + R (D - (D - P)) = 7000.
        assert_eq!(plan.opening_pieces(1.0, 6.0), vec![5, 6]);
        plan.to_server_now([5, 6]);
        assert!(plan.is_server_now(6));
        plan.seek(0, 2.0);
        assert!(!plan.is_server_now(6));
        // Without a server nothing is marked.
        let serverless = StreamPlan::new(
            Playback::new(1000.0, 6.0, 2.0, 10_000),
            Policy::default(),
            PickMode::Deadline,
            FileSpan { offset: 0, piece_length: 1000, piece_count: 10 },
        )
        .serverless(true);
        serverless.to_server_now([1]);
        assert!(!serverless.is_server_now(1));
    }

    #[test]
    fn one_file_of_many_counts_from_its_first_byte() {
        // The file is bytes 1500..4000 of a 6000-byte torrent in 1000-byte pieces.
        let p = Playback::new(1000.0, 6.0, 2.0, 2500);
        let span = FileSpan { offset: 1500, piece_length: 1000, piece_count: 6 };
        let d = piece_deadlines(&p, &span);
        assert_eq!(d.len(), 6);
        assert_eq!(d[0], f64::INFINITY);
        // Piece 1 holds file bytes 0..500: due with the file's byte 499.
        assert!((d[1] - (4.0 + 0.499)).abs() < 1e-9);
        assert!((d[3] - (4.0 + 2.499)).abs() < 1e-9);
        assert_eq!(d[4], f64::INFINITY);
        assert_eq!(span.piece_of(0), 1);
        assert_eq!(span.piece_of(2499), 3);
    }
}
