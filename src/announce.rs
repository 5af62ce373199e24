//! The announce loop of one session: `started` first, then on the tracker's
//! interval, sooner when we run short of peers, `completed` once, and
//! `stopped` on the way out.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::session::Session;
use ccfd_tracker::{AnnounceRequest, Event, TrackerTiers};

/// Peers we ask the tracker for.
const NUMWANT: u32 = 80;
/// Below this many connected peers a leecher re-announces early.
const LOW_PEERS: usize = 5;
/// First retry delay after a failed announce; doubles up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Runs until the session shuts down, then sends `stopped`.
pub async fn run(session: Arc<Session>, mut tiers: TrackerTiers) {
    if tiers.is_empty() {
        return;
    }
    let key: u32 = rand::random();
    let mut tracker_id = None;
    let mut event = Event::Started;
    let mut sent_completed = session.is_complete();
    let mut retry = FIRST_RETRY;
    let mut complete_rx = session.subscribe_complete();
    loop {
        let req = request(&session, event, key, tracker_id.clone());
        // How long until the next announce, and until an early one when short of peers.
        let (interval, early) = match tiers.announce(&session.client.trackers, &req).await {
            Ok(resp) => {
                retry = FIRST_RETRY;
                if let Some(w) = &resp.warning {
                    tracing::warn!(warning = %w, "tracker warning");
                }
                if resp.tracker_id.is_some() {
                    tracker_id = resp.tracker_id.clone();
                }
                tracing::info!(peers = resp.peers.len(), interval = ?resp.interval, ?event, "announced");
                session.add_candidates(resp.peers.iter().copied(), false);
                if event == Event::Completed {
                    sent_completed = true;
                }
                event = Event::None;
                let min = resp.min_interval.unwrap_or(Duration::ZERO);
                let early = if session.peer_count() == 0 { Duration::from_secs(10) } else { Duration::from_secs(60) };
                (resp.interval, min.max(early))
            }
            Err(e) => {
                // Keep running: peers may still dial us, `--peer` addresses
                // are dialed anyway, and a tracker that is down now may be
                // back in a minute.
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                tracing::warn!(error = %e, retry_in = ?wait, "announce failed; still serving, will retry");
                (wait, wait)
            }
        };
        let started = Instant::now();
        let deadline = started + interval;
        loop {
            tokio::select! {
                _ = session.shutdown.cancelled() => {
                    let req = request(&session, Event::Stopped, key, tracker_id.clone());
                    let _ = tokio::time::timeout(Duration::from_secs(5), tiers.announce(&session.client.trackers, &req)).await;
                    return;
                }
                _ = tokio::time::sleep_until(deadline) => break,
                changed = complete_rx.changed(), if !sent_completed => {
                    if changed.is_ok() && *complete_rx.borrow() {
                        event = Event::Completed;
                        break;
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let low = !session.is_complete() && session.peer_count() < LOW_PEERS;
                    if low && started.elapsed() >= early {
                        break;
                    }
                }
            }
        }
    }
}

fn request(session: &Session, event: Event, key: u32, tracker_id: Option<String>) -> AnnounceRequest {
    let totals = session.totals();
    AnnounceRequest {
        info_hash: session.meta.info_hash,
        peer_id: session.client.peer_id,
        port: session.client.listen_addr.port(),
        uploaded: totals.uploaded,
        downloaded: totals.downloaded,
        left: totals.left,
        event,
        numwant: if event == Event::Stopped { 0 } else { NUMWANT },
        key,
        tracker_id,
    }
}
