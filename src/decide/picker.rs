//! Which block to request next, from whom. Pure: no sockets, no clock.
//!
//! Every piece is in exactly one state (the invariant the rest of the engine
//! relies on):
//! - `Missing`: nothing requested, no buffer;
//! - `Active`: some blocks requested or received, the session holds its buffer;
//! - `Hashing`: every block received, waiting for SHA-1 verification;
//! - `Verified`: on disk and checked; announced with `have`.
//!
//! Policy: pieces already started are finished first (few open buffers);
//! the first few new pieces are random (so a newcomer quickly has something
//! to trade), then rarest-first with random tie-breaks; when every missing
//! block is already requested, endgame lets a second peer request a block,
//! and the first copy to arrive cancels the others.
//!
//! Only `wanted` pieces are fetched (every piece unless the user chose some
//! files of the torrent); the download is `done` when those are verified.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::Rng;

use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::wire::{BlockRef, BLOCK_SIZE};

/// Identifies a connection inside a session.
pub type PeerKey = u64;

/// Random pieces first, until we hold this many.
const RANDOM_FIRST_PIECES: u32 = 4;
/// In endgame, at most this many peers request the same block.
const ENDGAME_MAX_REQUESTERS: usize = 2;

/// Where one piece stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceState {
    Missing,
    Active,
    Hashing,
    Verified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Block {
    Missing,
    Requested(Vec<PeerKey>),
    Received,
}

#[derive(Debug)]
struct Partial {
    blocks: Vec<Block>,
    received: u32,
}

/// What the arrival of a block means.
#[derive(Debug, PartialEq, Eq)]
pub enum BlockOutcome {
    /// New data; `complete` when it was the piece's last block. `cancel` lists
    /// the other peers that also requested it (endgame) and should be cancelled.
    Accepted { complete: bool, cancel: Vec<PeerKey> },
    /// We already have these bytes, or never asked for them: drop the data.
    Unwanted,
}

/// How far one piece is from complete, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Not received yet.
    pub remaining: u64,
    /// Not received and not requested from anyone.
    pub unrequested: u64,
}

/// A streaming pick: which pieces come first, which may be requested twice,
/// and which the usual policy must leave alone.
pub struct PickPlan<'a> {
    /// Pieces to request blocks of, in this order, each with the most
    /// blocks of it this peer may take on.
    pub urgent: &'a [(u32, usize)],
    /// Pieces whose in-flight blocks may be requested from a second peer
    /// (right after its missing blocks, for a piece that is also urgent).
    pub duplicate: &'a [u32],
    /// Pieces reserved for the deadline planner or the server.
    pub skip: &'a dyn Fn(u32) -> bool,
}

/// The download plan of one torrent.
#[derive(Debug)]
pub struct Picker {
    piece_length: u64,
    total_length: u64,
    states: Vec<PieceState>,
    partial: BTreeMap<u32, Partial>,
    availability: Vec<u32>,
    /// A random rank per piece: breaks rarity ties without bias.
    tie_break: Vec<u32>,
    have: Bitfield,
    /// The pieces to fetch (all, or those of the chosen files).
    wanted: Bitfield,
    /// Wanted pieces not verified yet.
    wanted_left: u32,
}

impl Picker {
    /// A plan for a torrent of which we already hold `have`.
    pub fn new(piece_length: u64, total_length: u64, have: Bitfield, rng: &mut impl Rng) -> Picker {
        let n = have.len();
        let states = (0..n).map(|i| if have.get(i) { PieceState::Verified } else { PieceState::Missing }).collect();
        let mut tie_break: Vec<u32> = (0..n).collect();
        tie_break.shuffle(rng);
        let wanted = Bitfield::full(n);
        let wanted_left = n - have.count();
        Picker {
            piece_length,
            total_length,
            states,
            partial: BTreeMap::new(),
            availability: vec![0; n as usize],
            tie_break,
            have,
            wanted,
            wanted_left,
        }
    }

    /// Fetch only these pieces (those of the files the user chose). A
    /// bitfield of the wrong length is ignored.
    pub fn set_wanted(&mut self, wanted: Bitfield) {
        if wanted.len() != self.have.len() {
            return;
        }
        self.wanted_left = wanted.ones().filter(|&i| !self.have.get(i)).count() as u32;
        self.wanted = wanted;
    }

