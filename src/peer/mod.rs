//! One connection to one peer, after the handshake, on any transport.
//!
//! Three tasks per connection: this reader loop (it applies the protocol
//! rules of `wire_state` and talks to the swarm), a writer that batches
//! outgoing frames into few syscalls, and an uploader (`upload`) that reads
//! requested blocks from disk within the upload cap. With coded
//! cooperation on, the connection's `ccfd::link::CodedLink` adds a sender
//! task and a stream of datagrams.

mod pex;
mod upload;
pub mod wire_state;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::extended::{our_ids, ExtendedError, ExtendedHandshake, Extension, TheirIds};
use ccfd_proto::fast::{allowed_fast_set, ALLOWED_FAST};
use ccfd_proto::pex::PexMessage;
use ccfd_proto::ut_metadata::{answer_request, UtMetadata};
use ccfd_proto::wire::{BlockRef, Handshake, Message, MessageCodec, WireError};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::Instrument;

use crate::ccfd;
use crate::ccfd::link::CodedLink;
use crate::ccfd::proto::{Control, Offer, ProtoError, GENERATION};
use crate::ccfd::router::Arrival;
use crate::decide::picker::PeerKey;
use crate::discovery::PeerSource;
use crate::net::transport::{BoxRead, BoxWrite, PeerStream, TcpProbe};
use crate::net::Traffic;
use crate::swarm::{Admitted, PeerCommand, Swarm};
use upload::Pending;
use wire_state::{RequestVerdict, WireState, WireTimeouts, OUR_REQQ};

/// Allowed-fast pieces we keep per peer (BEP 6 sets are about ten).
const MAX_ALLOWED_FAST: usize = 64;
/// How long we wait for a peer's extended handshake before using its allowed-fast set anyway.
const EXTENSIONS_WAIT: Duration = Duration::from_secs(2);
/// How often a coded link renews stalled wants and sends feedback.
const CODED_TICK: Duration = Duration::from_millis(10);

/// Why a connection ended. Every one of these costs only this connection.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Extended(#[from] ExtendedError),
    #[error("ccfd message: {0}")]
    Ccfd(#[from] ProtoError),
    #[error("bitfield of the wrong length")]
    Bitfield,
    #[error("have for piece {piece} of {pieces}")]
    HaveOutOfRange { piece: u32, pieces: u32 },
    #[error("invalid request {0:?}")]
    InvalidRequest(BlockRef),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("writer closed")]
    WriterClosed,
}

/// Runs a handshaken connection until it closes. Its log lines carry our
/// own address, so the clients of one process (a world) can be told apart.
pub async fn run(swarm: Arc<Swarm>, stream: PeerStream, theirs: Handshake) {
    let span = tracing::debug_span!("peer", ours = %swarm.net.bind);
    run_connection(swarm, stream, theirs).instrument(span).await
}

