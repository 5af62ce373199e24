//! Piece <-> file mapping and disk I/O.
//!
//! A torrent is one byte stream cut into pieces and, independently, into
//! files; a piece may span several files. `segments` is the pure mapping;
//! `Storage` does positioned reads and writes (`pread`/`pwrite`, no shared
//! cursor, so many tasks can use one handle). Callers run it on blocking
//! threads, never on the async reactor.
//!
//! When only some files are wanted, the others are never created: the
//! bytes of theirs that share a piece with a wanted file (a piece is
//! verified whole) go to one sparse part file beside the download,
//! `.<name>.parts`, at their torrent offset.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use parking_lot::Mutex;

use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::hash::sha1_batch;
use ccfd_proto::metainfo::{FileEntry, Metainfo};

use crate::resume::FileStamp;

/// Why disk I/O for a torrent failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: missing, or shorter than the torrent says ({want} bytes)")]
    Missing { path: PathBuf, want: u64 },
    #[error("read outside the torrent: offset {offset} length {len}")]
    OutOfRange { offset: u64, len: u64 },
    #[error("no file {0} in the torrent")]
    NoFile(usize),
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
    /// Empty for a file that is not wanted: its bytes live in `parts`.
    /// Set once, when the file is created (at open, or `select_file`).
    handles: Vec<OnceLock<File>>,
    paths: Vec<PathBuf>,
    /// The part file, when some file is not wanted.
    parts: Option<(File, PathBuf)>,
    /// Held by writes to the part file and by `select_file`, so no write
    /// lands in the part file after a file took its bytes from it.
    parts_lock: Mutex<()>,
    piece_length: u64,
    total_length: u64,
    /// True when every file was created by this open: nothing to re-check.
    pub fresh: bool,
    /// The folder the torrent's paths are under.
    root: PathBuf,
}

impl Storage {
    /// Opens (or creates) the torrent's files under `root`.
    pub fn open(meta: &Metainfo, root: &Path, mode: OpenMode) -> Result<Storage, StorageError> {
        Storage::open_selected(meta, root, mode, None)
    }

    /// Opens the torrent under `root` with only the files `only` (indexes)
    /// created when downloading; `None` means every file. Seeding
    /// (`OpenMode::Existing`) always opens every file.
    pub fn open_selected(meta: &Metainfo, root: &Path, mode: OpenMode, only: Option<&[usize]>) -> Result<Storage, StorageError> {
        let wanted = |i: usize| mode == OpenMode::Existing || only.is_none_or(|o| o.contains(&i));
        let mut handles = Vec::with_capacity(meta.files.len());
        let mut paths = Vec::with_capacity(meta.files.len());
        let mut fresh = true;
        for (i, f) in meta.files.iter().enumerate() {
            let path = root.join(&f.path);
            if !wanted(i) {
                handles.push(OnceLock::new());
                paths.push(path);
                continue;
            }
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
            handles.push(OnceLock::from(handle));
            paths.push(path);
        }
        let parts = if handles.iter().any(|h| h.get().is_none()) {
            let path = root.join(format!(".{}.parts", meta.name));
            let io = |source| StorageError::Io { path: path.clone(), source };
            let existing_len = std::fs::metadata(&path).map(|m| m.len()).ok();
            let h = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
            if existing_len.is_some_and(|l| l > 0) {
                fresh = false;
            }
            if existing_len.unwrap_or(0) < meta.total_length {
                h.set_len(meta.total_length).map_err(io)?;
            }
            Some((h, path))
        } else {
            None
        };
        Ok(Storage {
            files: meta.files.clone(),
            handles,
            paths,
            parts,
            parts_lock: Mutex::new(()),
            piece_length: meta.piece_length,
            total_length: meta.total_length,
            fresh,
            root: root.to_path_buf(),
        })
    }

