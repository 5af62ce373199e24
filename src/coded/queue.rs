//! A coded sender's queue: the blocks a peer wants from us, their credits
//! and progress, served oldest first with a small round-robin. Pure.

use std::collections::{BTreeMap, HashMap};

use super::link::MAX_CREDITS;
use crate::wire::BlockRef;

/// Credits and progress of one block the peer wants from us.
pub(super) struct Feed {
    pub credits: u32,
    pub sent: u32,
    pub their_rank: u16,
    /// Place in the peer's queue (first want first).
    order: u64,
}

/// The peer's wants in the order they first came (the receiver asks by
/// deadline): the oldest few blocks with credits are served first, so
/// blocks complete roughly in order, and a renewed (stalled) block keeps
/// its place at the front.
#[derive(Default)]
pub(super) struct Queue {
    pub feeds: HashMap<BlockRef, Feed>,
    pub turn: BTreeMap<u64, BlockRef>,
    next: u64,
    /// The order of the block sent last, for the round-robin.
    cursor: u64,
}

impl Queue {
    /// Sets `block`'s credits and the peer's rank; a new feed starts from
    /// `sent`, a known one keeps its progress and its place.
    pub fn add(&mut self, block: BlockRef, credits: u32, sent: u32, their_rank: u16) {
        let order = match self.feeds.get(&block) {
            Some(f) => f.order,
            None => {
                self.next += 1;
                self.next
            }
        };
        let feed = self.feeds.entry(block).or_insert(Feed { credits: 0, sent, their_rank, order });
        feed.credits = credits.min(MAX_CREDITS);
        feed.their_rank = their_rank;
        if feed.credits > 0 {
            self.turn.insert(order, block);
        }
    }

    /// One packet of `block` went out: a credit spent; without credits
    /// it leaves the turn (its feed stays, so a renewal keeps its place).
    pub fn spend(&mut self, block: &BlockRef) {
        if let Some(feed) = self.feeds.get_mut(block) {
            feed.credits = feed.credits.saturating_sub(1);
            feed.sent += 1;
            if feed.credits == 0 {
                self.turn.remove(&feed.order);
            }
        }
    }

    pub fn remove(&mut self, block: &BlockRef) {
        if let Some(f) = self.feeds.remove(block) {
            self.turn.remove(&f.order);
        }
    }

    pub fn clear(&mut self) {
        self.feeds.clear();
        self.turn.clear();
    }

    /// The next block to send: round-robin over the oldest `window` with
    /// credits left (`send_window` says how many).
    pub fn next_block(&mut self, window: usize) -> Option<BlockRef> {
        let oldest = || self.turn.iter().take(window).map(|(o, b)| (*o, *b));
        let (order, block) = oldest().find(|(o, _)| *o > self.cursor).or_else(|| oldest().next())?;
        self.cursor = order;
        Some(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::BLOCK_SIZE;

    #[test]
    fn a_window_of_one_sends_block_by_block_a_wider_one_interleaves() {
        let block = |piece| BlockRef { piece, offset: 0, length: BLOCK_SIZE };
        let mut q = Queue::default();
        for piece in 0..3 {
            q.add(block(piece), 2, 0, 0);
        }
        let order = |q: &mut Queue, window| {
            let mut sent = Vec::new();
            while let Some(b) = q.next_block(window) {
                q.spend(&b);
                sent.push(b.piece);
            }
            sent
        };
        assert_eq!(order(&mut q, 1), [0, 0, 1, 1, 2, 2]);
        for piece in 0..3 {
            q.add(block(piece), 2, 0, 0);
        }
        assert_eq!(order(&mut q, 4), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_renewal_keeps_its_place_and_progress() {
        let block = |piece| BlockRef { piece, offset: 0, length: BLOCK_SIZE };
        let mut q = Queue::default();
        q.add(block(0), 1, 0, 0);
        q.add(block(1), 1, 0, 0);
        q.spend(&block(0));
        assert_eq!(q.next_block(1), Some(block(1)));
        // Block 0 ran out of credits; renewed, it goes first again and keeps its count.
        q.add(block(0), 2, 0, 5);
        assert_eq!(q.next_block(1), Some(block(0)));
        let f = &q.feeds[&block(0)];
        assert_eq!((f.sent, f.credits, f.their_rank), (1, 2, 5));
        q.remove(&block(0));
        q.clear();
        assert!(q.turn.is_empty() && q.feeds.is_empty());
    }
}
