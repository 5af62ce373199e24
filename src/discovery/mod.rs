//! Where a torrent's peers come from: trackers (`announce`), the DHT
//! (`dht`), and the peers of a magnet link's metadata (`metadata`); PEX
//! arrives on peer connections (`peer`) and lands in the same place. A source knows no swarm: it reads the torrent's state and hands
//! over addresses through [`SwarmLink`], which the swarm implements.

pub mod announce;
pub mod dht;
pub mod metadata;

use std::net::SocketAddr;

use ccfd_proto::metainfo::InfoHash;
use tokio::sync::watch;

/// Where a candidate address came from (counted per source in reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerSource {
    Tracker,
    Dht,
    /// BEP 11 peer exchange.
    Pex,
    /// Given by the user (`--peer`, a magnet's `x.pe`).
    Manual,
}

impl PeerSource {
    /// The name in reports (`--json`'s `peer_sources`).
    pub fn name(self) -> &'static str {
        match self {
            PeerSource::Tracker => "tracker",
            PeerSource::Dht => "dht",
            PeerSource::Pex => "pex",
            PeerSource::Manual => "manual",
        }
    }
}

/// What a source needs to know of the torrent it finds peers for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwarmStatus {
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub complete: bool,
    pub peers: usize,
}

/// A torrent as its peer sources see it.
pub trait SwarmLink: Send + Sync {
    fn info_hash(&self) -> InfoHash;
    fn status(&self) -> SwarmStatus;
    /// Fires when the torrent completes.
    fn subscribe_complete(&self) -> watch::Receiver<bool>;
    /// New addresses to try.
    fn found(&self, addrs: Vec<SocketAddr>, source: PeerSource);
}
