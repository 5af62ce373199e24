//! One connection's side of coded cooperation.
//!
//! Receiving: the connection asks for blocks with `want` (credits), feeds
//! arriving datagrams to the session's decoders, reports its rank, renews
//! credits when a block stalls (a lost packet costs one more, never a
//! retransmission) and returns loss and delay feedback.
//!
//! Sending: a task per connection holds the peer's wants and credits and
//! serves them oldest first: systematic packets first, then seeded
//! combinations of the verified piece, or recodings of what we are still
//! receiving for a neighbour at a lower rank. It is paced by the client's
//! upload cap and a delay-based rate (LEDBAT-like): queues slow it down,
//! random loss does not.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use super::pacer::Pacer;
use super::proto::{
    datagram_packet, encode_datagram, encode_probe, is_probe, Control, DatagramHeader, Offer, DATAGRAM_HEADER, GENERATION, SYMBOL_SIZE,
};
use super::queue::{Feed, Queue};
use super::{Arrival, CodedTransport};
use crate::picker::PeerKey;
use crate::session::coded_generation_id;
use crate::session::{CompletedPiece, Session};
use ccfd_codec::packet::{Coefficients, Packet};
use ccfd_proto::wire::{BlockRef, BLOCK_SIZE};

/// Credits for `missing` packets over a path losing `loss` of them: about
/// the expected losses on top, rounded down. Every credit beyond what a
/// block needs is a packet sent for nothing (the sender hears that the
/// block decoded only a round trip later), while one too few costs only a
/// renewal, which the rest of the pipeline hides.
fn credits_for(missing: u32, loss: f64) -> u32 {
    let p = loss.clamp(0.0, 0.5);
    missing + (f64::from(missing) * p / (1.0 - p)).floor() as u32
}
/// Most blocks a sender interleaves at once, oldest first.
const SEND_WINDOW: usize = 4;
/// From sending a block's packet to hearing that it decoded the block:
/// the feedback period and a local round trip.
const FEEDBACK_DELAY: f64 = 0.040;

/// Blocks to interleave at `packets_per_second`: enough that a block's
/// packets leave about one feedback delay apart, so its spare (loss
/// allowance) packets go out after the receiver could say it is done. A
/// slow link sends one block at a time: interleaving there only stretches
/// every block (four at 14 kB/s took 4.7 s each, and missed deadlines).
fn send_window(packets_per_second: f64) -> usize {
    ((packets_per_second * FEEDBACK_DELAY).round() as usize).clamp(1, SEND_WINDOW)
}
/// Upload-cap tokens a sender takes at once when its allowance runs out:
/// enough for the packets the block still has credits for (at most a
/// block and a quarter, about what a plain block takes), so no packet of a
/// block waits behind another connection's grant.
fn block_grant(credits: u32, datagram_len: u64) -> u64 {
    u64::from(credits.clamp(1, GENERATION as u32 + GENERATION as u32 / 4)) * datagram_len
}
/// Most credits a sender holds for one block.
pub(super) const MAX_CREDITS: u32 = 4 * GENERATION as u32;
/// A want whose packets stopped for this long (at least) is renewed.
const RENEW_AFTER: Duration = Duration::from_millis(15);
/// A renewal with no packet back for this long is renewed again.
const RENEWAL_ANSWER: Duration = Duration::from_millis(100);
/// A link whose wants see no datagram at all for this long is treated as
/// dead (the path broke mid-transfer) and falls back to the plain wire.
const DEAD_AFTER: Duration = Duration::from_secs(1);
/// A sender opens the path with this many probes, `OPENING_PROBE_EVERY`
/// apart, before any token wait: the receiver asks for coded blocks only
/// once one has arrived, so a path that never worked (a firewall, a
/// TCP-only proxy) costs nothing, and ten probes get through 20% loss.
const OPENING_PROBES: u32 = 10;
const OPENING_PROBE_EVERY: Duration = Duration::from_millis(20);
/// How long a receiver holds its first requests for the opening probes:
/// a request sent before the path is proven goes plain. Past the third
/// probe, so a lost probe or two still opens the path; on a blocked path
/// the connection loses this once.
const OPENING_WAIT: Duration = Duration::from_millis(50);
/// A sender waiting for upload tokens probes the path this often: well
/// inside `DEAD_AFTER`, and a few 16-byte datagrams a second.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Feedback at most this often.
const FEEDBACK_EVERY: Duration = Duration::from_millis(20);

