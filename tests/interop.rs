//! Interop with real BitTorrent programs on loopback, through opentracker,
//! each transfer checked byte for byte. Needs scripts/setup.sh.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(120);
/// 3 MiB and a bit: 13 pieces of 256 KiB, the last one short.
const SIZE: usize = 3 * 1024 * 1024 + 12_345;
const PIECE: u64 = 256 * 1024;

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    net: Net,
    torrent: PathBuf,
    seed_dir: PathBuf,
    hash: String,
}

/// A payload in `seed/` and its torrent announcing to `scheme://tracker/announce`.
fn world(scheme: &str) -> World {
    let tmp = test_dir();
    let dir = tmp.path().to_path_buf();
    let net = Net::new(10);
    let seed_dir = dir.join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::write(seed_dir.join("payload.bin"), payload(SIZE, 7)).unwrap();
    let torrent = dir.join("payload.torrent");
    let tracker = format!("{scheme}://{}/announce", net.addr(1, 6969));
    let hash = create_torrent(&seed_dir.join("payload.bin"), &torrent, &[tracker], PIECE);
    World { _tmp: tmp, dir, net, torrent, seed_dir, hash }
}

impl World {
    fn tracker(&self) -> Proc {
        opentracker(&self.dir, &self.net.ip(1), 6969, std::slice::from_ref(&self.hash))
    }

    fn wait_seed_announced(&self) {
        let tracker = self.net.addr(1, 6969);
        wait_until("the seed's announce", Duration::from_secs(30), || scrape_seeders(&tracker, &self.hash) >= 1);
    }

    fn out(&self, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn check(&self, out: &Path) {
        assert_same_file(&self.seed_dir.join("payload.bin"), &out.join("payload.bin"));
    }

    fn ccfd_seed(&self, host: u8, extra: &[&str]) -> Proc {
        let (t, d, ip) = (self.torrent.display().to_string(), self.seed_dir.display().to_string(), self.net.ip(host));
        let mut args = vec!["seed", t.as_str(), "--data", d.as_str(), "--bind", ip.as_str(), "--port", "6881"];
        args.extend_from_slice(extra);
        let p = ccfd(&self.dir, "ccfd-seed", &args);
        wait_port(&self.net.addr(host, 6881), Duration::from_secs(20));
        p
    }

    fn ccfd_leech(&self, host: u8, name: &str, extra: &[&str]) -> (PathBuf, serde_json::Value) {
        let out = self.out(name);
        let (t, o, ip) = (self.torrent.display().to_string(), out.display().to_string(), self.net.ip(host));
        let mut args = vec![t.as_str(), "-o", o.as_str(), "--bind", ip.as_str(), "--port", "6881"];
        args.extend_from_slice(extra);
        let summary = ccfd_download(&self.dir, name, &args, TIMEOUT);
        self.check(&out);
        (out, summary)
    }
}

fn bytes_from(summary: &serde_json::Value, ip: &str) -> u64 {
    summary["bytes_from"]
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.starts_with(&format!("{ip}:"))).filter_map(|(_, v)| v.as_u64()).sum())
        .unwrap_or(0)
}

#[test]
fn ccfd_downloads_from_libtorrent_through_http_tracker() {
    let w = world("http");
    let _tracker = w.tracker();
    let _seed = libtorrent(&w.dir, "lt-seed", "seed", &w.torrent, &w.seed_dir, &w.net.addr(2, 6881), &[]);
    w.wait_seed_announced();
    let (_, summary) = w.ccfd_leech(3, "ccfd-leech", &[]);
    assert_eq!(bytes_from(&summary, &w.net.ip(2)), SIZE as u64, "{summary}");
}

#[test]
fn ccfd_downloads_a_magnet_link_getting_the_metadata_from_libtorrent() {
    let w = world("http");
    let _tracker = w.tracker();
    let _seed = libtorrent(&w.dir, "lt-seed", "seed", &w.torrent, &w.seed_dir, &w.net.addr(2, 6881), &[]);
    w.wait_seed_announced();
    let out = w.out("magnet");
    let magnet = format!("magnet:?xt=urn:btih:{}&tr=http://{}/announce", w.hash, w.net.addr(1, 6969));
    let (o, ip) = (out.display().to_string(), w.net.ip(3));
    let summary =
        ccfd_download(&w.dir, "ccfd-magnet", &[magnet.as_str(), "-o", o.as_str(), "--bind", ip.as_str(), "--port", "6881"], TIMEOUT);
    w.check(&out);
    assert_eq!(summary["info_hash"], w.hash.as_str());
}

