//! The peer-wire protocol state of one connection, sans I/O: who chokes
//! whom, who is interested, our requests in flight and how many to keep
//! there, and the snub, idle and keep-alive clocks. Every method takes the
//! time as a value and returns what to send or do; the connection task
//! (`peer::run`) does the sending, so these rules are tested without sockets.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ccfd_proto::wire::{BlockRef, Message, BLOCK_SIZE, MAX_BLOCK};

use crate::decide::delivery_rate::DeliveryRate;

/// Requests we queue for a peer before dropping more; advertised as `reqq`.
pub const OUR_REQQ: usize = 512;
/// Assumed `reqq` of a peer that does not say (libtorrent's historic default).
const DEFAULT_PEER_REQQ: usize = 250;
/// Request queue bounds (blocks) and the seconds of traffic it should cover.
const MIN_QUEUE: usize = 8;
const MAX_QUEUE: usize = 512;
const QUEUE_SECONDS: f64 = 1.5;
/// We send a keep-alive after this long without one.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(90);

/// The clocks a connection runs on.
#[derive(Debug, Clone, Copy)]
pub struct WireTimeouts {
    /// Nothing received for this long while requests are out: snubbed.
    pub snub: Duration,
    /// Nothing at all received for this long: close.
    pub idle: Duration,
}

/// What to do with a request the peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Queue it for the uploader.
    Serve,
    /// We choke the peer: BEP 3 says drop it silently.
    Drop,
    /// We will not serve it, and (BEP 6) say so.
    Reject,
    /// A range outside the piece (or, without BEP 6, a piece we lack): a protocol violation.
    Invalid,
}

/// What the once-a-second tick decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WireTick {
    /// Silent past the idle timeout: close the connection.
    pub idle: bool,
    /// Snubbed: cancel these requests and hand them to other peers.
    pub snubbed: Vec<BlockRef>,
    /// Send a keep-alive.
    pub keepalive: bool,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct WireState {
    /// Both sides speak the fast extension (BEP 6).
    pub fast: bool,
    pub peer_choking: bool,
    pub am_interested: bool,
    pub am_choking: bool,
    /// Requests in flight to this peer.
    outstanding: HashSet<BlockRef>,
    queue_target: usize,
    peer_reqq: usize,
    last_block: Instant,
    last_recv: Instant,
    last_keepalive: Instant,
    /// Bytes this second, and the smoothed rate (bytes per second).
    window_bytes: u64,
    rate: f64,
    /// What it delivers since its last unchoke, for the deadline planner.
    delivery: DeliveryRate,
    timeouts: WireTimeouts,
}

impl WireState {
    /// A fresh connection: both sides choke, neither is interested.
    pub fn new(now: Instant, timeouts: WireTimeouts, fast: bool) -> WireState {
        WireState {
            fast,
            peer_choking: true,
            am_interested: false,
            am_choking: true,
            outstanding: HashSet::new(),
            queue_target: MIN_QUEUE * 2,
            peer_reqq: DEFAULT_PEER_REQQ,
            last_block: now,
            last_recv: now,
            last_keepalive: now,
            window_bytes: 0,
            rate: 0.0,
            delivery: DeliveryRate::default(),
            timeouts,
        }
    }

    /// Any message arrived.
    pub fn on_recv(&mut self, now: Instant) {
        self.last_recv = now;
    }

    /// The peer's extended handshake named its request queue size.
    pub fn set_peer_reqq(&mut self, reqq: i64) {
        if let Some(q) = usize::try_from(reqq).ok().filter(|&q| q > 0) {
            self.peer_reqq = q;
        }
    }

    /// Our interest changed? The message to send, if so.
    pub fn set_interested(&mut self, interested: bool) -> Option<Message> {
        if interested == self.am_interested {
            return None;
        }
        self.am_interested = interested;
        Some(if interested { Message::Interested } else { Message::NotInterested })
    }

    /// The swarm chokes or unchokes the peer: the message to send, if it changes.
    pub fn set_choking(&mut self, choke: bool) -> Option<Message> {
        if choke == self.am_choking {
            return None;
        }
        self.am_choking = choke;
        Some(if choke { Message::Choke } else { Message::Unchoke })
    }

    /// The peer choked us: every request in flight is void; these go back to the picker.
    pub fn on_choked(&mut self) -> Vec<BlockRef> {
        self.peer_choking = true;
        self.delivery.choked();
        self.outstanding.drain().collect()
    }

    pub fn on_unchoked(&mut self, now: Instant) {
        self.peer_choking = false;
        self.last_block = now;
        self.delivery.unchoked(now);
    }

