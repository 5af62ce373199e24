//! The course project's scenarios, driven through the blocking library face
//! in an in-process world (built-in tracker, peers on their own loopback
//! addresses with rate caps). Rates are the course's kB/s times `SCALE`, so
//! each scenario runs in seconds with the same ratios.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ccfd_bt::api::{ApiError, Peer};
use ccfd_bt::metainfo::InfoHash;
use ccfd_bt::world::World;

/// Speed-up over the course's rates.
const SCALE: u64 = 4;

/// `kb` course kB/s, scaled, in bytes per second.
fn kbps(kb: u64) -> Option<u64> {
    Some(kb * 1000 * SCALE)
}

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A file of `len` bytes in a fresh folder.
fn file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let data = payload(len, len as u64);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn world(b: u8) -> World {
    let mut w = World::new(40, b).expect("start the world");
    w.options.download_timeout = Duration::from_secs(120);
    w
}

/// Bytes `peer` received for `id` from each address.
fn sources(peer: &Peer, id: &InfoHash) -> Vec<(std::net::SocketAddr, u64)> {
    peer.stats(id).map(|s| s.bytes_from.into_iter().collect()).unwrap_or_default()
}

#[test]
fn simple_a_registers_b_downloads_a_leaves_c_downloads_from_b() {
    let tmp = tempfile::tempdir().unwrap();
    let w = world(1);
    let (path, data) = file(tmp.path(), "course.bin", 148_539);
    let a = w.peer(kbps(100), kbps(100)).unwrap();
    let b = w.peer(kbps(100), kbps(100)).unwrap();
    let c = w.peer(kbps(100), kbps(100)).unwrap();
    let id = a.register(&path).unwrap();
    assert_eq!(b.download(&id).unwrap(), data);
    a.close();
    assert!(matches!(a.download(&id), Err(ApiError::Closed)));
    assert_eq!(c.download(&id).unwrap(), data);
    let from = sources(&c, &id);
    assert_eq!(from, vec![(b.listen_addr(), data.len() as u64)], "C got everything from B");
}
