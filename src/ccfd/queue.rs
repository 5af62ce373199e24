//! A coded sender's queue: the blocks a peer wants from us, their credits
//! and progress, served oldest first with a small round-robin. Pure.

use std::collections::{BTreeMap, HashMap};

use super::proto::{GENERATION, MAX_CREDITS};
use ccfd_proto::wire::BlockRef;

/// Credits and progress of one block the peer wants from us.
pub(super) struct Feed {
    pub credits: u32,
    pub sent: u32,
    pub their_rank: u16,
    /// Other peers send the peer this block too: our systematic symbols
    /// may be theirs as well, so only random combinations are sure to help.
    pub shared: bool,
    /// Place in the peer's queue (first want first).
    order: u64,
}

impl Feed {
    /// The systematic symbol to send next, while each is sure to be new:
    /// no other sender, and the peer's rank could all be ours.
    pub fn next_systematic(&self) -> Option<u16> {
        let fresh = !self.shared && u32::from(self.their_rank) <= self.sent;
        (fresh && (self.sent as usize) < GENERATION).then_some(self.sent as u16)
    }
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
    /// Sets `block`'s credits, the peer's rank and whether others send it
    /// too; a new feed starts from `sent`, a known one keeps its progress
    /// and its place.
    pub fn add(&mut self, block: BlockRef, credits: u32, sent: u32, their_rank: u16, shared: bool) {
        let order = match self.feeds.get(&block) {
            Some(f) => f.order,
            None => {
                self.next += 1;
                self.next
            }
        };
        let feed = self.feeds.entry(block).or_insert(Feed { credits: 0, sent, their_rank, shared, order });
        feed.credits = credits.min(MAX_CREDITS);
        feed.their_rank = their_rank;
        feed.shared = shared;
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
    use ccfd_proto::wire::BLOCK_SIZE;

    #[test]
    fn a_window_of_one_sends_block_by_block_a_wider_one_interleaves() {
        let block = |piece| BlockRef { piece, offset: 0, length: BLOCK_SIZE };
        let mut q = Queue::default();
        for piece in 0..3 {
            q.add(block(piece), 2, 0, 0, false);
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
            q.add(block(piece), 2, 0, 0, false);
        }
        assert_eq!(order(&mut q, 4), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_renewal_keeps_its_place_and_progress() {
        let block = |piece| BlockRef { piece, offset: 0, length: BLOCK_SIZE };
        let mut q = Queue::default();
        q.add(block(0), 1, 0, 0, false);
        q.add(block(1), 1, 0, 0, false);
        q.spend(&block(0));
        assert_eq!(q.next_block(1), Some(block(1)));
        // Block 0 ran out of credits; renewed, it goes first again and keeps its count.
        q.add(block(0), 2, 0, 5, false);
        assert_eq!(q.next_block(1), Some(block(0)));
        let f = &q.feeds[&block(0)];
        assert_eq!((f.sent, f.credits, f.their_rank), (1, 2, 5));
        q.remove(&block(0));
        q.clear();
        assert!(q.turn.is_empty() && q.feeds.is_empty());
    }

    #[test]
    fn systematic_symbols_only_while_each_is_sure_to_be_new() {
        let block = BlockRef { piece: 0, offset: 0, length: BLOCK_SIZE };
        let mut q = Queue::default();
        q.add(block, 14, 0, 0, false);
        assert_eq!(q.feeds[&block].next_systematic(), Some(0));
        q.spend(&block);
        q.spend(&block);
        assert_eq!(q.feeds[&block].next_systematic(), Some(2));
        // The peer holds more than we sent: some came from elsewhere.
        q.add(block, 12, 0, 3, false);
        assert_eq!(q.feeds[&block].next_systematic(), None);
        // Another peer sends it the same block: combinations from the start.
        let other = BlockRef { piece: 1, ..block };
        q.add(other, 14, 0, 0, true);
        assert_eq!(q.feeds[&other].next_systematic(), None);
        // All K sent: anything more is a combination.
        let last = BlockRef { piece: 2, ..block };
        q.add(last, 1, GENERATION as u32, 0, false);
        assert_eq!(q.feeds[&last].next_systematic(), None);
    }
}
