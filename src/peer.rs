//! One connection to one peer, after the handshake.
//!
//! Three tasks per connection: this reader loop (protocol state, requests,
//! timeouts), a writer that batches outgoing frames into few syscalls, and an
//! uploader that reads requested blocks from disk within the upload cap, so a
//! slow disk or a rate cap never stalls our own downloading.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::Instrument;

use crate::coded::link::CodedLink;
use crate::coded::proto::{Control, Offer, GENERATION};
use crate::coded::Arrival;
use crate::delivery_rate::DeliveryRate;
use crate::picker::PeerKey;
use crate::session::{PeerCommand, Session};
use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::extended::{our_ids, ExtendedHandshake, Extension, TheirIds};
use ccfd_proto::ut_metadata::{answer_request, UtMetadata};
use ccfd_proto::wire::{BlockRef, Handshake, Message, MessageCodec, BLOCK_SIZE, HANDSHAKE_LEN, MAX_BLOCK};

/// Requests we queue for a peer before dropping more; advertised as `reqq`.
pub const OUR_REQQ: usize = 512;
/// Assumed `reqq` of a peer that does not say (libtorrent's historic default).
const DEFAULT_PEER_REQQ: usize = 250;
/// Request queue bounds (blocks) and the seconds of traffic it should cover.
const MIN_QUEUE: usize = 8;
const MAX_QUEUE: usize = 512;
const QUEUE_SECONDS: f64 = 1.5;
const KEEPALIVE_EVERY: Duration = Duration::from_secs(90);
/// Whole pieces up to this size are read once and served block by block.
const PIECE_CACHE_LIMIT: u32 = 4 << 20;
/// How often a coded link renews stalled wants and sends feedback.
const CODED_TICK: Duration = Duration::from_millis(10);

/// Dials `addr` and exchanges handshakes.
pub async fn connect(session: &Arc<Session>, addr: SocketAddr) -> anyhow::Result<(TcpStream, Handshake)> {
    let mut stream = session.client.connect(addr).await?;
    let ours = Handshake::new(session.meta.info_hash, session.client.peer_id);
    stream.write_all(&ours.to_bytes()).await?;
    let mut buf = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut buf).await?;
    let theirs = Handshake::parse(&buf)?;
    if theirs.info_hash != ours.info_hash {
        bail!("peer answered for another torrent");
    }
    Ok((stream, theirs))
}

/// Runs a handshaken connection until it closes. Its log lines carry our
/// own address, so the clients of one process (a world) can be told apart.
pub async fn run(session: Arc<Session>, stream: TcpStream, addr: SocketAddr, theirs: Handshake) {
    let span = tracing::debug_span!("peer", ours = %session.client.bind);
    run_connection(session, stream, addr, theirs).instrument(span).await
}

async fn run_connection(session: Arc<Session>, stream: TcpStream, addr: SocketAddr, theirs: Handshake) {
    let (key, commands) = match session.register_peer(addr, theirs.peer_id) {
        Ok(admitted) => admitted,
        Err(reason) => {
            tracing::debug!(%addr, %reason, "connection not admitted");
            return;
        }
    };
    tracing::debug!(%addr, client = %ccfd_proto::wire::client_name(&theirs.peer_id), "peer connected");
    let (read_half, write_half) = stream.into_split();
    let (out_tx, out_rx) = mpsc::channel(1024);
    let (up_tx, up_rx) = mpsc::channel(OUR_REQQ);
    let shared = Arc::new(UploadShared { pending: Mutex::new(HashSet::new()) });
    let writer = tokio::spawn(write_loop(FramedWrite::new(write_half, MessageCodec), out_rx));
    let uploader = tokio::spawn(upload_loop(session.clone(), key, up_rx, out_tx.clone(), shared.clone()));
    let (coded, coded_rx) = match &session.client.coded {
        Some(t) => {
            let (link, rx) = CodedLink::new(t.clone(), addr.ip());
            (Some(link), Some(rx))
        }
        None => (None, None),
    };
    let mut conn = Connection {
        coded,
        our_have: session.have(),
        has: Bitfield::new(session.meta.piece_count()),
        session: session.clone(),
        key,
        addr,
        peer_choking: true,
        am_interested: false,
        am_choking: true,
        outstanding: HashSet::new(),
        queue_target: MIN_QUEUE * 2,
        peer_reqq: DEFAULT_PEER_REQQ,
        their_ids: TheirIds::default(),
        last_block: Instant::now(),
        last_recv: Instant::now(),
        last_keepalive: Instant::now(),
        window_bytes: 0,
        delivery: DeliveryRate::default(),
        rate: 0.0,
        out: out_tx,
        uploads: up_tx,
        upload: shared,
    };
    let result = conn.run(FramedRead::new(read_half, MessageCodec), commands, coded_rx, theirs.supports_extensions()).await;
    if let Err(e) = &result {
        tracing::debug!(%addr, error = %e, "peer connection closed");
    }
    // Returns its requests to the pool and its pieces' availability.
    session.unregister_peer(key, &conn.has);
    uploader.abort();
    drop(conn);
    let _ = writer.await;
}

