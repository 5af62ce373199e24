//! Super-seeding (BEP 16): an initial seed that reveals pieces one by one.
//!
//! A seed that shows its whole bitfield lets several leechers fetch the same
//! piece from it at once, and its upload (the swarm's scarcest resource at
//! the start) is spent on duplicates. Instead, each peer is shown a few
//! pieces at a time: those revealed least often so far and rarest among our
//! peers. A peer is shown the next piece once it announces it has one of
//! its revealed pieces. Pure: the session keeps the state, this decides.
//!
//! By default (`SuperSeedMode::Auto`) a seed does this only while it is an
//! initial seed: no other seed is connected, and leechers are. Then every
//! piece it sends twice is upload (the swarm's scarcest resource) not spent
//! on a piece nobody else has. Once another seed appears, or one leecher has
//! been alone with it for `LONE_GRACE` (nobody to share with: few pieces at
//! a time would only slow it), it shows the connections it hid everything
//! and seeds as usual.

use ccfd_proto::bitfield::Bitfield;

/// Pieces revealed to one peer at a time: enough to keep its request
/// pipeline full across the round trip of `have` and the next reveal.
pub const REVEAL_AHEAD: usize = 3;

/// When a seed reveals pieces one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SuperSeedMode {
    /// While it is the swarm's initial seed (`super_seeding`).
    #[default]
    Auto,
    /// Whenever it is complete (BEP 16 as configured in other clients).
    Always,
    /// Never: every connection sees the whole bitfield.
    Never,
}

/// What the automatic rule looks at, as the seed sees its connections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeedView {
    /// We have every piece.
    pub complete: bool,
    /// Connected peers that have every piece.
    pub other_seeds: usize,
    /// Connected peers that do not (yet).
    pub leechers: usize,
    /// Seconds there has been exactly one leecher (0 otherwise).
    pub lone_for: f64,
}

/// How long one leecher alone keeps a seed super-seeding, seconds: peers
/// that start together connect within this, and a seed that has shown one
/// of them everything cannot hide it again.
pub const LONE_GRACE: f64 = 1.0;

/// Whether to reveal pieces one by one now.
pub fn super_seeding(mode: SuperSeedMode, view: &SeedView) -> bool {
    match mode {
        SuperSeedMode::Never => false,
        SuperSeedMode::Always => view.complete,
        SuperSeedMode::Auto => {
            let lone = view.leechers == 1 && view.lone_for >= LONE_GRACE;
            view.complete && view.other_seeds == 0 && view.leechers >= 1 && !lone
        }
    }
}

/// How often each piece was revealed, across all peers.
#[derive(Debug, Clone)]
pub struct SuperSeed {
    reveal_count: Vec<u32>,
}

impl SuperSeed {
    pub fn new(pieces: u32) -> SuperSeed {
        SuperSeed { reveal_count: vec![0; pieces as usize] }
    }

    /// Drops from `shown` the pieces the peer now has, and tops it up to
    /// `REVEAL_AHEAD` with new pieces. Returns the new pieces (to announce
    /// with `have`).
    pub fn reveal(&mut self, peer_has: &Bitfield, shown: &mut Vec<u32>, availability: impl Fn(u32) -> u32) -> Vec<u32> {
        shown.retain(|&p| !peer_has.get(p));
        let mut fresh = Vec::new();
        while shown.len() < REVEAL_AHEAD {
            let best = self.unshown(peer_has, shown).min_by_key(|&p| (self.reveal_count[p as usize], availability(p), p));
            let Some(p) = best else { break };
            self.show(p, shown);
            fresh.push(p);
        }
        fresh
    }

    /// One piece for a peer we choke and that wants nothing of ours yet, so
    /// it becomes interested and can win a slot: the most common piece it
    /// lacks, one it can get elsewhere, not one only we could give (that
    /// piece would wait for its unchoke while every other peer needs it).
    /// Among pieces nobody has yet (the start), the least shown.
    pub fn reveal_common(&mut self, peer_has: &Bitfield, shown: &mut Vec<u32>, availability: impl Fn(u32) -> u32) -> Option<u32> {
        shown.retain(|&p| !peer_has.get(p));
        let p = self
            .unshown(peer_has, shown)
            .max_by_key(|&p| (availability(p), std::cmp::Reverse(self.reveal_count[p as usize]), std::cmp::Reverse(p)))?;
        self.show(p, shown);
        Some(p)
    }

