//! Metadata by info-hash: magnet links and BEP 9 `ut_metadata`.
//!
//! A magnet link (or a bare info-hash) names a torrent without its info
//! dictionary. We ask peers for the dictionary in 16 KiB pieces over the
//! BEP 10 extension protocol and trust it only once its SHA-1 equals the
//! info-hash. The messages and the assembler are in `ccfd_proto`; `fetch`
//! is the task that finds peers and talks to them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ccfd_proto::extended::{our_ids, ExtendedError, ExtendedHandshake, Extension, TheirIds};
use ccfd_proto::magnet::Magnet;
use ccfd_proto::metainfo::{InfoHash, Metainfo, MetainfoError};
use ccfd_proto::ut_metadata::{MetadataAssembler, UtMetadata, METADATA_PIECE};
use ccfd_proto::wire::{Message, MessageCodec, WireError};
use ccfd_tracker::{AnnounceRequest, Event, TrackerTiers};
use futures::{SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::net::handshake::{handshake, HandshakeError, Side};
use crate::net::Net;

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
    #[error(transparent)]
    Message(#[from] ccfd_proto::ut_metadata::MetadataError),
    #[error("metadata is not a valid info dictionary: {0}")]
    Invalid(#[from] MetainfoError),
    #[error("no peer gave the metadata within {0:?}")]
    TimedOut(Duration),
}

/// Why one peer did not give us the metadata (we try the next).
#[derive(Debug, thiserror::Error)]
enum PeerFetchError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Extended(#[from] ExtendedError),
    #[error(transparent)]
    Message(#[from] ccfd_proto::ut_metadata::MetadataError),
    #[error("peer does not support extensions")]
    NoExtensions,
    #[error("peer does not serve metadata")]
    NoMetadata,
    #[error("peer rejected metadata piece {0}")]
    Rejected(u32),
    #[error("connection closed before the metadata arrived")]
    Closed,
}

/// Finds peers (trackers, then `peers`) and fetches the info dictionary from
/// whichever of them answers first with bytes that match the info-hash.
pub async fn fetch(net: Arc<Net>, magnet: &Magnet, extra_peers: &[SocketAddr], limit: Duration) -> Result<Metainfo, MetadataError> {
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
                peer_id: net.peer_id,
                port: net.listen_addr.port(),
                uploaded: 0,
                downloaded: 0,
                // Unknown until we have the metadata; non-zero so we count as a leecher.
                left: METADATA_PIECE as u64,
                event: Event::None,
                numwant: 50,
                key: rand::random(),
                tracker_id: None,
            };
            match trackers.announce(&net.trackers, &req).await {
                Ok(resp) => queue.extend(resp.peers),
                Err(e) => tracing::warn!(error = %e, "announce for metadata failed"),
            }
            next_announce = tokio::time::Instant::now() + announce_gap;
            announce_gap = (announce_gap * 2).min(MAX_ANNOUNCE_GAP);
        }
        while tasks.len() < PARALLEL_PEERS {
            let Some(addr) = queue.pop() else { break };
            if addr == net.listen_addr || !tried.insert(addr) {
                continue;
            }
            let (net, info_hash) = (net.clone(), magnet.info_hash);
            tasks.spawn(async move { (addr, tokio::time::timeout(PER_PEER_TIMEOUT, fetch_from(&net, addr, info_hash)).await) });
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
async fn fetch_from(net: &Net, addr: SocketAddr, info_hash: InfoHash) -> Result<Vec<u8>, PeerFetchError> {
    let mut stream = net.connect(addr).await?;
    let theirs = handshake(&mut stream, Side::Dialer(info_hash), net.peer_id).await?;
    if !theirs.supports_extensions() {
        return Err(PeerFetchError::NoExtensions);
    }
    let mut reader = FramedRead::new(stream.read, MessageCodec);
    let mut writer = FramedWrite::new(stream.write, MessageCodec);
    let ours = ExtendedHandshake { m: our_ids([Extension::UtMetadata]), ..Default::default() };
    writer.send(Message::Extended { id: 0, payload: ours.to_bytes() }).await?;
    let mut assembler: Option<MetadataAssembler> = None;
    while let Some(msg) = reader.next().await {
        match msg? {
            Message::Extended { id: 0, payload } => {
                let hs = ExtendedHandshake::parse(&payload)?;
                let their_id = TheirIds::from_handshake(&hs).get(Extension::UtMetadata);
                let (Some(id), Some(size)) = (their_id, hs.metadata_size) else { return Err(PeerFetchError::NoMetadata) };
                let parts = MetadataAssembler::new(u64::try_from(size).unwrap_or(0))?;
                // The dictionary is small: ask for every piece at once.
                for piece in 0..parts.piece_count() {
                    writer.send(Message::Extended { id, payload: UtMetadata::Request { piece }.to_bytes() }).await?;
                }
                assembler = Some(parts);
            }
            Message::Extended { id, payload } if Extension::from_our_id(id) == Some(Extension::UtMetadata) => {
                let Some(parts) = assembler.as_mut() else { continue };
                match UtMetadata::parse(&payload)? {
                    UtMetadata::Data { piece, data, .. } => parts.receive(piece, &data)?,
                    UtMetadata::Reject { piece } => return Err(PeerFetchError::Rejected(piece)),
                    UtMetadata::Request { .. } => {}
                }
                if let Some(parts) = assembler.take_if(|p| p.is_complete()) {
                    return Ok(parts.finish(&info_hash)?);
                }
            }
            _ => {}
        }
    }
    Err(PeerFetchError::Closed)
}