/// The peer's requests queued for the uploader. A block is served only if
/// the uploader can still take it out of this set: a `cancel` or a choke
/// removes it first. (A set of cancelled blocks would go stale: a cancel that
/// arrives after the block was served would block a later re-request.)
struct UploadShared {
    pending: Mutex<HashSet<BlockRef>>,
}

struct Connection {
    session: Arc<Session>,
    /// The coded side of this connection (ccfd), when our client offers it.
    coded: Option<CodedLink>,
    key: PeerKey,
    addr: SocketAddr,
    /// Pieces the peer has.
    has: Bitfield,
    /// Pieces we have (kept current by `Have` commands), to validate requests without locking.
    our_have: Bitfield,
    peer_choking: bool,
    am_interested: bool,
    am_choking: bool,
    /// Requests in flight to this peer.
    outstanding: HashSet<BlockRef>,
    queue_target: usize,
    peer_reqq: usize,
    /// The ids the peer wants each extension's messages on (BEP 10).
    their_ids: TheirIds,
    last_block: Instant,
    last_recv: Instant,
    last_keepalive: Instant,
    window_bytes: u64,
    /// Smoothed download rate from this peer, bytes per second.
    rate: f64,
    /// What it delivers since its last unchoke, for the deadline planner.
    delivery: DeliveryRate,
    out: mpsc::Sender<Message>,
    uploads: mpsc::Sender<BlockRef>,
    upload: Arc<UploadShared>,
}

type Reader = FramedRead<tokio::net::tcp::OwnedReadHalf, MessageCodec>;

impl Connection {
    async fn run(
        &mut self,
        mut reader: Reader,
        mut commands: mpsc::UnboundedReceiver<PeerCommand>,
        mut coded_rx: Option<mpsc::Receiver<Arrival>>,
        extensions: bool,
    ) -> anyhow::Result<()> {
        let super_seeding = self.session.super_seeding();
        if self.our_have.count() > 0 && !super_seeding {
            self.send(Message::Bitfield(Bytes::copy_from_slice(self.our_have.as_bytes()))).await?;
        }
        if extensions {
            let offered = Extension::ALL.into_iter().filter(|&e| e != Extension::Ccfd || self.coded.is_some());
            let m = our_ids(offered);
            let hs = ExtendedHandshake {
                v: Some(concat!("ccfd-bt ", env!("CARGO_PKG_VERSION")).into()),
                m,
                reqq: Some(OUR_REQQ as i64),
                p: Some(i64::from(self.session.client.listen_addr.port())),
                metadata_size: Some(self.session.meta.info_bytes.len() as i64),
                ccfd: self.coded.as_ref().map(|c| c.offer().to_value()),
            };
            self.send(Message::Extended { id: 0, payload: hs.to_bytes() }).await?;
        }
        if super_seeding {
            self.reveal_more().await?;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut coded_tick = tokio::time::interval(CODED_TICK);
        coded_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let shutdown = self.session.shutdown.clone();
        loop {
            let coded_active = self.coded.as_ref().is_some_and(|c| c.is_active());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                cmd = commands.recv() => match cmd {
                    None | Some(PeerCommand::Close) => return Ok(()),
                    Some(cmd) => self.on_command(cmd).await?,
                },
                arrival = recv_arrival(&mut coded_rx) => self.on_arrival(arrival).await?,
                _ = coded_tick.tick(), if coded_active => self.on_coded_tick().await?,
                msg = reader.next() => match msg {
                    None => return Ok(()),
                    Some(msg) => {
                        self.last_recv = Instant::now();
                        self.on_message(msg?).await?;
                    }
                },
                _ = tick.tick() => self.on_tick().await?,
            }
        }
    }

