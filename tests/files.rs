//! The torrents people have: one file of many streamed with its subtitles
//! and played by mpv, a magnet link streamed, `download --only` and a
//! magnet's `so=`, and `info`. Real parts: the built-in tracker, a ccfd-bt
//! seed and a libtorrent seed, mpv.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    assert_same_file, ccfd, ccfd_download, ccfd_json, create_torrent, get_range, libtorrent, nginx, payload, test_dir, wait_json,
    wait_port, Proc, BIN,
};

const MOVIE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/torrents/ccfd-demo.mp4");
const SUBTITLES: &str = "1\n00:00:00,500 --> 00:00:03,000\nHello from ccfd-bt\n\n2\n00:00:04,000 --> 00:00:06,000\nSecond line\n";
const PIECE: u64 = 65536;

/// A movie torrent as they come: the film, its subtitles, a sample, a
/// text file and a large extra, in `dir/content/show`.
fn show(dir: &Path) -> PathBuf {
    let root = dir.join("content/show");
    std::fs::create_dir_all(root.join("Sample")).unwrap();
    std::fs::copy(MOVIE, root.join("movie.mp4")).unwrap();
    std::fs::write(root.join("movie.srt"), SUBTITLES).unwrap();
    std::fs::write(root.join("Sample/sample.mp4"), payload(300_000, 1)).unwrap();
    std::fs::write(root.join("notes.txt"), b"read me\n".repeat(100)).unwrap();
    std::fs::write(root.join("extras.bin"), payload(1_500_000, 2)).unwrap();
    root
}

/// The files of a torrent as `ccfd-bt info --json` lists them: path -> (index, length).
fn files_of(torrent: &Path) -> Vec<(String, u64)> {
    let out = Command::new(BIN).args(["info", "--json"]).arg(torrent).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["files"].as_array().unwrap().iter().map(|f| (f["path"].as_str().unwrap().to_string(), f["length"].as_u64().unwrap())).collect()
}

fn index_of(files: &[(String, u64)], path: &str) -> usize {
    files.iter().position(|(p, _)| p == path).unwrap_or_else(|| panic!("{path} not in {files:?}"))
}

/// The built-in tracker, a ccfd-bt seed and a libtorrent seed of `torrent` (content under `data`).
struct Swarm {
    _procs: Vec<Proc>,
}

fn swarm(dir: &Path, net: &common::Net, torrent: &Path, data: &Path) -> Swarm {
    let tracker_addr = net.addr(1, 7000);
    let tracker = ccfd(dir, "tracker", &["tracker", "--http", &tracker_addr]);
    wait_port(&tracker_addr, Duration::from_secs(10));
    let seed =
        ccfd(dir, "seed", &["seed", torrent.to_str().unwrap(), "--data", data.to_str().unwrap(), "--bind", &net.ip(2), "--port", "6881"]);
    wait_port(&net.addr(2, 6881), Duration::from_secs(20));
    let lt = libtorrent(dir, "lt-seed", "seed", torrent, data, &net.addr(3, 6881), &[]);
    wait_port(&net.addr(3, 6881), Duration::from_secs(20));
    Swarm { _procs: vec![tracker, seed, lt] }
}

fn bytes_received(summary: &serde_json::Value) -> u64 {
    summary["bytes_from"].as_object().map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum())
}

