//! Two connections wired together in memory: loss, reordering and delay
//! are the test's to choose, time is advanced by hand.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// A link that drops `loss` of the datagrams and delivers the rest after
/// `delay`, sometimes swapping neighbours.
struct Link {
    queue: VecDeque<(Instant, Vec<u8>)>,
    loss: f64,
    delay: Duration,
    reorder: f64,
}

impl Link {
    fn new(loss: f64, delay: Duration, reorder: f64) -> Link {
        Link { queue: VecDeque::new(), loss, delay, reorder }
    }

    fn send(&mut self, now: Instant, d: Vec<u8>, rng: &mut StdRng) {
        if rng.random_bool(self.loss) {
            return;
        }
        self.queue.push_back((now + self.delay, d));
        let n = self.queue.len();
        if n >= 2 && rng.random_bool(self.reorder) {
            self.queue.swap(n - 1, n - 2);
        }
    }

    fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|(at, _)| *at <= now) {
            out.push(self.queue.pop_front().unwrap().1);
        }
        out
    }
}

/// Moves `a_data` from a to b and `b_data` from b to a; returns what each received.
fn transfer(loss: f64, reorder: f64, a_data: &[u8], b_data: &[u8], seed: u64) -> (Vec<u8>, Vec<u8>, Connection, Connection) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut now = Instant::now();
    let step = Duration::from_millis(1);
    let mut a = Connection::connect(now, 1000, 7);
    let (mut ab, mut ba) = (Link::new(loss, Duration::from_millis(5), reorder), Link::new(loss, Duration::from_millis(5), reorder));
    let mut b: Option<Connection> = None;
    let (mut a_sent, mut b_sent) = (0, 0);
    let (mut a_got, mut b_got) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 4096];
    for _ in 0..600_000 {
        if a_sent < a_data.len() {
            a_sent += a.write(&a_data[a_sent..]);
        } else {
            a.close();
        }
        while let Some(d) = a.poll_transmit(now) {
            ab.send(now, d, &mut rng);
        }
        for d in ab.due(now) {
            let p = Packet::parse(&d).unwrap();
            match &mut b {
                None if p.header.kind == Kind::Syn => b = Some(Connection::accept(now, &p.header, 500)),
                None => {}
                Some(b) => b.handle(now, &p),
            }
        }
        if let Some(b) = &mut b {
            if b_sent < b_data.len() {
                b_sent += b.write(&b_data[b_sent..]);
            } else {
                b.close();
            }
            loop {
                let n = b.read(&mut buf);
                if n == 0 {
                    break;
                }
                b_got.extend_from_slice(&buf[..n]);
            }
            while let Some(d) = b.poll_transmit(now) {
                ba.send(now, d, &mut rng);
            }
            b.on_timer(now);
        }
        for d in ba.due(now) {
            a.handle(now, &Packet::parse(&d).unwrap());
        }
        loop {
            let n = a.read(&mut buf);
            if n == 0 {
                break;
            }
            a_got.extend_from_slice(&buf[..n]);
        }
        a.on_timer(now);
        let done = |c: &Connection| matches!(c.state(), State::Closed(_));
        if done(&a) && b.as_ref().is_some_and(done) {
            break;
        }
        now += step;
    }
    (a_got, b_got, a, b.expect("accepted"))
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn a_clean_transfer_both_ways_then_both_finish() {
    let (x, y) = (data(300_000, 1), data(200_000, 2));
    let (a_got, b_got, a, b) = transfer(0.0, 0.0, &x, &y, 1);
    assert!(b_got == x && a_got == y);
    assert_eq!(a.state(), State::Closed(Closed::Finished));
    assert_eq!(b.state(), State::Closed(Closed::Finished));
    assert!(a.at_eof() && b.at_eof());
}

#[test]
fn five_percent_loss_and_reordering_lose_no_byte() {
    let (x, y) = (data(400_000, 3), data(50_000, 4));
    for seed in 0..8 {
        let (a_got, b_got, _, _) = transfer(0.05, 0.1, &x, &y, seed);
        assert_eq!(b_got.len(), x.len(), "seed {seed}");
        let first_diff = |a: &[u8], b: &[u8]| a.iter().zip(b).position(|(x, y)| x != y);
        assert!(b_got == x, "seed {seed}: b got {} of {}, first difference at {:?}", b_got.len(), x.len(), first_diff(&b_got, &x));
        assert!(a_got == y, "seed {seed}: a got {} of {}, first difference at {:?}", a_got.len(), y.len(), first_diff(&a_got, &y));
    }
}

#[test]
fn a_lost_syn_is_sent_again_and_a_dead_peer_times_out() {
    let now = Instant::now();
    let mut a = Connection::connect(now, 9, 1);
    assert!(a.poll_transmit(now).is_some(), "the SYN");
    assert!(a.poll_transmit(now).is_none());
    let later = a.next_timer().unwrap();
    a.on_timer(later);
    let again = a.poll_transmit(later).expect("the SYN again");
    assert_eq!(Packet::parse(&again).unwrap().header.kind, Kind::Syn);
    let mut t = later;
    for _ in 0..10 {
        t = a.next_timer().unwrap_or(t);
        a.on_timer(t);
        while a.poll_transmit(t).is_some() {}
    }
    assert_eq!(a.state(), State::Closed(Closed::TimedOut));
}

#[test]
fn a_reset_closes_and_ids_follow_bep_29() {
    let now = Instant::now();
    let mut a = Connection::connect(now, 100, 1);
    let syn = a.poll_transmit(now).unwrap();
    let syn = Packet::parse(&syn).unwrap();
    assert_eq!(syn.header.conn_id, 100, "the SYN names our receive id");
    let mut b = Connection::accept(now, &syn.header, 50);
    assert_eq!(b.recv_id(), 101, "the acceptor receives on id + 1");
    let state = b.poll_transmit(now).unwrap();
    assert_eq!(Packet::parse(&state).unwrap().header.conn_id, 100, "and sends on the SYN's id");
    a.handle(now, &Packet::parse(&state).unwrap());
    assert_eq!(a.state(), State::Connected);
    let reset = b.reset(now);
    a.handle(now, &Packet::parse(&reset).unwrap());
    assert_eq!(a.state(), State::Closed(Closed::Reset));
}
