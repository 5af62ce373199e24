//! Finding peers the way public swarms need, against real programs on
//! loopback: a trackerless magnet through a DHT of python3-libtorrent
//! nodes (both directions, and a restart from the saved routing table),
//! peer exchange (both directions), all tracker tiers at once, IPv6, and a
//! private torrent that uses neither DHT nor PEX.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_same_file, ccfd, ccfd_download, create_torrent, libtorrent, payload, test_dir, wait_port, wait_until, Net, Proc, BIN};

/// A payload and two torrents of it with the same info-hash: one naming
/// `trackers`, one naming none.
struct Content {
    file: PathBuf,
    with_trackers: PathBuf,
    trackerless: PathBuf,
    hash: String,
}

fn content(dir: &Path, size: usize, trackers: &[String]) -> Content {
    std::fs::create_dir_all(dir.join("seed")).unwrap();
    let file = dir.join("seed/film.bin");
    std::fs::write(&file, payload(size, 41)).unwrap();
    let with_trackers = dir.join("film.torrent");
    let hash = create_torrent(&file, &with_trackers, trackers, 32768);
    let trackerless = dir.join("film-notracker.torrent");
    assert_eq!(create_torrent(&file, &trackerless, &[], 32768), hash, "trackers are outside the info dictionary");
    Content { file, with_trackers, trackerless, hash }
}