    async fn send(&self, msg: Message) -> anyhow::Result<()> {
        self.out.send(msg).await.context("writer closed")
    }

    async fn set_interested(&mut self, interested: bool) -> anyhow::Result<()> {
        if interested != self.am_interested {
            tracing::debug!(addr = %self.addr, interested, "our interest changed");
            self.am_interested = interested;
            self.send(if interested { Message::Interested } else { Message::NotInterested }).await?;
        }
        Ok(())
    }

    async fn on_message(&mut self, msg: Message) -> anyhow::Result<()> {
        let n = self.has.len();
        match msg {
            Message::Bitfield(bits) => {
                // BEP 3 puts it first, but BEP 10 lets the extended handshake come
                // before it and some clients (aria2) send it again: the latest wins.
                let new = Bitfield::from_wire(&bits, n).context("bitfield of the wrong length")?;
                let old = std::mem::replace(&mut self.has, new);
                let wants = self.session.peer_bitfield(self.key, &old, &self.has);
                self.set_interested(wants).await?;
                self.reveal_more().await?;
            }
            Message::Have(piece) => {
                if piece >= n {
                    bail!("have for piece {piece} of {n}");
                }
                if self.has.set(piece) && self.session.peer_have(self.key, piece, &self.has) {
                    self.set_interested(true).await?;
                }
                self.reveal_more().await?;
            }
            Message::Choke => {
                tracing::debug!(addr = %self.addr, "choked by peer");
                self.peer_choking = true;
                if let Some(link) = &mut self.coded {
                    link.forget_all();
                }
                self.session.peer_choking(self.key, true);
                self.delivery.choked();
                let held: Vec<BlockRef> = self.outstanding.drain().collect();
                self.session.release(self.key, held);
            }
            Message::Unchoke => {
                tracing::debug!(addr = %self.addr, "unchoked by peer");
                self.peer_choking = false;
                self.session.peer_choking(self.key, false);
                self.last_block = Instant::now();
                self.delivery.unchoked(self.last_block);
            }
            Message::Interested => self.session.peer_interest(self.key, true),
            Message::NotInterested => {
                self.session.peer_interest(self.key, false);
                // Super-seeding: a peer that wants nothing more of what it was shown is shown more.
                self.reveal_more().await?;
            }
            Message::Request(block) => self.on_request(block)?,
            Message::Piece { piece, offset, data } => {
                let block = BlockRef { piece, offset, length: data.len() as u32 };
                tracing::trace!(addr = %self.addr, piece, offset, "block");
                self.outstanding.remove(&block);
                self.last_block = Instant::now();
                self.delivery.record(self.last_block, data.len() as u64);
                self.window_bytes += data.len() as u64;
                self.session.client.download.acquire(data.len() as u64).await;
                if let Some(done) = self.session.on_block(self.key, block, &data) {
                    self.session.verify(done).await;
                }
            }
            Message::Cancel(block) => {
                self.upload.pending.lock().remove(&block);
            }
            Message::Extended { id: 0, payload } => {
                // A handshake we cannot read (malformed, nested too deep) ends the connection.
                let hs = ExtendedHandshake::parse(&payload).context("extended handshake")?;
                if let Some(q) = hs.reqq.and_then(|q| usize::try_from(q).ok()).filter(|&q| q > 0) {
                    self.peer_reqq = q;
                }
                self.their_ids = TheirIds::from_handshake(&hs);
                let msg_id = self.their_ids.get(Extension::Ccfd);
                let offer = hs.ccfd.as_ref().and_then(Offer::from_value);
                if let (Some(link), Some(id), Some(offer)) = (&mut self.coded, msg_id, offer) {
                    let polluter = self.session.client.coded_polluter;
                    link.activate(self.session.clone(), self.key, self.addr.ip(), &offer, id, polluter);
                    tracing::debug!(addr = %self.addr, active = link.is_active(), "coded extension offered");
                }
            }
            Message::Extended { id, payload } if Extension::from_our_id(id) == Some(Extension::Ccfd) => {
                if let Some(link) = self.coded.as_mut().filter(|l| l.is_active()) {
                    let control = Control::parse(&payload).context("ccfd message")?;
                    link.on_control(control, self.am_choking);
                }
            }
            Message::Extended { id, payload } if Extension::from_our_id(id) == Some(Extension::UtMetadata) => {
                // Serve our info dictionary (BEP 9); ignore anything else on this id.
                if let (Ok(UtMetadata::Request { piece }), Some(id)) =
                    (UtMetadata::parse(&payload), self.their_ids.get(Extension::UtMetadata))
                {
                    let reply = answer_request(&self.session.meta.info_bytes, piece);
                    self.send(Message::Extended { id, payload: reply.to_bytes() }).await?;
                }
            }
            Message::KeepAlive | Message::Port(_) | Message::Extended { .. } | Message::Unknown { .. } => {}
        }
        self.fill_requests().await
    }

