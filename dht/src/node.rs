//! A DHT node, sans I/O: datagrams and the time go in, datagrams to send
//! and events come out. It answers queries (ping, find_node, get_peers,
//! announce_peer), keeps a routing table per address family, runs
//! iterative lookups, hands out and checks announce tokens, stores the
//! peers announced to it, and paces its queries per destination address
//! (libtorrent bans a source that sends it more than 5 packets a second).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha1::{Digest, Sha1};

use crate::id::Id;
use crate::krpc::{Body, Message, NodeInfo, Query, Response, Want};
pub use crate::lookup::Announce;
use crate::lookup::{Lookup, LookupKind, Step};
use crate::routing::{RoutingTable, K};

/// How long a query may go unanswered.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries in flight, at most (a bound on the transaction table).
const MAX_PENDING: usize = 512;
/// Datagrams waiting for their destination's pacing, at most.
const MAX_OUTBOX: usize = 1024;
/// Queries per second to one address, and the burst allowed.
const PER_IP_RATE: f64 = 4.0;
const PER_IP_BURST: f64 = 8.0;
/// Announce tokens: a new secret every 5 minutes, the previous one still accepted.
const TOKEN_ROTATION: Duration = Duration::from_secs(5 * 60);
/// Peers stored per info-hash and info-hashes stored, at most; and how long an announce lasts.
const STORE_PEERS: usize = 100;
const STORE_TORRENTS: usize = 2000;
const STORE_TTL: Duration = Duration::from_secs(30 * 60);
/// Peers returned in one get_peers reply.
const VALUES_PER_REPLY: usize = 50;
/// How often the table is refreshed; sooner while it is nearly empty.
const REFRESH_EVERY: Duration = Duration::from_secs(15 * 60);
const SPARSE_REFRESH_EVERY: Duration = Duration::from_secs(30);
/// With no node at all (the routers were not up, or we were offline), the
/// routers are asked again this often.
const EMPTY_REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Queriers we pinged lately (to add them to the table), remembered at most this long.
const PING_MEMORY: Duration = Duration::from_secs(60);

/// An identifier for one lookup.
pub type LookupId = u64;

/// What a node tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A lookup found peers of `info_hash` (each reported once per lookup).
    Peers { lookup: LookupId, info_hash: Id, peers: Vec<SocketAddr> },
    /// A lookup ended (its announce, if any, was sent).
    Done { lookup: LookupId, info_hash: Id, responded: usize },
}

#[derive(Debug, Clone, Copy)]
enum Purpose {
    Ping,
    Lookup(LookupId),
    Announce,
}

#[derive(Debug)]
struct Pending {
    to: SocketAddr,
    sent: Instant,
    purpose: Purpose,
}

/// Per destination address: a token bucket for our queries.
#[derive(Debug, Clone, Copy)]
struct Pace {
    tokens: f64,
    at: Instant,
}

struct Outgoing {
    to: SocketAddr,
    bytes: Vec<u8>,
    /// Queries are paced; answers to the address's own queries are not.
    paced: bool,
}

/// A DHT node.
pub struct Node {
    id: Id,
    v4: RoutingTable,
    v6: RoutingTable,
    pending: HashMap<[u8; 2], Pending>,
    next_tid: u16,
    lookups: HashMap<LookupId, Lookup>,
    next_lookup: LookupId,
    secret: [u8; 16],
    previous_secret: [u8; 16],
    rotated: Instant,
    store: HashMap<Id, Vec<(SocketAddr, Instant)>>,
    outbox: VecDeque<Outgoing>,
    pace: HashMap<IpAddr, Pace>,
    pinged: HashMap<SocketAddr, Instant>,
    events: VecDeque<Event>,
    routers: Vec<SocketAddr>,
    last_refresh: Instant,
    rng: StdRng,
}

