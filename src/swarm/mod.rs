//! One torrent's swarm: what we know and decide about its peers and pieces.
//!
//! `SwarmState` (behind a short-held mutex, never across an `.await`) owns
//! the picker, the buffers of pieces in flight, and an entry per connected
//! peer. Peer connections call in with events (a bitfield, a block, a
//! choke) and get decisions back (blocks to request, whether to be
//! interested); the swarm talks to each connection only through its
//! command channel. `tick` (swarm::tick) is the periodic decision: rates,
//! choking, which known addresses to dial and when to wake. The tasks that
//! drive a swarm (dialing, verifying, announcing) are started by
//! `torrent::Torrent::start`, the only way to start a torrent.
//!
//! Why a mutex and not an actor: the hot path is one short critical section
//! per 16 KiB block; an actor would add a channel round trip to each.

mod dialer;
mod peers;
mod stats;
mod tick;
mod verify;
pub(crate) mod web_sources;

pub use stats::{PeerSnapshot, Snapshot, Totals};
pub use tick::Tick;
pub(crate) use verify::VerifyQueue;

use dialer::Candidate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ccfd_proto::bitfield::{Bitfield, GrowingSet};
use ccfd_proto::metainfo::Metainfo;
use ccfd_proto::wire::{BlockRef, BLOCK_SIZE};
use ccfd_vod::plan::PeerView;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::ccfd::receive::Evidence;
use crate::ccfd::{CodedRouter, CodedTorrent};
use crate::decide::choker::{Choker, ChokerConfig};
use crate::decide::file_select;
use crate::decide::picker::{BlockOutcome, PeerKey, Picker, PieceState, Progress};
use crate::decide::stream_plan::{self, StreamPlan, SERVER_KEY};
use crate::decide::superseed::{SuperSeed, SuperSeedMode};
use crate::discovery::dht::Dht;
use crate::discovery::PeerSource;
use crate::net::transport::{Obfuscation, Transport};
use crate::net::{Net, Traffic};
use crate::resume;
use crate::storage::{OpenMode, Storage, StorageError};

/// Tunables of one torrent; tests shorten the timeouts.
#[derive(Debug, Clone)]
pub struct TorrentConfig {
    /// Connections per torrent, inbound and outbound together.
    pub max_peers: usize,
    /// Tit-for-tat slots and intervals.
    pub choker: ChokerConfig,
    /// A peer that sends nothing for this long while we wait on requests is snubbed.
    pub snub_timeout: Duration,
    /// A connection silent this long is closed (peers send keep-alives every 2 min).
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Hash failures a peer may contribute to before it is banned.
    pub ban_strikes: u32,
    /// When a seed reveals pieces one by one (BEP 16) so each leaves it
    /// about once: by default while it is the swarm's initial seed.
    pub super_seed: SuperSeedMode,
    /// Ask for the pieces peers allow us while they choke us (BEP 6
    /// allowed-fast); off only to measure what they bring.
    pub use_allowed_fast: bool,
    /// Download only these files (indexes into the metainfo's files);
    /// `None`: every file. The others are never created on disk.
    pub only_files: Option<Vec<usize>>,
    /// Fetch from the torrent's web seeds (BEP 19 `url-list`) like from
    /// peers. Off for streams (the url-list is their VoD server, whose
    /// bytes are a penalty) and in the VoD world's peers.
    pub web_seeds: bool,
    /// Hash every piece at the start even where the resume record says
    /// the files are unchanged (`--recheck`).
    pub recheck: bool,
}

impl Default for TorrentConfig {
    fn default() -> Self {
        TorrentConfig {
            max_peers: 50,
            choker: ChokerConfig::default(),
            snub_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(180),
            connect_timeout: Duration::from_secs(10),
            ban_strikes: 3,
            super_seed: SuperSeedMode::Auto,
            use_allowed_fast: true,
            only_files: None,
            recheck: false,
            web_seeds: false,
        }
    }
}

/// What stopped a torrent: the command line reports it and exits.
#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the hashing task failed: {0}")]
    Hashing(#[from] tokio::task::JoinError),
    #[error("the VoD server failed piece {piece} {attempts} times")]
    VodServer { piece: u32, attempts: u32 },
    #[error("stopped")]
    Stopped,
}

