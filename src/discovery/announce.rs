//! The announce loop of one torrent: `started` first, then on the tracker's
//! interval, sooner when we run short of peers, `completed` once, and
//! `stopped` on the way out.

use std::sync::Arc;
use std::time::Duration;

use ccfd_tracker::{AnnounceRequest, Event, TrackerClient, TrackerTiers};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{PeerSource, SwarmLink};

/// Peers we ask the tracker for.
const NUMWANT: u32 = 80;
/// Below this many connected peers a leecher re-announces early.
const LOW_PEERS: usize = 5;
/// First retry delay after a failed announce; doubles up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// What an announcer needs besides the torrent.
pub struct Announcer {
    pub trackers: TrackerClient,
    pub peer_id: [u8; 20],
    /// The port peers reach us on.
    pub port: u16,
    pub shutdown: CancellationToken,
}

/// Runs until `shutdown`, then sends `stopped`.
pub async fn run(announcer: Announcer, swarm: Arc<dyn SwarmLink>, mut tiers: TrackerTiers) {
    let Announcer { trackers, peer_id, port, shutdown } = announcer;
    let request = |event, key, tracker_id| request(&*swarm, peer_id, port, event, key, tracker_id);
    if tiers.is_empty() {
        return;
    }
    let key: u32 = rand::random();
    let mut tracker_id = None;
    let mut event = Event::Started;
    let mut sent_completed = swarm.status().complete;
    let mut retry = FIRST_RETRY;
    let mut complete_rx = swarm.subscribe_complete();
    loop {
        let req = request(event, key, tracker_id.clone());
        // How long until the next announce, and until an early one when short of peers.
        let (interval, early) = match tiers.announce(&trackers, &req).await {
            Ok(resp) => {
                retry = FIRST_RETRY;
                if let Some(w) = &resp.warning {
                    tracing::warn!(warning = %w, "tracker warning");
                }
                if resp.tracker_id.is_some() {
                    tracker_id = resp.tracker_id.clone();
                }
                tracing::info!(peers = resp.peers.len(), interval = ?resp.interval, ?event, "announced");
                swarm.found(resp.peers.clone(), PeerSource::Tracker);
                if event == Event::Completed {
                    sent_completed = true;
                }
                event = Event::None;
                let min = resp.min_interval.unwrap_or(Duration::ZERO);
                let early = if swarm.status().peers == 0 { Duration::from_secs(10) } else { Duration::from_secs(60) };
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
                _ = shutdown.cancelled() => {
                    let req = request(Event::Stopped, key, tracker_id.clone());
                    let _ = tokio::time::timeout(Duration::from_secs(5), tiers.announce(&trackers, &req)).await;
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
                    let status = swarm.status();
                    let low = !status.complete && status.peers < LOW_PEERS;
                    if low && started.elapsed() >= early {
                        break;
                    }
                }
            }
        }
    }
}

fn request(swarm: &dyn SwarmLink, peer_id: [u8; 20], port: u16, event: Event, key: u32, tracker_id: Option<String>) -> AnnounceRequest {
    let status = swarm.status();
    AnnounceRequest {
        info_hash: swarm.info_hash(),
        peer_id,
        port,
        uploaded: status.uploaded,
        downloaded: status.downloaded,
        left: status.left,
        event,
        numwant: if event == Event::Stopped { 0 } else { NUMWANT },
        key,
        tracker_id,
    }
}
