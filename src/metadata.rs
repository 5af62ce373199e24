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

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_util::codec::Framed;

use crate::client::ClientShared;
use ccfd_proto::extended::{our_ids, ExtendedHandshake, Extension, TheirIds};
use ccfd_proto::magnet::Magnet;
use ccfd_proto::metainfo::{InfoHash, Metainfo, MetainfoError};
use ccfd_proto::ut_metadata::{MetadataAssembler, UtMetadata, METADATA_PIECE};
use ccfd_proto::wire::{Handshake, Message, MessageCodec, HANDSHAKE_LEN};
use ccfd_tracker::{AnnounceRequest, Event, TrackerTiers};

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
    let ours = ExtendedHandshake { m: our_ids([Extension::UtMetadata]), ..Default::default() };
    framed.send(Message::Extended { id: 0, payload: ours.to_bytes() }).await?;
    let mut assembler: Option<(u8, MetadataAssembler)> = None;
    while let Some(msg) = framed.next().await {
        match msg? {
            Message::Extended { id: 0, payload } => {
                let hs = ExtendedHandshake::parse(&payload)?;
                let their_id = TheirIds::from_handshake(&hs).get(Extension::UtMetadata);
                let (Some(id), Some(size)) = (their_id, hs.metadata_size) else { anyhow::bail!("peer does not serve metadata") };
                let parts = MetadataAssembler::new(u64::try_from(size).unwrap_or(0))?;
                // The dictionary is small: ask for every piece at once.
                for piece in 0..parts.piece_count() {
                    framed.send(Message::Extended { id, payload: UtMetadata::Request { piece }.to_bytes() }).await?;
                }
                assembler = Some((id, parts));
            }
            Message::Extended { id, payload } if Extension::from_our_id(id) == Some(Extension::UtMetadata) => {
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
