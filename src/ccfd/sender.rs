//! A connection's coded sender: a task that holds the peer's wants and
//! credits and serves them oldest first: systematic packets first, then
//! seeded combinations of the verified piece, or recodings of what we are
//! still receiving for a neighbour at a lower rank. It is paced by the
//! client's upload cap and a delay-based rate (LEDBAT-like): queues slow
//! it down, random loss does not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ccfd_codec::packet::{Coefficients, Packet};
use ccfd_proto::wire::{BlockRef, BLOCK_SIZE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pacer::Pacer;
use super::proto::{encode_datagram, encode_probe, Control, DatagramHeader, DATAGRAM_HEADER, GENERATION, SYMBOL_SIZE};
use super::queue::{Feed, Queue};
use super::receive::{generation_id, CodedTorrent};
use crate::net::{Net, Traffic};

/// Most blocks a sender interleaves at once, oldest first.
pub(super) const SEND_WINDOW: usize = 4;
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
/// A sender opens the path with this many probes, `OPENING_PROBE_EVERY`
/// apart, before any token wait: the receiver asks for coded blocks only
/// once one has arrived, so a path that never worked (a firewall, a
/// TCP-only proxy) costs nothing, and ten probes get through 20% loss.
const OPENING_PROBES: u32 = 10;
const OPENING_PROBE_EVERY: Duration = Duration::from_millis(20);
/// A sender waiting for upload tokens probes the path this often: well
/// inside `DEAD_AFTER`, and a few 16-byte datagrams a second.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Work for a connection's sender task.
#[derive(Debug, Clone, Copy)]
pub enum SendOrder {
    Control(Control),
    /// We choke the peer: forget every want.
    DropAll,
}

/// One connection's sender task and what it needs: the torrent's coded
/// state (sources, decoders to recode from), the client's upload cap, and
/// the connection's traffic counter.
pub(super) struct Sender {
    pub(super) coded: Arc<CodedTorrent>,
    pub(super) net: Arc<Net>,
    pub(super) traffic: Arc<Traffic>,
    pub(super) shutdown: CancellationToken,
    pub(super) to: SocketAddr,
    pub(super) token: [u8; 8],
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
    pub(super) async fn run(self, mut orders: mpsc::UnboundedReceiver<SendOrder>) {
        let mut queue = Queue::default();
        let mut pacer = Pacer::new(self.net.upload_cap());
        let mut rng = StdRng::from_os_rng();
        let mut seq = 0u32;
        // Upload-cap tokens taken about a block's worth at a time, as the
        // plain uploader takes them: a shared cap then splits fairly between the two.
        let mut allowance = 0u64;
        let shutdown = self.shutdown.clone();
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
                        self.coded.router.send(self.to, &encode_probe(&self.next_header(&mut seq))).await;
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
            if self.coded.polluter {
                rng.fill(&mut packet.payload[..]);
            }
            // A packet proves the path as well as a probe would.
            opening_left = 0;
            // Stamped after the pacing wait: the receiver's delay samples
            // must show the path's queue, not our own. Stamped before it, a
            // connection paced at 40 kB/s saw its own 30 ms gaps as a queue
            // over the target and slowed to the floor (a swarm on 2 Mbit/s
            // uplinks ran at 3x the fluid bound, scripts/bench_wan_swarm.py).
            pacer.wait(len as usize, seq).await;
            let datagram = encode_datagram(&self.next_header(&mut seq), &packet);
            allowance -= datagram.len() as u64;
            self.coded.router.send(self.to, &datagram).await;
            self.traffic.uploaded(SYMBOL_SIZE as u64);
        }
    }

    /// Takes `bytes` of the upload cap's tokens. While they are slow to
    /// come (the cap is shared with other connections) a probe goes out
    /// every `PROBE_EVERY`, so the receiver sees a working path.
    async fn wait_for_tokens(&self, bytes: u64, seq: &mut u32) {
        let tokens = self.net.upload.acquire(bytes);
        tokio::pin!(tokens);
        loop {
            tokio::select! {
                _ = &mut tokens => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {
                    self.coded.router.send(self.to, &encode_probe(&self.next_header(seq))).await;
                }
            }
        }
    }

    /// The header of our next datagram to the peer, packet or probe: both
    /// count in the sequence the receiver reports loss and delivery by.
    fn next_header(&self, seq: &mut u32) -> DatagramHeader {
        let header = DatagramHeader { token: self.token, seq: *seq, stamp_us: self.coded.router.stamp() };
        *seq = seq.wrapping_add(1);
        header
    }

    fn apply(&self, order: SendOrder, queue: &mut Queue, pacer: &mut Pacer) {
        let k = GENERATION as u16;
        match order {
            SendOrder::DropAll => queue.clear(),
            SendOrder::Control(Control::Want { piece, offset, length, credits, rank, shared }) => {
                let Some(block) = self.coded.valid_block(piece, offset).filter(|b| b.length == length) else { return };
                queue.add(block, u32::from(credits), 0, rank.min(k), shared);
            }
            SendOrder::Control(Control::Rank { piece, offset, rank }) => {
                let Some(block) = self.coded.valid_block(piece, offset) else { return };
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
                let ours = if self.coded.has_piece(piece) { None } else { self.coded.rank(block) };
                if let Some(ours) = ours.filter(|&r| r > rank) {
                    queue.add(block, u32::from(ours - rank), k.into(), rank, false);
                }
            }
            SendOrder::Control(Control::Cancel { piece, offset }) => {
                if let Some(block) = self.coded.valid_block(piece, offset) {
                    queue.remove(&block);
                }
            }
            SendOrder::Control(Control::Feedback { received, highest_seq, delay_us }) => {
                pacer.on_feedback(Instant::now(), received, highest_seq, delay_us)
            }
        }
    }

    /// The next packet of `block` for this peer: from the verified piece
    /// (systematic first, then seeded), else recoded from what we receive.
    async fn packet(&self, block: BlockRef, feed: &Feed, rng: &mut StdRng) -> Option<Packet> {
        let id = generation_id(block);
        if let Some(split) = self.coded.source(block.piece).await {
            let generation = split.get((block.offset / BLOCK_SIZE) as usize)?;
            let (coefficients, payload) = if let Some(i) = feed.next_systematic() {
                (Coefficients::Systematic(i), generation.symbol(usize::from(i)).to_vec())
            } else {
                let seed: u64 = rng.random();
                (Coefficients::Seeded(seed), generation.coded(seed))
            };
            return Some(Packet { id, coefficients, payload });
        }
        self.coded.recode(block, feed.their_rank, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
