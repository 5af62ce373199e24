//! The client's DHT node (BEP 5) on the shared UDP port, and the peer
//! source that asks it for each public torrent's peers.
//!
//! The node itself is `ccfd_dht::Node`, sans I/O; this task feeds it the
//! KRPC datagrams the socket's demultiplexer routes here, sends what it
//! asks to send, and hands each lookup's peers to whoever asked. The
//! routing table is saved (atomically) every few minutes and on close, and
//! reloaded at start, so a restart does not bootstrap from scratch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ccfd_dht::{Announce, Event, Id, LookupId, Node, NodeInfo};
use ccfd_proto::metainfo::InfoHash;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{PeerSource, SwarmLink};
use crate::net::udp::{DatagramKind, DatagramSink, UdpEndpoint};

/// The well-known routers a node with an empty table starts from.
pub const DEFAULT_ROUTERS: [&str; 4] =
    ["router.bittorrent.com:6881", "dht.transmissionbt.com:6881", "router.utorrent.com:6881", "dht.libtorrent.org:25401"];
/// KRPC datagrams queued for the node before more are dropped.
const INBOUND_QUEUE: usize = 1024;
/// How often the table is saved while running.
const SAVE_EVERY: Duration = Duration::from_secs(300);
/// How long resolving one router's name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A torrent asks the DHT again this often; sooner while it has few peers.
const LOOKUP_EVERY: Duration = Duration::from_secs(300);
const LOOKUP_EVERY_WHEN_SHORT: Duration = Duration::from_secs(30);
/// Below this many connected peers a torrent counts as short of peers.
const FEW_PEERS: usize = 5;
/// With fewer good nodes than this, a lookup (and its announce) reached
/// too little of the DHT: it is repeated after `RETRY_SPARSE`, doubling.
const SPARSE_TABLE: usize = 8;
const RETRY_SPARSE: Duration = Duration::from_secs(5);

/// How the client's DHT node starts.
#[derive(Debug, Clone, Default)]
pub struct DhtConfig {
    /// Bootstrap routers, `host:port` (the defaults are `DEFAULT_ROUTERS`).
    pub bootstrap: Vec<String>,
    /// Where the routing table is kept between runs; `None`: not kept.
    pub state_file: Option<PathBuf>,
}

impl DhtConfig {
    /// The public routers, and the table saved under `state_dir`.
    pub fn public(state_dir: Option<&Path>) -> DhtConfig {
        DhtConfig { bootstrap: DEFAULT_ROUTERS.iter().map(|s| s.to_string()).collect(), state_file: state_dir.map(|d| d.join("dht.json")) }
    }
}

/// What a lookup reports to whoever started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupEvent {
    Peers(Vec<SocketAddr>),
    Done,
}

enum Command {
    GetPeers { info_hash: InfoHash, announce: Option<u16>, events: mpsc::UnboundedSender<LookupEvent> },
    AddNode(SocketAddr),
    Nodes(oneshot::Sender<usize>),
}

/// A handle on the client's DHT node.
#[derive(Clone)]
pub struct Dht {
    commands: mpsc::UnboundedSender<Command>,
    task: Arc<parking_lot::Mutex<Option<JoinHandle<()>>>>,
}

/// The saved table.
#[derive(Serialize, Deserialize)]
struct SavedTable {
    id: String,
    nodes: Vec<SavedNode>,
}

#[derive(Serialize, Deserialize)]
struct SavedNode {
    id: String,
    addr: SocketAddr,
}

struct KrpcSink(mpsc::Sender<(SocketAddr, Vec<u8>)>);

impl DatagramSink for KrpcSink {
    fn deliver(&self, from: SocketAddr, bytes: &[u8], _at: Instant) {
        let _ = self.0.try_send((from, bytes.to_vec()));
    }
}

impl Dht {
    /// Starts the node on `endpoint` until `shutdown`.
    pub fn start(endpoint: Arc<UdpEndpoint>, config: DhtConfig, shutdown: CancellationToken) -> Dht {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        endpoint.route(DatagramKind::Krpc, Arc::new(KrpcSink(tx)));
        let (commands, command_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(endpoint, config, rx, command_rx, shutdown));
        Dht { commands, task: Arc::new(parking_lot::Mutex::new(Some(task))) }
    }

    /// Looks up peers of `info_hash`; with `announce`, tells the closest
    /// nodes we serve it on that port. Events come until `Done`.
    pub fn get_peers(&self, info_hash: InfoHash, announce: Option<u16>) -> mpsc::UnboundedReceiver<LookupEvent> {
        let (events, rx) = mpsc::unbounded_channel();
        let _ = self.commands.send(Command::GetPeers { info_hash, announce, events });
        rx
    }

    /// A node a peer named in a BEP 3 `port` message: pinged, and kept if it answers.
    pub fn add_node(&self, addr: SocketAddr) {
        let _ = self.commands.send(Command::AddNode(addr));
    }