    /// Fetch `pieces` too (a file chosen after the start).
    pub fn want_more(&mut self, pieces: impl IntoIterator<Item = u32>) {
        for p in pieces {
            if p < self.have.len() && self.wanted.set(p) && !self.have.get(p) {
                self.wanted_left += 1;
            }
        }
    }

    /// Whether piece `piece` is one to fetch.
    pub fn is_wanted(&self, piece: u32) -> bool {
        self.wanted.get(piece)
    }

    /// Every wanted piece is verified: the download is finished (a seed
    /// only when every piece was wanted).
    pub fn is_done(&self) -> bool {
        self.wanted_left == 0
    }

    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    pub fn state(&self, piece: u32) -> Option<&PieceState> {
        self.states.get(piece as usize)
    }

    /// How many connected peers announced `piece`.
    pub fn availability(&self, piece: u32) -> u32 {
        self.availability.get(piece as usize).copied().unwrap_or(0)
    }

    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// Bytes in piece `piece`.
    pub fn piece_len(&self, piece: u32) -> u32 {
        let start = u64::from(piece) * self.piece_length;
        (self.total_length - start).min(self.piece_length) as u32
    }

    fn block_count(&self, piece: u32) -> u32 {
        self.piece_len(piece).div_ceil(BLOCK_SIZE)
    }

    fn block_ref(&self, piece: u32, block: u32) -> BlockRef {
        let offset = block * BLOCK_SIZE;
        BlockRef { piece, offset, length: (self.piece_len(piece) - offset).min(BLOCK_SIZE) }
    }

    /// A peer announced its bitfield.
    pub fn add_peer_pieces(&mut self, pieces: &Bitfield) {
        for i in pieces.ones() {
            self.availability[i as usize] += 1;
        }
    }

