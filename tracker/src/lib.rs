//! ccfd-tracker: BitTorrent trackers, both sides.
//!
//! The client announces over HTTP (BEP 3, BEP 23 compact peers, BEP 7
//! peers6) and UDP (BEP 15); its parsers are pure
//! functions of the reply bytes (`http::parse_announce`, `udp::parse_*`),
//! the async functions only move bytes. The built-in tracker keeps its
//! swarms in `registry` (pure, time as a value) behind the HTTP and UDP
//! front ends of `server`; it stores addresses and counts, never content.

pub mod http;
pub mod registry;
pub mod server;
pub mod udp;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ccfd_proto::metainfo::InfoHash;

/// Why an announce failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("tracker refused: {0}")]
    Failure(String),
    #[error("malformed tracker reply: {0}")]
    Malformed(String),
    #[error("tracker did not answer in time")]
    Timeout,
    #[error("tracker unreachable: {0}")]
    Unreachable(String),
    #[error("unsupported tracker url: {0}")]
    Unsupported(String),
    #[error("no tracker in the torrent")]
    NoTrackers,
}

/// The `event` of an announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    None,
    Started,
    Completed,
    Stopped,
}

/// What we tell a tracker.
#[derive(Debug, Clone)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    pub numwant: u32,
    /// Random per-client key, so a tracker knows us across IP changes.
    pub key: u32,
    /// The tracker id a previous reply gave us.
    pub tracker_id: Option<String>,
    /// Our address as the router maps it (port mapping): sent to HTTP
    /// trackers as BEP 7's `ipv4=`/`ipv6=`, so a tracker we reach over
    /// the other family still learns it.
    pub external_ip: Option<std::net::IpAddr>,
}

/// What a tracker told us.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnnounceResponse {
    pub peers: Vec<SocketAddr>,
    pub interval: Duration,
    pub min_interval: Option<Duration>,
    pub tracker_id: Option<String>,
    pub warning: Option<String>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
}

/// Swarm counts from a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrapeStats {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

/// Timing for UDP retransmission: BEP 15's 15 s * 2^n, n from 0 to 8.
/// Each tracker announces on its own loop, so a slow or dead one holds
/// nothing else back while it waits.
#[derive(Debug, Clone, Copy)]
pub struct UdpTiming {
    pub first_timeout: Duration,
    pub attempts: u32,
}

impl Default for UdpTiming {
    fn default() -> Self {
        UdpTiming { first_timeout: Duration::from_secs(15), attempts: 9 }
    }
}

/// Talks to trackers on behalf of one client.
#[derive(Debug, Clone)]
pub struct TrackerClient {
    http: reqwest::Client,
    bind: Option<IpAddr>,
    udp_timing: UdpTiming,
}

impl TrackerClient {
    /// A client whose sockets are bound to `bind`, if given.
    pub fn new(bind: Option<IpAddr>, udp_timing: UdpTiming) -> Result<TrackerClient, TrackerError> {
        install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .local_address(bind)
            .no_proxy()
            .user_agent(concat!("ccfd-bt/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TrackerError::Unreachable(e.to_string()))?;
        Ok(TrackerClient { http, bind, udp_timing })
    }

    /// Announces to one tracker URL.
    pub async fn announce(&self, url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, TrackerError> {
        if url.starts_with("http://") || url.starts_with("https://") {
            http::announce(&self.http, url, req).await
        } else if let Some(rest) = url.strip_prefix("udp://") {
            udp::announce(udp_host(rest), self.bind, self.udp_timing, req).await
        } else {
            Err(TrackerError::Unsupported(url.to_string()))
        }
    }

    /// Scrapes one tracker URL for one torrent.
    pub async fn scrape(&self, url: &str, info_hash: InfoHash) -> Result<ScrapeStats, TrackerError> {
        if url.starts_with("http://") || url.starts_with("https://") {
            http::scrape(&self.http, url, info_hash).await
        } else if let Some(rest) = url.strip_prefix("udp://") {
            udp::scrape(udp_host(rest), self.bind, self.udp_timing, info_hash).await
        } else {
            Err(TrackerError::Unsupported(url.to_string()))
        }
    }
}

/// Makes ring rustls's process-wide crypto provider (once; later calls do
/// nothing). HTTPS trackers and web seeds are checked against the
/// platform's roots, and `SSL_CERT_FILE` names an extra bundle, as for
/// curl and OpenSSL.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `host:port` of a `udp://host:port/announce` URL.
fn udp_host(rest: &str) -> &str {
    rest.split('/').next().unwrap_or(rest)
}

/// Decodes BEP 23 compact IPv4 peers (6 bytes each); a trailing partial entry is ignored.
pub fn compact_peers_v4(bytes: &[u8]) -> Vec<SocketAddr> {
    bytes
        .chunks_exact(6)
        .map(|c| SocketAddr::from(([c[0], c[1], c[2], c[3]], u16::from_be_bytes([c[4], c[5]]))))
        .filter(|a| a.port() != 0)
        .collect()
}

/// Decodes BEP 7 compact IPv6 peers (18 bytes each).
pub fn compact_peers_v6(bytes: &[u8]) -> Vec<SocketAddr> {
    bytes
        .chunks_exact(18)
        .map(|c| {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&c[..16]);
            SocketAddr::from((ip, u16::from_be_bytes([c[16], c[17]])))
        })
        .filter(|a| a.port() != 0)
        .collect()
}
