//! An iterative lookup (BEP 5): ask the closest known nodes for nodes
//! closer still (and, for `get_peers`, for peers), three at a time, until
//! the K closest nodes seen have all answered. Pure: the node sends the
//! queries it names and feeds back answers and timeouts.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::Id;
use crate::krpc::NodeInfo;
use crate::routing::K;

/// Queries in flight per lookup.
const ALPHA: usize = 3;
/// Candidates kept (the closest), queries sent, and time taken, at most.
const MAX_CANDIDATES: usize = 128;
const MAX_QUERIES: usize = 96;
const MAX_TIME: Duration = Duration::from_secs(30);

/// What a lookup is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    /// Nodes near the target (filling the table).
    FindNode,
    /// Peers of the target info-hash; announce when done.
    GetPeers { announce: Option<Announce> },
}

/// How to announce ourselves as a peer when a `get_peers` lookup ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    pub port: u16,
    /// The port is the one our datagrams come from (uTP and TCP share it):
    /// nodes take the source port, which also works behind a NAT.
    pub implied: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    Asked,
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    addr: SocketAddr,
    /// Unknown for a bootstrap router until it answers.
    id: Option<Id>,
    state: State,
    token: Option<Vec<u8>>,
}

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Query(Vec<SocketAddr>),
    Wait,
    Done,
}

/// One lookup in progress.
#[derive(Debug)]
pub struct Lookup {
    pub target: Id,
    pub kind: LookupKind,
    started: Instant,
    candidates: Vec<Candidate>,
    queries: usize,
    peers: HashSet<SocketAddr>,
}

impl Lookup {
    /// Starts from known nodes and from routers whose ids we do not know.
    pub fn new(target: Id, kind: LookupKind, now: Instant, seeds: Vec<NodeInfo>, routers: Vec<SocketAddr>) -> Lookup {
        let mut lookup = Lookup { target, kind, started: now, candidates: Vec::new(), queries: 0, peers: HashSet::new() };
        for n in seeds {
            lookup.add(n.addr, Some(n.id));
        }
        for r in routers {
            lookup.add(r, None);
        }
        lookup
    }

    fn add(&mut self, addr: SocketAddr, id: Option<Id>) {
        if self.candidates.iter().any(|c| c.addr == addr) {
            return;
        }
        self.candidates.push(Candidate { addr, id, state: State::Fresh, token: None });
    }

    /// Sort key: known ids by distance, unknown (routers) after them.
    fn order(&mut self) {
        let target = self.target;
        self.candidates.sort_by_key(|c| (c.id.is_none(), c.id.map(|id| id.distance(&target)).unwrap_or([0xff; 20])));
        if self.candidates.len() > MAX_CANDIDATES {
            // Keep what is in flight even if far: its answer is still coming.
            let mut kept = 0;
            self.candidates.retain(|c| {
                kept += 1;
                kept <= MAX_CANDIDATES || c.state == State::Asked
            });
        }
    }

    /// The next queries, or whether to wait, or that the lookup is over.
    pub fn step(&mut self, now: Instant) -> Step {
        self.order();
        let asked = self.candidates.iter().filter(|c| c.state == State::Asked).count();
        if now.duration_since(self.started) >= MAX_TIME {
            return Step::Done;
        }
        // The K closest that have not failed: done when all answered.
        let closest: Vec<usize> = (0..self.candidates.len()).filter(|&i| self.candidates[i].state != State::Failed).take(K).collect();
        let unknown_routers = self.candidates.iter().any(|c| c.id.is_none() && c.state == State::Fresh);
        if !closest.is_empty() && closest.iter().all(|&i| self.candidates[i].state == State::Answered) && !unknown_routers {
            return Step::Done;
        }
        let mut out = Vec::new();
        let room = ALPHA.saturating_sub(asked);
        for &i in &closest {
            if out.len() >= room || self.queries >= MAX_QUERIES {
                break;
            }
            if self.candidates[i].state == State::Fresh {
                self.candidates[i].state = State::Asked;
                self.queries += 1;
                out.push(self.candidates[i].addr);
            }
        }
        // Routers (unknown ids) sort last; ask them while the table offers nothing closer.
        if out.len() < room && self.queries < MAX_QUERIES {
            for c in self.candidates.iter_mut().filter(|c| c.id.is_none() && c.state == State::Fresh) {
                if out.len() >= room {
                    break;
                }
                c.state = State::Asked;
                self.queries += 1;
                out.push(c.addr);
            }
        }
        if !out.is_empty() {
            return Step::Query(out);
        }
        if asked == 0 {
            // Nothing in flight and nothing left to ask.
            return Step::Done;
        }
        Step::Wait
    }

