//! Torrent metainfo: what a .torrent file says, validated once on the way in.
//!
//! Parsing is delegated to `lava_torrent`; this module adds what a client
//! needs on top: the info-hash of the raw info bytes, sanitized file paths
//! (a torrent must never write outside its download folder), BEP 12 tracker
//! tiers and BEP 19 web seeds, and torrent creation.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use lava_torrent::bencode::BencodeElem;
use lava_torrent::torrent::v1::{Torrent, TorrentBuilder};
use sha1::{Digest, Sha1};

use crate::bencode;

/// Largest .torrent we read: real ones are kilobytes to a few MiB.
pub const MAX_TORRENT_FILE: u64 = 64 << 20;
/// Smallest and largest piece lengths we accept from a torrent.
pub const MIN_PIECE_LENGTH: u64 = 1 << 10;
pub const MAX_PIECE_LENGTH: u64 = 64 << 20;

/// Why a torrent cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("torrent file is larger than {MAX_TORRENT_FILE} bytes")]
    TooLarge,
    #[error("malformed torrent: {0}")]
    Malformed(String),
    #[error("unsafe file path in torrent: {0:?}")]
    UnsafePath(PathBuf),
    #[error("cannot create torrent: {0}")]
    Create(String),
}

/// The 20-byte SHA-1 of the info dictionary: a torrent's identity in the swarm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    /// Lowercase hex, as trackers' whitelists and magnet links spell it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 40 hex digits.
    pub fn from_hex(s: &str) -> Option<InfoHash> {
        // from_str_radix alone would take a sign: "+f" parses as 15.
        if s.len() != 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(InfoHash(out))
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One file of the torrent, placed in the torrent's byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path under the download folder (already sanitized).
    pub path: PathBuf,
    pub length: u64,
    /// Offset of the file's first byte in the concatenated torrent stream.
    pub offset: u64,
    /// A BEP 47 padding file (`attr` contains `p`): zeros that align the
    /// next file to a piece; never a file anyone wants.
    pub pad: bool,
}

/// A validated torrent.
#[derive(Debug, Clone)]
pub struct Metainfo {
    pub info_hash: InfoHash,
    pub name: String,
    pub piece_length: u64,
    pub total_length: u64,
    pub piece_hashes: Vec<[u8; 20]>,
    pub files: Vec<FileEntry>,
    /// BEP 12 tiers; a lone `announce` becomes one tier.
    pub trackers: Vec<Vec<String>>,
    /// BEP 19 `url-list`.
    pub web_seeds: Vec<String>,
    /// BEP 27 `private=1`: peers come from the torrent's trackers only (no DHT, no PEX).
    pub private: bool,
    /// The raw info dictionary, as served by BEP 9 metadata exchange.
    pub info_bytes: Vec<u8>,
}

impl Metainfo {
    /// Reads and validates a .torrent file.
    pub fn from_file(path: &Path) -> Result<Metainfo, MetainfoError> {
        let io = |source| MetainfoError::Io { path: path.to_path_buf(), source };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_TORRENT_FILE {
            return Err(MetainfoError::TooLarge);
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Metainfo::from_bytes(&bytes)
    }

    /// Parses and validates the bytes of a .torrent file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        let malformed = |e: &dyn fmt::Display| MetainfoError::Malformed(e.to_string());
        // lava_torrent recurses without a limit: it sees only a scanned value.
        let end = bencode::scan(bytes).map_err(|e| malformed(&e))?;
        let bytes = &bytes[..end];
        let span = bencode::dict_value_span(bytes, b"info").map_err(|e| malformed(&e))?;
        let info_bytes = bytes[span].to_vec();
        let torrent = Torrent::read_from_bytes(bytes).map_err(|e| malformed(&e))?;
        Metainfo::from_parts(torrent, info_bytes)
    }

