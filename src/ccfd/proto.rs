//! The ccfd extension's wire formats (docs/ccfd-extension.md): the offer in
//! the BEP 10 handshake, the control messages on TCP, and the UDP datagram
//! header around a coded packet. Pure; every parser is bounded and total.

use std::collections::HashMap;

use serde_bencode::value::Value;

use ccfd_codec::packet::{GenerationId, Packet, PacketError};

/// Protocol version.
pub const VERSION: i64 = 3;
/// Symbol size and generation size: one generation is one 16 KiB block,
/// in 14 symbols of 1171 bytes (the last padded by 10). These are the
/// largest symbols for which a recoded datagram (header, short packet
/// header, 14 coefficients: 1208 bytes) stays under `MAX_DATAGRAM`; every
/// datagram's headers cost upload, so fewer, larger symbols send a block
/// in fewer bytes (16 of 1024 took 0.4% more).
pub const SYMBOL_SIZE: usize = 1171;
pub const GENERATION: usize = 14;
/// Most credits a sender holds for one block (a `want` carries them in a u16).
pub const MAX_CREDITS: u32 = 4 * GENERATION as u32;
/// Largest datagram we send or accept (unfragmented on any IPv6 path).
pub const MAX_DATAGRAM: usize = 1232;
/// A receiver sends `feedback` at most this often; the sender's pacer
/// spreads its increases over at least this long.
pub const FEEDBACK_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
/// Datagram header before the coded packet (in the codec's short form:
/// both ends know the geometry from the torrent and the offers).
pub const DATAGRAM_HEADER: usize = 16;

/// What one side of a connection offers in its extended handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub version: i64,
    /// UDP port the offerer receives on (same IP as the TCP connection).
    pub port: u16,
    /// Token every datagram sent to the offerer must carry.
    pub token: [u8; 8],
    pub symbol_size: usize,
    pub generation: usize,
}

impl Offer {
    /// Our offer for one connection.
    pub fn ours(port: u16, token: [u8; 8]) -> Offer {
        Offer { version: VERSION, port, token, symbol_size: SYMBOL_SIZE, generation: GENERATION }
    }

    /// The `ccfd` dictionary of the handshake.
    pub fn to_value(&self) -> Value {
        let mut d = HashMap::new();
        d.insert(b"v".to_vec(), Value::Int(self.version));
        d.insert(b"port".to_vec(), Value::Int(i64::from(self.port)));
        d.insert(b"token".to_vec(), Value::Bytes(self.token.to_vec()));
        d.insert(b"s".to_vec(), Value::Int(self.symbol_size as i64));
        d.insert(b"k".to_vec(), Value::Int(self.generation as i64));
        Value::Dict(d)
    }

    /// Reads a peer's offer; `None` for anything malformed or out of range.
    pub fn from_value(v: &Value) -> Option<Offer> {
        let Value::Dict(d) = v else { return None };
        let int = |k: &[u8]| match d.get(k) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        };
        let token = match d.get(b"token".as_slice()) {
            Some(Value::Bytes(b)) => <[u8; 8]>::try_from(b.as_slice()).ok()?,
            _ => return None,
        };
        let port = u16::try_from(int(b"port")?).ok().filter(|&p| p != 0)?;
        let symbol_size = usize::try_from(int(b"s")?).ok().filter(|s| (1..=SYMBOL_SIZE).contains(s))?;
        let generation = usize::try_from(int(b"k")?).ok().filter(|k| (1..=64).contains(k))?;
        Some(Offer { version: int(b"v")?, port, token, symbol_size, generation })
    }

    /// Whether two offers agree, so the connection may use the extension.
    pub fn compatible(&self, other: &Offer) -> bool {
        self.version == other.version && self.symbol_size == other.symbol_size && self.generation == other.generation
    }
}

/// A control message on the TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Send up to `credits` more packets of this generation (block); I hold
    /// `rank` of it already (from anyone), so a sender that did not give me
    /// those sends random combinations, not systematic symbols I may have.
    /// `shared`: I ask another peer for it too, so send combinations only.
    Want { piece: u32, offset: u32, length: u32, credits: u16, rank: u16, shared: bool },
    /// My rank for this generation; K means decoded.
    Rank { piece: u32, offset: u32, rank: u16 },
    /// Datagrams received from you, the highest sequence seen, the latest one-way delay sample.
    Feedback { received: u32, highest_seq: u32, delay_us: u32 },
    /// Forget my `want` of this generation.
    Cancel { piece: u32, offset: u32 },
}

