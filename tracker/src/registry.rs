//! The built-in tracker's state: who is in which swarm. Pure: time is a
//! value, no sockets. Stores only control information (addresses, counts,
//! last announce), never file content.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ccfd_proto::metainfo::InfoHash;

use super::{Event, ScrapeStats};

/// Bounds that keep a public tracker's memory finite.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Peers returned per announce, whatever `numwant` says.
    pub max_numwant: usize,
    /// Peers remembered per torrent; beyond it new peers are not stored (but still answered).
    pub max_peers_per_torrent: usize,
    /// Torrents remembered; beyond it announces for new torrents are refused.
    pub max_torrents: usize,
    /// Announce interval we ask for; a peer silent for twice this is expired.
    pub interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_numwant: 200, max_peers_per_torrent: 10_000, max_torrents: 100_000, interval: Duration::from_secs(1800) }
    }
}

/// One announce, as either front end parsed it.
#[derive(Debug, Clone)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    /// The address peers should dial: the sender's IP and its announced port.
    pub addr: SocketAddr,
    pub left: u64,
    pub event: Event,
    pub numwant: Option<u32>,
}

/// What the tracker answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceReply {
    pub peers: Vec<SocketAddr>,
    pub seeders: u32,
    pub leechers: u32,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
struct PeerEntry {
    addr: SocketAddr,
    seed: bool,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct Swarm {
    peers: HashMap<[u8; 20], PeerEntry>,
    completed: u32,
}

impl Swarm {
    fn counts(&self) -> (u32, u32) {
        let seeders = self.peers.values().filter(|p| p.seed).count() as u32;
        (seeders, self.peers.len() as u32 - seeders)
    }
}

/// Why an announce was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("tracker is full")]
    Full,
}

/// Every swarm the tracker knows.
#[derive(Debug, Default)]
pub struct Registry {
    limits: Limits,
    swarms: HashMap<InfoHash, Swarm>,
}

impl Registry {
    pub fn new(limits: Limits) -> Registry {
        Registry { limits, swarms: HashMap::new() }
    }

    /// Records an announce and picks peers for the reply (never the announcer itself).
    pub fn announce(&mut self, a: &Announce, now: Instant) -> Result<AnnounceReply, RegistryError> {
        if !self.swarms.contains_key(&a.info_hash) && self.swarms.len() >= self.limits.max_torrents {
            return Err(RegistryError::Full);
        }
        let limits = self.limits;
        let swarm = self.swarms.entry(a.info_hash).or_default();
        let seed = a.left == 0;
        if a.event == Event::Stopped {
            swarm.peers.remove(&a.peer_id);
        } else {
            if a.event == Event::Completed {
                swarm.completed = swarm.completed.saturating_add(1);
            }
            let known = swarm.peers.contains_key(&a.peer_id);
            if known || swarm.peers.len() < limits.max_peers_per_torrent {
                swarm.peers.insert(a.peer_id, PeerEntry { addr: a.addr, seed, last_seen: now });
            }
        }
        let want = a.numwant.map_or(50, |n| n as usize).min(limits.max_numwant);
        // A seed needs only leechers; a leecher wants everyone.
        let peers = swarm
            .peers
            .iter()
            .filter(|(id, p)| **id != a.peer_id && p.addr != a.addr && !(seed && p.seed))
            .map(|(_, p)| p.addr)
            .take(want)
            .collect();
        let (seeders, leechers) = swarm.counts();
        if swarm.peers.is_empty() && swarm.completed == 0 {
            self.swarms.remove(&a.info_hash);
        }
        Ok(AnnounceReply { peers, seeders, leechers, interval: limits.interval })
    }

    /// Seeders, completed downloads and leechers of a torrent.
    pub fn scrape(&self, info_hash: &InfoHash) -> ScrapeStats {
        self.swarms.get(info_hash).map_or(ScrapeStats { seeders: 0, completed: 0, leechers: 0 }, |s| {
            let (seeders, leechers) = s.counts();
            ScrapeStats { seeders, completed: s.completed, leechers }
        })
    }

    /// Forgets peers that stopped announcing (silent for two intervals).
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.limits.interval * 2;
        for swarm in self.swarms.values_mut() {
            swarm.peers.retain(|_, p| now.saturating_duration_since(p.last_seen) <= ttl);
        }
        self.swarms.retain(|_, s| !s.peers.is_empty() || s.completed > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(id: u8, port: u16, left: u64, event: Event) -> Announce {
        Announce {
            info_hash: InfoHash([1; 20]),
            peer_id: [id; 20],
            addr: SocketAddr::from(([127, 0, 0, id], port)),
            left,
            event,
            numwant: None,
        }
    }

    #[test]
    fn lists_others_not_self_and_seeds_get_only_leechers() {
        let mut r = Registry::new(Limits::default());
        let t = Instant::now();
        let first = r.announce(&ann(1, 6881, 0, Event::Started), t).unwrap();
        assert!(first.peers.is_empty());
        let second = r.announce(&ann(2, 6881, 100, Event::Started), t).unwrap();
        assert_eq!(second.peers, vec![SocketAddr::from(([127, 0, 0, 1], 6881))]);
        assert_eq!((second.seeders, second.leechers), (1, 1));
        let seed2 = r.announce(&ann(3, 6881, 0, Event::Started), t).unwrap();
        assert_eq!(seed2.peers, vec![SocketAddr::from(([127, 0, 0, 2], 6881))], "seeds get leechers only");
    }

    #[test]
    fn stopped_completed_and_expiry() {
        let mut r = Registry::new(Limits { interval: Duration::from_secs(10), ..Limits::default() });
        let t = Instant::now();
        r.announce(&ann(1, 1, 0, Event::Started), t).unwrap();
        r.announce(&ann(2, 1, 5, Event::Started), t).unwrap();
        r.announce(&ann(2, 1, 0, Event::Completed), t).unwrap();
        assert_eq!(r.scrape(&InfoHash([1; 20])), ScrapeStats { seeders: 2, completed: 1, leechers: 0 });
        r.announce(&ann(1, 1, 0, Event::Stopped), t).unwrap();
        assert_eq!(r.scrape(&InfoHash([1; 20])).seeders, 1);
        r.expire(t + Duration::from_secs(21));
        assert_eq!(r.scrape(&InfoHash([1; 20])).seeders, 0);
    }

    #[test]
    fn bounds_hold() {
        let mut r = Registry::new(Limits { max_numwant: 3, max_peers_per_torrent: 5, max_torrents: 1, ..Limits::default() });
        let t = Instant::now();
        for id in 1..=10 {
            r.announce(&ann(id, 1, 1, Event::Started), t).unwrap();
        }
        assert_eq!(r.scrape(&InfoHash([1; 20])).leechers, 5);
        let mut a = ann(11, 1, 1, Event::None);
        a.numwant = Some(1000);
        assert_eq!(r.announce(&a, t).unwrap().peers.len(), 3);
        a.info_hash = InfoHash([2; 20]);
        assert_eq!(r.announce(&a, t), Err(RegistryError::Full));
    }
}
