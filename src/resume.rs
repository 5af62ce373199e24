//! Fast resume: what a restart may trust without hashing.
//!
//! The verified pieces and, for each file, its size and modification time
//! are saved beside the download (`.<name>.resume`) every few seconds while
//! pieces arrive and when the torrent stops, written to a temporary file
//! and renamed over the old one so a crash leaves one whole record or the
//! other. We write a piece only once it is verified and never write it
//! again, so a file whose size and mtime match the record holds exactly the
//! recorded pieces: they are trusted, and its other pieces are missing. A
//! file that changed (bytes written after the last save, before a `kill
//! -9`, or someone else's edit) has every piece touching it hashed again.
//! The record ends in a SHA-1 of what precedes it, so a torn or corrupt
//! file is refused and the whole torrent is hashed, as without one.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::metainfo::Metainfo;
use sha1::{Digest, Sha1};

const MAGIC: &[u8; 8] = b"CCFDRSM1";
/// Bytes per file entry: size, mtime seconds, mtime nanoseconds.
const FILE_ENTRY: usize = 8 + 8 + 4;

/// A file's identity on disk as the record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
}

impl FileStamp {
    /// The stamp of the file at `path`; `None` if it is not there.
    pub fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        let mtime = m.modified().ok()?;
        let (secs, nanos) = match mtime.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => (-(e.duration().as_secs() as i64), e.duration().subsec_nanos()),
        };
        Some(FileStamp { size: m.len(), mtime_secs: secs, mtime_nanos: nanos })
    }
}

/// One torrent's resume record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeData {
    pub info_hash: [u8; 20],
    /// Verified pieces when the record was made.
    pub pieces: Bitfield,
    /// Each file's stamp then (`None`: not on disk, e.g. not selected).
    pub files: Vec<Option<FileStamp>>,
}

/// Why a resume record was not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    #[error("not a resume record")]
    Format,
    #[error("the record's checksum does not match (torn or corrupt)")]
    Checksum,
    #[error("the record is for another torrent")]
    OtherTorrent,
}

impl ResumeData {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 20 + 8 + self.files.len() * (FILE_ENTRY + 1) + self.pieces.as_bytes().len() + 20);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.info_hash);
        out.extend_from_slice(&self.pieces.len().to_be_bytes());
        out.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for f in &self.files {
            match f {
                Some(s) => {
                    out.push(1);
                    out.extend_from_slice(&s.size.to_be_bytes());
                    out.extend_from_slice(&s.mtime_secs.to_be_bytes());
                    out.extend_from_slice(&s.mtime_nanos.to_be_bytes());
                }
                None => out.push(0),
            }
        }
        out.extend_from_slice(self.pieces.as_bytes());
        let sum: [u8; 20] = Sha1::digest(&out).into();
        out.extend_from_slice(&sum);
        out
    }

    /// Reads a record made for `meta`; every length is checked against
    /// the torrent's before anything is allocated.
    pub fn decode(bytes: &[u8], meta: &Metainfo) -> Result<ResumeData, ResumeError> {
        let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(20).ok_or(ResumeError::Format)?).ok_or(ResumeError::Format)?;
        if body.get(..8) != Some(MAGIC.as_slice()) {
            return Err(ResumeError::Format);
        }
        if Sha1::digest(body).as_slice() != sum {
            return Err(ResumeError::Checksum);
        }
        let mut r = Reader(&body[8..]);
        let info_hash: [u8; 20] = r.take(20)?.try_into().map_err(|_| ResumeError::Format)?;
        if info_hash != meta.info_hash.0 {
            return Err(ResumeError::OtherTorrent);
        }
        let pieces = u32::from_be_bytes(r.array()?);
        let files = u32::from_be_bytes(r.array()?) as usize;
        if pieces != meta.piece_count() || files != meta.files.len() {
            return Err(ResumeError::OtherTorrent);
        }
        let mut stamps = Vec::with_capacity(files);
        for _ in 0..files {
            stamps.push(match r.take(1)?[0] {
                0 => None,
                1 => Some(FileStamp {
                    size: u64::from_be_bytes(r.array()?),
                    mtime_secs: i64::from_be_bytes(r.array()?),
                    mtime_nanos: u32::from_be_bytes(r.array()?),
                }),
                _ => return Err(ResumeError::Format),
            });
        }
        let bits = r.take(pieces.div_ceil(8) as usize)?;
        let pieces = Bitfield::from_wire(bits, pieces).ok_or(ResumeError::Format)?;
        if !r.0.is_empty() {
            return Err(ResumeError::Format);
        }
        Ok(ResumeData { info_hash, pieces, files: stamps })
    }
}

/// A cursor over the record's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ResumeError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(ResumeError::Format)?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ResumeError> {
        self.take(N)?.try_into().map_err(|_| ResumeError::Format)
    }
}

/// What a restart does with each piece, given the record and the files'
/// stamps now: trust it, hash it, or count it missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePlan {
    /// Recorded pieces whose files are unchanged.
    pub trusted: Bitfield,
    /// Pieces touching a changed file: hashed again.
    pub recheck: Bitfield,
}

