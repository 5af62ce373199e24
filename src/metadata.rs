//! Metadata by info-hash: magnet links and BEP 9 `ut_metadata`.
//!
//! A magnet link (or a bare info-hash) names a torrent without its info
//! dictionary. We ask peers for the dictionary in 16 KiB pieces over the
//! BEP 10 extension protocol and trust it only once its SHA-1 equals the
//! info-hash. The message format and the assembler are pure; `fetch` is the
//! task that finds peers and talks to them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_util::codec::Framed;

use crate::bencode::skip_value;
use crate::client::ClientShared;
use crate::hash::sha1;
use crate::metainfo::{InfoHash, Metainfo, MetainfoError};
use crate::tracker::{AnnounceRequest, Event, TrackerTiers};
use crate::wire::{ExtendedHandshake, Handshake, Message, MessageCodec, HANDSHAKE_LEN};

/// Metadata piece size, fixed by BEP 9.
pub const METADATA_PIECE: usize = 16 * 1024;
/// Largest info dictionary we accept from a peer (a 64 MiB torrent file is
/// already our limit for .torrent files; real info dictionaries are far smaller).
pub const MAX_METADATA_SIZE: usize = 16 << 20;
/// The id we ask peers to use for `ut_metadata` messages to us.
pub const UT_METADATA_ID: u8 = 3;
/// Peers asked at once while fetching metadata.
const PARALLEL_PEERS: usize = 8;
/// The wait before the second announce while looking for metadata; it
/// doubles on each announce up to `MAX_ANNOUNCE_GAP`.
const FIRST_ANNOUNCE_GAP: Duration = Duration::from_millis(500);
const MAX_ANNOUNCE_GAP: Duration = Duration::from_secs(5);
/// How long one peer may take to hand over the whole dictionary.
const PER_PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why metadata could not be had.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("malformed ut_metadata message: {0}")]
    Malformed(String),
    #[error("peer offers metadata of {0} bytes (limit {MAX_METADATA_SIZE})")]
    TooLarge(u64),
    #[error("metadata does not match the info-hash")]
    HashMismatch,
    #[error("metadata is not a valid info dictionary: {0}")]
    Invalid(#[from] MetainfoError),
    #[error("not a magnet link or info-hash: {0}")]
    BadMagnet(String),
    #[error("no peer gave the metadata within {0:?}")]
    TimedOut(Duration),
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

/// What a magnet link (or bare info-hash) tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    pub name: Option<String>,
    pub trackers: Vec<String>,
    /// `x.pe` peer addresses (BEP 9).
    pub peers: Vec<SocketAddr>,
}

impl Magnet {
    /// Parses `magnet:?xt=urn:btih:<hex or base32>&dn=..&tr=..&x.pe=..`, or a
    /// bare 40-digit hex / 32-letter base32 info-hash.
    pub fn parse(s: &str) -> Result<Magnet, MetadataError> {
        let bad = || MetadataError::BadMagnet(s.chars().take(80).collect());
        if !s.starts_with("magnet:") {
            let info_hash = parse_btih(s).ok_or_else(bad)?;
            return Ok(Magnet { info_hash, name: None, trackers: Vec::new(), peers: Vec::new() });
        }
        let url = url::Url::parse(s).map_err(|_| bad())?;
        let (mut info_hash, mut name, mut trackers, mut peers) = (None, None, Vec::new(), Vec::new());
        for (k, v) in url.query_pairs() {
            match &*k {
                "xt" => {
                    if let Some(h) = v.strip_prefix("urn:btih:").and_then(parse_btih) {
                        info_hash = Some(h);
                    }
                }
                "dn" => name = Some(v.into_owned()),
                "tr" => trackers.push(v.into_owned()),
                "x.pe" => peers.extend(v.parse::<SocketAddr>()),
                _ => {}
            }
        }
        Ok(Magnet { info_hash: info_hash.ok_or_else(bad)?, name, trackers, peers })
    }

    /// True for strings that name a torrent by hash rather than by file.
    pub fn looks_like(s: &str) -> bool {
        s.starts_with("magnet:") || parse_btih(s).is_some()
    }
}

fn parse_btih(s: &str) -> Option<InfoHash> {
    match s.len() {
        40 => InfoHash::from_hex(s),
        32 => base32_decode(s).map(InfoHash),
        _ => None,
    }
}

/// RFC 4648 base32 (upper or lower case, no padding) of exactly 20 bytes.
fn base32_decode(s: &str) -> Option<[u8; 20]> {
    let mut out = [0u8; 20];
    let (mut acc, mut bits, mut n) = (0u64, 0, 0);
    for c in s.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
        }
    }
    (n == 20).then_some(out)
}