    /// Where segment `s` lives: its file, or the part file at the torrent offset.
    fn place(&self, s: &Segment) -> (&File, u64, &Path) {
        match (self.handles[s.file].get(), &self.parts) {
            (Some(h), _) => (h, s.file_offset, &self.paths[s.file]),
            (None, Some((h, path))) => (h, self.files[s.file].offset + s.file_offset, path),
            // `open_selected` opens a part file whenever a file is left out.
            (None, None) => unreachable!("an unwanted file without a part file"),
        }
    }

    /// The folder the torrent's paths are under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Each file's stamp on disk now, for the resume record: a kept file's
    /// own; a file not kept has its bytes in the part file, so the part
    /// file's (`None` without one).
    pub fn stamps(&self) -> Vec<Option<FileStamp>> {
        let parts = self.parts.as_ref().and_then(|(_, path)| FileStamp::of(path));
        (0..self.files.len()).map(|i| if self.is_selected(i) { FileStamp::of(&self.paths[i]) } else { parts }).collect()
    }

    /// Whether file `file` is on disk (wanted at open or selected since).
    pub fn is_selected(&self, file: usize) -> bool {
        self.handles.get(file).is_some_and(|h| h.get().is_some())
    }

    /// Starts keeping file `file` too (the user chose it after the start):
    /// creates it and moves in the bytes of it the part file holds, which
    /// can only be in its first and last pieces (any other piece of it
    /// belongs to it alone, so was never fetched). A file already kept is
    /// left as it is.
    pub fn select_file(&self, file: usize) -> Result<(), StorageError> {
        let _parts = self.parts_lock.lock();
        let (Some(slot), Some(f)) = (self.handles.get(file), self.files.get(file)) else {
            return Err(StorageError::NoFile(file));
        };
        if slot.get().is_some() {
            return Ok(());
        }
        let path = &self.paths[file];
        let io = |source| StorageError::Io { path: path.clone(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let h = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        h.set_len(f.length).map_err(io)?;
        if let (Some((parts, parts_path)), true) = (&self.parts, f.length > 0) {
            let end = f.offset + f.length;
            let first_end = ((f.offset / self.piece_length + 1) * self.piece_length).min(end);
            let last_start = ((end - 1) / self.piece_length * self.piece_length).max(first_end);
            for (a, b) in [(f.offset, first_end), (last_start, end)].into_iter().filter(|(a, b)| b > a) {
                let mut buf = vec![0u8; (b - a) as usize];
                parts.read_exact_at(&mut buf, a).map_err(|source| StorageError::Io { path: parts_path.clone(), source })?;
                h.write_all_at(&buf, a - f.offset).map_err(io)?;
            }
        }
        let _ = slot.set(h);
        Ok(())
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
            let (file, at, path) = self.place(&s);
            file.read_exact_at(dst, at).map_err(|source| StorageError::Io { path: path.to_path_buf(), source })?;
            pos += s.len as usize;
        }
        Ok(())
    }

    /// Writes `data` at torrent offset `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.check_range(offset, data.len() as u64)?;
        let mut pos = 0usize;
        for s in segments(&self.files, offset, data.len() as u64) {
            // A write to the part file waits out a `select_file` of its file.
            let _parts = self.handles[s.file].get().is_none().then(|| self.parts_lock.lock());
            let (file, at, path) = self.place(&s);
            file.write_all_at(&data[pos..pos + s.len as usize], at).map_err(|source| {
                if source.raw_os_error() == Some(libc_ebadf()) {
                    StorageError::ReadOnly(path.to_path_buf())
                } else {
                    StorageError::Io { path: path.to_path_buf(), source }
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
    /// at a time per core; this is how a restart without a usable resume
    /// record (or with `--recheck`) keeps exactly the pieces that are good.
    pub fn verify_all(&self, meta: &Metainfo) -> Bitfield {
        self.verify_some(meta, &Bitfield::full(meta.piece_count()))
    }

    /// Re-checks the pieces in `which` (as `verify_all` does); returns the good ones.
    pub fn verify_some(&self, meta: &Metainfo, which: &Bitfield) -> Bitfield {
        const GROUP: u32 = 8;
        let chosen: Vec<u32> = which.ones().collect();
        let n = chosen.len() as u32;
        let groups = n.div_ceil(GROUP);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(groups as usize).max(1);
        let chosen = &chosen;
        let good: Vec<Vec<u32>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); GROUP as usize];
                        let mut ok = Vec::new();
                        for group in (t as u32..groups).step_by(threads) {
                            let pieces = &chosen[(group * GROUP) as usize..(group * GROUP + GROUP).min(n) as usize];
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
        let mut have = Bitfield::new(meta.piece_count());
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
                let f = FileEntry { path: format!("f{i}").into(), length, offset, pad: false };
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

    /// Files `src/a` (20 000 bytes) and `src/b` (30 000) in 16 KiB pieces.
    fn two_files() -> (tempfile::TempDir, Metainfo) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a"), vec![7u8; 20_000]).unwrap();
        std::fs::write(src.join("b"), (0..30_000u32).map(|i| i as u8).collect::<Vec<_>>()).unwrap();
        let opts = ccfd_proto::metainfo::CreateOptions { piece_length: 16384, trackers: vec![], web_seeds: vec![] };
        let meta = Metainfo::from_bytes(&ccfd_proto::metainfo::create(&src, &opts).unwrap()).unwrap();
        (dir, meta)
    }

    #[test]
    fn write_read_and_verify_across_files() {
        let (dir, meta) = two_files();
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

    #[test]
    fn unwanted_files_are_never_created_and_boundary_bytes_go_to_the_part_file() {
        let (dir, meta) = two_files();
        let src = dir.path().join("src");
        let seed = Storage::open(&meta, dir.path(), OpenMode::Existing).unwrap();
        let out = dir.path().join("out");
        // Only file b (bytes 20000..50000): pieces 1 to 3; piece 1 also holds the end of a.
        let leech = Storage::open_selected(&meta, &out, OpenMode::Create, Some(&[1])).unwrap();
        for piece in 1..4 {
            leech.write_piece(piece, &seed.read_piece(piece, meta.piece_len(piece)).unwrap()).unwrap();
        }
        assert!(!out.join("src/a").exists(), "the unwanted file is not created");
        assert_eq!(std::fs::read(out.join("src/b")).unwrap(), std::fs::read(src.join("b")).unwrap());
        assert!(out.join(".src.parts").exists());
        let again = Storage::open_selected(&meta, &out, OpenMode::Create, Some(&[1])).unwrap();
        assert!(!again.fresh);
        assert_eq!(again.verify_all(&meta).ones().collect::<Vec<_>>(), vec![1, 2, 3], "the boundary piece reads back whole");
    }

    #[test]
    fn a_file_chosen_later_takes_its_boundary_bytes_from_the_part_file() {
        let (dir, meta) = two_files();
        let src = dir.path().join("src");
        let seed = Storage::open(&meta, dir.path(), OpenMode::Existing).unwrap();
        let out = dir.path().join("out");
        let leech = Storage::open_selected(&meta, &out, OpenMode::Create, Some(&[1])).unwrap();
        // Piece 1 (bytes 16384..32768) holds a's last 3616 bytes: they go to the part file.
        leech.write_piece(1, &seed.read_piece(1, meta.piece_len(1)).unwrap()).unwrap();
        assert!(!leech.is_selected(0) && leech.is_selected(1));
        leech.select_file(0).unwrap();
        assert!(leech.is_selected(0));
        // a's end came over from the part file; the rest of a arrives now.
        leech.write_piece(0, &seed.read_piece(0, meta.piece_len(0)).unwrap()).unwrap();
        assert_eq!(std::fs::read(out.join("src/a")).unwrap(), std::fs::read(src.join("a")).unwrap());
        assert_eq!(leech.verify_all(&meta).ones().collect::<Vec<_>>(), vec![0, 1]);
        assert!(matches!(leech.select_file(5), Err(StorageError::NoFile(5))));
    }
}