/// Messages from the swarm to one peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerCommand {
    /// We verified this piece: tell the peer.
    Have(u32),
    /// Another peer delivered this block first (endgame): cancel our request.
    Cancel(BlockRef),
    /// Choke (true) or unchoke (false) the peer.
    Choke(bool),
    /// Close the connection (banned, duplicate, or shutting down).
    Close,
    /// Our rank for a block we receive coded changed: tell coded neighbours.
    CodedRank(BlockRef, u16),
}

/// Why a connection was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Rejected {
    #[error("peer is banned")]
    Banned,
    #[error("already connected to this peer")]
    Duplicate,
    #[error("connection to ourselves")]
    SelfConnection,
    #[error("connection limit reached")]
    Full,
}

/// An admitted connection: its key, its command channel, and the counter
/// its uploads go to.
pub(crate) struct Admitted {
    pub key: PeerKey,
    pub commands: mpsc::UnboundedReceiver<PeerCommand>,
    pub traffic: Arc<Traffic>,
}

struct PeerEntry {
    addr: SocketAddr,
    /// Where others can reach it: the address we dialed, or (inbound) its
    /// listen port from the extended handshake. What PEX tells others.
    listen: Option<SocketAddr>,
    /// We dialed it (so it accepts connections).
    outgoing: bool,
    peer_id: [u8; 20],
    transport: Transport,
    obfuscation: Obfuscation,
    tx: mpsc::UnboundedSender<PeerCommand>,
    traffic: Arc<Traffic>,
    interested: bool,
    unchoked: bool,
    /// It chokes us (every connection starts choked).
    chokes_us: bool,
    /// Coded cooperation is on with it.
    coded: bool,
    is_seed: bool,
    /// Sends nothing we asked for: no regular unchoke slot.
    snubbed: bool,
    /// Bytes this tick, and smoothed rates in bytes per second.
    down_tick: u64,
    down_rate: f64,
    up_rate: f64,
    /// Super-seeding: the pieces this peer was shown and does not have yet.
    shown: Vec<u32>,
}

struct PieceBuffer {
    data: Vec<u8>,
    /// Who sent each block over the plain wire (None: not yet, or coded).
    block_from: Vec<Option<IpAddr>>,
    /// The packets coded blocks were decoded from, with their senders.
    coded: Vec<Evidence>,
}

/// A block of a piece that failed its hash: who sent it and its SHA-1. When
/// the piece later verifies, a sender whose block differs from the good one
/// is proven to have lied ("smart ban"), so honest peers that merely shared
/// a piece with a liar are never blamed.
type SuspectBlock = (usize, IpAddr, [u8; 20]);
/// Suspect blocks kept per piece, across failed attempts.
const MAX_SUSPECTS_PER_PIECE: usize = 1024;
/// Free piece buffers kept for reuse.
const POOL_LIMIT: usize = 16;

/// A piece whose last block just arrived: hand it to `Swarm::verify`.
pub(crate) struct CompletedPiece {
    piece: u32,
    buf: PieceBuffer,
}

struct SwarmState {
    picker: Picker,
    buffers: HashMap<u32, PieceBuffer>,
    peers: HashMap<PeerKey, PeerEntry>,
    candidates: HashMap<SocketAddr, Candidate>,
    connecting: HashSet<SocketAddr>,
    strikes: HashMap<IpAddr, u32>,
    banned: HashSet<IpAddr>,
    suspects: HashMap<u32, Vec<SuspectBlock>>,
    /// Recycled piece buffers: no zero-fill, no page faults, bounded memory.
    pool: Vec<Vec<u8>>,
    choker: Choker,
    superseed: SuperSeed,
    /// Since when exactly one leecher is connected, as last looked at.
    lone_since: Option<Instant>,
    next_key: PeerKey,
    rng: StdRng,
    downloaded: u64,
    wasted: u64,
    piece_failures: u32,
    bytes_from: BTreeMap<SocketAddr, u64>,
    /// New candidate addresses each peer source gave.
    sources: BTreeMap<PeerSource, u64>,
    /// Bytes the VoD server (web seed) sent.
    server_bytes: u64,
    /// Bytes of blocks decoded from coded packets.
    coded_bytes: u64,
    completed_at: Option<Instant>,
}

