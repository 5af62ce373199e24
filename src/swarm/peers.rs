//! The swarm's side of its connections: the addresses to dial and how
//! each dial ended, and the peers admitted, with what they have and how
//! they treat us. The peer tasks call these; the state is the swarm's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ccfd_proto::bitfield::Bitfield;

use super::{Admitted, Rejected, Swarm, SwarmState};
use crate::decide::picker::PeerKey;
use crate::decide::stream_plan::SwarmOffer;
use crate::discovery::PeerSource;
use crate::net::transport::{Obfuscation, Transport};
use crate::net::Traffic;

impl Swarm {
    /// Adds addresses to try from `source`; the user's (`--peer`) are
    /// retried for the torrent's life, even once it is complete.
    pub fn add_candidates(&self, addrs: impl IntoIterator<Item = SocketAddr>, source: PeerSource) {
        if self.state.lock().add_candidates(addrs, source, self.net.listen_addr, Instant::now()) {
            self.wake_dialer.notify_one();
        }
    }

    /// An inbound peer's extended handshake named its listen port.
    pub(crate) fn peer_listens(&self, key: PeerKey, port: u16) {
        if let Some(p) = self.state.lock().peers.get_mut(&key).filter(|p| !p.outgoing && port != 0) {
            p.listen = Some(SocketAddr::new(p.addr.ip(), port));
        }
    }

    /// PEX: the peers others can reach, with BEP 11 flags, but `except`.
    pub(crate) fn pex_view(&self, except: PeerKey) -> Vec<(SocketAddr, u8)> {
        use ccfd_proto::pex::{FLAG_REACHABLE, FLAG_SEED};
        let s = self.state.lock();
        s.peers
            .iter()
            .filter(|(k, _)| **k != except)
            .filter_map(|(_, p)| {
                let flags = if p.is_seed { FLAG_SEED } else { 0 } | if p.outgoing { FLAG_REACHABLE } else { 0 };
                Some((p.listen?, flags))
            })
            .collect()
    }

    /// Whether PEX may be used (BEP 27: never for a private torrent).
    pub(crate) fn pex_allowed(&self) -> bool {
        !self.meta.private
    }

    /// Waits until new candidates arrive or a peer leaves.
    pub(crate) async fn dialer_woken(&self) {
        self.wake_dialer.notified().await
    }

    /// A dial ended without a connection: back the address off.
    pub(crate) fn dial_failed(&self, addr: SocketAddr) {
        let mut s = self.state.lock();
        s.connecting.remove(&addr);
        if let Some(c) = s.candidates.get_mut(&addr) {
            c.failed(Instant::now());
        }
    }

    /// A dial reached the peer (`encrypted`: with MSE); the connection now
    /// runs or was refused.
    pub(crate) fn dial_connected(&self, addr: SocketAddr, encrypted: bool) {
        let mut s = self.state.lock();
        s.connecting.remove(&addr);
        if let Some(c) = s.candidates.get_mut(&addr) {
            c.encrypted = encrypted;
        }
    }

    /// A dial gave up before connecting (no connection slot).
    pub(crate) fn dial_abandoned(&self, addr: SocketAddr) {
        self.state.lock().connecting.remove(&addr);
    }

    /// Whether to open `addr` encrypted first: it last worked that way.
    pub(crate) fn dial_encrypted_first(&self, addr: SocketAddr) -> bool {
        self.state.lock().candidates.get(&addr).is_some_and(|c| c.encrypted)
    }

    /// Admits a handshaken connection (`outgoing`: we dialed it).
    pub(crate) fn register_peer(
        &self,
        addr: SocketAddr,
        peer_id: [u8; 20],
        outgoing: bool,
        via: (Transport, Obfuscation),
    ) -> Result<Admitted, Rejected> {
        if peer_id == self.net.peer_id {
            return Err(Rejected::SelfConnection);
        }
        let traffic = Arc::new(Traffic::new(self.uploaded.clone()));
        let (key, commands) = self.state.lock().admit(addr, peer_id, outgoing, via, traffic.clone(), self.config.max_peers)?;
        Ok(Admitted { key, commands, traffic })
    }

    /// A connection ended: its pieces and requests leave the plan.
    pub(crate) fn unregister_peer(&self, key: PeerKey, has: &Bitfield) {
        let mut s = self.state.lock();
        if let Some(p) = s.peers.remove(&key) {
            if let Some(c) = s.candidates.get_mut(&p.addr) {
                c.failed(Instant::now());
                c.seed = p.is_seed;
            }
            s.picker.remove_peer(key, has);
            let never_got: Vec<u32> = p.shown.iter().copied().filter(|&piece| !has.get(piece)).collect();
            s.superseed.withdraw(&never_got);
            // A slot is free and the address has a retry time: the dialer plans again.
            self.wake_dialer.notify_one();
        }
    }

