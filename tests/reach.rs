//! Reaching the peers public swarms are made of, against python3-libtorrent
//! on loopback: uTP-only peers both ways, a peer that forces encryption,
//! our own `--encryption require`, the fast extension seen from a raw
//! peer, coded cooperation over uTP and over an encrypted connection, and
//! hostile input on the new paths (half an encrypted handshake, a flood of
//! garbage uTP datagrams, packets for connections that do not exist).

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{assert_same_file, ccfd, ccfd_download, create_torrent, libtorrent, payload, test_dir, wait_port, wait_until, Net};

struct Content {
    file: PathBuf,
    torrent: PathBuf,
    info_hash: [u8; 20],
}

fn content(dir: &Path, size: usize, piece: u64) -> Content {
    std::fs::create_dir_all(dir.join("seed")).unwrap();
    let file = dir.join("seed/film.bin");
    std::fs::write(&file, payload(size, 29)).unwrap();
    let torrent = dir.join("film.torrent");
    let hex = create_torrent(&file, &torrent, &[], piece);
    let mut info_hash = [0u8; 20];
    for (i, b) in info_hash.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    Content { file, torrent, info_hash }
}

fn data_dir(dir: &Path) -> String {
    dir.join("seed").display().to_string()
}

/// A libtorrent seed at host 2 started with `lt_flag`; ccfd-bt at host 3,
/// dialing it with `extra` flags, downloads the file byte for byte and
/// credits the seed with bytes.
fn ccfd_leeches_from_a_libtorrent_seed(dir: &Path, net: &Net, c: &Content, lt_flag: &str, extra: &[&str]) {
    let seed_addr = net.addr(2, 7000);
    let _seed = libtorrent(dir, "lt-seed", "seed", &c.torrent, &dir.join("seed"), &seed_addr, &[lt_flag.into()]);
    std::thread::sleep(Duration::from_secs(1));
    let (out, ip) = (dir.join("out"), net.ip(3));
    let mut args = vec![c.torrent.to_str().unwrap(), "-o", out.to_str().unwrap(), "--bind", &ip, "--port", "0", "--peer", &seed_addr];
    args.extend(extra);
    let summary = ccfd_download(dir, "leech", &args, Duration::from_secs(90));
    assert_same_file(&c.file, &out.join("film.bin"));
    assert!(summary["bytes_from"][&seed_addr].as_u64().unwrap_or(0) > 0, "{summary}");
}

/// A libtorrent leecher at host 5 started with `lt_flag` downloads the
/// file byte for byte from our seed at `ours`.
fn a_libtorrent_leecher_downloads_from(dir: &Path, net: &Net, c: &Content, ours: &str, lt_flag: &str) {
    let save = dir.join("lt-out");
    std::fs::create_dir_all(&save).unwrap();
    let mut lt = libtorrent(dir, "lt-leech", "download", &c.torrent, &save, &net.addr(5, 7000), &[ours.to_string(), lt_flag.into()]);
    assert!(lt.wait(Duration::from_secs(90)).success(), "{}", lt.log_text());
    assert_same_file(&c.file, &save.join("film.bin"));
}

#[test]
fn a_utp_only_libtorrent_seed_and_leecher() {
    let dir = test_dir();
    let net = Net::new(100);
    let c = content(dir.path(), 2_000_000, 65536);
    ccfd_leeches_from_a_libtorrent_seed(dir.path(), &net, &c, "--utp-only", &[]);

    // The other way: a uTP-only libtorrent leecher downloads from our seed.
    let ours = net.addr(4, 7001);
    let _s = ccfd(
        dir.path(),
        "seed",
        &["seed", c.torrent.to_str().unwrap(), "--data", &data_dir(dir.path()), "--bind", &net.ip(4), "--port", "7001"],
    );
    wait_port(&ours, Duration::from_secs(10));
    a_libtorrent_leecher_downloads_from(dir.path(), &net, &c, &ours, "--utp-only");
}

#[test]
fn a_libtorrent_seed_that_forces_encryption_and_our_require_mode() {
    let dir = test_dir();
    let net = Net::new(101);
    let c = content(dir.path(), 1_500_000, 65536);
    ccfd_leeches_from_a_libtorrent_seed(dir.path(), &net, &c, "--encrypted", &["--no-utp"]);

    // Our seed requiring encryption: a plain client gets nothing, an encrypted one everything.
    let ours = net.addr(4, 7001);
    let _s = ccfd(
        dir.path(),
        "seed-require",
        &[
            "seed",
            c.torrent.to_str().unwrap(),
            "--data",
            &data_dir(dir.path()),
            "--bind",
            &net.ip(4),
            "--port",
            "7001",
            "--encryption",
            "require",
        ],
    );
    wait_port(&ours, Duration::from_secs(10));
    let mut plain = TcpStream::connect(&ours).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0; 8]);
    hs.extend_from_slice(&c.info_hash);
    hs.extend_from_slice(b"-XX0001-plainclient1");
    plain.write_all(&hs).unwrap();
    let mut buf = [0u8; 68];
    assert!(!matches!(plain.read(&mut buf), Ok(n) if n > 0), "a plain handshake gets no answer");
    a_libtorrent_leecher_downloads_from(dir.path(), &net, &c, &ours, "--encrypted");
    let out2 = dir.path().join("out2");
    let summary = ccfd_download(
        dir.path(),
        "leech-prefer",
        &[c.torrent.to_str().unwrap(), "-o", out2.to_str().unwrap(), "--bind", &net.ip(6), "--port", "0", "--peer", &ours],
        Duration::from_secs(60),
    );
    assert_same_file(&c.file, &out2.join("film.bin"));
    let encryption = summary["peers"].as_array().and_then(|p| p.first()).map(|p| p["encryption"].clone());
    assert!(encryption.is_none() || encryption == Some("rc4".into()), "{summary}");
}