/// Work for a connection's sender task.
#[derive(Debug, Clone, Copy)]
pub enum SendOrder {
    Control(Control),
    /// We choke the peer: forget every want.
    DropAll,
}

/// One of our wants at this peer.
struct Want {
    got: u32,
    last_packet: Instant,
    /// Mean time between this block's packets: a gap several times
    /// longer means the rest were lost, a shorter one is just pacing.
    gap: Duration,
    renewed: bool,
    /// Another peer was asked for the block too (see `Control::Want`).
    shared: bool,
}

impl Want {
    fn new(now: Instant, shared: bool) -> Want {
        Want { got: 0, last_packet: now, gap: Duration::ZERO, renewed: false, shared }
    }

    fn on_packet(&mut self, at: Instant) {
        if self.got > 0 {
            let gap = at.saturating_duration_since(self.last_packet);
            self.gap = if self.gap.is_zero() { gap } else { (self.gap * 3 + gap) / 4 };
        }
        self.got += 1;
        self.last_packet = at;
    }

    /// Whether the packets asked for stopped coming: after the block's
    /// packets have started, a quiet spell of several gaps; after a renewal
    /// with nothing back yet, a round trip's worth. Before any packet the
    /// sender is busy with older wants (it serves them in order), and a link
    /// where nothing arrives at all is `CodedLink::blocked`.
    fn stalled(&self, now: Instant) -> bool {
        let quiet = now.saturating_duration_since(self.last_packet);
        if self.got > 0 {
            quiet >= RENEW_AFTER.max(self.gap * 3)
        } else {
            self.renewed && quiet >= RENEWAL_ANSWER
        }
    }
}

/// What we know of the path from the peer to us: proven once a datagram
/// came; dead when datagrams stop while we wait for them. Silence counts
/// only while we wait: after an idle spell (the peer choked us) the first
/// want starts the clock again.
#[derive(Debug, Clone, Copy)]
struct PathWatch {
    proven: bool,
    /// The latest datagram, or the want that ended an idle spell.
    heard_since: Instant,
    /// Until when our first requests wait for the opening probes.
    opening_until: Option<Instant>,
}

impl PathWatch {
    fn new(now: Instant) -> PathWatch {
        PathWatch { proven: false, heard_since: now, opening_until: None }
    }

    /// Both sides agreed on the extension: the peer's probes are coming.
    fn open(&mut self, now: Instant) {
        self.opening_until = Some(now + OPENING_WAIT);
    }

    fn heard(&mut self, at: Instant) {
        self.proven = true;
        self.heard_since = self.heard_since.max(at);
    }

    /// A want after an idle spell: the path owes us nothing for the idle time.
    fn waiting_from(&mut self, now: Instant) {
        self.heard_since = self.heard_since.max(now);
    }

    fn proven(&self) -> bool {
        self.proven
    }

    fn awaits(&self, now: Instant) -> bool {
        !self.proven && self.opening_until.is_some_and(|t| now < t)
    }

    fn opening_ended(&mut self, now: Instant) -> bool {
        let ended = self.opening_until.is_some_and(|t| self.proven || now >= t);
        if ended {
            self.opening_until = None;
        }
        ended
    }

    fn dead(&self, now: Instant, waiting: bool) -> bool {
        waiting && now.saturating_duration_since(self.heard_since) >= DEAD_AFTER
    }
}

/// What a datagram did, for the connection to act on.
#[derive(Default)]
pub struct ArrivalOutcome {
    /// Bytes of innovative payload (for rate estimates).
    pub innovative_bytes: u64,
    /// The block decoded (it leaves the request pipeline).
    pub decoded: Option<BlockRef>,
    /// The block completed its piece: hand it to `Session::verify`.
    pub completed: Option<CompletedPiece>,
}

