//! Piece <-> file mapping and disk I/O.
//!
//! A torrent is one byte stream cut into pieces and, independently, into
//! files; a piece may span several files. `segments` is the pure mapping;
//! `Storage` does positioned reads and writes (`pread`/`pwrite`, no shared
//! cursor, so many tasks can use one handle). Callers run it on blocking
//! threads, never on the async reactor.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::hash::sha1_batch;
use ccfd_proto::metainfo::{FileEntry, Metainfo};

/// Why disk I/O for a torrent failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: missing, or shorter than the torrent says ({want} bytes)")]
    Missing { path: PathBuf, want: u64 },
    #[error("read outside the torrent: offset {offset} length {len}")]
    OutOfRange { offset: u64, len: u64 },
    #[error("{0}: read-only, cannot store downloaded pieces")]
    ReadOnly(PathBuf),
}

/// EBADF: what a write to a file opened read-only fails with on Linux.
const fn libc_ebadf() -> i32 {
    9
}

/// One contiguous run of bytes inside one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub file: usize,
    pub file_offset: u64,
    pub len: u64,
}

/// Maps `len` bytes at torrent offset `offset` to file segments, skipping empty files.
pub fn segments(files: &[FileEntry], offset: u64, len: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    let end = offset + len;
    // Files are sorted by offset: binary-search the first that ends after `offset`.
    let first = files.partition_point(|f| f.offset + f.length <= offset);
    for (i, f) in files.iter().enumerate().skip(first) {
        if f.offset >= end {
            break;
        }
        let start = offset.max(f.offset);
        let stop = end.min(f.offset + f.length);
        if stop > start {
            out.push(Segment { file: i, file_offset: start - f.offset, len: stop - start });
        }
    }
    out
}

/// How `Storage::open` treats missing files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Seeding: every file must exist at full length. Opened for writing
    /// too (missing pieces are downloaded), read-only if that is all we may.
    Existing,
    /// Downloading: create folders and sparse files as needed.
    Create,
}

/// The open files of one torrent under one root folder.
pub struct Storage {
    files: Vec<FileEntry>,
    handles: Vec<File>,
    paths: Vec<PathBuf>,
    piece_length: u64,
    total_length: u64,
    /// True when every file was created by this open: nothing to re-check.
    pub fresh: bool,
}

impl Storage {
    /// Opens (or creates) the torrent's files under `root`.
    pub fn open(meta: &Metainfo, root: &Path, mode: OpenMode) -> Result<Storage, StorageError> {
        let mut handles = Vec::with_capacity(meta.files.len());
        let mut paths = Vec::with_capacity(meta.files.len());
        let mut fresh = true;
        for f in &meta.files {
            let path = root.join(&f.path);
            let io = |source| StorageError::Io { path: path.clone(), source };
            let existing_len = std::fs::metadata(&path).map(|m| m.len()).ok();
            let handle = match mode {
                OpenMode::Existing => {
                    if existing_len.is_none_or(|l| l < f.length) {
                        return Err(StorageError::Missing { path, want: f.length });
                    }
                    match OpenOptions::new().read(true).write(true).open(&path) {
                        Ok(h) => h,
                        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => File::open(&path).map_err(io)?,
                        Err(e) => return Err(io(e)),
                    }
                }
                OpenMode::Create => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    let h = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
                    if existing_len.is_some_and(|l| l > 0) {
                        fresh = false;
                    }
                    if existing_len.unwrap_or(0) < f.length {
                        h.set_len(f.length).map_err(io)?;
                    }
                    h
                }
            };
            if mode == OpenMode::Existing {
                fresh = false;
            }
            handles.push(handle);
            paths.push(path);
        }
        Ok(Storage { files: meta.files.clone(), handles, paths, piece_length: meta.piece_length, total_length: meta.total_length, fresh })
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        if offset.checked_add(len).is_none_or(|end| end > self.total_length) {
            return Err(StorageError::OutOfRange { offset, len });
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at torrent offset `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.check_range(offset, buf.len() as u64)?;
        let mut pos = 0usize;
        for s in segments(&self.files, offset, buf.len() as u64) {
            let dst = &mut buf[pos..pos + s.len as usize];
            self.handles[s.file]
                .read_exact_at(dst, s.file_offset)
                .map_err(|source| StorageError::Io { path: self.paths[s.file].clone(), source })?;
            pos += s.len as usize;
        }
        Ok(())
    }

    /// Writes `data` at torrent offset `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.check_range(offset, data.len() as u64)?;
        let mut pos = 0usize;
        for s in segments(&self.files, offset, data.len() as u64) {
            self.handles[s.file].write_all_at(&data[pos..pos + s.len as usize], s.file_offset).map_err(|source| {
                if source.raw_os_error() == Some(libc_ebadf()) {
                    StorageError::ReadOnly(self.paths[s.file].clone())
                } else {
                    StorageError::Io { path: self.paths[s.file].clone(), source }
                }
            })?;
            pos += s.len as usize;
        }
        Ok(())
    }

