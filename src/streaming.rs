//! Streaming a torrent: the engine side of `ccfd-vod`.
//!
//! `StreamPlan` holds the playback clock and the policy; the session asks
//! `pick` for each peer's requests while a plan is set. The `run` task ticks
//! every 50 ms: it records arrivals in the ledger and, at each piece's last
//! safe moment, claims the blocks still missing and fetches exactly those
//! from the VoD server (a BEP 19 web seed); once every peer has choked us
//! for a second, pieces close to their cut-off are fetched earlier
//! (`Policy::server_moment`). Server blocks go through the same
//! verification as peer blocks.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use ccfd_vod::plan::{fallback_time, PeerView, PieceView, Policy};
use ccfd_vod::{Ledger, Playback, Report};
use rand::Rng;

use crate::picker::{PeerKey, PickPlan, Picker, PieceState, Progress};
use crate::session::Session;
use crate::webseed::WebSeed;
use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::wire::BlockRef;

/// The picker key of the VoD server's requests.
pub const SERVER_KEY: PeerKey = PeerKey::MAX;
// The planner's block budgets are in the wire's request size.
const _: () = assert!(ccfd_vod::plan::BLOCK == ccfd_proto::wire::BLOCK_SIZE as u64);

/// How often the fallback check runs.
const TICK: Duration = Duration::from_millis(50);
/// Pieces due further ahead than this are not checked for the fallback yet (seconds).
const FALLBACK_LOOKAHEAD: f64 = 30.0;
/// Attempts at one piece from the server before giving up on the stream.
const MAX_SERVER_ATTEMPTS: u32 = 3;

/// How peers' requests are chosen while streaming (the baselines exist
/// for the benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickMode {
    /// Earliest deadline first with feasibility triage (`ccfd_vod::plan`).
    Deadline,
    /// The plain picker: rarest-first, ignoring deadlines.
    RarestFirst,
    /// Pieces in file order.
    Sequential,
}

/// What the session's picker consults while streaming.
#[derive(Debug)]
pub struct StreamPlan {
    pub policy: Policy,
    pub mode: PickMode,
    piece_length: u64,
    /// The playback clock and its deadlines; a seek swaps in a new one.
    schedule: Mutex<Arc<Schedule>>,
    /// Measured server latency and rate (for the fallback moment).
    pub server: Mutex<ServerEstimate>,
    /// Pieces handed to the server: no peer requests for them.
    pub claimed: Mutex<HashSet<u32>>,
}

/// The playback clock and the deadline of each piece it implies (seconds
/// since the session started). Replaced whole on a seek, so a reader never
/// sees a clock and deadlines that disagree.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub playback: Playback,
    pub deadlines: Vec<f64>,
}

/// The VoD server's measured behaviour.
#[derive(Debug, Clone, Copy)]
pub struct ServerEstimate {
    pub latency: f64,
    pub rate: f64,
}

impl StreamPlan {
    pub fn new(playback: Playback, policy: Policy, mode: PickMode, piece_length: u64) -> StreamPlan {
        let deadlines = piece_deadlines(&playback, piece_length);
        StreamPlan {
            policy,
            mode,
            piece_length,
            schedule: Mutex::new(Arc::new(Schedule { playback, deadlines })),
            server: Mutex::new(ServerEstimate { latency: 0.1, rate: 1_000_000.0 }),
            claimed: Mutex::new(HashSet::new()),
        }
    }

    /// The clock and deadlines now.
    pub fn schedule(&self) -> Arc<Schedule> {
        self.schedule.lock().clone()
    }

    /// Restarts playback at byte `byte` at time `now` (a seek): every
    /// deadline is re-planned from there; bytes before it have none.
    pub fn seek(&self, byte: u64, now: f64) -> Arc<Schedule> {
        let mut playback = self.schedule().playback.clone();
        playback.seek(byte, now);
        let deadlines = piece_deadlines(&playback, self.piece_length);
        let schedule = Arc::new(Schedule { playback, deadlines });
        *self.schedule.lock() = schedule.clone();
        schedule
    }

