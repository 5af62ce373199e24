//! Web seeds (BEP 19 `url-list`) as ordinary sources of a download: each
//! entry works like one more peer that always has every piece. It takes
//! pieces from the picker (rarest first, like any peer), fetches them with
//! HTTP range requests, and hands the blocks to the same verification as
//! peer data. A web seed whose pieces fail their hash, or that keeps
//! failing, is dropped; the others go on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::wire::{BlockRef, BLOCK_SIZE};

use super::Swarm;
use crate::decide::picker::{PeerKey, PieceState};
use crate::webseed::WebSeed;

/// The picker keys of web seeds count down from here (the VoD server is `PeerKey::MAX`).
const FIRST_KEY: PeerKey = PeerKey::MAX - 1;
/// Pieces of one web seed that failed their hash before it is dropped.
const MAX_BAD_PIECES: u32 = 2;
/// Failed requests in a row before a web seed is dropped.
const MAX_FAILURES: u32 = 6;
/// How long an idle web seed waits before looking for work again.
const IDLE: Duration = Duration::from_millis(500);
/// Web seeds used at most (a torrent may list any number).
const MAX_WEB_SEEDS: usize = 8;

/// Runs every usable entry of `urls` as a source until the download is
/// done or the torrent stops.
pub(crate) async fn run(swarm: Arc<Swarm>, urls: Vec<String>) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, url) in urls.iter().take(MAX_WEB_SEEDS).enumerate() {
        match WebSeed::new(url, Some(swarm.net.bind)) {
            Ok(seed) => {
                let (swarm, url, key) = (swarm.clone(), url.clone(), FIRST_KEY - i as PeerKey);
                tasks.spawn(async move {
                    run_one(swarm.clone(), seed, url, key).await;
                    // Whatever it had asked for goes back to the pool.
                    swarm.release_source(key);
                });
            }
            Err(e) => tracing::warn!(url, error = %e, "web seed skipped"),
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn run_one(swarm: Arc<Swarm>, seed: WebSeed, url: String, key: PeerKey) {
    let everything = Bitfield::full(swarm.meta.piece_count());
    let per_piece = (swarm.meta.piece_length as usize).div_ceil(BLOCK_SIZE as usize);
    let (mut failures, mut bad_pieces) = (0u32, 0u32);
    loop {
        if swarm.shutdown.is_cancelled() || swarm.is_complete() {
            return;
        }
        let blocks = swarm.pick(key, &everything, per_piece, 0, None);
        if blocks.is_empty() {
            tokio::select! {
                _ = swarm.shutdown.cancelled() => return,
                _ = tokio::time::sleep(IDLE) => continue,
            }
        }
        let mut delivered = Vec::new();
        let mut failed = false;
        for run in contiguous_runs(&blocks) {
            let (first, last) = (run[0], run[run.len() - 1]);
            let start = u64::from(first.piece) * swarm.meta.piece_length + u64::from(first.offset);
            let len = u64::from(last.offset + last.length - first.offset);
            let fetched = tokio::select! {
                _ = swarm.shutdown.cancelled() => return,
                f = seed.fetch(&swarm.meta, start, len) => f,
            };
            match fetched {
                Ok((data, _)) => {
                    for b in run {
                        let at = (b.offset - first.offset) as usize;
                        let bytes: Bytes = data.slice(at..at + b.length as usize);
                        if let Some(done) = swarm.on_web_seed_block(key, *b, &bytes) {
                            delivered.push(b.piece);
                            swarm.verify(done).await;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(url, error = %e, "web seed request failed");
                    swarm.release(key, run.iter().copied());
                    failed = true;
                }
            }
        }
        bad_pieces += settle(&swarm, &delivered).await;
        if bad_pieces >= MAX_BAD_PIECES {
            tracing::warn!(url, bad_pieces, "web seed dropped: its pieces fail their hash");
            return;
        }
        failures = if failed { failures + 1 } else { 0 };
        if failures >= MAX_FAILURES {
            tracing::warn!(url, failures, "web seed dropped: it keeps failing");
            return;
        }
        if failed {
            // Back off: 1, 2, 4 ... seconds.
            let wait = Duration::from_secs(1 << failures.min(5));
            tokio::select! {
                _ = swarm.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Waits (briefly) for the verdict on the pieces a web seed completed;
/// returns how many failed their hash.
async fn settle(swarm: &Swarm, pieces: &[u32]) -> u32 {
    let mut bad = 0;
    for &piece in pieces {
        let mut verified = swarm.subscribe_verified();
        let verdict = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match swarm.piece_state(piece) {
                    Some(PieceState::Hashing) => {}
                    state => return state,
                }
                tokio::select! {
                    r = verified.changed() => if r.is_err() { return None },
                    // A failed hash does not signal `verified`: look again soon.
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
        .await;
        if matches!(verdict, Ok(Some(PieceState::Missing | PieceState::Active))) {
            bad += 1;
        }
    }
    bad
}

/// Splits blocks (sorted by piece and offset) into runs without gaps
/// inside one piece: one range request each.
pub(crate) fn contiguous_runs(blocks: &[BlockRef]) -> Vec<&[BlockRef]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=blocks.len() {
        let breaks =
            i == blocks.len() || blocks[i].piece != blocks[i - 1].piece || blocks[i].offset != blocks[i - 1].offset + blocks[i - 1].length;
        if breaks {
            out.push(&blocks[start..i]);
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_break_at_gaps_and_pieces() {
        let b = |piece, offset| BlockRef { piece, offset, length: BLOCK_SIZE };
        let blocks = [b(3, 0), b(3, BLOCK_SIZE), b(3, 3 * BLOCK_SIZE), b(4, 0)];
        let r = contiguous_runs(&blocks);
        assert_eq!(r.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![2, 1, 1]);
        assert!(contiguous_runs(&[]).is_empty());
    }
}
