//! BEP 29's packet: a 20-byte header, a chain of extensions (we read the
//! selective ACK and skip the rest, libtorrent's close reason among them),
//! and the payload. Parsing is total and bounded.

/// The header's size.
pub const HEADER: usize = 20;
/// Extensions we walk past before refusing a packet.
const MAX_EXTENSIONS: usize = 8;
/// The largest selective-ACK bitmask we read (bytes).
const MAX_SACK: usize = 32;

/// The packet types of BEP 29.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Data = 0,
    Fin = 1,
    State = 2,
    Reset = 3,
    Syn = 4,
}

impl Kind {
    fn from_u8(t: u8) -> Option<Kind> {
        Some(match t {
            0 => Kind::Data,
            1 => Kind::Fin,
            2 => Kind::State,
            3 => Kind::Reset,
            4 => Kind::Syn,
            _ => return None,
        })
    }
}

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub conn_id: u16,
    /// The sender's clock when it sent this, microseconds (wrapping).
    pub timestamp: u32,
    /// The sender's last delay sample of our packets, microseconds.
    pub timestamp_diff: u32,
    /// Bytes the sender can still take in.
    pub wnd_size: u32,
    pub seq_nr: u16,
    pub ack_nr: u16,
}

/// A parsed packet, borrowing its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    /// Selective ACK bits: bit `i` (of byte `i / 8`, least significant
    /// first) says `ack_nr + 2 + i` arrived.
    pub sack: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// Why a datagram is not a uTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("{0} bytes: shorter than the header")]
    Short(usize),
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("packet type {0}")]
    Kind(u8),
    #[error("extension chain malformed")]
    Extension,
}

impl<'a> Packet<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        if b.len() < HEADER {
            return Err(PacketError::Short(b.len()));
        }
        if b[0] & 0x0f != 1 {
            return Err(PacketError::Version(b[0] & 0x0f));
        }
        let kind = Kind::from_u8(b[0] >> 4).ok_or(PacketError::Kind(b[0] >> 4))?;
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let header = Header {
            kind,
            conn_id: u16_at(2),
            timestamp: u32_at(4),
            timestamp_diff: u32_at(8),
            wnd_size: u32_at(12),
            seq_nr: u16_at(16),
            ack_nr: u16_at(18),
        };
        let mut next = b[1];
        let mut at = HEADER;
        let mut sack = None;
        for _ in 0..MAX_EXTENSIONS {
            if next == 0 {
                return Ok(Packet { header, sack, payload: &b[at..] });
            }
            let (kind, len) = (next, *b.get(at + 1).ok_or(PacketError::Extension)? as usize);
            next = b[at];
            let body = b.get(at + 2..at + 2 + len).ok_or(PacketError::Extension)?;
            if kind == 1 {
                // BEP 29 asks for a multiple of 4 bytes; libtorrent sends
                // just the bytes its bits need, so any length is read.
                if len == 0 {
                    return Err(PacketError::Extension);
                }
                sack = Some(&body[..len.min(MAX_SACK)]);
            }
            at += 2 + len;
        }
        Err(PacketError::Extension)
    }
}

/// Writes a packet: the header, a selective ACK when given, the payload.
pub fn encode(header: &Header, sack: Option<&[u8]>, payload: &[u8], out: &mut Vec<u8>) {
    out.push((header.kind as u8) << 4 | 1);
    out.push(if sack.is_some() { 1 } else { 0 });
    out.extend_from_slice(&header.conn_id.to_be_bytes());
    out.extend_from_slice(&header.timestamp.to_be_bytes());
    out.extend_from_slice(&header.timestamp_diff.to_be_bytes());
    out.extend_from_slice(&header.wnd_size.to_be_bytes());
    out.extend_from_slice(&header.seq_nr.to_be_bytes());
    out.extend_from_slice(&header.ack_nr.to_be_bytes());
    if let Some(bits) = sack {
        out.push(0);
        out.push(bits.len() as u8);
        out.extend_from_slice(bits);
    }
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: Kind) -> Header {
        Header { kind, conn_id: 0x1234, timestamp: 7, timestamp_diff: 9, wnd_size: 65536, seq_nr: 100, ack_nr: 42 }
    }

    #[test]
    fn round_trip_with_and_without_a_selective_ack() {
        let mut out = Vec::new();
        encode(&header(Kind::Data), None, b"hello", &mut out);
        assert_eq!(out[0], 0x01);
        let p = Packet::parse(&out).unwrap();
        assert_eq!((p.header, p.sack, p.payload), (header(Kind::Data), None, &b"hello"[..]));
        let mut out = Vec::new();
        encode(&header(Kind::State), Some(&[0b101, 0, 0, 0]), b"", &mut out);
        assert_eq!(out[0], 0x21);
        let p = Packet::parse(&out).unwrap();
        assert_eq!(p.sack, Some(&[0b101, 0, 0, 0][..]));
        assert!(p.payload.is_empty());
        // libtorrent sends as many bytes as its bits need, not a multiple of 4.
        let mut out = Vec::new();
        encode(&header(Kind::State), Some(&[0xff, 0x01]), b"", &mut out);
        assert_eq!(Packet::parse(&out).unwrap().sack, Some(&[0xff, 0x01][..]));
    }

    #[test]
    fn unknown_extensions_are_skipped_and_garbage_refused() {
        // libtorrent's close reason (type 3, 4 bytes) before a payload.
        let mut out = Vec::new();
        encode(&header(Kind::Fin), None, b"", &mut out);
        out[1] = 3;
        out.extend_from_slice(&[0, 4, 0, 0, 0, 1]);
        out.extend_from_slice(b"x");
        assert_eq!(Packet::parse(&out).unwrap().payload, b"x");
        assert!(matches!(Packet::parse(&[0x41; 19]), Err(PacketError::Short(19))));
        let mut bad = out.clone();
        bad[0] = 0x02;
        assert!(matches!(Packet::parse(&bad), Err(PacketError::Version(2))));
        bad[0] = 0x51;
        assert!(matches!(Packet::parse(&bad), Err(PacketError::Kind(5))));
        let mut chain = out[..HEADER].to_vec();
        chain[1] = 9;
        chain.extend_from_slice(&[9, 0].repeat(20));
        assert_eq!(Packet::parse(&chain), Err(PacketError::Extension), "an endless chain");
        let mut cut = out[..HEADER].to_vec();
        cut[1] = 1;
        cut.extend_from_slice(&[0, 8, 1, 2]);
        assert_eq!(Packet::parse(&cut), Err(PacketError::Extension), "an extension past the end");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Packet::parse(&bytes);
        }
    }
}
