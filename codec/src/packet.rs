//! The coded packet format (version 1), shared by the coded-UDP transport.
//!
//! ```text
//! offset size  field
//! 0      1     version (1)
//! 1      1     coefficient kind: 0 systematic, 1 seeded, 2 explicit
//! 2      4     piece index (big-endian, as everywhere below)
//! 6      2     generation index within the piece
//! 8      2     generation size K (1..=256)
//! 10     2     symbol size S (bytes, >= 1)
//! 12     4     generation length: real bytes in this generation (<= K*S);
//!              the rest is padding that never reaches disk
//! 16     ...   coefficients: systematic: u16 symbol index (< K);
//!              seeded: u64 seed; explicit: K bytes
//! then   S     payload
//! ```
//!
//! The **short form** leaves out what both ends of a transport already
//! agree on (version, K, S and the generation length, which follow from
//! the piece and generation): the reader looks them up from the piece and
//! generation and hands them to `parse_short`. Nine bytes less per packet,
//! nearly 1% of a coded transfer at S = 1171.
//!
//! ```text
//! offset size  field
//! 0      1     coefficient kind, as above
//! 1      4     piece index
//! 5      2     generation index within the piece
//! 7      ...   coefficients and payload, as above
//! ```
//! Parsing checks every field and length and never panics.

use super::coefficients;

pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 16;
/// Header of the short form.
pub const SHORT_HEADER_LEN: usize = 7;
/// Largest generation size.
pub const MAX_K: usize = 256;

/// Why bytes are not a valid packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("packet shorter than its header")]
    Short,
    #[error("unknown packet version {0}")]
    Version(u8),
    #[error("unknown coefficient kind {0}")]
    Kind(u8),
    #[error("generation size {0} outside 1..=256")]
    GenerationSize(usize),
    #[error("symbol size is zero")]
    SymbolSize,
    #[error("generation length {0} exceeds K * S")]
    GenerationLength(u32),
    #[error("systematic index {0} not below K")]
    Index(u16),
    #[error("payload of {got} bytes, symbol size is {want}")]
    Payload { got: usize, want: usize },
    #[error("short packet of piece {0} generation {1} read as another generation")]
    WrongGeneration(u32, u16),
}

/// How a packet's payload combines the generation's source symbols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coefficients {
    /// Source symbol `i` itself.
    Systematic(u16),
    /// `coefficients::from_seed(seed, K)`.
    Seeded(u64),
    /// Explicit vector of K coefficients (recoded packets).
    Explicit(Vec<u8>),
}

impl Coefficients {
    /// The full coefficient vector for generation size `k`.
    pub fn expand(&self, k: usize) -> Vec<u8> {
        match self {
            Coefficients::Systematic(i) => {
                let mut v = vec![0u8; k];
                if let Some(c) = v.get_mut(usize::from(*i)) {
                    *c = 1;
                }
                v
            }
            Coefficients::Seeded(seed) => coefficients::from_seed(*seed, k),
            Coefficients::Explicit(v) => v.clone(),
        }
    }
}

/// Where a packet belongs and how big its generation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationId {
    pub piece: u32,
    pub generation: u16,
    pub k: u16,
    pub symbol_size: u16,
    pub len: u32,
}

/// One coded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub id: GenerationId,
    pub coefficients: Coefficients,
    pub payload: Vec<u8>,
}

impl Packet {
    /// Bytes `encode` will write (a sender takes upload tokens before it encodes).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Bytes `encode_short` will write.
    pub fn short_encoded_len(&self) -> usize {
        SHORT_HEADER_LEN + self.body_len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(VERSION);
        out.push(self.kind());
        out.extend_from_slice(&self.id.piece.to_be_bytes());
        out.extend_from_slice(&self.id.generation.to_be_bytes());
        out.extend_from_slice(&self.id.k.to_be_bytes());
        out.extend_from_slice(&self.id.symbol_size.to_be_bytes());
        out.extend_from_slice(&self.id.len.to_be_bytes());
        self.write_body(&mut out);
        out
    }

    /// The short form, for a reader that knows the generation's geometry.
    pub fn encode_short(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.short_encoded_len());
        self.write_short(&mut out);
        out
    }

    /// Appends the short form to `out`: a transport writes it behind its
    /// own header without a second buffer.
    pub fn write_short(&self, out: &mut Vec<u8>) {
        out.push(self.kind());
        out.extend_from_slice(&self.id.piece.to_be_bytes());
        out.extend_from_slice(&self.id.generation.to_be_bytes());
        self.write_body(out);
    }

    pub fn parse(b: &[u8]) -> Result<Packet, PacketError> {
        if b.len() < HEADER_LEN {
            return Err(PacketError::Short);
        }
        if b[0] != VERSION {
            return Err(PacketError::Version(b[0]));
        }
        let be16 = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
        let be32 = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let id = GenerationId { piece: be32(2), generation: be16(6), k: be16(8), symbol_size: be16(10), len: be32(12) };
        check_geometry(&id)?;
        parse_body(b[1], &b[HEADER_LEN..], id)
    }

    /// The piece and generation a short packet names: the reader looks up
    /// their geometry before `parse_short`.
    pub fn short_generation(b: &[u8]) -> Result<(u32, u16), PacketError> {
        if b.len() < SHORT_HEADER_LEN {
            return Err(PacketError::Short);
        }
        Ok((u32::from_be_bytes([b[1], b[2], b[3], b[4]]), u16::from_be_bytes([b[5], b[6]])))
    }

    /// Reads a short packet of the generation `id`.
    pub fn parse_short(b: &[u8], id: GenerationId) -> Result<Packet, PacketError> {
        let (piece, generation) = Packet::short_generation(b)?;
        if (piece, generation) != (id.piece, id.generation) {
            return Err(PacketError::WrongGeneration(piece, generation));
        }
        check_geometry(&id)?;
        parse_body(b[0], &b[SHORT_HEADER_LEN..], id)
    }

    fn kind(&self) -> u8 {
        match self.coefficients {
            Coefficients::Systematic(_) => 0,
            Coefficients::Seeded(_) => 1,
            Coefficients::Explicit(_) => 2,
        }
    }

    /// Coefficients and payload: what follows either header.
    fn body_len(&self) -> usize {
        let coefficients = match &self.coefficients {
            Coefficients::Systematic(_) => 2,
            Coefficients::Seeded(_) => 8,
            Coefficients::Explicit(v) => v.len(),
        };
        coefficients + self.payload.len()
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        match &self.coefficients {
            Coefficients::Systematic(i) => out.extend_from_slice(&i.to_be_bytes()),
            Coefficients::Seeded(seed) => out.extend_from_slice(&seed.to_be_bytes()),
            Coefficients::Explicit(v) => out.extend_from_slice(v),
        }
        out.extend_from_slice(&self.payload);
    }
}