#[test]
fn one_file_of_many_is_streamed_with_its_subtitles_and_mpv_plays_it() {
    let dir = test_dir();
    let net = common::Net::new(110);
    let root = show(dir.path());
    let torrent = dir.path().join("show.torrent");
    // The tracker is at host 1 of this test's network.
    create_torrent(&root, &torrent, &[format!("http://{}/announce", net.addr(1, 7000))], PIECE);
    let files = files_of(&torrent);
    let _swarm = swarm(dir.path(), &net, &torrent, &dir.path().join("content"));

    let out = dir.path().join("out");
    let player = "mpv --no-config --vo=null --no-audio --untimed --term-status-msg=";
    let args = [
        torrent.to_str().unwrap(),
        "--rate",
        "100",
        "--delay",
        "3",
        "--prefetch",
        "1",
        "--no-tui",
        "--json",
        "-o",
        out.to_str().unwrap(),
        "--player",
        player,
        "--bind",
        &net.ip(10),
        "--port",
        "0",
        "--peer",
        &net.addr(3, 6881),
    ];
    let (mut client, json) = ccfd_json(dir.path(), "stream", &args);
    let summary = wait_json(&mut client, &json, Duration::from_secs(120));
    let status = client.wait(Duration::from_secs(60));
    let log = client.log_text();
    assert!(status.success(), "stream exited {status}:\n{log}");
    assert_eq!(summary["path"], "show/movie.mp4", "the largest video is chosen: {summary}");
    assert_eq!(summary["subtitles"], serde_json::json!([index_of(&files, "show/movie.srt")]));
    assert_same_file(&root.join("movie.mp4"), &out.join("show/movie.mp4"));
    assert_same_file(&root.join("movie.srt"), &out.join("show/movie.srt"));
    for other in ["show/extras.bin", "show/notes.txt", "show/Sample/sample.mp4"] {
        assert!(!out.join(other).exists(), "{other} was created");
    }
    // What arrived: the movie and its subtitles, and at most two boundary pieces besides.
    let chosen = files[index_of(&files, "show/movie.mp4")].1 + SUBTITLES.len() as u64;
    let received = bytes_received(&summary);
    assert!(received >= chosen && received <= chosen + 2 * PIECE, "received {received} for {chosen} chosen bytes: {summary}");
    // mpv was handed the subtitle file and played to the end.
    assert!(log.contains("'movie.srt'") && log.contains("Subs"), "mpv did not load the subtitles:\n{log}");
    assert!(log.contains("Exiting... (End of file)"), "mpv did not play to the end:\n{log}");
}

#[test]
fn a_magnet_link_is_streamed_byte_exact() {
    let dir = test_dir();
    let net = common::Net::new(110);
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::copy(MOVIE, content.join("ccfd-demo.mp4")).unwrap();
    let torrent = dir.path().join("demo.torrent");
    let tracker = format!("http://{}/announce", net.addr(1, 7000));
    let hash = create_torrent(&content.join("ccfd-demo.mp4"), &torrent, std::slice::from_ref(&tracker), PIECE);
    let _swarm = swarm(dir.path(), &net, &torrent, &content);

    let magnet = format!("magnet:?xt=urn:btih:{hash}&dn=demo&tr={}", url_encode(&tracker));
    let out = dir.path().join("out/movie.mp4");
    let serve = net.addr(10, 8888);
    // Slow enough (3 MB at 300 kB/s) that the probe below comes long before the end.
    let args = [
        &magnet,
        "--serve",
        &serve,
        "--max-download-rate",
        "300",
        "--rate",
        "200",
        "--delay",
        "3",
        "--prefetch",
        "1",
        "--no-tui",
        "--json",
        "-o",
        out.to_str().unwrap(),
        "--bind",
        &net.ip(10),
        "--port",
        "0",
    ];
    let (mut client, json) = ccfd_json(dir.path(), "stream", &args);
    // A player's probe of the file's end (where an mp4's index may be):
    // served at once, and playback is not re-planned around it.
    wait_port(&serve, Duration::from_secs(30));
    let movie = std::fs::read(content.join("ccfd-demo.mp4")).unwrap();
    let len = movie.len() as u64;
    let (status, body) = get_range(&serve, "/movie.mp4", len - 10_000, len - 1);
    assert!(status.contains("206") && body == movie[movie.len() - 10_000..], "{status}");
    let log = client.log_text();
    assert!(log.contains("probe read") && !log.contains("seek: deadlines re-planned"), "{log}");
    let summary = wait_json(&mut client, &json, Duration::from_secs(120));
    // With --serve and no player it serves until told to stop. Exit 3 says
    // playback would have waited: at a 300 kB/s cap, pieces planned on the
    // coded link to the ccfd-bt seed can arrive late.
    client.signal(libc::SIGTERM);
    let status = client.wait(Duration::from_secs(30));
    assert!(matches!(status.code(), Some(0 | 3)), "exit {status}:\n{}", client.log_text());
    assert!(summary["metadata_seconds"].as_f64().unwrap() > 0.0, "{summary}");
    assert_same_file(&content.join("ccfd-demo.mp4"), &out);
}

