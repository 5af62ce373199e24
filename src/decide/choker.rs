//! Tit-for-tat choking (BEP 3): which interested peers we upload to.
//!
//! Pure: the session passes the peers' state and the time, and applies the
//! returned unchoke set. Regular slots go to the peers that give us the most
//! (download rate while leeching, upload rate while seeding), recomputed
//! every `rechoke_interval` so the choice does not flap; one optimistic slot
//! rotates every `optimistic_interval` to a random choked peer, so newcomers
//! and peers choked before get a chance to prove themselves. A peer that
//! snubs us (sends nothing we asked for) only ever gets the optimistic slot.
//! A super-seed has nothing to reward: it wants every leecher holding
//! pieces the others lack, so each one's upload works, and it takes more
//! regular slots (`super_seed_slots`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use rand::Rng;

use super::picker::PeerKey;

/// Slot counts and intervals; tests shorten the intervals.
#[derive(Debug, Clone)]
pub struct ChokerConfig {
    /// Peers unchoked for their rate.
    pub regular_slots: usize,
    /// Regular slots while super-seeding. With 4 a first seed with six
    /// leechers left one without pieces of its own to pass on for 30 s at
    /// a time, and the others' uploads had to carry its share.
    pub super_seed_slots: usize,
    pub rechoke_interval: Duration,
    pub optimistic_interval: Duration,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        ChokerConfig {
            regular_slots: 4,
            super_seed_slots: 8,
            rechoke_interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
        }
    }
}

/// What the choker needs to know about one connected peer.
#[derive(Debug, Clone)]
pub struct ChokeInput {
    pub key: PeerKey,
    /// The peer wants data from us; only interested peers take slots.
    pub interested: bool,
    /// Bytes per second: from the peer while we leech, to it while we seed.
    pub rate: f64,
    /// We want data from the peer but it has sent none for a while.
    pub snubbed: bool,
}

/// Choking state across rounds.
#[derive(Debug)]
pub struct Choker {
    config: ChokerConfig,
    regular: Vec<PeerKey>,
    optimistic: Option<PeerKey>,
    next_rechoke: Option<Instant>,
    next_optimistic: Option<Instant>,
}

impl Choker {
    pub fn new(config: ChokerConfig) -> Choker {
        Choker { config, regular: Vec::new(), optimistic: None, next_rechoke: None, next_optimistic: None }
    }

    pub fn config(&self) -> &ChokerConfig {
        &self.config
    }