impl Node {
    /// A node with id `id`, knowing nothing yet.
    pub fn new(id: Id, now: Instant, seed: u64) -> Node {
        let mut rng = StdRng::seed_from_u64(seed);
        Node {
            id,
            v4: RoutingTable::new(id, now),
            v6: RoutingTable::new(id, now),
            pending: HashMap::new(),
            next_tid: rng.random(),
            lookups: HashMap::new(),
            next_lookup: 1,
            secret: rng.random(),
            previous_secret: rng.random(),
            rotated: now,
            store: HashMap::new(),
            outbox: VecDeque::new(),
            pace: HashMap::new(),
            pinged: HashMap::new(),
            events: VecDeque::new(),
            routers: Vec::new(),
            last_refresh: now,
            rng,
        }
    }

    pub fn id(&self) -> Id {
        self.id
    }

    /// Good nodes known, per family (v4, v6).
    pub fn node_count(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// Every good node, for saving the table.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut all = self.v4.nodes();
        all.extend(self.v6.nodes());
        all
    }

    /// Starts from `routers` (bootstrap nodes, whose ids we do not know)
    /// and `known` nodes (a saved table): a lookup of our own id fills the
    /// table. The routers are used again whenever the table runs dry.
    pub fn bootstrap(&mut self, now: Instant, routers: Vec<SocketAddr>, known: Vec<NodeInfo>) {
        self.routers = routers;
        for n in known {
            self.ping(now, n.addr);
        }
        self.refresh(now);
    }

    /// A node a peer told us of (the BEP 3 `port` message): it joins the
    /// table if it answers a ping.
    pub fn add_node(&mut self, now: Instant, addr: SocketAddr) {
        if !self.table(&addr).contains(&addr) {
            self.ping(now, addr);
        }
    }

    /// Looks for peers of `info_hash` among nodes of one address family
    /// (`v6`); with `announce`, tells the closest nodes we are a peer.
    pub fn get_peers(&mut self, now: Instant, info_hash: Id, v6: bool, announce: Option<Announce>) -> LookupId {
        self.start_lookup(now, info_hash, v6, LookupKind::GetPeers { announce })
    }