/// The coded side of one connection.
pub struct CodedLink {
    transport: Arc<CodedTransport>,
    our_token: [u8; 8],
    /// The peer's extension id for ccfd, once both offers agree.
    pub peer_msg_id: Option<u8>,
    orders: Option<mpsc::UnboundedSender<SendOrder>>,
    wants: HashMap<BlockRef, Want>,
    received: u32,
    highest_seq: u32,
    last_delay: u32,
    reported: u32,
    last_feedback: Instant,
    /// Non-innovative or unusable datagrams, for the log.
    pub wasted: u64,
    /// Whether the peer's datagrams reach us.
    path: PathWatch,
    /// Datagrams stopped coming: we receive over the plain wire from this peer.
    receive_off: bool,
    /// Wants renewed (packets lost), for the log.
    renewals: u64,
    /// Packets of blocks no longer open here (decoded, or never asked), for the log.
    late: u64,
    peer_ip: IpAddr,
}

impl CodedLink {
    /// Registers a connection to `peer_ip` with the transport.
    pub fn new(transport: Arc<CodedTransport>, peer_ip: IpAddr) -> (CodedLink, mpsc::Receiver<Arrival>) {
        let (our_token, rx) = transport.register(peer_ip);
        let link = CodedLink {
            transport,
            our_token,
            peer_msg_id: None,
            orders: None,
            wants: HashMap::new(),
            received: 0,
            highest_seq: 0,
            last_delay: 0,
            reported: 0,
            last_feedback: Instant::now(),
            wasted: 0,
            path: PathWatch::new(Instant::now()),
            receive_off: false,
            renewals: 0,
            late: 0,
            peer_ip,
        };
        (link, rx)
    }

    /// What we put in our extended handshake.
    pub fn offer(&self) -> Offer {
        Offer::ours(self.transport.port, self.our_token)
    }

    pub fn is_active(&self) -> bool {
        self.orders.is_some()
    }

    /// Whether we ask this peer for blocks coded: active, and the path is
    /// proven (a datagram of the peer's arrived) and still alive.
    pub fn receives(&self) -> bool {
        self.is_active() && self.path.proven() && !self.receive_off
    }

    /// Whether our requests should wait a moment: the link just became
    /// active and the peer's opening probes may be a few milliseconds away.
    pub fn awaits_path(&self, now: Instant) -> bool {
        self.path.awaits(now)
    }

    /// True once, when the opening wait is over (the path opened, or its
    /// time ran out): the held requests go out then.
    pub fn opening_ended(&mut self, now: Instant) -> bool {
        self.path.opening_ended(now)
    }

    /// True once wants have gone unanswered by any datagram for `DEAD_AFTER`:
    /// the caller takes the wants back and asks over the plain wire.
    pub fn blocked(&self, now: Instant) -> bool {
        !self.receive_off && self.path.dead(now, !self.wants.is_empty())
    }

    /// Stops receiving coded from this peer; returns the wants to re-request plainly.
    pub fn fall_back(&mut self) -> Vec<BlockRef> {
        self.receive_off = true;
        self.wants.drain().map(|(b, _)| b).collect()
    }

