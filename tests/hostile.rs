//! Hostile bencode through every real entry point: a peer's extended
//! handshake, an HTTP tracker's reply, metadata fetched for a magnet link,
//! and a .torrent file. Each carries a list nested far deeper than any
//! recursive decoder's stack allows; the process must refuse it, say so,
//! and keep serving (before the guard, one such message aborted the whole
//! process with a stack overflow).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_same_file, ccfd, ccfd_download, payload, test_dir, wait_port, Net, BIN};
use sha1::{Digest, Sha1};

/// `depth` lists inside each other.
fn deep_list(depth: usize) -> Vec<u8> {
    let mut out = vec![b'l'; depth];
    out.extend(std::iter::repeat_n(b'e', depth));
    out
}

/// One length-prefixed peer-wire frame.
fn frame(id: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(id);
    out.extend_from_slice(body);
    out
}

/// Our side of a BEP 3 handshake with the extension bit (BEP 10) set.
fn handshake(info_hash: &[u8; 20], peer_id: &[u8; 20]) -> Vec<u8> {
    let mut out = vec![19];
    out.extend_from_slice(b"BitTorrent protocol");
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0]);
    out.extend_from_slice(info_hash);
    out.extend_from_slice(peer_id);
    out
}

/// Reads one frame: (id, body); `None` when the connection closed.
fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    assert!(len <= 1 << 20, "frame of {len} bytes");
    if len == 0 {
        return Some((255, Vec::new()));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    let id = body.remove(0);
    Some((id, body))
}

/// A seed of a 300 kB payload under `dir`, through `tracker`.
struct Seeded {
    torrent: std::path::PathBuf,
    content: std::path::PathBuf,
    info_hash: [u8; 20],
}

fn seeded(dir: &Path, tracker: &str) -> Seeded {
    std::fs::create_dir_all(dir.join("seed")).unwrap();
    let content = dir.join("seed/film.bin");
    std::fs::write(&content, payload(300_000, 17)).unwrap();
    let torrent = dir.join("film.torrent");
    let hex = common::create_torrent(&content, &torrent, &[tracker.to_string()], 32768);
    let mut info_hash = [0u8; 20];
    for (i, b) in info_hash.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    Seeded { torrent, content, info_hash }
}

#[test]
fn a_deeply_nested_extended_handshake_drops_that_peer_and_the_seed_serves_on() {
    let dir = test_dir();
    let net = Net::new(80);
    let tracker_addr = net.addr(1, 6969);
    let _tracker = ccfd(dir.path(), "tracker", &["tracker", "--http", &tracker_addr]);
    wait_port(&tracker_addr, Duration::from_secs(10));
    let s = seeded(dir.path(), &format!("http://{tracker_addr}/announce"));
    let seed_addr = net.addr(2, 7000);
    let data = dir.path().join("seed").display().to_string();
    let mut seed =
        ccfd(dir.path(), "seed", &["seed", s.torrent.to_str().unwrap(), "--data", &data, "--bind", &net.ip(2), "--port", "7000"]);
    wait_port(&seed_addr, Duration::from_secs(10));

    // The attacker: a real handshake, then one extended handshake whose
    // `ccfd` value is a list nested 20,000 deep (40 kB, well inside the
    // 1 MiB frame bound).
    let mut attacker = TcpStream::connect(&seed_addr).unwrap();
    attacker.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    attacker.write_all(&handshake(&s.info_hash, b"-XX0001-attacker0001")).unwrap();
    let mut theirs = [0u8; 68];
    attacker.read_exact(&mut theirs).unwrap();
    assert_eq!(&theirs[28..48], &s.info_hash);
    let mut ext = b"d4:ccfd".to_vec();
    ext.extend(deep_list(20_000));
    ext.extend_from_slice(b"1:md11:ut_metadatai3eee");
    let mut body = vec![0u8];
    body.extend_from_slice(&ext);
    attacker.write_all(&frame(20, &body)).unwrap();
    // The seed hangs up on us: everything it sends before that is ordinary.
    let started = Instant::now();
    while read_frame(&mut attacker).is_some() {
        assert!(started.elapsed() < Duration::from_secs(10), "the seed kept the hostile peer");
    }
    assert!(seed.exited().is_none(), "the seed died: {}", seed.log_text());

    // And it still serves: a download through the tracker completes byte for byte.
    let out = dir.path().join("out");
    let summary = ccfd_download(
        dir.path(),
        "leecher",
        &[s.torrent.to_str().unwrap(), "-o", out.to_str().unwrap(), "--bind", &net.ip(3), "--port", "0"],
        Duration::from_secs(60),
    );
    assert_eq!(summary["bytes"], 300_000);
    assert_same_file(&s.content, &out.join("film.bin"));
    assert!(seed.exited().is_none(), "the seed died: {}", seed.log_text());
}

