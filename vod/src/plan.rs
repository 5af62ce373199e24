//! The deadline-aware pick policy.
//!
//! Earliest deadline first over a rolling horizon, with feasibility triage
//! block by block: for each peer we estimate when each block it could take
//! on would arrive, queued behind what the peer already owes us (queued
//! bytes / measured rate). A peer takes on only the blocks of a piece it
//! can deliver before the piece's server cut-off; the rest stay free for
//! other peers, so a piece due soon is spread over several peers instead
//! of waiting on one slow one. A requested piece predicted late by less
//! than `duplicate_margin` may be requested a second time from this peer
//! (the first copy cancels the other). A piece of which not even one block
//! can make its cut-off from this peer is a long shot: one block of it is
//! asked for after every feasible one, because whatever arrives before the
//! cut-off is a part the server need not send (the fallback fetches missing
//! blocks only). Beyond the horizon the engine's rarest-first picker runs,
//! so we stay a good trading partner.

/// The BitTorrent request size: the unit a peer takes a piece on in.
pub const BLOCK: u64 = 16 * 1024;

/// Tunables of the policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Pieces due within this many seconds are planned by deadline.
    pub horizon: f64,
    /// Rate assumed for a peer not measured yet, bytes per second.
    pub prior_rate: f64,
    /// Safety margin before the server fallback moment, seconds.
    pub margin: f64,
    /// A piece predicted late by up to this much is duplicated to a second peer.
    pub duplicate_margin: f64,
    /// A piece whose server cut-off is this close (seconds) has its in-flight
    /// blocks asked again from any peer that can still make it: a block
    /// stuck at a slow or stalled peer would otherwise go to the server.
    /// Off (0) by default: 3 s took more from the server in the bench (the
    /// second requests queue ahead of the second peer's own urgent blocks).
    pub rescue_window: f64,
    /// While every peer chokes us (in practice: the opening, before anyone
    /// has reason to unchoke a newcomer), a piece whose server cut-off is
    /// this close (seconds) is fetched from the server at once instead of
    /// at its cut-off. A peer would have to unchoke us and send the piece
    /// within the lead, so these are nearly always bytes the server sends
    /// anyway; having them early gives us something to upload, which is
    /// what makes tit-for-tat peers unchoke a newcomer. 0 turns it off.
    pub opening_lead: f64,
}

impl Default for Policy {
    fn default() -> Self {
        // Measured in the VoD bench (4 worlds, R = 60 kB/s, 70 kB/s peers): a
        // 60 s horizon and an optimistic prior took 3.7% of the movie from the
        // server, against 7.8% with 20 s and 20 kB/s. With a 6 MB movie the
        // 5 s opening lead took 8.3% (10 worlds), against 13.5% without (5
        // worlds); leads of 3 and 6 s did as well, 10 s worse. With delivery
        // rates and block budgets (session 6): 6.8% over 20 worlds; a 0.2 s
        // margin made no difference there (BENCHMARKS.md).
        Policy { horizon: 60.0, prior_rate: 60_000.0, margin: 0.5, duplicate_margin: 1.0, rescue_window: 0.0, opening_lead: 5.0 }
    }
}

/// How long every connected peer must have choked us before the opening
/// lead applies, seconds: a peer with a free slot unchokes us within a
/// round trip of our interest, and its pieces should not go to the server.
pub const OPENING_PATIENCE: f64 = 1.0;

/// A piece not yet verified, as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PieceView {
    pub index: u32,
    /// Seconds since start by which the piece must be complete.
    pub deadline: f64,
    /// Bytes not yet received.
    pub remaining: u64,
    /// Of those, bytes no peer has been asked for: what a peer taking the
    /// piece on would fetch.
    pub unrequested: u64,
}

impl PieceView {
    /// Some of its missing blocks are already requested from a peer.
    pub fn requested(&self) -> bool {
        self.unrequested < self.remaining
    }
}

/// One peer, as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    /// Measured download rate from this peer, bytes per second (0: unknown).
    pub rate: f64,
    /// Bytes requested from it and not yet received.
    pub queued: u64,
}

/// Part of a piece one peer should fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    pub piece: u32,
    /// Bytes of its unrequested blocks (whole blocks, or all of them).
    pub bytes: u64,
}

/// What to fetch from one peer now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerPlan {
    /// Blocks to request, by piece, earliest deadline first: as many as the
    /// peer can deliver before each piece's cut-off.
    pub urgent: Vec<Take>,
    /// Pieces predicted slightly late, or feasible here and close to their
    /// cut-off: request their in-flight blocks again here.
    pub duplicate: Vec<u32>,
    /// Pieces of which no block is predicted to make its cut-off from this
    /// peer, earliest first: one block each is worth asking for after the
    /// urgent ones.
    pub long_shots: Vec<u32>,
}

/// How much of `unrequested` bytes (whole blocks, the last one possibly
/// short) fit in a budget of `budget` bytes.
fn deliverable(unrequested: u64, budget: f64) -> u64 {
    if budget >= unrequested as f64 {
        unrequested
    } else if budget <= 0.0 {
        0
    } else {
        (budget as u64 / BLOCK * BLOCK).min(unrequested)
    }
}