impl SwarmState {
    fn new(meta: &Metainfo, have: Bitfield, config: &TorrentConfig, completed_at: Option<Instant>, rng: &mut StdRng) -> SwarmState {
        let mut picker = Picker::new(meta.piece_length, meta.total_length, have, rng);
        if let Some(only) = &config.only_files {
            picker.set_wanted(file_select::wanted_pieces(meta, only));
        }
        SwarmState {
            picker,
            buffers: HashMap::new(),
            peers: HashMap::new(),
            candidates: HashMap::new(),
            connecting: HashSet::new(),
            strikes: HashMap::new(),
            banned: HashSet::new(),
            suspects: HashMap::new(),
            pool: Vec::new(),
            choker: Choker::new(config.choker.clone()),
            superseed: SuperSeed::new(meta.piece_count()),
            lone_since: None,
            next_key: 1,
            rng: StdRng::from_rng(rng),
            downloaded: 0,
            wasted: 0,
            piece_failures: 0,
            bytes_from: BTreeMap::new(),
            sources: BTreeMap::new(),
            server_bytes: 0,
            coded_bytes: 0,
            completed_at,
        }
    }

    /// Adds addresses `source` gave; the user's (`Manual`) are retried for
    /// the torrent's life. True if any is new.
    fn add_candidates(&mut self, addrs: impl IntoIterator<Item = SocketAddr>, source: PeerSource, ours: SocketAddr, now: Instant) -> bool {
        let pinned = source == PeerSource::Manual;
        let mut fresh = 0;
        for addr in addrs {
            // A v4-mapped address is the IPv4 peer itself.
            let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
            if addr == ours || addr.port() == 0 || addr.ip().is_unspecified() || self.banned.contains(&addr.ip()) {
                continue;
            }
            let candidate = self.candidates.entry(addr).or_insert_with(|| {
                fresh += 1;
                Candidate { next_try: now, failures: 0, pinned, encrypted: false, seed: false }
            });
            candidate.pinned |= pinned;
        }
        *self.sources.entry(source).or_default() += fresh;
        fresh > 0
    }

    /// Admits a handshaken connection, or says why not.
    fn admit(
        &mut self,
        addr: SocketAddr,
        peer_id: [u8; 20],
        outgoing: bool,
        (transport, obfuscation): (Transport, Obfuscation),
        traffic: Arc<Traffic>,
        max_peers: usize,
    ) -> Result<(PeerKey, mpsc::UnboundedReceiver<PeerCommand>), Rejected> {
        if self.banned.contains(&addr.ip()) {
            return Err(Rejected::Banned);
        }
        if self.peers.values().any(|p| p.peer_id == peer_id || p.addr == addr) {
            // Another address of a peer we already talk to (its listening
            // port while it dialed us from another): back off as after a
            // failure instead of dialing it again every second.
            if let Some(c) = self.candidates.get_mut(&addr) {
                c.failed(Instant::now());
            }
            return Err(Rejected::Duplicate);
        }
        if self.peers.len() >= max_peers {
            return Err(Rejected::Full);
        }
        let key = self.next_key;
        self.next_key += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let entry = PeerEntry {
            addr,
            listen: outgoing.then_some(addr),
            outgoing,
            peer_id,
            transport,
            obfuscation,
            tx,
            traffic,
            interested: false,
            unchoked: false,
            chokes_us: true,
            coded: false,
            is_seed: false,
            snubbed: false,
            down_tick: 0,
            down_rate: 0.0,
            up_rate: 0.0,
            shown: Vec::new(),
        };
        self.peers.insert(key, entry);
        if let Some(c) = self.candidates.get_mut(&addr) {
            c.failures = 0;
        }
        Ok((key, rx))
    }
}