    /// `bytes` of a block we asked for arrived (plain, or innovative coded payload).
    pub fn on_delivery(&mut self, now: Instant, bytes: u64) {
        self.last_block = now;
        self.delivery.record(now, bytes);
        self.window_bytes += bytes;
    }

    /// A block left the pipeline (arrived, decoded, cancelled, fell back);
    /// true if it was in flight here.
    pub fn finished(&mut self, block: &BlockRef) -> bool {
        self.outstanding.remove(block)
    }

    /// What to do with the peer's request for `block` of a piece that is
    /// `piece_len` long (`None`: we do not have it); `allowed_fast`: the
    /// piece is in the set we let it ask for while we choke it (BEP 6).
    pub fn judge_request(&self, block: &BlockRef, piece_len: Option<u32>, allowed_fast: bool) -> RequestVerdict {
        if self.am_choking && !self.fast {
            return RequestVerdict::Drop;
        }
        let Some(len) = piece_len else {
            return if self.fast { RequestVerdict::Reject } else { RequestVerdict::Invalid };
        };
        let fits = u64::from(block.offset) + u64::from(block.length) <= u64::from(len);
        if !fits || block.length == 0 || block.length > MAX_BLOCK {
            return RequestVerdict::Invalid;
        }
        if self.am_choking && !allowed_fast {
            return RequestVerdict::Reject;
        }
        RequestVerdict::Serve
    }

    /// How many blocks to request now: none while not interested, none
    /// while choked unless it let us ask for some pieces anyway
    /// (`allowed_fast`, BEP 6), and none until the pipeline has drained an
    /// eighth of its target (requests go out in batches, not one per block).
    pub fn room(&self, allowed_fast: bool) -> usize {
        if (self.peer_choking && !allowed_fast) || !self.am_interested {
            return 0;
        }
        let room = self.queue_target.saturating_sub(self.outstanding.len());
        if room == 0 || (room < self.queue_target / 8 && !self.outstanding.is_empty()) {
            return 0;
        }
        room
    }

    /// A request went out.
    pub fn requested(&mut self, block: BlockRef) {
        self.outstanding.insert(block);
    }

    /// Bytes requested and not yet delivered.
    pub fn queued_bytes(&self) -> u64 {
        self.outstanding.iter().map(|b| u64::from(b.length)).sum()
    }

    /// What the peer delivered since its last unchoke (`None`: too early to say).
    pub fn delivery_rate(&self, now: Instant) -> Option<f64> {
        self.delivery.rate(now)
    }