    /// The peer's offer arrived: if it agrees with ours, start sending to it.
    /// `polluter` makes the sender corrupt every payload (the hostile-peer harness).
    pub fn activate(&mut self, session: Arc<Session>, key: PeerKey, peer_ip: IpAddr, theirs: &Offer, msg_id: u8, polluter: bool) {
        if self.is_active() || !self.offer().compatible(theirs) {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let to = SocketAddr::new(peer_ip, theirs.port);
        session.peer_coded(key);
        let sender = Sender { session, key, transport: self.transport.clone(), to, token: theirs.token, polluter };
        tokio::spawn(sender.run(rx));
        self.orders = Some(tx);
        self.peer_msg_id = Some(msg_id);
        self.path.open(Instant::now());
    }

    /// Asks the peer for `block`; the control message to send.
    pub fn want(&mut self, session: &Session, block: BlockRef) -> Control {
        let shared = !session.coded_open(block);
        if self.wants.is_empty() {
            self.path.waiting_from(Instant::now());
        }
        // Part of the block may have come from other peers already.
        let (rank, missing) = rank_and_missing(session, block);
        let credits = credits_for(missing.max(1), self.loss());
        self.wants.insert(block, Want::new(Instant::now(), shared));
        want_message(block, credits, rank, shared)
    }

    /// Whether `block` is one of our coded wants here.
    pub fn wants(&self, block: &BlockRef) -> bool {
        self.wants.contains_key(block)
    }

    /// Drops a want (the block came another way, or the peer choked us).
    pub fn forget(&mut self, block: &BlockRef) -> Option<Control> {
        self.wants.remove(block).map(|_| Control::Cancel { piece: block.piece, offset: block.offset })
    }

    pub fn forget_all(&mut self) {
        self.wants.clear();
    }

    /// A control message from the peer. Wants are served only while we unchoke it.
    pub fn on_control(&mut self, msg: Control, we_choke: bool) {
        let Some(orders) = &self.orders else { return };
        if matches!(msg, Control::Want { .. }) && we_choke {
            return;
        }
        let _ = orders.send(SendOrder::Control(msg));
    }

    /// We choked the peer: its wants are void.
    pub fn on_choke(&mut self) {
        if let Some(orders) = &self.orders {
            let _ = orders.send(SendOrder::DropAll);
        }
    }

    /// Tells our sender a neighbour's rank changed; used for our own rank
    /// broadcast too (the connection sends the message).
    pub fn rank_message(block: BlockRef, rank: u16) -> Control {
        Control::Rank { piece: block.piece, offset: block.offset, rank }
    }

    /// One datagram from the peer.
    pub fn on_arrival(&mut self, arrival: Arrival, session: &Session, key: PeerKey, peer_ip: IpAddr) -> ArrivalOutcome {
        let mut out = ArrivalOutcome::default();
        self.path.heard(arrival.at);
        self.received = self.received.wrapping_add(1);
        self.highest_seq = self.highest_seq.max(arrival.header.seq);
        self.last_delay = arrival.stamp_us.wrapping_sub(arrival.header.stamp_us);
        if is_probe(&arrival.bytes) {
            return out;
        }
        // The packet names its piece and generation; the torrent gives the rest.
        let mut block = None;
        let parsed = datagram_packet(&arrival.bytes, |piece, generation| {
            block = valid_block(session, piece, u32::from(generation).checked_mul(BLOCK_SIZE)?);
            block.map(coded_generation_id)
        });
        let (Ok(packet), Some(block)) = (parsed, block) else {
            self.wasted += 1;
            return out;
        };
        let Some(receipt) = session.coded_receive(key, peer_ip, block, &packet) else {
            self.wasted += 1;
            self.late += 1;
            return out;
        };
        if let Some(w) = self.wants.get_mut(&block) {
            w.on_packet(arrival.at);
        }
        if receipt.innovative {
            out.innovative_bytes = SYMBOL_SIZE as u64;
        } else {
            self.wasted += 1;
        }
        if receipt.decoded {
            self.wants.remove(&block);
            out.decoded = Some(block);
            out.completed = receipt.completed;
        }
        out
    }

    /// The share of this peer's datagrams lost on the way so far.
    fn loss(&self) -> f64 {
        if self.highest_seq == 0 {
            return 0.0;
        }
        1.0 - f64::from(self.received) / (f64::from(self.highest_seq) + 1.0)
    }

    /// Every few milliseconds: renew stalled wants and send feedback. Returns
    /// the control messages to send.
    pub fn on_timer(&mut self, session: &Session) -> Vec<Control> {
        let now = Instant::now();
        let mut out = Vec::new();
        let loss = self.loss();
        for (block, w) in &mut self.wants {
            // Quiet, not a count of packets against credits: packets of an
            // earlier grant still in flight would count against a renewed one.
            if w.stalled(now) {
                let (rank, missing) = rank_and_missing(session, *block);
                if missing == 0 {
                    continue;
                }
                let credits = credits_for(missing, loss).min(MAX_CREDITS);
                tracing::trace!(?block, got = w.got, gap = ?w.gap, quiet = ?now.saturating_duration_since(w.last_packet), renewed = w.renewed, rank, credits, "coded want renewed");
                *w = Want { renewed: true, ..Want::new(now, w.shared) };
                self.renewals += 1;
                out.push(want_message(*block, credits, rank, w.shared));
            }
        }
        if self.received != self.reported && now.duration_since(self.last_feedback) >= FEEDBACK_EVERY {
            self.reported = self.received;
            self.last_feedback = now;
            out.push(Control::Feedback { received: self.received, highest_seq: self.highest_seq, delay_us: self.last_delay });
        }
        out
    }
}

impl Drop for CodedLink {
    fn drop(&mut self) {
        if self.received > 0 {
            tracing::debug!(
                peer = %self.peer_ip,
                received = self.received,
                wasted = self.wasted,
                late = self.late,
                renewals = self.renewals,
                loss = self.loss(),
                "coded link closed"
            );
        }
        self.transport.unregister(&self.our_token);
    }
}

/// A `want` of `block`, first or renewed; credits are at most
/// `MAX_CREDITS`, which fits the message's u16.
fn want_message(block: BlockRef, credits: u32, rank: u16, shared: bool) -> Control {
    Control::Want { piece: block.piece, offset: block.offset, length: block.length, credits: credits as u16, rank, shared }
}

/// Our rank for `block` (from any peer) and the packets it still misses.
fn rank_and_missing(session: &Session, block: BlockRef) -> (u16, u32) {
    let rank = session.coded_rank(block).unwrap_or(0);
    (rank, (GENERATION as u32).saturating_sub(u32::from(rank)))
}

/// The block at `piece`/`offset` of this torrent, if there is one.
fn valid_block(session: &Session, piece: u32, offset: u32) -> Option<BlockRef> {
    if piece >= session.meta.piece_count() || !offset.is_multiple_of(BLOCK_SIZE) {
        return None;
    }
    let piece_len = session.meta.piece_len(piece);
    (offset < piece_len).then(|| BlockRef { piece, offset, length: (piece_len - offset).min(BLOCK_SIZE) })
}

struct Sender {
    session: Arc<Session>,
    key: PeerKey,
    transport: Arc<CodedTransport>,
    to: SocketAddr,
    token: [u8; 8],
    polluter: bool,
}

/// What a sender task sent, logged when it ends.
struct SendLog {
    to: SocketAddr,
    systematic: u64,
    seeded: u64,
    recoded: u64,
    /// Packets built but dropped: their want went while we waited for tokens.
    stale: u64,
}

impl SendLog {
    fn new(to: SocketAddr) -> SendLog {
        SendLog { to, systematic: 0, seeded: 0, recoded: 0, stale: 0 }
    }

