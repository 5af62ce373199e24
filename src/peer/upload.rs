//! A connection's uploader: a task that reads requested blocks from disk
//! and sends them within the upload cap, so a slow disk or a rate cap never
//! stalls our own downloading on the same connection.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use ccfd_proto::wire::{BlockRef, Message};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::net::Traffic;
use crate::storage::StorageError;
use crate::swarm::Swarm;

/// Whole pieces up to this size are read once and served block by block.
const PIECE_CACHE_LIMIT: u32 = 4 << 20;

/// The peer's requests queued for the uploader. A block is served only if
/// the uploader can still take it out of this set: a `cancel` or a choke
/// removes it first. (A set of cancelled blocks would go stale: a cancel that
/// arrives after the block was served would block a later re-request.)
#[derive(Default)]
pub(super) struct Pending(Mutex<HashSet<BlockRef>>);

impl Pending {
    /// Queues `block` through `queue`; false if a full queue (the peer
    /// exceeds the `reqq` we advertised) dropped it.
    pub(super) fn offer(&self, block: BlockRef, queue: &mpsc::Sender<BlockRef>) -> bool {
        let mut pending = self.0.lock();
        if pending.insert(block) && queue.try_send(block).is_err() {
            pending.remove(&block);
            return false;
        }
        true
    }

    /// The peer withdrew a request; true if it was still queued (not served).
    pub(super) fn cancel(&self, block: &BlockRef) -> bool {
        self.0.lock().remove(block)
    }

    /// We choked the peer: the queued requests are void, but those `keep`
    /// allows (allowed-fast pieces); returns the ones dropped.
    pub(super) fn clear_except(&self, keep: impl Fn(&BlockRef) -> bool) -> Vec<BlockRef> {
        let mut pending = self.0.lock();
        let dropped: Vec<BlockRef> = pending.iter().filter(|b| !keep(b)).copied().collect();
        for b in &dropped {
            pending.remove(b);
        }
        dropped
    }

    fn take(&self, block: &BlockRef) -> bool {
        self.0.lock().remove(block)
    }
}

/// Serves the peer's requests in order until the connection ends.
pub(super) async fn run(
    swarm: Arc<Swarm>,
    traffic: Arc<Traffic>,
    mut requests: mpsc::Receiver<BlockRef>,
    out: mpsc::Sender<Message>,
    pending: Arc<Pending>,
) {
    let mut cache: Option<(u32, Bytes)> = None;
    while let Some(block) = requests.recv().await {
        if !pending.take(&block) {
            continue; // cancelled, or the peer was choked since
        }
        let data = match &cache {
            Some((piece, data)) if *piece == block.piece => data.slice(block.offset as usize..(block.offset + block.length) as usize),
            _ => match read_for_upload(&swarm, block).await {
                Ok((whole, data)) => {
                    if let Some(whole) = whole {
                        cache = Some((block.piece, whole));
                    }
                    data
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read block to upload");
                    return;
                }
            },
        };
        swarm.net.upload.acquire(u64::from(block.length)).await;
        if out.send(Message::Piece { piece: block.piece, offset: block.offset, data }).await.is_err() {
            return;
        }
        traffic.uploaded(u64::from(block.length));
    }
}

/// Why a block could not be read for upload (the uploader stops; the peer
/// re-requests elsewhere).
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("disk task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Reads a requested block on the blocking pool; small pieces are read whole for the cache.
async fn read_for_upload(swarm: &Swarm, block: BlockRef) -> Result<(Option<Bytes>, Bytes), ReadError> {
    let storage = swarm.storage().clone();
    let piece_len = swarm.meta.piece_len(block.piece);
    let piece_offset = u64::from(block.piece) * swarm.meta.piece_length;
    let read = tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
        if piece_len <= PIECE_CACHE_LIMIT {
            let whole = Bytes::from(storage.read_piece(block.piece, piece_len)?);
            let data = whole.slice(block.offset as usize..(block.offset + block.length) as usize);
            Ok((Some(whole), data))
        } else {
            let mut buf = vec![0u8; block.length as usize];
            storage.read_at(piece_offset + u64::from(block.offset), &mut buf)?;
            Ok((None, Bytes::from(buf)))
        }
    });
    Ok(read.await??)
}
