//! In-process swarms: real clients and torrents in the test's runtime.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ccfd_bt::client::{Client, ClientConfig};
use ccfd_bt::storage::OpenMode;
use ccfd_bt::swarm::TorrentConfig;
use ccfd_bt::torrent::Torrent;
use ccfd_proto::metainfo::{self, CreateOptions, Metainfo};

pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    ccfd_bt::world::pseudo_random_bytes(len, seed)
}

/// Writes `data` as `dir/name`, keeping only the bytes in `keep` (the rest
/// zeroed, so those pieces fail the check and count as missing).
pub fn write_part(dir: &Path, name: &str, data: &[u8], keep: std::ops::Range<usize>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut part = vec![0u8; data.len()];
    part[keep.clone()].copy_from_slice(&data[keep]);
    std::fs::write(dir.join(name), part).unwrap();
}

/// A torrent without trackers for `data` named `name`.
pub fn torrent(dir: &Path, name: &str, data: &[u8], piece_length: u64) -> Arc<Metainfo> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join(name), data).unwrap();
    let opts = CreateOptions { piece_length, trackers: Vec::new(), web_seeds: Vec::new() };
    Arc::new(Metainfo::from_bytes(&metainfo::create(&src.join(name), &opts).unwrap()).unwrap())
}

/// `CCFD_TEST_LOG=debug` shows the engine's log on stderr.
pub fn init_log() {
    if let Ok(level) = std::env::var("CCFD_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(format!("ccfd_bt={level}")).with_test_writer().try_init();
    }
}

pub struct Node {
    pub client: Client,
    pub torrent: Arc<Torrent>,
}

pub async fn node(ip: IpAddr, up: Option<u64>, meta: &Arc<Metainfo>, dir: &Path, config: TorrentConfig, peers: Vec<SocketAddr>) -> Node {
    node_with(ClientConfig { bind: ip, port: 0, upload_rate: up, ..ClientConfig::default() }, meta, dir, config, peers).await
}

/// A node with its own client settings (coded shim, polluter, caps).
pub async fn node_with(client: ClientConfig, meta: &Arc<Metainfo>, dir: &Path, config: TorrentConfig, peers: Vec<SocketAddr>) -> Node {
    let client = Client::start(client).await.unwrap();
    let torrent = client.add_torrent(meta.clone(), dir, OpenMode::Existing, config, peers).await.unwrap();
    Node { client, torrent }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.client.shutdown();
    }
}

/// Polls `f` every 100 ms until it is true; false after `limit`.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