/// The moment the server must be asked for a piece's missing bytes: its
/// deadline, less the time the server needs (latency plus transfer), less
/// the margin.
pub fn fallback_time(deadline: f64, missing: u64, server_latency: f64, server_rate: f64, margin: f64) -> f64 {
    deadline - server_latency - missing as f64 / server_rate.max(1.0) - margin
}

impl Policy {
    /// Plans the requests to one peer. `pieces` are the unverified pieces,
    /// sorted by deadline (only those within the horizon matter);
    /// `peer_has(i)` says whether the peer holds piece i; `server_cutoff(p)`
    /// is the fallback time of `p` (after it, the server takes over).
    pub fn plan_for_peer(
        &self,
        now: f64,
        pieces: &[PieceView],
        peer: &PeerView,
        peer_has: impl Fn(u32) -> bool,
        server_cutoff: impl Fn(&PieceView) -> f64,
    ) -> PeerPlan {
        let rate = if peer.rate > 0.0 { peer.rate } else { self.prior_rate };
        let mut queued = peer.queued as f64;
        let mut plan = PeerPlan::default();
        for piece in pieces.iter().take_while(|p| p.deadline <= now + self.horizon) {
            if !peer_has(piece.index) || piece.remaining == 0 {
                continue;
            }
            let cutoff = server_cutoff(piece);
            if piece.unrequested > 0 {
                let bytes = deliverable(piece.unrequested, (cutoff - now) * rate - queued);
                if bytes > 0 {
                    plan.urgent.push(Take { piece: piece.index, bytes });
                    queued += bytes as f64;
                    if piece.requested() && cutoff - now <= self.rescue_window {
                        plan.duplicate.push(piece.index);
                    }
                    continue;
                }
            }
            let finish = now + (queued + piece.remaining as f64) / rate;
            let slightly_late = finish > cutoff && finish <= cutoff + self.duplicate_margin;
            let rescue = piece.unrequested == 0 && finish <= cutoff && cutoff - now <= self.rescue_window;
            if piece.requested() && (slightly_late || rescue) {
                plan.duplicate.push(piece.index);
            } else if piece.unrequested > 0 && now < cutoff {
                plan.long_shots.push(piece.index);
            }
        }
        plan
    }

    /// When to ask the server for a piece whose fallback moment is `cutoff`:
    /// then, or `opening_lead` seconds earlier once every connected peer has
    /// been choking us for `OPENING_PATIENCE`. `choked_for` is how long that
    /// has been so (`None`: some peer unchokes us, or none is connected).
    pub fn server_moment(&self, cutoff: f64, choked_for: Option<f64>) -> f64 {
        match choked_for {
            Some(t) if t >= OPENING_PATIENCE => cutoff - self.opening_lead,
            _ => cutoff,
        }
    }

