//! Minimal raw bencode scanning.
//!
//! Structured decoding goes through `serde_bencode` and `lava_torrent`; this
//! module only finds byte spans, because the info-hash must be the SHA-1 of
//! the info dictionary exactly as it appears in the file, not of a re-encoding
//! (a torrent with unsorted keys would otherwise get a different hash).

use std::ops::Range;

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
}

/// Nesting bound: real torrents nest a handful of levels; a hostile file can
/// nest millions, which would otherwise exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// Returns the end offset of the value starting at `pos`.
pub fn skip_value(buf: &[u8], pos: usize) -> Result<usize, BencodeError> {
    skip_value_at_depth(buf, pos, 0)
}

fn skip_value_at_depth(buf: &[u8], pos: usize, depth: usize) -> Result<usize, BencodeError> {
    if depth > MAX_DEPTH {
        return Err(BencodeError::TooDeep);
    }
    match buf.get(pos).copied() {
        None => Err(BencodeError::Truncated(pos)),
        Some(b'i') => {
            let end = find(buf, pos + 1, b'e')?;
            let digits = &buf[pos + 1..end];
            let digits = digits.strip_prefix(b"-").unwrap_or(digits);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(BencodeError::Invalid(pos));
            }
            Ok(end + 1)
        }
        Some(b'l') => {
            let mut p = pos + 1;
            while buf.get(p) != Some(&b'e') {
                p = skip_value_at_depth(buf, p, depth + 1)?;
            }
            Ok(p + 1)
        }
        Some(b'd') => {
            let mut p = pos + 1;
            while buf.get(p) != Some(&b'e') {
                let (_, after_key) = read_bytes(buf, p)?;
                p = skip_value_at_depth(buf, after_key, depth + 1)?;
            }
            Ok(p + 1)
        }
        Some(b'0'..=b'9') => read_bytes(buf, pos).map(|(_, end)| end),
        Some(_) => Err(BencodeError::Invalid(pos)),
    }
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
pub fn dict_value_span(buf: &[u8], key: &[u8]) -> Result<Range<usize>, BencodeError> {
    if buf.first() != Some(&b'd') {
        return Err(BencodeError::NotDictionary);
    }
    let mut p = 1;
    while buf.get(p) != Some(&b'e') {
        let (k, after_key) = read_bytes(buf, p)?;
        let end = skip_value(buf, after_key)?;
        if &buf[k] == key {
            return Ok(after_key..end);
        }
        p = end;
    }
    Err(BencodeError::MissingKey(String::from_utf8_lossy(key).into_owned()))
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
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut raw = b"d4:info".to_vec();
        raw.extend(std::iter::repeat_n(b'l', 100_000));
        assert_eq!(dict_value_span(&raw, b"info"), Err(BencodeError::TooDeep));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let _ = dict_value_span(&bytes, b"info");
            let _ = skip_value(&bytes, 0);
        }
    }
}
