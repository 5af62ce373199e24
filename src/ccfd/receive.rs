//! One torrent's coded cooperation state, shared by its connections: a
//! decoder per block being received (several peers may feed it), the
//! split of verified pieces that senders code from (made once per piece,
//! shared by every receiver), and the evidence that proves a polluter once
//! a piece it touched verifies.
//!
//! It knows the torrent's geometry and storage but not its swarm: a
//! decoded block goes back to the connection as a value, and a verdict on
//! a polluter goes back to the verifier, which bans.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use ccfd_codec::kernels::mul_add;
use ccfd_codec::packet::{Coefficients, GenerationId, Packet};
use ccfd_codec::{Decoder, Generation};
use ccfd_proto::bitfield::GrowingSet;
use ccfd_proto::metainfo::Metainfo;
use ccfd_proto::wire::{BlockRef, BLOCK_SIZE};
use parking_lot::Mutex;
use rand::Rng;

use super::proto::{GENERATION, SYMBOL_SIZE};
use super::router::CodedRouter;
use crate::storage::Storage;

/// Verified pieces kept split for senders.
const SOURCE_CACHE: usize = 32;
/// Packets logged per block (K plus losses and duplicates from several senders).
const LOG_PER_BLOCK: usize = 4 * GENERATION;
/// Pieces whose coded evidence is kept until they verify.
const MAX_EVIDENCE_PIECES: usize = 64;

/// One packet a peer sent us, kept so a failed piece can be traced to it.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub ip: IpAddr,
    /// Block offset within the piece.
    pub offset: u32,
    /// Made from a verified piece (systematic or seeded), not recoded.
    pub source: bool,
    pub coeffs: Vec<u8>,
    pub payload: Vec<u8>,
}

/// What a verified piece proves about a peer whose packet did not fit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A wrong packet made from a verified piece: the sender lied.
    Ban(IpAddr),
    /// A wrong recoded packet: the recoder may have been fooled itself.
    Strike(IpAddr),
}

struct Assembly {
    decoder: Decoder,
    log: Vec<Evidence>,
}

#[derive(Default)]
struct ReceiveState {
    assemblies: HashMap<BlockRef, Assembly>,
    /// Packets of pieces that failed their hash, until the piece verifies.
    evidence: HashMap<u32, Vec<Evidence>>,
    /// Pieces to fetch over the plain wire only (a coded attempt failed).
    plain_only: HashSet<u32>,
    /// Peers whose datagrams never reached us: later connections stay plain.
    unreachable: HashSet<IpAddr>,
}

/// What one coded packet did.
pub struct Receipt {
    pub innovative: bool,
    pub rank: u16,
    /// The block decoded: its bytes and the packets it was made from.
    pub decoded: Option<(Vec<u8>, Vec<Evidence>)>,
}

/// A torrent's coded cooperation.
pub struct CodedTorrent {
    pub router: Arc<CodedRouter>,
    pub meta: Arc<Metainfo>,
    storage: Arc<Storage>,
    verified: Arc<GrowingSet>,
    state: Mutex<ReceiveState>,
    sources: Mutex<VecDeque<(u32, Arc<Vec<Generation>>)>>,
    /// Corrupts every coded payload we send: the polluter of the hostile-peer tests.
    pub polluter: bool,
    /// Paths with a shorter TCP round trip stay plain (`super::coding_pays`).
    pub min_rtt: std::time::Duration,
}

impl CodedTorrent {
    pub fn new(
        router: Arc<CodedRouter>,
        meta: Arc<Metainfo>,
        storage: Arc<Storage>,
        verified: Arc<GrowingSet>,
        polluter: bool,
        min_rtt: std::time::Duration,
    ) -> CodedTorrent {
        CodedTorrent {
            router,
            meta,
            storage,
            verified,
            state: Mutex::new(ReceiveState::default()),
            sources: Mutex::new(VecDeque::new()),
            polluter,
            min_rtt,
        }
    }