/// Decides, for `meta`'s pieces, which the record lets a restart trust.
/// `now[i]` is file i's stamp on disk now (`None`: absent or not kept).
pub fn plan(meta: &Metainfo, record: &ResumeData, now: &[Option<FileStamp>]) -> ResumePlan {
    let n = meta.piece_count();
    let mut trusted = Bitfield::new(n);
    let mut recheck = Bitfield::new(n);
    let changed: Vec<bool> =
        (0..meta.files.len()).map(|i| record.files.get(i).copied().flatten() != now.get(i).copied().flatten()).collect();
    for piece in 0..n {
        let start = u64::from(piece) * meta.piece_length;
        let end = start + u64::from(meta.piece_len(piece));
        // Files are in offset order; empty ones touch no piece.
        let first = meta.files.partition_point(|f| f.offset + f.length <= start);
        let touches_changed =
            meta.files[first..].iter().enumerate().take_while(|(_, f)| f.offset < end).any(|(j, f)| f.length > 0 && changed[first + j]);
        if touches_changed {
            recheck.set(piece);
        } else if record.pieces.get(piece) {
            trusted.set(piece);
        }
    }
    ResumePlan { trusted, recheck }
}

/// Where a torrent's record lives, beside its files under `root`.
pub fn record_path(root: &Path, meta: &Metainfo) -> PathBuf {
    root.join(format!(".{}.resume", meta.name))
}

/// Reads the record for `meta` under `root`; why not, if it cannot be used.
pub fn load(root: &Path, meta: &Metainfo) -> Result<ResumeData, String> {
    let path = record_path(root, meta);
    // A record is ~20 bytes per file and a bit per piece: refuse anything far larger.
    let limit = 64 + meta.files.len() as u64 * (FILE_ENTRY as u64 + 1) + u64::from(meta.piece_count()) / 8 + 64;
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > limit => return Err(format!("{}: too large for this torrent", path.display())),
        Ok(_) => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    ResumeData::decode(&bytes, meta).map_err(|e| format!("{}: {e}", path.display()))
}

/// Saves `data` as the record under `root`: a temporary file, synced, then
/// renamed over the old record.
pub fn save(root: &Path, meta: &Metainfo, data: &ResumeData) -> std::io::Result<()> {
    use std::io::Write;
    let path = record_path(root, meta);
    let tmp = root.join(format!(".{}.resume.tmp", meta.name));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&data.encode())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccfd_proto::metainfo::{FileEntry, InfoHash};

    /// Files of 1500, 0, 2500 and 1000 bytes in 1000-byte pieces (5 pieces).
    fn meta() -> Metainfo {
        let lengths = [1500u64, 0, 2500, 1000];
        let mut offset = 0;
        let files = lengths
            .iter()
            .enumerate()
            .map(|(i, &length)| {
                let f = FileEntry { path: format!("f{i}").into(), length, offset, pad: false };
                offset += length;
                f
            })
            .collect();
        Metainfo {
            info_hash: InfoHash([7; 20]),
            name: "t".into(),
            piece_length: 1000,
            total_length: offset,
            piece_hashes: vec![[0; 20]; 5],
            files,
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            private: false,
            info_bytes: Vec::new(),
        }
    }

    fn stamp(size: u64, secs: i64) -> Option<FileStamp> {
        Some(FileStamp { size, mtime_secs: secs, mtime_nanos: 5 })
    }

    fn record(m: &Metainfo) -> ResumeData {
        let mut pieces = Bitfield::new(5);
        for p in [0, 1, 3, 4] {
            pieces.set(p);
        }
        ResumeData { info_hash: m.info_hash.0, pieces, files: vec![stamp(1500, 1), None, stamp(2500, 2), stamp(1000, 3)] }
    }

    #[test]
    fn a_record_reads_back_and_damage_is_refused() {
        let m = meta();
        let r = record(&m);
        let bytes = r.encode();
        assert_eq!(ResumeData::decode(&bytes, &m), Ok(r.clone()));
        for cut in [0, 10, bytes.len() - 1] {
            assert!(ResumeData::decode(&bytes[..cut], &m).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert_eq!(ResumeData::decode(&flipped, &m), Err(ResumeError::Checksum));
        let other = Metainfo { info_hash: InfoHash([8; 20]), ..m.clone() };
        assert_eq!(ResumeData::decode(&bytes, &other), Err(ResumeError::OtherTorrent));
    }

    #[test]
    fn unchanged_files_are_trusted_and_changed_ones_rechecked() {
        let m = meta();
        let r = record(&m);
        // Nothing changed: the recorded pieces, no hashing.
        let p = plan(&m, &r, &r.files);
        assert_eq!(p.trusted.ones().collect::<Vec<_>>(), vec![0, 1, 3, 4]);
        assert_eq!(p.recheck.count(), 0);
        // f2 (bytes 1500..4000: pieces 1 to 3) was written after the record.
        let now = vec![stamp(1500, 1), None, stamp(2500, 9), stamp(1000, 3)];
        let p = plan(&m, &r, &now);
        assert_eq!(p.trusted.ones().collect::<Vec<_>>(), vec![0, 4]);
        assert_eq!(p.recheck.ones().collect::<Vec<_>>(), vec![1, 2, 3]);
        // f3 deleted: its piece is hashed (and will fail).
        let now = vec![stamp(1500, 1), None, stamp(2500, 2), None];
        assert_eq!(plan(&m, &r, &now).recheck.ones().collect::<Vec<_>>(), vec![4]);
    }
}
