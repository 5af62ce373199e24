//! The swarm's periodic decisions, sans I/O: `SwarmState::tick` takes the
//! time and returns which addresses to dial and when to wake next; on a
//! full tick it also folds byte counts into rates and rechokes. The task
//! that calls it (`torrent`) does the dialing and the sleeping.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::decide::choker::ChokeInput;
use crate::decide::superseed::{self, SeedView, SuperSeedMode};

use super::{dialer, PeerCommand, Swarm, SwarmState, TorrentConfig};

/// What a tick decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tick {
    /// Addresses to dial now; each is marked as being dialed.
    pub dial: Vec<SocketAddr>,
    /// The earliest time a further known address becomes due (a backoff
    /// ends), so the dialer wakes then instead of at its next tick.
    pub next_retry: Option<Instant>,
}

impl SwarmState {
    /// One step of the swarm's clock. `elapsed` is the time since the last
    /// full tick, or `None` for a step taken only to dial (new candidates
    /// arrived, a peer left, a backoff ended).
    pub(super) fn tick(&mut self, now: Instant, elapsed: Option<Duration>, config: &TorrentConfig, listen: SocketAddr) -> Tick {
        // Done: nothing left to fetch (a seed, or every chosen file is here).
        let complete = self.picker.is_done();
        if let Some(elapsed) = elapsed {
            self.update_rates(elapsed.max(Duration::from_millis(1)), config.choker.rechoke_interval);
            self.rechoke(now, config.super_seed);
            if complete {
                // Seeds have nothing to give each other.
                for p in self.peers.values().filter(|p| p.is_seed) {
                    let _ = p.tx.send(PeerCommand::Close);
                }
            }
        }
        let mut busy: HashSet<SocketAddr> = self.peers.values().map(|p| p.addr).collect();
        busy.extend(self.connecting.iter().copied());
        busy.insert(listen);
        let room = config.max_peers.saturating_sub(self.peers.len() + self.connecting.len());
        let (dial, next_retry) = dialer::due(&self.candidates, &busy, complete, now, room);
        self.connecting.extend(dial.iter().copied());
        Tick { dial, next_retry }
    }

    /// Folds the last tick's byte counts into each peer's smoothed rates,
    /// with a time constant of one rechoke interval: tit-for-tat looks at
    /// the last round.
    fn update_rates(&mut self, tick: Duration, rechoke_interval: Duration) {
        let alpha = 1.0 - (-tick.as_secs_f64() / rechoke_interval.as_secs_f64().max(0.001)).exp();
        let secs = tick.as_secs_f64();
        for p in self.peers.values_mut() {
            let up = p.traffic.take_uploaded();
            p.down_rate += alpha * (p.down_tick as f64 / secs - p.down_rate);
            p.up_rate += alpha * (up as f64 / secs - p.up_rate);
            p.down_tick = 0;
        }
    }

    /// Whether a seed reveals pieces one by one now (`superseed::super_seeding`).
    pub(super) fn super_seeding(&mut self, mode: SuperSeedMode, now: Instant) -> bool {
        let other_seeds = self.peers.values().filter(|p| p.is_seed).count();
        let leechers = self.peers.len() - other_seeds;
        // A connection asks as soon as it is admitted: the first look at a
        // lone leecher is when it came.
        self.lone_since = (leechers == 1).then(|| self.lone_since.unwrap_or(now));
        let lone_for = self.lone_since.map_or(0.0, |since| now.saturating_duration_since(since).as_secs_f64());
        let view = SeedView { complete: self.picker.is_complete(), other_seeds, leechers, lone_for };
        superseed::super_seeding(mode, &view)
    }

    /// Applies the choker's decision: choke and unchoke the peers whose state changes.
    pub(super) fn rechoke(&mut self, now: Instant, super_seed: SuperSeedMode) {
        let seeding = self.picker.is_done();
        let super_seeding = self.super_seeding(super_seed, now);
        let inputs: Vec<ChokeInput> = self
            .peers
            .iter()
            .map(|(&key, p)| ChokeInput {
                key,
                interested: p.interested,
                rate: if seeding { p.up_rate } else { p.down_rate },
                snubbed: p.snubbed && !seeding,
            })
            .collect();
        let SwarmState { choker, rng, peers, superseed, .. } = self;
        let unchoke = choker.unchoked(now, &inputs, super_seeding, rng);
        for (key, p) in peers.iter_mut() {
            let want = unchoke.contains(key);
            if want != p.unchoked {
                p.unchoked = want;
                if super_seeding && !want {
                    // We will not serve the pieces shown to it while it is
                    // choked: others get them now, not once it is unchoked.
                    superseed.withdraw(&std::mem::take(&mut p.shown));
                }
                let _ = p.tx.send(PeerCommand::Choke(!want));
            }
        }
    }
}