    /// The pieces the peer lacks and was not shown: the candidates to show it.
    fn unshown<'a>(&self, peer_has: &'a Bitfield, shown: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
        (0..self.reveal_count.len() as u32).filter(move |&p| !peer_has.get(p) && !shown.contains(&p))
    }

    fn show(&mut self, piece: u32, shown: &mut Vec<u32>) {
        self.reveal_count[piece as usize] += 1;
        shown.push(piece);
    }

    /// A peer left holding `shown` pieces it never got: they count as never
    /// revealed, so they go to the next peer at once. Otherwise a connection
    /// closed in the first second (two peers dialling each other) leaves
    /// its pieces for last, when every peer still needs them.
    pub fn withdraw(&mut self, shown: &[u32]) {
        for &p in shown {
            if let Some(c) = self.reveal_count.get_mut(p as usize) {
                *c = c.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_super_seeds_only_as_the_initial_seed() {
        let initial = SeedView { complete: true, other_seeds: 0, leechers: 8, lone_for: 0.0 };
        assert!(super_seeding(SuperSeedMode::Auto, &initial));
        // The first of several leechers, before the others connect.
        assert!(super_seeding(SuperSeedMode::Auto, &SeedView { leechers: 1, lone_for: 0.2, ..initial }));
        // Another seed, a leecher alone for a while, nobody, or not a seed: as usual.
        for view in [
            SeedView { other_seeds: 1, ..initial },
            SeedView { leechers: 1, lone_for: LONE_GRACE, ..initial },
            SeedView { leechers: 0, ..initial },
            SeedView { complete: false, ..initial },
        ] {
            assert!(!super_seeding(SuperSeedMode::Auto, &view), "{view:?}");
        }
        assert!(super_seeding(SuperSeedMode::Always, &SeedView { other_seeds: 3, leechers: 1, lone_for: 9.0, complete: true }));
        assert!(!super_seeding(SuperSeedMode::Always, &SeedView { complete: false, ..initial }));
        assert!(!super_seeding(SuperSeedMode::Never, &initial));
    }

    #[test]
    fn each_piece_is_revealed_once_before_any_twice() {
        let mut ss = SuperSeed::new(9);
        let none = Bitfield::new(9);
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        let mut all: Vec<u32> = [&mut a, &mut b, &mut c].into_iter().flat_map(|shown| ss.reveal(&none, shown, |_| 0)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..9).collect::<Vec<_>>(), "three peers, three pieces each, no overlap");
        // Peer a got its pieces: it is shown new ones, now necessarily repeats.
        let mut has_a = Bitfield::new(9);
        for &p in &a {
            has_a.set(p);
        }
        let next = ss.reveal(&has_a, &mut a, |_| 0);
        assert_eq!(next.len(), 3);
        assert!(next.iter().all(|p| !has_a.get(*p)));
    }

    #[test]
    fn pieces_shown_to_a_peer_that_left_are_shown_again_first() {
        let mut ss = SuperSeed::new(6);
        let none = Bitfield::new(6);
        let (mut gone, mut stays) = (Vec::new(), Vec::new());
        let lost = ss.reveal(&none, &mut gone, |_| 0);
        assert_eq!(lost, vec![0, 1, 2]);
        assert_eq!(ss.reveal(&none, &mut stays, |_| 0), vec![3, 4, 5]);
        ss.withdraw(&gone);
        // The peer that stays got its pieces: it is shown the lost ones, not repeats of its own.
        let mut has = Bitfield::new(6);
        for p in 3..6 {
            has.set(p);
        }
        assert_eq!(ss.reveal(&has, &mut stays, |_| 0), lost);
        // Out-of-range pieces are ignored.
        ss.withdraw(&[99]);
    }

    #[test]
    fn a_choked_peer_is_shown_a_common_piece() {
        let mut ss = SuperSeed::new(4);
        let mut has = Bitfield::new(4);
        has.set(3);
        let mut shown = Vec::new();
        // Piece 3 (which it has) is the most common; then piece 1.
        assert_eq!(ss.reveal_common(&has, &mut shown, |p| [1, 2, 0, 5][p as usize]), Some(1));
        assert_eq!(shown, vec![1]);
        // Fresh pieces still go to the peers we serve first.
        let mut other = Vec::new();
        assert_eq!(ss.reveal(&Bitfield::new(4), &mut other, |_| 0), vec![0, 2, 3]);
        assert_eq!(ss.reveal_common(&Bitfield::full(4), &mut shown, |_| 0), None);
        // At the start nobody has anything: newcomers are shown different pieces.
        let mut ss = SuperSeed::new(4);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(ss.reveal_common(&Bitfield::new(4), &mut a, |_| 0), Some(0));
        assert_eq!(ss.reveal_common(&Bitfield::new(4), &mut b, |_| 0), Some(1));
    }

    #[test]
    fn rarer_pieces_first_and_nothing_the_peer_has() {
        let mut ss = SuperSeed::new(5);
        let mut has = Bitfield::new(5);
        has.set(0);
        let mut shown = Vec::new();
        // Availability 4,3,2,1,0 for pieces 0..5.
        let fresh = ss.reveal(&has, &mut shown, |p| 4 - p);
        assert_eq!(fresh, vec![4, 3, 2]);
        let full = Bitfield::full(5);
        assert!(ss.reveal(&full, &mut shown, |_| 0).is_empty());
        assert!(shown.is_empty());
    }
}