    /// Super-seeding: shows the peer its next pieces once it got the last ones.
    async fn reveal_more(&mut self) -> anyhow::Result<()> {
        if self.session.super_seeding() {
            for piece in self.session.reveal(self.key, &self.has) {
                tracing::trace!(addr = %self.addr, piece, "piece revealed");
                self.send(Message::Have(piece)).await?;
            }
        }
        Ok(())
    }

    fn on_request(&mut self, block: BlockRef) -> anyhow::Result<()> {
        if self.am_choking {
            return Ok(()); // BEP 3: requests while choked are dropped
        }
        let valid = block.piece < self.our_have.len()
            && self.our_have.get(block.piece)
            && block.length > 0
            && block.length <= MAX_BLOCK
            && u64::from(block.offset) + u64::from(block.length) <= u64::from(self.session.meta.piece_len(block.piece));
        if !valid {
            bail!("invalid request {block:?}");
        }
        let mut pending = self.upload.pending.lock();
        // A full queue means the peer exceeds the reqq we advertised: drop the request.
        if pending.insert(block) && self.uploads.try_send(block).is_err() {
            pending.remove(&block);
        }
        Ok(())
    }

    async fn on_command(&mut self, cmd: PeerCommand) -> anyhow::Result<()> {
        match cmd {
            PeerCommand::Have(piece) => {
                self.our_have.set(piece);
                self.send(Message::Have(piece)).await?;
            }
            PeerCommand::Cancel(block) => {
                if self.outstanding.remove(&block) {
                    self.cancel_request(block).await?;
                }
            }
            PeerCommand::CodedRank(block, rank) => {
                if self.coded.as_ref().is_some_and(|l| l.is_active()) {
                    self.send_control(CodedLink::rank_message(block, rank)).await?;
                }
            }
            PeerCommand::Choke(choke) => {
                if choke != self.am_choking {
                    tracing::debug!(addr = %self.addr, choke, "choking changed");
                    self.am_choking = choke;
                    if choke {
                        self.upload.pending.lock().clear();
                        if let Some(link) = &mut self.coded {
                            link.on_choke();
                        }
                    }
                    self.send(if choke { Message::Choke } else { Message::Unchoke }).await?;
                    if !choke {
                        // Its shown pieces went to others when it was choked.
                        self.reveal_more().await?;
                    }
                }
            }
            PeerCommand::Close => {}
        }
        Ok(())
    }