    /// Builds metainfo from a bare info dictionary (as fetched by BEP 9) and
    /// trackers known from elsewhere (a magnet link).
    pub fn from_info_bytes(info: &[u8], trackers: Vec<Vec<String>>) -> Result<Metainfo, MetainfoError> {
        let mut wrapped = Vec::with_capacity(info.len() + 8);
        wrapped.extend_from_slice(b"d4:info");
        wrapped.extend_from_slice(info);
        wrapped.push(b'e');
        let mut meta = Metainfo::from_bytes(&wrapped)?;
        meta.trackers = trackers;
        Ok(meta)
    }

    fn from_parts(torrent: Torrent, info_bytes: Vec<u8>) -> Result<Metainfo, MetainfoError> {
        let malformed = |s: &str| MetainfoError::Malformed(s.to_string());
        let info_hash = InfoHash(Sha1::digest(&info_bytes).into());
        let piece_length = u64::try_from(torrent.piece_length).map_err(|_| malformed("negative piece length"))?;
        if !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&piece_length) {
            return Err(malformed("piece length out of range (1 KiB to 64 MiB)"));
        }
        let name = sanitize_component(&torrent.name)?;
        let mut files = Vec::new();
        let mut offset = 0u64;
        match &torrent.files {
            None => {
                let length = u64::try_from(torrent.length).map_err(|_| malformed("negative length"))?;
                files.push(FileEntry { path: PathBuf::from(&name), length, offset: 0, pad: false });
                offset = length;
            }
            Some(list) => {
                if list.is_empty() {
                    return Err(malformed("multi-file torrent with no files"));
                }
                for f in list {
                    let length = u64::try_from(f.length).map_err(|_| malformed("negative file length"))?;
                    let rel = sanitize_relative(&f.path)?;
                    let pad =
                        matches!(f.extra_fields.as_ref().and_then(|x| x.get("attr")), Some(BencodeElem::String(a)) if a.contains('p'));
                    files.push(FileEntry { path: Path::new(&name).join(rel), length, offset, pad });
                    offset = offset.checked_add(length).ok_or_else(|| malformed("total length overflows"))?;
                }
            }
        }
        let total_length = offset;
        if total_length == 0 {
            return Err(malformed("torrent has no content"));
        }
        let expected_pieces = total_length.div_ceil(piece_length);
        if torrent.pieces.len() as u64 != expected_pieces {
            return Err(MetainfoError::Malformed(format!("{} piece hashes for {} pieces", torrent.pieces.len(), expected_pieces)));
        }
        let piece_hashes = torrent
            .pieces
            .iter()
            .map(|p| <[u8; 20]>::try_from(p.as_slice()).map_err(|_| malformed("piece hash is not 20 bytes")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut trackers: Vec<Vec<String>> = torrent
            .announce_list
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|tier| tier.into_iter().filter(|u| !u.is_empty()).collect::<Vec<_>>())
            .filter(|tier| !tier.is_empty())
            .collect();
        if trackers.is_empty() {
            if let Some(a) = torrent.announce.clone().filter(|a| !a.is_empty()) {
                trackers.push(vec![a]);
            }
        }
        let web_seeds = match torrent.extra_fields.as_ref().and_then(|f| f.get("url-list")) {
            Some(BencodeElem::String(s)) => vec![s.clone()],
            Some(BencodeElem::List(items)) => items
                .iter()
                .filter_map(|i| match i {
                    BencodeElem::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let private = matches!(torrent.extra_info_fields.as_ref().and_then(|f| f.get("private")), Some(BencodeElem::Integer(1)));
        Ok(Metainfo {
            private,
            info_hash,
            name,
            piece_length,
            total_length,
            piece_hashes,
            files,
            trackers,
            web_seeds: web_seeds.into_iter().filter(|s| !s.is_empty()).collect(),
            info_bytes,
        })
    }

    /// A .torrent file for this torrent: the info dictionary as it is (so
    /// the info-hash stays), with the trackers in tiers and the web seeds
    /// (a magnet's metadata saved for later).
    pub fn to_torrent_bytes(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &[u8]) {
            out.extend_from_slice(s.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(s);
        }
        let mut out = Vec::with_capacity(self.info_bytes.len() + 256);
        out.push(b'd');
        // Keys in sorted order, as bencode requires.
        if let Some(first) = self.trackers.iter().flatten().next() {
            string(&mut out, b"announce");
            string(&mut out, first.as_bytes());
            string(&mut out, b"announce-list");
            out.push(b'l');
            for tier in &self.trackers {
                out.push(b'l');
                for url in tier {
                    string(&mut out, url.as_bytes());
                }
                out.push(b'e');
            }
            out.push(b'e');
        }
        string(&mut out, b"info");
        out.extend_from_slice(&self.info_bytes);
        if !self.web_seeds.is_empty() {
            string(&mut out, b"url-list");
            out.push(b'l');
            for url in &self.web_seeds {
                string(&mut out, url.as_bytes());
            }
            out.push(b'e');
        }
        out.push(b'e');
        out
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.piece_hashes.len() as u32
    }

    /// Length of piece `index` (the last one may be short).
    pub fn piece_len(&self, index: u32) -> u32 {
        let start = u64::from(index) * self.piece_length;
        (self.total_length - start).min(self.piece_length) as u32
    }
}

fn sanitize_component(name: &str) -> Result<String, MetainfoError> {
    let unsafe_path = || MetainfoError::UnsafePath(PathBuf::from(name));
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(unsafe_path());
    }
    Ok(name.to_string())
}

fn sanitize_relative(path: &Path) -> Result<PathBuf, MetainfoError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => {
                let s = part.to_str().ok_or_else(|| MetainfoError::UnsafePath(path.to_path_buf()))?;
                out.push(sanitize_component(s).map_err(|_| MetainfoError::UnsafePath(path.to_path_buf()))?);
            }
            _ => return Err(MetainfoError::UnsafePath(path.to_path_buf())),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(MetainfoError::UnsafePath(path.to_path_buf()));
    }
    Ok(out)
}