fn check_geometry(id: &GenerationId) -> Result<(), PacketError> {
    let k = usize::from(id.k);
    if !(1..=MAX_K).contains(&k) {
        return Err(PacketError::GenerationSize(k));
    }
    if id.symbol_size == 0 {
        return Err(PacketError::SymbolSize);
    }
    if u64::from(id.len) > k as u64 * u64::from(id.symbol_size) {
        return Err(PacketError::GenerationLength(id.len));
    }
    Ok(())
}

/// Coefficients of `kind` and the payload, from the bytes after a header.
fn parse_body(kind: u8, rest: &[u8], id: GenerationId) -> Result<Packet, PacketError> {
    let k = usize::from(id.k);
    let (coefficients, payload) = match kind {
        0 => {
            let raw = rest.get(..2).ok_or(PacketError::Short)?;
            let i = u16::from_be_bytes([raw[0], raw[1]]);
            if usize::from(i) >= k {
                return Err(PacketError::Index(i));
            }
            (Coefficients::Systematic(i), &rest[2..])
        }
        1 => {
            let raw = rest.get(..8).ok_or(PacketError::Short)?;
            let mut seed = [0u8; 8];
            seed.copy_from_slice(raw);
            (Coefficients::Seeded(u64::from_be_bytes(seed)), &rest[8..])
        }
        2 => (Coefficients::Explicit(rest.get(..k).ok_or(PacketError::Short)?.to_vec()), &rest[k..]),
        other => return Err(PacketError::Kind(other)),
    };
    let want = usize::from(id.symbol_size);
    if payload.len() != want {
        return Err(PacketError::Payload { got: payload.len(), want });
    }
    Ok(Packet { id, coefficients, payload: payload.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> GenerationId {
        GenerationId { piece: 9, generation: 2, k: 4, symbol_size: 3, len: 10 }
    }

    #[test]
    fn round_trips_and_rejections() {
        for coefficients in [Coefficients::Systematic(3), Coefficients::Seeded(u64::MAX), Coefficients::Explicit(vec![1, 2, 3, 4])] {
            let p = Packet { id: id(), coefficients, payload: vec![7, 8, 9] };
            assert_eq!(p.encoded_len(), p.encode().len());
            assert_eq!(Packet::parse(&p.encode()), Ok(p));
        }
        let good = Packet { id: id(), coefficients: Coefficients::Systematic(1), payload: vec![1, 2, 3] }.encode();
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(Packet::parse(&bad), Err(PacketError::Version(2)));
        let mut bad = good.clone();
        bad[17] = 4;
        assert_eq!(Packet::parse(&bad), Err(PacketError::Index(4)));
        assert!(matches!(Packet::parse(&good[..good.len() - 1]), Err(PacketError::Payload { .. })));
        let huge_len = Packet { id: GenerationId { len: 13, ..id() }, coefficients: Coefficients::Seeded(1), payload: vec![0; 3] };
        assert_eq!(Packet::parse(&huge_len.encode()), Err(PacketError::GenerationLength(13)));
    }

    #[test]
    fn short_form_round_trips_against_the_readers_geometry() {
        for coefficients in [Coefficients::Systematic(3), Coefficients::Seeded(7), Coefficients::Explicit(vec![1, 2, 3, 4])] {
            let p = Packet { id: id(), coefficients, payload: vec![7, 8, 9] };
            let b = p.encode_short();
            assert_eq!(b.len(), p.short_encoded_len());
            assert_eq!(b.len() + HEADER_LEN - SHORT_HEADER_LEN, p.encode().len());
            assert_eq!(Packet::short_generation(&b), Ok((9, 2)));
            assert_eq!(Packet::parse_short(&b, id()), Ok(p));
        }
        let b = Packet { id: id(), coefficients: Coefficients::Systematic(1), payload: vec![1, 2, 3] }.encode_short();
        let other = GenerationId { generation: 3, ..id() };
        assert_eq!(Packet::parse_short(&b, other), Err(PacketError::WrongGeneration(9, 2)));
        // A reader with another symbol size finds the payload the wrong length.
        let wider = GenerationId { symbol_size: 4, len: 12, ..id() };
        assert_eq!(Packet::parse_short(&b, wider), Err(PacketError::Payload { got: 3, want: 4 }));
        assert_eq!(Packet::short_generation(&b[..6]), Err(PacketError::Short));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Packet::parse(&bytes);
            let _ = Packet::parse_short(&bytes, id());
        }
    }
}
