//! Raw bencode scanning, and the guard in front of every structured decode.
//!
//! Structured decoding goes through `serde_bencode` and `lava_torrent`, and
//! both recurse once per nesting level with no limit: a peer's 40 kB list
//! nested 20,000 deep overflows a 2 MiB worker stack, which aborts the whole
//! process (no unwind, no task isolation). So every decode of outside bytes
//! goes through `decode` (serde) or `scan` first (lava_torrent): a scan that
//! keeps its own bounded stack instead of recursing, and refuses nesting
//! deeper than `MAX_DEPTH` and malformed input before a decoder sees it.
//!
//! The same scan finds byte spans, because the info-hash must be the SHA-1
//! of the info dictionary exactly as it appears in the file, not of a
//! re-encoding (a torrent with unsorted keys would otherwise get a
//! different hash).

use std::ops::Range;

use serde::de::DeserializeOwned;

/// Why a byte string is not the bencode we expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BencodeError {
    #[error("bencode ends early at byte {0}")]
    Truncated(usize),
    #[error("invalid bencode at byte {0}")]
    Invalid(usize),
    #[error("bencode nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("top-level value is not a dictionary")]
    NotDictionary,
    #[error("dictionary has no key {0:?}")]
    MissingKey(String),
    #[error("dictionary has the key {0:?} twice")]
    DuplicateKey(String),
    #[error("{0}")]
    Decode(String),
}

/// Nesting bound: real torrents and messages nest a handful of levels (a
/// multi-file torrent's path list is four deep); a hostile input can nest
/// millions, which would exhaust the stack of any recursive decoder.
pub const MAX_DEPTH: usize = 64;

/// An open list or dictionary during a scan.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    List,
    Dict,
}

/// Returns the end offset of the value starting at `pos`. Never recurses:
/// open containers are counted on a stack of at most `MAX_DEPTH` entries,
/// so its cost is linear in the input and its stack use constant.
pub fn skip_value(buf: &[u8], pos: usize) -> Result<usize, BencodeError> {
    let mut open: Vec<Open> = Vec::new();
    let mut p = pos;
    loop {
        // Inside a container: its end, or (in a dictionary) the next key.
        if let Some(&top) = open.last() {
            if buf.get(p) == Some(&b'e') {
                open.pop();
                p += 1;
                if open.is_empty() {
                    return Ok(p);
                }
                continue;
            }
            if top == Open::Dict {
                p = read_bytes(buf, p)?.1;
            }
        }
        // One value at `p`.
        match buf.get(p).copied() {
            None => return Err(BencodeError::Truncated(p)),
            Some(b'i') => {
                let end = find(buf, p + 1, b'e')?;
                let digits = &buf[p + 1..end];
                let digits = digits.strip_prefix(b"-").unwrap_or(digits);
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(BencodeError::Invalid(p));
                }
                p = end + 1;
            }
            Some(kind @ (b'l' | b'd')) => {
                if open.len() >= MAX_DEPTH {
                    return Err(BencodeError::TooDeep);
                }
                open.push(if kind == b'l' { Open::List } else { Open::Dict });
                p += 1;
                continue;
            }
            Some(b'0'..=b'9') => p = read_bytes(buf, p)?.1,
            Some(_) => return Err(BencodeError::Invalid(p)),
        }
        if open.is_empty() {
            return Ok(p);
        }
    }
}

/// Checks that `buf` starts with one well-formed value nested at most
/// `MAX_DEPTH` deep; returns its length. Run before handing outside bytes
/// to a recursive decoder (lava_torrent).
pub fn scan(buf: &[u8]) -> Result<usize, BencodeError> {
    skip_value(buf, 0)
}

/// Decodes the value at the start of `buf` (bytes after it, such as a
/// `ut_metadata` piece's data or a tracker's trailing newline, are left
/// alone) with serde, after `scan` proved it bounded.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<T, BencodeError> {
    let end = scan(buf)?;
    serde_bencode::from_bytes(&buf[..end]).map_err(|e| BencodeError::Decode(e.to_string()))
}

/// Reads a byte string `<len>:<bytes>` at `pos`; returns its content range and end.
pub fn read_bytes(buf: &[u8], pos: usize) -> Result<(Range<usize>, usize), BencodeError> {
    let colon = find(buf, pos, b':')?;
    let digits = &buf[pos..colon];
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(BencodeError::Invalid(pos));
    }
    // At most 10 ASCII digits: fits in u64, no overflow.
    let len: u64 = digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
    let start = colon + 1;
    let end = (start as u64).saturating_add(len);
    if end > buf.len() as u64 {
        return Err(BencodeError::Truncated(buf.len()));
    }
    Ok((start..end as usize, end as usize))
}

