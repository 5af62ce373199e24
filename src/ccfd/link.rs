//! One connection's side of coded cooperation.
//!
//! Receiving: the connection asks for blocks with `want` (credits), feeds
//! arriving datagrams to the torrent's decoders, reports its rank, renews
//! credits when a block stalls (a lost packet costs one more, never a
//! retransmission) and returns loss and delay feedback. What a datagram
//! did comes back as an [`ArrivalOutcome`] for the connection to act on:
//! the link never calls into the swarm.
//!
//! Sending is the task in `sender`, started when both offers agree.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ccfd_proto::wire::{BlockRef, BLOCK_SIZE};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::proto::{datagram_packet, is_probe, Control, Offer, FEEDBACK_EVERY, GENERATION, MAX_CREDITS, SYMBOL_SIZE};
use super::receive::{generation_id, CodedTorrent, Evidence};
use super::router::Arrival;
use super::sender::{SendOrder, Sender, SEND_WINDOW};
use crate::net::{Net, Traffic};

/// Credits for `missing` packets over a path losing `loss` of them: about
/// the expected losses on top, rounded down. Every credit beyond what a
/// block needs is a packet sent for nothing (the sender hears that the
/// block decoded only a round trip later), while one too few costs only a
/// renewal, which the rest of the pipeline hides.
fn credits_for(missing: u32, loss: f64) -> u32 {
    let p = loss.clamp(0.0, 0.5);
    missing + (f64::from(missing) * p / (1.0 - p)).floor() as u32
}
/// A want whose packets stopped for this long (at least) is renewed.
const RENEW_AFTER: Duration = Duration::from_millis(15);
/// A gap between two of the peer's packets longer than this is an idle
/// spell (choked, no wants), not its pacing, and is left out of the mean.
const IDLE_GAP: Duration = Duration::from_millis(200);
/// A renewal with no packet back for this long is renewed again.
const RENEWAL_ANSWER: Duration = Duration::from_millis(100);
/// A link whose wants see no datagram at all for this long is treated as
/// dead (the path broke mid-transfer) and falls back to the plain wire.
const DEAD_AFTER: Duration = Duration::from_secs(1);
/// How long a receiver holds its first requests for the opening probes:
/// a request sent before the path is proven goes plain. Past the third
/// probe, so a lost probe or two still opens the path; on a blocked path
/// the connection loses this once.
const OPENING_WAIT: Duration = Duration::from_millis(50);

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
    ///
    /// `link_gap` is the mean time between any two of the peer's packets:
    /// until this block has a gap of its own (one packet so far) its
    /// packets are taken to come at most `SEND_WINDOW` blocks apart. A
    /// 15 ms floor alone renewed every slow block after its first packet
    /// (a peer sending 30 packets a second: a renewal per two packets
    /// received, a fifth of them wasted, on 2 Mbit/s uplinks).
    fn stalled(&self, now: Instant, link_gap: Duration) -> bool {
        let quiet = now.saturating_duration_since(self.last_packet);
        let gap = if self.gap.is_zero() { link_gap * SEND_WINDOW as u32 } else { self.gap };
        if self.got > 0 {
            quiet >= RENEW_AFTER.max(gap * 3)
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

/// A block decoded from coded packets, for the swarm to store like a
/// plain one; `evidence` names the packets it came from.
pub struct DecodedBlock {
    pub block: BlockRef,
    pub data: Bytes,
    pub evidence: Vec<Evidence>,
}

/// What a datagram did, for the connection to act on.
#[derive(Default)]
pub struct ArrivalOutcome {
    /// Bytes of innovative payload (for rate estimates).
    pub innovative_bytes: u64,
    /// The block decoded (it leaves the request pipeline and goes to the swarm).
    pub decoded: Option<DecodedBlock>,
}

/// The coded side of one connection.
pub struct CodedLink {
    coded: Arc<CodedTorrent>,
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
    /// Mean time between the peer's packets, and the latest one's arrival.
    packet_gap: Duration,
    last_packet: Option<Instant>,
}

impl CodedLink {
    /// Registers a connection to `peer_ip` with the torrent's router.
    pub fn new(coded: Arc<CodedTorrent>, peer_ip: IpAddr) -> (CodedLink, mpsc::Receiver<Arrival>) {
        let (our_token, rx) = coded.router.register(peer_ip);
        let link = CodedLink {
            coded,
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
            packet_gap: Duration::ZERO,
            last_packet: None,
        };
        (link, rx)
    }

    /// What we put in our extended handshake.
    pub fn offer(&self) -> Offer {
        Offer::ours(self.coded.router.port(), self.our_token)
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

    /// Stops receiving coded from this peer (and from its address on any
    /// later connection); returns the wants to re-request plainly.
    pub fn fall_back(&mut self) -> Vec<BlockRef> {
        self.receive_off = true;
        self.coded.set_unreachable(self.peer_ip);
        self.wants.drain().map(|(b, _)| b).collect()
    }

    /// The peer's offer arrived: if it agrees with ours, start sending to
    /// it (until `shutdown`, uploads counted in `traffic`). True when the
    /// link became active.
    pub fn activate(&mut self, net: Arc<Net>, traffic: Arc<Traffic>, shutdown: CancellationToken, theirs: &Offer, msg_id: u8) -> bool {
        if self.is_active() || !self.offer().compatible(theirs) {
            return false;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let to = SocketAddr::new(self.peer_ip, theirs.port);
        let sender = Sender { coded: self.coded.clone(), net, traffic, shutdown, to, token: theirs.token };
        tokio::spawn(sender.run(rx));
        self.orders = Some(tx);
        self.peer_msg_id = Some(msg_id);
        self.path.open(Instant::now());
        true
    }

    /// Whether `block` may be asked for coded from this peer: the link
    /// receives, the piece never failed coded, the peer's datagrams reach us.
    pub fn may_want(&self, block: &BlockRef) -> bool {
        self.receives() && self.coded.allowed(block.piece) && self.coded.reachable(self.peer_ip)
    }

    /// Whether this peer's datagrams were found not to reach us.
    pub fn peer_reachable(&self) -> bool {
        self.coded.reachable(self.peer_ip)
    }

    /// Our rank for `block` from any peer (0 when not receiving it).
    pub fn rank(&self, block: BlockRef) -> u16 {
        self.coded.rank(block).unwrap_or(0)
    }

    /// Asks the peer for `block`; the control message to send.
    pub fn want(&mut self, block: BlockRef) -> Control {
        let shared = !self.coded.open(block);
        if self.wants.is_empty() {
            self.path.waiting_from(Instant::now());
        }
        // Part of the block may have come from other peers already.
        let (rank, missing) = self.rank_and_missing(block);
        let credits = credits_for(missing.max(1), self.loss());
        self.wants.insert(block, Want::new(Instant::now(), shared));
        want_message(block, credits, rank, shared)
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
    pub fn on_arrival(&mut self, arrival: Arrival) -> ArrivalOutcome {
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
            block = self.coded.valid_block(piece, u32::from(generation).checked_mul(BLOCK_SIZE)?);
            block.map(generation_id)
        });
        let (Ok(packet), Some(block)) = (parsed, block) else {
            self.wasted += 1;
            return out;
        };
        let Some(receipt) = self.coded.receive(self.peer_ip, block, &packet) else {
            self.wasted += 1;
            self.late += 1;
            return out;
        };
        if let Some(last) = self.last_packet.replace(arrival.at) {
            let gap = arrival.at.saturating_duration_since(last);
            if gap <= IDLE_GAP {
                self.packet_gap = if self.packet_gap.is_zero() { gap } else { (self.packet_gap * 7 + gap) / 8 };
            }
        }
        if let Some(w) = self.wants.get_mut(&block) {
            w.on_packet(arrival.at);
        }
        if receipt.innovative {
            out.innovative_bytes = SYMBOL_SIZE as u64;
        } else {
            self.wasted += 1;
        }
        if let Some((data, evidence)) = receipt.decoded {
            self.wants.remove(&block);
            out.decoded = Some(DecodedBlock { block, data: Bytes::from(data), evidence });
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
    pub fn on_timer(&mut self) -> Vec<Control> {
        let now = Instant::now();
        let mut out = Vec::new();
        let loss = self.loss();
        let coded = self.coded.clone();
        let link_gap = self.packet_gap;
        for (block, w) in &mut self.wants {
            // Quiet, not a count of packets against credits: packets of an
            // earlier grant still in flight would count against a renewed one.
            if w.stalled(now, link_gap) {
                let (rank, missing) = rank_and_missing(&coded, *block);
                if missing == 0 {
                    continue;
                }
                let credits = credits_for(missing, loss).min(MAX_CREDITS);
                tracing::trace!(?block, got = w.got, gap = ?w.gap, quiet = ?now.saturating_duration_since(w.last_packet), renewed = w.renewed, rank, credits, "coded want renewed");
                // The block's gap stays: the renewal's packets come as its first did.
                *w = Want { renewed: true, gap: w.gap, ..Want::new(now, w.shared) };
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
        self.coded.router.unregister(&self.our_token);
    }
}

/// A `want` of `block`, first or renewed; credits are at most
/// `MAX_CREDITS`, which fits the message's u16.
fn want_message(block: BlockRef, credits: u32, rank: u16, shared: bool) -> Control {
    Control::Want { piece: block.piece, offset: block.offset, length: block.length, credits: credits as u16, rank, shared }
}

/// Our rank for `block` (from any peer) and the packets it still misses.
fn rank_and_missing(coded: &CodedTorrent, block: BlockRef) -> (u16, u32) {
    let rank = coded.rank(block).unwrap_or(0);
    (rank, (GENERATION as u32).saturating_sub(u32::from(rank)))
}

impl CodedLink {
    fn rank_and_missing(&self, block: BlockRef) -> (u16, u32) {
        rank_and_missing(&self.coded, block)
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
        let link_gap = 2 * ms;
        // Queued behind older wants at the sender: never renewed.
        assert!(!w.stalled(t0 + 5000 * ms, link_gap));
        for i in 1..=4 {
            w.on_packet(t0 + i * 10 * ms);
        }
        assert_eq!(w.gap, 10 * ms);
        // Two gaps is pacing; three is loss.
        assert!(!w.stalled(t0 + 60 * ms, link_gap));
        assert!(w.stalled(t0 + 70 * ms, link_gap));
        // A renewal with nothing back is renewed again after a round trip's allowance.
        let r = Want { renewed: true, ..Want::new(t0, false) };
        assert!(!r.stalled(t0 + RENEWAL_ANSWER - ms, link_gap));
        assert!(r.stalled(t0 + RENEWAL_ANSWER, link_gap));
    }

    #[test]
    fn a_slow_peers_block_is_not_renewed_after_its_first_packet() {
        // The peer sends a packet every 33 ms (30 a second); the block has
        // one so far, so no gap of its own.
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let link_gap = 33 * ms;
        let mut w = Want::new(t0, false);
        w.on_packet(t0 + 10 * ms);
        assert!(!w.stalled(t0 + 60 * ms, link_gap), "the next packet is not even due");
        assert!(!w.stalled(t0 + 300 * ms, link_gap), "four blocks may share the peer's packets");
        assert!(w.stalled(t0 + 10 * ms + 3 * 4 * link_gap, link_gap));
        // On a fast peer the 15 ms floor holds.
        let mut fast = Want::new(t0, false);
        fast.on_packet(t0);
        assert!(!fast.stalled(t0 + 14 * ms, Duration::from_micros(100)));
        assert!(fast.stalled(t0 + RENEW_AFTER, Duration::from_micros(100)));
    }
}
