//! The BEP 3 peer wire: the handshake and length-prefixed messages as a
//! `tokio_util` codec.
//!
//! Everything here is pure: bytes in, messages out. Every length read from
//! the network is checked against a bound before anything is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::metainfo::InfoHash;

/// Standard block size: every client requests 16 KiB blocks.
pub const BLOCK_SIZE: u32 = 16 * 1024;
/// Largest block we serve or accept: BEP 3 clients close connections above 128 KiB too.
pub const MAX_BLOCK: u32 = 128 * 1024;
/// Largest frame we accept: a piece message of the largest block, or a
/// bitfield of 8 million pieces. Anything larger is a protocol violation.
pub const MAX_FRAME: u32 = 1 << 20;
/// Length of the BEP 3 handshake.
pub const HANDSHAKE_LEN: usize = 68;
const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
/// BEP 10: bit 20 from the right of the reserved bytes.
const EXTENSION_BIT: (usize, u8) = (5, 0x10);
/// BEP 5: the last bit, "I run a DHT node" (then a `port` message follows).
const DHT_BIT: (usize, u8) = (7, 0x01);
/// BEP 6: the fast extension.
const FAST_BIT: (usize, u8) = (7, 0x04);

/// Why bytes from a peer were not a valid message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    FrameTooLarge(u32),
    #[error("message id {id} with bad length {len}")]
    BadLength { id: u8, len: u32 },
    #[error("not a BitTorrent handshake")]
    BadHandshake,
}

/// The opening 68 bytes of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// Our handshake: advertises BEP 10 extensions.
    pub fn new(info_hash: InfoHash, peer_id: [u8; 20]) -> Handshake {
        let mut reserved = [0u8; 8];
        reserved[EXTENSION_BIT.0] |= EXTENSION_BIT.1;
        Handshake { reserved, info_hash, peer_id }
    }

    /// Says whether we run a DHT node (BEP 5).
    pub fn with_dht(mut self, dht: bool) -> Handshake {
        if dht {
            self.reserved[DHT_BIT.0] |= DHT_BIT.1;
        }
        self
    }

    /// Says whether we speak the fast extension (BEP 6).
    pub fn with_fast(mut self, fast: bool) -> Handshake {
        if fast {
            self.reserved[FAST_BIT.0] |= FAST_BIT.1;
        }
        self
    }

    pub fn supports_fast(&self) -> bool {
        self.reserved[FAST_BIT.0] & FAST_BIT.1 != 0
    }

    pub fn supports_extensions(&self) -> bool {
        self.reserved[EXTENSION_BIT.0] & EXTENSION_BIT.1 != 0
    }

    pub fn supports_dht(&self) -> bool {
        self.reserved[DHT_BIT.0] & DHT_BIT.1 != 0
    }

    pub fn to_bytes(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash.0);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    pub fn parse(b: &[u8; HANDSHAKE_LEN]) -> Result<Handshake, WireError> {
        if b[0] != 19 || &b[1..20] != PROTOCOL {
            return Err(WireError::BadHandshake);
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&b[20..28]);
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&b[28..48]);
        let mut peer_id = [0u8; 20];
        peer_id.copy_from_slice(&b[48..68]);
        Ok(Handshake { reserved, info_hash: InfoHash(info_hash), peer_id })
    }
}

/// A block of a piece: what requests, cancels and piece messages name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    pub piece: u32,
    pub offset: u32,
    pub length: u32,
}

/// A BEP 3 message (and BEP 10's extended message, kept raw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Bytes),
    Request(BlockRef),
    Piece {
        piece: u32,
        offset: u32,
        data: Bytes,
    },
    Cancel(BlockRef),
    Port(u16),
    /// BEP 6: a hint that this piece is worth asking for.
    Suggest(u32),
    /// BEP 6: instead of a bitfield, "I have every piece".
    HaveAll,
    /// BEP 6: instead of a bitfield, "I have no piece".
    HaveNone,
    /// BEP 6: the request will not be served.
    Reject(BlockRef),
    /// BEP 6: this piece may be requested even while we choke.
    AllowedFast(u32),
    /// BEP 10: extended message id (0 = handshake) and its bencoded payload.
    Extended {
        id: u8,
        payload: Bytes,
    },
    /// A message id we do not implement; ignored by the session.
    Unknown {
        id: u8,
    },
}