    /// Whether piece deadlines this close are the planner's business (the
    /// rest is left to rarest-first).
    pub fn in_horizon(&self, now: f64, deadline: f64) -> bool {
        deadline <= now + self.horizon
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(index: u32, deadline: f64, remaining: u64) -> PieceView {
        PieceView { index, deadline, remaining, unrequested: remaining }
    }

    fn in_flight(mut p: PieceView) -> PieceView {
        p.unrequested = 0;
        p
    }

    fn pieces_of(takes: &[Take]) -> Vec<u32> {
        takes.iter().map(|t| t.piece).collect()
    }

    #[test]
    fn a_slow_peer_takes_only_the_blocks_it_can_deliver_in_time() {
        let policy = Policy { horizon: 10.0, margin: 0.0, ..Policy::default() };
        // 16 kB/s peer, 16 kB already queued; piece 0 (4 blocks) is cut off at 3 s:
        // the queue takes 1 s, then two blocks fit. The other two stay free for other peers.
        let peer = PeerView { rate: BLOCK as f64, queued: BLOCK };
        let plan = policy.plan_for_peer(0.0, &[piece(0, 3.0, 4 * BLOCK)], &peer, |_| true, |p| p.deadline);
        assert_eq!(plan.urgent, vec![Take { piece: 0, bytes: 2 * BLOCK }]);
        // Another peer sees only the two blocks nobody was asked for.
        let mut rest = piece(0, 3.0, 4 * BLOCK);
        rest.unrequested = 2 * BLOCK;
        let idle = PeerView { rate: BLOCK as f64, queued: 0 };
        let plan = policy.plan_for_peer(0.0, &[rest], &idle, |_| true, |p| p.deadline);
        assert_eq!(plan.urgent, vec![Take { piece: 0, bytes: 2 * BLOCK }]);
    }

    #[test]
    fn feasible_pieces_earliest_deadline_first_and_lost_ones_skipped() {
        let policy = Policy { horizon: 10.0, prior_rate: 10_000.0, margin: 0.0, duplicate_margin: 0.0, ..Policy::default() };
        // 10 kB/s peer, nothing queued. Piece 0 due in 0.5 s needs 1 s: lost.
        // Piece 1 due at 2 s needs 1 s: fine; piece 2 due at 2.5 s would finish at 2 s: fine;
        // piece 3 (20 kB) due at 3 s would finish at 3.5 s: lost.
        let pieces = [piece(0, 0.5, 10_000), piece(1, 2.0, 10_000), piece(2, 2.5, 5_000), piece(3, 3.0, 20_000), piece(4, 30.0, 1)];
        let peer = PeerView { rate: 10_000.0, queued: 0 };
        let plan = policy.plan_for_peer(0.0, &pieces, &peer, |_| true, |p| p.deadline);
        assert_eq!(pieces_of(&plan.urgent), vec![1, 2], "piece 4 is beyond the horizon");
        assert!(plan.duplicate.is_empty());
        assert_eq!(plan.long_shots, vec![0, 3], "worth a try after the feasible ones");
        // Once a piece's cut-off has passed it is the server's alone.
        let later = policy.plan_for_peer(1.0, &pieces, &peer, |_| true, |p| p.deadline);
        assert!(!later.long_shots.contains(&0));
    }

    #[test]
    fn a_queue_at_the_peer_delays_everything_behind_it() {
        let policy = Policy { horizon: 10.0, margin: 0.0, ..Policy::default() };
        let pieces = [piece(0, 2.0, 10_000)];
        let idle = PeerView { rate: 10_000.0, queued: 0 };
        let busy = PeerView { rate: 10_000.0, queued: 15_000 };
        assert_eq!(pieces_of(&policy.plan_for_peer(0.0, &pieces, &idle, |_| true, |p| p.deadline).urgent), vec![0]);
        assert!(policy.plan_for_peer(0.0, &pieces, &busy, |_| true, |p| p.deadline).urgent.is_empty());
    }

    #[test]
    fn slightly_late_requested_pieces_are_duplicated_and_missing_ones_are_not() {
        let policy = Policy { horizon: 10.0, margin: 0.0, duplicate_margin: 1.0, ..Policy::default() };
        let late = in_flight(piece(0, 1.0, 15_000));
        let not_requested = piece(1, 1.0, 15_000);
        let peer = PeerView { rate: 10_000.0, queued: 0 };
        // Finishes at 1.5 s, due at 1.0: late by 0.5 < 1.0.
        let plan = policy.plan_for_peer(0.0, &[late, not_requested], &peer, |_| true, |p| p.deadline);
        assert_eq!(plan.duplicate, vec![0]);
        assert!(plan.urgent.is_empty());
    }

    #[test]
    fn a_piece_near_its_cut_off_is_rescued_by_a_peer_that_can_make_it() {
        let policy = Policy { horizon: 10.0, margin: 0.0, rescue_window: 3.0, ..Policy::default() };
        // Both pieces' last blocks are in flight at some other peer; this one
        // (10 kB/s) can finish either in time.
        let soon = in_flight(piece(0, 2.0, 10_000));
        let later = in_flight(piece(1, 8.0, 10_000));
        let peer = PeerView { rate: 10_000.0, queued: 0 };
        let plan = policy.plan_for_peer(0.0, &[soon, later], &peer, |_| true, |p| p.deadline);
        assert!(plan.urgent.is_empty(), "nothing is left to take on");
        assert_eq!(plan.duplicate, vec![0], "only the piece within 3 s of its cut-off is asked twice");
    }

    #[test]
    fn only_pieces_the_peer_has_and_an_unmeasured_peer_gets_the_prior() {
        let policy = Policy { horizon: 10.0, prior_rate: 1000.0, margin: 0.0, ..Policy::default() };
        let pieces = [piece(0, 5.0, 1000), piece(1, 5.0, 1000), piece(2, 5.0, 4000)];
        let new_peer = PeerView { rate: 0.0, queued: 0 };
        let plan = policy.plan_for_peer(0.0, &pieces, &new_peer, |i| i != 0, |p| p.deadline);
        // At the 1 kB/s prior: piece 1 done at 1 s, piece 2 would end at 5 s: exactly in time.
        assert_eq!(pieces_of(&plan.urgent), vec![1, 2]);
    }

    #[test]
    fn before_any_unchoke_the_opening_pieces_go_to_the_server_early() {
        let policy = Policy { opening_lead: 5.0, ..Policy::default() };
        assert_eq!(policy.server_moment(4.5, Some(1.0)), -0.5, "choked for a second: fetched at once");
        assert_eq!(policy.server_moment(4.5, Some(0.2)), 4.5, "a free slot may unchoke us yet");
        assert_eq!(policy.server_moment(4.5, None), 4.5, "a peer unchokes us: the last safe moment again");
        let off = Policy { opening_lead: 0.0, ..Policy::default() };
        assert_eq!(off.server_moment(4.5, Some(10.0)), 4.5);
    }

    #[test]
    fn the_fallback_moment_leaves_room_for_the_server() {
        // Due at 10 s, 20 kB missing, server 100 kB/s and 50 ms away, 0.25 s margin.
        let t = fallback_time(10.0, 20_000, 0.05, 100_000.0, 0.25);
        assert!((t - (10.0 - 0.05 - 0.2 - 0.25)).abs() < 1e-9);
    }
}