/// Why a control message or datagram was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("ccfd message type {0} unknown")]
    Type(u8),
    #[error("ccfd message of {0} bytes has the wrong length for its type")]
    Length(usize),
    #[error("datagram of {0} bytes outside the allowed sizes")]
    DatagramSize(usize),
    #[error("datagram for piece {0} generation {1}, not in this torrent")]
    UnknownGeneration(u32, u16),
    #[error("coded packet: {0}")]
    Packet(#[from] PacketError),
}

impl Control {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18);
        match *self {
            Control::Want { piece, offset, length, credits, rank, shared } => {
                out.push(1);
                out.extend_from_slice(&piece.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(&credits.to_be_bytes());
                out.extend_from_slice(&rank.to_be_bytes());
                out.push(u8::from(shared));
            }
            Control::Rank { piece, offset, rank } => {
                out.push(2);
                out.extend_from_slice(&piece.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&rank.to_be_bytes());
            }
            Control::Feedback { received, highest_seq, delay_us } => {
                out.push(3);
                out.extend_from_slice(&received.to_be_bytes());
                out.extend_from_slice(&highest_seq.to_be_bytes());
                out.extend_from_slice(&delay_us.to_be_bytes());
            }
            Control::Cancel { piece, offset } => {
                out.push(4);
                out.extend_from_slice(&piece.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
            }
        }
        out
    }

    pub fn parse(b: &[u8]) -> Result<Control, ProtoError> {
        let kind = *b.first().ok_or(ProtoError::Length(0))?;
        let want_len = match kind {
            1 => 18,
            2 => 11,
            3 => 13,
            4 => 9,
            other => return Err(ProtoError::Type(other)),
        };
        if b.len() != want_len {
            return Err(ProtoError::Length(b.len()));
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        Ok(match kind {
            1 => Control::Want {
                piece: u32_at(1),
                offset: u32_at(5),
                length: u32_at(9),
                credits: u16_at(13),
                rank: u16_at(15),
                shared: b[17] != 0,
            },
            2 => Control::Rank { piece: u32_at(1), offset: u32_at(5), rank: u16_at(9) },
            3 => Control::Feedback { received: u32_at(1), highest_seq: u32_at(5), delay_us: u32_at(9) },
            _ => Control::Cancel { piece: u32_at(1), offset: u32_at(5) },
        })
    }
}

/// The datagram header: whose it is, its sequence number and send stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramHeader {
    pub token: [u8; 8],
    pub seq: u32,
    pub stamp_us: u32,
}

/// Frames a coded packet for the receiver holding `header.token`.
pub fn encode_datagram(header: &DatagramHeader, packet: &Packet) -> Vec<u8> {
    let mut out = Vec::with_capacity(DATAGRAM_HEADER + packet.short_encoded_len());
    write_header(&mut out, header);
    packet.write_short(&mut out);
    out
}

/// A header with no packet: a sender that holds wants but waits (for its
/// upload cap's tokens) shows the receiver that the path works, so a slow
/// sender is not taken for a blocked path.
pub fn encode_probe(header: &DatagramHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(DATAGRAM_HEADER);
    write_header(&mut out, header);
    out
}

/// Whether an accepted datagram is a probe (no packet).
pub fn is_probe(b: &[u8]) -> bool {
    b.len() == DATAGRAM_HEADER
}

fn write_header(out: &mut Vec<u8>, header: &DatagramHeader) {
    out.extend_from_slice(&header.token);
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&header.stamp_us.to_be_bytes());
}

/// The header alone: enough to find the connection (and drop strangers)
/// before the packet is parsed.
pub fn datagram_header(b: &[u8]) -> Result<DatagramHeader, ProtoError> {
    if b.len() < DATAGRAM_HEADER || b.len() > MAX_DATAGRAM {
        return Err(ProtoError::DatagramSize(b.len()));
    }
    let mut token = [0u8; 8];
    token.copy_from_slice(&b[..8]);
    let seq = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    let stamp_us = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
    Ok(DatagramHeader { token, seq, stamp_us })
}

