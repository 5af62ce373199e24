//! Maps the engine's statistics (torrent snapshot, stream plan, ledger)
//! into the dashboard's view model, once per refresh. Part of the binary:
//! the `ccfd-tui` crate knows nothing of torrents.

use std::time::Instant;

use ccfd_bt::stream::StreamHandle;
use ccfd_bt::swarm::Snapshot;
use ccfd_tui::{CurvePoint, Dashboard, PeerRow, Penalty, Phase, PieceCell};

use crate::log_sink::LogLines;

/// Samples of the curve and the rate histories kept (a long movie is thinned).
const HISTORY: usize = 600;
/// Points of B(t) drawn ahead of now.
const AHEAD_POINTS: u32 = 24;

/// Builds successive dashboards for one stream, keeping the history the
/// charts need.
pub struct Feed {
    stream: StreamHandle,
    mode: String,
    serve_url: Option<String>,
    log: LogLines,
    curve: Vec<CurvePoint>,
    down_history: Vec<u64>,
    up_history: Vec<u64>,
    last: Option<(Instant, u64, u64)>,
    /// The previous refresh's pieces and peers, to note what changed.
    seen_pieces: Vec<PieceCell>,
    seen_peers: Vec<String>,
}

impl Feed {
    pub fn new(stream: StreamHandle, mode: String, serve_url: Option<String>, log: LogLines) -> Feed {
        Feed {
            stream,
            mode,
            serve_url,
            log,
            curve: Vec::new(),
            down_history: Vec::new(),
            up_history: Vec::new(),
            last: None,
            seen_pieces: Vec::new(),
            seen_peers: Vec::new(),
        }
    }

    /// The dashboard as of now.
    pub fn view(&mut self) -> Dashboard {
        let now = self.stream.now();
        let torrent = self.stream.torrent.clone();
        let snap = torrent.snapshot();
        let schedule = self.stream.plan.schedule();
        let playback = &schedule.playback;
        let remaining = torrent.pieces_remaining();
        let pieces: Vec<PieceCell> = {
            let ledger = self.stream.ledger.lock();
            (0..remaining.len() as u32)
                .map(|i| {
                    let record = ledger.piece(i);
                    let full = u64::from(torrent.meta.piece_len(i));
                    let left = remaining[i as usize];
                    match record {
                        _ if left == 0 && record.is_some_and(|r| r.server_bytes > 0) => PieceCell::Server,
                        _ if left == 0 => PieceCell::Peer,
                        Some(r) if r.deadline < now => PieceCell::Missed,
                        _ if left < full => PieceCell::Partial,
                        _ => PieceCell::Missing,
                    }
                })
                .collect()
        };
        let contiguous = self.stream.plan.contiguous(|p| remaining.get(p as usize) == Some(&0));
        let point = CurvePoint { t: now, required: playback.required_bytes(now), contiguous, held: snap.verified_bytes };
        push_bounded(&mut self.curve, point);
        self.sample_rates(&snap);
        self.note_changes(now, &pieces, &snap);
        let report = self.stream.report();
        // Late pieces (a VoD server fills them), or a play head at the end of what is here.
        let waiting = playback.play_head(now) - playback.origin() >= contiguous && contiguous < playback.total - playback.origin();
        let stalled =
            pieces.contains(&PieceCell::Missed) || (waiting && now >= playback.byte_deadline(playback.origin()) + playback.prefetch);
        let phase = if torrent.is_complete() {
            Phase::Done
        } else if now < playback.byte_deadline(playback.origin()) + playback.prefetch {
            Phase::Buffering
        } else if stalled {
            Phase::Stalled
        } else {
            Phase::Playing
        };
        let horizon = self.stream.plan.policy.horizon;
        let required_ahead = (0..=AHEAD_POINTS)
            .map(|k| now + horizon * f64::from(k) / f64::from(AHEAD_POINTS))
            .map(|t| (t, playback.required_bytes(t)))
            .collect();
        Dashboard {
            name: torrent.meta.name.clone(),
            mode: self.mode.clone(),
            elapsed: now,
            phase,
            play_head: playback.play_head(now).min(playback.origin() + contiguous),
            total_bytes: playback.total,
            rate: playback.rate,
            horizon,
            curve: self.curve.clone(),
            required_ahead,
            pieces,
            penalty: Penalty {
                server_bytes: report.server_bytes,
                server_share: report.server_share,
                missed_pieces: report.missed_pieces,
                pieces: report.pieces,
                continuity: report.continuity,
                startup_seconds: report.startup_seconds,
                stalls: report.stalls,
                duplicate_bytes: report.duplicate_bytes,
            },
            peers: snap
                .peer_list
                .iter()
                .map(|p| PeerRow {
                    addr: p.addr.to_string(),
                    client: p.client.clone(),
                    down_rate: p.down_rate,
                    up_rate: p.up_rate,
                    we_unchoke: p.unchoked,
                    unchokes_us: p.unchokes_us,
                    interested: p.interested,
                    coded: p.coded,
                    via: match p.encryption.name() {
                        "plain" => p.transport.to_string(),
                        enc => format!("{}+{enc}", p.transport),
                    },
                })
                .collect(),
            peer_sources: snap.peer_sources.iter().map(|(name, n)| (name.to_string(), *n)).collect(),
            down_history: self.down_history.clone(),
            up_history: self.up_history.clone(),
            log: self.log.recent(),
            serve_url: self.serve_url.clone(),
        }
    }

