//! A whole DHT in memory: twenty nodes on simulated addresses, datagrams
//! carried by the test, time advanced by hand. A node that knows only one
//! other node announces a torrent; another that knows only a third finds
//! it. No sockets: the node is sans I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ccfd_dht::{Announce, Event, Id, Node};

struct Net {
    nodes: Vec<(SocketAddr, Node)>,
    now: Instant,
    /// Datagrams that met a dead address.
    lost: usize,
}

impl Net {
    fn new(n: usize) -> Net {
        let now = Instant::now();
        let nodes = (0..n)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, 1, 10 + i as u8], 7000));
                let id = Id(rand_id(i as u64));
                (addr, Node::new(id, now, i as u64))
            })
            .collect();
        Net { nodes, now, lost: 0 }
    }

    fn index(&self) -> HashMap<SocketAddr, usize> {
        self.nodes.iter().enumerate().map(|(i, (a, _))| (*a, i)).collect()
    }

    /// Delivers datagrams for `rounds` steps of 20 ms (fewer when
    /// `until_quiet` and nothing is left to do).
    fn run_for(&mut self, rounds: usize, until_quiet: bool) -> Vec<(usize, Event)> {
        let index = self.index();
        let mut events = Vec::new();
        for _ in 0..rounds {
            let mut moved = false;
            let mut outgoing = Vec::new();
            for (i, (from, node)) in self.nodes.iter_mut().enumerate() {
                while let Some((to, bytes)) = node.poll_transmit(self.now) {
                    outgoing.push((*from, to, bytes));
                }
                while let Some(e) = node.poll_event() {
                    events.push((i, e));
                }
            }
            for (from, to, bytes) in outgoing {
                moved = true;
                match index.get(&to) {
                    Some(&j) => self.nodes[j].1.receive(self.now, from, &bytes),
                    None => self.lost += 1,
                }
            }
            self.now += Duration::from_millis(20);
            for (i, (_, node)) in self.nodes.iter_mut().enumerate() {
                node.tick(self.now);
                while let Some(e) = node.poll_event() {
                    events.push((i, e));
                }
            }
            if until_quiet && !moved && self.nodes.iter().all(|(_, n)| n.lookups() == 0) {
                break;
            }
        }
        events
    }
}

impl Net {
    fn run(&mut self, rounds: usize) -> Vec<(usize, Event)> {
        self.run_for(rounds, true)
    }
}

fn rand_id(seed: u64) -> [u8; 20] {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = [0u8; 20];
    for b in &mut out {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    out
}

#[test]
fn a_peer_announced_through_one_node_is_found_through_another() {
    let mut net = Net::new(20);
    // A chain of acquaintance: node i knows node i+1 only (the bootstrap role).
    for i in 0..net.nodes.len() - 1 {
        let next = net.nodes[i + 1].0;
        let now = net.now;
        net.nodes[i].1.bootstrap(now, vec![next], Vec::new());
    }
    // Three simulated minutes: sparse tables refresh every 30 s and grow.
    net.run_for(9000, false);
    let known: Vec<usize> = net.nodes.iter().map(|(_, n)| n.node_count().0).collect();
    assert!(known.iter().all(|&k| k >= 3), "every node learned of several others: {known:?}");

    let info_hash = Id([0x42; 20]);
    let now = net.now;
    net.nodes[3].1.get_peers(now, info_hash, false, Some(Announce { port: 6881, implied: false }));
    net.run(2000);
    let stored: usize = net.nodes.iter().filter(|(_, n)| !n.stored(&info_hash).is_empty()).count();
    assert!(stored >= 3, "announced to the closest nodes: {stored}");

    let now = net.now;
    let lookup = net.nodes[17].1.get_peers(now, info_hash, false, None);
    let events = net.run(2000);
    let found: Vec<SocketAddr> = events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::Peers { lookup: l, peers, .. } if *i == 17 && *l == lookup => Some(peers.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let announcer = SocketAddr::new(net.nodes[3].0.ip(), 6881);
    assert_eq!(found, vec![announcer], "the announcer's address and port, once");
    assert!(events.iter().any(|(i, e)| *i == 17 && matches!(e, Event::Done { lookup: l, .. } if *l == lookup)));
}

#[test]
fn dead_bootstrap_nodes_time_out_and_lookups_end() {
    let mut net = Net::new(2);
    let now = net.now;
    let dead = SocketAddr::from(([127, 0, 1, 250], 9));
    net.nodes[0].1.bootstrap(now, vec![dead], Vec::new());
    let lookup = net.nodes[0].1.get_peers(now, Id([1; 20]), false, None);
    let events = net.run(500);
    assert!(net.lost >= 1);
    assert!(events.iter().any(|(_, e)| matches!(e, Event::Done { lookup: l, responded: 0, .. } if *l == lookup)), "{events:?}");
}

#[test]
fn a_bad_token_is_refused() {
    let mut net = Net::new(2);
    let (a, b) = (net.nodes[0].0, net.nodes[1].0);
    let now = net.now;
    net.nodes[0].1.bootstrap(now, vec![b], Vec::new());
    net.run(200);
    // A forged announce to node 1 with a token it never gave.
    let forged = ccfd_dht::krpc::Message {
        t: b"zz".to_vec(),
        body: ccfd_dht::krpc::Body::Query {
            query: ccfd_dht::krpc::Query::AnnouncePeer { info_hash: Id([9; 20]), port: 1234, implied_port: false, token: b"nope".to_vec() },
            id: Id([5; 20]),
            read_only: false,
        },
        ip: None,
    };
    let now = net.now;
    net.nodes[1].1.receive(now, a, &forged.encode());
    assert!(net.nodes[1].1.stored(&Id([9; 20])).is_empty());
    let (_, reply) = net.nodes[1].1.poll_transmit(now).expect("an answer");
    let parsed = ccfd_dht::krpc::Message::parse(&reply).unwrap();
    assert!(matches!(parsed.body, ccfd_dht::krpc::Body::Error { code: 203, .. }), "{parsed:?}");
}