    /// The block at `piece`/`offset` of this torrent, if there is one.
    pub fn valid_block(&self, piece: u32, offset: u32) -> Option<BlockRef> {
        if piece >= self.meta.piece_count() || !offset.is_multiple_of(BLOCK_SIZE) {
            return None;
        }
        let piece_len = self.meta.piece_len(piece);
        (offset < piece_len).then(|| BlockRef { piece, offset, length: (piece_len - offset).min(BLOCK_SIZE) })
    }

    pub fn has_piece(&self, piece: u32) -> bool {
        self.verified.contains(piece)
    }

    /// Starts (or keeps) a decoder for `block`, so packets for it are
    /// accepted. False if one was open already: another peer may be
    /// sending the block too.
    pub fn open(&self, block: BlockRef) -> bool {
        let mut state = self.state.lock();
        let std::collections::hash_map::Entry::Vacant(slot) = state.assemblies.entry(block) else { return false };
        if let Ok(decoder) = Decoder::new(GENERATION, SYMBOL_SIZE, block.length as usize) {
            slot.insert(Assembly { decoder, log: Vec::new() });
        }
        true
    }

    /// Drops the decoder of `block` (the block arrived another way, or we gave up).
    pub fn close(&self, block: BlockRef) {
        self.state.lock().assemblies.remove(&block);
    }

    /// Our rank for `block`: K once the piece is verified, the decoder's rank
    /// while receiving, `None` if we neither have nor receive it.
    pub fn rank(&self, block: BlockRef) -> Option<u16> {
        if self.has_piece(block.piece) {
            return Some(GENERATION as u16);
        }
        self.state.lock().assemblies.get(&block).map(|a| a.decoder.rank() as u16)
    }

    /// Datagrams from `ip` never arrived (NAT, firewall, TCP-only proxy).
    pub fn set_unreachable(&self, ip: IpAddr) {
        self.state.lock().unreachable.insert(ip);
    }

    /// Whether we still ask `ip` for coded packets.
    pub fn reachable(&self, ip: IpAddr) -> bool {
        !self.state.lock().unreachable.contains(&ip)
    }

    /// Whether `piece` may travel coded (no coded attempt of it failed).
    pub fn allowed(&self, piece: u32) -> bool {
        !self.state.lock().plain_only.contains(&piece)
    }

    /// Takes one packet for `block` from `ip`. `None`: no decoder is open
    /// for it (unsolicited) or the packet does not fit.
    pub fn receive(&self, ip: IpAddr, block: BlockRef, packet: &Packet) -> Option<Receipt> {
        let mut state = self.state.lock();
        let a = state.assemblies.get_mut(&block)?;
        let coeffs = packet.coefficients.expand(GENERATION);
        let innovative = a.decoder.receive(&coeffs, &packet.payload).ok()?;
        if innovative && a.log.len() < LOG_PER_BLOCK {
            let source = !matches!(packet.coefficients, Coefficients::Explicit(_));
            a.log.push(Evidence { ip, offset: block.offset, source, coeffs, payload: packet.payload.clone() });
        }
        let rank = a.decoder.rank() as u16;
        let decoded =
            if a.decoder.is_complete() { state.assemblies.remove(&block).and_then(|a| Some((a.decoder.data()?, a.log))) } else { None };
        Some(Receipt { innovative, rank, decoded })
    }

    /// A fresh recoding of what we hold of `block`, for a neighbour at rank
    /// `their_rank`; `None` unless we are still receiving it at a higher rank.
    pub fn recode(&self, block: BlockRef, their_rank: u16, rng: &mut impl Rng) -> Option<Packet> {
        let state = self.state.lock();
        let a = state.assemblies.get(&block)?;
        if a.decoder.rank() <= usize::from(their_rank) {
            return None;
        }
        let (coeffs, payload) = a.decoder.recode(rng)?;
        Some(Packet { id: generation_id(block), coefficients: Coefficients::Explicit(coeffs), payload })
    }

