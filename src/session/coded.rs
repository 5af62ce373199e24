//! The session's side of coded cooperation: one decoder per block being
//! received (several peers may feed it), the split of verified pieces that
//! senders code from (made once per piece, shared by every receiver), and
//! the evidence that proves a polluter once a piece it touched verifies.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use rand::Rng;

use super::{CompletedPiece, PeerCommand, Session, SwarmState};
use crate::coded::proto::{GENERATION, SYMBOL_SIZE};
use crate::picker::PeerKey;
use ccfd_codec::kernels::mul_add;
use ccfd_codec::packet::{Coefficients, Packet};
use ccfd_codec::{Decoder, Generation};
use ccfd_proto::wire::{BlockRef, BLOCK_SIZE};

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

struct Assembly {
    decoder: Decoder,
    log: Vec<Evidence>,
}

/// Coded receive and send state of one torrent.
#[derive(Default)]
pub(crate) struct CodedState {
    assemblies: HashMap<BlockRef, Assembly>,
    sources: VecDeque<(u32, Arc<Vec<Generation>>)>,
    /// Packets of pieces that failed their hash, until the piece verifies.
    evidence: HashMap<u32, Vec<Evidence>>,
    /// Pieces to fetch over the plain wire only (a coded attempt failed).
    plain_only: HashSet<u32>,
    /// Peers whose datagrams never reached us: later connections stay plain.
    unreachable: HashSet<IpAddr>,
}

/// What one coded packet did.
pub struct CodedReceipt {
    pub innovative: bool,
    pub rank: u16,
    /// The block decoded and completed its piece: hand it to `verify`.
    pub completed: Option<CompletedPiece>,
    /// The block decoded (its piece may still miss other blocks).
    pub decoded: bool,
}

impl Session {
    /// Starts (or keeps) a decoder for `block`, so packets for it are
    /// accepted. False if one was open already: another peer may be
    /// sending the block too.
    pub fn coded_open(&self, block: BlockRef) -> bool {
        let mut coded = self.coded.lock();
        let std::collections::hash_map::Entry::Vacant(slot) = coded.assemblies.entry(block) else { return false };
        if let Ok(decoder) = Decoder::new(GENERATION, SYMBOL_SIZE, block.length as usize) {
            slot.insert(Assembly { decoder, log: Vec::new() });
        }
        true
    }

    /// Drops the decoder of `block` (the block arrived another way, or we gave up).
    pub fn coded_close(&self, block: BlockRef) {
        self.coded.lock().assemblies.remove(&block);
    }

    /// Our rank for `block`: K once the piece is verified, the decoder's rank
    /// while receiving, `None` if we neither have nor receive it.
    pub fn coded_rank(&self, block: BlockRef) -> Option<u16> {
        if self.has_piece(block.piece) {
            return Some(GENERATION as u16);
        }
        self.coded.lock().assemblies.get(&block).map(|a| a.decoder.rank() as u16)
    }

    /// Datagrams from `ip` never arrived (NAT, firewall, TCP-only proxy).
    pub fn coded_unreachable(&self, ip: IpAddr) {
        self.coded.lock().unreachable.insert(ip);
    }

    /// Whether we still ask `ip` for coded packets.
    pub fn coded_reachable(&self, ip: IpAddr) -> bool {
        !self.coded.lock().unreachable.contains(&ip)
    }

    /// Whether `piece` may travel coded (no coded attempt of it failed).
    pub fn coded_allowed(&self, piece: u32) -> bool {
        !self.coded.lock().plain_only.contains(&piece)
    }

