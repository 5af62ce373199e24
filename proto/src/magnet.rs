//! Magnet links (BEP 9) and bare info-hashes: a torrent named by its hash.

use std::net::SocketAddr;

use crate::metainfo::InfoHash;

/// Why a string is not a magnet link or an info-hash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a magnet link or info-hash: {0}")]
pub struct MagnetError(pub String);

/// What a magnet link (or bare info-hash) tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    pub name: Option<String>,
    pub trackers: Vec<String>,
    /// `x.pe` peer addresses (BEP 9).
    pub peers: Vec<SocketAddr>,
}

impl Magnet {
    /// Parses `magnet:?xt=urn:btih:<hex or base32>&dn=..&tr=..&x.pe=..`, or a
    /// bare 40-digit hex / 32-letter base32 info-hash.
    pub fn parse(s: &str) -> Result<Magnet, MagnetError> {
        let bad = || MagnetError(s.chars().take(80).collect());
        if !s.starts_with("magnet:") {
            let info_hash = parse_btih(s).ok_or_else(bad)?;
            return Ok(Magnet { info_hash, name: None, trackers: Vec::new(), peers: Vec::new() });
        }
        let url = url::Url::parse(s).map_err(|_| bad())?;
        let (mut info_hash, mut name, mut trackers, mut peers) = (None, None, Vec::new(), Vec::new());
        for (k, v) in url.query_pairs() {
            match &*k {
                "xt" => {
                    if let Some(h) = v.strip_prefix("urn:btih:").and_then(parse_btih) {
                        info_hash = Some(h);
                    }
                }
                "dn" => name = Some(v.into_owned()),
                "tr" => trackers.push(v.into_owned()),
                "x.pe" => peers.extend(v.parse::<SocketAddr>()),
                _ => {}
            }
        }
        Ok(Magnet { info_hash: info_hash.ok_or_else(bad)?, name, trackers, peers })
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
        for bad in ["magnet:?dn=x", "magnet:?xt=urn:btih:zz", "c12fe1", "magnet:?xt=urn:sha1:c12fe1c06bba254a9dc9f519b335aa7c1367a88a"] {
            assert!(Magnet::parse(bad).is_err(), "{bad}");
        }
    }
}