    fn count(&mut self, c: &Coefficients) {
        match c {
            Coefficients::Systematic(_) => self.systematic += 1,
            Coefficients::Seeded(_) => self.seeded += 1,
            Coefficients::Explicit(_) => self.recoded += 1,
        }
    }
}

impl Drop for SendLog {
    fn drop(&mut self) {
        if self.systematic + self.seeded + self.recoded > 0 {
            tracing::debug!(to = %self.to, systematic = self.systematic, seeded = self.seeded, recoded = self.recoded, stale = self.stale, "coded sender ended");
        }
    }
}

impl Sender {
    async fn run(self, mut orders: mpsc::UnboundedReceiver<SendOrder>) {
        let mut queue = Queue::default();
        let mut pacer = Pacer::new(self.session.client.upload_cap());
        let mut rng = StdRng::from_os_rng();
        let mut seq = 0u32;
        // Upload-cap tokens taken about a block's worth at a time, as the
        // plain uploader takes them: a shared cap then splits fairly between the two.
        let mut allowance = 0u64;
        let shutdown = self.session.shutdown.clone();
        let mut opening = tokio::time::interval(OPENING_PROBE_EVERY);
        let mut opening_left = OPENING_PROBES;
        let mut sent = SendLog::new(self.to);
        loop {
            if queue.turn.is_empty() {
                let order = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    o = orders.recv() => match o { Some(o) => o, None => return },
                    _ = opening.tick(), if opening_left > 0 => {
                        opening_left -= 1;
                        self.transport.send(self.to, &encode_probe(&self.next_header(&mut seq))).await;
                        continue;
                    }
                };
                self.apply(order, &mut queue, &mut pacer);
            }
            while let Ok(order) = orders.try_recv() {
                self.apply(order, &mut queue, &mut pacer);
            }
            let window = send_window(pacer.packets_per_second(Instant::now()));
            let Some(block) = queue.next_block(window) else { continue };
            let Some(feed) = queue.feeds.get(&block) else { continue };
            let credits = feed.credits;
            let Some(mut packet) = self.packet(block, feed, &mut rng).await else {
                queue.remove(&block);
                continue;
            };
            let len = (DATAGRAM_HEADER + packet.short_encoded_len()) as u64;
            if allowance < len {
                // Tokens for the rest of the block at once: a block whose
                // last packet waits for the next grant (the cap is shared)
                // completes a whole grant later.
                let grant = block_grant(credits, len).saturating_sub(allowance);
                self.wait_for_tokens(grant, &mut seq).await;
                allowance += grant;
                // Orders that came meanwhile may have made this packet stale.
                while let Ok(order) = orders.try_recv() {
                    self.apply(order, &mut queue, &mut pacer);
                }
                if !queue.feeds.contains_key(&block) {
                    sent.stale += 1;
                    continue;
                }
            }
            queue.spend(&block);
            sent.count(&packet.coefficients);
            if self.polluter {
                rng.fill(&mut packet.payload[..]);
            }
            // A packet proves the path as well as a probe would.
            opening_left = 0;
            let datagram = encode_datagram(&self.next_header(&mut seq), &packet);
            allowance -= datagram.len() as u64;
            pacer.wait(datagram.len()).await;
            self.transport.send(self.to, &datagram).await;
            self.session.on_upload(self.key, SYMBOL_SIZE as u64);
        }
    }

