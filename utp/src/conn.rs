//! One uTP connection, sans I/O: packets and the time go in; datagrams to
//! send, bytes for the reader and state changes come out.
//!
//! Sequence numbers count packets (u16, wrapping). The receiver acks the
//! last packet it has in order and, with a selective ACK, the ones it holds
//! beyond a gap. The sender keeps what is unacked, retransmits on a
//! timeout (doubling, Karn's rule for the round-trip estimate), and resends
//! a packet at once when three later ones are acknowledged (a duplicate ack
//! or the selective ACK says so). How much may be in flight is the smaller
//! of LEDBAT's window and the receiver's advertised one.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ledbat::Ledbat;
use crate::packet::{encode, Header, Kind, Packet};

/// Payload per packet: a whole datagram stays under 1500 bytes on any
/// IPv4 or IPv6 path (libtorrent's 1452 less some slack).
pub const MSS: usize = 1380;
/// Bytes buffered each way per connection, at most.
const RECEIVE_BUFFER: usize = 1 << 20;
const SEND_BUFFER: usize = 1 << 20;
/// The retransmission timeout's floor, start and ceiling.
const MIN_RTO: Duration = Duration::from_millis(500);
const INITIAL_RTO: Duration = Duration::from_secs(1);
const MAX_RTO: Duration = Duration::from_secs(30);
/// Timeouts in a row after which the connection is dead.
const MAX_TIMEOUTS: u32 = 7;
/// SYN attempts, one a second, before giving up: 3 s, as libtorrent's
/// `utp_connect_timeout` (a peer without uTP never answers, and the dialer
/// should move on to TCP soon).
const SYN_TRIES: u32 = 3;
/// An idle connection sends a keep-alive this often, and is dead after
/// hearing nothing this long.
const KEEPALIVE: Duration = Duration::from_secs(29);
const IDLE_LIMIT: Duration = Duration::from_secs(120);
/// Packets ahead of the next expected one that we hold, at most.
const MAX_REORDER: u16 = 1024;
/// Duplicate acks that mean a loss.
const DUP_ACKS: u32 = 3;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Both sides sent FIN.
    Finished,
    /// The peer reset it.
    Reset,
    /// The peer stopped answering.
    TimedOut,
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    SynSent,
    Connected,
    Closed(Closed),
}

#[derive(Debug)]
struct Sent {
    seq: u16,
    kind: Kind,
    payload: Vec<u8>,
    sent_at: Instant,
    transmissions: u32,
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    state: State,
    recv_id: u16,
    send_id: u16,
    /// Next sequence number to send, and the last one received in order.
    seq_nr: u16,
    ack_nr: u16,
    epoch: Instant,
    // Sending.
    outbound: VecDeque<u8>,
    unacked: VecDeque<Sent>,
    in_flight: usize,
    peer_window: usize,
    ledbat: Ledbat,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    rto_at: Option<Instant>,
    timeouts: u32,
    last_ack: u16,
    dup_acks: u32,
    /// The oldest unacked packet was resent for a loss: not again until acked.
    fast_resent: Option<u16>,
    close_asked: bool,
    fin_sent: bool,
    syn_tries: u32,
    /// The sequence number our SYN-ACK carried (an acceptor's first): a
    /// SYN-ACK sent again must say the same, or the initiator would start
    /// past packets it never got.
    first_seq: u16,
    // Receiving.
    inbound: VecDeque<u8>,
    reorder: BTreeMap<u16, (Kind, Vec<u8>)>,
    reorder_bytes: usize,
    peer_fin: Option<u16>,
    eof: bool,
    /// Our delay sample of the peer's packets, echoed in ours.
    reply_micro: u32,
    ack_due: bool,
    /// Datagrams to send before anything new (SYN, acks of a SYN, resends).
    ready: VecDeque<Vec<u8>>,
    last_recv: Instant,
    last_sent: Instant,
}

/// Whether `a` comes before `b` in wrapping sequence order.
fn before(a: u16, b: u16) -> bool {
    (b.wrapping_sub(a) as i16) > 0
}

impl Connection {
    fn new(now: Instant, recv_id: u16, send_id: u16, seq_nr: u16, ack_nr: u16, state: State) -> Connection {
        Connection {
            state,
            recv_id,
            send_id,
            seq_nr,
            ack_nr,
            epoch: now,
            outbound: VecDeque::new(),
            unacked: VecDeque::new(),
            in_flight: 0,
            peer_window: MSS,
            ledbat: Ledbat::new(MSS, SEND_BUFFER),
            srtt: None,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
            rto_at: None,
            timeouts: 0,
            last_ack: ack_nr,
            dup_acks: 0,
            fast_resent: None,
            close_asked: false,
            fin_sent: false,
            syn_tries: 0,
            first_seq: seq_nr,
            inbound: VecDeque::new(),
            reorder: BTreeMap::new(),
            reorder_bytes: 0,
            peer_fin: None,
            eof: false,
            reply_micro: 0,
            ack_due: false,
            ready: VecDeque::new(),
            last_recv: now,
            last_sent: now,
        }
    }

