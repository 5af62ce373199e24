//! The blocking library face, shaped like the course projects' `PClient`:
//! share a file, fetch one by its info-hash, stop sharing, leave.
//!
//! Each `Peer` owns a small tokio runtime; every call blocks the calling
//! thread until done, so plain synchronous code (and tests) can drive a
//! swarm. Methods take `&self`: `cancel` may be called from another thread
//! while `download` waits.
//!
//! ```no_run
//! use ccfd_bt::api::Peer;
//! # fn main() -> Result<(), ccfd_bt::api::ApiError> {
//! let tracker = "http://127.0.0.1:6969/announce";
//! let a = Peer::new(tracker, Some(100_000), Some(100_000))?; // bytes per second
//! let id = a.register(std::path::Path::new("movie.mp4"))?;
//! let b = Peer::new(tracker, Some(100_000), Some(100_000))?;
//! let bytes = b.download(&id)?; // metadata by BEP 9, then the data
//! assert_eq!(bytes, std::fs::read("movie.mp4").unwrap());
//! a.close();
//! b.close();
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use crate::client::{Client, ClientConfig, ClientError};
use crate::discovery::metadata::{self, MetadataError};
use crate::storage::{OpenMode, StorageError};
use crate::swarm::{Snapshot, TorrentConfig, TorrentError};
use crate::torrent::Torrent;
use ccfd_proto::magnet::Magnet;
use ccfd_proto::metainfo::{self, CreateOptions, InfoHash, Metainfo, MetainfoError};

/// Why a library call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Metainfo(#[from] MetainfoError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} is incomplete on disk: only whole, verified files can be registered")]
    Incomplete(PathBuf),
    #[error("torrent {0} is not known to this peer")]
    Unknown(InfoHash),
    #[error("download of {0} was cancelled")]
    Cancelled(InfoHash),
    #[error("download of {0} did not finish within {1:?}")]
    TimedOut(InfoHash, Duration),
    #[error("torrent {0} stopped: {1}")]
    Failed(InfoHash, Arc<TorrentError>),
    #[error("reading {0} back failed: {1}")]
    Read(InfoHash, tokio::task::JoinError),
    #[error("this peer is closed")]
    Closed,
}

/// Settings beyond the tracker and the two rates.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Address to listen on and dial from (tests give each peer its own 127.0.0.x).
    pub bind: IpAddr,
    /// Listen port; 0 picks a free one.
    pub port: u16,
    /// Where downloads are stored; a fresh temporary folder when `None`.
    pub data_dir: Option<PathBuf>,
    pub torrent: TorrentConfig,
    /// Piece length for `register`; by file size when `None`.
    pub piece_length: Option<u64>,
    /// The longest `download` waits for the whole file (metadata included).
    pub download_timeout: Duration,
    /// Offer coded cooperation (ccfd) to peers.
    pub coded: bool,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            bind: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: 0,
            data_dir: None,
            // A registered file usually starts with one copy in the swarm:
            // the default seed reveals it piece by piece while it is the
            // only copy, so each piece leaves us about once.
            torrent: TorrentConfig::default(),
            piece_length: None,
            download_timeout: Duration::from_secs(3600),
            coded: true,
        }
    }
}

/// One member of a swarm, driven by blocking calls.
pub struct Peer {
    runtime: tokio::runtime::Runtime,
    client: Client,
    tracker: String,
    options: PeerOptions,
    data_dir: PathBuf,
    /// Keeps a temporary data folder alive as long as the peer.
    _temp: Option<tempfile::TempDir>,
    torrents: Mutex<HashMap<InfoHash, Arc<Torrent>>>,
    closed: Mutex<bool>,
}

impl Peer {
    /// Joins the swarm of `tracker` (an announce URL) with rate caps in bytes
    /// per second (`None`: unlimited), listening on a free port.
    pub fn new(tracker: &str, upload_rate: Option<u64>, download_rate: Option<u64>) -> Result<Peer, ApiError> {
        Peer::with_options(tracker, upload_rate, download_rate, PeerOptions::default())
    }