    /// When the server must be asked for `remaining` bytes of a piece due at `deadline`.
    fn cutoff(&self, deadline: f64, remaining: u64) -> f64 {
        let server = *self.server.lock();
        fallback_time(deadline, remaining, server.latency, server.rate, self.policy.margin)
    }
}

/// Deadline of every piece under `playback`.
pub fn piece_deadlines(playback: &Playback, piece_length: u64) -> Vec<f64> {
    let n = playback.total.div_ceil(piece_length);
    (0..n).map(|i| playback.range_deadline(i * piece_length, ((i + 1) * piece_length).min(playback.total))).collect()
}

/// Requests for one peer while streaming: pieces due within the horizon by
/// deadline and feasibility, the rest rarest-first.
#[allow(clippy::too_many_arguments)]
pub fn pick(
    plan: &StreamPlan,
    picker: &mut Picker,
    key: PeerKey,
    has: &Bitfield,
    max: usize,
    peer: PeerView,
    now: f64,
    rng: &mut impl Rng,
) -> Vec<BlockRef> {
    let claimed = plan.claimed.lock().clone();
    let schedule = plan.schedule();
    match plan.mode {
        PickMode::Deadline => {}
        PickMode::RarestFirst => {
            let plan = PickPlan { urgent: &[], duplicate: &[], skip: &|i| claimed.contains(&i) };
            return picker.pick_planned(key, has, max, &plan, rng);
        }
        PickMode::Sequential => {
            // In file order from the play origin on, then the bytes before it.
            let first = (schedule.playback.origin() / plan.piece_length) as u32;
            let count = schedule.deadlines.len() as u32;
            let order: Vec<u32> = (first..count)
                .chain(0..first)
                .filter(|&i| !claimed.contains(&i) && matches!(picker.state(i), Some(PieceState::Missing | PieceState::Active)))
                .collect();
            let order: Vec<(u32, usize)> = order.into_iter().map(|i| (i, usize::MAX)).collect();
            let plan = PickPlan { urgent: &order, duplicate: &[], skip: &|i| claimed.contains(&i) };
            return picker.pick_planned(key, has, max, &plan, rng);
        }
    }
    let horizon = now + plan.policy.horizon;
    let mut pieces: Vec<PieceView> = schedule
        .deadlines
        .iter()
        .enumerate()
        .filter(|&(i, &d)| d <= horizon && !claimed.contains(&(i as u32)))
        .filter_map(|(i, &deadline)| {
            let index = i as u32;
            matches!(picker.state(index), Some(PieceState::Missing | PieceState::Active)).then(|| {
                let Progress { remaining, unrequested } = picker.progress(index);
                PieceView { index, deadline, remaining, unrequested }
            })
        })
        .collect();
    pieces.sort_by(|a, b| a.deadline.total_cmp(&b.deadline));
    let peer_plan = plan.policy.plan_for_peer(now, &pieces, &peer, |i| has.get(i), |p| plan.cutoff(p.deadline, p.remaining));
    let reserved = |i: u32| schedule.deadlines.get(i as usize).is_some_and(|&d| d <= horizon) || claimed.contains(&i);
    // Urgent blocks first, then one block of each long shot.
    let block = ccfd_vod::plan::BLOCK;
    let order: Vec<(u32, usize)> = peer_plan
        .urgent
        .iter()
        .map(|t| (t.piece, t.bytes.div_ceil(block) as usize))
        .chain(peer_plan.long_shots.iter().map(|&i| (i, 1)))
        .collect();
    picker.pick_planned(key, has, max, &PickPlan { urgent: &order, duplicate: &peer_plan.duplicate, skip: &reserved }, rng)
}

