//! Which files of a torrent to fetch, which one to play, and which pieces
//! that makes wanted. Pure: it reads the metainfo only.
//!
//! Most movie torrents hold several files (the film, a sample, subtitles,
//! a text file, BEP 47 padding): the user names one by index or path, or
//! the largest video is taken; subtitles beside it come along.

use std::ops::Range;
use std::path::Path;

use ccfd_proto::bitfield::Bitfield;
use ccfd_proto::metainfo::Metainfo;

/// Extensions players treat as video (lower case).
pub const VIDEO_EXTENSIONS: &[&str] = &["mkv", "mp4", "m4v", "avi", "mov", "webm", "wmv", "flv", "mpg", "mpeg", "ts", "m2ts", "ogv", "3gp"];
/// Subtitle files handed to the player (lower case).
pub const SUBTITLE_EXTENSIONS: &[&str] = &["srt", "ass", "ssa", "vtt"];
/// A subtitle larger than this is not a subtitle: never fetched as one.
const MAX_SUBTITLE_BYTES: u64 = 16 << 20;
/// At most this many subtitle files come along with a video.
const MAX_SUBTITLES: usize = 32;

/// Why a file choice does not name a file of the torrent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileSelectError {
    #[error("file index {index} is out of range: the torrent has {files} files (0 to {})", files - 1)]
    IndexOutOfRange { index: usize, files: usize },
    #[error("no file of the torrent is named {0:?} (`ccfd-bt info` lists them)")]
    NoFile(String),
    #[error("{name:?} matches {count} files of the torrent; give its index or its whole path")]
    Ambiguous { name: String, count: usize },
    #[error("file {0} is BEP 47 padding, not content")]
    Padding(usize),
    #[error("the torrent holds only padding files")]
    NothingToPlay,
}

/// The file `spec` names: an index, a path as `ccfd-bt info` prints it
/// (with or without the torrent's folder), or a file name found once.
pub fn resolve(meta: &Metainfo, spec: &str) -> Result<usize, FileSelectError> {
    let index = match spec.parse::<usize>() {
        Ok(i) if i < meta.files.len() => i,
        // A file may be named like a number; otherwise the index is wrong.
        Ok(i) => by_path(meta, spec).map_err(|_| FileSelectError::IndexOutOfRange { index: i, files: meta.files.len() })?,
        Err(_) => by_path(meta, spec)?,
    };
    check_index(meta, index)
}

/// `index` if it names a file of the torrent that is not padding.
fn check_index(meta: &Metainfo, index: usize) -> Result<usize, FileSelectError> {
    match meta.files.get(index) {
        None => Err(FileSelectError::IndexOutOfRange { index, files: meta.files.len() }),
        Some(f) if f.pad => Err(FileSelectError::Padding(index)),
        Some(_) => Ok(index),
    }
}

fn by_path(meta: &Metainfo, spec: &str) -> Result<usize, FileSelectError> {
    let want = Path::new(spec.trim_start_matches("./"));
    let inside = |p: &Path| p.strip_prefix(&meta.name).ok().map(Path::to_path_buf);
    if let Some(i) = meta.files.iter().position(|f| f.path == want || inside(&f.path).is_some_and(|p| p == want)) {
        return Ok(i);
    }
    let by_name: Vec<usize> = (0..meta.files.len()).filter(|&i| meta.files[i].path.file_name() == Some(want.as_os_str())).collect();
    match by_name.as_slice() {
        [i] => Ok(*i),
        [] => Err(FileSelectError::NoFile(spec.to_string())),
        many => Err(FileSelectError::Ambiguous { name: spec.to_string(), count: many.len() }),
    }
}

