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

/// TCP retransmitting more than this share of its segments is losing
/// enough that coded packets (which pay for loss with a few extra packets,
/// not with a window cut) are worth their cost.
const LOSSY: f64 = 0.001;
/// Fewer retransmissions than this say nothing yet (a tail-loss probe on
/// loopback is one).
const LOSSY_AT_LEAST: u32 = 2;

/// Whether to ask a coded peer for blocks as coded packets rather than
/// over the TCP connection: on a path whose round trip is at least
/// `min_rtt`, or that loses packets. A path the kernel says nothing of
/// (uTP) is coded as before. `min_rtt` zero: always.
pub fn coding_pays(path: Option<PathSample>, min_rtt: Duration) -> bool {
    match path {
        None => true,
        Some(_) if min_rtt.is_zero() => true,
        Some(p) => {
            let lossy = p.retransmitted >= LOSSY_AT_LEAST && f64::from(p.retransmitted) > LOSSY * f64::from(p.segs_out.max(1));
            p.rtt >= min_rtt || lossy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(rtt_us: u64, segs_out: u32, retransmitted: u32) -> Option<PathSample> {
        Some(PathSample { rtt: Duration::from_micros(rtt_us), segs_out, retransmitted })
    }

    #[test]
    fn coded_only_where_tcp_can_lose() {
        let min = DEFAULT_MIN_RTT;
        // Loopback or a LAN without loss: plain.
        assert!(!coding_pays(path(40, 100_000, 0), min));
        assert!(!coding_pays(path(40, 100_000, 50), min));
        assert!(!coding_pays(path(40, 19, 1), min), "one retransmission says nothing yet");
        // Loss (0.5% retransmitted) even at a short round trip, or a long round trip: coded.
        assert!(coding_pays(path(40, 100_000, 500), min));
        assert!(coding_pays(path(30_000, 10, 0), min));
        // uTP (no TCP_INFO), or coded forced: coded.
        assert!(coding_pays(None, min));
        assert!(coding_pays(path(40, 100_000, 0), Duration::ZERO));
    }
}
