//! The verification half of a swarm: completed pieces are hashed in
//! batches on the blocking pool, good ones written, and each outcome settled
//! in the swarm state (have to every peer, or strikes and smart bans).
//! `run` is the verifier task; `torrent` starts it with the swarm's queue.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::{PeerCommand, PieceBuffer, SuspectBlock, Swarm, SwarmState, TorrentError, MAX_SUSPECTS_PER_PIECE, POOL_LIMIT};
use crate::ccfd::receive::Verdict;
use crate::resume;
use crate::storage::{Storage, StorageError};
use ccfd_proto::hash::{sha1, sha1_batch};
use ccfd_proto::wire::BLOCK_SIZE;

/// Pieces hashed together: the lanes of `hash::sha1_batch`.
const VERIFY_BATCH: usize = 8;
/// Completed pieces waiting for or in verification, at most: one batch
/// hashing, one filling, and slack.
pub(super) const VERIFY_SLOTS: usize = 24;
/// How long the verifier waits for more pieces to fill a batch.
const VERIFY_LINGER: Duration = Duration::from_millis(3);

/// The completed pieces waiting for the verifier.
pub(crate) struct VerifyQueue(pub(super) mpsc::UnboundedReceiver<(u32, PieceBuffer, OwnedSemaphorePermit)>);

/// One completed piece on its way through verification.
struct VerifyJob {
    /// Released when the job is settled.
    _permit: OwnedSemaphorePermit,
    piece: u32,
    expected: [u8; 20],
    buf: PieceBuffer,
    suspects: Option<Vec<SuspectBlock>>,
    good: bool,
    /// Per-block SHA-1s, computed only when blame must be assigned.
    block_hashes: Vec<[u8; 20]>,
}

/// Hashes a batch of pieces and writes the good ones (blocking).
fn verify_jobs(storage: &Storage, mut jobs: Vec<VerifyJob>) -> Result<Vec<VerifyJob>, StorageError> {
    let hashes = sha1_batch(&jobs.iter().map(|j| j.buf.data.as_slice()).collect::<Vec<_>>());
    for (job, hash) in jobs.iter_mut().zip(hashes) {
        job.good = hash == job.expected;
        if !job.good || job.suspects.is_some() {
            job.block_hashes = job.buf.data.chunks(BLOCK_SIZE as usize).map(sha1).collect();
        }
        if job.good {
            storage.write_piece(job.piece, &job.buf.data)?;
        }
    }
    Ok(jobs)
}

/// How often the resume record is brought up to date while pieces arrive.
const RESUME_EVERY: Duration = Duration::from_secs(2);

/// Keeps the resume record current: saved when the verified count moved.
#[derive(Default)]
struct ResumeSaver {
    /// Verified pieces in the last saved record (`None`: none saved yet).
    saved: Option<u32>,
    /// A save failed once (a read-only folder): said once, then quiet.
    failed: bool,
}

impl ResumeSaver {
    async fn save(&mut self, swarm: &Arc<Swarm>) {
        // The pieces first, then the stamps: a piece written after this
        // look moves its file's mtime past the stamp, so it is re-hashed.
        let pieces = swarm.have();
        let count = pieces.count();
        if self.saved == Some(count) {
            return;
        }
        let (storage, meta) = (swarm.storage.clone(), swarm.meta.clone());
        let saved = tokio::task::spawn_blocking(move || {
            let data = resume::ResumeData { info_hash: meta.info_hash.0, pieces, files: storage.stamps() };
            resume::save(storage.root(), &meta, &data)
        })
        .await;
        match saved {
            Ok(Ok(())) => self.saved = Some(count),
            Ok(Err(e)) if !self.failed => {
                self.failed = true;
                tracing::warn!(error = %e, "cannot save the resume record: a restart will hash every piece");
            }
            _ => {}
        }
    }
}

impl Swarm {
    /// The verifier task: hashes completed pieces in batches (whatever
    /// queued up while the previous batch was hashing, up to the 8 SIMD
    /// lanes) and writes the good ones, on the blocking pool; then settles
    /// each piece.
    /// Every `RESUME_EVERY` with new pieces, and once more when the torrent
    /// stops (its last write done), it saves the resume record.
    pub(crate) async fn run_verifier(self: Arc<Self>, queue: VerifyQueue) {
        let mut saver = ResumeSaver::default();
        self.verify_loop(queue, &mut saver).await;
        saver.save(&self).await;
        self.resume_saved.send_replace(true);
    }