impl Swarm {
    /// A step of the swarm's clock (see `SwarmState::tick`).
    pub fn tick(&self, now: Instant, elapsed: Option<Duration>) -> Tick {
        self.state.lock().tick(now, elapsed, &self.config, self.net.listen_addr)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ccfd_proto::bitfield::Bitfield;
    use ccfd_proto::metainfo::{FileEntry, InfoHash, Metainfo};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use tokio::sync::mpsc;

    use super::*;
    use crate::decide::picker::PeerKey;
    use crate::discovery::PeerSource;
    use crate::net::transport::{Obfuscation, Transport};
    use crate::net::Traffic;

    const LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 6881);

    fn meta(pieces: u32) -> Metainfo {
        let piece_length = 32768;
        Metainfo {
            info_hash: InfoHash([1; 20]),
            name: "x".into(),
            piece_length,
            total_length: u64::from(pieces) * piece_length,
            piece_hashes: vec![[0; 20]; pieces as usize],
            files: vec![FileEntry { path: "x".into(), length: u64::from(pieces) * piece_length, offset: 0, pad: false }],
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            private: false,
            info_bytes: Vec::new(),
        }
    }

    fn state(config: &TorrentConfig, have: Bitfield) -> SwarmState {
        let mut rng = StdRng::seed_from_u64(7);
        SwarmState::new(&meta(have.len()), have, config, None, &mut rng)
    }

    fn addr(host: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, host], 7000))
    }

    fn peer(s: &mut SwarmState, host: u8) -> (PeerKey, Arc<Traffic>, mpsc::UnboundedReceiver<PeerCommand>) {
        let traffic = Arc::new(Traffic::default());
        let (key, rx) = s.admit(addr(host), [host; 20], true, (Transport::Tcp, Obfuscation::None), traffic.clone(), 50).unwrap();
        (key, traffic, rx)
    }

    #[test]
    fn new_candidates_are_dialed_once_within_the_room() {
        let config = TorrentConfig { max_peers: 3, ..TorrentConfig::default() };
        let mut s = state(&config, Bitfield::new(4));
        let now = Instant::now();
        assert!(s.add_candidates([addr(2), addr(3), addr(4), addr(5), LISTEN], PeerSource::Tracker, LISTEN, now));
        let first = s.tick(now, None, &config, LISTEN);
        assert_eq!(first.dial.len(), 3, "three slots");
        assert!(!first.dial.contains(&LISTEN), "never ourselves");
        // Those three are being dialed; the fourth waits for room.
        let second = s.tick(now, None, &config, LISTEN);
        assert!(second.dial.is_empty());
        // A failed dial frees its slot and backs the address off.
        let failed = first.dial[0];
        s.connecting.remove(&failed);
        s.candidates.get_mut(&failed).unwrap().failed(now);
        let third = s.tick(now, None, &config, LISTEN);
        assert_eq!(third.dial.len(), 1);
        assert_ne!(third.dial[0], failed, "the failed address waits for its backoff");
        assert_eq!(third.next_retry, Some(now + Duration::from_secs(1)));
    }

    #[test]
    fn a_complete_torrent_dials_only_pinned_addresses_and_drops_seeds() {
        let config = TorrentConfig::default();
        let mut s = state(&config, Bitfield::full(4));
        let now = Instant::now();
        s.add_candidates([addr(2)], PeerSource::Tracker, LISTEN, now);
        s.add_candidates([addr(3)], PeerSource::Manual, LISTEN, now);
        assert_eq!(s.tick(now, None, &config, LISTEN).dial, vec![addr(3)]);
        let (key, _, mut rx) = peer(&mut s, 9);
        s.peers.get_mut(&key).unwrap().is_seed = true;
        s.tick(now, Some(Duration::from_secs(1)), &config, LISTEN);
        let mut got = Vec::new();
        while let Ok(c) = rx.try_recv() {
            got.push(c);
        }
        assert!(got.contains(&PeerCommand::Close), "seed-to-seed links close: {got:?}");
    }

    #[test]
    fn a_full_tick_turns_traffic_into_rates_and_unchokes_the_interested() {
        let config = TorrentConfig::default();
        let mut s = state(&config, Bitfield::full(4));
        let now = Instant::now();
        let (a, traffic_a, mut rx_a) = peer(&mut s, 2);
        let (b, _, mut rx_b) = peer(&mut s, 3);
        s.peers.get_mut(&a).unwrap().interested = true;
        traffic_a.uploaded(100_000);
        s.tick(now, Some(Duration::from_secs(1)), &config, LISTEN);
        let pa = &s.peers[&a];
        assert!(pa.up_rate > 0.0 && pa.up_rate < 100_000.0, "smoothed over the rechoke interval: {}", pa.up_rate);
        assert_eq!(traffic_a.take_uploaded(), 0, "the tick took the count");
        assert_eq!(s.peers[&b].up_rate, 0.0);
        assert_eq!(rx_a.try_recv().ok(), Some(PeerCommand::Choke(false)), "interested: unchoked");
        assert!(rx_b.try_recv().is_err(), "not interested: left choked, no message");
        // A dialing step alone changes no rate.
        let before = s.peers[&a].up_rate;
        s.tick(now, None, &config, LISTEN);
        assert_eq!(s.peers[&a].up_rate, before);
    }
}