    /// Once a second: the rate and the pipeline size it calls for, and the
    /// idle, snub and keep-alive clocks.
    pub fn tick(&mut self, now: Instant) -> WireTick {
        self.rate = 0.6 * self.rate + 0.4 * self.window_bytes as f64;
        self.window_bytes = 0;
        let by_rate = (self.rate * QUEUE_SECONDS / f64::from(BLOCK_SIZE)).ceil() as usize;
        self.queue_target = by_rate.clamp(MIN_QUEUE, MAX_QUEUE.min(self.peer_reqq).max(MIN_QUEUE));
        let mut out = WireTick::default();
        if now.duration_since(self.last_recv) > self.timeouts.idle {
            out.idle = true;
            return out;
        }
        if !self.outstanding.is_empty() && now.duration_since(self.last_block) > self.timeouts.snub {
            // Snubbed: hand its requests to other peers, keep the connection.
            out.snubbed = self.outstanding.drain().collect();
            self.last_block = now;
        }
        if now.duration_since(self.last_keepalive) > KEEPALIVE_EVERY {
            self.last_keepalive = now;
            out.keepalive = true;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: WireTimeouts = WireTimeouts { snub: Duration::from_secs(20), idle: Duration::from_secs(180) };

    fn block(piece: u32, offset: u32) -> BlockRef {
        BlockRef { piece, offset, length: BLOCK_SIZE }
    }

    #[test]
    fn interest_and_choking_send_only_changes() {
        let mut w = WireState::new(Instant::now(), TIMEOUTS, false);
        assert_eq!(w.set_interested(false), None);
        assert_eq!(w.set_interested(true), Some(Message::Interested));
        assert_eq!(w.set_interested(true), None);
        assert_eq!(w.set_choking(true), None, "connections start choked");
        assert_eq!(w.set_choking(false), Some(Message::Unchoke));
        assert_eq!(w.set_interested(false), Some(Message::NotInterested));
    }

    #[test]
    fn requests_while_we_choke_are_dropped_and_bad_ones_refused() {
        let mut w = WireState::new(Instant::now(), TIMEOUTS, false);
        let b = block(0, 0);
        assert_eq!(w.judge_request(&b, Some(32768), false), RequestVerdict::Drop);
        w.set_choking(false);
        assert_eq!(w.judge_request(&b, Some(32768), false), RequestVerdict::Serve);
        assert_eq!(w.judge_request(&b, None, false), RequestVerdict::Invalid, "a piece we lack");
        assert_eq!(w.judge_request(&block(0, 24576), Some(32768), false), RequestVerdict::Invalid, "past the piece's end");
        let huge = BlockRef { piece: 0, offset: 0, length: MAX_BLOCK + 1 };
        assert_eq!(w.judge_request(&huge, Some(1 << 20), false), RequestVerdict::Invalid);
        let empty = BlockRef { piece: 0, offset: 0, length: 0 };
        assert_eq!(w.judge_request(&empty, Some(32768), false), RequestVerdict::Invalid);
    }

    #[test]
    fn with_the_fast_extension_refusals_are_said_and_allowed_pieces_served_while_choked() {
        let w = WireState::new(Instant::now(), TIMEOUTS, true);
        let b = block(0, 0);
        assert_eq!(w.judge_request(&b, Some(32768), false), RequestVerdict::Reject, "choked: rejected, not dropped");
        assert_eq!(w.judge_request(&b, Some(32768), true), RequestVerdict::Serve, "an allowed-fast piece is served");
        assert_eq!(w.judge_request(&b, None, true), RequestVerdict::Reject, "a piece we lack is rejected");
        assert_eq!(w.judge_request(&block(0, 24576), Some(32768), true), RequestVerdict::Invalid, "a bad range still closes");
        let mut w = w;
        w.set_interested(true);
        assert_eq!(w.room(false), 0, "choked");
        assert_eq!(w.room(true), MIN_QUEUE * 2, "choked, but allowed-fast pieces to ask for");
    }

    #[test]
    fn no_requests_while_choked_or_uninterested_and_batches_otherwise() {
        let now = Instant::now();
        let mut w = WireState::new(now, TIMEOUTS, false);
        assert_eq!(w.room(false), 0, "choked");
        w.on_unchoked(now);
        assert_eq!(w.room(false), 0, "not interested");
        w.set_interested(true);
        assert_eq!(w.room(false), MIN_QUEUE * 2);
        for i in 0..15 {
            w.requested(block(i, 0));
        }
        assert_eq!(w.room(false), 0, "one free of sixteen waits for a batch");
        w.finished(&block(0, 0));
        assert_eq!(w.room(false), 2);
        assert_eq!(w.queued_bytes(), 14 * u64::from(BLOCK_SIZE));
        // A choke voids every request.
        assert_eq!(w.on_choked().len(), 14);
        assert_eq!(w.room(false), 0);
    }

    #[test]
    fn the_pipeline_follows_the_rate_within_the_peers_reqq() {
        let t0 = Instant::now();
        let mut w = WireState::new(t0, TIMEOUTS, false);
        // 10 MB/s for a few seconds: 1.5 s of blocks is about 900, capped at reqq 250.
        for s in 1..=5 {
            w.on_delivery(t0, 10_000_000);
            w.tick(t0 + Duration::from_secs(s));
        }
        assert_eq!(w.queue_target, DEFAULT_PEER_REQQ);
        w.set_peer_reqq(400);
        w.on_delivery(t0, 10_000_000);
        w.tick(t0 + Duration::from_secs(6));
        assert_eq!(w.queue_target, 400);
        w.set_peer_reqq(-5);
        assert_eq!(w.peer_reqq, 400, "nonsense is ignored");
        // Nothing for a while: back to the floor.
        for s in 7..30 {
            w.tick(t0 + Duration::from_secs(s));
        }
        assert_eq!(w.queue_target, MIN_QUEUE);
    }

    #[test]
    fn a_silent_peer_is_snubbed_then_closed_and_we_keep_alive() {
        let t0 = Instant::now();
        let mut w = WireState::new(t0, TIMEOUTS, false);
        w.on_unchoked(t0);
        w.set_interested(true);
        w.requested(block(1, 0));
        w.requested(block(1, 16384));
        assert_eq!(w.tick(t0 + Duration::from_secs(10)), WireTick::default());
        let snub = w.tick(t0 + Duration::from_secs(21));
        assert_eq!(snub.snubbed.len(), 2);
        assert!(!snub.idle);
        assert_eq!(w.queued_bytes(), 0);
        let alive = w.tick(t0 + Duration::from_secs(91));
        assert!(alive.keepalive && !alive.idle);
        assert!(!w.tick(t0 + Duration::from_secs(92)).keepalive, "once per 90 s");
        w.on_recv(t0 + Duration::from_secs(100));
        assert!(!w.tick(t0 + Duration::from_secs(200)).idle);
        assert!(w.tick(t0 + Duration::from_secs(281)).idle);
    }
}
