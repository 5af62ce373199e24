//! The pure half of streaming: the playback schedule a torrent's picker
//! follows while a stream runs. `StreamPlan` holds the clock and deadlines
//! (swapped whole on a seek), the server estimate and the pieces claimed for
//! the VoD server; `pick` orders one peer's requests by deadline and
//! feasibility (`ccfd_vod::plan`), the rest rarest-first. The task that
//! fetches from the VoD server is `stream::fallback`.

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

/// What the session's picker consults while streaming.
#[derive(Debug)]
pub struct StreamPlan {
    pub policy: Policy,
    pub mode: PickMode,
    piece_length: u64,
    /// The playback clock and its deadlines; a seek swaps in a new one.
    schedule: Mutex<Arc<Schedule>>,
    /// Measured server latency and rate (for the fallback moment).
    pub server: Mutex<ServerEstimate>,
    /// Pieces handed to the server: no peer requests for them.
    pub claimed: Mutex<HashSet<u32>>,
}

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
    pub fn new(playback: Playback, policy: Policy, mode: PickMode, piece_length: u64) -> StreamPlan {
        let deadlines = piece_deadlines(&playback, piece_length);
        StreamPlan {
            policy,
            mode,
            piece_length,
            schedule: Mutex::new(Arc::new(Schedule { playback, deadlines })),
            server: Mutex::new(ServerEstimate { latency: 0.1, rate: 1_000_000.0 }),
            claimed: Mutex::new(HashSet::new()),
        }
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
        let deadlines = piece_deadlines(&playback, self.piece_length);
        let schedule = Arc::new(Schedule { playback, deadlines });
        *self.schedule.lock() = schedule.clone();
        schedule
    }

    /// When the server must be asked for `remaining` bytes of a piece due at `deadline`.
    pub fn cutoff(&self, deadline: f64, remaining: u64) -> f64 {
        let server = *self.server.lock();
        fallback_time(deadline, remaining, server.latency, server.rate, self.policy.margin)
    }
}

/// Deadline of every piece under `playback`.
pub fn piece_deadlines(playback: &Playback, piece_length: u64) -> Vec<f64> {
    let n = playback.total.div_ceil(piece_length);
    (0..n).map(|i| playback.range_deadline(i * piece_length, ((i + 1) * piece_length).min(playback.total))).collect()
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
            let first = (schedule.playback.origin() / plan.piece_length) as u32;
            let count = schedule.deadlines.len() as u32;
            let order: Vec<u32> = (first..count)
                .chain(0..first)
                .filter(|&i| !claimed.contains(&i) && matches!(picker.state(i), Some(PieceState::Missing | PieceState::Active)))
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
    let peer_plan = plan.policy.plan_for_peer(now, &pieces, &peer, |i| has.get(i), |p| plan.cutoff(p.deadline, p.remaining));
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
        let d = piece_deadlines(&p, 1000);
        assert_eq!(d.len(), 3);
        assert!((d[0] - (4.0 + 0.999)).abs() < 1e-9);
        assert!((d[2] - (4.0 + 2.499)).abs() < 1e-9);
    }
}