/// What `create` should put in a new torrent.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub piece_length: u64,
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
}

/// Picks a piece length for `total` bytes: about 1000-2000 pieces, 16 KiB to 4 MiB.
pub fn default_piece_length(total: u64) -> u64 {
    let mut len: u64 = 16 << 10;
    while len < (4 << 20) && total / len > 2000 {
        len *= 2;
    }
    len
}

/// Creates the bytes of a .torrent for a file or folder.
pub fn create(path: &Path, opts: &CreateOptions) -> Result<Vec<u8>, MetainfoError> {
    let abs = std::fs::canonicalize(path).map_err(|source| MetainfoError::Io { path: path.to_path_buf(), source })?;
    if !opts.piece_length.is_power_of_two() || !(16 << 10..=MAX_PIECE_LENGTH).contains(&opts.piece_length) {
        return Err(MetainfoError::Create("piece length must be a power of two from 16 KiB to 64 MiB".into()));
    }
    let mut builder = TorrentBuilder::new(&abs, opts.piece_length as i64);
    if let Some(first) = opts.trackers.first() {
        builder = builder.set_announce(Some(first.clone()));
        if opts.trackers.len() > 1 {
            builder = builder.set_announce_list(opts.trackers.iter().map(|t| vec![t.clone()]).collect());
        }
    }
    match opts.web_seeds.as_slice() {
        [] => {}
        [one] => builder = builder.add_extra_field("url-list".into(), BencodeElem::String(one.clone())),
        many => {
            let list = many.iter().cloned().map(BencodeElem::String).collect();
            builder = builder.add_extra_field("url-list".into(), BencodeElem::List(list));
        }
    }
    let torrent = builder.build().map_err(|e| MetainfoError::Create(e.to_string()))?;
    torrent.encode().map_err(|e| MetainfoError::Create(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(info: &[u8]) -> Vec<u8> {
        let url = "http://127.0.0.1:6969/announce";
        let mut out = format!("d8:announce{}:{url}4:info", url.len()).into_bytes();
        out.extend_from_slice(info);
        out.push(b'e');
        out
    }

    /// An info dictionary: `head` then `pieces` of `n` fake (non-UTF-8) hashes.
    fn info(head: &str, n: usize) -> Vec<u8> {
        let mut out = format!("d{head}6:pieces{}:", 20 * n).into_bytes();
        out.extend(std::iter::repeat_n(0xffu8, 20 * n));
        out.push(b'e');
        out
    }

    #[test]
    fn single_file_layout_and_hash_of_raw_info() {
        let info = info("6:lengthi40000e4:name5:movie12:piece lengthi16384e", 3);
        let m = Metainfo::from_bytes(&sample(&info)).unwrap();
        assert_eq!(m.info_hash.0, <[u8; 20]>::from(Sha1::digest(&info)));
        assert_eq!(m.info_bytes, info);
        assert_eq!(m.piece_count(), 3);
        assert_eq!(m.piece_len(2), 40000 - 2 * 16384);
        assert_eq!(m.files, vec![FileEntry { path: "movie".into(), length: 40000, offset: 0, pad: false }]);
        assert_eq!(m.trackers, vec![vec!["http://127.0.0.1:6969/announce".to_string()]]);
    }

    #[test]
    fn rejects_path_traversal_and_wrong_piece_count() {
        let evil = info("5:filesld6:lengthi5e4:pathl2:..6:passwdeee4:name1:d12:piece lengthi16384e", 1);
        assert!(Metainfo::from_bytes(&sample(&evil)).is_err(), "lava_torrent refuses '..' in paths");
        let evil_name = info("6:lengthi5e4:name2:..12:piece lengthi16384e", 1);
        assert!(matches!(Metainfo::from_bytes(&sample(&evil_name)), Err(MetainfoError::UnsafePath(_))));
        let short = info("6:lengthi40000e4:name1:m12:piece lengthi16384e", 1);
        assert!(matches!(Metainfo::from_bytes(&sample(&short)), Err(MetainfoError::Malformed(_))));
        assert!(Metainfo::from_bytes(b"not a torrent").is_err());
    }

    #[test]
    fn private_flag() {
        // Keys sorted as lava_torrent requires: pieces, then private.
        let mut private = info("6:lengthi5e4:name1:x12:piece lengthi16384e", 1);
        private.pop();
        private.extend_from_slice(b"7:privatei1ee");
        assert!(Metainfo::from_bytes(&sample(&private)).unwrap().private);
        let public = info("6:lengthi5e4:name1:x12:piece lengthi16384e", 1);
        assert!(!Metainfo::from_bytes(&sample(&public)).unwrap().private);
    }

    #[test]
    fn hex_round_trip() {
        let h = InfoHash([0xab; 20]);
        assert_eq!(InfoHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(InfoHash::from_hex("zz"), None);
        assert_eq!(InfoHash::from_hex(&"+f".repeat(20)), None);
        assert_eq!(InfoHash::from_hex(&"-0".repeat(20)), None);
        assert_eq!(InfoHash::from_hex(&"AB".repeat(20)), Some(h));
    }

    #[test]
    fn create_then_read_multi_file_with_web_seed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("album");
        std::fs::create_dir_all(root.join("cd1")).unwrap();
        std::fs::write(root.join("cd1/a.bin"), vec![1u8; 20_000]).unwrap();
        std::fs::write(root.join("b.bin"), vec![2u8; 30_001]).unwrap();
        let opts = CreateOptions {
            piece_length: 16384,
            trackers: vec!["http://t1/announce".into(), "udp://t2:1".into()],
            web_seeds: vec!["http://ws/".into()],
        };
        let bytes = create(&root, &opts).unwrap();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.total_length, 50_001);
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files.iter().map(|f| f.length).sum::<u64>(), 50_001);
        assert_eq!(m.trackers.len(), 2);
        assert_eq!(m.web_seeds, vec!["http://ws/".to_string()]);
        // Saved again (as a magnet's fetched metadata is): the same torrent.
        let saved = Metainfo::from_bytes(&m.to_torrent_bytes()).unwrap();
        assert_eq!((saved.info_hash, &saved.trackers, &saved.web_seeds, &saved.files), (m.info_hash, &m.trackers, &m.web_seeds, &m.files));
        let bare = Metainfo::from_info_bytes(&m.info_bytes, Vec::new()).unwrap();
        assert_eq!(Metainfo::from_bytes(&bare.to_torrent_bytes()).unwrap().info_hash, m.info_hash);
    }
}