    async fn on_tick(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let config = &self.session.config;
        self.rate = 0.6 * self.rate + 0.4 * self.window_bytes as f64;
        self.window_bytes = 0;
        let by_rate = (self.rate * QUEUE_SECONDS / f64::from(BLOCK_SIZE)).ceil() as usize;
        self.queue_target = by_rate.clamp(MIN_QUEUE, MAX_QUEUE.min(self.peer_reqq).max(MIN_QUEUE));
        if now.duration_since(self.last_recv) > config.idle_timeout {
            bail!("idle for {:?}", config.idle_timeout);
        }
        if !self.outstanding.is_empty() && now.duration_since(self.last_block) > config.snub_timeout {
            // Snubbed: hand its requests to other peers, keep the connection.
            tracing::debug!(addr = %self.addr, requests = self.outstanding.len(), "peer snubbed us");
            let held: Vec<BlockRef> = self.outstanding.drain().collect();
            for b in &held {
                self.cancel_request(*b).await?;
            }
            self.session.release(self.key, held);
            self.session.peer_snubbed(self.key, true);
            self.last_block = now;
        }
        if now.duration_since(self.last_keepalive) > KEEPALIVE_EVERY {
            self.last_keepalive = now;
            self.send(Message::KeepAlive).await?;
        }
        let wants = self.session.wants_from(&self.has);
        self.set_interested(wants).await?;
        self.fill_requests().await
    }

    /// Tops the request pipeline up to `queue_target`, in batches.
    async fn fill_requests(&mut self) -> anyhow::Result<()> {
        if self.peer_choking || !self.am_interested {
            return Ok(());
        }
        let ip = self.addr.ip();
        if self.coded.as_ref().is_some_and(|l| l.awaits_path(Instant::now())) && self.session.coded_reachable(ip) {
            return Ok(());
        }
        let room = self.queue_target.saturating_sub(self.outstanding.len());
        if room == 0 || (room < self.queue_target / 8 && !self.outstanding.is_empty()) {
            return Ok(());
        }
        let queued = self.outstanding.iter().map(|b| u64::from(b.length)).sum();
        let rate = self.delivery.rate(Instant::now());
        for block in self.session.pick(self.key, &self.has, room, queued, rate) {
            self.outstanding.insert(block);
            let coded =
                self.coded.as_mut().filter(|l| l.receives() && self.session.coded_allowed(block.piece) && self.session.coded_reachable(ip));
            match coded {
                Some(link) => {
                    tracing::trace!(addr = %self.addr, piece = block.piece, offset = block.offset, "coded want");
                    let want = link.want(&self.session, block);
                    self.send_control(want).await?;
                    self.session.coded_announce(block, self.session.coded_rank(block).unwrap_or(0));
                }
                None => {
                    tracing::trace!(addr = %self.addr, piece = block.piece, offset = block.offset, "request");
                    self.send(Message::Request(block)).await?
                }
            }
        }
        Ok(())
    }

    /// Withdraws one of our requests, plain or coded.
    async fn cancel_request(&mut self, block: BlockRef) -> anyhow::Result<()> {
        match self.coded.as_mut().and_then(|l| l.forget(&block)) {
            Some(cancel) => self.send_control(cancel).await,
            None => self.send(Message::Cancel(block)).await,
        }
    }

    /// Sends a ccfd control message on the peer's extension id.
    async fn send_control(&self, control: Control) -> anyhow::Result<()> {
        let Some(id) = self.coded.as_ref().and_then(|l| l.peer_msg_id) else { return Ok(()) };
        self.send(Message::Extended { id, payload: Bytes::from(control.encode()) }).await
    }