    /// A peer announced one piece (`have`).
    pub fn add_peer_piece(&mut self, piece: u32) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a += 1;
        }
    }

    /// A peer's pieces no longer count (it left, or replaced its bitfield).
    pub fn remove_peer_pieces(&mut self, pieces: &Bitfield) {
        for i in pieces.ones() {
            let a = &mut self.availability[i as usize];
            *a = a.saturating_sub(1);
        }
    }

    /// A peer left: its pieces no longer count, its requests return to the pool.
    pub fn remove_peer(&mut self, peer: PeerKey, pieces: &Bitfield) {
        self.remove_peer_pieces(pieces);
        self.release_all(peer);
    }

    /// Forgets every request of `peer` (it choked us, was snubbed, or left).
    pub fn release_all(&mut self, peer: PeerKey) {
        for p in self.partial.values_mut() {
            for b in &mut p.blocks {
                release_one(b, peer);
            }
        }
    }

    /// Forgets one request of `peer` (it timed out or was rejected).
    pub fn release(&mut self, peer: PeerKey, block: BlockRef) {
        if let Some(b) = self.partial.get_mut(&block.piece).and_then(|p| p.blocks.get_mut((block.offset / BLOCK_SIZE) as usize)) {
            release_one(b, peer);
        }
    }

    /// Picks up to `max` blocks to request from `peer`, which has `peer_has`.
    pub fn pick(&mut self, peer: PeerKey, peer_has: &Bitfield, max: usize, rng: &mut impl Rng) -> Vec<BlockRef> {
        let mut out = Vec::new();
        self.pick_usual(peer, peer_has, max, &|_| false, rng, &mut out);
        out
    }

    /// Streaming: blocks of the `urgent` pieces first, in that (deadline)
    /// order; then second requests for in-flight blocks of the `duplicate`
    /// pieces; then the usual policy over the pieces `skip` does not reserve
    /// (those due soon belong to the deadline planner or the server).
    pub fn pick_planned(
        &mut self,
        peer: PeerKey,
        peer_has: &Bitfield,
        max: usize,
        plan: &PickPlan<'_>,
        rng: &mut impl Rng,
    ) -> Vec<BlockRef> {
        let mut out = Vec::new();
        for &(piece, blocks) in plan.urgent {
            if out.len() >= max || !peer_has.get(piece) {
                continue;
            }
            if self.states.get(piece as usize) == Some(&PieceState::Missing) {
                self.activate(piece);
            }
            self.take_missing(peer, piece, max.min(out.len().saturating_add(blocks)), &mut out);
            // An urgent piece that is also a duplicate: its in-flight blocks
            // are asked again here, before later pieces.
            if out.len() < max && plan.duplicate.contains(&piece) {
                self.take_second_requests(peer, piece, max, &mut out);
            }
        }
        for &piece in plan.duplicate.iter().filter(|&&p| !plan.urgent.iter().any(|&(u, _)| u == p)) {
            if out.len() < max && peer_has.get(piece) {
                self.take_second_requests(peer, piece, max, &mut out);
            }
        }
        self.pick_usual(peer, peer_has, max, plan.skip, rng, &mut out);
        out
    }

    fn pick_usual(
        &mut self,
        peer: PeerKey,
        peer_has: &Bitfield,
        max: usize,
        skip: &dyn Fn(u32) -> bool,
        rng: &mut impl Rng,
        out: &mut Vec<BlockRef>,
    ) {
        self.pick_in_active(peer, peer_has, max, skip, out);
        while out.len() < max {
            let Some(piece) = self.choose_new_piece(peer_has, skip, rng) else {
                break;
            };
            self.activate(piece);
            self.take_missing(peer, piece, max, out);
        }
        if out.len() < max && self.in_endgame() {
            self.pick_endgame(peer, peer_has, max, out);
        }
    }

    fn activate(&mut self, piece: u32) {
        let blocks = vec![Block::Missing; self.block_count(piece) as usize];
        self.partial.insert(piece, Partial { blocks, received: 0 });
        self.states[piece as usize] = PieceState::Active;
    }

    /// Bytes of `piece` not received yet, and how many of those no peer
    /// has been asked for.
    pub fn progress(&self, piece: u32) -> Progress {
        match self.states.get(piece as usize) {
            Some(PieceState::Missing) => {
                let len = u64::from(self.piece_len(piece));
                Progress { remaining: len, unrequested: len }
            }
            Some(PieceState::Active) => match self.partial.get(&piece) {
                Some(p) => {
                    let mut progress = Progress::default();
                    for (i, b) in p.blocks.iter().enumerate() {
                        let len = u64::from(self.block_ref(piece, i as u32).length);
                        match b {
                            Block::Received => {}
                            Block::Missing => {
                                progress.remaining += len;
                                progress.unrequested += len;
                            }
                            Block::Requested(_) => progress.remaining += len,
                        }
                    }
                    progress
                }
                None => Progress::default(),
            },
            _ => Progress::default(),
        }
    }

    /// Claims every block of `piece` not received yet for `server` (the
    /// VoD fallback). Returns each claimed block with the peers that had
    /// requested it (their requests should be cancelled).
    pub fn claim_for_server(&mut self, piece: u32, server: PeerKey) -> Vec<(BlockRef, Vec<PeerKey>)> {
        if self.states.get(piece as usize) == Some(&PieceState::Missing) {
            self.activate(piece);
        }
        let Some(p) = self.partial.get_mut(&piece) else { return Vec::new() };
        let mut claimed = Vec::new();
        for (i, b) in p.blocks.iter_mut().enumerate() {
            let others = match b {
                Block::Received => continue,
                Block::Missing => Vec::new(),
                Block::Requested(by) => by.iter().copied().filter(|&k| k != server).collect(),
            };
            *b = Block::Requested(vec![server]);
            claimed.push((i as u32, others));
        }
        claimed.into_iter().map(|(i, others)| (self.block_ref(piece, i), others)).collect()
    }

    /// Adds `peer` as a second requester of `piece`'s in-flight blocks.
    fn take_second_requests(&mut self, peer: PeerKey, piece: u32, max: usize, out: &mut Vec<BlockRef>) {
        let Some(p) = self.partial.get_mut(&piece) else { return };
        let mut picked = Vec::new();
        for (i, b) in p.blocks.iter_mut().enumerate() {
            if out.len() + picked.len() >= max {
                break;
            }
            match b {
                Block::Missing => {
                    *b = Block::Requested(vec![peer]);
                    picked.push(i as u32);
                }
                Block::Requested(by) if !by.contains(&peer) && by.len() < ENDGAME_MAX_REQUESTERS => {
                    by.push(peer);
                    picked.push(i as u32);
                }
                _ => {}
            }
        }
        out.extend(picked.into_iter().map(|i| self.block_ref(piece, i)));
    }

    fn pick_in_active(&mut self, peer: PeerKey, peer_has: &Bitfield, max: usize, skip: &dyn Fn(u32) -> bool, out: &mut Vec<BlockRef>) {
        let active: Vec<u32> = self.partial.keys().copied().filter(|&p| peer_has.get(p) && !skip(p)).collect();
        for piece in active {
            if out.len() >= max {
                break;
            }
            self.take_missing(peer, piece, max, out);
        }
    }

    fn take_missing(&mut self, peer: PeerKey, piece: u32, max: usize, out: &mut Vec<BlockRef>) {
        let Some(p) = self.partial.get_mut(&piece) else {
            return;
        };
        let mut taken = Vec::new();
        for (i, b) in p.blocks.iter_mut().enumerate() {
            if out.len() + taken.len() >= max {
                break;
            }
            if *b == Block::Missing {
                *b = Block::Requested(vec![peer]);
                taken.push(i as u32);
            }
        }
        out.extend(taken.into_iter().map(|i| self.block_ref(piece, i)));
    }

    fn choose_new_piece(&self, peer_has: &Bitfield, skip: &dyn Fn(u32) -> bool, rng: &mut impl Rng) -> Option<u32> {
        let candidates = (0..self.states.len() as u32)
            .filter(|&i| self.states[i as usize] == PieceState::Missing && peer_has.get(i) && self.wanted.get(i) && !skip(i));
        if self.have.count() < RANDOM_FIRST_PIECES {
            let all: Vec<u32> = candidates.collect();
            return all.get(rng.random_range(0..all.len().max(1))).copied();
        }
        candidates.min_by_key(|&i| (self.availability[i as usize], self.tie_break[i as usize]))
    }

    /// Endgame: nothing wanted is left unrequested, only in flight.
    fn in_endgame(&self) -> bool {
        !self.states.iter().enumerate().any(|(i, s)| *s == PieceState::Missing && self.wanted.get(i as u32))
    }

    fn pick_endgame(&mut self, peer: PeerKey, peer_has: &Bitfield, max: usize, out: &mut Vec<BlockRef>) {
        let mut picked = Vec::new();
        for (&piece, p) in self.partial.iter_mut() {
            if !peer_has.get(piece) {
                continue;
            }
            for (i, b) in p.blocks.iter_mut().enumerate() {
                if out.len() + picked.len() >= max {
                    break;
                }
                if let Block::Requested(by) = b {
                    if !by.contains(&peer) && by.len() < ENDGAME_MAX_REQUESTERS {
                        by.push(peer);
                        picked.push((piece, i as u32));
                    }
                }
            }
        }
        out.extend(picked.into_iter().map(|(piece, i)| self.block_ref(piece, i)));
    }

    /// A block arrived from `peer`.
    pub fn block_received(&mut self, peer: PeerKey, block: BlockRef) -> BlockOutcome {
        if !block.offset.is_multiple_of(BLOCK_SIZE) || block.piece as usize >= self.states.len() {
            return BlockOutcome::Unwanted;
        }
        let expected = self.block_ref(block.piece, block.offset / BLOCK_SIZE);
        if expected != block {
            return BlockOutcome::Unwanted;
        }
        let Some(p) = self.partial.get_mut(&block.piece) else {
            return BlockOutcome::Unwanted;
        };
        let Some(slot) = p.blocks.get_mut((block.offset / BLOCK_SIZE) as usize) else {
            return BlockOutcome::Unwanted;
        };
        let cancel = match std::mem::replace(slot, Block::Received) {
            Block::Received => return BlockOutcome::Unwanted,
            Block::Missing => Vec::new(),
            Block::Requested(by) => by.into_iter().filter(|&k| k != peer).collect(),
        };
        p.received += 1;
        let complete = p.received as usize == p.blocks.len();
        if complete {
            self.partial.remove(&block.piece);
            self.states[block.piece as usize] = PieceState::Hashing;
        }
        BlockOutcome::Accepted { complete, cancel }
    }

    /// The piece hashed correctly and is on disk.
    pub fn piece_verified(&mut self, piece: u32) {
        if let Some(s) = self.states.get_mut(piece as usize) {
            *s = PieceState::Verified;
            self.partial.remove(&piece);
            if self.have.set(piece) && self.wanted.get(piece) {
                self.wanted_left -= 1;
            }
        }
    }

    /// The piece failed its hash (or could not be written): fetch it again.
    pub fn piece_failed(&mut self, piece: u32) {
        if let Some(s) = self.states.get_mut(piece as usize) {
            *s = PieceState::Missing;
            self.partial.remove(&piece);
        }
    }

    /// Whether `peer_has` holds any wanted piece we still lack.
    pub fn wants_any(&self, peer_has: &Bitfield) -> bool {
        peer_has.ones().any(|i| self.states[i as usize] != PieceState::Verified && self.wanted.get(i))
    }
}

