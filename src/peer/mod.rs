//! One connection to one peer, after the handshake, on any transport.
//!
//! Three tasks per connection: this reader loop (it applies the protocol
//! rules of `wire_state` and talks to the swarm), a writer that batches
//! outgoing frames into few syscalls, and an uploader (`upload`) that reads
//! requested blocks from disk within the upload cap. With coded
//! cooperation on, the connection's `ccfd::link::CodedLink` adds a sender
//! task and a stream of datagrams.

mod upload;
pub mod wire_state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::extended::{our_ids, ExtendedError, ExtendedHandshake, Extension, TheirIds};
use ccfd_proto::ut_metadata::{answer_request, UtMetadata};
use ccfd_proto::wire::{BlockRef, Handshake, Message, MessageCodec, WireError};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::Instrument;

use crate::ccfd::link::CodedLink;
use crate::ccfd::proto::{Control, Offer, ProtoError, GENERATION};
use crate::ccfd::router::Arrival;
use crate::decide::picker::PeerKey;
use crate::net::transport::{BoxRead, BoxWrite, PeerStream};
use crate::net::Traffic;
use crate::swarm::{Admitted, PeerCommand, Swarm};
use upload::Pending;
use wire_state::{RequestVerdict, WireState, WireTimeouts, OUR_REQQ};

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
    let Admitted { key, commands, traffic } = match swarm.register_peer(addr, theirs.peer_id, stream.transport) {
        Ok(admitted) => admitted,
        Err(reason) => {
            tracing::debug!(%addr, %reason, "connection not admitted");
            return;
        }
    };
    tracing::debug!(%addr, client = %ccfd_proto::wire::client_name(&theirs.peer_id), transport = %stream.transport, "peer connected");
    let PeerStream { read, write, .. } = stream;
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
        wire: WireState::new(Instant::now(), timeouts),
        swarm: swarm.clone(),
        key,
        addr,
        their_ids: TheirIds::default(),
        traffic,
        out: out_tx,
        uploads: up_tx,
        pending,
    };
    let result = conn.run(FramedRead::new(read, MessageCodec), commands, coded_rx, theirs.supports_extensions()).await;
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
    /// The ids the peer wants each extension's messages on (BEP 10).
    their_ids: TheirIds,
    traffic: Arc<Traffic>,
    out: mpsc::Sender<Message>,
    uploads: mpsc::Sender<BlockRef>,
    pending: Arc<Pending>,
}

type Reader = FramedRead<BoxRead, MessageCodec>;

impl Connection {
    async fn run(
        &mut self,
        mut reader: Reader,
        mut commands: mpsc::UnboundedReceiver<PeerCommand>,
        mut coded_rx: Option<mpsc::Receiver<Arrival>>,
        extensions: bool,
    ) -> Result<(), PeerError> {
        let super_seeding = self.swarm.super_seeding();
        if self.our_have.count() > 0 && !super_seeding {
            self.send(Message::Bitfield(Bytes::copy_from_slice(self.our_have.as_bytes()))).await?;
        }
        if extensions {
            let offered = Extension::ALL.into_iter().filter(|&e| e != Extension::Ccfd || self.coded.is_some());
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
        if super_seeding {
            self.reveal_more().await?;
        }
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
            Message::Bitfield(bits) => {
                // BEP 3 puts it first, but BEP 10 lets the extended handshake come
                // before it and some clients (aria2) send it again: the latest wins.
                let new = Bitfield::from_wire(&bits, n).ok_or(PeerError::Bitfield)?;
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
            Message::Interested => self.swarm.peer_interest(self.key, true),
            Message::NotInterested => {
                self.swarm.peer_interest(self.key, false);
                // Super-seeding: a peer that wants nothing more of what it was shown is shown more.
                self.reveal_more().await?;
            }
            Message::Request(block) => self.on_request(block)?,
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
            Message::Cancel(block) => self.pending.cancel(&block),
            Message::Extended { id: 0, payload } => self.on_extended_handshake(&payload)?,
            Message::Extended { id, payload } => match Extension::from_our_id(id) {
                Some(Extension::Ccfd) => {
                    if let Some(link) = self.coded.as_mut().filter(|l| l.is_active()) {
                        link.on_control(Control::parse(&payload)?, self.wire.am_choking);
                    }
                }
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
            Message::KeepAlive | Message::Port(_) | Message::Unknown { .. } => {}
        }
        self.fill_requests().await
    }

    /// The peer's BEP 10 handshake: a handshake we cannot read (malformed,
    /// nested too deep) ends the connection.
    fn on_extended_handshake(&mut self, payload: &[u8]) -> Result<(), PeerError> {
        let hs = ExtendedHandshake::parse(payload)?;
        if let Some(q) = hs.reqq {
            self.wire.set_peer_reqq(q);
        }
        self.their_ids = TheirIds::from_handshake(&hs);
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

    /// Super-seeding: shows the peer its next pieces once it got the last ones.
    async fn reveal_more(&mut self) -> Result<(), PeerError> {
        if self.swarm.super_seeding() {
            for piece in self.swarm.reveal(self.key, &self.has) {
                tracing::trace!(addr = %self.addr, piece, "piece revealed");
                self.send(Message::Have(piece)).await?;
            }
        }
        Ok(())
    }

    fn on_request(&mut self, block: BlockRef) -> Result<(), PeerError> {
        let have = block.piece < self.our_have.len() && self.our_have.get(block.piece);
        let piece_len = have.then(|| self.swarm.meta.piece_len(block.piece));
        match self.wire.judge_request(&block, piece_len) {
            RequestVerdict::Serve => self.pending.offer(block, &self.uploads),
            RequestVerdict::Drop => {}
            RequestVerdict::Invalid => return Err(PeerError::InvalidRequest(block)),
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
                    if choke {
                        self.pending.clear();
                        if let Some(link) = &mut self.coded {
                            link.on_choke();
                        }
                    }
                    self.send(msg).await?;
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
        let wants = self.swarm.wants_from(&self.has);
        self.set_interested(wants).await?;
        self.fill_requests().await
    }

    /// Tops the request pipeline up, in batches: coded wants where the
    /// coded path works, plain requests otherwise.
    async fn fill_requests(&mut self) -> Result<(), PeerError> {
        let room = self.wire.room();
        if room == 0 {
            return Ok(());
        }
        if self.coded.as_ref().is_some_and(|l| l.awaits_path(Instant::now()) && l.peer_reachable()) {
            return Ok(());
        }
        let rate = self.wire.delivery_rate(Instant::now());
        for block in self.swarm.pick(self.key, &self.has, room, self.wire.queued_bytes(), rate) {
            self.wire.requested(block);
            match self.coded.as_mut().filter(|l| l.may_want(&block)) {
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
