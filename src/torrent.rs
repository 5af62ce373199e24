//! One torrent's tasks, started in one place.
//!
//! `Torrent::start` opens the swarm (storage, re-check) and starts what
//! drives it: the tick loop that rechokes and dials, the verifier, and the
//! tracker announcer. `Client::add_torrent` is its only caller, so a
//! torrent always runs inside a client that routes its inbound peers.
//! A torrent derefs to its [`Swarm`] for everything else.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ccfd_proto::metainfo::{InfoHash, Metainfo};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::discovery::announce::{self, Announcer};
use crate::discovery::dht;
use crate::discovery::{PeerSource, SwarmLink, SwarmStatus};
use crate::net::dial::{dial as net_dial, Dialed};
use crate::storage::{OpenMode, StorageError};
use crate::swarm::{web_sources, Services, Swarm, TorrentConfig};

/// A running torrent: its swarm and the tasks that drive it.
pub struct Torrent {
    swarm: Arc<Swarm>,
    announcer: Mutex<Option<JoinHandle<()>>>,
}

impl std::ops::Deref for Torrent {
    type Target = Swarm;
    fn deref(&self) -> &Swarm {
        &self.swarm
    }
}

impl Torrent {
    /// Opens the torrent's storage and starts its tasks; `peers` are dialed
    /// for its whole life (the user's `--peer`).
    pub(crate) async fn start(
        net: Arc<crate::net::Net>,
        services: Services,
        meta: Arc<Metainfo>,
        root: &Path,
        mode: OpenMode,
        config: TorrentConfig,
        peers: Vec<SocketAddr>,
    ) -> Result<Arc<Torrent>, StorageError> {
        let (swarm, verify_queue) = Swarm::open(net.clone(), services, meta.clone(), root, mode, config).await?;
        swarm.add_candidates(peers, PeerSource::Manual);
        tokio::spawn(swarm.clone().run_verifier(verify_queue));
        tokio::spawn(maintain(swarm.clone()));
        let announcer = Announcer {
            trackers: net.trackers.clone(),
            peer_id: net.peer_id,
            port: net.listen_addr.port(),
            external_ip: net.external_ip.clone(),
            shutdown: swarm.shutdown.clone(),
        };
        let handle = tokio::spawn(announce::run(announcer, swarm.clone(), meta.trackers.clone()));
        if swarm.config.web_seeds && !meta.web_seeds.is_empty() && !swarm.is_complete() {
            tokio::spawn(web_sources::run(swarm.clone(), meta.web_seeds.clone()));
        }
        if let Some(dht) = swarm.dht.clone() {
            tokio::spawn(dht::run_source(dht, swarm.clone(), net.listen_addr.port(), swarm.shutdown.clone()));
        }
        Ok(Arc::new(Torrent { swarm, announcer: Mutex::new(Some(handle)) }))
    }

    /// The swarm, for the tasks and connections that share it.
    pub fn swarm(&self) -> &Arc<Swarm> {
        &self.swarm
    }

    /// Stops every task of this torrent and waits (a few seconds at most)
    /// for the last resume record and for the tracker to hear `stopped`.
    /// The client forgets it too.
    pub async fn stop(&self) {
        self.swarm.shutdown.cancel();
        if tokio::time::timeout(Duration::from_secs(10), self.swarm.resume_saved()).await.is_err() {
            tracing::warn!("the resume record was not saved in time: a restart will hash what changed");
        }
        let announcer = self.announcer.lock().take();
        if let Some(handle) = announcer {
            let _ = tokio::time::timeout(Duration::from_secs(6), handle).await;
        }
    }
}

/// Once a second: the swarm's full tick (rates, choking, seed-to-seed
/// links); and a dialing step as soon as candidates arrive, a peer leaves
/// or a backoff ends. Dials what the tick says.
async fn maintain(swarm: Arc<Swarm>) {
    let period = Duration::from_secs(1).min(swarm.config.choker.rechoke_interval);
    let mut tick = tokio::time::interval(period);
    let mut last = Instant::now();
    let mut next_retry: Option<Instant> = None;
    loop {
        let retry_due = async {
            match next_retry {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let full = tokio::select! {
            _ = swarm.shutdown.cancelled() => break,
            _ = tick.tick() => true,
            _ = swarm.dialer_woken() => false,
            _ = retry_due => false,
        };
        let now = Instant::now();
        let elapsed = full.then(|| now.duration_since(last));
        if full {
            last = now;
        }
        let decided = swarm.tick(now, elapsed);
        next_retry = decided.next_retry;
        for addr in decided.dial {
            tokio::spawn(dial(swarm.clone(), addr));
        }
    }
    swarm.close_all();
}

/// Connects to `addr` within a client-wide connection slot (see
/// [`crate::net::dial`] for the transports and encryption tried); a
/// failure sets the address's backoff, a success runs the connection.
async fn dial(swarm: Arc<Swarm>, addr: SocketAddr) {
    let Some(_slot) = swarm.net.connection_slot() else {
        swarm.dial_abandoned(addr);
        return;
    };
    let encrypted_first = swarm.dial_encrypted_first(addr);
    match net_dial(&swarm.net, addr, swarm.meta.info_hash, swarm.us(), encrypted_first, swarm.config.connect_timeout).await {
        Ok(Dialed { stream, theirs, encrypted }) => {
            swarm.dial_connected(addr, encrypted);
            crate::peer::run(swarm, stream, theirs).await;
        }
        Err(e) => {
            tracing::debug!(%addr, error = %e, "dial failed");
            swarm.dial_failed(addr);
        }
    }
}

impl SwarmLink for Swarm {
    fn info_hash(&self) -> InfoHash {
        self.meta.info_hash
    }

    fn status(&self) -> SwarmStatus {
        let totals = self.totals();
        SwarmStatus {
            uploaded: totals.uploaded,
            downloaded: totals.downloaded,
            left: totals.left,
            complete: self.is_complete(),
            peers: self.peer_count(),
        }
    }

    fn subscribe_complete(&self) -> watch::Receiver<bool> {
        Swarm::subscribe_complete(self)
    }

    fn found(&self, addrs: Vec<SocketAddr>, source: PeerSource) {
        self.add_candidates(addrs, source);
    }
}
