//! Announcing one torrent to its trackers: every tracker of every tier at
//! once (as qBittorrent and libtorrent's announce_to_all_tiers do), each
//! on a loop of its own, so a dead or slow tracker delays nothing. Each
//! loop announces `started` first, then on its tracker's interval, sooner
//! when we run short of peers, `completed` once, and `stopped` on the way
//! out; a failing tracker backs off on its own.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ccfd_tracker::{AnnounceRequest, Event, TrackerClient, TrackerError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{PeerSource, SwarmLink};
use crate::net::portmap::ExternalIp;

/// Peers we ask a tracker for.
const NUMWANT: u32 = 80;
/// Below this many connected peers a leecher re-announces early.
const LOW_PEERS: usize = 5;
/// First retry delay after a failed announce; doubles up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How long the `stopped` announce may take on the way out.
const STOPPED_TIMEOUT: Duration = Duration::from_secs(5);

/// What an announcer needs besides the torrent.
#[derive(Clone)]
pub struct Announcer {
    pub trackers: TrackerClient,
    pub peer_id: [u8; 20],
    /// The port peers reach us on.
    pub port: u16,
    /// Our address as port mapping learned it, told to HTTP trackers.
    pub external_ip: ExternalIp,
    pub shutdown: CancellationToken,
}

/// Every tracker URL of `tiers` once, in tier order.
pub fn tracker_urls(tiers: &[Vec<String>]) -> Vec<String> {
    let mut seen = HashSet::new();
    tiers.iter().flatten().filter(|u| seen.insert(u.as_str())).cloned().collect()
}

/// Announces to every tracker of `tiers` until `shutdown`, then sends `stopped` to each.
pub async fn run(announcer: Announcer, swarm: Arc<dyn SwarmLink>, tiers: Vec<Vec<String>>) {
    let key: u32 = rand::random();
    let mut loops = JoinSet::new();
    for url in tracker_urls(&tiers) {
        loops.spawn(one_tracker(announcer.clone(), swarm.clone(), url, key));
    }
    while loops.join_next().await.is_some() {}
}

/// One tracker's announce loop.
async fn one_tracker(announcer: Announcer, swarm: Arc<dyn SwarmLink>, url: String, key: u32) {
    let Announcer { trackers, peer_id, port, external_ip, shutdown } = announcer;
    let request =
        |event, tracker_id| AnnounceRequest { external_ip: external_ip.get(), ..request(&*swarm, peer_id, port, event, key, tracker_id) };
    let mut tracker_id = None;
    let mut event = Event::Started;
    let mut sent_completed = swarm.status().complete;
    let mut retry = FIRST_RETRY;
    let mut complete_rx = swarm.subscribe_complete();
    let mut last_warning: Option<String> = None;
    loop {
        let req = request(event, tracker_id.clone());
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = trackers.announce(&url, &req) => r,
        };
        // How long until the next announce, and until an early one when short of peers.
        let (interval, early) = match outcome {
            Ok(resp) => {
                retry = FIRST_RETRY;
                if resp.warning.is_some() && resp.warning != last_warning {
                    tracing::warn!(tracker = %url, warning = resp.warning.as_deref().unwrap_or_default(), "tracker warning");
                }
                last_warning = resp.warning.clone();
                if resp.tracker_id.is_some() {
                    tracker_id = resp.tracker_id.clone();
                }
                tracing::info!(tracker = %url, peers = resp.peers.len(), interval = ?resp.interval, ?event, "announced");
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
                // Keep running: other trackers and sources go on, peers may
                // still dial us, and a tracker down now may be back soon.
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                match &e {
                    TrackerError::Failure(reason) => {
                        tracing::warn!(tracker = %url, %reason, retry_in = ?wait, "tracker refused the announce; will retry")
                    }
                    _ => tracing::warn!(tracker = %url, error = %e, retry_in = ?wait, "tracker did not answer; will retry"),
                }
                (wait, wait)
            }
        };
        let started = Instant::now();
        let deadline = started + interval;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if event != Event::Started {
                        let req = request(Event::Stopped, tracker_id.clone());
                        let _ = tokio::time::timeout(STOPPED_TIMEOUT, trackers.announce(&url, &req)).await;
                    }
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
        external_ip: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tracker_once_in_tier_order() {
        let tiers = vec![vec!["udp://a".to_string(), "http://b".to_string()], vec!["http://b".to_string(), "https://c".to_string()]];
        assert_eq!(tracker_urls(&tiers), vec!["udp://a", "http://b", "https://c"]);
        assert!(tracker_urls(&[]).is_empty());
    }
}