    /// The peer holding the optimistic slot.
    pub fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic
    }

    /// The peers to have unchoked at `now`. Between rounds the choice is
    /// kept, except that peers which left or lost interest free their slot
    /// and a free slot is filled at once (a newcomer does not wait 10 s).
    pub fn unchoked(&mut self, now: Instant, peers: &[ChokeInput], super_seeding: bool, rng: &mut impl Rng) -> HashSet<PeerKey> {
        let slots = if super_seeding { self.config.super_seed_slots } else { self.config.regular_slots };
        let interested = |k: PeerKey| peers.iter().any(|p| p.key == k && p.interested);
        let rechoke_due = self.next_rechoke.is_none_or(|t| now >= t);
        let mut optimistic_due = self.next_optimistic.is_none_or(|t| now >= t);
        if rechoke_due {
            self.next_rechoke = Some(now + self.config.rechoke_interval);
            self.regular.clear();
        }
        self.regular.retain(|&k| interested(k));
        self.regular.truncate(slots);
        if self.regular.len() < slots {
            let mut ranked: Vec<&ChokeInput> =
                peers.iter().filter(|p| p.interested && !p.snubbed && !self.regular.contains(&p.key)).collect();
            // Fastest first; ties (all zero at the start) broken by key for a stable order.
            ranked.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(a.key.cmp(&b.key)));
            let room = slots - self.regular.len();
            self.regular.extend(ranked.into_iter().take(room).map(|p| p.key));
        }
        match self.optimistic {
            Some(k) if !interested(k) || self.regular.contains(&k) => optimistic_due = true,
            None => optimistic_due = true,
            Some(_) => {}
        }
        if optimistic_due {
            let current = self.optimistic;
            let choked: Vec<PeerKey> =
                peers.iter().filter(|p| p.interested && !self.regular.contains(&p.key) && Some(p.key) != current).map(|p| p.key).collect();
            match choked.choose(rng) {
                Some(&next) => self.optimistic = Some(next),
                // No one else to try: keep the current peer if it still qualifies.
                None if current.is_some_and(|k| !interested(k) || self.regular.contains(&k)) => self.optimistic = None,
                None => {}
            }
            self.next_optimistic = Some(now + self.config.optimistic_interval);
        }
        self.regular.iter().copied().chain(self.optimistic).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn peer(key: PeerKey, rate: f64) -> ChokeInput {
        ChokeInput { key, interested: true, rate, snubbed: false }
    }

    fn config(regular: usize) -> ChokerConfig {
        ChokerConfig { regular_slots: regular, ..ChokerConfig::default() }
    }

    #[test]
    fn regular_slots_go_to_the_fastest_peers() {
        let mut choker = Choker::new(config(2));
        let mut rng = StdRng::seed_from_u64(1);
        let peers = [peer(1, 10.0), peer(2, 500.0), peer(3, 50.0), peer(4, 300.0)];
        let set = choker.unchoked(Instant::now(), &peers, false, &mut rng);
        assert!(set.contains(&2) && set.contains(&4));
        assert_eq!(set.len(), 3, "two regular slots and one optimistic");
        let opt = choker.optimistic().unwrap();
        assert!(opt == 1 || opt == 3);
    }

    #[test]
    fn a_peer_whose_rate_drops_is_replaced_at_the_next_rechoke_only() {
        let mut choker = Choker::new(config(1));
        let mut rng = StdRng::seed_from_u64(2);
        let t0 = Instant::now();
        let mut peers = vec![peer(1, 100.0), peer(2, 10.0)];
        assert!(choker.unchoked(t0, &peers, false, &mut rng).contains(&1));
        peers[0].rate = 1.0;
        peers[1].rate = 200.0;
        // Mid-round: the choice stands (no flapping).
        choker.unchoked(t0 + Duration::from_secs(5), &peers, false, &mut rng);
        assert_eq!(choker.regular, vec![1]);
        choker.unchoked(t0 + Duration::from_secs(10), &peers, false, &mut rng);
        assert_eq!(choker.regular, vec![2]);
    }

    #[test]
    fn a_choked_peer_gets_the_optimistic_slot_in_turn() {
        let mut choker = Choker::new(config(1));
        let mut rng = StdRng::seed_from_u64(3);
        let t0 = Instant::now();
        let peers: Vec<ChokeInput> = (1..=4).map(|k| peer(k, if k == 1 { 1000.0 } else { 1.0 })).collect();
        let mut seen = HashSet::new();
        for round in 0..40 {
            let set = choker.unchoked(t0 + Duration::from_secs(30 * round), &peers, false, &mut rng);
            assert!(set.contains(&1), "the fastest keeps its regular slot");
            seen.extend(choker.optimistic());
        }
        assert_eq!(seen, HashSet::from([2, 3, 4]), "every choked peer was tried");
    }

    #[test]
    fn snubbing_peers_get_no_regular_slot_and_uninterested_ones_none() {
        let mut choker = Choker::new(config(3));
        let mut rng = StdRng::seed_from_u64(4);
        let mut snubber = peer(1, 1e9);
        snubber.snubbed = true;
        let mut bored = peer(2, 1e9);
        bored.interested = false;
        let peers = [snubber, bored, peer(3, 5.0)];
        let set = choker.unchoked(Instant::now(), &peers, false, &mut rng);
        assert_eq!(choker.regular, vec![3]);
        assert_eq!(choker.optimistic(), Some(1), "only the optimistic slot is left for a snubber");
        assert!(!set.contains(&2));
    }

    #[test]
    fn a_newcomer_fills_a_free_slot_at_once_and_a_leaver_frees_one() {
        let mut choker = Choker::new(config(2));
        let mut rng = StdRng::seed_from_u64(5);
        let t0 = Instant::now();
        let mut peers = vec![peer(1, 9.0)];
        choker.unchoked(t0, &peers, false, &mut rng);
        peers.push(peer(2, 0.0));
        peers.push(peer(3, 0.0));
        let set = choker.unchoked(t0 + Duration::from_secs(1), &peers, false, &mut rng);
        assert_eq!(set, HashSet::from([1, 2, 3]));
        peers[0].interested = false;
        let set = choker.unchoked(t0 + Duration::from_secs(2), &peers, false, &mut rng);
        assert!(!set.contains(&1));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn a_super_seed_unchokes_more_peers() {
        let mut choker = Choker::new(config(2));
        let mut rng = StdRng::seed_from_u64(6);
        let t0 = Instant::now();
        let peers: Vec<ChokeInput> = (1..=9).map(|k| peer(k, 0.0)).collect();
        assert_eq!(choker.unchoked(t0, &peers, false, &mut rng).len(), 3);
        assert_eq!(choker.unchoked(t0 + Duration::from_secs(1), &peers, true, &mut rng).len(), 9, "eight regular and the optimistic");
        // Back to leeching rules (a new file, say): the extra slots go.
        assert_eq!(choker.unchoked(t0 + Duration::from_secs(2), &peers, false, &mut rng).len(), 3);
    }
}