    /// Opens a connection: we receive on `recv_id`, the peer on `recv_id + 1`.
    pub fn connect(now: Instant, recv_id: u16, first_seq: u16) -> Connection {
        let mut c = Connection::new(now, recv_id, recv_id.wrapping_add(1), first_seq, 0, State::SynSent);
        c.send_syn(now);
        c
    }

    /// Accepts the peer's SYN: we receive on its id + 1 and send on its id.
    pub fn accept(now: Instant, syn: &Header, first_seq: u16) -> Connection {
        let mut c = Connection::new(now, syn.conn_id.wrapping_add(1), syn.conn_id, first_seq, syn.seq_nr, State::Connected);
        c.on_timestamp(now, syn);
        c.queue_state(now);
        c
    }

    /// The id the peer's packets carry.
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    pub fn state(&self) -> State {
        self.state
    }

    fn micros(&self, now: Instant) -> u32 {
        now.duration_since(self.epoch).as_micros() as u32
    }

    fn header(&self, now: Instant, kind: Kind, seq_nr: u16) -> Header {
        let free = RECEIVE_BUFFER.saturating_sub(self.inbound.len() + self.reorder_bytes);
        Header {
            kind,
            conn_id: if kind == Kind::Syn { self.recv_id } else { self.send_id },
            timestamp: self.micros(now),
            timestamp_diff: self.reply_micro,
            wnd_size: free as u32,
            seq_nr,
            ack_nr: self.ack_nr,
        }
    }

    fn datagram(&self, now: Instant, kind: Kind, seq_nr: u16, payload: &[u8], sack: bool) -> Vec<u8> {
        let bits = if sack { self.sack_bits() } else { None };
        let mut out = Vec::with_capacity(crate::packet::HEADER + 6 + payload.len());
        encode(&self.header(now, kind, seq_nr), bits.as_deref(), payload, &mut out);
        out
    }

    fn send_syn(&mut self, now: Instant) {
        self.syn_tries += 1;
        let syn = self.datagram(now, Kind::Syn, self.seq_nr, &[], false);
        self.ready.push_back(syn);
        self.rto_at = Some(now + self.rto);
    }

    fn queue_state(&mut self, now: Instant) {
        let state = self.datagram(now, Kind::State, self.seq_nr, &[], true);
        self.ready.push_back(state);
        self.ack_due = false;
    }