/// Frames from a raw connection until `until` holds or time runs out.
fn read_frames(s: &mut TcpStream, mut until: impl FnMut(u8, &[u8]) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return false;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        if s.read_exact(&mut body).is_err() {
            return false;
        }
        if !body.is_empty() && until(body[0], &body[1..]) {
            return true;
        }
    }
    false
}

#[test]
fn the_fast_extension_from_a_raw_peer() {
    let dir = test_dir();
    let net = Net::new(102);
    let c = content(dir.path(), 640_000, 16384);
    let ours = net.addr(2, 7000);
    // Not super-seeding (a first leecher alone is otherwise shown pieces one by one for a second).
    let data = data_dir(dir.path());
    let args = ["seed", c.torrent.to_str().unwrap(), "--data", &data, "--bind", &net.ip(2), "--port", "7000", "--super-seed", "never"];
    let _s = ccfd(dir.path(), "seed", &args);
    wait_port(&ours, Duration::from_secs(10));
    let mut s = TcpStream::connect(&ours).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x04]);
    hs.extend_from_slice(&c.info_hash);
    hs.extend_from_slice(b"-XX0001-fastpeer0001");
    s.write_all(&hs).unwrap();
    let mut theirs = [0u8; 68];
    s.read_exact(&mut theirs).unwrap();
    assert_ne!(theirs[27] & 0x04, 0, "the fast bit");
    // A seed's first message is have_all, then its allowed-fast set.
    let mut first = None;
    let mut allowed = Vec::new();
    read_frames(&mut s, |id, body| {
        first.get_or_insert(id);
        if id == 0x11 {
            allowed.push(u32::from_be_bytes([body[0], body[1], body[2], body[3]]));
        }
        allowed.len() >= 10
    });
    assert_eq!(first, Some(0x0E), "have_all first");
    assert_eq!(allowed.len(), 10, "{allowed:?}");
    // Choked, we ask for an allowed piece and for another: the first is served, the second rejected.
    let other = (0..40u32).find(|p| !allowed.contains(p)).unwrap();
    for piece in [allowed[0], other] {
        let mut req = vec![0, 0, 0, 13, 6];
        req.extend_from_slice(&piece.to_be_bytes());
        req.extend_from_slice(&0u32.to_be_bytes());
        req.extend_from_slice(&16384u32.to_be_bytes());
        s.write_all(&req).unwrap();
    }
    let (mut got_piece, mut got_reject) = (None, None);
    read_frames(&mut s, |id, body| {
        match id {
            7 => got_piece = Some(u32::from_be_bytes([body[0], body[1], body[2], body[3]])),
            0x10 => got_reject = Some(u32::from_be_bytes([body[0], body[1], body[2], body[3]])),
            _ => {}
        }
        got_piece.is_some() && got_reject.is_some()
    });
    assert_eq!(got_piece, Some(allowed[0]), "allowed-fast piece served while choked");
    assert_eq!(got_reject, Some(other), "other piece rejected");
}

/// A libtorrent seed that unchokes nobody still serves each peer its
/// allowed-fast set (libtorrent: 5 pieces, all of a torrent this small):
/// the download completes only if we read its have_all, take the set and
/// request those pieces while choked.
#[test]
fn a_libtorrent_seed_that_chokes_everyone_serves_its_allowed_fast_pieces() {
    let dir = test_dir();
    let net = Net::new(105);
    let c = content(dir.path(), 4 * 65536, 65536);
    let seed_addr = net.addr(2, 7000);
    let _seed = libtorrent(dir.path(), "lt-seed", "seed", &c.torrent, &dir.path().join("seed"), &seed_addr, &["--choke-all".into()]);
    std::thread::sleep(Duration::from_secs(1));
    let out = dir.path().join("out");
    // Debug logs, to see that the seed never unchoked us.
    let mut cmd = std::process::Command::new(common::BIN);
    let args = ["download", c.torrent.to_str().unwrap(), "-o", out.to_str().unwrap(), "--bind", &net.ip(3), "--port", "0"];
    cmd.args(common::local_only(&args)).args(["--peer", &seed_addr, "--no-coded"]).env("RUST_LOG", "ccfd_bt=debug");
    let mut leech = common::Proc::spawn("leech", &mut cmd, &dir.path().join("leech.log"));
    assert!(leech.wait(Duration::from_secs(60)).success(), "{}", leech.log_text());
    assert_same_file(&c.file, &out.join("film.bin"));
    let log = std::fs::read_to_string(&leech.log).unwrap();
    assert!(log.contains("peer connected"), "{log}");
    assert!(!log.contains("unchoked by peer"), "the seed was to choke us throughout:\n{log}");
}