    /// One datagram from `from`.
    pub fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Ok(msg) = Message::parse(bytes) else { return };
        match msg.body {
            Body::Query { query, id, read_only } => self.answer(now, from, msg.t, id, query, read_only),
            Body::Response { id, response } => self.on_response(now, from, &msg.t, id, response),
            Body::Error { .. } => self.on_error(now, from, &msg.t),
        }
    }

    /// Timeouts, lookups, the refresh and token clocks. Call when
    /// `next_wake` comes, and after `receive`.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<[u8; 2]> =
            self.pending.iter().filter(|(_, p)| now.duration_since(p.sent) >= QUERY_TIMEOUT).map(|(t, _)| *t).collect();
        for tid in expired {
            if let Some(p) = self.pending.remove(&tid) {
                self.table_mut(&p.to).failed(&p.to);
                if let Purpose::Lookup(l) = p.purpose {
                    if let Some(lookup) = self.lookups.get_mut(&l) {
                        lookup.failed(&p.to);
                    }
                }
            }
        }
        if now.duration_since(self.rotated) >= TOKEN_ROTATION {
            self.previous_secret = self.secret;
            self.secret = self.rng.random();
            self.rotated = now;
        }
        if now.duration_since(self.last_refresh) >= self.refresh_every() {
            self.refresh(now);
        }
        self.store.retain(|_, peers| {
            peers.retain(|(_, at)| now.duration_since(*at) < STORE_TTL);
            !peers.is_empty()
        });
        self.pinged.retain(|_, at| now.duration_since(*at) < PING_MEMORY);
        self.advance_lookups(now);
    }

    /// How long between refreshes of the table: short while it is empty or sparse.
    fn refresh_every(&self) -> Duration {
        match self.v4.len() + self.v6.len() {
            0 => EMPTY_REFRESH_EVERY,
            n if n < K => SPARSE_REFRESH_EVERY,
            _ => REFRESH_EVERY,
        }
    }

    /// When `tick` should run next.
    pub fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = self.last_refresh + self.refresh_every();
        wake = wake.min(self.rotated + TOKEN_ROTATION);
        if let Some(oldest) = self.pending.values().map(|p| p.sent).min() {
            wake = wake.min(oldest + QUERY_TIMEOUT);
        }
        if self.outbox.iter().any(|o| o.paced) {
            wake = wake.min(now + Duration::from_millis(50));
        }
        wake.max(now)
    }

    /// The next datagram to send, if its destination's pacing allows one now.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let pos = self.outbox.iter().position(|o| !o.paced || pace_allows(self.pace.get(&o.to.ip()), now))?;
        let out = self.outbox.remove(pos)?;
        if out.paced {
            let p = self.pace.entry(out.to.ip()).or_insert(Pace { tokens: PER_IP_BURST, at: now });
            refill(p, now);
            p.tokens -= 1.0;
        }
        Some((out.to, out.bytes))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Forgets a lookup whose owner lost interest.
    pub fn cancel(&mut self, lookup: LookupId) {
        self.lookups.remove(&lookup);
    }

    fn table(&self, addr: &SocketAddr) -> &RoutingTable {
        if addr.is_ipv6() {
            &self.v6
        } else {
            &self.v4
        }
    }

    fn table_mut(&mut self, addr: &SocketAddr) -> &mut RoutingTable {
        if addr.is_ipv6() {
            &mut self.v6
        } else {
            &mut self.v4
        }
    }

    fn refresh(&mut self, now: Instant) {
        self.last_refresh = now;
        for v6 in [false, true] {
            let table = if v6 { &self.v6 } else { &self.v4 };
            let routers_of_family = self.routers.iter().any(|r| r.is_ipv6() == v6);
            if table.is_empty() && !routers_of_family {
                continue;
            }
            self.start_lookup(now, self.id, v6, LookupKind::FindNode);
            let stale = if v6 { self.v6.stale_buckets(now) } else { self.v4.stale_buckets(now) };
            for bucket in stale.into_iter().take(4) {
                let target = self.id.random_in_bucket(bucket, &mut self.rng);
                if v6 {
                    self.v6.mark_refreshed(bucket, now);
                } else {
                    self.v4.mark_refreshed(bucket, now);
                }
                self.start_lookup(now, target, v6, LookupKind::FindNode);
            }
        }
    }

    fn start_lookup(&mut self, now: Instant, target: Id, v6: bool, kind: LookupKind) -> LookupId {
        let id = self.next_lookup;
        self.next_lookup += 1;
        let table = if v6 { &self.v6 } else { &self.v4 };
        let mut seeds = table.closest(&target, K);
        let routers: Vec<SocketAddr> = self.routers.iter().copied().filter(|r| r.is_ipv6() == v6).collect();
        // A sparse table leans on the routers too.
        let use_routers = seeds.len() < K;
        seeds.retain(|n| n.addr.is_ipv6() == v6);
        let lookup = Lookup::new(target, kind, now, seeds, if use_routers { routers } else { Vec::new() });
        self.lookups.insert(id, lookup);
        self.advance_lookups(now);
        id
    }

    fn advance_lookups(&mut self, now: Instant) {
        let ids: Vec<LookupId> = self.lookups.keys().copied().collect();
        for id in ids {
            let Some(lookup) = self.lookups.get_mut(&id) else { continue };
            match lookup.step(now) {
                Step::Query(addrs) => {
                    let (target, kind) = (lookup.target, lookup.kind);
                    for addr in addrs {
                        let want = Some(Want { v4: addr.is_ipv4(), v6: addr.is_ipv6() });
                        let query = match kind {
                            LookupKind::FindNode => Query::FindNode { target, want },
                            LookupKind::GetPeers { .. } => Query::GetPeers { info_hash: target, want },
                        };
                        if !self.query(now, addr, query, Purpose::Lookup(id)) {
                            if let Some(l) = self.lookups.get_mut(&id) {
                                l.failed(&addr);
                            }
                        }
                    }
                }
                Step::Wait => {}
                Step::Done => {
                    let Some(lookup) = self.lookups.remove(&id) else { continue };
                    if let LookupKind::GetPeers { announce: Some(a) } = lookup.kind {
                        for (addr, token) in lookup.announce_targets() {
                            let query = Query::AnnouncePeer { info_hash: lookup.target, port: a.port, implied_port: a.implied, token };
                            self.query(now, addr, query, Purpose::Announce);
                        }
                    }
                    if matches!(lookup.kind, LookupKind::GetPeers { .. }) {
                        self.events.push_back(Event::Done { lookup: id, info_hash: lookup.target, responded: lookup.responded_count() });
                    }
                }
            }
        }
    }

    /// Queues a query; false if the transaction table is full.
    fn query(&mut self, now: Instant, to: SocketAddr, query: Query, purpose: Purpose) -> bool {
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        let tid = loop {
            self.next_tid = self.next_tid.wrapping_add(1);
            let t = self.next_tid.to_be_bytes();
            if !self.pending.contains_key(&t) {
                break t;
            }
        };
        self.pending.insert(tid, Pending { to, sent: now, purpose });
        let msg = Message { t: tid.to_vec(), body: Body::Query { query, id: self.id, read_only: false }, ip: None };
        self.send(to, msg.encode(), true);
        true
    }

    fn ping(&mut self, now: Instant, addr: SocketAddr) {
        self.pinged.insert(addr, now);
        self.query(now, addr, Query::Ping, Purpose::Ping);
    }

    fn send(&mut self, to: SocketAddr, bytes: Vec<u8>, paced: bool) {
        if self.outbox.len() >= MAX_OUTBOX {
            self.outbox.pop_front();
        }
        self.outbox.push_back(Outgoing { to, bytes, paced });
    }

    /// The pending query `t` to `from`, if it is one (a reply from another
    /// address than the one asked is not believed).
    fn take_pending(&mut self, from: SocketAddr, t: &[u8]) -> Option<Pending> {
        let tid: [u8; 2] = t.try_into().ok()?;
        if self.pending.get(&tid)?.to != from {
            return None;
        }
        self.pending.remove(&tid)
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, t: &[u8], id: Id, response: Response) {
        let Some(pending) = self.take_pending(from, t) else { return };
        self.table_mut(&from).responded(NodeInfo { id, addr: from }, now);
        if let Purpose::Lookup(l) = pending.purpose {
            let Some(lookup) = self.lookups.get_mut(&l) else { return };
            let nodes = if from.is_ipv6() { &response.nodes6 } else { &response.nodes };
            lookup.responded(from, id, nodes, response.token);
            if !response.values.is_empty() {
                let peers: Vec<SocketAddr> = response.values.into_iter().filter(|p| p.is_ipv6() == from.is_ipv6()).collect();
                let new = lookup.new_peers(peers);
                if !new.is_empty() {
                    self.events.push_back(Event::Peers { lookup: l, info_hash: lookup.target, peers: new });
                }
            }
            self.advance_lookups(now);
        }
    }

    fn on_error(&mut self, now: Instant, from: SocketAddr, t: &[u8]) {
        let Some(pending) = self.take_pending(from, t) else { return };
        if let Purpose::Lookup(l) = pending.purpose {
            if let Some(lookup) = self.lookups.get_mut(&l) {
                lookup.failed(&from);
            }
            self.advance_lookups(now);
        }
    }

    fn answer(&mut self, now: Instant, from: SocketAddr, t: Vec<u8>, id: Id, query: Query, read_only: bool) {
        let reply = |body| Message { t: t.clone(), body, ip: Some(from) };
        let nodes_for = |node: &Node, target: &Id, want: Option<Want>| {
            let want = want.unwrap_or(Want { v4: from.is_ipv4(), v6: from.is_ipv6() });
            let nodes = if want.v4 { node.v4.closest(target, K) } else { Vec::new() };
            let nodes6 = if want.v6 { node.v6.closest(target, K) } else { Vec::new() };
            (nodes, nodes6)
        };
        let body = match query {
            Query::Ping => Body::Response { id: self.id, response: Response::default() },
            Query::FindNode { target, want } => {
                let (nodes, nodes6) = nodes_for(self, &target, want);
                Body::Response { id: self.id, response: Response { nodes, nodes6, ..Response::default() } }
            }
            Query::GetPeers { info_hash, want } => {
                let (nodes, nodes6) = nodes_for(self, &info_hash, want);
                let values = self
                    .store
                    .get(&info_hash)
                    .map(|peers| peers.iter().map(|(a, _)| *a).filter(|a| a.is_ipv6() == from.is_ipv6()).take(VALUES_PER_REPLY).collect())
                    .unwrap_or_default();
                let token = Some(self.token(&from.ip(), &self.secret).to_vec());
                Body::Response { id: self.id, response: Response { nodes, nodes6, values, token } }
            }
            Query::AnnouncePeer { info_hash, port, implied_port, token } => {
                let ip = from.ip();
                if token != self.token(&ip, &self.secret) && token != self.token(&ip, &self.previous_secret) {
                    Body::Error { code: 203, message: "bad token".into() }
                } else {
                    let port = if implied_port { from.port() } else { port };
                    if port != 0 {
                        self.store_peer(info_hash, SocketAddr::new(ip, port), now);
                    }
                    Body::Response { id: self.id, response: Response::default() }
                }
            }
            Query::Other(_) => Body::Error { code: 204, message: "method unknown".into() },
        };
        self.send(from, reply(body).encode(), false);
        // A querier we do not know yet joins the table once it answers a ping
        // (BEP 43: not if it says it is read-only).
        let known = self.table(&from).contains(&from);
        if !read_only && !known && self.table(&from).has_room_for(&id) && !self.pinged.contains_key(&from) {
            self.ping(now, from);
        }
    }

    fn store_peer(&mut self, info_hash: Id, peer: SocketAddr, now: Instant) {
        if !self.store.contains_key(&info_hash) && self.store.len() >= STORE_TORRENTS {
            return;
        }
        let peers = self.store.entry(info_hash).or_default();
        peers.retain(|(a, _)| *a != peer);
        if peers.len() >= STORE_PEERS {
            peers.remove(0);
        }
        peers.push((peer, now));
    }

    /// The token a querier at `ip` must bring back to announce.
    fn token(&self, ip: &IpAddr, secret: &[u8; 16]) -> [u8; 8] {
        let mut h = Sha1::new();
        h.update(secret);
        match ip {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        let d: [u8; 20] = h.finalize().into();
        let mut out = [0u8; 8];
        out.copy_from_slice(&d[..8]);
        out
    }

    /// Lookups in progress (for tests and logs).
    pub fn lookups(&self) -> usize {
        self.lookups.len()
    }

    /// Peers stored for `info_hash` (announced to us).
    pub fn stored(&self, info_hash: &Id) -> HashSet<SocketAddr> {
        self.store.get(info_hash).map(|p| p.iter().map(|(a, _)| *a).collect()).unwrap_or_default()
    }
}

fn refill(p: &mut Pace, now: Instant) {
    p.tokens = (p.tokens + now.duration_since(p.at).as_secs_f64() * PER_IP_RATE).min(PER_IP_BURST);
    p.at = now;
}

fn pace_allows(p: Option<&Pace>, now: Instant) -> bool {
    match p {
        None => true,
        Some(p) => {
            let mut q = *p;
            refill(&mut q, now);
            q.tokens >= 1.0
        }
    }
}