    /// A coded datagram from this peer.
    async fn on_arrival(&mut self, arrival: Arrival) -> anyhow::Result<()> {
        let Some(link) = self.coded.as_mut() else { return Ok(()) };
        let outcome = link.on_arrival(arrival, &self.session, self.key, self.addr.ip());
        let link_opened = link.opening_ended(Instant::now());
        if outcome.innovative_bytes > 0 {
            self.last_block = Instant::now();
            self.delivery.record(self.last_block, outcome.innovative_bytes);
            self.window_bytes += outcome.innovative_bytes;
            self.session.client.download.acquire(outcome.innovative_bytes).await;
        }
        if let Some(block) = outcome.decoded {
            tracing::trace!(addr = %self.addr, piece = block.piece, offset = block.offset, "block decoded");
            self.outstanding.remove(&block);
            self.session.coded_announce(block, GENERATION as u16);
        }
        if let Some(done) = outcome.completed {
            self.session.verify(done).await;
        }
        if outcome.decoded.is_some() || link_opened {
            self.fill_requests().await?;
        }
        Ok(())
    }

    async fn on_coded_tick(&mut self) -> anyhow::Result<()> {
        let Some(link) = self.coded.as_mut() else { return Ok(()) };
        if link.opening_ended(Instant::now()) {
            // No probe came in time: the held requests go out plain.
            return self.fill_requests().await;
        }
        if link.blocked(Instant::now()) {
            // No datagram gets through: take the wants back, ask over TCP.
            let wants = link.fall_back();
            self.session.coded_unreachable(self.addr.ip());
            tracing::info!(addr = %self.addr, "coded packets do not arrive; plain wire from this peer");
            for block in &wants {
                self.outstanding.remove(block);
                self.send_control(Control::Cancel { piece: block.piece, offset: block.offset }).await?;
            }
            self.session.release(self.key, wants);
            return self.fill_requests().await;
        }
        for control in link.on_timer(&self.session) {
            self.send_control(control).await?;
        }
        Ok(())
    }
}

/// The next coded datagram, or never when the connection has no coded side.
async fn recv_arrival(rx: &mut Option<mpsc::Receiver<Arrival>>) -> Arrival {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(a) => a,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn write_loop(mut sink: FramedWrite<OwnedWriteHalf, MessageCodec>, mut rx: mpsc::Receiver<Message>) {
    while let Some(msg) = rx.recv().await {
        if sink.feed(msg).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if sink.feed(more).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

async fn upload_loop(
    session: Arc<Session>,
    key: PeerKey,
    mut requests: mpsc::Receiver<BlockRef>,
    out: mpsc::Sender<Message>,
    shared: Arc<UploadShared>,
) {
    let mut cache: Option<(u32, Bytes)> = None;
    while let Some(block) = requests.recv().await {
        if !shared.pending.lock().remove(&block) {
            continue; // cancelled, or the peer was choked since
        }
        let data = match &cache {
            Some((piece, data)) if *piece == block.piece => data.slice(block.offset as usize..(block.offset + block.length) as usize),
            _ => match read_for_upload(&session, block).await {
                Ok((whole, data)) => {
                    if let Some(whole) = whole {
                        cache = Some((block.piece, whole));
                    }
                    data
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read block to upload");
                    return;
                }
            },
        };
        session.client.upload.acquire(u64::from(block.length)).await;
        if out.send(Message::Piece { piece: block.piece, offset: block.offset, data }).await.is_err() {
            return;
        }
        session.on_upload(key, u64::from(block.length));
    }
}

/// Reads a requested block on the blocking pool; small pieces are read whole for the cache.
async fn read_for_upload(session: &Arc<Session>, block: BlockRef) -> anyhow::Result<(Option<Bytes>, Bytes)> {
    let storage = session.storage().clone();
    let piece_len = session.meta.piece_len(block.piece);
    let piece_offset = u64::from(block.piece) * session.meta.piece_length;
    tokio::task::spawn_blocking(move || {
        if piece_len <= PIECE_CACHE_LIMIT {
            let whole = Bytes::from(storage.read_piece(block.piece, piece_len)?);
            let data = whole.slice(block.offset as usize..(block.offset + block.length) as usize);
            Ok((Some(whole), data))
        } else {
            let mut buf = vec![0u8; block.length as usize];
            storage.read_at(piece_offset + u64::from(block.offset), &mut buf)?;
            Ok((None, Bytes::from(buf)))
        }
    })
    .await?
}