/// Finds peers (trackers, then `peers`) and fetches the info dictionary from
/// whichever of them answers first with bytes that match the info-hash.
pub async fn fetch(
    client: Arc<ClientShared>,
    magnet: &Magnet,
    extra_peers: &[SocketAddr],
    limit: Duration,
) -> Result<Metainfo, MetadataError> {
    let deadline = tokio::time::Instant::now() + limit;
    let tiers: Vec<Vec<String>> = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
    let mut trackers = TrackerTiers::new(tiers.clone(), &mut rand::rng());
    let mut tried: HashSet<SocketAddr> = HashSet::new();
    let mut queue: Vec<SocketAddr> = magnet.peers.iter().chain(extra_peers).copied().collect();
    let mut tasks = JoinSet::new();
    let mut next_announce = tokio::time::Instant::now();
    // Peers found by a first announce may not have the torrent running yet
    // (a seed announcing at the same moment), so ask again soon, then less often.
    let mut announce_gap = FIRST_ANNOUNCE_GAP;
    loop {
        if !trackers.is_empty() && tokio::time::Instant::now() >= next_announce {
            let req = AnnounceRequest {
                info_hash: magnet.info_hash,
                peer_id: client.peer_id,
                port: client.listen_addr.port(),
                uploaded: 0,
                downloaded: 0,
                // Unknown until we have the metadata; non-zero so we count as a leecher.
                left: METADATA_PIECE as u64,
                event: Event::None,
                numwant: 50,
                key: rand::random(),
                tracker_id: None,
            };
            match trackers.announce(&client.trackers, &req).await {
                Ok(resp) => queue.extend(resp.peers),
                Err(e) => tracing::warn!(error = %e, "announce for metadata failed"),
            }
            next_announce = tokio::time::Instant::now() + announce_gap;
            announce_gap = (announce_gap * 2).min(MAX_ANNOUNCE_GAP);
        }
        while tasks.len() < PARALLEL_PEERS {
            let Some(addr) = queue.pop() else { break };
            if addr == client.listen_addr || !tried.insert(addr) {
                continue;
            }
            let (client, info_hash) = (client.clone(), magnet.info_hash);
            tasks.spawn(async move { (addr, tokio::time::timeout(PER_PEER_TIMEOUT, fetch_from(&client, addr, info_hash)).await) });
        }
        let wake = if trackers.is_empty() { deadline } else { next_announce.min(deadline) };
        tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Ok((_, Ok(Ok(info)))) => return Ok(Metainfo::from_info_bytes(&info, tiers)?),
                    Ok((addr, Ok(Err(e)))) => tracing::debug!(%addr, error = %e, "no metadata from peer"),
                    Ok((addr, Err(_))) => tracing::debug!(%addr, "metadata peer timed out"),
                    Err(_) => {}
                }
                // Peers that failed may be worth a second try later (they may still be starting).
                if queue.is_empty() && tasks.is_empty() {
                    tried.clear();
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(MetadataError::TimedOut(limit));
        }
    }
}

/// Connects to one peer and asks it for the whole dictionary.
async fn fetch_from(client: &ClientShared, addr: SocketAddr, info_hash: InfoHash) -> anyhow::Result<Vec<u8>> {
    let mut stream = client.connect(addr).await?;
    stream.write_all(&Handshake::new(info_hash, client.peer_id).to_bytes()).await?;
    let mut buf = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut buf).await?;
    let theirs = Handshake::parse(&buf)?;
    anyhow::ensure!(theirs.info_hash == info_hash, "peer answered for another torrent");
    anyhow::ensure!(theirs.supports_extensions(), "peer does not support extensions");
    let mut framed = Framed::new(stream, MessageCodec);
    let ours = ExtendedHandshake { m: [("ut_metadata".to_string(), i64::from(UT_METADATA_ID))].into(), ..Default::default() };
    framed.send(Message::Extended { id: 0, payload: ours.to_bytes() }).await?;
    let mut assembler: Option<(u8, MetadataAssembler)> = None;
    while let Some(msg) = framed.next().await {
        match msg? {
            Message::Extended { id: 0, payload } => {
                let hs = ExtendedHandshake::parse(&payload)?;
                let their_id = hs.m.get("ut_metadata").and_then(|&id| u8::try_from(id).ok()).filter(|&id| id != 0);
                let (Some(id), Some(size)) = (their_id, hs.metadata_size) else { anyhow::bail!("peer does not serve metadata") };
                let parts = MetadataAssembler::new(u64::try_from(size).unwrap_or(0))?;
                // The dictionary is small: ask for every piece at once.
                for piece in 0..parts.piece_count() {
                    framed.send(Message::Extended { id, payload: UtMetadata::Request { piece }.to_bytes() }).await?;
                }
                assembler = Some((id, parts));
            }
            Message::Extended { id: UT_METADATA_ID, payload } => {
                let Some((_, parts)) = assembler.as_mut() else { continue };
                match UtMetadata::parse(&payload)? {
                    UtMetadata::Data { piece, data, .. } => parts.receive(piece, &data)?,
                    UtMetadata::Reject { piece } => anyhow::bail!("peer rejected metadata piece {piece}"),
                    UtMetadata::Request { .. } => {}
                }
                if parts.is_complete() {
                    let (_, parts) = assembler.take().unwrap_or_else(|| unreachable!());
                    return Ok(parts.finish(&info_hash)?);
                }
            }
            _ => {}
        }
    }
    anyhow::bail!("connection closed before the metadata arrived")
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

    #[test]
    fn magnets_and_bare_hashes_parse() {
        let hex = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{hex}&dn=a%20b&tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce&x.pe=127.0.0.2:6881"))
            .unwrap();
        assert_eq!(m.info_hash.to_hex(), hex);
        assert_eq!(m.name.as_deref(), Some("a b"));
        assert_eq!(m.trackers, vec!["http://127.0.0.1:1/announce"]);
        assert_eq!(m.peers, vec!["127.0.0.2:6881".parse().unwrap()]);
        // The same hash in base32.
        let b32 = Magnet::parse("magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
        assert_eq!(b32.info_hash.to_hex(), hex);
        assert_eq!(Magnet::parse(hex).unwrap().info_hash.to_hex(), hex);
        assert!(Magnet::looks_like(hex) && !Magnet::looks_like("movie.torrent"));
        for bad in ["magnet:?dn=x", "magnet:?xt=urn:btih:zz", "c12fe1", "magnet:?xt=urn:sha1:c12fe1c06bba254a9dc9f519b335aa7c1367a88a"] {
            assert!(Magnet::parse(bad).is_err(), "{bad}");
        }
    }
}