    /// The peer's bitfield arrived, replacing what it had announced before.
    pub(crate) fn peer_bitfield(&self, key: PeerKey, old: &Bitfield, has: &Bitfield) -> bool {
        let mut s = self.state.lock();
        s.picker.remove_peer_pieces(old);
        s.picker.add_peer_pieces(has);
        if let Some(p) = s.peers.get_mut(&key) {
            p.is_seed = has.is_full();
        }
        s.picker.wants_any(has)
    }

    /// The peer announced a piece; returns whether we want it.
    pub(crate) fn peer_have(&self, key: PeerKey, piece: u32, has: &Bitfield) -> bool {
        let mut s = self.state.lock();
        s.picker.add_peer_piece(piece);
        if let Some(p) = s.peers.get_mut(&key) {
            p.is_seed = has.is_full();
        }
        !s.picker.have().get(piece)
    }

    /// Whether we hide our bitfield and reveal pieces one by one (BEP 16).
    pub(crate) fn super_seeding(&self) -> bool {
        self.state.lock().super_seeding(self.config.super_seed, Instant::now())
    }

    /// Super-seeding: the next pieces to show this peer with `have`.
    pub(crate) fn reveal(&self, key: PeerKey, has: &Bitfield) -> Vec<u32> {
        let mut s = self.state.lock();
        let SwarmState { superseed, peers, picker, .. } = &mut *s;
        let Some(p) = peers.get_mut(&key) else { return Vec::new() };
        if p.unchoked {
            return superseed.reveal(has, &mut p.shown, |piece| picker.availability(piece));
        }
        // A peer we choke is shown a piece only when it wants nothing of
        // ours, so it can become interested and win a slot.
        if p.shown.is_empty() && !p.interested {
            return superseed.reveal_common(has, &mut p.shown, |piece| picker.availability(piece)).into_iter().collect();
        }
        Vec::new()
    }

    /// Whether the peer still has anything we lack.
    pub(crate) fn wants_from(&self, has: &Bitfield) -> bool {
        self.state.lock().picker.wants_any(has)
    }

    /// The peer's interest in us changed; unchoke it at once if a slot is free.
    pub(crate) fn peer_interest(&self, key: PeerKey, interested: bool) {
        let mut s = self.state.lock();
        if let Some(p) = s.peers.get_mut(&key) {
            p.interested = interested;
        }
        s.rechoke(Instant::now(), self.config.super_seed);
    }

    /// The peer stopped (or resumed) sending what we request.
    pub(crate) fn peer_snubbed(&self, key: PeerKey, snubbed: bool) {
        if let Some(p) = self.state.lock().peers.get_mut(&key) {
            p.snubbed = snubbed;
        }
    }

    /// Both sides agreed on coded cooperation.
    pub(crate) fn peer_coded(&self, key: PeerKey) {
        if let Some(p) = self.state.lock().peers.get_mut(&key) {
            p.coded = true;
        }
    }

    /// The peer choked or unchoked us.
    pub(crate) fn peer_choking(&self, key: PeerKey, choking: bool) {
        if let Some(p) = self.state.lock().peers.get_mut(&key) {
            p.chokes_us = choking;
        }
    }

    /// What the swarm offers `pieces` now (the opening of a seek): their
    /// missing bytes and holders, and the peers unchoking us with their
    /// rates, each counted at least at `prior` bytes per second.
    pub fn offer(&self, pieces: &[u32], prior: f64) -> SwarmOffer {
        let s = self.state.lock();
        let unchoking: Vec<f64> = s.peers.values().filter(|p| !p.chokes_us).map(|p| p.down_rate.max(prior)).collect();
        SwarmOffer {
            pieces: pieces.iter().map(|&i| (i, s.picker.progress(i).remaining, s.picker.availability(i))).collect(),
            unchoking: unchoking.len(),
            rate: unchoking.iter().sum(),
        }
    }

    /// This peer's share of what we download now (1 while nothing comes):
    /// whether a limit on its connection holds back the whole download.
    pub fn download_share(&self, key: PeerKey) -> f64 {
        let s = self.state.lock();
        let total: f64 = s.peers.values().map(|p| p.down_rate).sum();
        match s.peers.get(&key) {
            Some(p) if total > 0.0 => p.down_rate / total,
            _ => 1.0,
        }
    }

    /// Whether peers are connected and every one of them chokes us.
    pub fn choked_by_all(&self) -> bool {
        let s = self.state.lock();
        !s.peers.is_empty() && s.peers.values().all(|p| p.chokes_us)
    }
}
