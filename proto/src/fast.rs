//! BEP 6, the fast extension: the allowed-fast set, the pieces a peer may
//! request from us while we choke it. It is a function of the peer's
//! address (its /24) and the torrent, so every client computes the same set
//! and a peer cannot widen it by reconnecting from a neighbouring address.

use std::net::{IpAddr, Ipv4Addr};

use sha1::{Digest, Sha1};

/// Pieces in the set we grant (libtorrent grants 5; the BEP's example 7 and 9).
pub const ALLOWED_FAST: usize = 10;

/// The first `k` pieces of the allowed-fast set of a peer at `ip` for a
/// torrent of `pieces` pieces (BEP 6's canonical algorithm). For an IPv6
/// peer the set is taken of its mapped IPv4 form, or none (BEP 6 defines
/// only IPv4).
pub fn allowed_fast_set(ip: IpAddr, info_hash: &[u8; 20], pieces: u32, k: usize) -> Vec<u32> {
    let ip: Ipv4Addr = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return Vec::new(),
        },
    };
    let k = k.min(pieces as usize);
    let mut out: Vec<u32> = Vec::with_capacity(k);
    let masked = u32::from(ip) & 0xFFFF_FF00;
    let mut x: Vec<u8> = masked.to_be_bytes().to_vec();
    x.extend_from_slice(info_hash);
    while out.len() < k {
        let digest: [u8; 20] = Sha1::digest(&x).into();
        for chunk in digest.chunks_exact(4) {
            if out.len() >= k {
                break;
            }
            let index = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) % pieces;
            if !out.contains(&index) {
                out.push(index);
            }
        }
        x = digest.to_vec();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bep_6_test_vectors() {
        let hash = [0xaa; 20];
        let ip: IpAddr = "80.4.4.200".parse().unwrap();
        assert_eq!(allowed_fast_set(ip, &hash, 1313, 7), vec![1059, 431, 808, 1217, 287, 376, 1188]);
        assert_eq!(allowed_fast_set(ip, &hash, 1313, 9), vec![1059, 431, 808, 1217, 287, 376, 1188, 353, 508]);
        // The same /24 gets the same set.
        assert_eq!(allowed_fast_set("80.4.4.1".parse().unwrap(), &hash, 1313, 9), allowed_fast_set(ip, &hash, 1313, 9));
    }

    #[test]
    fn small_torrents_and_ipv6() {
        let hash = [1; 20];
        let ip: IpAddr = "127.0.0.5".parse().unwrap();
        let mut all = allowed_fast_set(ip, &hash, 3, ALLOWED_FAST);
        all.sort();
        assert_eq!(all, vec![0, 1, 2], "at most every piece, each once");
        assert!(allowed_fast_set(ip, &hash, 0, ALLOWED_FAST).is_empty());
        assert!(allowed_fast_set("::1".parse().unwrap(), &hash, 100, 5).is_empty());
        assert_eq!(allowed_fast_set("::ffff:127.0.0.5".parse().unwrap(), &hash, 100, 5), allowed_fast_set(ip, &hash, 100, 5));
    }
}
