//! Streaming a torrent: the engine side of `ccfd-vod`.
//!
//! `Stream::start` starts a torrent through the client with a
//! `decide::stream_plan::StreamPlan` (the playback clock and deadlines the
//! picker follows) and the VoD server fallback task (`fallback`); the
//! `--serve` endpoint (`watch_server`) reads the file while it arrives and
//! turns a player's jump into a seek.

mod fallback;
pub mod watch_server;

use std::sync::Arc;

use ccfd_vod::plan::Policy;
use ccfd_vod::{Ledger, Playback, Report};
use parking_lot::Mutex;

use crate::decide::stream_plan::{PickMode, StreamPlan};
use crate::storage::StorageError;
use crate::swarm::{TorrentConfig, TorrentError};
use crate::torrent::Torrent;
use crate::webseed::{WebSeed, WebSeedError};

/// Why a stream could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("streaming needs a single-file torrent; {name} has {files} files")]
    MultiFile { name: String, files: usize },
    #[error("the playback rate must be positive")]
    Rate,
    #[error("{0} is not a file name")]
    Output(std::path::PathBuf),
    #[error(transparent)]
    Server(#[from] WebSeedError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Stopped(Arc<TorrentError>),
    #[error("stream task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How to stream one torrent.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Playback rate, bytes per second.
    pub rate: f64,
    pub delay: f64,
    pub prefetch: f64,
    /// The VoD server: the torrent's first url-list entry when `None`.
    pub server: Option<String>,
    /// Where the movie is written.
    pub output: std::path::PathBuf,
    pub policy: Policy,
    pub mode: PickMode,
    pub config: TorrentConfig,
}

/// The parts of a stream that displays and the `--serve` endpoint share:
/// cheap to clone, and it can seek.
#[derive(Clone)]
pub struct StreamHandle {
    pub torrent: Arc<Torrent>,
    pub plan: Arc<StreamPlan>,
    pub ledger: Arc<Mutex<Ledger>>,
}

impl StreamHandle {
    /// Seconds since the stream started (the clock deadlines are on).
    pub fn now(&self) -> f64 {
        self.torrent.started.elapsed().as_secs_f64()
    }

    /// The viewer jumped to byte `byte`: playback restarts there now, the
    /// picker and the fallback follow the new deadlines, and pieces already
    /// present keep their record.
    pub fn seek(&self, byte: u64) {
        let schedule = self.plan.seek(byte, self.now());
        self.ledger.lock().set_deadlines(schedule.deadlines.clone());
        tracing::info!(byte, "seek: deadlines re-planned");
    }

    /// The ledger's figures now.
    pub fn report(&self) -> Report {
        self.ledger.lock().report(self.now())
    }
}

/// A stream in progress; derefs to its [`StreamHandle`].
pub struct Stream {
    handle: StreamHandle,
    task: tokio::task::JoinHandle<Result<Report, Arc<TorrentError>>>,
}

impl std::ops::Deref for Stream {
    type Target = StreamHandle;
    fn deref(&self) -> &StreamHandle {
        &self.handle
    }
}

impl Stream {
    /// Starts streaming a single-file torrent into `opts.output` on `client`.
    pub async fn start(
        client: &crate::client::Client,
        meta: &ccfd_proto::metainfo::Metainfo,
        opts: &StreamOptions,
        peers: Vec<std::net::SocketAddr>,
    ) -> Result<Stream, StreamError> {
        if meta.files.len() != 1 {
            return Err(StreamError::MultiFile { name: meta.name.clone(), files: meta.files.len() });
        }
        if !(opts.rate > 0.0 && opts.rate.is_finite()) {
            return Err(StreamError::Rate);
        }
        let file_name = opts.output.file_name().ok_or_else(|| StreamError::Output(opts.output.clone()))?;
        let root = match opts.output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        // The same torrent (same info-hash), written under the name the user chose.
        let mut meta = meta.clone();
        meta.files[0].path = std::path::PathBuf::from(file_name);
        let server_url = opts.server.clone().or_else(|| meta.web_seeds.first().cloned());
        let server = match &server_url {
            Some(url) => Some(WebSeed::new(url, Some(client.net.bind))?),
            None => None,
        };
        let torrent = client.add_torrent(Arc::new(meta), &root, crate::storage::OpenMode::Create, opts.config.clone(), peers).await?;
        let playback = Playback::new(opts.rate, opts.delay, opts.prefetch, torrent.meta.total_length);
        let plan = Arc::new(StreamPlan::new(playback.clone(), opts.policy.clone(), opts.mode, torrent.meta.piece_length));
        let lengths = (0..torrent.meta.piece_count()).map(|i| u64::from(torrent.meta.piece_len(i))).collect();
        let opening = playback.required_bytes(playback.delay).max(1);
        let ledger = Arc::new(Mutex::new(Ledger::new(plan.schedule().deadlines.clone(), lengths, opening)));
        torrent.set_stream_plan(plan.clone());
        let task = tokio::spawn(fallback::run(torrent.swarm().clone(), plan.clone(), server, ledger.clone()));
        Ok(Stream { handle: StreamHandle { torrent, plan, ledger }, task })
    }

    /// A handle for displays and the `--serve` endpoint.
    pub fn handle(&self) -> StreamHandle {
        self.handle.clone()
    }

    /// Waits until every piece is verified.
    pub async fn finish(self) -> Result<Report, StreamError> {
        self.task.await?.map_err(StreamError::Stopped)
    }
}