    /// Takes one packet for `block` from peer `key` at `ip`. `None`: no
    /// decoder is open for it (unsolicited) or the packet does not fit.
    pub fn coded_receive(&self, key: PeerKey, ip: IpAddr, block: BlockRef, packet: &Packet) -> Option<CodedReceipt> {
        let (innovative, rank, done) = {
            let mut c = self.coded.lock();
            let a = c.assemblies.get_mut(&block)?;
            let coeffs = packet.coefficients.expand(GENERATION);
            let innovative = a.decoder.receive(&coeffs, &packet.payload).ok()?;
            if innovative && a.log.len() < LOG_PER_BLOCK {
                let source = !matches!(packet.coefficients, Coefficients::Explicit(_));
                a.log.push(Evidence { ip, offset: block.offset, source, coeffs, payload: packet.payload.clone() });
            }
            let rank = a.decoder.rank() as u16;
            let done =
                if a.decoder.is_complete() { c.assemblies.remove(&block).and_then(|a| Some((a.decoder.data()?, a.log))) } else { None };
            (innovative, rank, done)
        };
        let Some((data, log)) = done else {
            return Some(CodedReceipt { innovative, rank, completed: None, decoded: false });
        };
        // A block decoded for a peer that has since left is dropped, as its plain blocks would be.
        let completed = self.on_peer_block(key, block, &Bytes::from(data), log);
        Some(CodedReceipt { innovative, rank, completed, decoded: true })
    }

    /// A fresh recoding of what we hold of `block`, for a neighbour at rank
    /// `their_rank`; `None` unless we are still receiving it at a higher rank.
    pub fn coded_recode(&self, block: BlockRef, their_rank: u16, rng: &mut impl Rng) -> Option<Packet> {
        let c = self.coded.lock();
        let a = c.assemblies.get(&block)?;
        if a.decoder.rank() <= usize::from(their_rank) {
            return None;
        }
        let (coeffs, payload) = a.decoder.recode(rng)?;
        Some(Packet { id: generation_id(block), coefficients: Coefficients::Explicit(coeffs), payload })
    }

    /// The split of verified piece `piece` for senders (read once, cached).
    pub async fn coded_source(&self, piece: u32) -> Option<Arc<Vec<Generation>>> {
        if let Some((_, g)) = self.coded.lock().sources.iter().find(|(p, _)| *p == piece) {
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
        let mut c = self.coded.lock();
        if c.sources.len() >= SOURCE_CACHE {
            c.sources.pop_front();
        }
        c.sources.push_back((piece, split.clone()));
        Some(split)
    }

    /// Tells every connection our rank for `block` (coded have), so a
    /// neighbour holding more of it may recode for us, and a feeder stops
    /// once we are done.
    pub fn coded_announce(&self, block: BlockRef, rank: u16) {
        for p in self.state.lock().peers.values() {
            let _ = p.tx.send(PeerCommand::CodedRank(block, rank));
        }
    }

    /// A piece that held coded blocks failed its hash: keep the evidence and
    /// fetch the piece over the plain wire from now on.
    pub(super) fn coded_piece_failed(&self, piece: u32, evidence: Vec<Evidence>) {
        let mut c = self.coded.lock();
        c.plain_only.insert(piece);
        if c.evidence.len() < MAX_EVIDENCE_PIECES || c.evidence.contains_key(&piece) {
            let kept = c.evidence.entry(piece).or_default();
            kept.extend(evidence);
            kept.truncate(LOG_PER_BLOCK * 64);
        }
    }

    /// `piece` verified with `data`: every packet logged from an earlier
    /// failed attempt is checked against the true blocks. A wrong source
    /// packet bans its sender; a wrong recoded packet is a strike (the
    /// recoder may have been fooled itself).
    pub(super) fn coded_piece_verified(&self, s: &mut SwarmState, piece: u32, data: &[u8]) {
        let evidence = {
            let mut c = self.coded.lock();
            c.plain_only.remove(&piece);
            c.assemblies.retain(|b, _| b.piece != piece);
            c.evidence.remove(&piece)
        };
        for e in evidence.unwrap_or_default() {
            let start = e.offset as usize;
            let Some(block) = data.get(start..(start + BLOCK_SIZE as usize).min(data.len())) else { continue };
            if consistent(block, &e.coeffs, &e.payload) {
                continue;
            }
            if e.source {
                tracing::warn!(ip = %e.ip, piece, "peer proven to have sent a corrupt coded packet");
                self.ban(s, e.ip);
            } else {
                self.strike(s, e.ip);
            }
        }
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
pub fn generation_id(block: BlockRef) -> ccfd_codec::packet::GenerationId {
    ccfd_codec::packet::GenerationId {
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
