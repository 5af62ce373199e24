//! Which known addresses to dial, and when to try one again: pure, tested
//! without sockets. The dialing itself is `torrent`'s task.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// When to try an address again.
pub(super) struct Candidate {
    pub(super) next_try: Instant,
    pub(super) failures: u32,
    /// Given by the user (`--peer`): keep trying even when we are a seed.
    pub(super) pinned: bool,
    /// Its last working connection was encrypted (MSE): start that way.
    pub(super) encrypted: bool,
    /// It was a seed when its last connection ended: a seed does not
    /// dial it again (two seeds have nothing to give each other).
    pub(super) seed: bool,
}

impl Candidate {
    /// A dial failed, a connection ended or was refused: try later, and
    /// later again each time in a row.
    pub(super) fn failed(&mut self, now: Instant) {
        self.failures += 1;
        self.next_try = now + backoff(self.failures);
    }
}

/// Retry delay after `failures` consecutive failures: 1 s doubling to 2 min
/// (a working connection that drops is retried within a second).
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(7)).min(Duration::from_secs(120))
}

/// The addresses to dial now (at most `room`), and the earliest time a
/// further one becomes due, so the dialer wakes when a backoff ends
/// instead of at its next tick. `busy` addresses are connected or being
/// dialed; a complete download dials only pinned addresses, and not
/// those last seen as seeds.
pub(super) fn due(
    candidates: &HashMap<SocketAddr, Candidate>,
    busy: &HashSet<SocketAddr>,
    complete: bool,
    now: Instant,
    room: usize,
) -> (Vec<SocketAddr>, Option<Instant>) {
    let waiting = candidates.iter().filter(|(a, c)| (!complete || (c.pinned && !c.seed)) && !busy.contains(a));
    let dial = waiting.clone().filter(|(_, c)| c.next_try <= now).map(|(a, _)| *a).take(room).collect();
    let next_retry = waiting.map(|(_, c)| c.next_try).filter(|&t| t > now).min();
    (dial, next_retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_to_two_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), Duration::from_secs(120));
    }

    #[test]
    fn due_addresses_are_dialed_and_the_next_backoff_end_is_named() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let at = |next_try, pinned| Candidate { next_try, failures: 1, pinned, encrypted: false, seed: false };
        let candidates: HashMap<SocketAddr, Candidate> =
            [(addr(1), at(now, false)), (addr(2), at(now + s, false)), (addr(3), at(now + 3 * s, true)), (addr(4), at(now, false))].into();
        let busy: HashSet<SocketAddr> = [addr(4)].into();
        assert_eq!(due(&candidates, &busy, false, now, 5), (vec![addr(1)], Some(now + s)));
        // No room: nothing dialed, and a due address is no reason to wake early.
        assert_eq!(due(&candidates, &busy, false, now, 0), (vec![], Some(now + s)));
        // Complete: only the pinned address is still tried.
        assert_eq!(due(&candidates, &busy, true, now, 5), (vec![], Some(now + 3 * s)));
    }

    #[test]
    fn a_seed_does_not_redial_a_pinned_seed() {
        let now = Instant::now();
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let pinned = |seed| Candidate { next_try: now, failures: 0, pinned: true, encrypted: false, seed };
        let busy = HashSet::new();
        let once: HashMap<SocketAddr, Candidate> = [(addr, pinned(false))].into();
        assert_eq!(due(&once, &busy, true, now, 5).0, vec![addr]);
        let seen_as_seed: HashMap<SocketAddr, Candidate> = [(addr, pinned(true))].into();
        assert_eq!(due(&seen_as_seed, &busy, true, now, 5), (vec![], None));
        // A leecher still dials it: a seed is what it needs.
        assert_eq!(due(&seen_as_seed, &busy, false, now, 5).0, vec![addr]);
    }
}