#[test]
fn an_http_tracker_reply_nested_deep_is_rejected_and_the_download_goes_on() {
    let dir = test_dir();
    let net = Net::new(81);
    // A tracker that answers every announce with a valid-looking reply
    // whose `peers` is a list nested 50,000 deep.
    let listener = TcpListener::bind(net.addr(1, 6969)).unwrap();
    let tracker_addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let (answered, stop) = (answered.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reply = b"d8:intervali60e5:peers".to_vec();
            reply.extend(deep_list(50_000));
            reply.push(b'e');
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", reply.len());
                let _ = conn.write_all(&reply);
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let s = seeded(dir.path(), &format!("http://{tracker_addr}/announce"));
    let seed_addr = net.addr(2, 7000);
    let data = dir.path().join("seed").display().to_string();
    let mut seed =
        ccfd(dir.path(), "seed", &["seed", s.torrent.to_str().unwrap(), "--data", &data, "--bind", &net.ip(2), "--port", "7000"]);
    wait_port(&seed_addr, Duration::from_secs(10));
    let out = dir.path().join("out");
    let summary = ccfd_download(
        dir.path(),
        "leecher",
        // Capped (3 s for 300 kB): over plain loopback TCP the download
        // would end before the tracker's reply is read.
        &[
            s.torrent.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--bind",
            &net.ip(3),
            "--port",
            "0",
            "--peer",
            &seed_addr,
            "--max-download-rate",
            "100",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(summary["bytes"], 300_000);
    assert_same_file(&s.content, &out.join("film.bin"));
    assert!(answered.load(std::sync::atomic::Ordering::SeqCst) >= 2, "both clients asked the hostile tracker");
    for log in ["seed.log", "leecher.log"] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
        assert!(text.contains("nested deeper than 64"), "{log} says why the reply was refused:\n{text}");
    }
    assert!(seed.exited().is_none(), "the seed died: {}", seed.log_text());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    server.join().unwrap();
}

/// A peer that serves `info` (whatever it is) over ut_metadata to whoever
/// asks for the torrent whose info-hash is SHA-1(info).
fn metadata_peer(listener: TcpListener, info: Vec<u8>) {
    let hash: [u8; 20] = Sha1::digest(&info).into();
    let Ok((mut conn, _)) = listener.accept() else { return };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
    let mut theirs = [0u8; 68];
    if conn.read_exact(&mut theirs).is_err() || theirs[28..48] != hash {
        return;
    }
    let _ = conn.write_all(&handshake(&hash, b"-XX0001-metadata0001"));
    let mut ext = b"d1:md11:ut_metadatai1ee13:metadata_sizei".to_vec();
    ext.extend_from_slice(format!("{}e", info.len()).as_bytes());
    ext.push(b'e');
    let mut body = vec![0u8];
    body.extend_from_slice(&ext);
    let _ = conn.write_all(&frame(20, &body));
    // Their ut_metadata id, from their extended handshake; then answer requests.
    let mut their_id = None;
    while let Some((id, body)) = read_frame(&mut conn) {
        if id != 20 || body.is_empty() {
            continue;
        }
        let payload = &body[1..];
        if body[0] == 0 {
            let text = String::from_utf8_lossy(payload);
            let at = text.find("11:ut_metadatai").map(|i| i + 15);
            their_id = at.and_then(|i| text[i..].split('e').next()?.parse::<u8>().ok());
            continue;
        }
        let Some(reply_id) = their_id else { continue };
        let text = String::from_utf8_lossy(payload);
        let Some(piece) = text.find("5:piecei").and_then(|i| text[i + 8..].split('e').next()?.parse::<usize>().ok()) else { continue };
        let start = piece * 16384;
        let end = (start + 16384).min(info.len());
        let mut reply = vec![reply_id];
        reply.extend_from_slice(format!("d8:msg_typei1e5:piecei{piece}e10:total_sizei{}ee", info.len()).as_bytes());
        reply.extend_from_slice(&info[start..end]);
        if conn.write_all(&frame(20, &reply)).is_err() {
            return;
        }
    }
}

#[test]
fn a_magnet_whose_metadata_nests_deep_fails_with_a_clear_error() {
    let dir = test_dir();
    let net = Net::new(82);
    // The magnet's author chose the hash: of an "info dictionary" with a
    // list 100,000 deep (200 kB) after its name.
    let mut info = b"d4:name4:film4:zzzz".to_vec();
    info.extend(deep_list(100_000));
    info.push(b'e');
    let hash: [u8; 20] = Sha1::digest(&info).into();
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let listener = TcpListener::bind(net.addr(1, 7000)).unwrap();
    let peer_addr = listener.local_addr().unwrap().to_string();
    let peer = std::thread::spawn(move || metadata_peer(listener, info));
    let out = dir.path().join("out");
    let output = Command::new(BIN)
        .args(["download", &format!("magnet:?xt=urn:btih:{hex}"), "--peer", &peer_addr, "-o", out.to_str().unwrap()])
        .args(["--bind", &net.ip(2), "--port", "0", "--metadata-timeout", "30", "--no-dht"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "a clean error exit, not an abort: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("error: metadata is not a valid info dictionary") && last.contains("nested deeper than 64"), "{err}");
    peer.join().unwrap();
}

#[test]
fn a_torrent_file_nested_deep_is_refused_in_one_line() {
    let dir = test_dir();
    // A valid info dictionary, then a key whose value nests 100,000 deep.
    let mut raw = b"d4:infod6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:".to_vec();
    raw.extend_from_slice(&[7u8; 20]);
    raw.extend_from_slice(b"e4:zzzz");
    raw.extend(deep_list(100_000));
    raw.push(b'e');
    let path = dir.path().join("deep.torrent");
    std::fs::write(&path, &raw).unwrap();
    let output = Command::new(BIN).args(["download", path.to_str().unwrap(), "--port", "0", "-o"]).arg(dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("malformed torrent: bencode nested deeper than 64 levels"), "{err}");
}