    /// Takes `bytes` of the upload cap's tokens. While they are slow to
    /// come (the cap is shared with other connections) a probe goes out
    /// every `PROBE_EVERY`, so the receiver sees a working path.
    async fn wait_for_tokens(&self, bytes: u64, seq: &mut u32) {
        let tokens = self.session.client.upload.acquire(bytes);
        tokio::pin!(tokens);
        loop {
            tokio::select! {
                _ = &mut tokens => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {
                    self.transport.send(self.to, &encode_probe(&self.next_header(seq))).await;
                }
            }
        }
    }

    /// The header of our next datagram to the peer, packet or probe: both
    /// count in the sequence the receiver reports loss and delivery by.
    fn next_header(&self, seq: &mut u32) -> DatagramHeader {
        let header = DatagramHeader { token: self.token, seq: *seq, stamp_us: self.transport.stamp() };
        *seq = seq.wrapping_add(1);
        header
    }

    fn apply(&self, order: SendOrder, queue: &mut Queue, pacer: &mut Pacer) {
        let k = GENERATION as u16;
        match order {
            SendOrder::DropAll => queue.clear(),
            SendOrder::Control(Control::Want { piece, offset, length, credits, rank, shared }) => {
                let Some(block) = valid_block(&self.session, piece, offset).filter(|b| b.length == length) else { return };
                queue.add(block, u32::from(credits), 0, rank.min(k), shared);
            }
            SendOrder::Control(Control::Rank { piece, offset, rank }) => {
                let Some(block) = valid_block(&self.session, piece, offset) else { return };
                if rank >= k {
                    queue.remove(&block);
                    return;
                }
                if let Some(f) = queue.feeds.get_mut(&block) {
                    f.their_rank = rank;
                    return;
                }
                // A neighbour receiving this block at a lower rank than ours
                // while we still receive it too: recode for it, within the gap.
                let ours = if self.session.has_piece(piece) { None } else { self.session.coded_rank(block) };
                if let Some(ours) = ours.filter(|&r| r > rank) {
                    queue.add(block, u32::from(ours - rank), k.into(), rank, false);
                }
            }
            SendOrder::Control(Control::Cancel { piece, offset }) => {
                if let Some(block) = valid_block(&self.session, piece, offset) {
                    queue.remove(&block);
                }
            }
            SendOrder::Control(Control::Feedback { highest_seq, delay_us, .. }) => pacer.on_feedback(Instant::now(), highest_seq, delay_us),
        }
    }