/// Streams until every piece is verified; returns the ledger's report.
/// `server` is the VoD server; without one, pieces the swarm misses are late.
pub async fn run(
    session: Arc<Session>,
    plan: Arc<StreamPlan>,
    server: Option<WebSeed>,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<Report, String> {
    let mut seen = Bitfield::new(session.meta.piece_count());
    let mut attempts = vec![0u32; seen.len() as usize];
    let mut wasted = 0;
    // Since when every connected peer chokes us (the opening lead's clock).
    let mut choked_since: Option<f64> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = session.shutdown.cancelled() => return Err(session.fatal_error().unwrap_or_else(|| "stopped".into())),
            _ = tick.tick() => {}
        }
        let now = session.started.elapsed().as_secs_f64();
        let have = session.have();
        let schedule = plan.schedule();
        {
            let mut l = ledger.lock();
            let now_wasted = session.snapshot_wasted();
            l.duplicate(now_wasted - wasted);
            wasted = now_wasted;
            for p in have.ones() {
                if seen.set(p) {
                    tracing::debug!(piece = p, at = now, due = ?schedule.deadlines.get(p as usize), "piece verified");
                    l.arrived(p, now);
                }
            }
        }
        if have.is_full() {
            return Ok(ledger.lock().report(now));
        }
        let Some(server) = &server else { continue };
        choked_since = session.choked_by_all().then(|| choked_since.unwrap_or(now));
        let choked_for = choked_since.map(|since| now - since);
        for piece in (0..have.len()).filter(|&p| !have.get(p)) {
            let deadline = schedule.deadlines[piece as usize];
            // No server fetch takes this long: later pieces need no look yet.
            if deadline - now > FALLBACK_LOOKAHEAD {
                continue;
            }
            let remaining = session.piece_progress(piece).remaining;
            let moment = plan.policy.server_moment(plan.cutoff(deadline, remaining), choked_for);
            if remaining == 0 || plan.claimed.lock().contains(&piece) || now < moment {
                continue;
            }
            attempts[piece as usize] += 1;
            if attempts[piece as usize] > MAX_SERVER_ATTEMPTS {
                let error = format!("the VoD server failed piece {piece} {MAX_SERVER_ATTEMPTS} times");
                session.abort(error.clone());
                return Err(error);
            }
            plan.claimed.lock().insert(piece);
            let blocks = session.claim_for_server(piece);
            tracing::info!(piece, missing = remaining, due_in = deadline - now, "fetching from the VoD server");
            tokio::spawn(fetch_piece(session.clone(), plan.clone(), server.clone(), ledger.clone(), piece, blocks));
        }
    }
}

