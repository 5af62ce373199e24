//! BEP 9 `ut_metadata`: the messages that carry a torrent's info
//! dictionary between peers, and the assembler that collects it. A
//! dictionary is trusted only once its SHA-1 equals the info-hash.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::bencode::skip_value;
use crate::hash::sha1;
use crate::metainfo::InfoHash;

/// Metadata piece size, fixed by BEP 9.
pub const METADATA_PIECE: usize = 16 * 1024;
/// Largest info dictionary we accept from a peer (a 64 MiB torrent file is
/// already our limit for .torrent files; real info dictionaries are far smaller).
pub const MAX_METADATA_SIZE: usize = 16 << 20;

/// Why a `ut_metadata` message or an assembled dictionary was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("malformed ut_metadata message: {0}")]
    Malformed(String),
    #[error("peer offers metadata of {0} bytes (limit {MAX_METADATA_SIZE})")]
    TooLarge(u64),
    #[error("metadata does not match the info-hash")]
    HashMismatch,
}

/// One BEP 9 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UtMetadata {
    Request { piece: u32 },
    Data { piece: u32, total_size: u64, data: Bytes },
    Reject { piece: u32 },
}

#[derive(Serialize, Deserialize)]
struct Header {
    msg_type: i64,
    piece: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    total_size: Option<i64>,
}

impl UtMetadata {
    /// Parses an extension message payload; `data` follows the dictionary.
    pub fn parse(payload: &[u8]) -> Result<UtMetadata, MetadataError> {
        let malformed = |e: &dyn std::fmt::Display| MetadataError::Malformed(e.to_string());
        let end = skip_value(payload, 0).map_err(|e| malformed(&e))?;
        let header: Header = crate::bencode::decode(&payload[..end]).map_err(|e| malformed(&e))?;
        let piece = u32::try_from(header.piece).map_err(|e| malformed(&e))?;
        match header.msg_type {
            0 => Ok(UtMetadata::Request { piece }),
            1 => {
                let total = header.total_size.ok_or_else(|| malformed(&"data without total_size"))?;
                let total_size = u64::try_from(total).map_err(|e| malformed(&e))?;
                let data = &payload[end..];
                if data.len() > METADATA_PIECE {
                    return Err(malformed(&"metadata piece longer than 16 KiB"));
                }
                Ok(UtMetadata::Data { piece, total_size, data: Bytes::copy_from_slice(data) })
            }
            2 => Ok(UtMetadata::Reject { piece }),
            other => Err(malformed(&format!("unknown msg_type {other}"))),
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let (msg_type, piece, total_size, data) = match self {
            UtMetadata::Request { piece } => (0, *piece, None, None),
            UtMetadata::Data { piece, total_size, data } => (1, *piece, Some(*total_size as i64), Some(data)),
            UtMetadata::Reject { piece } => (2, *piece, None, None),
        };
        let header = Header { msg_type, piece: i64::from(piece), total_size };
        let mut out = BytesMut::from(serde_bencode::to_bytes(&header).unwrap_or_default().as_slice());
        if let Some(data) = data {
            out.put_slice(data);
        }
        out.freeze()
    }
}

/// The reply to a peer's request for piece `piece` of our info dictionary.
pub fn answer_request(info: &[u8], piece: u32) -> UtMetadata {
    let start = piece as usize * METADATA_PIECE;
    if start >= info.len() {
        return UtMetadata::Reject { piece };
    }
    let end = (start + METADATA_PIECE).min(info.len());
    UtMetadata::Data { piece, total_size: info.len() as u64, data: Bytes::copy_from_slice(&info[start..end]) }
}

/// Collects the pieces of an info dictionary of known size.
#[derive(Debug)]
pub struct MetadataAssembler {
    buf: Vec<u8>,
    have: Vec<bool>,
}

impl MetadataAssembler {
    /// Fails for sizes no real torrent has, before allocating.
    pub fn new(size: u64) -> Result<MetadataAssembler, MetadataError> {
        if size == 0 || size > MAX_METADATA_SIZE as u64 {
            return Err(MetadataError::TooLarge(size));
        }
        let size = size as usize;
        Ok(MetadataAssembler { buf: vec![0; size], have: vec![false; size.div_ceil(METADATA_PIECE)] })
    }

    pub fn piece_count(&self) -> u32 {
        self.have.len() as u32
    }

    /// Stores one piece; it must have exactly the length its position implies.
    pub fn receive(&mut self, piece: u32, data: &[u8]) -> Result<(), MetadataError> {
        let start = piece as usize * METADATA_PIECE;
        let expected = self.buf.len().saturating_sub(start).min(METADATA_PIECE);
        if piece as usize >= self.have.len() || data.len() != expected {
            return Err(MetadataError::Malformed(format!("piece {piece} has {} bytes, expected {expected}", data.len())));
        }
        self.buf[start..start + expected].copy_from_slice(data);
        self.have[piece as usize] = true;
        Ok(())
    }

    pub fn is_complete(&self) -> bool {
        self.have.iter().all(|&h| h)
    }

    /// The dictionary, once complete and matching `info_hash`.
    pub fn finish(self, info_hash: &InfoHash) -> Result<Vec<u8>, MetadataError> {
        if !self.is_complete() || sha1(&self.buf) != info_hash.0 {
            return Err(MetadataError::HashMismatch);
        }
        Ok(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        for m in [
            UtMetadata::Request { piece: 3 },
            UtMetadata::Reject { piece: 0 },
            UtMetadata::Data { piece: 1, total_size: 20000, data: Bytes::from_static(b"abc") },
        ] {
            assert_eq!(UtMetadata::parse(&m.to_bytes()).unwrap(), m);
        }
        let wire = b"d8:msg_typei1e5:piecei0e10:total_sizei34256eexxxxxxxx";
        assert!(matches!(UtMetadata::parse(wire).unwrap(), UtMetadata::Data { total_size: 34256, .. }));
        for bad in [&b""[..], b"d8:msg_typei9e5:piecei0ee", b"d5:piecei-1e8:msg_typei0ee", b"le", b"d8:msg_typei1e5:piecei0ee", b"\xff"] {
            assert!(UtMetadata::parse(bad).is_err(), "{bad:?}");
        }
        let mut long = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee".to_vec();
        long.extend(vec![0u8; METADATA_PIECE + 1]);
        assert!(UtMetadata::parse(&long).is_err());
    }

    #[test]
    fn assembler_checks_lengths_and_the_hash() {
        let info: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
        let hash = InfoHash(sha1(&info));
        let mut a = MetadataAssembler::new(info.len() as u64).unwrap();
        assert_eq!(a.piece_count(), 3);
        for piece in 0..3 {
            let UtMetadata::Data { data, .. } = answer_request(&info, piece) else { panic!() };
            assert!(a.receive(piece, &data[1..]).is_err(), "short piece refused");
            a.receive(piece, &data).unwrap();
        }
        assert!(a.receive(3, &[]).is_err());
        assert_eq!(answer_request(&info, 3), UtMetadata::Reject { piece: 3 });
        assert_eq!(a.finish(&hash).unwrap(), info);

        let mut b = MetadataAssembler::new(5).unwrap();
        b.receive(0, b"hello").unwrap();
        assert!(matches!(b.finish(&hash), Err(MetadataError::HashMismatch)));
        assert!(MetadataAssembler::new(0).is_err());
        assert!(MetadataAssembler::new(u64::MAX).is_err());
    }
}