#[test]
fn libtorrent_downloads_from_ccfd_through_udp_tracker() {
    let w = world("udp");
    let _tracker = w.tracker();
    let _seed = w.ccfd_seed(2, &[]);
    w.wait_seed_announced();
    let out = w.out("lt-leech");
    let mut lt = libtorrent(&w.dir, "lt-leech", "download", &w.torrent, &out, &w.net.addr(3, 6881), &[]);
    assert!(lt.wait(TIMEOUT).success(), "{}", lt.log_text());
    w.check(&out);
}

#[test]
fn libtorrent_downloads_from_a_super_seeding_ccfd() {
    let w = world("http");
    let _tracker = w.tracker();
    let _seed = w.ccfd_seed(2, &["--super-seed"]);
    w.wait_seed_announced();
    let out = w.out("lt-leech");
    let mut lt = libtorrent(&w.dir, "lt-leech", "download", &w.torrent, &out, &w.net.addr(3, 6881), &[]);
    assert!(lt.wait(TIMEOUT).success(), "{}", lt.log_text());
    w.check(&out);
}

#[test]
fn ccfd_downloads_from_aria2_through_http_tracker() {
    // aria2 speaks UDP trackers only through its DHT socket, which these tests turn off.
    let w = world("http");
    let _tracker = w.tracker();
    let _seed = aria2(&w.dir, "aria2-seed", "seed", &w.torrent, &w.seed_dir, &w.net.ip(2), 6881);
    w.wait_seed_announced();
    let (_, summary) = w.ccfd_leech(3, "ccfd-leech", &[]);
    assert_eq!(bytes_from(&summary, &w.net.ip(2)), SIZE as u64, "{summary}");
}

#[test]
fn aria2_downloads_from_ccfd_through_http_tracker() {
    let w = world("http");
    let _tracker = w.tracker();
    let _seed = w.ccfd_seed(2, &[]);
    w.wait_seed_announced();
    let out = w.out("aria2-leech");
    let mut leech = aria2(&w.dir, "aria2-leech", "download", &w.torrent, &out, &w.net.ip(3), 6881);
    assert!(leech.wait(TIMEOUT).success(), "{}", leech.log_text());
    w.check(&out);
}

#[test]
fn ccfd_downloads_from_transmission_by_dialing_it() {
    let w = world("http");
    let _tracker = w.tracker();
    let tr = Transmission::start(&w.dir, "transmission-seed", &w.net.ip(2), 6881, 9091, &w.seed_dir);
    tr.add(&w.torrent);
    tr.wait_percent(100.0, Duration::from_secs(30));
    let peer = w.net.addr(2, 6881);
    let (_, summary) = w.ccfd_leech(3, "ccfd-leech", &["--peer", &peer]);
    assert_eq!(bytes_from(&summary, &w.net.ip(2)), SIZE as u64, "{summary}");
}

#[test]
fn transmission_downloads_from_ccfd_when_ccfd_dials_it() {
    let w = world("http");
    let _tracker = w.tracker();
    let out = w.out("transmission-leech");
    let tr = Transmission::start(&w.dir, "transmission-leech", &w.net.ip(3), 6881, 9091, &out);
    tr.add(&w.torrent);
    let peer = w.net.addr(3, 6881);
    let _seed = w.ccfd_seed(2, &["--peer", &peer]);
    tr.wait_percent(100.0, TIMEOUT);
    w.check(&out);
}