/// A torrent's swarm, shared by its connections and tasks.
pub struct Swarm {
    pub meta: Arc<Metainfo>,
    pub net: Arc<Net>,
    pub config: TorrentConfig,
    storage: Arc<Storage>,
    state: Mutex<SwarmState>,
    /// The verified pieces, readable without the state lock.
    verified: Arc<GrowingSet>,
    /// Bytes uploaded over all connections (the connections' `Traffic` adds to it).
    uploaded: Arc<AtomicU64>,
    complete_tx: watch::Sender<bool>,
    /// How many pieces are verified (and written): readers of the file wait on it.
    verified_tx: watch::Sender<u32>,
    fatal: Mutex<Option<Arc<TorrentError>>>,
    /// Set once the verifier has stopped and saved the last resume record.
    resume_saved: watch::Sender<bool>,
    /// Set while streaming: the picker follows its deadlines.
    stream: Mutex<Option<Arc<StreamPlan>>>,
    verify_tx: mpsc::UnboundedSender<(u32, PieceBuffer, OwnedSemaphorePermit)>,
    /// Pieces in verification at once: the backpressure that bounds memory
    /// when the network outruns hashing.
    verify_slots: Arc<Semaphore>,
    /// Coded cooperation, when the client offers it.
    pub coded: Option<Arc<CodedTorrent>>,
    /// The client's DHT node, unless it is off or the torrent is private.
    pub(crate) dht: Option<Dht>,
    /// Wakes the dialer when new addresses arrive or a peer leaves, so
    /// they are dialed at once instead of at the next tick.
    wake_dialer: Notify,
    pub shutdown: CancellationToken,
    pub started: Instant,
}

/// How coded cooperation is set up for a new torrent.
#[derive(Clone)]
pub(crate) struct CodedSetup {
    pub(crate) router: Arc<CodedRouter>,
    /// Corrupt every coded payload we send (the hostile-peer tests).
    pub(crate) polluter: bool,
    /// Paths with a shorter TCP round trip stay plain (`ccfd::coding_pays`).
    pub(crate) min_rtt: Duration,
}

/// The client-wide services a torrent may use.
#[derive(Clone, Default)]
pub(crate) struct Services {
    pub(crate) coded: Option<CodedSetup>,
    pub(crate) dht: Option<Dht>,
}

/// The pieces already on disk when a torrent opens: those the resume
/// record vouches for (files unchanged since it was saved), plus what
/// hashing finds in files that changed; every piece hashed without a
/// usable record or with `recheck`.
fn check_on_open(storage: &Storage, meta: &Metainfo, recheck: bool) -> Bitfield {
    let record = if recheck { Err("--recheck".to_string()) } else { resume::load(storage.root(), meta) };
    match record {
        Ok(record) => {
            let plan = resume::plan(meta, &record, &storage.stamps());
            let mut have = storage.verify_some(meta, &plan.recheck);
            let hashed = plan.recheck.count();
            for p in plan.trusted.ones() {
                have.set(p);
            }
            tracing::info!(trusted = plan.trusted.count(), hashed, "resume record used: files unchanged since it was saved are not hashed");
            have
        }
        Err(why) => {
            tracing::info!(%why, "no resume record to use: hashing every piece");
            storage.verify_all(meta)
        }
    }
}