/// The libtorrent DHT (scripts/lt_dht.py), waited on until its nodes know each other.
fn lt_dht(dir: &Path, name: &str, net: &Net, nodes: usize, extra: &[&str]) -> Proc {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lt_dht.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).arg(net.ip(0).trim_end_matches(".0")).arg(nodes.to_string()).args(extra);
    let mut proc = Proc::spawn(name, &mut cmd, &dir.join(format!("{name}.log")));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proc.log_text().contains("ready") {
        assert!(proc.exited().is_none(), "{name} exited: {}", proc.log_text());
        assert!(Instant::now() < deadline, "{name} never formed a DHT: {}", proc.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    proc
}

#[test]
fn a_trackerless_magnet_is_found_through_the_dht_and_the_table_survives_a_restart() {
    let dir = test_dir();
    let net = Net::new(90);
    let c = content(dir.path(), 600_000, &[]);
    let _dht =
        lt_dht(dir.path(), "lt-dht", &net, 6, &["--seed", c.trackerless.to_str().unwrap(), dir.path().join("seed").to_str().unwrap()]);
    let state = dir.path().join("state");
    let magnet = format!("magnet:?xt=urn:btih:{}", c.hash);
    let bootstrap = net.addr(10, 7000);
    let out = dir.path().join("out");
    let started = Instant::now();
    let summary = ccfd_download(
        dir.path(),
        "magnet",
        &[
            &magnet,
            "-o",
            out.to_str().unwrap(),
            "--bind",
            &net.ip(2),
            "--port",
            "0",
            "--dht-bootstrap",
            &bootstrap,
            "--state-dir",
            state.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    eprintln!("trackerless magnet complete in {:.1} s", started.elapsed().as_secs_f64());
    assert_same_file(&c.file, &out.join("film.bin"));
    assert!(summary["peer_sources"]["dht"].as_u64().unwrap_or(0) >= 1, "{summary}");

    // The routing table was saved on exit; a restart whose only bootstrap
    // address is dead still finds the swarm from it.
    let saved = std::fs::read_to_string(state.join("dht.json")).expect("routing table saved");
    assert!(saved.contains(&net.ip(10)) || saved.contains(&net.ip(11)), "{saved}");
    let out2 = dir.path().join("out2");
    ccfd_download(
        dir.path(),
        "magnet-again",
        &[
            &magnet,
            "-o",
            out2.to_str().unwrap(),
            "--bind",
            &net.ip(3),
            "--port",
            "0",
            "--dht-bootstrap",
            &net.addr(250, 9),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_same_file(&c.file, &out2.join("film.bin"));
}

#[test]
fn a_libtorrent_leecher_finds_a_ccfd_seed_through_the_dht() {
    let dir = test_dir();
    let net = Net::new(91);
    let c = content(dir.path(), 600_000, &[]);
    let data = dir.path().join("seed").display().to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["seed", c.trackerless.to_str().unwrap(), "--data", &data, "--bind", &net.ip(3), "--port", "7001"]);
    cmd.args(["--dht-bootstrap", &net.addr(10, 7000), "--state-dir", dir.path().join("state").to_str().unwrap()]);
    cmd.env("RUST_LOG", common::log_filter());
    let mut seed = Proc::spawn("ccfd-seed", &mut cmd, &dir.path().join("ccfd-seed.log"));
    let save = dir.path().join("lt-out");
    std::fs::create_dir_all(&save).unwrap();
    let mut dht = lt_dht(dir.path(), "lt-dht", &net, 6, &["--leech", &c.hash, save.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while dht.exited().is_none() {
        assert!(seed.exited().is_none(), "seed died: {}", seed.log_text());
        assert!(Instant::now() < deadline, "libtorrent never found the seed; seed log:\n{}\nlt log:\n{}", seed.log_text(), dht.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(dht.log_text().contains("done"), "{}", dht.log_text());
    assert_same_file(&c.file, &save.join("film.bin"));
}

#[test]
fn peer_exchange_both_ways_with_libtorrent() {
    let dir = test_dir();
    let net = Net::new(92);
    let tracker_addr = net.addr(1, 6969);
    let _tracker = ccfd(dir.path(), "tracker", &["tracker", "--http", &tracker_addr]);
    wait_port(&tracker_addr, Duration::from_secs(10));
    let c = content(dir.path(), 1_000_000, &[format!("http://{tracker_addr}/announce")]);
    let data = dir.path().join("seed").display().to_string();
    // libtorrent L is listed by the tracker, holds nothing, uploads at a
    // trickle and downloads slowly (so it stays a leecher, connected to S).
    let l_save = dir.path().join("l");
    std::fs::create_dir_all(&l_save).unwrap();
    let trickle: Vec<String> =
        ["--stay", "--report-peers", "--upload-kbps", "2", "--download-kbps", "10"].iter().map(|s| s.to_string()).collect();
    let l = libtorrent(dir.path(), "lt-l", "download", &c.with_trackers, &l_save, &net.addr(2, 7000), &trickle);
    wait_port(&net.addr(2, 7000), Duration::from_secs(10));
    // The seed S announces nowhere; it only dials L.
    let s_addr = net.addr(3, 7001);
    let _s = ccfd(
        dir.path(),
        "seed-s",
        &["seed", c.trackerless.to_str().unwrap(), "--data", &data, "--bind", &net.ip(3), "--port", "7001", "--peer", &net.addr(2, 7000)],
    );
    // libtorrent sends PEX once a minute, the first one at once: D comes
    // once S is L's peer, so that the first one names S.
    wait_until("S connected to L", Duration::from_secs(30), || l.log_text().contains("peers 1"));
    // D knows only the tracker: it meets L there, and hears of S from L's PEX.
    let out = dir.path().join("d");
    let summary = ccfd_download(
        dir.path(),
        "d",
        &[c.with_trackers.to_str().unwrap(), "-o", out.to_str().unwrap(), "--bind", &net.ip(4), "--port", "0"],
        Duration::from_secs(120),
    );
    assert_same_file(&c.file, &out.join("film.bin"));
    assert!(summary["peer_sources"]["pex"].as_u64().unwrap_or(0) >= 1, "learned S from PEX: {summary}");
    assert!(summary["bytes_from"][&s_addr].as_u64().unwrap_or(0) > 0, "downloaded from S: {summary}");

    // The other way: libtorrent L2 knows only C (a ccfd-bt leecher that
    // uploads at 1 kB/s); C's PEX names S2, a seed that announces nowhere.
    // L2 can finish in time only by finding S2.
    let s2_addr = net.addr(5, 7002);
    let _s2 =
        ccfd(dir.path(), "seed-s2", &["seed", c.trackerless.to_str().unwrap(), "--data", &data, "--bind", &net.ip(5), "--port", "7002"]);
    wait_port(&s2_addr, Duration::from_secs(10));
    let c_addr = net.addr(6, 7003);
    let c_out = dir.path().join("c");
    let _c = ccfd(
        dir.path(),
        "peer-c",
        &[
            "download",
            c.trackerless.to_str().unwrap(),
            "-o",
            c_out.to_str().unwrap(),
            "--seed-after",
            "--bind",
            &net.ip(6),
            "--port",
            "7003",
            "--peer",
            &s2_addr,
            "--max-upload-rate",
            "1",
            // Downloads slowly, so it stays S2's peer (two seeds part) while L2 asks.
            "--max-download-rate",
            "5",
        ],
    );
    wait_port(&c_addr, Duration::from_secs(10));
    let l2_save = dir.path().join("l2");
    std::fs::create_dir_all(&l2_save).unwrap();
    let mut l2 = libtorrent(dir.path(), "lt-l2", "download", &c.trackerless, &l2_save, &net.addr(7, 7000), &[c_addr]);
    assert!(l2.wait(Duration::from_secs(90)).success(), "{}", l2.log_text());
    assert_same_file(&c.file, &l2_save.join("film.bin"));
}

#[test]
fn all_tiers_at_once_a_dead_udp_tracker_delays_nothing() {
    let dir = test_dir();
    let net = Net::new(93);
    // Tier 1: a UDP tracker that reads and never answers (BEP 15 retries take 15 s and more).
    let blackhole = UdpSocket::bind(net.addr(1, 6970)).unwrap();
    let tracker_addr = net.addr(1, 6969);
    let _tracker = ccfd(dir.path(), "tracker", &["tracker", "--http", &tracker_addr]);
    wait_port(&tracker_addr, Duration::from_secs(10));
    let c = content(dir.path(), 300_000, &[format!("udp://{}/announce", net.addr(1, 6970)), format!("http://{tracker_addr}/announce")]);
    let data = dir.path().join("seed").display().to_string();
    let _seed =
        ccfd(dir.path(), "seed", &["seed", c.with_trackers.to_str().unwrap(), "--data", &data, "--bind", &net.ip(2), "--port", "7000"]);
    common::wait_until("the seed to announce", Duration::from_secs(10), || common::scrape_seeders(&tracker_addr, &c.hash) >= 1);
    let out = dir.path().join("out");
    let started = Instant::now();
    let summary = ccfd_download(
        dir.path(),
        "leech",
        &[c.with_trackers.to_str().unwrap(), "-o", out.to_str().unwrap(), "--bind", &net.ip(3), "--port", "0"],
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    assert_same_file(&c.file, &out.join("film.bin"));
    // Peers within the first second; the whole download in a few.
    assert!(summary["seconds"].as_f64().unwrap_or(99.0) < 3.0 && took < Duration::from_secs(10), "took {took:?}: {summary}");
    let mut buf = [0u8; 200];
    blackhole.set_nonblocking(true).unwrap();
    assert!(blackhole.recv_from(&mut buf).is_ok(), "the dead tracker was asked too");
}

#[test]
fn an_ipv6_only_libtorrent_seed() {
    let dir = test_dir();
    let c = content(dir.path(), 400_000, &[]);
    let port = 17_000 + (std::process::id() % 1000) as u16;
    let listen = format!("[::1]:{port}");
    let _seed = libtorrent(dir.path(), "lt-seed6", "seed", &c.trackerless, &dir.path().join("seed"), &listen, &[]);
    wait_port(&listen, Duration::from_secs(10));
    let out = dir.path().join("out");
    let summary = ccfd_download(
        dir.path(),
        "leech6",
        &[c.trackerless.to_str().unwrap(), "-o", out.to_str().unwrap(), "--port", "0", "--peer", &listen],
        Duration::from_secs(60),
    );
    assert_same_file(&c.file, &out.join("film.bin"));
    assert!(summary["bytes_from"][&listen].as_u64().unwrap_or(0) > 0, "{summary}");
}

/// Reads our side's BitTorrent handshake and extended handshake as a raw
/// peer, trying again while the client still refuses the torrent (the
/// port listens before the torrent's storage check is done).
fn raw_greeting(addr: &str, info_hash: &[u8; 20]) -> ([u8; 68], Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_raw_greeting(addr, info_hash) {
            Ok(greeting) => return greeting,
            Err(e) if Instant::now() < deadline => {
                eprintln!("raw greeting: {e}; trying again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("no greeting from {addr}: {e}"),
        }
    }
}

fn try_raw_greeting(addr: &str, info_hash: &[u8; 20]) -> std::io::Result<([u8; 68], Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0x01]);
    hs.extend_from_slice(info_hash);
    hs.extend_from_slice(b"-XX0001-privatetest1");
    s.write_all(&hs)?;
    let mut theirs = [0u8; 68];
    s.read_exact(&mut theirs)?;
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let mut body = vec![0u8; u32::from_be_bytes(len).min(1 << 20) as usize];
        s.read_exact(&mut body)?;
        if body.first() == Some(&20) && body.get(1) == Some(&0) {
            return Ok((theirs, body[2..].to_vec()));
        }
    }
}

#[test]
fn a_private_torrent_uses_neither_dht_nor_pex() {
    let dir = test_dir();
    let net = Net::new(94);
    std::fs::create_dir_all(dir.path().join("seed")).unwrap();
    let file = dir.path().join("seed/secret.bin");
    std::fs::write(&file, payload(100_000, 7)).unwrap();
    // A private torrent: `private=1` in the info dictionary (keys sorted).
    let public = dir.path().join("public.torrent");
    create_torrent(&file, &public, &[], 16384);
    let raw = std::fs::read(&public).unwrap();
    let meta = ccfd_proto::metainfo::Metainfo::from_bytes(&raw).unwrap();
    let mut info = meta.info_bytes.clone();
    info.pop();
    info.extend_from_slice(b"7:privatei1ee");
    let mut torrent = b"d4:info".to_vec();
    torrent.extend_from_slice(&info);
    torrent.push(b'e');
    let private = dir.path().join("private.torrent");
    std::fs::write(&private, &torrent).unwrap();
    let private_meta = ccfd_proto::metainfo::Metainfo::from_file(&private).unwrap();
    assert!(private_meta.private);
    // A DHT "node" that counts get_peers for this torrent's hash.
    let dht = UdpSocket::bind(net.addr(1, 7000)).unwrap();
    let data = dir.path().join("seed").display().to_string();
    let seed_addr = net.addr(2, 7001);
    let _seed = ccfd(
        dir.path(),
        "seed",
        &[
            "seed",
            private.to_str().unwrap(),
            "--data",
            &data,
            "--bind",
            &net.ip(2),
            "--port",
            "7001",
            "--dht-bootstrap",
            &net.addr(1, 7000),
            "--state-dir",
            dir.path().join("s1").to_str().unwrap(),
        ],
    );
    wait_port(&seed_addr, Duration::from_secs(10));
    let (theirs, ext) = raw_greeting(&seed_addr, &private_meta.info_hash.0);
    assert_eq!(theirs[27] & 0x01, 0, "no DHT bit in a private torrent's handshake");
    let ext = String::from_utf8_lossy(&ext);
    assert!(!ext.contains("ut_pex") && ext.contains("ut_metadata"), "no ut_pex offered: {ext}");
    let out = dir.path().join("out");
    ccfd_download(
        dir.path(),
        "leech",
        &[
            private.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--bind",
            &net.ip(3),
            "--port",
            "0",
            "--peer",
            &seed_addr,
            "--dht-bootstrap",
            &net.addr(1, 7000),
            "--state-dir",
            dir.path().join("s2").to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_same_file(&file, &out.join("secret.bin"));
    dht.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 2048];
    let mut queries = 0;
    while let Ok((n, _)) = dht.recv_from(&mut buf) {
        queries += 1;
        let d = &buf[..n];
        assert!(!d.windows(20).any(|w| w == private_meta.info_hash.0), "a DHT query named the private torrent");
    }
    assert!(queries > 0, "the DHT node itself runs (it just never names the private torrent)");
}
