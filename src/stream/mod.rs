//! Streaming a torrent: the engine side of `ccfd-vod`.
//!
//! `Stream::start` starts a torrent through the client with a
//! `decide::stream_plan::StreamPlan` (the playback clock and deadlines the
//! picker follows) and the VoD server fallback task (`fallback`); the
//! `--serve` endpoint (`watch_server`) reads the file while it arrives and
//! turns a player's jump into a seek. The movie is one file of the torrent:
//! only it (and the extras, its subtitles, due at the opening) is fetched.

mod fallback;
pub mod watch_server;

use std::sync::Arc;

use ccfd_vod::plan::Policy;
use ccfd_vod::{Ledger, Playback, Report};
use parking_lot::Mutex;

use crate::decide::file_select;
use crate::decide::stream_plan::{server_at_once, FileSpan, PickMode, StreamPlan};
use crate::storage::StorageError;
use crate::swarm::{TorrentConfig, TorrentError};
use crate::torrent::Torrent;
use crate::webseed::{WebSeed, WebSeedError};

/// Why a stream could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("file {file} is not in the torrent ({files} files)")]
    NoFile { file: usize, files: usize },
    #[error("file {0} is empty: nothing to play")]
    EmptyFile(usize),
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
    /// Where the movie is written: the file itself for a single-file
    /// torrent (or an existing folder to put it in), the download folder
    /// for one file of many.
    pub output: std::path::PathBuf,
    /// The file to play (an index into the torrent's files).
    pub file: usize,
    /// Other files to fetch before the opening (subtitles).
    pub extras: Vec<usize>,
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
    /// The played file's index in the torrent.
    pub file: usize,
    /// Where the played file and the extras are on disk.
    pub path: std::path::PathBuf,
    /// The extras (subtitles): indexes in the torrent, and paths on disk.
    pub extras: Vec<usize>,
    pub extra_paths: Vec<std::path::PathBuf>,
}

impl StreamHandle {
    /// Seconds since the stream started (the clock deadlines are on).
    pub fn now(&self) -> f64 {
        self.torrent.started.elapsed().as_secs_f64()
    }

    /// The viewer jumped to byte `byte`: playback restarts there now, the
    /// picker and the fallback follow the new deadlines (the first bytes
    /// are the most urgent of the client), pieces already present keep
    /// their record, and what the swarm cannot bring within the startup
    /// delay is asked of the VoD server at once.
    pub fn seek(&self, byte: u64) {
        let now = self.now();
        let schedule = self.plan.seek(byte, now);
        self.ledger.lock().set_deadlines(schedule.deadlines.clone());
        let opening = self.plan.opening_pieces(now, schedule.playback.delay);
        let to_server = self.server_if_short(&opening);
        tracing::info!(byte, server_now = ?to_server, "seek: deadlines re-planned");
    }

    /// Hands the VoD server at once those of `pieces` (wanted within the
    /// startup delay) the swarm cannot bring in time; returns them.
    fn server_if_short(&self, pieces: &[u32]) -> Vec<u32> {
        let offer = self.torrent.swarm().offer(pieces, self.plan.policy.prior_rate);
        let to_server = server_at_once(&offer, self.plan.schedule().playback.delay);
        self.plan.to_server_now(to_server.iter().copied());
        to_server
    }

    /// A player reads file bytes `[start, end)` it needs before it plays
    /// (the index at the end of the file): those pieces become due now and
    /// playback is not re-planned around them.
    pub fn probe(&self, start: u64, end: u64) {
        let span = self.plan.span;
        let (first, last) = (span.piece_of(start), span.piece_of(end.max(start + 1) - 1));
        self.fetch_by(first..=last, self.now());
        tracing::info!(start, end, "probe read: fetching it now, playback not re-planned");
    }

    /// A player reads torrent bytes `[start, end)` of a file other than
    /// the movie (one it opened from the index): the first pieces of the
    /// read not here yet become due within the startup delay, as a seek's
    /// opening is (the swarm's first, the VoD server's if it is late).
    pub fn read_other(&self, start: u64, end: u64) {
        let piece_length = self.torrent.meta.piece_length;
        let (first, last) = ((start / piece_length) as u32, ((end.max(start + 1) - 1) / piece_length) as u32);
        let pieces: Vec<u32> = (first..=last).filter(|&p| !self.torrent.has_piece(p)).take(OTHER_FILE_AHEAD).collect();
        self.fetch_by(pieces.iter().copied(), self.now() + self.plan.schedule().playback.delay);
        self.server_if_short(&pieces);
    }

    /// Makes `pieces` (at most 64 of them) due at `due` without moving playback.
    fn fetch_by(&self, pieces: impl IntoIterator<Item = u32>, due: f64) {
        let pieces = pieces.into_iter().take(64).filter(|&p| !self.torrent.has_piece(p));
        let schedule = self.plan.fetch_soon(pieces, due, |p| self.torrent.has_piece(p));
        self.ledger.lock().set_deadlines(schedule.deadlines.clone());
    }

