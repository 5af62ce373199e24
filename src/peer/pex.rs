//! One connection's side of peer exchange (BEP 11), sans I/O: what we told
//! the peer so far, when we may tell it again (at most once a minute, the
//! first soon after the handshake), and whether its own message comes too
//! soon after its last to be taken.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ccfd_proto::pex::{PexMessage, MAX_PER_MESSAGE};

/// Between two of our messages (BEP 11: at most one a minute).
const SEND_EVERY: Duration = Duration::from_secs(60);
/// Our first message, this long after the connection opened.
const FIRST_AFTER: Duration = Duration::from_secs(5);
/// A peer's messages closer together than this are ignored (it should
/// send one a minute; a little slack for timers).
const RECEIVE_EVERY: Duration = Duration::from_secs(45);

#[derive(Debug)]
pub(super) struct PexState {
    told: HashSet<SocketAddr>,
    next_send: Instant,
    last_received: Option<Instant>,
}

impl PexState {
    pub(super) fn new(now: Instant) -> PexState {
        PexState { told: HashSet::new(), next_send: now + FIRST_AFTER, last_received: None }
    }

    /// If it is time, the message telling the peer what changed since the
    /// last one (`None` if nothing did, or not yet).
    pub(super) fn message(&mut self, now: Instant, current: Vec<(SocketAddr, u8)>) -> Option<PexMessage> {
        if now < self.next_send {
            return None;
        }
        self.next_send = now + SEND_EVERY;
        let now_set: HashSet<SocketAddr> = current.iter().map(|(a, _)| *a).collect();
        let added: Vec<(SocketAddr, u8)> = current.into_iter().filter(|(a, _)| !self.told.contains(a)).take(MAX_PER_MESSAGE).collect();
        let dropped: Vec<SocketAddr> = self.told.iter().filter(|a| !now_set.contains(a)).take(MAX_PER_MESSAGE).copied().collect();
        for (a, _) in &added {
            self.told.insert(*a);
        }
        for a in &dropped {
            self.told.remove(a);
        }
        (!added.is_empty() || !dropped.is_empty()).then_some(PexMessage { added, dropped })
    }

    /// Whether a message from the peer arriving now is taken.
    pub(super) fn accept(&mut self, now: Instant) -> bool {
        if self.last_received.is_some_and(|t| now.duration_since(t) < RECEIVE_EVERY) {
            return false;
        }
        self.last_received = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 6881))
    }

    #[test]
    fn tells_changes_once_a_minute() {
        let t0 = Instant::now();
        let mut p = PexState::new(t0);
        assert_eq!(p.message(t0, vec![(a(1), 0)]), None, "not in the first seconds");
        let first = p.message(t0 + FIRST_AFTER, vec![(a(1), 0x10), (a(2), 0)]).unwrap();
        assert_eq!(first.added, vec![(a(1), 0x10), (a(2), 0)]);
        assert!(first.dropped.is_empty());
        assert_eq!(p.message(t0 + FIRST_AFTER + Duration::from_secs(30), vec![(a(3), 0)]), None, "a minute apart");
        let next = p.message(t0 + FIRST_AFTER + SEND_EVERY, vec![(a(2), 0), (a(3), 0)]).unwrap();
        assert_eq!(next.added, vec![(a(3), 0)]);
        assert_eq!(next.dropped, vec![a(1)]);
        assert_eq!(p.message(t0 + FIRST_AFTER + 2 * SEND_EVERY, vec![(a(2), 0), (a(3), 0)]), None, "nothing changed");
    }

    #[test]
    fn a_flood_of_peers_is_told_fifty_at_a_time() {
        let t0 = Instant::now();
        let mut p = PexState::new(t0);
        let many: Vec<(SocketAddr, u8)> = (0..=255).map(|n| (SocketAddr::from(([10, 0, 0, n], 1)), 0)).collect();
        assert_eq!(p.message(t0 + FIRST_AFTER, many.clone()).unwrap().added.len(), MAX_PER_MESSAGE);
        assert_eq!(p.message(t0 + FIRST_AFTER + SEND_EVERY, many).unwrap().added.len(), MAX_PER_MESSAGE);
    }

    #[test]
    fn messages_closer_than_45_s_are_ignored() {
        let t0 = Instant::now();
        let mut p = PexState::new(t0);
        assert!(p.accept(t0));
        assert!(!p.accept(t0 + Duration::from_secs(10)));
        assert!(p.accept(t0 + RECEIVE_EVERY));
    }
}
