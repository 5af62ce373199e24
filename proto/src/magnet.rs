//! Magnet links (BEP 9) and bare info-hashes: a torrent named by its hash.

use std::net::SocketAddr;

use crate::metainfo::InfoHash;

/// Why a string is not a usable magnet link or info-hash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MagnetError {
    #[error("not a magnet link or info-hash: {0}")]
    NotMagnet(String),
    #[error("the magnet link names no BitTorrent info-hash (xt=urn:btih:...)")]
    NoHash,
    #[error("the magnet link's info-hash {0:?} is neither 40 hex digits nor 32 base32 letters")]
    BadHash(String),
    #[error("the magnet link's file selection so={0:?} is not a list of indexes and ranges (e.g. 0,2,4-6)")]
    BadSelection(String),
}

/// What a magnet link (or bare info-hash) tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    pub name: Option<String>,
    pub trackers: Vec<String>,
    /// `x.pe` peer addresses (BEP 9).
    pub peers: Vec<SocketAddr>,
    /// BEP 53 `so=`: the file indexes to download (`None`: every file).
    pub select_only: Option<Vec<usize>>,
}

impl Magnet {
    /// Parses `magnet:?xt=urn:btih:<hex or base32>&dn=..&tr=..&x.pe=..`, or a
    /// bare 40-digit hex / 32-letter base32 info-hash.
    pub fn parse(s: &str) -> Result<Magnet, MagnetError> {
        let bad = || MagnetError::NotMagnet(s.chars().take(80).collect());
        if !s.starts_with("magnet:") {
            let info_hash = parse_btih(s).ok_or_else(bad)?;
            return Ok(Magnet { info_hash, name: None, trackers: Vec::new(), peers: Vec::new(), select_only: None });
        }
        let url = url::Url::parse(s).map_err(|_| bad())?;
        let (mut info_hash, mut name, mut trackers, mut peers, mut select_only) = (None, None, Vec::new(), Vec::new(), None);
        for (k, v) in url.query_pairs() {
            match &*k {
                "xt" => {
                    // Other URNs (btmh: v2, sha1:) may sit beside the v1 hash.
                    if let Some(hash) = v.strip_prefix("urn:btih:") {
                        let short = || MagnetError::BadHash(hash.chars().take(64).collect());
                        info_hash = Some(parse_btih(hash).ok_or_else(short)?);
                    }
                }
                "dn" => name = Some(v.into_owned()),
                "tr" => trackers.push(v.into_owned()),
                "x.pe" => peers.extend(v.parse::<SocketAddr>()),
                "so" => select_only = Some(parse_selection(&v).ok_or_else(|| MagnetError::BadSelection(v.chars().take(64).collect()))?),
                _ => {}
            }
        }
        Ok(Magnet { info_hash: info_hash.ok_or(MagnetError::NoHash)?, name, trackers, peers, select_only })
    }

    /// True for strings that name a torrent by hash rather than by file.
    pub fn looks_like(s: &str) -> bool {
        s.starts_with("magnet:") || parse_btih(s).is_some()
    }
}

fn parse_btih(s: &str) -> Option<InfoHash> {
    match s.len() {
        40 => InfoHash::from_hex(s),
        32 => base32_decode(s).map(InfoHash),
        _ => None,
    }
}

/// Largest file index a selection may name (bounds what a link can make us allocate).
const MAX_SELECTED_INDEX: usize = 1 << 20;

/// BEP 53 `so=`: comma-separated indexes and inclusive ranges (`0,2,4-6`),
/// sorted and without repeats.
pub fn parse_selection(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>().ok()?, b.trim().parse::<usize>().ok()?),
            None => {
                let i = part.parse::<usize>().ok()?;
                (i, i)
            }
        };
        if first > last || last > MAX_SELECTED_INDEX {
            return None;
        }
        out.extend(first..=last);
        if out.len() > MAX_SELECTED_INDEX {
            return None;
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// RFC 4648 base32 (upper or lower case, no padding) of exactly 20 bytes.
fn base32_decode(s: &str) -> Option<[u8; 20]> {
    let mut out = [0u8; 20];
    let (mut acc, mut bits, mut n) = (0u64, 0, 0);
    for c in s.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
        }
    }
    (n == 20).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnets_and_bare_hashes_parse() {
        let hex = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{hex}&dn=a%20b&tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce&x.pe=127.0.0.2:6881"))
            .unwrap();
        assert_eq!(m.info_hash.to_hex(), hex);
        assert_eq!(m.name.as_deref(), Some("a b"));
        assert_eq!(m.trackers, vec!["http://127.0.0.1:1/announce"]);
        assert_eq!(m.peers, vec!["127.0.0.2:6881".parse().unwrap()]);
        // The same hash in base32.
        let b32 = Magnet::parse("magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
        assert_eq!(b32.info_hash.to_hex(), hex);
        assert_eq!(Magnet::parse(hex).unwrap().info_hash.to_hex(), hex);
        assert!(Magnet::looks_like(hex) && !Magnet::looks_like("movie.torrent"));
        assert_eq!(m.select_only, None);
        let so = Magnet::parse(&format!("magnet:?xt=urn:btih:{hex}&so=4-6,0,2,5")).unwrap();
        assert_eq!(so.select_only, Some(vec![0, 2, 4, 5, 6]));
        assert_eq!(Magnet::parse("magnet:?dn=x"), Err(MagnetError::NoHash));
        assert!(matches!(Magnet::parse("magnet:?xt=urn:btih:zz"), Err(MagnetError::BadHash(_))));
        for bad in ["x", "1-", "3-1", "a,b", "0-99999999999"] {
            assert!(matches!(Magnet::parse(&format!("magnet:?xt=urn:btih:{hex}&so={bad}")), Err(MagnetError::BadSelection(_))), "{bad}");
        }
        for bad in ["magnet:?dn=x", "magnet:?xt=urn:btih:zz", "c12fe1", "magnet:?xt=urn:sha1:c12fe1c06bba254a9dc9f519b335aa7c1367a88a"] {
            assert!(Magnet::parse(bad).is_err(), "{bad}");
        }
    }
}