    pub fn with_options(
        tracker: &str,
        upload_rate: Option<u64>,
        download_rate: Option<u64>,
        options: PeerOptions,
    ) -> Result<Peer, ApiError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(8)
            .enable_all()
            .thread_name("ccfd-peer")
            .build()
            .map_err(ApiError::Runtime)?;
        let config = ClientConfig {
            bind: options.bind,
            port: options.port,
            upload_rate,
            download_rate,
            coded: options.coded,
            // The library face runs worlds on loopback, where a path is
            // never long or lossy: coded whenever both sides offer it.
            coded_min_rtt: std::time::Duration::ZERO,
            ..ClientConfig::default()
        };
        let client = runtime.block_on(Client::start(config))?;
        let (data_dir, temp) = match &options.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|source| ApiError::Io { path: d.clone(), source })?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("ccfd-peer-")
                    .tempdir()
                    .map_err(|source| ApiError::Io { path: std::env::temp_dir(), source })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        Ok(Peer {
            runtime,
            client,
            tracker: tracker.to_string(),
            options,
            data_dir,
            _temp: temp,
            torrents: Mutex::new(HashMap::new()),
            closed: Mutex::new(false),
        })
    }

    /// The address other peers reach us on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.client.listen_addr()
    }

    /// Shares the file (or folder) at `path`: makes its torrent, checks the
    /// data, announces to the tracker and seeds it. Returns its info-hash.
    pub fn register(&self, path: &Path) -> Result<InfoHash, ApiError> {
        self.check_open()?;
        let io = |source| ApiError::Io { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(io)?.len();
        let opts = CreateOptions {
            piece_length: self.options.piece_length.unwrap_or_else(|| metainfo::default_piece_length(size)),
            trackers: vec![self.tracker.clone()],
            web_seeds: Vec::new(),
        };
        let meta = Arc::new(Metainfo::from_bytes(&metainfo::create(path, &opts)?)?);
        let root = path.parent().unwrap_or(Path::new("."));
        let torrent = self.start_torrent(meta.clone(), root, OpenMode::Existing)?;
        if !torrent.is_complete() {
            self.runtime.block_on(torrent.stop());
            return Err(ApiError::Incomplete(path.to_path_buf()));
        }
        self.torrents.lock().insert(meta.info_hash, torrent);
        Ok(meta.info_hash)
    }

    /// Fetches the torrent `id` from the swarm (its metadata first, by BEP 9)
    /// and returns its content; afterwards the peer keeps seeding it.
    pub fn download(&self, id: &InfoHash) -> Result<Vec<u8>, ApiError> {
        self.check_open()?;
        let deadline = std::time::Instant::now() + self.options.download_timeout;
        let existing = self.torrents.lock().get(id).cloned();
        let torrent = match existing {
            Some(s) => s,
            None => {
                let magnet =
                    Magnet { info_hash: *id, name: None, trackers: vec![self.tracker.clone()], peers: Vec::new(), select_only: None };
                let limit = self.options.download_timeout;
                let shutdown = self.client.net.shutdown.clone();
                let meta = self.runtime.block_on(async {
                    tokio::select! {
                        m = metadata::fetch(self.client.net.clone(), self.client.dht(), &magnet, &[], limit) => Ok(m?),
                        _ = shutdown.cancelled() => Err(ApiError::Closed),
                    }
                })?;
                let torrent = self.start_torrent(Arc::new(meta), &self.data_dir, OpenMode::Create)?;
                self.torrents.lock().insert(*id, torrent.clone());
                torrent
            }
        };
        self.wait_complete(id, &torrent, deadline.saturating_duration_since(std::time::Instant::now()))?;
        let storage = torrent.storage().clone();
        let mut bytes = vec![0u8; torrent.meta.total_length as usize];
        self.runtime
            .block_on(async { tokio::task::spawn_blocking(move || storage.read_at(0, &mut bytes).map(|()| bytes)).await })
            .map_err(|e| ApiError::Read(*id, e))?
            .map_err(ApiError::from)
    }

    /// Stops sharing `id` (a running `download` of it fails with
    /// `Cancelled`) and tells the tracker we left its swarm.
    pub fn cancel(&self, id: &InfoHash) -> Result<(), ApiError> {
        self.check_open()?;
        let torrent = self.torrents.lock().remove(id).ok_or(ApiError::Unknown(*id))?;
        self.runtime.block_on(torrent.stop());
        Ok(())
    }

    /// Leaves every swarm: tells the trackers, closes all connections and the
    /// listener. Nothing is sent or received afterwards; later calls fail
    /// with `Closed`.
    pub fn close(&self) {
        {
            let mut closed = self.closed.lock();
            if *closed {
                return;
            }
            *closed = true;
        }
        let torrents: Vec<Arc<Torrent>> = self.torrents.lock().drain().map(|(_, t)| t).collect();
        self.runtime.block_on(async {
            futures::future::join_all(torrents.iter().map(|t| t.stop())).await;
        });
        self.client.shutdown();
    }

    /// Changes the rate caps (bytes per second, `None`: unlimited) while running.
    pub fn set_rates(&self, upload_rate: Option<u64>, download_rate: Option<u64>) {
        self.client.net.upload.set_rate(upload_rate);
        self.client.net.download.set_rate(download_rate);
    }

    /// The state of torrent `id`: progress, byte counts, peers.
    pub fn stats(&self, id: &InfoHash) -> Option<Snapshot> {
        self.torrents.lock().get(id).map(|t| t.snapshot())
    }

    fn check_open(&self) -> Result<(), ApiError> {
        if *self.closed.lock() {
            return Err(ApiError::Closed);
        }
        Ok(())
    }

    fn start_torrent(&self, meta: Arc<Metainfo>, root: &Path, mode: OpenMode) -> Result<Arc<Torrent>, ApiError> {
        let config = self.options.torrent.clone();
        Ok(self.runtime.block_on(self.client.add_torrent(meta, root, mode, config, Vec::new()))?)
    }

    fn wait_complete(&self, id: &InfoHash, torrent: &Torrent, limit: Duration) -> Result<(), ApiError> {
        self.runtime.block_on(async {
            let mut complete = torrent.subscribe_complete();
            let wait = async {
                while !*complete.borrow_and_update() {
                    tokio::select! {
                        changed = complete.changed() => if changed.is_err() { break },
                        _ = torrent.shutdown.cancelled() => break,
                    }
                }
            };
            if tokio::time::timeout(limit, wait).await.is_err() {
                return Err(ApiError::TimedOut(*id, self.options.download_timeout));
            }
            if torrent.is_complete() {
                Ok(())
            } else if let Some(error) = torrent.fatal_error() {
                Err(ApiError::Failed(*id, error))
            } else if *self.closed.lock() {
                Err(ApiError::Closed)
            } else {
                Err(ApiError::Cancelled(*id))
            }
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.close();
    }
}