impl Swarm {
    /// Opens storage (re-checking any data already there). The returned
    /// queue is the verifier's input: `torrent::Torrent::start` runs it.
    pub(crate) async fn open(
        net: Arc<Net>,
        services: Services,
        meta: Arc<Metainfo>,
        root: &Path,
        mode: OpenMode,
        config: TorrentConfig,
    ) -> Result<(Arc<Swarm>, VerifyQueue), StorageError> {
        let started = Instant::now();
        let (storage, have) = {
            let meta = meta.clone();
            let only = config.only_files.clone();
            let dir = root.to_path_buf();
            let recheck = config.recheck;
            tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
                let storage = Storage::open_selected(&meta, &dir, mode, only.as_deref())?;
                let have = if storage.fresh { Bitfield::new(meta.piece_count()) } else { check_on_open(&storage, &meta, recheck) };
                Ok((storage, have))
            })
            .await
            .map_err(|e| StorageError::Io { path: root.to_path_buf(), source: std::io::Error::other(e) })??
        };
        tracing::info!(verified = have.count(), total = have.len(), "storage checked");
        let mut rng = StdRng::from_os_rng();
        let storage = Arc::new(storage);
        let verified = Arc::new(GrowingSet::new(&have));
        let coded = services
            .coded
            .map(|c| Arc::new(CodedTorrent::new(c.router, meta.clone(), storage.clone(), verified.clone(), c.polluter, c.min_rtt)));
        // BEP 27: a private torrent finds peers through its trackers only.
        let dht = services.dht.filter(|_| !meta.private);
        let mut state = SwarmState::new(&meta, have, &config, None, &mut rng);
        let complete = state.picker.is_done();
        if complete {
            state.completed_at = Some(started);
        }
        let (verify_tx, verify_rx) = mpsc::unbounded_channel();
        let swarm = Arc::new(Swarm {
            shutdown: net.shutdown.child_token(),
            net,
            config,
            storage,
            state: Mutex::new(state),
            verified,
            uploaded: Arc::new(AtomicU64::new(0)),
            complete_tx: watch::channel(complete).0,
            verified_tx: watch::channel(0).0,
            fatal: Mutex::new(None),
            stream: Mutex::new(None),
            verify_tx,
            verify_slots: Arc::new(Semaphore::new(verify::VERIFY_SLOTS)),
            resume_saved: watch::channel(false).0,
            coded,
            dht,
            wake_dialer: Notify::new(),
            started,
            meta,
        });
        Ok((swarm, VerifyQueue(verify_rx)))
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    pub fn is_complete(&self) -> bool {
        *self.complete_tx.borrow()
    }

    /// Fires when the last piece is verified.
    pub fn subscribe_complete(&self) -> watch::Receiver<bool> {
        self.complete_tx.subscribe()
    }

    /// Changes each time a piece is verified and on disk.
    pub fn subscribe_verified(&self) -> watch::Receiver<u32> {
        self.verified_tx.subscribe()
    }

    /// Resolves once the torrent has stopped and its last resume record is
    /// saved (what a clean exit waits for, so the restart hashes nothing).
    pub async fn resume_saved(&self) {
        let mut rx = self.resume_saved.subscribe();
        let _ = rx.wait_for(|&saved| saved).await;
    }

    /// A fatal error (disk full, files removed) that stopped the torrent.
    pub fn fatal_error(&self) -> Option<Arc<TorrentError>> {
        self.fatal.lock().clone()
    }

    pub fn peer_count(&self) -> usize {
        self.state.lock().peers.len()
    }

    /// Our verified pieces, for the bitfield message.
    pub fn have(&self) -> Bitfield {
        self.state.lock().picker.have().clone()
    }

    /// Whether piece `piece` is verified (we may serve it).
    pub fn has_piece(&self, piece: u32) -> bool {
        self.verified.contains(piece)
    }

    /// Picks blocks to request from a peer that owes us `queued` bytes and
    /// delivers at `rate` (`None`: not known yet); by deadline while streaming.
    pub(crate) fn pick(&self, key: PeerKey, has: &Bitfield, max: usize, queued: u64, rate: Option<f64>) -> Vec<BlockRef> {
        let plan = self.stream.lock().clone();
        let mut s = self.state.lock();
        // Unknown is zero to the planner, which then assumes its prior.
        let rate = rate.unwrap_or(0.0);
        let SwarmState { picker, rng, .. } = &mut *s;
        match plan {
            Some(plan) => {
                let now = self.started.elapsed().as_secs_f64();
                stream_plan::pick(&plan, picker, key, has, max, PeerView { rate, queued }, now, rng)
            }
            None => picker.pick(key, has, max, rng),
        }
    }

    /// Streams from now on: the picker follows `plan`'s deadlines.
    pub fn set_stream_plan(&self, plan: Arc<StreamPlan>) {
        *self.stream.lock() = Some(plan);
    }

    /// Fetches file `file` too (chosen after the start, from `--serve`'s
    /// index): it is created on disk and its pieces become wanted, so a
    /// complete torrent is a downloading one again.
    pub fn select_file(&self, file: usize) -> Result<(), StorageError> {
        if self.storage.is_selected(file) {
            return Ok(());
        }
        self.storage.select_file(file)?;
        let mut s = self.state.lock();
        s.picker.want_more(file_select::file_pieces(&self.meta, file));
        if !s.picker.is_done() {
            s.completed_at = None;
            self.complete_tx.send_replace(false);
        }
        drop(s);
        tracing::info!(file, path = %self.meta.files[file].path.display(), "file added to the download");
        self.wake_dialer.notify_one();
        Ok(())
    }

    /// Bytes of `piece` still missing, and of those not requested.
    pub fn piece_progress(&self, piece: u32) -> Progress {
        self.state.lock().picker.progress(piece)
    }

    /// Bytes still missing of every piece (0 once verified), in one look.
    pub fn pieces_remaining(&self) -> Vec<u64> {
        let s = self.state.lock();
        (0..self.meta.piece_count()).map(|i| s.picker.progress(i).remaining).collect()
    }

    /// Hands the missing blocks of `piece` to the VoD server, cancelling
    /// peers' requests for them.
    pub(crate) fn claim_for_server(&self, piece: u32) -> Vec<BlockRef> {
        let mut s = self.state.lock();
        let claimed = s.picker.claim_for_server(piece, SERVER_KEY);
        for (block, peers) in &claimed {
            for key in peers {
                if let Some(p) = s.peers.get(key) {
                    let _ = p.tx.send(PeerCommand::Cancel(*block));
                }
            }
        }
        claimed.into_iter().map(|(b, _)| b).collect()
    }

    /// A block arrived from web seed `key` (an ordinary source of a download).
    pub(crate) fn on_web_seed_block(&self, key: PeerKey, block: BlockRef, data: &Bytes) -> Option<CompletedPiece> {
        let mut s = self.state.lock();
        self.accept_block(&mut s, key, None, block, data, Vec::new())
    }

    /// Forgets every request of a source that is gone (a dropped web seed).
    pub(crate) fn release_source(&self, key: PeerKey) {
        self.state.lock().picker.release_all(key);
    }

    /// Where piece `piece` stands in the picker.
    pub fn piece_state(&self, piece: u32) -> Option<PieceState> {
        self.state.lock().picker.state(piece).cloned()
    }

    /// A block arrived from the VoD server.
    pub(crate) fn on_server_block(&self, block: BlockRef, data: &Bytes) -> Option<CompletedPiece> {
        let mut s = self.state.lock();
        self.accept_block(&mut s, SERVER_KEY, None, block, data, Vec::new())
    }

    /// Returns requests of a peer to the pool (choked, snubbed, timed out).
    pub(crate) fn release(&self, key: PeerKey, blocks: impl IntoIterator<Item = BlockRef>) {
        let mut s = self.state.lock();
        for b in blocks {
            s.picker.release(key, b);
        }
    }

    /// A block arrived from a peer. Returns the piece when this block completed it:
    /// the caller hands it to `verify`.
    pub(crate) fn on_block(&self, key: PeerKey, block: BlockRef, data: &Bytes) -> Option<CompletedPiece> {
        self.on_peer_block(key, block, data, Vec::new())
    }

    /// A block decoded from a peer's coded packets (`evidence`).
    pub(crate) fn on_coded_block(&self, key: PeerKey, block: BlockRef, data: &Bytes, evidence: Vec<Evidence>) -> Option<CompletedPiece> {
        self.on_peer_block(key, block, data, evidence)
    }

    /// A block from a connected peer, plain or decoded: credits the peer and
    /// stores the block. A block for a peer that has since left is dropped.
    fn on_peer_block(&self, key: PeerKey, block: BlockRef, data: &Bytes, evidence: Vec<Evidence>) -> Option<CompletedPiece> {
        let mut s = self.state.lock();
        let peer = s.peers.get_mut(&key)?;
        peer.down_tick += u64::from(block.length);
        peer.snubbed = false;
        let addr = peer.addr;
        self.accept_block(&mut s, key, Some(addr), block, data, evidence)
    }

    /// Stores a block from a peer (`from`) or the server (`None`);
    /// `evidence` is non-empty for a block decoded from coded packets.
    fn accept_block(
        &self,
        s: &mut SwarmState,
        key: PeerKey,
        from: Option<SocketAddr>,
        block: BlockRef,
        data: &Bytes,
        evidence: Vec<Evidence>,
    ) -> Option<CompletedPiece> {
        match s.picker.block_received(key, block) {
            BlockOutcome::Unwanted => {
                s.wasted += u64::from(block.length);
                None
            }
            BlockOutcome::Accepted { complete, cancel } => {
                let len = u64::from(block.length);
                s.downloaded += len;
                if !evidence.is_empty() {
                    s.coded_bytes += len;
                }
                match from {
                    Some(addr) => *s.bytes_from.entry(addr).or_default() += len,
                    None => s.server_bytes += len,
                }
                let piece_len = self.meta.piece_len(block.piece) as usize;
                let blocks = piece_len.div_ceil(BLOCK_SIZE as usize);
                if !s.buffers.contains_key(&block.piece) {
                    let mut data = s.pool.pop().unwrap_or_default();
                    // Recycled bytes are never read: a piece completes only when every block was written.
                    data.resize(piece_len, 0);
                    s.buffers.insert(block.piece, PieceBuffer { data, block_from: vec![None; blocks], coded: Vec::new() });
                }
                let buf = s.buffers.get_mut(&block.piece)?;
                let at = block.offset as usize;
                buf.data[at..at + data.len()].copy_from_slice(data);
                // A coded block is blamed through its packets, not its last sender.
                buf.block_from[at / BLOCK_SIZE as usize] = if evidence.is_empty() { from.map(|a| a.ip()) } else { None };
                buf.coded.extend(evidence);
                for other in cancel {
                    if let Some(p) = s.peers.get(&other) {
                        let _ = p.tx.send(PeerCommand::Cancel(block));
                    }
                }
                if complete {
                    return s.buffers.remove(&block.piece).map(|buf| CompletedPiece { piece: block.piece, buf });
                }
                None
            }
        }
    }

    /// Queues a completed piece for hashing, waiting for a verification slot.
    pub(crate) async fn verify(&self, done: CompletedPiece) {
        let Ok(permit) = self.verify_slots.clone().acquire_owned().await else { return };
        let _ = self.verify_tx.send((done.piece, done.buf, permit));
    }

    /// Tells every connection our rank for `block` (coded have), so a
    /// neighbour holding more of it may recode for us, and a feeder stops
    /// once we are done.
    pub(crate) fn coded_announce(&self, block: BlockRef, rank: u16) {
        for p in self.state.lock().peers.values() {
            let _ = p.tx.send(PeerCommand::CodedRank(block, rank));
        }
    }

    /// Stops the torrent with a fatal error the command line reports.
    pub fn abort(&self, error: TorrentError) {
        let mut s = self.state.lock();
        self.fail(&mut s, error);
    }

    fn fail(&self, s: &mut SwarmState, error: TorrentError) {
        tracing::error!(%error, "torrent stopped");
        *self.fatal.lock() = Some(Arc::new(error));
        for p in s.peers.values() {
            let _ = p.tx.send(PeerCommand::Close);
        }
        self.shutdown.cancel();
    }

    /// Asks every connection to close (the torrent is stopping).
    pub(crate) fn close_all(&self) {
        for p in self.state.lock().peers.values() {
            let _ = p.tx.send(PeerCommand::Close);
        }
    }

    /// Whether we still ask `ip` for coded packets (its datagrams reached us).
    pub fn coded_reachable(&self, ip: IpAddr) -> bool {
        self.coded.as_ref().is_none_or(|c| c.reachable(ip))
    }

    /// Who we say we are to this torrent's peers (no DHT for a private torrent).
    pub(crate) fn us(&self) -> crate::net::handshake::Us {
        crate::net::handshake::Us { dht: self.dht.is_some(), ..self.net.us() }
    }

    pub(crate) fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }
}