    /// Good nodes in the routing table.
    pub async fn node_count(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Nodes(tx));
        rx.await.unwrap_or(0)
    }

    /// Waits (a few seconds at most) for the node to save its table after
    /// the client's shutdown.
    pub async fn closed(&self) {
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

async fn run(
    endpoint: Arc<UdpEndpoint>,
    config: DhtConfig,
    mut datagrams: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shutdown: CancellationToken,
) {
    let saved = config.state_file.as_deref().and_then(load);
    let id = saved.as_ref().and_then(|s| Id::from_hex(&s.id)).unwrap_or_else(|| Id::random(&mut rand::rng()));
    let known: Vec<NodeInfo> = saved
        .map(|s| s.nodes.into_iter().filter_map(|n| Some(NodeInfo { id: Id::from_hex(&n.id)?, addr: n.addr })).collect())
        .unwrap_or_default();
    let mut node = Node::new(id, Instant::now(), rand::random());
    let routers = resolve(&config.bootstrap, endpoint.is_ipv6()).await;
    tracing::info!(nodes = known.len(), routers = routers.len(), "DHT starting");
    node.bootstrap(Instant::now(), routers, known);
    // A request runs one lookup per address family the socket speaks; its
    // subscriber hears `Done` when the last of them ends.
    let mut subscribers: HashMap<LookupId, (u64, mpsc::UnboundedSender<LookupEvent>)> = HashMap::new();
    let mut open_lookups: HashMap<u64, usize> = HashMap::new();
    let mut next_request = 0u64;
    let mut saved_at = Instant::now();
    loop {
        let now = Instant::now();
        while let Some((to, bytes)) = node.poll_transmit(now) {
            let _ = endpoint.send_to(&bytes, to).await;
        }
        while let Some(event) = node.poll_event() {
            match event {
                Event::Peers { lookup, peers, .. } => {
                    if let Some((_, s)) = subscribers.get(&lookup) {
                        let _ = s.send(LookupEvent::Peers(peers));
                    }
                }
                Event::Done { lookup, .. } => {
                    let Some((request, s)) = subscribers.remove(&lookup) else { continue };
                    let left = open_lookups.entry(request).or_insert(1);
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        open_lookups.remove(&request);
                        let _ = s.send(LookupEvent::Done);
                    }
                }
            }
        }
        subscribers.retain(|lookup, (_, s)| {
            let open = !s.is_closed();
            if !open {
                node.cancel(*lookup);
            }
            open
        });
        if now.duration_since(saved_at) >= SAVE_EVERY {
            saved_at = now;
            save(&config, &node).await;
        }
        let wake = node.next_wake(now).min(saved_at + SAVE_EVERY);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some((from, bytes)) = datagrams.recv() => node.receive(Instant::now(), from, &bytes),
            Some(command) = commands.recv() => match command {
                Command::GetPeers { info_hash, announce, events } => {
                    // The port our datagrams come from is implied when TCP and UDP share it.
                    let announce = announce.map(|port| Announce { port, implied: port == endpoint.port() });
                    // A dual-stack socket searches both DHTs (BEP 32).
                    let families: &[bool] = if endpoint.is_ipv6() { &[false, true] } else { &[false] };
                    next_request += 1;
                    open_lookups.insert(next_request, families.len());
                    for &v6 in families {
                        let lookup = node.get_peers(Instant::now(), Id(info_hash.0), v6, announce);
                        subscribers.insert(lookup, (next_request, events.clone()));
                    }
                }
                Command::AddNode(addr) => node.add_node(Instant::now(), addr),
                Command::Nodes(reply) => {
                    let (v4, v6) = node.node_count();
                    let _ = reply.send(v4 + v6);
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => node.tick(Instant::now()),
        }
    }
    save(&config, &node).await;
}

/// Resolves router names to addresses of our socket's family (a name that
/// does not resolve is skipped: the DHT still answers and learns from peers).
async fn resolve(routers: &[String], v6: bool) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for r in routers {
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(r.as_str())).await {
            Ok(Ok(addrs)) => out.extend(addrs.filter(|a| a.is_ipv6() == v6 || (v6 && a.is_ipv4()))),
            Ok(Err(e)) => tracing::warn!(router = %r, error = %e, "DHT router does not resolve"),
            Err(_) => tracing::warn!(router = %r, "DHT router name lookup timed out"),
        }
    }
    out
}

fn load(path: &Path) -> Option<SavedTable> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "saved DHT table unreadable; starting afresh");
            None
        }
    }
}

/// Writes the table next to its file and renames it over: a crash leaves the old one whole.
async fn save(config: &DhtConfig, node: &Node) {
    let Some(path) = config.state_file.clone() else { return };
    let table = SavedTable {
        id: node.id().to_hex(),
        nodes: node.nodes().into_iter().map(|n| SavedNode { id: n.id.to_hex(), addr: n.addr }).collect(),
    };
    let Ok(bytes) = serde_json::to_vec(&table) else { return };
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    })
    .await;
    if let Ok(Err(e)) = written {
        tracing::warn!(error = %e, "cannot save the DHT table");
    }
}

/// A public torrent's DHT peer source: looks up (and announces, on
/// `port`) now, then every few minutes, sooner while peers are few.
pub async fn run_source(dht: Dht, swarm: Arc<dyn SwarmLink>, port: u16, shutdown: CancellationToken) {
    let mut sparse_retry = RETRY_SPARSE;
    loop {
        let mut events = dht.get_peers(swarm.info_hash(), Some(port));
        let mut found = 0usize;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Some(LookupEvent::Peers(peers)) => {
                        found += peers.len();
                        swarm.found(peers, PeerSource::Dht);
                    }
                    Some(LookupEvent::Done) | None => break,
                },
            }
        }
        let nodes = dht.node_count().await;
        tracing::debug!(found, nodes, "DHT lookup done");
        let status = swarm.status();
        let mut wait = if !status.complete && status.peers < FEW_PEERS { LOOKUP_EVERY_WHEN_SHORT } else { LOOKUP_EVERY };
        if nodes < SPARSE_TABLE {
            wait = wait.min(sparse_retry);
            sparse_retry = (sparse_retry * 2).min(LOOKUP_EVERY);
        } else {
            sparse_retry = RETRY_SPARSE;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