/// A multi-file torrent (short last piece, a file boundary inside a piece)
/// shared by one capped seed and two ccfd-bt leechers that trade with each other.
#[test]
fn swarm_of_two_ccfd_leechers_and_a_seed_on_a_multi_file_torrent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let net = Net::new(10);
    let content = dir.join("seed/album");
    std::fs::create_dir_all(content.join("disc1")).unwrap();
    std::fs::write(content.join("disc1/a.bin"), payload(1_000_003, 1)).unwrap();
    std::fs::write(content.join("disc1/empty.bin"), b"").unwrap();
    std::fs::write(content.join("b.bin"), payload(2_500_000, 2)).unwrap();
    std::fs::write(content.join("c.txt"), b"short tail").unwrap();
    let torrent = dir.join("album.torrent");
    let hash = create_torrent(&content, &torrent, &[format!("udp://{}/announce", net.addr(1, 6969))], 64 * 1024);
    let _tracker = opentracker(dir, &net.ip(1), 6969, std::slice::from_ref(&hash));
    let (t, d) = (torrent.display().to_string(), dir.join("seed").display().to_string());
    let ip2 = net.ip(2);
    let _seed = ccfd(dir, "seed", &["seed", &t, "--data", &d, "--bind", &ip2, "--port", "6881", "--max-upload-rate", "1500"]);
    wait_until("seed announce", Duration::from_secs(30), || scrape_seeders(&net.addr(1, 6969), &hash) >= 1);
    let mut leechers: Vec<_> = [3u8, 4]
        .iter()
        .map(|&host| {
            let out = dir.join(format!("leech{host}"));
            let (o, ip, name) = (out.display().to_string(), net.ip(host), format!("leech{host}"));
            let args = ["download", &t, "-o", &o, "--bind", &ip, "--port", "6881", "--seed-after", "--json"];
            let (proc, json) = ccfd_json(dir, &name, &args);
            (host, out, proc, json)
        })
        .collect();
    let mut from_each_other = 0;
    for (host, out, proc, json) in &mut leechers {
        let summary = wait_json(proc, json, TIMEOUT);
        for f in ["disc1/a.bin", "disc1/empty.bin", "b.bin", "c.txt"] {
            assert_same_file(&content.join(f), &out.join("album").join(f));
        }
        let other = net.ip(if *host == 3 { 4 } else { 3 });
        from_each_other += bytes_from(&summary, &other);
    }
    assert!(from_each_other > 0, "the leechers never traded pieces");
}