    /// Adds file `file` of the torrent to the download (a player opened it
    /// from the index); a file already fetched is left as it is.
    pub async fn select_file(&self, file: usize) -> Result<(), StreamError> {
        let swarm = self.torrent.swarm().clone();
        tokio::task::spawn_blocking(move || swarm.select_file(file)).await??;
        Ok(())
    }

    /// The ledger's figures now.
    pub fn report(&self) -> Report {
        self.ledger.lock().report(self.now())
    }

    /// Length of the played file in bytes.
    pub fn file_length(&self) -> u64 {
        self.plan.schedule().playback.total
    }

    /// Whether every extra file (subtitles) is verified and on disk.
    pub fn extras_ready(&self) -> bool {
        self.plan.early.iter().all(|&p| self.torrent.has_piece(p))
    }
}

/// Pieces of another file's read made due at once, ahead of where it is
/// read (the rest follows as the player reads on).
const OTHER_FILE_AHEAD: usize = 8;

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
    /// Starts streaming file `opts.file` of `meta` on `client`: a
    /// single-file torrent into the file `opts.output`, one file of many
    /// (with its extras, and nothing else) under the folder `opts.output`.
    pub async fn start(
        client: &crate::client::Client,
        meta: &ccfd_proto::metainfo::Metainfo,
        opts: &StreamOptions,
        peers: Vec<std::net::SocketAddr>,
    ) -> Result<Stream, StreamError> {
        if !(opts.rate > 0.0 && opts.rate.is_finite()) {
            return Err(StreamError::Rate);
        }
        let files = meta.files.len();
        let file = meta.files.get(opts.file).ok_or(StreamError::NoFile { file: opts.file, files })?.clone();
        if let Some(&bad) = opts.extras.iter().find(|&&i| i >= files) {
            return Err(StreamError::NoFile { file: bad, files });
        }
        if file.length == 0 {
            return Err(StreamError::EmptyFile(opts.file));
        }
        let mut meta = meta.clone();
        let mut config = opts.config.clone();
        let root = if files == 1 && opts.output.is_dir() {
            // A folder: the movie goes in it under the torrent's name.
            opts.output.clone()
        } else if files == 1 {
            // The same torrent (same info-hash), written under the name the user chose.
            let file_name = opts.output.file_name().ok_or_else(|| StreamError::Output(opts.output.clone()))?;
            meta.files[0].path = std::path::PathBuf::from(file_name);
            match opts.output.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            }
        } else {
            let mut only: Vec<usize> = opts.extras.iter().copied().chain([opts.file]).collect();
            only.sort_unstable();
            only.dedup();
            config.only_files = Some(only);
            opts.output.clone()
        };
        let path = root.join(&meta.files[opts.file].path);
        let extra_paths = opts.extras.iter().map(|&i| root.join(&meta.files[i].path)).collect();
        let server_url = opts.server.clone().or_else(|| meta.web_seeds.first().cloned());
        let server = match &server_url {
            Some(url) => Some(WebSeed::new(url, Some(client.net.bind))?),
            None => None,
        };
        let torrent = client.add_torrent(Arc::new(meta), &root, crate::storage::OpenMode::Create, config, peers).await?;
        let tmeta = &torrent.meta;
        let span = FileSpan { offset: file.offset, piece_length: tmeta.piece_length, piece_count: tmeta.piece_count() };
        let playback = Playback::new(opts.rate, opts.delay, opts.prefetch, file.length);
        let early: Vec<u32> = opts.extras.iter().flat_map(|&i| file_select::file_pieces(tmeta, i)).collect();
        let plan = Arc::new(
            StreamPlan::new(playback.clone(), opts.policy.clone(), opts.mode, span).with_early(early).serverless(server.is_none()),
        );
        // The ledger counts the movie's bytes only: a piece's share of the file.
        let (start, end) = (file.offset, file.offset + file.length);
        let lengths = (0..tmeta.piece_count())
            .map(|i| {
                let a = (u64::from(i) * tmeta.piece_length).max(start);
                let b = (u64::from(i) * tmeta.piece_length + u64::from(tmeta.piece_len(i))).min(end);
                b.saturating_sub(a)
            })
            .collect();
        let opening = playback.required_bytes(playback.delay).max(1);
        let mut ledger = Ledger::new(plan.schedule().deadlines.clone(), lengths, opening);
        if server.is_none() {
            ledger = ledger.rebuffering();
        }
        let ledger = Arc::new(Mutex::new(ledger));
        torrent.set_stream_plan(plan.clone());
        let task = tokio::spawn(fallback::run(torrent.swarm().clone(), plan.clone(), server, ledger.clone()));
        Ok(Stream { handle: StreamHandle { torrent, plan, ledger, file: opts.file, path, extras: opts.extras.clone(), extra_paths }, task })
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