    async fn verify_loop(self: &Arc<Self>, queue: VerifyQueue, saver: &mut ResumeSaver) {
        let mut rx = queue.0;
        let mut save_tick = tokio::time::interval(RESUME_EVERY);
        loop {
            let first = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                next = rx.recv() => match next { Some(x) => x, None => return },
                _ = save_tick.tick() => {
                    saver.save(self).await;
                    continue;
                }
            };
            // Linger briefly for a full batch: at high rates the lanes fill
            // within milliseconds; at low rates the wait is noise.
            let mut batch = vec![first];
            let linger = tokio::time::sleep(VERIFY_LINGER);
            tokio::pin!(linger);
            while batch.len() < VERIFY_BATCH {
                tokio::select! {
                    next = rx.recv() => match next {
                        Some(x) => batch.push(x),
                        None => break,
                    },
                    _ = &mut linger => break,
                }
            }
            let jobs: Vec<VerifyJob> = {
                let mut s = self.state.lock();
                batch
                    .into_iter()
                    .map(|(piece, buf, permit)| VerifyJob {
                        _permit: permit,
                        piece,
                        expected: self.meta.piece_hashes[piece as usize],
                        suspects: s.suspects.remove(&piece),
                        buf,
                        good: false,
                        block_hashes: Vec::new(),
                    })
                    .collect()
            };
            let storage = self.storage.clone();
            let done = tokio::task::spawn_blocking(move || verify_jobs(&storage, jobs)).await;
            let mut s = self.state.lock();
            match done {
                Ok(Ok(jobs)) => {
                    for job in jobs {
                        self.settle(&mut s, job);
                    }
                }
                Ok(Err(e)) => return self.fail(&mut s, TorrentError::Storage(e)),
                Err(e) => return self.fail(&mut s, TorrentError::Hashing(e)),
            }
        }
    }

    /// Applies the outcome of one verification to the swarm state.
    fn settle(&self, s: &mut SwarmState, job: VerifyJob) {
        let VerifyJob { piece, buf, good, block_hashes, suspects, .. } = job;
        let PieceBuffer { data, block_from, coded } = buf;
        if let Some(c) = &self.coded {
            if good {
                for verdict in c.piece_verified(piece, &data) {
                    match verdict {
                        Verdict::Ban(ip) => {
                            tracing::warn!(%ip, piece, "peer proven to have sent a corrupt coded packet");
                            self.ban(s, ip);
                        }
                        Verdict::Strike(ip) => self.strike(s, ip),
                    }
                }
            } else if !coded.is_empty() {
                c.piece_failed(piece, coded);
            }
        }
        if s.pool.len() < POOL_LIMIT {
            s.pool.push(data);
        }
        if good {
            s.picker.piece_verified(piece);
            self.verified.insert(piece);
            self.verified_tx.send_modify(|n| *n += 1);
            for (block, ip, hash) in suspects.unwrap_or_default() {
                if block_hashes.get(block) != Some(&hash) {
                    tracing::warn!(%ip, piece, block, "peer proven to have sent a corrupt block");
                    self.ban(s, ip);
                }
            }
            for p in s.peers.values() {
                let _ = p.tx.send(PeerCommand::Have(piece));
            }
            if s.picker.is_done() && s.completed_at.is_none() {
                s.completed_at = Some(Instant::now());
                tracing::info!("download complete");
                self.complete_tx.send_replace(true);
            }
            return;
        }
        s.picker.piece_failed(piece);
        s.piece_failures += 1;
        let senders: HashSet<IpAddr> = block_from.iter().flatten().copied().collect();
        tracing::warn!(piece, ?senders, "piece failed its hash check");
        if senders.len() == 1 {
            // One sender: it is certainly to blame.
            for ip in senders {
                self.strike(s, ip);
            }
        }
        let mut list = suspects.unwrap_or_default();
        list.extend(block_from.iter().enumerate().filter_map(|(i, ip)| Some((i, (*ip)?, *block_hashes.get(i)?))));
        list.truncate(MAX_SUSPECTS_PER_PIECE);
        s.suspects.insert(piece, list);
    }

    /// One more strike against `ip`; banned at the configured count.
    pub(super) fn strike(&self, s: &mut SwarmState, ip: IpAddr) {
        let strikes = s.strikes.entry(ip).or_default();
        *strikes += 1;
        if *strikes >= self.config.ban_strikes {
            self.ban(s, ip);
        }
    }

    pub(super) fn ban(&self, s: &mut SwarmState, ip: IpAddr) {
        if s.banned.insert(ip) {
            tracing::warn!(%ip, "banned for sending corrupt data");
        }
        s.candidates.retain(|a, _| a.ip() != ip);
        for p in s.peers.values().filter(|p| p.addr.ip() == ip) {
            let _ = p.tx.send(PeerCommand::Close);
        }
    }
}