    /// The split of verified piece `piece` for senders (read once, cached).
    pub async fn source(&self, piece: u32) -> Option<Arc<Vec<Generation>>> {
        if let Some((_, g)) = self.sources.lock().iter().find(|(p, _)| *p == piece) {
            return Some(g.clone());
        }
        if !self.has_piece(piece) {
            return None;
        }
        let storage = self.storage.clone();
        let len = self.meta.piece_len(piece);
        let data = tokio::task::spawn_blocking(move || storage.read_piece(piece, len)).await.ok()?.ok()?;
        let blocks: Vec<Generation> =
            data.chunks(BLOCK_SIZE as usize).filter_map(|b| Generation::split(b, GENERATION, SYMBOL_SIZE).ok()?.pop()).collect();
        let split = Arc::new(blocks);
        let mut sources = self.sources.lock();
        if sources.len() >= SOURCE_CACHE {
            sources.pop_front();
        }
        sources.push_back((piece, split.clone()));
        Some(split)
    }

    /// A piece that held coded blocks failed its hash: keep the evidence and
    /// fetch the piece over the plain wire from now on.
    pub fn piece_failed(&self, piece: u32, evidence: Vec<Evidence>) {
        let mut state = self.state.lock();
        state.plain_only.insert(piece);
        if state.evidence.len() < MAX_EVIDENCE_PIECES || state.evidence.contains_key(&piece) {
            let kept = state.evidence.entry(piece).or_default();
            kept.extend(evidence);
            kept.truncate(LOG_PER_BLOCK * 64);
        }
    }

    /// `piece` verified with `data`: every packet logged from an earlier
    /// failed attempt is checked against the true blocks. A wrong source
    /// packet proves its sender lied; a wrong recoded packet is a strike.
    pub fn piece_verified(&self, piece: u32, data: &[u8]) -> Vec<Verdict> {
        let evidence = {
            let mut state = self.state.lock();
            state.plain_only.remove(&piece);
            state.assemblies.retain(|b, _| b.piece != piece);
            state.evidence.remove(&piece)
        };
        let mut verdicts = Vec::new();
        for e in evidence.unwrap_or_default() {
            let start = e.offset as usize;
            let Some(block) = data.get(start..(start + BLOCK_SIZE as usize).min(data.len())) else { continue };
            if consistent(block, &e.coeffs, &e.payload) {
                continue;
            }
            verdicts.push(if e.source { Verdict::Ban(e.ip) } else { Verdict::Strike(e.ip) });
        }
        verdicts
    }
}

/// Whether `payload` is the combination `coeffs` of `block`'s source symbols.
fn consistent(block: &[u8], coeffs: &[u8], payload: &[u8]) -> bool {
    let Ok(mut g) = Generation::split(block, GENERATION, SYMBOL_SIZE) else { return false };
    let Some(g) = g.pop() else { return false };
    let mut expect = vec![0u8; SYMBOL_SIZE];
    for (i, &c) in coeffs.iter().enumerate().take(g.k()) {
        if c != 0 {
            mul_add(&mut expect, g.symbol(i), c);
        }
    }
    expect == payload
}

/// The codec's id of the generation that is `block`.
pub fn generation_id(block: BlockRef) -> GenerationId {
    GenerationId {
        piece: block.piece,
        generation: (block.offset / BLOCK_SIZE) as u16,
        k: GENERATION as u16,
        symbol_size: SYMBOL_SIZE as u16,
        len: block.length,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_checked_against_the_true_block() {
        let block: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i * 7 % 251) as u8).collect();
        let g = Generation::split(&block, GENERATION, SYMBOL_SIZE).unwrap().pop().unwrap();
        let coeffs = ccfd_codec::coefficients::from_seed(9, GENERATION);
        let mut good = vec![0u8; SYMBOL_SIZE];
        g.combine_into(&coeffs, &mut good);
        assert!(consistent(&block, &coeffs, &good));
        let mut bad = good.clone();
        bad[10] ^= 1;
        assert!(!consistent(&block, &coeffs, &bad));
        // A short last block: padding is zero on both sides.
        let short = &block[..5000];
        let g = Generation::split(short, GENERATION, SYMBOL_SIZE).unwrap().pop().unwrap();
        let mut p = vec![0u8; SYMBOL_SIZE];
        g.combine_into(&coeffs, &mut p);
        assert!(consistent(short, &coeffs, &p));
    }
}
