//! The routing table: for each distance from our id (the bits a node's id
//! shares with ours), up to K nodes that answered us, and a few in reserve
//! to replace those that stop answering (BEP 5's k-buckets, in the common
//! fixed form of one bucket per shared-prefix length).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::Id;
use crate::krpc::NodeInfo;

/// Nodes per bucket.
pub const K: usize = 8;
/// Failed queries in a row after which a node is bad and gives way.
const MAX_FAILURES: u32 = 2;
/// A node not heard from for this long is questionable (BEP 5: 15 minutes).
pub const QUESTIONABLE_AFTER: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
struct Entry {
    node: NodeInfo,
    last_heard: Instant,
    failures: u32,
}

/// One address family's routing table.
#[derive(Debug)]
pub struct RoutingTable {
    own: Id,
    buckets: Vec<Vec<Entry>>,
    reserve: Vec<Vec<Entry>>,
    refreshed: Vec<Instant>,
}

impl RoutingTable {
    pub fn new(own: Id, now: Instant) -> RoutingTable {
        RoutingTable { own, buckets: vec![Vec::new(); 160], reserve: vec![Vec::new(); 160], refreshed: vec![now; 160] }
    }

    fn bucket(&self, id: &Id) -> usize {
        self.own.shared_prefix(id).min(159)
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.buckets.iter().flatten().any(|e| e.node.addr == *addr)
    }

    /// Whether a node with this id would be kept now (its bucket has room
    /// or a bad node to replace): worth a ping to find out if it is alive.
    pub fn has_room_for(&self, id: &Id) -> bool {
        if *id == self.own {
            return false;
        }
        let b = &self.buckets[self.bucket(id)];
        b.len() < K || b.iter().any(|e| e.failures >= MAX_FAILURES)
    }

    /// A node answered us: it is good. Kept if its bucket has room or a bad
    /// node to replace, else held in reserve.
    pub fn responded(&mut self, node: NodeInfo, now: Instant) {
        if node.id == self.own {
            return;
        }
        let i = self.bucket(&node.id);
        self.refreshed[i] = now;
        let bucket = &mut self.buckets[i];
        if let Some(e) = bucket.iter_mut().find(|e| e.node.id == node.id) {
            // A known id at a new address is not believed (BEP 5: ids stay with addresses).
            if e.node.addr == node.addr {
                e.last_heard = now;
                e.failures = 0;
            }
            return;
        }
        // An address that comes back with another id replaces its old entry.
        bucket.retain(|e| e.node.addr != node.addr);
        let entry = Entry { node, last_heard: now, failures: 0 };
        if bucket.len() < K {
            bucket.push(entry);
        } else if let Some(bad) = bucket.iter_mut().find(|e| e.failures >= MAX_FAILURES) {
            *bad = entry;
        } else {
            let reserve = &mut self.reserve[i];
            reserve.retain(|e| e.node.id != node.id);
            if reserve.len() >= K {
                reserve.remove(0);
            }
            reserve.push(entry);
        }
    }

    /// A query to `addr` timed out: one more failure; a bad node gives way
    /// to the freshest node in reserve.
    pub fn failed(&mut self, addr: &SocketAddr) {
        for i in 0..self.buckets.len() {
            let Some(pos) = self.buckets[i].iter().position(|e| e.node.addr == *addr) else { continue };
            self.buckets[i][pos].failures += 1;
            if self.buckets[i][pos].failures >= MAX_FAILURES {
                if let Some(fresh) = self.reserve[i].pop() {
                    self.buckets[i][pos] = fresh;
                }
            }
            return;
        }
    }

    /// The `n` known nodes closest to `target`, bad ones last out.
    pub fn closest(&self, target: &Id, n: usize) -> Vec<NodeInfo> {
        let mut all: Vec<&Entry> = self.buckets.iter().flatten().filter(|e| e.failures < MAX_FAILURES).collect();
        all.sort_by_key(|e| e.node.id.distance(target));
        all.into_iter().take(n).map(|e| e.node).collect()
    }

    /// Buckets that saw no answer for `QUESTIONABLE_AFTER` and hold nodes:
    /// a random target in each is worth a lookup.
    pub fn stale_buckets(&self, now: Instant) -> Vec<usize> {
        (0..160).filter(|&i| !self.buckets[i].is_empty() && now.duration_since(self.refreshed[i]) >= QUESTIONABLE_AFTER).collect()
    }

    pub fn mark_refreshed(&mut self, bucket: usize, now: Instant) {
        if let Some(r) = self.refreshed.get_mut(bucket) {
            *r = now;
        }
    }

    /// Every good node, for saving the table.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.buckets.iter().flatten().filter(|e| e.failures < MAX_FAILURES).map(|e| e.node).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(first: u8, last: u8, port: u16) -> NodeInfo {
        let mut id = [0u8; 20];
        id[0] = first;
        id[19] = last;
        NodeInfo { id: Id(id), addr: SocketAddr::from(([127, 0, 0, last], port)) }
    }

    #[test]
    fn a_full_bucket_keeps_its_nodes_until_they_fail() {
        let now = Instant::now();
        let mut t = RoutingTable::new(Id([0; 20]), now);
        // All share prefix 0 with us (top bit set): one bucket.
        for i in 0..K as u8 {
            t.responded(node(0x80, i + 1, 7000), now);
        }
        assert_eq!(t.len(), K);
        let extra = node(0x80, 100, 7000);
        assert!(!t.has_room_for(&extra.id));
        t.responded(extra, now);
        assert_eq!(t.len(), K, "held in reserve");
        assert!(!t.contains(&extra.addr));
        let first = node(0x80, 1, 7000).addr;
        t.failed(&first);
        assert!(t.contains(&first), "one failure is not enough");
        t.failed(&first);
        assert!(!t.contains(&first) && t.contains(&extra.addr), "the reserve node took its place");
    }

    #[test]
    fn closest_orders_by_xor_distance_and_ids_stay_with_addresses() {
        let now = Instant::now();
        let mut t = RoutingTable::new(Id([0; 20]), now);
        for (first, last) in [(0x80, 1), (0x40, 2), (0x01, 3), (0xff, 4)] {
            t.responded(node(first, last, 7000), now);
        }
        let target = Id([0; 20]);
        let order: Vec<u8> = t.closest(&target, 3).iter().map(|n| n.id.0[0]).collect();
        assert_eq!(order, vec![0x01, 0x40, 0x80]);
        // Our own id is never stored.
        t.responded(NodeInfo { id: Id([0; 20]), addr: "127.0.0.9:1".parse().unwrap() }, now);
        assert_eq!(t.len(), 4);
        // A known id claimed from another address is ignored.
        t.responded(NodeInfo { id: node(0x80, 1, 7000).id, addr: "127.0.0.99:1".parse().unwrap() }, now);
        assert!(!t.contains(&"127.0.0.99:1".parse().unwrap()));
        assert_eq!(t.nodes().len(), 4);
        assert!(t.stale_buckets(now).is_empty());
        assert_eq!(t.stale_buckets(now + QUESTIONABLE_AFTER).len(), 3, "0x80 and 0xff share a bucket");
    }
}
