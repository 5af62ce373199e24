//! Super-seeding (BEP 16): an initial seed that reveals pieces one by one.
//!
//! A seed that shows its whole bitfield lets several leechers fetch the same
//! piece from it at once, and its upload (the swarm's scarcest resource at
//! the start) is spent on duplicates. Instead, each peer is shown a few
//! pieces at a time: those revealed least often so far and rarest among our
//! peers. A peer is shown the next piece once it announces it has one of
//! its revealed pieces. Pure: the session keeps the state, this decides.

use crate::bitfield::Bitfield;

/// Pieces revealed to one peer at a time: enough to keep its request
/// pipeline full across the round trip of `have` and the next reveal.
pub const REVEAL_AHEAD: usize = 3;

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
            let best = (0..self.reveal_count.len() as u32)
                .filter(|&p| !peer_has.get(p) && !shown.contains(&p))
                .min_by_key(|&p| (self.reveal_count[p as usize], availability(p), p));
            let Some(p) = best else { break };
            self.reveal_count[p as usize] += 1;
            shown.push(p);
            fresh.push(p);
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