/// Length-prefixed message framing after the handshake.
#[derive(Debug, Default)]
pub struct MessageCodec;

impl Decoder for MessageCodec {
    type Item = Message;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, WireError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if len > MAX_FRAME {
            return Err(WireError::FrameTooLarge(len));
        }
        let total = 4 + len as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(4);
        if len == 0 {
            return Ok(Some(Message::KeepAlive));
        }
        let mut body = src.split_to(len as usize);
        let id = body.get_u8();
        let rest = len - 1;
        let expect = |want: u32| {
            if rest == want {
                Ok(())
            } else {
                Err(WireError::BadLength { id, len })
            }
        };
        let msg = match id {
            0 => expect(0).map(|_| Message::Choke)?,
            1 => expect(0).map(|_| Message::Unchoke)?,
            2 => expect(0).map(|_| Message::Interested)?,
            3 => expect(0).map(|_| Message::NotInterested)?,
            4 => expect(4).map(|_| Message::Have(body.get_u32()))?,
            5 => Message::Bitfield(body.freeze()),
            6 | 8 => {
                expect(12)?;
                let block = BlockRef { piece: body.get_u32(), offset: body.get_u32(), length: body.get_u32() };
                if id == 6 {
                    Message::Request(block)
                } else {
                    Message::Cancel(block)
                }
            }
            7 => {
                if rest < 8 || rest - 8 > MAX_BLOCK {
                    return Err(WireError::BadLength { id, len });
                }
                let piece = body.get_u32();
                let offset = body.get_u32();
                Message::Piece { piece, offset, data: body.freeze() }
            }
            9 => expect(2).map(|_| Message::Port(body.get_u16()))?,
            0x0D => expect(4).map(|_| Message::Suggest(body.get_u32()))?,
            0x0E => expect(0).map(|_| Message::HaveAll)?,
            0x0F => expect(0).map(|_| Message::HaveNone)?,
            0x10 => {
                expect(12)?;
                Message::Reject(BlockRef { piece: body.get_u32(), offset: body.get_u32(), length: body.get_u32() })
            }
            0x11 => expect(4).map(|_| Message::AllowedFast(body.get_u32()))?,
            20 => {
                if rest < 1 {
                    return Err(WireError::BadLength { id, len });
                }
                let ext = body.get_u8();
                Message::Extended { id: ext, payload: body.freeze() }
            }
            other => Message::Unknown { id: other },
        };
        Ok(Some(msg))
    }
}

impl Encoder<Message> for MessageCodec {
    type Error = WireError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), WireError> {
        let simple = |dst: &mut BytesMut, id: u8| {
            dst.put_u32(1);
            dst.put_u8(id);
        };
        let block = |dst: &mut BytesMut, id: u8, b: BlockRef| {
            dst.put_u32(13);
            dst.put_u8(id);
            dst.put_u32(b.piece);
            dst.put_u32(b.offset);
            dst.put_u32(b.length);
        };
        match msg {
            Message::KeepAlive => dst.put_u32(0),
            Message::Choke => simple(dst, 0),
            Message::Unchoke => simple(dst, 1),
            Message::Interested => simple(dst, 2),
            Message::NotInterested => simple(dst, 3),
            Message::Have(i) => {
                dst.put_u32(5);
                dst.put_u8(4);
                dst.put_u32(i);
            }
            Message::Bitfield(bits) => {
                dst.put_u32(1 + bits.len() as u32);
                dst.put_u8(5);
                dst.extend_from_slice(&bits);
            }
            Message::Request(b) => block(dst, 6, b),
            Message::Piece { piece, offset, data } => {
                dst.reserve(13 + data.len());
                dst.put_u32(9 + data.len() as u32);
                dst.put_u8(7);
                dst.put_u32(piece);
                dst.put_u32(offset);
                dst.extend_from_slice(&data);
            }
            Message::Cancel(b) => block(dst, 8, b),
            Message::Port(p) => {
                dst.put_u32(3);
                dst.put_u8(9);
                dst.put_u16(p);
            }
            Message::Extended { id, payload } => {
                dst.put_u32(2 + payload.len() as u32);
                dst.put_u8(20);
                dst.put_u8(id);
                dst.extend_from_slice(&payload);
            }
            Message::Suggest(i) => {
                dst.put_u32(5);
                dst.put_u8(0x0D);
                dst.put_u32(i);
            }
            Message::HaveAll => simple(dst, 0x0E),
            Message::HaveNone => simple(dst, 0x0F),
            Message::Reject(b) => block(dst, 0x10, b),
            Message::AllowedFast(i) => {
                dst.put_u32(5);
                dst.put_u8(0x11);
                dst.put_u32(i);
            }
            Message::Unknown { id } => simple(dst, id),
        }
        Ok(())
    }
}

