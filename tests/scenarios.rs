//! The course project's scenarios, driven through the blocking library face
//! in an in-process world (built-in tracker, peers on their own loopback
//! addresses with rate caps). Rates are the course's kB/s times `SCALE`, so
//! each scenario runs in seconds with the same ratios.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ccfd_bt::api::{ApiError, Peer};
use ccfd_bt::world::World;
use ccfd_proto::metainfo::InfoHash;

/// Speed-up over the course's rates.
const SCALE: u64 = 4;

/// `kb` course kB/s, scaled, in bytes per second.
fn kbps(kb: u64) -> Option<u64> {
    Some(kb * 1000 * SCALE)
}

fn payload(len: usize, seed: u64) -> Vec<u8> {
    ccfd_bt::world::pseudo_random_bytes(len, seed)
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

#[test]
fn complex_churn_cancel_and_closes_while_transfers_run() {
    let tmp = tempfile::tempdir().unwrap();
    let w = world(2);
    let (path, data) = file(tmp.path(), "big.bin", 2_000_000);
    let a = w.peer(kbps(200), kbps(50)).unwrap();
    let id = a.register(&path).unwrap();
    let b = w.peer(kbps(50), kbps(100)).unwrap();
    let c = w.peer(kbps(100), kbps(50)).unwrap();
    let d = w.peer(kbps(70), kbps(40)).unwrap();
    let e = w.peer(kbps(200), kbps(700)).unwrap();
    let f = w.peer(kbps(50), kbps(100)).unwrap();
    let g = w.peer(kbps(100), kbps(60)).unwrap();
    std::thread::scope(|scope| {
        let (data, id) = (&data, &id);
        let leaving: Vec<_> = [&b, &d].into_iter().map(|p| scope.spawn(move || p.download(id))).collect();
        let c_done = scope.spawn(|| c.download(id));
        let e_done = scope.spawn(|| e.download(id));
        // F and G join the swarm later, when they start downloading.
        std::thread::sleep(Duration::from_millis(500));
        let f_done = scope.spawn(|| f.download(id));
        let g_done = scope.spawn(|| g.download(id));
        // The origin leaves once the fastest leecher holds a full copy.
        assert_eq!(&e_done.join().unwrap().unwrap(), data);
        a.cancel(id).unwrap();
        assert!(matches!(a.cancel(id), Err(ApiError::Unknown(_))));
        std::thread::sleep(Duration::from_millis(300));
        b.close();
        std::thread::sleep(Duration::from_millis(300));
        d.close();
        for left in leaving {
            // B and D either finished before they left or were stopped by close().
            match left.join().unwrap() {
                Ok(bytes) => assert_eq!(&bytes, data),
                Err(err) => assert!(matches!(err, ApiError::Closed), "{err}"),
            }
        }
        assert_eq!(&c_done.join().unwrap().unwrap(), data);
        assert_eq!(&f_done.join().unwrap().unwrap(), data, "F finishes after A, B and D left");
        assert_eq!(&g_done.join().unwrap().unwrap(), data, "G finishes after A, B and D left");
    });
}

#[test]
fn low_upload_origin_the_others_trade_and_finish_together() {
    let tmp = tempfile::tempdir().unwrap();
    let w = world(3);
    let (path, data) = file(tmp.path(), "origin.bin", 600_000);
    let a = w.peer(kbps(25), None).unwrap();
    let id = a.register(&path).unwrap();
    let peers: Vec<Peer> = (0..3).map(|_| w.peer(kbps(500), kbps(500)).unwrap()).collect();
    let start = Instant::now();
    let times: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = peers
            .iter()
            .map(|p| {
                scope.spawn(|| {
                    assert_eq!(p.download(&id).unwrap(), data);
                    start.elapsed().as_secs_f64()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (first, last) = times.iter().fold((f64::MAX, 0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    let origin_sent = a.stats(&id).unwrap().uploaded;
    println!("finish times {times:?} s; origin uploaded {origin_sent} bytes for a {} byte file", data.len());
    // A alone needs len / rate seconds to send one copy; the others finish
    // within a small spread because they trade what each got from A.
    assert!(last - first < 0.2 * last + 0.5, "spread {first:.2}..{last:.2} s");
    // Super-seeding: each piece leaves the origin about once.
    assert!(origin_sent < data.len() as u64 * 6 / 5, "the origin sent {origin_sent}: more than 1.2 copies");
}

/// Four clients fetching from one plain server that uploads at `rate` bytes
/// per second in total (round robin), the client-server baseline.
fn client_server_seconds(data: &[u8], rate: u64, clients: usize) -> f64 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.40.4.100:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let start = Instant::now();
    std::thread::scope(|scope| {
        let server = scope.spawn(|| {
            let mut conns: Vec<_> = (0..clients).map(|_| listener.accept().unwrap().0).collect();
            let chunk = 16 * 1024;
            let mut sent = 0usize;
            for off in (0..data.len()).step_by(chunk) {
                for c in &mut conns {
                    let end = (off + chunk).min(data.len());
                    c.write_all(&data[off..end]).unwrap();
                    sent += end - off;
                    // Pace to the upload rate.
                    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
        });
        let readers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(move || {
                    let mut got = Vec::new();
                    std::net::TcpStream::connect(addr).unwrap().read_to_end(&mut got).unwrap();
                    got.len()
                })
            })
            .collect();
        server.join().unwrap();
        for r in readers {
            assert_eq!(r.join().unwrap(), data.len());
        }
    });
    start.elapsed().as_secs_f64()
}

#[test]
fn p2p_beats_client_server_with_the_same_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let w = world(4);
    let (path, data) = file(tmp.path(), "shared.bin", 400_000);
    let rate = kbps(100).unwrap();
    let cs = client_server_seconds(&data, rate, 4);
    let a = w.peer(Some(rate), Some(rate)).unwrap();
    let id = a.register(&path).unwrap();
    let peers: Vec<Peer> = (0..4).map(|_| w.peer(Some(rate), Some(rate)).unwrap()).collect();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for h in peers.iter().map(|p| scope.spawn(|| p.download(&id).unwrap())).collect::<Vec<_>>() {
            assert_eq!(h.join().unwrap(), data);
        }
    });
    let p2p = start.elapsed().as_secs_f64();
    println!("client-server {cs:.2} s, p2p {p2p:.2} s ({:.1}x faster)", cs / p2p);
    assert!(p2p < 0.6 * cs, "p2p {p2p:.2} s is not clearly faster than client-server {cs:.2} s");
}