async fn run_connection(swarm: Arc<Swarm>, stream: PeerStream, theirs: Handshake) {
    let addr = stream.remote;
    let Admitted { key, commands, traffic } =
        match swarm.register_peer(addr, theirs.peer_id, stream.outgoing, (stream.transport, stream.obfuscation)) {
            Ok(admitted) => admitted,
            Err(reason) => {
                tracing::debug!(%addr, %reason, "connection not admitted");
                return;
            }
        };
    tracing::debug!(%addr, client = %ccfd_proto::wire::client_name(&theirs.peer_id), transport = %stream.transport, encryption = ?stream.obfuscation, "peer connected");
    let PeerStream { read, write, probe, .. } = stream;
    let (out_tx, out_rx) = mpsc::channel(1024);
    let (up_tx, up_rx) = mpsc::channel(OUR_REQQ);
    let pending = Arc::new(Pending::default());
    let writer = tokio::spawn(write_loop(FramedWrite::new(write, MessageCodec), out_rx));
    let uploader = tokio::spawn(upload::run(swarm.clone(), traffic.clone(), up_rx, out_tx.clone(), pending.clone()));
    let (coded, coded_rx) = match &swarm.coded {
        Some(c) => {
            let (link, rx) = CodedLink::new(c.clone(), addr.ip());
            (Some(link), Some(rx))
        }
        None => (None, None),
    };
    let timeouts = WireTimeouts { snub: swarm.config.snub_timeout, idle: swarm.config.idle_timeout };
    let mut conn = Connection {
        coded,
        our_have: swarm.have(),
        has: Bitfield::new(swarm.meta.piece_count()),
        wire: WireState::new(Instant::now(), timeouts, theirs.supports_fast()),
        allowed_for_them: HashSet::new(),
        allowed_for_us: HashSet::new(),
        allowed_fast_from: Instant::now() + if theirs.supports_extensions() { EXTENSIONS_WAIT } else { Duration::ZERO },
        swarm: swarm.clone(),
        key,
        addr,
        their_ids: TheirIds::default(),
        pex: pex::PexState::new(Instant::now()),
        traffic,
        out: out_tx,
        uploads: up_tx,
        pending,
        hidden: false,
        interested_once: false,
        connected_at: Instant::now(),
        coding_pays: path_pays(&swarm, key, probe.as_ref()),
        probe,
    };
    let result = conn.run(FramedRead::new(read, MessageCodec), commands, coded_rx, &theirs).await;
    if let Err(e) = &result {
        tracing::debug!(%addr, error = %e, "peer connection closed");
    }
    // Returns its requests to the pool and its pieces' availability.
    swarm.unregister_peer(key, &conn.has);
    uploader.abort();
    drop(conn);
    let _ = writer.await;
}

struct Connection {
    swarm: Arc<Swarm>,
    /// The coded side of this connection (ccfd), when our client offers it.
    coded: Option<CodedLink>,
    key: PeerKey,
    addr: SocketAddr,
    /// Pieces the peer has.
    has: Bitfield,
    /// Pieces we have (kept current by `Have` commands), to validate requests without locking.
    our_have: Bitfield,
    wire: WireState,
    /// BEP 6: pieces it may ask for while we choke it (its allowed-fast set).
    allowed_for_them: HashSet<u32>,
    /// BEP 6: pieces we may ask for while it chokes us.
    allowed_for_us: HashSet<u32>,
    /// When allowed-fast pieces may be asked for: once its extended
    /// handshake has said whether it cooperates coded (a coded peer's
    /// pieces come coded, not as plain requests made while it chokes us),
    /// or a moment after connecting if that handshake never comes.
    allowed_fast_from: Instant,
    /// The ids the peer wants each extension's messages on (BEP 10).
    their_ids: TheirIds,
    pex: pex::PexState,
    traffic: Arc<Traffic>,
    out: mpsc::Sender<Message>,
    uploads: mpsc::Sender<BlockRef>,
    pending: Arc<Pending>,
    /// We began by hiding our bitfield (super-seeding): pieces are shown
    /// by `have` a few at a time, or all at once when super-seeding ends.
    hidden: bool,
    /// The peer has said it is interested in us at least once: the
    /// reveals reach it (`HIDDEN_PATIENCE`).
    interested_once: bool,
    connected_at: Instant,
    /// What the kernel measures of the TCP path, for `coding_pays`.
    probe: Option<TcpProbe>,
    /// We ask a coded peer for coded packets, not plain blocks: the path is
    /// long and the peer is our main source (`ccfd::coding_pays`, looked
    /// at once a second).
    coding_pays: bool,
}

/// How long a peer we super-seed to may stay uninterested in the pieces
/// it is shown before it is shown everything: a client that does not take
/// part in the reveals (libtorrent choked and shown one piece, at times)
/// must not wait forever.
const HIDDEN_PATIENCE: Duration = Duration::from_secs(5);

/// Whether to ask this connection's coded peer for coded packets, from
/// what the kernel says of its path (`ccfd::coding_pays`); never when our
/// client does not cooperate coded.
fn path_pays(swarm: &Swarm, key: PeerKey, probe: Option<&TcpProbe>) -> bool {
    swarm.coded.as_ref().is_some_and(|c| ccfd::coding_pays(probe.and_then(TcpProbe::sample), swarm.download_share(key), c.min_rtt))
}