    /// `addr` (id `id`) answered with `nodes` and perhaps a token. Returns
    /// how many of the nodes were new candidates.
    pub fn responded(&mut self, addr: SocketAddr, id: Id, nodes: &[NodeInfo], token: Option<Vec<u8>>) -> usize {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            c.state = State::Answered;
            c.id = Some(id);
            c.token = token;
        }
        let before = self.candidates.len();
        for n in nodes.iter().filter(|n| n.addr.is_ipv6() == addr.is_ipv6()) {
            self.add(n.addr, Some(n.id));
        }
        self.candidates.len() - before
    }

    /// A query to `addr` timed out or was refused.
    pub fn failed(&mut self, addr: &SocketAddr) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == *addr) {
            c.state = State::Failed;
        }
    }

    /// Peers not reported by this lookup before.
    pub fn new_peers(&mut self, peers: Vec<SocketAddr>) -> Vec<SocketAddr> {
        peers.into_iter().filter(|p| self.peers.insert(*p)).collect()
    }

    /// The closest nodes that answered with a token: where to announce.
    pub fn announce_targets(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut answered: Vec<&Candidate> = self.candidates.iter().filter(|c| c.state == State::Answered && c.token.is_some()).collect();
        answered.sort_by_key(|c| c.id.map(|id| id.distance(&self.target)).unwrap_or([0xff; 20]));
        answered.into_iter().take(K).filter_map(|c| Some((c.addr, c.token.clone()?))).collect()
    }

    pub fn responded_count(&self) -> usize {
        self.candidates.iter().filter(|c| c.state == State::Answered).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeInfo {
        let mut id = [0u8; 20];
        id[0] = b;
        NodeInfo { id: Id(id), addr: SocketAddr::from(([127, 0, 0, b], 7000)) }
    }

    #[test]
    fn asks_three_at_a_time_closest_first_and_ends_when_the_closest_answered() {
        let now = Instant::now();
        let seeds: Vec<NodeInfo> = [0x80, 0x40, 0x20, 0x10, 0x08].into_iter().map(node).collect();
        let mut l =
            Lookup::new(Id([0; 20]), LookupKind::GetPeers { announce: Some(Announce { port: 7, implied: true }) }, now, seeds, Vec::new());
        let Step::Query(first) = l.step(now) else { panic!() };
        assert_eq!(first, vec![node(0x08).addr, node(0x10).addr, node(0x20).addr]);
        assert_eq!(l.step(now), Step::Wait, "three in flight");
        // The closest answers with a closer node still, and a token.
        l.responded(node(0x08).addr, node(0x08).id, &[node(0x01)], Some(b"t".to_vec()));
        let Step::Query(next) = l.step(now) else { panic!() };
        assert_eq!(next, vec![node(0x01).addr]);
        l.failed(&node(0x10).addr);
        l.responded(node(0x20).addr, node(0x20).id, &[], Some(b"u".to_vec()));
        l.responded(node(0x01).addr, node(0x01).id, &[], None);
        // Two left: 0x40 and 0x80, each asked in turn.
        let Step::Query(rest) = l.step(now) else { panic!() };
        assert_eq!(rest.len(), 2);
        for a in rest {
            let n = [node(0x40), node(0x80)].into_iter().find(|n| n.addr == a).unwrap();
            l.responded(a, n.id, &[], None);
        }
        assert_eq!(l.step(now), Step::Done);
        let targets = l.announce_targets();
        assert_eq!(targets.len(), 2, "only answers with tokens");
        assert_eq!(targets[0].0, node(0x08).addr);
    }

    #[test]
    fn routers_are_asked_and_a_lookup_ends_by_itself() {
        let now = Instant::now();
        let router: SocketAddr = "127.0.0.200:6881".parse().unwrap();
        let mut l = Lookup::new(Id([1; 20]), LookupKind::FindNode, now, Vec::new(), vec![router]);
        assert_eq!(l.step(now), Step::Query(vec![router]));
        l.failed(&router);
        assert_eq!(l.step(now), Step::Done, "nobody left to ask");
        let mut slow = Lookup::new(Id([1; 20]), LookupKind::FindNode, now, vec![node(9)], Vec::new());
        assert!(matches!(slow.step(now), Step::Query(_)));
        assert_eq!(slow.step(now + MAX_TIME), Step::Done, "bounded in time");
        let mut l = Lookup::new(Id([1; 20]), LookupKind::FindNode, now, Vec::new(), Vec::new());
        assert_eq!(l.new_peers(vec![router, router]), vec![router]);
        assert!(l.new_peers(vec![router]).is_empty());
    }
}