/// Each of `specs` resolved, sorted, without repeats.
pub fn resolve_all(meta: &Metainfo, specs: &[String]) -> Result<Vec<usize>, FileSelectError> {
    let mut out = specs.iter().map(|s| resolve(meta, s)).collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Indexes (e.g. a magnet's `so=`) checked against the torrent.
pub fn check_indexes(meta: &Metainfo, indexes: &[usize]) -> Result<Vec<usize>, FileSelectError> {
    indexes.iter().map(|&i| check_index(meta, i)).collect()
}

fn extension(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

/// Whether `path` names a video by its extension.
pub fn is_video(path: &Path) -> bool {
    VIDEO_EXTENSIONS.contains(&extension(path).as_str())
}

/// The file to stream when the user names none: the largest video, else
/// the largest file that is not padding.
pub fn default_stream_file(meta: &Metainfo) -> Result<usize, FileSelectError> {
    let content = || (0..meta.files.len()).filter(|&i| !meta.files[i].pad);
    let largest = |it: &mut dyn Iterator<Item = usize>| it.max_by_key(|&i| (meta.files[i].length, std::cmp::Reverse(i)));
    largest(&mut content().filter(|&i| is_video(&meta.files[i].path)))
        .or_else(|| largest(&mut content()))
        .ok_or(FileSelectError::NothingToPlay)
}

/// The subtitle files that belong to video `video`: those whose name
/// starts with the video's stem (`movie.srt`, `movie.en.ass`), and those in
/// a `Subs`/`Subtitles` folder of the torrent.
pub fn subtitles_for(meta: &Metainfo, video: usize) -> Vec<usize> {
    let Some(stem) = meta.files.get(video).and_then(|f| f.path.file_stem()).and_then(|s| s.to_str()) else {
        return Vec::new();
    };
    let in_subs_folder = |p: &Path| {
        p.parent().is_some_and(|d| {
            d.components().any(|c| c.as_os_str().to_str().is_some_and(|c| matches!(c.to_ascii_lowercase().as_str(), "subs" | "subtitles")))
        })
    };
    (0..meta.files.len())
        .filter(|&i| {
            let f = &meta.files[i];
            let name = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !f.pad
                && i != video
                && f.length <= MAX_SUBTITLE_BYTES
                && SUBTITLE_EXTENSIONS.contains(&extension(&f.path).as_str())
                && (name.starts_with(stem) || in_subs_folder(&f.path))
        })
        .take(MAX_SUBTITLES)
        .collect()
}

/// The pieces that hold any byte of file `index` (empty for an empty file).
pub fn file_pieces(meta: &Metainfo, index: usize) -> Range<u32> {
    let Some(f) = meta.files.get(index) else { return 0..0 };
    if f.length == 0 {
        return 0..0;
    }
    let first = f.offset / meta.piece_length;
    let last = (f.offset + f.length - 1) / meta.piece_length;
    first as u32..last as u32 + 1
}

/// The pieces needed for the `selected` files: every piece that holds a
/// byte of one of them (boundary pieces included: they are verified whole).
pub fn wanted_pieces(meta: &Metainfo, selected: &[usize]) -> Bitfield {
    let mut wanted = Bitfield::new(meta.piece_count());
    for &i in selected {
        for p in file_pieces(meta, i) {
            wanted.set(p);
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccfd_proto::metainfo::{FileEntry, InfoHash};

    fn torrent(files: &[(&str, u64, bool)], piece_length: u64) -> Metainfo {
        let mut offset = 0;
        let files: Vec<FileEntry> = files
            .iter()
            .map(|&(p, length, pad)| {
                let f = FileEntry { path: Path::new("show").join(p), length, offset, pad };
                offset += length;
                f
            })
            .collect();
        Metainfo {
            info_hash: InfoHash([0; 20]),
            name: "show".into(),
            piece_length,
            total_length: offset,
            piece_hashes: vec![[0; 20]; offset.div_ceil(piece_length) as usize],
            files,
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            private: false,
            info_bytes: Vec::new(),
        }
    }

    fn movie_torrent() -> Metainfo {
        torrent(
            &[
                ("Sample/sample.mkv", 3000, false),
                ("movie.mkv", 10_000, false),
                (".pad/1", 240, true),
                ("movie.en.srt", 500, false),
                ("Subs/French.ass", 400, false),
                ("notes.txt", 100, false),
                ("huge.bin", 20_000, false),
            ],
            1024,
        )
    }

    #[test]
    fn files_are_named_by_index_path_or_unique_name() {
        let m = movie_torrent();
        assert_eq!(resolve(&m, "1"), Ok(1));
        assert_eq!(resolve(&m, "show/movie.mkv"), Ok(1));
        assert_eq!(resolve(&m, "movie.mkv"), Ok(1));
        assert_eq!(resolve(&m, "Subs/French.ass"), Ok(4));
        assert_eq!(resolve(&m, "French.ass"), Ok(4));
        assert_eq!(resolve(&m, "7"), Err(FileSelectError::IndexOutOfRange { index: 7, files: 7 }));
        assert_eq!(resolve(&m, "nope.mkv"), Err(FileSelectError::NoFile("nope.mkv".into())));
        assert_eq!(resolve(&m, "2"), Err(FileSelectError::Padding(2)));
        let twice = torrent(&[("a/x.mkv", 10, false), ("b/x.mkv", 10, false)], 1024);
        assert_eq!(resolve(&twice, "x.mkv"), Err(FileSelectError::Ambiguous { name: "x.mkv".into(), count: 2 }));
        assert_eq!(resolve_all(&m, &["1".into(), "movie.mkv".into(), "0".into()]), Ok(vec![0, 1]));
        // A magnet's so= names indexes only.
        assert_eq!(check_indexes(&m, &[1, 3]), Ok(vec![1, 3]));
        assert_eq!(check_indexes(&m, &[2]), Err(FileSelectError::Padding(2)));
        assert_eq!(check_indexes(&m, &[9]), Err(FileSelectError::IndexOutOfRange { index: 9, files: 7 }));
    }

    #[test]
    fn the_largest_video_is_streamed_and_its_subtitles_come_along() {
        let m = movie_torrent();
        assert_eq!(default_stream_file(&m), Ok(1), "the larger non-video file does not win");
        assert_eq!(subtitles_for(&m, 1), vec![3, 4]);
        assert_eq!(subtitles_for(&m, 0), vec![4], "only the Subs folder matches the sample");
        let no_video = torrent(&[(".pad/0", 5000, true), ("a.txt", 10, false), ("b.iso", 900, false)], 1024);
        assert_eq!(default_stream_file(&no_video), Ok(2));
        let only_pad = torrent(&[(".pad/0", 5000, true)], 1024);
        assert_eq!(default_stream_file(&only_pad), Err(FileSelectError::NothingToPlay));
    }

    #[test]
    fn wanted_pieces_cover_the_files_and_their_boundaries() {
        let m = movie_torrent();
        // movie.mkv: bytes 3000..13000 of 1 KiB pieces: pieces 2 to 12.
        assert_eq!(file_pieces(&m, 1), 2..13);
        let w = wanted_pieces(&m, &[1, 3]);
        // movie.en.srt: 13240..13740: piece 12 and 13.
        assert_eq!(w.ones().collect::<Vec<_>>(), (2..14).collect::<Vec<_>>());
        let empty = torrent(&[("a", 0, false), ("b", 2048, false)], 1024);
        assert_eq!(file_pieces(&empty, 0), 0..0);
        assert_eq!(wanted_pieces(&empty, &[0]).count(), 0);
    }
}