#[test]
fn any_file_of_the_index_is_served_and_a_seek_the_swarm_cannot_bring_goes_to_the_server_at_once() {
    let dir = test_dir();
    let net = common::Net::new(110);
    let root = show(dir.path());
    // The VoD server (nginx) is the only source: no tracker, no peers.
    let www = dir.path().join("www");
    copy_tree(&root, &www.join("show"));
    let addr = net.addr(1, 8080);
    let _nginx = nginx(dir.path(), &addr, &format!("listen {addr}; location / {{ root {}; }}", www.display()));
    let torrent = dir.path().join("show.torrent");
    create_torrent(&root, &torrent, &[], PIECE);

    let out = dir.path().join("out");
    let serve = net.addr(10, 8888);
    let vod = format!("http://{addr}/");
    // A 20 s startup delay: a piece due at its deadline would come from
    // the server some 17 s from now; the reads below must not wait for that.
    let args = [
        torrent.to_str().unwrap(),
        "--vod-server",
        &vod,
        "--serve",
        &serve,
        "--rate",
        "50",
        "--delay",
        "20",
        "--prefetch",
        "2",
        "--no-tui",
        "-o",
        out.to_str().unwrap(),
        "--bind",
        &net.ip(10),
        "--port",
        "0",
    ];
    let mut client = ccfd(dir.path(), "stream", &args);
    wait_port(&serve, Duration::from_secs(30));
    let (status, index) = get_range(&serve, "/", 0, 100_000);
    let index = String::from_utf8_lossy(&index);
    assert!(status.contains("200") && index.contains("<a href=\"/show/Sample/sample.mp4\">"), "{status}\n{index}");

    // A file the stream did not choose, opened from the index: fetched and served.
    let began = std::time::Instant::now();
    let sample = std::fs::read(root.join("Sample/sample.mp4")).unwrap();
    let (status, body) = get_range(&serve, "/show/Sample/sample.mp4", 0, sample.len() as u64 - 1);
    assert!(status.contains("206") && body == sample, "{status}: {} bytes", body.len());
    let other_secs = began.elapsed().as_secs_f64();

    // A seek 2 MB into the movie: nobody else has those bytes, so the server is asked at once.
    let began = std::time::Instant::now();
    let movie = std::fs::read(MOVIE).unwrap();
    let (status, body) = get_range(&serve, "/show/movie.mp4", 2_000_000, 2_029_999);
    assert!(status.contains("206") && body == movie[2_000_000..2_030_000], "{status}");
    let seek_secs = began.elapsed().as_secs_f64();
    let log = client.log_text();
    assert!(other_secs < 10.0 && seek_secs < 10.0, "other file {other_secs:.1} s, seek {seek_secs:.1} s:\n{log}");
    assert!(log.contains("file added to the download") && log.contains("seek: deadlines re-planned"), "{log}");

    client.signal(libc::SIGTERM);
    let _ = client.wait(Duration::from_secs(30));
    assert_same_file(&root.join("Sample/sample.mp4"), &out.join("show/Sample/sample.mp4"));
    assert!(!out.join("show/extras.bin").exists() && !out.join("show/notes.txt").exists(), "unopened files were created");
}