/// Names a peer's client from its peer id (Azureus-style `-XX1234-`).
pub fn client_name(peer_id: &[u8; 20]) -> String {
    let known = [
        ("TR", "Transmission"),
        ("LT", "libtorrent"),
        ("lt", "libTorrent"),
        ("qB", "qBittorrent"),
        ("DE", "Deluge"),
        ("UT", "uTorrent"),
        ("rq", "rqbit"),
        ("CB", "ccfd-bt"),
    ];
    if peer_id[0] == b'-' && peer_id[7] == b'-' {
        let code = String::from_utf8_lossy(&peer_id[1..3]).into_owned();
        let ver = String::from_utf8_lossy(&peer_id[3..7]).into_owned();
        let name = known.iter().find(|(c, _)| *c == code).map(|(_, n)| n.to_string()).unwrap_or(code);
        return format!("{name} {ver}");
    }
    if peer_id.starts_with(b"A2-") {
        return "aria2".into();
    }
    if peer_id[0] == b'M' || peer_id.starts_with(b"S58") {
        return String::from_utf8_lossy(&peer_id[..8]).trim_matches('-').to_string();
    }
    "unknown".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: Message) -> Message {
        let mut buf = BytesMut::new();
        MessageCodec.encode(msg, &mut buf).unwrap();
        MessageCodec.decode(&mut buf).unwrap().unwrap()
    }

    #[test]
    fn messages_round_trip() {
        let b = BlockRef { piece: 7, offset: 16384, length: 16384 };
        for m in [
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(42),
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            Message::Request(b),
            Message::Cancel(b),
            Message::Piece { piece: 1, offset: 0, data: Bytes::from(vec![9u8; 100]) },
            Message::Port(6881),
            Message::Suggest(3),
            Message::HaveAll,
            Message::HaveNone,
            Message::Reject(b),
            Message::AllowedFast(9),
            Message::Extended { id: 0, payload: Bytes::from_static(b"de") },
        ] {
            assert_eq!(round_trip(m.clone()), m);
        }
    }

    #[test]
    fn partial_frames_wait_and_oversized_frames_fail() {
        let mut buf = BytesMut::from(&[0, 0, 0, 5, 4, 0][..]);
        assert_eq!(MessageCodec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[0, 0, 1]);
        assert_eq!(MessageCodec.decode(&mut buf).unwrap(), Some(Message::Have(1)));
        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(MessageCodec.decode(&mut huge), Err(WireError::FrameTooLarge(_))));
        let mut bad_have = BytesMut::from(&[0, 0, 0, 2, 4, 0][..]);
        assert!(matches!(MessageCodec.decode(&mut bad_have), Err(WireError::BadLength { .. })));
    }

    #[test]
    fn handshake_round_trip_and_extension_bit() {
        let h = Handshake::new(InfoHash([1; 20]), *b"-CB0001-abcdefghijkl");
        let parsed = Handshake::parse(&h.to_bytes()).unwrap();
        assert_eq!(parsed, h);
        assert!(parsed.supports_extensions() && !parsed.supports_dht());
        assert!(Handshake::parse(&h.clone().with_dht(true).to_bytes()).unwrap().supports_dht());
        let fast = Handshake::parse(&h.clone().with_fast(true).to_bytes()).unwrap();
        assert!(fast.supports_fast() && !fast.supports_dht());
        assert_eq!(fast.reserved[7], 0x04, "BEP 6's bit");
        let mut bad = h.to_bytes();
        bad[3] = b'x';
        assert!(Handshake::parse(&bad).is_err());
    }

    #[test]
    fn client_names() {
        assert_eq!(client_name(b"-TR3000-abcdefghijkl"), "Transmission 3000");
        assert_eq!(client_name(b"A2-1-36-0-abcdefghij"), "aria2");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = MessageCodec.decode(&mut buf) {}
        }
    }
}
