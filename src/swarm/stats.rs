//! Counters and point-in-time views of a torrent, for trackers, progress
//! lines, `--json` and the dashboard.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::Swarm;
use ccfd_proto::bitfield::Bitfield;

/// Byte counters for trackers and reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub downloaded: u64,
    pub uploaded: u64,
    pub left: u64,
}

/// A point-in-time view of a torrent, for progress lines and `--json`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub pieces_total: u32,
    pub pieces_verified: u32,
    pub verified_bytes: u64,
    pub total_length: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub wasted: u64,
    pub piece_failures: u32,
    pub peers: usize,
    pub bytes_from: BTreeMap<SocketAddr, u64>,
    /// Bytes from the VoD server (web seed).
    pub server_bytes: u64,
    /// New candidate addresses per peer source (`tracker`, `dht`, `pex`, `manual`).
    pub peer_sources: BTreeMap<&'static str, u64>,
    /// Bytes decoded from coded packets (ccfd), part of `downloaded`.
    pub coded_bytes: u64,
    pub banned: Vec<IpAddr>,
    /// Connected peers, by address.
    pub peer_list: Vec<PeerSnapshot>,
    pub complete: bool,
    /// Seconds from torrent start to the last verified piece.
    pub seconds_to_complete: Option<f64>,
}

/// One connected peer as the torrent sees it.
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    pub addr: SocketAddr,
    /// Client name from the peer id (`ccfd-bt 0100`, `libtorrent 2000`).
    pub client: String,
    /// What carries the connection.
    pub transport: crate::net::transport::Transport,
    /// Whether (and how) it is encrypted.
    pub encryption: crate::net::transport::Obfuscation,
    /// Smoothed rates, bytes per second.
    pub down_rate: f64,
    pub up_rate: f64,
    /// We upload to it.
    pub unchoked: bool,
    /// It uploads to us (does not choke us).
    pub unchokes_us: bool,
    /// It holds our optimistic unchoke slot.
    pub optimistic: bool,
    /// Coded cooperation is on with it.
    pub coded: bool,
    /// It wants data from us.
    pub interested: bool,
    pub snubbed: bool,
    pub is_seed: bool,
}

impl Swarm {
    pub fn totals(&self) -> Totals {
        let s = self.state.lock();
        Totals { downloaded: s.downloaded, uploaded: self.uploaded(), left: self.meta.total_length - self.verified_bytes(s.picker.have()) }
    }

    pub(super) fn verified_bytes(&self, have: &Bitfield) -> u64 {
        have.ones().map(|i| u64::from(self.meta.piece_len(i))).sum()
    }

    pub fn snapshot(&self) -> Snapshot {
        let s = self.state.lock();
        let have = s.picker.have();
        Snapshot {
            pieces_total: have.len(),
            pieces_verified: have.count(),
            verified_bytes: self.verified_bytes(have),
            total_length: self.meta.total_length,
            downloaded: s.downloaded,
            uploaded: self.uploaded(),
            wasted: s.wasted,
            piece_failures: s.piece_failures,
            peers: s.peers.len(),
            bytes_from: s.bytes_from.clone(),
            server_bytes: s.server_bytes,
            peer_sources: s.sources.iter().map(|(source, n)| (source.name(), *n)).collect(),
            coded_bytes: s.coded_bytes,
            banned: s.banned.iter().copied().collect(),
            peer_list: {
                let optimistic = s.choker.optimistic();
                let mut list: Vec<PeerSnapshot> = s
                    .peers
                    .iter()
                    .map(|(&key, p)| PeerSnapshot {
                        addr: p.addr,
                        client: ccfd_proto::wire::client_name(&p.peer_id),
                        transport: p.transport,
                        encryption: p.obfuscation,
                        down_rate: p.down_rate,
                        up_rate: p.up_rate,
                        unchoked: p.unchoked,
                        unchokes_us: !p.chokes_us,
                        optimistic: optimistic == Some(key),
                        coded: p.coded,
                        interested: p.interested,
                        snubbed: p.snubbed,
                        is_seed: p.is_seed,
                    })
                    .collect();
                list.sort_by_key(|p| p.addr);
                list
            },
            complete: have.is_full(),
            seconds_to_complete: s.completed_at.map(|t| t.duration_since(self.started).as_secs_f64()),
        }
    }

    /// Bytes that arrived twice or unasked (endgame and duplicate requests).
    pub fn snapshot_wasted(&self) -> u64 {
        self.state.lock().wasted
    }
}