    /// The selective ACK of what we hold past a gap, if anything.
    fn sack_bits(&self) -> Option<Vec<u8>> {
        if self.reorder.is_empty() {
            return None;
        }
        let mut bits = vec![0u8; 4];
        for &seq in self.reorder.keys() {
            let i = seq.wrapping_sub(self.ack_nr).wrapping_sub(2) as usize;
            if i < 32 * 8 {
                if i / 8 >= bits.len() {
                    bits.resize((i / 32 + 1) * 4, 0);
                }
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        Some(bits)
    }

    fn on_timestamp(&mut self, now: Instant, h: &Header) {
        self.reply_micro = self.micros(now).wrapping_sub(h.timestamp);
        self.last_recv = now;
    }

    /// One packet from the peer (already matched to this connection).
    pub fn handle(&mut self, now: Instant, p: &Packet) {
        if self.state == State::Closed(Closed::Finished) && p.header.kind == Kind::Fin {
            // Our last ack of its FIN was lost: say it again.
            self.queue_state(now);
            return;
        }
        if let State::Closed(_) = self.state {
            return;
        }
        let h = p.header;
        self.on_timestamp(now, &h);
        self.peer_window = h.wnd_size as usize;
        match h.kind {
            Kind::Reset => {
                self.state = State::Closed(Closed::Reset);
                return;
            }
            Kind::Syn => {
                // Our SYN-ACK was lost: say it again, as it was.
                let syn_ack = self.datagram(now, Kind::State, self.first_seq, &[], false);
                self.ready.push_back(syn_ack);
                return;
            }
            Kind::State if self.state == State::SynSent => {
                self.state = State::Connected;
                self.ack_nr = h.seq_nr.wrapping_sub(1);
                self.seq_nr = self.seq_nr.wrapping_add(1);
                self.rto_at = None;
            }
            _ => {}
        }
        if self.state == State::SynSent {
            return;
        }
        if h.timestamp_diff != 0 {
            self.ledbat.on_delay(now, h.timestamp_diff);
        }
        self.on_ack(now, &h, p.sack);
        if matches!(h.kind, Kind::Data | Kind::Fin) {
            self.on_data(h.kind, h.seq_nr, p.payload);
        }
        self.check_finished();
    }

    fn on_data(&mut self, kind: Kind, seq: u16, payload: &[u8]) {
        self.ack_due = true;
        let expected = self.ack_nr.wrapping_add(1);
        let ahead = seq.wrapping_sub(expected);
        if ahead >= 0x8000 {
            return; // a duplicate of something delivered: the ack says so
        }
        // A peer that ignores our window gets nothing more buffered.
        if self.inbound.len() + self.reorder_bytes + payload.len() > 2 * RECEIVE_BUFFER {
            return;
        }
        if ahead > 0 {
            if ahead < MAX_REORDER && !self.reorder.contains_key(&seq) {
                self.reorder_bytes += payload.len();
                self.reorder.insert(seq, (kind, payload.to_vec()));
            }
            return;
        }
        self.accept_in_order(kind, seq, payload.to_vec());
        while let Some((k, data)) = self.reorder.remove(&self.ack_nr.wrapping_add(1)) {
            self.reorder_bytes -= data.len();
            let next = self.ack_nr.wrapping_add(1);
            self.accept_in_order(k, next, data);
        }
    }

    fn accept_in_order(&mut self, kind: Kind, seq: u16, payload: Vec<u8>) {
        self.ack_nr = seq;
        if kind == Kind::Fin {
            self.peer_fin = Some(seq);
            self.eof = true;
        } else if !self.eof {
            self.inbound.extend(payload);
        }
    }

    fn on_ack(&mut self, now: Instant, h: &Header, sack: Option<&[u8]>) {
        let mut acked = 0usize;
        let mut newest_sample = None;
        while let Some(first) = self.unacked.front() {
            if before(h.ack_nr, first.seq) {
                break;
            }
            let sent = self.unacked.pop_front().unwrap_or_else(|| unreachable!());
            acked += sent.payload.len();
            self.in_flight = self.in_flight.saturating_sub(sent.payload.len());
            if sent.transmissions == 1 {
                newest_sample = Some(now.saturating_duration_since(sent.sent_at));
            }
        }
        let mut sacked_beyond = 0;
        if let Some(bits) = sack {
            for (i, byte) in bits.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) == 0 {
                        continue;
                    }
                    let seq = h.ack_nr.wrapping_add(2).wrapping_add((i * 8 + bit) as u16);
                    sacked_beyond += 1;
                    if let Some(pos) = self.unacked.iter().position(|s| s.seq == seq) {
                        let sent = self.unacked.remove(pos).unwrap_or_else(|| unreachable!());
                        acked += sent.payload.len();
                        self.in_flight = self.in_flight.saturating_sub(sent.payload.len());
                    }
                }
            }
        }
        if let Some(rtt) = newest_sample {
            self.update_rtt(rtt);
        }
        if acked > 0 {
            self.timeouts = 0;
            self.dup_acks = 0;
            self.ledbat.on_ack(acked);
            self.fast_resent = None;
        } else if h.kind == Kind::State && h.ack_nr == self.last_ack && !self.unacked.is_empty() {
            self.dup_acks += 1;
        }
        self.last_ack = h.ack_nr;
        // Three packets past the oldest unacked one arrived: it was lost.
        let lost = self.dup_acks >= DUP_ACKS || sacked_beyond >= DUP_ACKS as usize;
        if lost {
            if let Some(first) = self.unacked.front().map(|s| s.seq).filter(|&s| self.fast_resent != Some(s)) {
                self.ledbat.on_loss();
                self.fast_resent = Some(first);
                self.resend_first(now);
            }
        }
        self.rto_at = if self.unacked.is_empty() { None } else { Some(now + self.rto) };
    }

    fn update_rtt(&mut self, sample: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(sample);
        self.rto = (srtt + 4 * self.rttvar).clamp(MIN_RTO, MAX_RTO);
    }

    fn resend_first(&mut self, now: Instant) {
        let Some(first) = self.unacked.front() else { return };
        let (kind, seq, payload) = (first.kind, first.seq, first.payload.clone());
        let datagram = self.datagram(now, kind, seq, &payload, true);
        if let Some(first) = self.unacked.front_mut() {
            first.transmissions += 1;
            first.sent_at = now;
        }
        self.ready.push_back(datagram);
        self.ack_due = false;
    }

    fn check_finished(&mut self) {
        if self.fin_sent && self.unacked.is_empty() && self.peer_fin.is_some() && self.ready.is_empty() && !self.ack_due {
            self.state = State::Closed(Closed::Finished);
        }
    }

    /// The next datagram to send now, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some(d) = self.ready.pop_front() {
            self.last_sent = now;
            return Some(d);
        }
        if self.state != State::Connected {
            return None;
        }
        let window = self.ledbat.window().min(self.peer_window).max(MSS);
        if !self.outbound.is_empty() && self.in_flight + MSS.min(self.outbound.len()) <= window {
            let n = MSS.min(self.outbound.len());
            let payload: Vec<u8> = self.outbound.drain(..n).collect();
            return Some(self.send_new(now, Kind::Data, payload));
        }
        if self.close_asked && !self.fin_sent && self.outbound.is_empty() {
            self.fin_sent = true;
            return Some(self.send_new(now, Kind::Fin, Vec::new()));
        }
        if self.ack_due {
            self.ack_due = false;
            self.last_sent = now;
            let ack = self.datagram(now, Kind::State, self.seq_nr, &[], true);
            self.check_finished();
            return Some(ack);
        }
        None
    }

    fn send_new(&mut self, now: Instant, kind: Kind, payload: Vec<u8>) -> Vec<u8> {
        let seq = self.seq_nr;
        self.seq_nr = self.seq_nr.wrapping_add(1);
        let datagram = self.datagram(now, kind, seq, &payload, true);
        self.in_flight += payload.len();
        self.unacked.push_back(Sent { seq, kind, payload, sent_at: now, transmissions: 1 });
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rto);
        }
        self.ack_due = false;
        self.last_sent = now;
        datagram
    }

    /// When `on_timer` should run next.
    pub fn next_timer(&self) -> Option<Instant> {
        if let State::Closed(_) = self.state {
            return None;
        }
        let idle = (self.last_sent + KEEPALIVE).min(self.last_recv + IDLE_LIMIT);
        Some(self.rto_at.map_or(idle, |t| t.min(idle)))
    }

    /// Retransmissions, keep-alives and the dead-peer clock.
    pub fn on_timer(&mut self, now: Instant) {
        if let State::Closed(_) = self.state {
            return;
        }
        if now.duration_since(self.last_recv) >= IDLE_LIMIT {
            self.state = State::Closed(Closed::TimedOut);
            return;
        }
        if let Some(at) = self.rto_at.filter(|&at| now >= at) {
            let _ = at;
            if self.state == State::SynSent {
                if self.syn_tries >= SYN_TRIES {
                    self.state = State::Closed(Closed::TimedOut);
                    return;
                }
                self.send_syn(now);
                return;
            }
            self.timeouts += 1;
            if self.timeouts > MAX_TIMEOUTS {
                self.state = State::Closed(Closed::TimedOut);
                return;
            }
            self.ledbat.on_timeout();
            self.rto = (self.rto * 2).min(MAX_RTO);
            self.resend_first(now);
            self.rto_at = Some(now + self.rto);
        }
        if self.state == State::Connected && now.duration_since(self.last_sent) >= KEEPALIVE {
            self.ack_due = true;
        }
    }

    /// Queues bytes to send; returns how many fit in the send buffer.
    pub fn write(&mut self, data: &[u8]) -> usize {
        if self.close_asked || matches!(self.state, State::Closed(_)) {
            return 0;
        }
        let room = SEND_BUFFER.saturating_sub(self.outbound.len() + self.in_flight);
        let n = room.min(data.len());
        self.outbound.extend(&data[..n]);
        n
    }

    /// Whether `write` would take bytes now.
    pub fn writable(&self) -> bool {
        self.outbound.len() + self.in_flight < SEND_BUFFER
    }

    /// Takes received bytes in order; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.inbound.len());
        for (dst, src) in buf.iter_mut().zip(self.inbound.drain(..n)) {
            *dst = src;
        }
        if n > 0 {
            // The window opened: tell the peer.
            self.ack_due = true;
        }
        n
    }

    /// Bytes waiting for the reader.
    pub fn readable(&self) -> usize {
        self.inbound.len()
    }

    /// The peer finished sending and every byte before its FIN was read.
    pub fn at_eof(&self) -> bool {
        self.eof && self.inbound.is_empty()
    }

    /// No more writes: a FIN follows what is queued.
    pub fn close(&mut self) {
        self.close_asked = true;
    }

    /// Drops the connection at once (the peer hears a RESET).
    pub fn reset(&mut self, now: Instant) -> Vec<u8> {
        self.state = State::Closed(Closed::Reset);
        self.datagram(now, Kind::Reset, self.seq_nr, &[], false)
    }

    /// The current congestion window, for tests and logs.
    pub fn window(&self) -> usize {
        self.ledbat.window()
    }
}

#[cfg(test)]
mod tests;