/// Fetches the claimed blocks of one piece from the server (contiguous runs
/// in one range request each) and hands them to the session.
async fn fetch_piece(
    session: Arc<Session>,
    plan: Arc<StreamPlan>,
    server: WebSeed,
    ledger: Arc<Mutex<Ledger>>,
    piece: u32,
    blocks: Vec<BlockRef>,
) {
    let base = u64::from(piece) * session.meta.piece_length;
    for run in contiguous_runs(&blocks) {
        let (first, last) = (run[0], run[run.len() - 1]);
        let start = base + u64::from(first.offset);
        let len = u64::from(last.offset + last.length - first.offset);
        let began = std::time::Instant::now();
        match server.fetch(&session.meta, start, len).await {
            Ok((data, latency)) => {
                {
                    let mut est = plan.server.lock();
                    let secs = began.elapsed().as_secs_f64().max(1e-3);
                    est.latency = 0.7 * est.latency + 0.3 * latency.as_secs_f64();
                    est.rate = 0.7 * est.rate + 0.3 * (len as f64 / secs).max(10_000.0);
                }
                ledger.lock().server_fetched(piece, len);
                for b in run {
                    let at = (b.offset - first.offset) as usize;
                    let bytes: Bytes = data.slice(at..at + b.length as usize);
                    if let Some(done) = session.on_server_block(*b, &bytes) {
                        session.verify(done).await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(piece, error = %e, "VoD server fetch failed");
                session.release(SERVER_KEY, run.iter().copied());
            }
        }
    }
    // Whatever happened, the piece is the server's no longer: if it is still
    // missing (a failed fetch or a failed hash), the next tick claims it again.
    plan.claimed.lock().remove(&piece);
}

/// Splits blocks (sorted by offset) into runs without gaps.
fn contiguous_runs(blocks: &[BlockRef]) -> Vec<&[BlockRef]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=blocks.len() {
        if i == blocks.len() || blocks[i].offset != blocks[i - 1].offset + blocks[i - 1].length {
            if start < i {
                runs.push(&blocks[start..i]);
            }
            start = i;
        }
    }
    runs
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
    pub config: crate::session::SessionConfig,
}

/// The parts of a stream that displays and the `--serve` endpoint share:
/// cheap to clone, and it can seek.
#[derive(Clone)]
pub struct StreamHandle {
    pub session: Arc<Session>,
    pub plan: Arc<StreamPlan>,
    pub ledger: Arc<Mutex<Ledger>>,
}

impl StreamHandle {
    /// Seconds since the stream started (the clock deadlines are on).
    pub fn now(&self) -> f64 {
        self.session.started.elapsed().as_secs_f64()
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
    task: tokio::task::JoinHandle<Result<Report, String>>,
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
    ) -> anyhow::Result<Stream> {
        anyhow::ensure!(meta.files.len() == 1, "streaming needs a single-file torrent; {} has {} files", meta.name, meta.files.len());
        anyhow::ensure!(opts.rate > 0.0 && opts.rate.is_finite(), "the playback rate must be positive");
        let file_name = opts.output.file_name().ok_or_else(|| anyhow::anyhow!("{} is not a file name", opts.output.display()))?;
        let root = match opts.output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        // The same torrent (same info-hash), written under the name the user chose.
        let mut meta = meta.clone();
        meta.files[0].path = std::path::PathBuf::from(file_name);
        let server_url = opts.server.clone().or_else(|| meta.web_seeds.first().cloned());
        let server = match &server_url {
            Some(url) => Some(WebSeed::new(url, Some(client.shared.bind))?),
            None => None,
        };
        let session =
            Session::start(client.shared.clone(), Arc::new(meta), &root, crate::storage::OpenMode::Create, opts.config.clone(), peers)
                .await?;
        let playback = Playback::new(opts.rate, opts.delay, opts.prefetch, session.meta.total_length);
        let plan = Arc::new(StreamPlan::new(playback.clone(), opts.policy.clone(), opts.mode, session.meta.piece_length));
        let lengths = (0..session.meta.piece_count()).map(|i| u64::from(session.meta.piece_len(i))).collect();
        let opening = playback.required_bytes(playback.delay).max(1);
        let ledger = Arc::new(Mutex::new(Ledger::new(plan.schedule().deadlines.clone(), lengths, opening)));
        session.set_stream_plan(plan.clone());
        let task = tokio::spawn(run(session.clone(), plan.clone(), server, ledger.clone()));
        Ok(Stream { handle: StreamHandle { session, plan, ledger }, task })
    }

    /// A handle for displays and the `--serve` endpoint.
    pub fn handle(&self) -> StreamHandle {
        self.handle.clone()
    }

    /// Waits until every piece is verified.
    pub async fn finish(self) -> anyhow::Result<Report> {
        let report = self.task.await.map_err(|e| anyhow::anyhow!("stream task failed: {e}"))?.map_err(|e| anyhow::anyhow!(e))?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_at_gaps() {
        let b = |offset| BlockRef { piece: 0, offset, length: 16384 };
        let blocks = [b(0), b(16384), b(49152), b(65536)];
        let runs = contiguous_runs(&blocks);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].len(), 2);
        assert_eq!(runs[1][0].offset, 49152);
        assert!(contiguous_runs(&[]).is_empty());
    }

    #[test]
    fn piece_deadlines_follow_the_last_byte() {
        let p = Playback::new(1000.0, 6.0, 2.0, 2500);
        let d = piece_deadlines(&p, 1000);
        assert_eq!(d.len(), 3);
        assert!((d[0] - (4.0 + 0.999)).abs() < 1e-9);
        assert!((d[2] - (4.0 + 2.499)).abs() < 1e-9);
    }
}