/// Copies the tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    for entry in walk(from) {
        let target = to.join(entry.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, target).unwrap();
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[test]
fn download_only_some_files_by_flag_and_by_magnet_selection() {
    let dir = test_dir();
    let net = common::Net::new(110);
    let root = show(dir.path());
    let torrent = dir.path().join("show.torrent");
    let tracker = format!("http://{}/announce", net.addr(1, 7000));
    let hash = create_torrent(&root, &torrent, std::slice::from_ref(&tracker), PIECE);
    let files = files_of(&torrent);
    let _swarm = swarm(dir.path(), &net, &torrent, &dir.path().join("content"));

    // --only by path and by index, comma-separated.
    let out = dir.path().join("only");
    let notes = index_of(&files, "show/notes.txt").to_string();
    let only = format!("movie.srt,{notes}");
    let args = [torrent.to_str().unwrap(), "-o", out.to_str().unwrap(), "--only", &only, "--bind", &net.ip(11), "--port", "0"];
    ccfd_download(dir.path(), "only", &args, Duration::from_secs(60));
    assert_same_file(&root.join("movie.srt"), &out.join("show/movie.srt"));
    assert_same_file(&root.join("notes.txt"), &out.join("show/notes.txt"));
    for other in ["show/movie.mp4", "show/extras.bin", "show/Sample/sample.mp4"] {
        assert!(!out.join(other).exists(), "{other} was created");
    }

    // A magnet's so= selects the same way; the fetched metadata is saved.
    let out = dir.path().join("so");
    let saved = dir.path().join("saved.torrent");
    let extras = index_of(&files, "show/extras.bin");
    let magnet = format!("magnet:?xt=urn:btih:{hash}&tr={}&so={extras}", url_encode(&tracker));
    let args = [&magnet, "-o", out.to_str().unwrap(), "--save-torrent", saved.to_str().unwrap(), "--bind", &net.ip(12), "--port", "0"];
    ccfd_download(dir.path(), "so", &args, Duration::from_secs(60));
    assert_same_file(&root.join("extras.bin"), &out.join("show/extras.bin"));
    assert!(!out.join("show/movie.mp4").exists() && !out.join("show/notes.txt").exists());
    let saved_meta = ccfd_proto::metainfo::Metainfo::from_file(&saved).unwrap();
    assert_eq!(saved_meta.info_hash.to_hex(), hash);
    assert_eq!(saved_meta.trackers, vec![vec![tracker]]);
}

/// Copies `from` to `to`, every byte of every file flipped.
fn corrupt_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            corrupt_copy(&path, &target);
        } else {
            std::fs::write(target, std::fs::read(&path).unwrap().iter().map(|b| !b).collect::<Vec<_>>()).unwrap();
        }
    }
}

#[test]
fn web_seeds_alone_complete_a_download_and_a_lying_one_is_dropped() {
    let dir = test_dir();
    let net = common::Net::new(110);
    let root = show(dir.path());
    // nginx serves the show twice: as it is, and with every byte wrong.
    let www = dir.path().join("www");
    let good = www.join("good/show");
    copy_tree(&root, &good);
    corrupt_copy(&good, &www.join("bad/show"));
    let addr = net.addr(1, 8080);
    let _nginx = nginx(dir.path(), &addr, &format!("listen {addr}; location / {{ root {}; }}", www.display()));

    let torrent = dir.path().join("show.torrent");
    let status = Command::new(BIN)
        .args(["create", root.to_str().unwrap(), "-o", torrent.to_str().unwrap(), "--piece-length", &PIECE.to_string()])
        .args(["--web-seed", &format!("http://{addr}/bad/"), "--web-seed", &format!("http://{addr}/good/")])
        .status()
        .unwrap();
    assert!(status.success());
    // No tracker, no peers: the web seeds are the only sources.
    let out = dir.path().join("out");
    let args = [torrent.to_str().unwrap(), "-o", out.to_str().unwrap(), "--bind", &net.ip(10), "--port", "0"];
    let summary = ccfd_download(dir.path(), "download", &args, Duration::from_secs(120));
    for file in walk(&root) {
        assert_same_file(&file, &out.join("show").join(file.strip_prefix(&root).unwrap()));
    }
    let log = std::fs::read_to_string(dir.path().join("download.log")).unwrap();
    assert!(log.contains("web seed dropped: its pieces fail their hash") && log.contains("/bad/"), "the liar was not dropped:\n{log}");
    let total: u64 = walk(&root).iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert!(summary["web_seed_bytes"].as_u64().unwrap() >= total, "{summary}");
    assert!(summary["piece_failures"].as_u64().unwrap() >= 1, "the liar's pieces failed their hash: {summary}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
