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
use ccfd_tracker::{AnnounceRequest, Event, TrackerError};
use futures::{SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::announce::tracker_urls;
use super::dht::{Dht, LookupEvent};
use crate::net::dial::{dial, DialError, Dialed};
use crate::net::Net;

/// Peers asked at once while fetching metadata.
const PARALLEL_PEERS: usize = 8;
/// The wait before the second announce while looking for metadata; it
/// doubles on each announce up to `MAX_ANNOUNCE_GAP`.
const FIRST_ANNOUNCE_GAP: Duration = Duration::from_millis(500);
const MAX_ANNOUNCE_GAP: Duration = Duration::from_secs(5);
/// After a DHT lookup, the wait before the next one, doubling up to the maximum.
const DHT_AGAIN: Duration = Duration::from_secs(2);
const MAX_DHT_AGAIN: Duration = Duration::from_secs(30);
/// How long one attempt at connecting and handshaking may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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
    Dial(#[from] DialError),
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

/// Finds peers (trackers, the DHT, then `peers`) and fetches the info
/// dictionary from whichever answers first with bytes that match the info-hash.
pub async fn fetch(
    net: Arc<Net>,
    dht: Option<&Dht>,
    magnet: &Magnet,
    extra_peers: &[SocketAddr],
    limit: Duration,
) -> Result<Metainfo, MetadataError> {
    let started = tokio::time::Instant::now();
    let deadline = started + limit;
    // Said once, at the first handshake: "time to first peer" for users and benches.
    let first_peer = Arc::new(std::sync::OnceLock::new());
    let tiers: Vec<Vec<String>> = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
    let trackers = tracker_urls(&tiers);
    // Every tracker at once, one announce in flight per tracker.
    let mut announces: JoinSet<(String, Result<Vec<SocketAddr>, TrackerError>)> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut tried: HashSet<SocketAddr> = HashSet::new();
    let mut queue: Vec<SocketAddr> = magnet.peers.iter().chain(extra_peers).copied().collect();
    let mut tasks = JoinSet::new();
    let mut next_announce = tokio::time::Instant::now();
    // Peers found by a first announce may not have the torrent running yet
    // (a seed announcing at the same moment), so ask again soon, then less often.
    let mut announce_gap = FIRST_ANNOUNCE_GAP;
    // The DHT is asked again a while after each lookup ends, while no peer gave the dictionary.
    let mut dht_lookup = dht.map(|d| d.get_peers(magnet.info_hash, None));
    let mut dht_again = DHT_AGAIN;
    let mut next_dht: Option<tokio::time::Instant> = None;
    loop {
        if let (Some(d), Some(at)) = (dht, next_dht) {
            if tokio::time::Instant::now() >= at {
                dht_lookup = Some(d.get_peers(magnet.info_hash, None));
                next_dht = None;
            }
        }
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
                external_ip: net.external_ip.get(),
            };
            for url in &trackers {
                if !in_flight.insert(url.clone()) {
                    continue;
                }
                let (client, url, req) = (net.trackers.clone(), url.clone(), req.clone());
                announces.spawn(async move {
                    let peers = client.announce(&url, &req).await.map(|r| r.peers);
                    (url, peers)
                });
            }
            next_announce = tokio::time::Instant::now() + announce_gap;
            announce_gap = (announce_gap * 2).min(MAX_ANNOUNCE_GAP);
        }
        while tasks.len() < PARALLEL_PEERS {
            let Some(addr) = queue.pop() else { break };
            if addr == net.listen_addr || !tried.insert(addr) {
                continue;
            }
            let (net, info_hash, first_peer) = (net.clone(), magnet.info_hash, first_peer.clone());
            tasks.spawn(async move {
                let fetched = fetch_from(&net, addr, info_hash, || {
                    first_peer.get_or_init(|| tracing::info!(%addr, after = ?started.elapsed(), "first peer connected"));
                });
                (addr, tokio::time::timeout(PER_PEER_TIMEOUT, fetched).await)
            });
        }
        let mut wake = if trackers.is_empty() { deadline } else { next_announce.min(deadline) };
        if let Some(at) = next_dht {
            wake = wake.min(at);
        }
        tokio::select! {
            Some(Ok((url, peers))) = announces.join_next(), if !announces.is_empty() => {
                in_flight.remove(&url);
                match peers {
                    Ok(peers) => queue.extend(peers),
                    Err(e) => tracing::warn!(tracker = %url, error = %e, "announce for metadata failed"),
                }
            }
            event = next_lookup_event(&mut dht_lookup) => match event {
                Some(LookupEvent::Peers(peers)) => {
                    tracing::debug!(peers = peers.len(), "DHT peers for metadata");
                    queue.extend(peers);
                }
                Some(LookupEvent::Done) | None => {
                    dht_lookup = None;
                    next_dht = Some(tokio::time::Instant::now() + dht_again);
                    dht_again = (dht_again * 2).min(MAX_DHT_AGAIN);
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Ok((addr, Ok(Ok(info)))) => {
                        tracing::info!(%addr, after = ?started.elapsed(), "metadata received");
                        return Ok(Metainfo::from_info_bytes(&info, tiers)?);
                    }
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

/// The next event of a DHT lookup in progress; never without one.
async fn next_lookup_event(lookup: &mut Option<tokio::sync::mpsc::UnboundedReceiver<LookupEvent>>) -> Option<LookupEvent> {
    match lookup {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Connects to one peer and asks it for the whole dictionary.
async fn fetch_from(net: &Net, addr: SocketAddr, info_hash: InfoHash, connected: impl FnOnce()) -> Result<Vec<u8>, PeerFetchError> {
    let Dialed { stream, theirs, .. } = dial(net, addr, info_hash, net.us(), false, CONNECT_TIMEOUT).await?;
    connected();
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
