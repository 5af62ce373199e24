//! Coded cooperation (ccfd, docs/ccfd-extension.md): blocks as network-coded
//! packets over UDP between peers that both offer the extension in their
//! BEP 10 handshake; control stays on the peer connection.
//!
//! `proto` is the wire format (pure); `router` takes the client's coded
//! datagrams off the shared UDP socket and routes them by token; `receive`
//! is one torrent's coded state (decoders, the split of verified pieces,
//! evidence against polluters); `link` is one connection's receive side,
//! and `sender` its sending task, paced by `pacer` over the wants in `queue`.

pub(crate) mod link;
pub(crate) mod pacer;
pub mod proto;
mod queue;
pub(crate) mod receive;
pub(crate) mod router;
mod sender;

pub use receive::CodedTorrent;
pub use router::{CodedRouter, UdpShim};

use std::time::Duration;

use crate::net::transport::PathSample;

/// Below this TCP round trip a path stays plain by default: TCP recovers
/// a loss within microseconds there, and coded datagrams only cost (a
/// ccfd-bt seed to a ccfd-bt leecher over loopback: 87 MB/s coded, 565
/// MB/s plain, docs/BENCHMARKS.md).
pub const DEFAULT_MIN_RTT: Duration = Duration::from_millis(5);

/// Coded packets pay only from a peer that brings at least this share of
/// what we download: in a swarm each connection is slow and the uploads,
/// not one connection's loss limit, bound the download (six leechers on
/// 2 Mbit/s uplinks, 40 ms from a core: 1.12 T* plain, 1.35-1.42 T*
/// coded; with 1% loss 1.15 and 1.42).
const MAIN_SOURCE_SHARE: f64 = 0.5;

/// Whether to ask a coded peer for blocks as coded packets rather than
/// over the TCP connection: on a round trip of at least `min_rtt`, from a
/// peer that brings at least `MAIN_SOURCE_SHARE` of what we download
/// (`share`). A path the kernel says nothing of (uTP) is coded as before;
/// `min_rtt` zero: always. Measured on emulated paths
/// (docs/ccfd-extension.md): one to one, coded packets keep 0.83-0.93 of
/// the link at any loss where TCP (CUBIC) falls to 0.10-0.46, and cost
/// 1-3% on clean paths; in a swarm they cost a quarter.
pub fn coding_pays(path: Option<PathSample>, share: f64, min_rtt: Duration) -> bool {
    match path {
        None => true,
        Some(_) if min_rtt.is_zero() => true,
        Some(p) => p.rtt >= min_rtt && share >= MAIN_SOURCE_SHARE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(rtt_ms: u64) -> Option<PathSample> {
        Some(PathSample { rtt: Duration::from_millis(rtt_ms) })
    }

    #[test]
    fn coded_only_from_a_main_source_over_a_long_path() {
        let min = DEFAULT_MIN_RTT;
        assert!(coding_pays(path(50), 1.0, min));
        assert!(coding_pays(path(50), 0.6, min));
        assert!(!coding_pays(path(1), 1.0, min), "TCP recovers within a short round trip");
        assert!(!coding_pays(path(50), 0.2, min), "one of five sources: the uploads bound the download");
        // uTP (no TCP_INFO), or coded forced: coded.
        assert!(coding_pays(None, 0.2, min));
        assert!(coding_pays(path(1), 0.2, Duration::ZERO));
    }
}