    /// Writes what changed since the last refresh into the log pane: server
    /// fills, missed deadlines, peers coming and going.
    fn note_changes(&mut self, now: f64, pieces: &[PieceCell], snap: &Snapshot) {
        if self.seen_pieces.len() != pieces.len() {
            self.seen_pieces = vec![PieceCell::Missing; pieces.len()];
        }
        for (i, (&new, old)) in pieces.iter().zip(self.seen_pieces.iter_mut()).enumerate() {
            if new != *old {
                match new {
                    PieceCell::Server => self.log.push(format!("{now:6.1}s piece {i} filled by the VoD server")),
                    PieceCell::Missed => self.log.push(format!("{now:6.1}s piece {i} missed its deadline: playback waits")),
                    _ => {}
                }
                *old = new;
            }
        }
        let peers: Vec<String> = snap.peer_list.iter().map(|p| format!("{} ({})", p.addr, p.client)).collect();
        for p in peers.iter().filter(|p| !self.seen_peers.contains(p)) {
            self.log.push(format!("{now:6.1}s peer {p} connected"));
        }
        for p in self.seen_peers.iter().filter(|p| !peers.contains(p)) {
            self.log.push(format!("{now:6.1}s peer {p} left"));
        }
        self.seen_peers = peers;
    }

    /// Turns the byte counters into rates since the previous refresh.
    fn sample_rates(&mut self, snap: &Snapshot) {
        let now = Instant::now();
        let down = snap.downloaded + snap.server_bytes;
        if let Some((then, d0, u0)) = self.last {
            let dt = now.duration_since(then).as_secs_f64().max(1e-3);
            push_recent(&mut self.down_history, (down.saturating_sub(d0) as f64 / dt) as u64);
            push_recent(&mut self.up_history, (snap.uploaded.saturating_sub(u0) as f64 / dt) as u64);
        }
        self.last = Some((now, down, snap.uploaded));
    }
}

/// Appends, dropping the oldest sample once the history is full.
fn push_recent(v: &mut Vec<u64>, x: u64) {
    if v.len() >= HISTORY {
        v.remove(0);
    }
    v.push(x);
}

/// Appends, dropping every other old sample once the history is full, so
/// the curve always spans the whole run.
fn push_bounded<T: Copy>(v: &mut Vec<T>, x: T) {
    if v.len() >= HISTORY {
        let thinned: Vec<T> = v.iter().step_by(2).copied().collect();
        *v = thinned;
    }
    v.push(x);
}