/// The coded packet inside a datagram whose header was accepted;
/// `geometry` gives the id of a piece's generation, `None` if the torrent
/// has no such generation.
pub fn datagram_packet(b: &[u8], geometry: impl FnOnce(u32, u16) -> Option<GenerationId>) -> Result<Packet, ProtoError> {
    let body = b.get(DATAGRAM_HEADER..).ok_or(ProtoError::DatagramSize(b.len()))?;
    let (piece, generation) = Packet::short_generation(body)?;
    let id = geometry(piece, generation).ok_or(ProtoError::UnknownGeneration(piece, generation))?;
    Ok(Packet::parse_short(body, id)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccfd_codec::packet::Coefficients;
    use rand::{Rng, SeedableRng};

    #[test]
    fn offers_round_trip_and_bad_ones_are_refused() {
        let ours = Offer::ours(6881, *b"12345678");
        assert_eq!(Offer::from_value(&ours.to_value()), Some(ours.clone()));
        assert!(ours.compatible(&Offer::from_value(&ours.to_value()).unwrap()));
        let mut bad = ours.to_value();
        if let Value::Dict(d) = &mut bad {
            d.insert(b"token".to_vec(), Value::Bytes(vec![1, 2, 3]));
        }
        assert_eq!(Offer::from_value(&bad), None);
        let mut bad = ours.to_value();
        if let Value::Dict(d) = &mut bad {
            d.insert(b"s".to_vec(), Value::Int(1 << 20));
        }
        assert_eq!(Offer::from_value(&bad), None);
        assert_eq!(Offer::from_value(&Value::Int(3)), None);
        let other = Offer { generation: 32, ..ours.clone() };
        assert!(!ours.compatible(&other));
    }

    #[test]
    fn control_messages_round_trip() {
        for m in [
            Control::Want { piece: 7, offset: 16384, length: 16384, credits: 18, rank: 3, shared: false },
            Control::Want { piece: 7, offset: 0, length: 16384, credits: 14, rank: 0, shared: true },
            Control::Rank { piece: 1, offset: 0, rank: 16 },
            Control::Feedback { received: 100, highest_seq: 120, delay_us: 4000 },
            Control::Cancel { piece: 9, offset: 32768 },
        ] {
            assert_eq!(Control::parse(&m.encode()), Ok(m));
        }
        assert_eq!(Control::parse(&[]), Err(ProtoError::Length(0)));
        assert_eq!(Control::parse(&[9, 0]), Err(ProtoError::Type(9)));
        assert_eq!(Control::parse(&[2, 0, 0]), Err(ProtoError::Length(3)));
    }

    #[test]
    fn datagrams_round_trip_and_stay_under_the_limit() {
        let id = GenerationId { piece: 3, generation: 1, k: GENERATION as u16, symbol_size: SYMBOL_SIZE as u16, len: 16384 };
        let packet = Packet { id, coefficients: Coefficients::Explicit(vec![7; GENERATION]), payload: vec![1; SYMBOL_SIZE] };
        let header = DatagramHeader { token: *b"abcdefgh", seq: 42, stamp_us: 99 };
        let d = encode_datagram(&header, &packet);
        assert!(d.len() <= MAX_DATAGRAM, "{} bytes", d.len());
        assert_eq!(d.len(), DATAGRAM_HEADER + packet.short_encoded_len(), "what a sender takes tokens for");
        assert_eq!(datagram_header(&d), Ok(header));
        let known = |piece, generation| (piece == 3 && generation == 1).then_some(id);
        assert_eq!(datagram_packet(&d, known), Ok(packet));
        assert_eq!(datagram_packet(&d, |_, _| None), Err(ProtoError::UnknownGeneration(3, 1)));
        assert_eq!(datagram_header(b"xx"), Err(ProtoError::DatagramSize(2)));
        assert!(!is_probe(&d));
        // A probe: the header alone, accepted, and no packet in it.
        let probe = encode_probe(&header);
        assert_eq!(datagram_header(&probe), Ok(header));
        assert!(is_probe(&probe));
        assert!(datagram_packet(&probe, known).is_err());
        assert_eq!(datagram_header(&probe[..DATAGRAM_HEADER - 1]), Err(ProtoError::DatagramSize(DATAGRAM_HEADER - 1)));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..20_000 {
            let len = rng.random_range(0..1300);
            let b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = Control::parse(&b);
            if datagram_header(&b).is_ok() {
                let id = |piece, generation| {
                    Some(GenerationId { piece, generation, k: GENERATION as u16, symbol_size: SYMBOL_SIZE as u16, len: 16384 })
                };
                let _ = datagram_packet(&b, id);
            }
        }
    }
}