#[test]
fn coded_cooperation_over_utp_and_over_encryption() {
    let dir = test_dir();
    let net = Net::new(103);
    let c = content(dir.path(), 3_000_000, 65536);
    let data = data_dir(dir.path());
    let torrent = c.torrent.display().to_string();
    for (round, flags, want) in
        [(0u8, vec!["--no-tcp"], ("utp", "plain")), (1, vec!["--encryption", "require", "--no-utp", "--coded"], ("tcp", "rc4"))]
    {
        let (seed_ip, port) = (net.ip(10 + round), (7000 + u16::from(round)).to_string());
        let ours = format!("{seed_ip}:{port}");
        let mut args = vec!["seed", torrent.as_str(), "--data", data.as_str(), "--bind", seed_ip.as_str(), "--port", port.as_str()];
        args.extend(&flags);
        let _s = ccfd(dir.path(), &format!("seed-{round}"), &args);
        std::thread::sleep(Duration::from_millis(500));
        let out = dir.path().join(format!("out-{round}"));
        let (out_s, leech_ip) = (out.display().to_string(), net.ip(20 + round));
        let mut largs = vec![torrent.as_str(), "-o", out_s.as_str(), "--bind", leech_ip.as_str(), "--port", "0", "--peer", ours.as_str()];
        largs.extend(&flags);
        let summary = ccfd_download(dir.path(), &format!("leech-{round}"), &largs, Duration::from_secs(90));
        assert_same_file(&c.file, &out.join("film.bin"));
        assert!(summary["coded_bytes"].as_u64().unwrap_or(0) > 0, "round {round}: {summary}");
        let via = &summary["peers"][0];
        assert!(via.is_null() || (via["transport"] == want.0 && via["encryption"] == want.1), "round {round}: {summary}");
    }
}

#[test]
fn half_an_encrypted_handshake_and_garbage_utp_disturb_nothing() {
    let dir = test_dir();
    let net = Net::new(104);
    let c = content(dir.path(), 1_000_000, 65536);
    let ours = net.addr(2, 7000);
    let mut seed = ccfd(
        dir.path(),
        "seed",
        &["seed", c.torrent.to_str().unwrap(), "--data", &data_dir(dir.path()), "--bind", &net.ip(2), "--port", "7000"],
    );
    wait_port(&ours, Duration::from_secs(10));
    // Fifty strangers each send 60 random bytes (half a key) and go quiet.
    let mut stalled = Vec::new();
    for i in 0..50u8 {
        let mut s = TcpStream::connect(&ours).unwrap();
        let junk: Vec<u8> = (0..60u8).map(|b| b.wrapping_mul(i).wrapping_add(7)).collect();
        let _ = s.write_all(&junk);
        stalled.push(s);
    }
    // 20,000 datagrams that look like uTP: SYNs from many ports, states for
    // connections that do not exist, and truncated headers.
    let flood = UdpSocket::bind(net.addr(3, 0)).unwrap();
    for i in 0..20_000u32 {
        let mut d = vec![0u8; 20 + (i % 64) as usize];
        d[0] = [0x41, 0x21, 0x01, 0x11, 0x31][(i % 5) as usize];
        d[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        let _ = flood.send_to(&d[..if i % 7 == 0 { 19 } else { d.len() }], &ours);
    }
    let out = dir.path().join("out");
    let started = Instant::now();
    ccfd_download(
        dir.path(),
        "leech",
        &[c.torrent.to_str().unwrap(), "-o", out.to_str().unwrap(), "--bind", &net.ip(4), "--port", "0", "--peer", &ours],
        Duration::from_secs(60),
    );
    assert_same_file(&c.file, &out.join("film.bin"));
    assert!(started.elapsed() < Duration::from_secs(30), "served at once despite the strangers");
    assert!(seed.exited().is_none(), "{}", seed.log_text());
    // Bounded: the seed's memory stays small (the flood opened at most a capped number of uTP connections).
    let rss = std::fs::read_to_string(format!("/proc/{}/status", seed.pid())).unwrap_or_default();
    let kb: u64 = rss.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
    assert!(kb < 200 * 1024, "seed RSS {kb} kB");
    // Each stalled stranger is hung up on once the handshake's time is up.
    let mut open: Vec<TcpStream> = stalled;
    wait_until("the stalled handshakes to be dropped", Duration::from_secs(40), || {
        open.retain_mut(|s| {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut b = [0u8; 2048];
            match s.read(&mut b) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            }
        });
        open.is_empty()
    });
}