type Reader = FramedRead<BoxRead, MessageCodec>;

impl Connection {
    async fn run(
        &mut self,
        mut reader: Reader,
        mut commands: mpsc::UnboundedReceiver<PeerCommand>,
        mut coded_rx: Option<mpsc::Receiver<Arrival>>,
        theirs: &Handshake,
    ) -> Result<(), PeerError> {
        let super_seeding = self.swarm.super_seeding();
        self.hidden = super_seeding;
        if self.wire.fast {
            // BEP 6: one of these three always comes first.
            let first = match (super_seeding, self.our_have.count()) {
                (true, _) | (false, 0) => Message::HaveNone,
                (false, n) if n == self.our_have.len() => Message::HaveAll,
                _ => Message::Bitfield(Bytes::copy_from_slice(self.our_have.as_bytes())),
            };
            self.send(first).await?;
            self.grant_allowed_fast().await?;
        } else if self.our_have.count() > 0 && !super_seeding {
            self.send(Message::Bitfield(Bytes::copy_from_slice(self.our_have.as_bytes()))).await?;
        }
        if theirs.supports_extensions() {
            let pex = self.swarm.pex_allowed();
            let offered = Extension::ALL.into_iter().filter(|&e| match e {
                Extension::Ccfd => self.coded.is_some(),
                Extension::UtPex => pex,
                Extension::UtMetadata => true,
            });
            let hs = ExtendedHandshake {
                v: Some(concat!("ccfd-bt ", env!("CARGO_PKG_VERSION")).into()),
                m: our_ids(offered),
                reqq: Some(OUR_REQQ as i64),
                p: Some(i64::from(self.swarm.net.listen_addr.port())),
                metadata_size: Some(self.swarm.meta.info_bytes.len() as i64),
                ccfd: self.coded.as_ref().map(|c| c.offer().to_value()),
            };
            self.send(Message::Extended { id: 0, payload: hs.to_bytes() }).await?;
        }
        if self.swarm.dht.is_some() && theirs.supports_dht() {
            // BEP 5: where our DHT node listens, for the peer's routing table.
            self.send(Message::Port(self.swarm.net.udp.port())).await?;
        }
        self.reveal_more().await?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut coded_tick = tokio::time::interval(CODED_TICK);
        coded_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let shutdown = self.swarm.shutdown.clone();
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
                        self.wire.on_recv(Instant::now());
                        self.on_message(msg?).await?;
                    }
                },
                _ = tick.tick() => self.on_tick().await?,
            }
        }
    }

    async fn send(&self, msg: Message) -> Result<(), PeerError> {
        self.out.send(msg).await.map_err(|_| PeerError::WriterClosed)
    }

    async fn set_interested(&mut self, interested: bool) -> Result<(), PeerError> {
        if let Some(msg) = self.wire.set_interested(interested) {
            tracing::debug!(addr = %self.addr, interested, "our interest changed");
            self.send(msg).await?;
        }
        Ok(())
    }

    async fn on_message(&mut self, msg: Message) -> Result<(), PeerError> {
        let n = self.has.len();
        match msg {
            Message::Bitfield(_) | Message::HaveAll | Message::HaveNone => {
                // BEP 3 puts it first, but BEP 10 lets the extended handshake come
                // before it and some clients (aria2) send it again: the latest wins.
                let new = match msg {
                    Message::Bitfield(bits) => Bitfield::from_wire(&bits, n).ok_or(PeerError::Bitfield)?,
                    Message::HaveAll => Bitfield::full(n),
                    _ => Bitfield::new(n),
                };
                let old = std::mem::replace(&mut self.has, new);
                let wants = self.swarm.peer_bitfield(self.key, &old, &self.has);
                self.set_interested(wants).await?;
                self.reveal_more().await?;
            }
            Message::Have(piece) => {
                if piece >= n {
                    return Err(PeerError::HaveOutOfRange { piece, pieces: n });
                }
                if self.has.set(piece) && self.swarm.peer_have(self.key, piece, &self.has) {
                    self.set_interested(true).await?;
                }
                self.reveal_more().await?;
            }
            Message::Choke => {
                tracing::debug!(addr = %self.addr, "choked by peer");
                if let Some(link) = &mut self.coded {
                    link.forget_all();
                }
                self.swarm.peer_choking(self.key, true);
                let held = self.wire.on_choked();
                self.swarm.release(self.key, held);
            }
            Message::Unchoke => {
                tracing::debug!(addr = %self.addr, "unchoked by peer");
                self.wire.on_unchoked(Instant::now());
                self.swarm.peer_choking(self.key, false);
            }
            Message::Interested => {
                self.interested_once = true;
                self.swarm.peer_interest(self.key, true)
            }
            Message::NotInterested => {
                self.swarm.peer_interest(self.key, false);
                // Super-seeding: a peer that wants nothing more of what it was shown is shown more.
                self.reveal_more().await?;
            }
            Message::Request(block) => self.on_request(block).await?,
            Message::Piece { piece, offset, data } => {
                let block = BlockRef { piece, offset, length: data.len() as u32 };
                tracing::trace!(addr = %self.addr, piece, offset, "block");
                self.wire.finished(&block);
                self.wire.on_delivery(Instant::now(), data.len() as u64);
                self.swarm.net.download.acquire(data.len() as u64).await;
                if let Some(done) = self.swarm.on_block(self.key, block, &data) {
                    self.swarm.verify(done).await;
                }
            }
            Message::Cancel(block) => {
                // BEP 6: a cancelled request still gets an answer, the block or a reject.
                if self.pending.cancel(&block) && self.wire.fast {
                    self.send(Message::Reject(block)).await?;
                }
            }
            Message::Reject(block) => {
                if self.wire.finished(&block) {
                    tracing::trace!(addr = %self.addr, piece = block.piece, offset = block.offset, "request rejected");
                    self.swarm.release(self.key, [block]);
                }
            }
            Message::AllowedFast(piece) => {
                // Bounded: a peer may not grow our memory by granting every piece.
                if piece < n && self.allowed_for_us.len() < MAX_ALLOWED_FAST && self.swarm.config.use_allowed_fast {
                    self.allowed_for_us.insert(piece);
                }
            }
            Message::Suggest(piece) => tracing::trace!(addr = %self.addr, piece, "piece suggested"),
            Message::Extended { id: 0, payload } => self.on_extended_handshake(&payload)?,
            Message::Extended { id, payload } => match Extension::from_our_id(id) {
                Some(Extension::Ccfd) => {
                    if let Some(link) = self.coded.as_mut().filter(|l| l.is_active()) {
                        link.on_control(Control::parse(&payload)?, self.wire.am_choking);
                    }
                }
                Some(Extension::UtPex) => self.on_pex(&payload),
                Some(Extension::UtMetadata) => {
                    // Serve our info dictionary (BEP 9); ignore anything else on this id.
                    let theirs = self.their_ids.get(Extension::UtMetadata);
                    if let (Ok(UtMetadata::Request { piece }), Some(id)) = (UtMetadata::parse(&payload), theirs) {
                        let reply = answer_request(&self.swarm.meta.info_bytes, piece);
                        self.send(Message::Extended { id, payload: reply.to_bytes() }).await?;
                    }
                }
                None => {}
            },
            Message::Port(port) => {
                // A peer's DHT node: it joins our table if it answers a ping.
                if let (Some(dht), true) = (&self.swarm.dht, port != 0) {
                    dht.add_node(SocketAddr::new(self.addr.ip(), port));
                }
            }
            Message::KeepAlive | Message::Unknown { .. } => {}
        }
        self.fill_requests().await
    }

    /// The peer's BEP 10 handshake: a handshake we cannot read (malformed,
    /// nested too deep) ends the connection.
    fn on_extended_handshake(&mut self, payload: &[u8]) -> Result<(), PeerError> {
        let hs = ExtendedHandshake::parse(payload)?;
        self.allowed_fast_from = Instant::now();
        if let Some(q) = hs.reqq {
            self.wire.set_peer_reqq(q);
        }
        self.their_ids = TheirIds::from_handshake(&hs);
        if let Some(port) = hs.p.and_then(|p| u16::try_from(p).ok()) {
            self.swarm.peer_listens(self.key, port);
        }
        let msg_id = self.their_ids.get(Extension::Ccfd);
        let offer = hs.ccfd.as_ref().and_then(Offer::from_value);
        if let (Some(link), Some(id), Some(offer)) = (&mut self.coded, msg_id, offer) {
            let (net, traffic, shutdown) = (self.swarm.net.clone(), self.traffic.clone(), self.swarm.shutdown.clone());
            if link.activate(net, traffic, shutdown, &offer, id) {
                self.swarm.peer_coded(self.key);
            }
            tracing::debug!(addr = %self.addr, active = link.is_active(), "coded extension offered");
        }
        Ok(())
    }

    /// Peer exchange: tells the peer who joined and left, at most once a minute.
    async fn send_pex(&mut self) -> Result<(), PeerError> {
        let Some(id) = self.their_ids.get(Extension::UtPex).filter(|_| self.swarm.pex_allowed()) else { return Ok(()) };
        let view = self.swarm.pex_view(self.key);
        if let Some(msg) = self.pex.message(Instant::now(), view) {
            tracing::trace!(addr = %self.addr, added = msg.added.len(), dropped = msg.dropped.len(), "pex sent");
            self.send(Message::Extended { id, payload: Bytes::from(msg.to_bytes()) }).await?;
        }
        Ok(())
    }

    /// A peer's PEX message: new candidates (never for a private torrent;
    /// messages closer than the rules allow are ignored, a bad one too).
    fn on_pex(&mut self, payload: &[u8]) {
        if !self.swarm.pex_allowed() || !self.pex.accept(Instant::now()) {
            return;
        }
        match PexMessage::parse(payload) {
            Ok(msg) => {
                tracing::trace!(addr = %self.addr, added = msg.added.len(), "pex received");
                self.swarm.add_candidates(msg.added.into_iter().map(|(a, _)| a), PeerSource::Pex);
            }
            Err(e) => tracing::debug!(addr = %self.addr, error = %e, "pex ignored"),
        }
    }

    /// Whether coded packets pay on this path now; said when it changes.
    fn look_at_path(&mut self) {
        let pays = path_pays(&self.swarm, self.key, self.probe.as_ref());
        if pays != self.coding_pays {
            let path = self.probe.as_ref().and_then(TcpProbe::sample);
            tracing::debug!(addr = %self.addr, pays, ?path, "coded packets on this path: {}", if pays { "yes" } else { "no" });
            self.coding_pays = pays;
        }
    }

    /// Super-seeding: shows the peer its next pieces once it got the last
    /// ones; once super-seeding ends, every piece it lacks.
    async fn reveal_more(&mut self) -> Result<(), PeerError> {
        if !self.hidden {
            return Ok(());
        }
        // A peer never interested in what it was shown would wait forever.
        let ignored = !self.interested_once && self.connected_at.elapsed() >= HIDDEN_PATIENCE;
        if ignored || !self.swarm.super_seeding() {
            self.hidden = false;
            let lacks: Vec<u32> = self.our_have.ones().filter(|&p| !self.has.get(p)).collect();
            tracing::debug!(addr = %self.addr, pieces = lacks.len(), ignored, "super-seeding over: every piece shown");
            for piece in lacks {
                self.send(Message::Have(piece)).await?;
            }
            return Ok(());
        }
        for piece in self.swarm.reveal(self.key, &self.has) {
            tracing::trace!(addr = %self.addr, piece, "piece revealed");
            self.send(Message::Have(piece)).await?;
            if self.wire.fast {
                // BEP 6: and worth asking for first.
                self.send(Message::Suggest(piece)).await?;
            }
        }
        Ok(())
    }

    async fn on_request(&mut self, block: BlockRef) -> Result<(), PeerError> {
        let have = block.piece < self.our_have.len() && self.our_have.get(block.piece);
        let piece_len = have.then(|| self.swarm.meta.piece_len(block.piece));
        match self.wire.judge_request(&block, piece_len, self.allowed_for_them.contains(&block.piece)) {
            RequestVerdict::Serve => {
                // A full queue: the peer asks for more than the reqq we advertised.
                if !self.pending.offer(block, &self.uploads) && self.wire.fast {
                    self.send(Message::Reject(block)).await?;
                }
            }
            RequestVerdict::Drop => {}
            RequestVerdict::Reject => self.send(Message::Reject(block)).await?,
            RequestVerdict::Invalid => return Err(PeerError::InvalidRequest(block)),
        }
        Ok(())
    }

    /// BEP 6: tells the peer which of our pieces it may ask for while we
    /// choke it (its allowed-fast set, those we have), so a newcomer every
    /// peer chokes still gets its first pieces.
    async fn grant_allowed_fast(&mut self) -> Result<(), PeerError> {
        let set = allowed_fast_set(self.addr.ip(), &self.swarm.meta.info_hash.0, self.our_have.len(), ALLOWED_FAST);
        for piece in set.into_iter().filter(|&p| self.our_have.get(p)) {
            if self.allowed_for_them.insert(piece) {
                self.send(Message::AllowedFast(piece)).await?;
            }
        }
        Ok(())
    }

    async fn on_command(&mut self, cmd: PeerCommand) -> Result<(), PeerError> {
        match cmd {
            PeerCommand::Have(piece) => {
                self.our_have.set(piece);
                self.send(Message::Have(piece)).await?;
            }
            PeerCommand::Cancel(block) => {
                if self.wire.finished(&block) {
                    self.cancel_request(block).await?;
                }
            }
            PeerCommand::CodedRank(block, rank) => {
                if self.coded.as_ref().is_some_and(|l| l.is_active()) {
                    self.send_control(CodedLink::rank_message(block, rank)).await?;
                }
            }
            PeerCommand::Choke(choke) => {
                if let Some(msg) = self.wire.set_choking(choke) {
                    tracing::debug!(addr = %self.addr, choke, "choking changed");
                    let mut rejected = Vec::new();
                    if choke {
                        let allowed = &self.allowed_for_them;
                        rejected = self.pending.clear_except(|b| self.wire.fast && allowed.contains(&b.piece));
                        if let Some(link) = &mut self.coded {
                            link.on_choke();
                        }
                    }
                    self.send(msg).await?;
                    // BEP 6: a choke no longer voids requests by itself; say which are.
                    if self.wire.fast {
                        for block in rejected {
                            self.send(Message::Reject(block)).await?;
                        }
                    }
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

    async fn on_tick(&mut self) -> Result<(), PeerError> {
        let tick = self.wire.tick(Instant::now());
        if tick.idle {
            return Err(PeerError::Idle(self.swarm.config.idle_timeout));
        }
        if !tick.snubbed.is_empty() {
            tracing::debug!(addr = %self.addr, requests = tick.snubbed.len(), "peer snubbed us");
            for b in &tick.snubbed {
                self.cancel_request(*b).await?;
            }
            self.swarm.release(self.key, tick.snubbed);
            self.swarm.peer_snubbed(self.key, true);
        }
        if tick.keepalive {
            self.send(Message::KeepAlive).await?;
        }
        self.send_pex().await?;
        self.reveal_more().await?;
        self.look_at_path();
        let wants = self.swarm.wants_from(&self.has);
        self.set_interested(wants).await?;
        self.fill_requests().await
    }

    /// Tops the request pipeline up, in batches: coded wants where the
    /// coded path works, plain requests otherwise.
    async fn fill_requests(&mut self) -> Result<(), PeerError> {
        // Choked, a fast peer still serves the pieces it allowed us; a
        // coded peer's come coded once it unchokes us.
        let choked = self.wire.peer_choking;
        let pays = self.coding_pays;
        let allowed_fast = !self.allowed_for_us.is_empty()
            && Instant::now() >= self.allowed_fast_from
            && !(pays && self.coded.as_ref().is_some_and(|l| l.is_active()));
        let allowed_has = (choked && allowed_fast).then(|| self.allowed_pieces_it_has());
        let room = self.wire.room(allowed_has.as_ref().is_some_and(|b| b.count() > 0));
        if room == 0 {
            return Ok(());
        }
        let has = allowed_has.unwrap_or_else(|| self.has.clone());
        if pays && self.coded.as_ref().is_some_and(|l| l.awaits_path(Instant::now()) && l.peer_reachable()) {
            return Ok(());
        }
        let rate = self.wire.delivery_rate(Instant::now());
        for block in self.swarm.pick(self.key, &has, room, self.wire.queued_bytes(), rate) {
            self.wire.requested(block);
            match self.coded.as_mut().filter(|l| pays && !choked && l.may_want(&block)) {
                Some(link) => {
                    tracing::trace!(addr = %self.addr, piece = block.piece, offset = block.offset, "coded want");
                    let want = link.want(block);
                    let rank = link.rank(block);
                    self.send_control(want).await?;
                    self.swarm.coded_announce(block, rank);
                }
                None => {
                    tracing::trace!(addr = %self.addr, piece = block.piece, offset = block.offset, "request");
                    self.send(Message::Request(block)).await?
                }
            }
        }
        Ok(())
    }

    /// The pieces it has that it lets us ask for while it chokes us.
    fn allowed_pieces_it_has(&self) -> Bitfield {
        let mut out = Bitfield::new(self.has.len());
        for &p in self.allowed_for_us.iter().filter(|&&p| self.has.get(p)) {
            out.set(p);
        }
        out
    }

    /// Withdraws one of our requests, plain or coded.
    async fn cancel_request(&mut self, block: BlockRef) -> Result<(), PeerError> {
        match self.coded.as_mut().and_then(|l| l.forget(&block)) {
            Some(cancel) => self.send_control(cancel).await,
            None => self.send(Message::Cancel(block)).await,
        }
    }

    /// Sends a ccfd control message on the peer's extension id.
    async fn send_control(&self, control: Control) -> Result<(), PeerError> {
        let Some(id) = self.coded.as_ref().and_then(|l| l.peer_msg_id) else { return Ok(()) };
        self.send(Message::Extended { id, payload: Bytes::from(control.encode()) }).await
    }

    /// A coded datagram from this peer.
    async fn on_arrival(&mut self, arrival: Arrival) -> Result<(), PeerError> {
        let Some(link) = self.coded.as_mut() else { return Ok(()) };
        let outcome = link.on_arrival(arrival);
        let link_opened = link.opening_ended(Instant::now());
        if outcome.innovative_bytes > 0 {
            self.wire.on_delivery(Instant::now(), outcome.innovative_bytes);
            self.swarm.net.download.acquire(outcome.innovative_bytes).await;
        }
        let decoded = outcome.decoded.is_some();
        if let Some(d) = outcome.decoded {
            tracing::trace!(addr = %self.addr, piece = d.block.piece, offset = d.block.offset, "block decoded");
            self.wire.finished(&d.block);
            let completed = self.swarm.on_coded_block(self.key, d.block, &d.data, d.evidence);
            self.swarm.coded_announce(d.block, GENERATION as u16);
            if let Some(done) = completed {
                self.swarm.verify(done).await;
            }
        }
        if decoded || link_opened {
            self.fill_requests().await?;
        }
        Ok(())
    }

    async fn on_coded_tick(&mut self) -> Result<(), PeerError> {
        let Some(link) = self.coded.as_mut() else { return Ok(()) };
        if link.opening_ended(Instant::now()) {
            // No probe came in time: the held requests go out plain.
            return self.fill_requests().await;
        }
        if link.blocked(Instant::now()) {
            // No datagram gets through: take the wants back, ask over TCP.
            let wants = link.fall_back();
            tracing::info!(addr = %self.addr, "coded packets do not arrive; plain wire from this peer");
            for block in &wants {
                self.wire.finished(block);
                self.send_control(Control::Cancel { piece: block.piece, offset: block.offset }).await?;
            }
            self.swarm.release(self.key, wants);
            return self.fill_requests().await;
        }
        for control in link.on_timer() {
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

async fn write_loop(mut sink: FramedWrite<BoxWrite, MessageCodec>, mut rx: mpsc::Receiver<Message>) {
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