fn release_one(b: &mut Block, peer: PeerKey) {
    if let Block::Requested(by) = b {
        by.retain(|&k| k != peer);
        if by.is_empty() {
            *b = Block::Missing;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const PIECE: u64 = 4 * BLOCK_SIZE as u64;

    fn picker(pieces: u32, have: &[u32]) -> Picker {
        let mut bf = Bitfield::new(pieces);
        for &h in have {
            bf.set(h);
        }
        Picker::new(PIECE, PIECE * u64::from(pieces) - 1000, bf, &mut StdRng::seed_from_u64(1))
    }

    fn full(n: u32) -> Bitfield {
        Bitfield::full(n)
    }

    #[test]
    fn only_wanted_pieces_are_fetched_and_done_means_they_are_verified() {
        let mut p = picker(6, &[0]);
        let mut wanted = Bitfield::new(6);
        for i in [0, 2, 3] {
            wanted.set(i);
        }
        p.set_wanted(wanted);
        assert!(!p.is_done());
        let mut only_unwanted = Bitfield::new(6);
        only_unwanted.set(5);
        assert!(!p.wants_any(&only_unwanted), "a peer with nothing we want is not interesting");
        let mut rng = StdRng::seed_from_u64(3);
        let picked = p.pick(1, &full(6), 100, &mut rng);
        let mut pieces: Vec<u32> = picked.iter().map(|b| b.piece).collect();
        pieces.dedup();
        assert_eq!(pieces.iter().copied().collect::<std::collections::BTreeSet<_>>(), [2, 3].into());
        for b in picked {
            p.block_received(1, b);
        }
        p.piece_verified(2);
        assert!(!p.is_done());
        p.piece_verified(3);
        assert!(p.is_done() && !p.is_complete());
        assert!(p.pick(1, &full(6), 100, &mut rng).is_empty(), "no endgame over unwanted pieces");
    }

    #[test]
    fn rarest_first_after_random_start() {
        let mut p = picker(10, &[0, 1, 2, 3]);
        let mut rare = Bitfield::new(10);
        rare.set(7);
        p.add_peer_pieces(&full(10));
        p.add_peer_pieces(&full(10));
        p.add_peer_pieces(&rare);
        // Piece 7 is held by 3 peers, the others by 2: any of them but 7 is rarest.
        let got = p.pick(1, &full(10), 4, &mut StdRng::seed_from_u64(2));
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|b| b.piece == got[0].piece && b.piece != 7));
        // Only 7 available from a peer that has only 7.
        let got = p.pick(2, &rare, 1, &mut StdRng::seed_from_u64(2));
        assert_eq!(got[0].piece, 7);
    }

    #[test]
    fn an_urgent_duplicate_is_asked_again_before_later_urgent_pieces() {
        let mut p = picker(4, &[]);
        p.add_peer_pieces(&full(4));
        p.add_peer_pieces(&full(4));
        let rng = &mut StdRng::seed_from_u64(3);
        // Peer 1 holds all four blocks of piece 0.
        let none = |_: u32| false;
        let first = p.pick_planned(1, &full(4), 4, &PickPlan { urgent: &[(0, usize::MAX)], duplicate: &[], skip: &none }, rng);
        assert!(first.iter().all(|b| b.piece == 0) && first.len() == 4);
        // Peer 2: piece 0 is urgent and near its cut-off, piece 1 urgent too.
        let second = p.pick_planned(2, &full(4), 6, &PickPlan { urgent: &[(0, usize::MAX), (1, 2)], duplicate: &[0], skip: &none }, rng);
        let pieces: Vec<u32> = second.iter().map(|b| b.piece).collect();
        assert_eq!(pieces, vec![0, 0, 0, 0, 1, 1], "piece 0's in-flight blocks first, then two of piece 1");
        // A third peer may take on one block of piece 1: one of the two left.
        let third = p.pick_planned(3, &full(4), 6, &PickPlan { urgent: &[(1, 1)], duplicate: &[], skip: &|_| true }, rng);
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].piece, 1);
    }

    #[test]
    fn short_last_piece_and_block() {
        let p = picker(3, &[]);
        assert_eq!(p.piece_len(2), PIECE as u32 - 1000);
        assert_eq!(p.block_count(2), 4);
        assert_eq!(p.block_ref(2, 3).length, BLOCK_SIZE - 1000);
    }

    #[test]
    fn active_pieces_are_finished_before_new_ones() {
        let mut p = picker(10, &[]);
        let mut rng = StdRng::seed_from_u64(3);
        let first = p.pick(1, &full(10), 2, &mut rng);
        p.release_all(1);
        let second = p.pick(2, &full(10), 2, &mut rng);
        assert_eq!(first, second, "released blocks of the active piece go out again first");
    }

    #[test]
    fn piece_lifecycle_and_failed_hash() {
        let mut p = picker(2, &[]);
        let mut rng = StdRng::seed_from_u64(4);
        let blocks = p.pick(1, &full(2), 100, &mut rng);
        assert_eq!(blocks.len(), 8);
        let piece0: Vec<_> = blocks.iter().filter(|b| b.piece == 0).copied().collect();
        for (i, b) in piece0.iter().enumerate() {
            let out = p.block_received(1, *b);
            assert_eq!(out, BlockOutcome::Accepted { complete: i == 3, cancel: vec![] });
        }
        assert_eq!(p.state(0), Some(&PieceState::Hashing));
        assert_eq!(p.block_received(1, piece0[0]), BlockOutcome::Unwanted);
        p.piece_failed(0);
        assert_eq!(p.state(0), Some(&PieceState::Missing));
        let again = p.pick(2, &full(2), 100, &mut rng);
        assert_eq!(again.iter().filter(|b| b.piece == 0).count(), 4, "failed piece is fetched again");
        for b in again.iter().filter(|b| b.piece == 0) {
            p.block_received(2, *b);
        }
        p.piece_verified(0);
        assert!(p.have().get(0) && !p.is_complete());
    }

    #[test]
    fn endgame_duplicates_and_cancels() {
        let mut p = picker(1, &[]);
        let mut rng = StdRng::seed_from_u64(5);
        let a = p.pick(1, &full(1), 100, &mut rng);
        assert_eq!(a.len(), 4);
        let b = p.pick(2, &full(1), 100, &mut rng);
        assert_eq!(b, a, "endgame: peer 2 requests the same blocks");
        assert!(p.pick(3, &full(1), 100, &mut rng).is_empty(), "at most two requesters per block");
        assert_eq!(p.block_received(2, a[0]), BlockOutcome::Accepted { complete: false, cancel: vec![1] });
    }

    #[test]
    fn lying_block_coordinates_are_unwanted() {
        let mut p = picker(2, &[]);
        let mut rng = StdRng::seed_from_u64(6);
        let b = p.pick(1, &full(2), 1, &mut rng)[0];
        assert_eq!(p.block_received(1, BlockRef { offset: b.offset + 1, ..b }), BlockOutcome::Unwanted);
        assert_eq!(p.block_received(1, BlockRef { length: 5, ..b }), BlockOutcome::Unwanted);
        assert_eq!(p.block_received(1, BlockRef { piece: 99, ..b }), BlockOutcome::Unwanted);
    }
}
