//! The VoD server fallback: every 50 ms, record arrivals in the ledger
//! and, at each piece's last safe moment, claim the blocks still missing
//! and fetch exactly those from the VoD server (a BEP 19 web seed); once
//! every peer has choked us for a second, pieces close to their cut-off
//! are fetched earlier (`Policy::server_moment`). Server blocks go through
//! the same verification as peer blocks. Without a VoD server, playback
//! waits for missing bytes as a player rebuffers: the clock pauses and
//! every deadline moves by the pause.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::wire::BlockRef;
use ccfd_vod::{Ledger, Report};
use parking_lot::Mutex;

use crate::decide::stream_plan::{StreamPlan, SERVER_KEY};
use crate::swarm::web_sources::contiguous_runs;
use crate::swarm::{Swarm, TorrentError};
use crate::webseed::WebSeed;

/// How often the fallback check runs.
const TICK: Duration = Duration::from_millis(50);
/// Pieces due further ahead than this are not checked for the fallback yet (seconds).
const FALLBACK_LOOKAHEAD: f64 = 30.0;
/// Attempts at one piece from the server before giving up on the stream.
const MAX_SERVER_ATTEMPTS: u32 = 3;

/// Streams until every wanted piece is verified; returns the ledger's report.
/// `server` is the VoD server; without one, pieces the swarm misses are late.
pub async fn run(
    swarm: Arc<Swarm>,
    plan: Arc<StreamPlan>,
    server: Option<WebSeed>,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<Report, Arc<TorrentError>> {
    let mut seen = Bitfield::new(swarm.meta.piece_count());
    let mut attempts = vec![0u32; seen.len() as usize];
    let mut wasted = 0;
    // Since when every connected peer chokes us (the opening lead's clock).
    let mut choked_since: Option<f64> = None;
    // Rebuffering (no server): whether playback waits, and since the last tick.
    let (mut stalled, mut last_now) = (false, 0.0);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = swarm.shutdown.cancelled() => return Err(swarm.fatal_error().unwrap_or_else(|| Arc::new(TorrentError::Stopped))),
            _ = tick.tick() => {}
        }
        let now = swarm.started.elapsed().as_secs_f64();
        // Read before `have`, so the last arrival is in the ledger when done.
        let done = swarm.is_complete();
        let have = swarm.have();
        let schedule = plan.schedule();
        {
            let mut l = ledger.lock();
            let now_wasted = swarm.snapshot_wasted();
            l.duplicate(now_wasted - wasted);
            wasted = now_wasted;
            for p in have.ones() {
                if seen.set(p) {
                    tracing::debug!(piece = p, at = now, due = ?schedule.deadlines.get(p as usize), "piece verified");
                    l.arrived(p, now);
                }
            }
        }
        // Done: every wanted piece (the movie's and its extras') is here.
        if done {
            return Ok(ledger.lock().report(now));
        }
        let Some(server) = &server else {
            let playback = &schedule.playback;
            let played = playback.play_head(now) - playback.origin();
            let left = playback.total - playback.origin();
            let available = plan.contiguous(|p| have.get(p));
            let playing = now >= playback.byte_deadline(playback.origin()) + playback.prefetch;
            let waiting = playing && available < left && played >= available;
            if waiting {
                let pause = now - last_now;
                let moved = plan.pause(pause);
                let mut l = ledger.lock();
                l.set_deadlines(moved.deadlines.clone());
                l.rebuffered(pause, !stalled);
                if !stalled {
                    tracing::info!(at = now, byte = playback.origin() + available, "playback waits for data (no VoD server)");
                }
            }
            stalled = waiting;
            last_now = now;
            continue;
        };
        choked_since = swarm.choked_by_all().then(|| choked_since.unwrap_or(now));
        let choked_for = choked_since.map(|since| now - since);
        for piece in (0..have.len()).filter(|&p| !have.get(p)) {
            let deadline = schedule.deadlines[piece as usize];
            // No server fetch takes this long: later pieces need no look yet.
            if deadline - now > FALLBACK_LOOKAHEAD {
                continue;
            }
            let remaining = swarm.piece_progress(piece).remaining;
            let moment =
                if plan.is_server_now(piece) { now } else { plan.policy.server_moment(plan.cutoff(deadline, remaining), choked_for) };
            if remaining == 0 || plan.claimed.lock().contains(&piece) || now < moment {
                continue;
            }
            attempts[piece as usize] += 1;
            if attempts[piece as usize] > MAX_SERVER_ATTEMPTS {
                swarm.abort(TorrentError::VodServer { piece, attempts: MAX_SERVER_ATTEMPTS });
                return Err(swarm.fatal_error().unwrap_or_else(|| Arc::new(TorrentError::Stopped)));
            }
            plan.claimed.lock().insert(piece);
            let blocks = swarm.claim_for_server(piece);
            tracing::info!(piece, missing = remaining, due_in = deadline - now, "fetching from the VoD server");
            tokio::spawn(fetch_piece(swarm.clone(), plan.clone(), server.clone(), ledger.clone(), piece, blocks));
        }
    }
}

/// Fetches the claimed blocks of one piece from the server (contiguous runs
/// in one range request each) and hands them to the swarm.
async fn fetch_piece(
    swarm: Arc<Swarm>,
    plan: Arc<StreamPlan>,
    server: WebSeed,
    ledger: Arc<Mutex<Ledger>>,
    piece: u32,
    blocks: Vec<BlockRef>,
) {
    let base = u64::from(piece) * swarm.meta.piece_length;
    for run in contiguous_runs(&blocks) {
        let (first, last) = (run[0], run[run.len() - 1]);
        let start = base + u64::from(first.offset);
        let len = u64::from(last.offset + last.length - first.offset);
        let began = std::time::Instant::now();
        match server.fetch(&swarm.meta, start, len).await {
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
                    if let Some(done) = swarm.on_server_block(*b, &bytes) {
                        swarm.verify(done).await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(piece, error = %e, "VoD server fetch failed");
                swarm.release(SERVER_KEY, run.iter().copied());
            }
        }
    }
    // Whatever happened, the piece is the server's no longer: if it is still
    // missing (a failed fetch or a failed hash), the next tick claims it again.
    plan.claimed.lock().remove(&piece);
}