fn find(buf: &[u8], from: usize, byte: u8) -> Result<usize, BencodeError> {
    buf.get(from..).and_then(|rest| rest.iter().position(|&b| b == byte)).map(|i| from + i).ok_or(BencodeError::Truncated(buf.len()))
}

/// Finds the raw span of `key`'s value in the top-level dictionary of `buf`.
/// A key given twice is refused: the span hashed (the info-hash) and the
/// value a decoder keeps could otherwise be two different dictionaries.
pub fn dict_value_span(buf: &[u8], key: &[u8]) -> Result<Range<usize>, BencodeError> {
    if buf.first() != Some(&b'd') {
        return Err(BencodeError::NotDictionary);
    }
    let mut p = 1;
    let mut found = None;
    while buf.get(p) != Some(&b'e') {
        let (k, after_key) = read_bytes(buf, p)?;
        let end = skip_value(buf, after_key)?;
        if &buf[k] == key {
            if found.is_some() {
                return Err(BencodeError::DuplicateKey(String::from_utf8_lossy(key).into_owned()));
            }
            found = Some(after_key..end);
        }
        p = end;
    }
    found.ok_or_else(|| BencodeError::MissingKey(String::from_utf8_lossy(key).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_info_span_even_when_keys_are_unsorted() {
        let raw = b"d4:infod6:lengthi5e4:name1:ae8:announce3:urle";
        let span = dict_value_span(raw, b"info").unwrap();
        assert_eq!(&raw[span], b"d6:lengthi5e4:name1:ae");
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        assert!(dict_value_span(b"d4:info", b"info").is_err());
        assert!(dict_value_span(b"d4:infoi12", b"info").is_err());
        assert!(dict_value_span(b"x", b"info").is_err());
        assert!(dict_value_span(b"d99999999999:e", b"info").is_err());
        assert_eq!(dict_value_span(b"d1:ai1ee", b"info"), Err(BencodeError::MissingKey("info".into())));
        // Found by fuzzing (fuzz/regressions/metainfo/): two info dictionaries.
        assert_eq!(dict_value_span(b"d4:infode4:infoi1ee", b"info"), Err(BencodeError::DuplicateKey("info".into())));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut raw = b"d4:info".to_vec();
        raw.extend(std::iter::repeat_n(b'l', 100_000));
        assert_eq!(dict_value_span(&raw, b"info"), Err(BencodeError::TooDeep));
    }

    /// `depth` lists inside each other around an integer.
    fn nested(depth: usize) -> Vec<u8> {
        let mut raw = vec![b'l'; depth];
        raw.extend_from_slice(b"i1e");
        raw.extend(std::iter::repeat_n(b'e', depth));
        raw
    }

    #[test]
    fn the_scan_allows_max_depth_and_refuses_one_more() {
        assert_eq!(scan(&nested(MAX_DEPTH)), Ok(2 * MAX_DEPTH + 3));
        assert_eq!(scan(&nested(MAX_DEPTH + 1)), Err(BencodeError::TooDeep));
        // Dictionaries count the same; keys must be strings.
        assert_eq!(scan(b"d1:ad1:bleee"), Ok(12));
        assert_eq!(scan(b"di1e1:ae"), Err(BencodeError::Invalid(1)));
        assert_eq!(scan(b"l"), Err(BencodeError::Truncated(1)));
        assert_eq!(scan(b"d1:a"), Err(BencodeError::Truncated(4)));
    }

    #[test]
    fn a_million_levels_are_refused_without_recursion() {
        // Run on a small stack: the scan must not use stack per level.
        let deep = nested(1_000_000);
        let handle = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || scan(&deep)).unwrap();
        assert_eq!(handle.join().unwrap(), Err(BencodeError::TooDeep));
    }

    #[test]
    fn decode_guards_serde_and_ignores_what_follows_the_value() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Small {
            a: i64,
        }
        assert_eq!(decode::<Small>(b"d1:ai7ee\n"), Ok(Small { a: 7 }));
        let mut deep = b"d1:ai7e1:x".to_vec();
        deep.extend(nested(20_000));
        deep.push(b'e');
        assert_eq!(decode::<Small>(&deep), Err(BencodeError::TooDeep));
        assert!(matches!(decode::<Small>(b"d1:bi7ee"), Err(BencodeError::Decode(_))));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let _ = dict_value_span(&bytes, b"info");
            let _ = skip_value(&bytes, 0);
            let _ = decode::<serde_bencode::value::Value>(&bytes);
        }
    }
}