    /// Reads a whole piece.
    pub fn read_piece(&self, piece: u32, len: u32) -> Result<Vec<u8>, StorageError> {
        let mut buf = vec![0u8; len as usize];
        self.read_at(u64::from(piece) * self.piece_length, &mut buf)?;
        Ok(buf)
    }

    /// Writes a whole (verified) piece.
    pub fn write_piece(&self, piece: u32, data: &[u8]) -> Result<(), StorageError> {
        self.write_at(u64::from(piece) * self.piece_length, data)
    }

    /// Re-checks every piece against its hash, on all cores, eight pieces
    /// at a time per core; this is how a restart (even after kill -9) keeps
    /// exactly the pieces that are good.
    pub fn verify_all(&self, meta: &Metainfo) -> Bitfield {
        const GROUP: u32 = 8;
        let n = meta.piece_count();
        let groups = n.div_ceil(GROUP);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(groups as usize).max(1);
        let good: Vec<Vec<u32>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); GROUP as usize];
                        let mut ok = Vec::new();
                        for group in (t as u32..groups).step_by(threads) {
                            let pieces: Vec<u32> = (group * GROUP..(group * GROUP + GROUP).min(n)).collect();
                            let mut readable = Vec::new();
                            for (&piece, buf) in pieces.iter().zip(bufs.iter_mut()) {
                                buf.resize(meta.piece_len(piece) as usize, 0);
                                if self.read_at(u64::from(piece) * meta.piece_length, buf).is_ok() {
                                    readable.push((piece, buf.as_slice()));
                                }
                            }
                            let hashes = sha1_batch(&readable.iter().map(|(_, b)| *b).collect::<Vec<_>>());
                            for ((piece, _), hash) in readable.iter().zip(hashes) {
                                if hash == meta.piece_hashes[*piece as usize] {
                                    ok.push(*piece);
                                }
                            }
                        }
                        ok
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or_default()).collect()
        });
        let mut have = Bitfield::new(n);
        for piece in good.into_iter().flatten() {
            have.set(piece);
        }
        have
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(lengths: &[u64]) -> Vec<FileEntry> {
        let mut offset = 0;
        lengths
            .iter()
            .enumerate()
            .map(|(i, &length)| {
                let f = FileEntry { path: format!("f{i}").into(), length, offset };
                offset += length;
                f
            })
            .collect()
    }

    #[test]
    fn piece_spanning_three_files_and_an_empty_one() {
        let fs = files(&[10, 0, 5, 20]);
        let segs = segments(&fs, 8, 10);
        assert_eq!(
            segs,
            vec![
                Segment { file: 0, file_offset: 8, len: 2 },
                Segment { file: 2, file_offset: 0, len: 5 },
                Segment { file: 3, file_offset: 0, len: 3 },
            ]
        );
        assert_eq!(segments(&fs, 34, 1), vec![Segment { file: 3, file_offset: 19, len: 1 }]);
    }

    proptest::proptest! {
        #[test]
        fn segments_cover_exactly_the_range(lengths in proptest::collection::vec(0u64..50, 1..8), a in 0u64..400, l in 0u64..400) {
            let fs = files(&lengths);
            let total: u64 = lengths.iter().sum();
            let offset = a.min(total);
            let len = l.min(total - offset);
            let segs = segments(&fs, offset, len);
            proptest::prop_assert_eq!(segs.iter().map(|s| s.len).sum::<u64>(), len);
            let mut pos = offset;
            for s in segs {
                proptest::prop_assert_eq!(fs[s.file].offset + s.file_offset, pos);
                pos += s.len;
            }
        }
    }

    #[test]
    fn write_read_and_verify_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a"), vec![7u8; 20_000]).unwrap();
        std::fs::write(src.join("b"), (0..30_000u32).map(|i| i as u8).collect::<Vec<_>>()).unwrap();
        let opts = ccfd_proto::metainfo::CreateOptions { piece_length: 16384, trackers: vec![], web_seeds: vec![] };
        let meta = Metainfo::from_bytes(&ccfd_proto::metainfo::create(&src, &opts).unwrap()).unwrap();
        let seed = Storage::open(&meta, dir.path(), OpenMode::Existing).unwrap();
        assert!(seed.verify_all(&meta).is_full());

        let out = dir.path().join("out");
        let leech = Storage::open(&meta, &out, OpenMode::Create).unwrap();
        assert!(leech.fresh);
        let p1 = seed.read_piece(1, meta.piece_len(1)).unwrap();
        leech.write_piece(1, &p1).unwrap();
        let have = Storage::open(&meta, &out, OpenMode::Create).unwrap().verify_all(&meta);
        assert_eq!(have.ones().collect::<Vec<_>>(), vec![1]);
        assert!(matches!(Storage::open(&meta, &dir.path().join("none"), OpenMode::Existing), Err(StorageError::Missing { .. })));
        assert!(leech.read_piece(99, 10).is_err());
    }
}