    /// The next packet of `block` for this peer: from the verified piece
    /// (systematic first, then seeded), else recoded from what we receive.
    async fn packet(&self, block: BlockRef, feed: &Feed, rng: &mut StdRng) -> Option<Packet> {
        let id = coded_generation_id(block);
        if let Some(split) = self.session.coded_source(block.piece).await {
            let generation = split.get((block.offset / BLOCK_SIZE) as usize)?;
            let (coefficients, payload) = if let Some(i) = feed.next_systematic() {
                (Coefficients::Systematic(i), generation.symbol(usize::from(i)).to_vec())
            } else {
                let seed: u64 = rng.random();
                (Coefficients::Seeded(seed), generation.coded(seed))
            };
            return Some(Packet { id, coefficients, payload });
        }
        self.session.coded_recode(block, feed.their_rank, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_cover_about_the_expected_losses_and_none_on_a_clean_path() {
        assert_eq!(credits_for(16, 0.0), 16);
        assert_eq!(credits_for(16, 0.1), 17);
        assert_eq!(credits_for(16, 0.2), 20);
        assert_eq!(credits_for(1, 0.1), 1);
        // A wild estimate is bounded.
        assert_eq!(credits_for(16, 0.99), 32);
        assert_eq!(credits_for(16, -1.0), 16);
    }

    #[test]
    fn slow_links_send_one_block_at_a_time() {
        // A 14 kB/s slot: 14 packets a second.
        assert_eq!(send_window(14.0), 1);
        assert_eq!(send_window(50.0), 2);
        assert_eq!(send_window(1000.0), SEND_WINDOW);
        assert_eq!(send_window(0.0), 1);
    }

    #[test]
    fn a_grant_covers_the_rest_of_a_block() {
        let k = GENERATION as u32;
        // A fresh want of a block's systematic packets of 1196 bytes: one grant for all.
        assert_eq!(block_grant(k, 1196), u64::from(k) * 1196);
        // The loss allowance at 10% is one packet more.
        assert_eq!(block_grant(k + 1, 1196), u64::from(k + 1) * 1196);
        // A renewal for two packets takes two; huge credits are bounded.
        assert_eq!(block_grant(2, 1208), 2 * 1208);
        assert_eq!(block_grant(64, 1208), u64::from(k + k / 4) * 1208);
        assert_eq!(block_grant(0, 1208), 1208);
    }

    #[test]
    fn a_path_is_proven_by_a_datagram_and_dead_only_while_we_wait() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut path = PathWatch::new(t0);
        assert!(!path.awaits(t0) && !path.opening_ended(t0), "not open before the handshake");
        path.open(t0);
        assert!(path.awaits(t0 + 10 * ms));
        assert!(!path.opening_ended(t0 + 10 * ms));
        // A probe arrives: the path is proven and the held requests go, once.
        path.heard(t0 + 20 * ms);
        assert!(path.proven() && !path.awaits(t0 + 21 * ms));
        assert!(path.opening_ended(t0 + 21 * ms));
        assert!(!path.opening_ended(t0 + 22 * ms));
        // Idle for a minute (choked), then a want: the minute is not silence.
        let later = t0 + 60_000 * ms;
        assert!(!path.dead(later, false));
        path.waiting_from(later);
        assert!(!path.dead(later + 10 * ms, true));
        assert!(!path.dead(later + DEAD_AFTER - ms, true));
        assert!(path.dead(later + DEAD_AFTER, true));

        // No probe ever comes: the wait ends at its time, and nothing is proven.
        let mut blocked = PathWatch::new(t0);
        blocked.open(t0);
        assert!(!blocked.opening_ended(t0 + OPENING_WAIT - ms));
        assert!(blocked.opening_ended(t0 + OPENING_WAIT));
        assert!(!blocked.proven() && !blocked.awaits(t0 + OPENING_WAIT));
    }

    #[test]
    fn a_want_is_renewed_only_when_its_packets_stop() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut w = Want::new(t0, false);
        // Queued behind older wants at the sender: never renewed.
        assert!(!w.stalled(t0 + 5000 * ms));
        for i in 1..=4 {
            w.on_packet(t0 + i * 10 * ms);
        }
        assert_eq!(w.gap, 10 * ms);
        // Two gaps is pacing; three is loss.
        assert!(!w.stalled(t0 + 60 * ms));
        assert!(w.stalled(t0 + 70 * ms));
        // A renewal with nothing back is renewed again after a round trip's allowance.
        let r = Want { renewed: true, ..Want::new(t0, false) };
        assert!(!r.stalled(t0 + RENEWAL_ANSWER - ms));
        assert!(r.stalled(t0 + RENEWAL_ANSWER));
    }
}