/// A seeder that answers every request with wrong bytes, beside an honest
/// ccfd-bt seed: the leecher must end with a correct file and strike the liar.
#[test]
fn corrupt_peer_is_struck_and_banned_and_the_file_is_still_correct() {
    let w = world("http");
    let _tracker = w.tracker();
    let _seed = w.ccfd_seed(2, &["--max-upload-rate", "1000"]);
    let liar = w.net.addr(4, 6881);
    let meta = ccfd_proto::metainfo::Metainfo::from_file(&w.torrent).unwrap();
    let _liar = lying_seeder::spawn(&liar, meta.info_hash, meta.piece_count());
    let honest = w.net.addr(2, 6881);
    let (_, summary) = w.ccfd_leech(3, "ccfd-leech", &["--peer", &liar, "--peer", &honest]);
    assert!(summary["piece_failures"].as_u64().unwrap() >= 1, "{summary}");
    let banned: Vec<&str> = summary["banned"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(banned, vec![w.net.ip(4).as_str()], "{summary}");
}

/// kill -9 in the middle of a download, then restart: the verified pieces
/// are kept (re-checked from disk), only the rest is fetched.
#[test]
fn kill_9_mid_download_then_restart_fetches_only_what_is_missing() {
    let w = world("http");
    let _tracker = w.tracker();
    let _seed = w.ccfd_seed(2, &["--max-upload-rate", "800"]);
    w.wait_seed_announced();
    let out = w.out("leech");
    let (t, o, ip) = (w.torrent.display().to_string(), out.display().to_string(), w.net.ip(3));
    let args = ["download", t.as_str(), "-o", o.as_str(), "--bind", ip.as_str(), "--port", "6881", "--json"];
    let (first, _) = ccfd_json(&w.dir, "leech-first", &args);
    // Wait until some pieces are on disk, then kill without warning.
    let meta = ccfd_proto::metainfo::Metainfo::from_file(&w.torrent).unwrap();
    wait_until("some verified pieces on disk", TIMEOUT, || {
        let Ok(storage) = ccfd_bt::storage::Storage::open(&meta, &out, ccfd_bt::storage::OpenMode::Existing) else { return false };
        storage.verify_all(&meta).count() >= 3
    });
    first.signal(libc::SIGKILL);
    drop(first);
    let kept = ccfd_bt::storage::Storage::open(&meta, &out, ccfd_bt::storage::OpenMode::Existing).unwrap().verify_all(&meta);
    assert!(kept.count() >= 3 && !kept.is_full(), "kept {} pieces", kept.count());
    let (_, summary) = w.ccfd_leech(3, "leech", &[]);
    let kept_bytes: u64 = kept.ones().map(|i| u64::from(meta.piece_len(i))).sum();
    let fetched = summary["downloaded"].as_u64().unwrap();
    assert_eq!(fetched, SIZE as u64 - kept_bytes, "restart fetched verified pieces again: {summary}");
}

mod lying_seeder {
    //! A BitTorrent seeder that lies: right handshake, full bitfield, and
    //! blocks of garbage. Built on our own wire codec.
    use bytes::Bytes;
    use ccfd_proto::metainfo::InfoHash;
    use ccfd_proto::wire::{Handshake, Message, MessageCodec, HANDSHAKE_LEN};
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Liar {
        runtime: Option<tokio::runtime::Runtime>,
    }

    impl Drop for Liar {
        fn drop(&mut self) {
            if let Some(rt) = self.runtime.take() {
                rt.shutdown_background();
            }
        }
    }

    pub fn spawn(addr: &str, info_hash: InfoHash, pieces: u32) -> Liar {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr)).expect("bind liar");
        runtime.spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut hs = [0u8; HANDSHAKE_LEN];
                    if stream.read_exact(&mut hs).await.is_err() {
                        return;
                    }
                    let ours = Handshake::new(info_hash, *b"-XX0000-liarliarliar");
                    if stream.write_all(&ours.to_bytes()).await.is_err() {
                        return;
                    }
                    let mut framed = tokio_util::codec::Framed::new(stream, MessageCodec);
                    let bits = ccfd_proto::bitfield::Bitfield::full(pieces);
                    let _ = framed.send(Message::Bitfield(Bytes::copy_from_slice(bits.as_bytes()))).await;
                    let _ = framed.send(Message::Unchoke).await;
                    while let Some(Ok(msg)) = framed.next().await {
                        if let Message::Request(b) = msg {
                            let garbage = Bytes::from(vec![0x5a; b.length as usize]);
                            if framed.send(Message::Piece { piece: b.piece, offset: b.offset, data: garbage }).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Liar { runtime: Some(runtime) }
    }
}

/// `--max-upload-rate` on the seed and `--max-download-rate` on the leecher
/// each hold the transfer near their rate (loopback peers included).
#[test]
fn rate_caps_hold_on_loopback() {
    let w = world("http");
    let _tracker = w.tracker();
    let _seed = w.ccfd_seed(2, &["--max-upload-rate", "1000"]);
    let peer = w.net.addr(2, 6881);
    // 3.16 MB at 1000 kB/s: about 3.1 s after the first quarter-second burst.
    let (_, up) = w.ccfd_leech(3, "capped-by-seed", &["--peer", &peer]);
    let secs = up["seconds"].as_f64().unwrap();
    assert!((2.6..10.0).contains(&secs), "upload cap 1000 kB/s gave {secs} s: {up}");
    // The leecher's own cap, below the seed's: 3.16 MB at 700 kB/s is about 4.3 s.
    let (_, down) = w.ccfd_leech(4, "capped-by-leecher", &["--peer", &peer, "--max-download-rate", "700"]);
    let secs = down["seconds"].as_f64().unwrap();
    assert!((3.8..12.0).contains(&secs), "download cap 700 kB/s gave {secs} s: {down}");
}

/// A `--seed-after` download keeps seeding; SIGINT then sends `stopped` to
/// the tracker and exits 0.
#[test]
fn seed_after_then_sigint_announces_stopped_and_exits_zero() {
    let w = world("http");
    let _tracker = w.tracker();
    let _seed = w.ccfd_seed(2, &[]);
    w.wait_seed_announced();
    let out = w.out("leech");
    let (t, o, ip) = (w.torrent.display().to_string(), out.display().to_string(), w.net.ip(3));
    let args = ["download", t.as_str(), "-o", o.as_str(), "--bind", ip.as_str(), "--port", "6881", "--seed-after", "--json"];
    let (mut leech, json) = ccfd_json(&w.dir, "leech", &args);
    wait_json(&mut leech, &json, TIMEOUT);
    w.check(&out);
    let tracker = w.net.addr(1, 6969);
    wait_until("two seeders at the tracker", Duration::from_secs(20), || scrape_seeders(&tracker, &w.hash) == 2);
    assert!(leech.exited().is_none(), "--seed-after must keep running");
    leech.signal(libc::SIGINT);
    let status = leech.wait(Duration::from_secs(15));
    assert!(status.success(), "exit after SIGINT: {status}");
    assert_eq!(scrape_seeders(&tracker, &w.hash), 1, "the tracker heard `stopped`");
}
