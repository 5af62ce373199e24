//! The command line's answers to bad input: one clear line, a non-zero exit.

mod common;

use std::process::Command;

use common::{payload, BIN};

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(common::local_only(args)).output().expect("run ccfd-bt");
    assert!(out.stdout.is_empty(), "nothing on stdout for errors: {:?}", String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn missing_and_malformed_torrents() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run(&["download", "/nonexistent/x.torrent", "--port", "0"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: cannot read /nonexistent/x.torrent") && err.contains("No such file"), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "the cause is said once: {err}");
    let bad = dir.path().join("bad.torrent");
    std::fs::write(&bad, b"d4:infoi3ee").unwrap();
    let (code, err) = run(&["download", bad.to_str().unwrap(), "--port", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("malformed torrent"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

/// A torrent with a BEP 47 padding file between a sample and the movie.
fn padded_torrent(dir: &std::path::Path) -> std::path::PathBuf {
    use sha1::{Digest, Sha1};
    let piece = 16384usize;
    let (sample, pad, movie) = (10_000usize, 16384 - 10_000, 40_000usize);
    let mut content = payload(sample, 1);
    content.extend(std::iter::repeat_n(0u8, pad));
    content.extend(payload(movie, 2));
    let hashes: Vec<u8> = content.chunks(piece).flat_map(|c| Sha1::digest(c).to_vec()).collect();
    let file = |len: usize, path: &[&str], attr: Option<&str>| {
        let mut d = String::new();
        if let Some(a) = attr {
            d.push_str(&format!("4:attr{}:{a}", a.len()));
        }
        d.push_str(&format!("6:lengthi{len}e4:pathl"));
        for p in path {
            d.push_str(&format!("{}:{p}", p.len()));
        }
        format!("d{d}ee")
    };
    let files = file(sample, &["sample.mkv"], None) + &file(pad, &[".pad", "6384"], Some("p")) + &file(movie, &["movie.mkv"], None);
    let mut bytes = format!("d4:infod5:filesl{files}e4:name4:show12:piece lengthi{piece}e6:pieces{}:", hashes.len()).into_bytes();
    bytes.extend(hashes);
    bytes.extend(b"ee");
    let path = dir.join("padded.torrent");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn info_lists_files_and_bad_file_choices_and_magnets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = padded_torrent(dir.path());
    let out = Command::new(BIN).args(["info", "--json"]).arg(&t).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "show");
    assert_eq!(v["pieces"], 4);
    let pads: Vec<bool> = v["files"].as_array().unwrap().iter().map(|f| f["padding"].as_bool().unwrap()).collect();
    assert_eq!(pads, vec![false, true, false]);
    let text = Command::new(BIN).arg("info").arg(&t).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("show/movie.mkv") && text.contains("(padding)") && text.contains("Piece size: 16.0 KiB"), "{text}");

    let t = t.to_str().unwrap();
    for (file, says) in [("99", "out of range"), ("nope.mkv", "no file of the torrent"), ("1", "padding")] {
        let (code, err) = run(&[t, "--file", file, "--no-tui", "--port", "0"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(says) && err.lines().count() == 1, "--file {file}: {err}");
    }
    let (code, err) = run(&["download", "magnet:?xt=urn:btih:123zz", "--port", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("neither 40 hex digits nor 32 base32") && err.lines().count() == 1, "{err}");
    let hash = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
    let (code, err) = run(&["download", &format!("magnet:?xt=urn:btih:{hash}&so=3-1"), "--port", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("so=") && err.lines().count() == 1, "{err}");
}

#[test]
fn bad_flags_are_refused_by_the_parser() {
    let (code, err) = run(&["download", "x.torrent", "--max-upload-rate=-5"]);
    assert_eq!(code, 2);
    assert!(err.contains("--max-upload-rate") && err.contains("positive"), "{err}");
    let (code, err) = run(&["download", "x.torrent", "--max-download-rate", "fast"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a number of kB/s"), "{err}");
    let (code, _) = run(&["download", "x.torrent", "--peer", "not-an-address"]);
    assert_eq!(code, 2);
}

/// A torrent announcing to `tracker`, over a small payload in `dir/seed`.
fn torrent(dir: &std::path::Path, tracker: &str) -> String {
    std::fs::create_dir_all(dir.join("seed")).unwrap();
    std::fs::write(dir.join("seed/p.bin"), payload(100_000, 3)).unwrap();
    let t = dir.join("p.torrent");
    common::create_torrent(&dir.join("seed/p.bin"), &t, &[tracker.to_string()], 16384);
    t.display().to_string()
}

#[test]
fn port_in_use_and_unreachable_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let net = common::Net::new(30);
    // Nothing listens on port 1 of this address: connection refused.
    let t = torrent(dir.path(), &format!("http://{}/announce", net.addr(1, 1)));
    let held = std::net::TcpListener::bind(net.addr(2, 6881)).unwrap();
    let out = dir.path().join("out").display().to_string();
    let (code, err) = run(&["download", &t, "-o", &out, "--bind", &net.ip(2), "--port", "6881"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot listen on") && err.contains("in use"), "{err}");
    drop(held);
    // A tracker that does not answer stops nothing: the client keeps
    // running (peers may dial it), says what failed, and retries.
    let log = dir.path().join("unreachable.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["download", &t, "-o", &out, "--bind", &net.ip(2), "--port", "6881", "--no-dht"]);
    let mut proc = common::Proc::spawn("ccfd-bt download", &mut cmd, &log);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !proc.log_text().contains("did not answer") {
        assert!(proc.exited().is_none(), "exited: {}", proc.log_text());
        assert!(std::time::Instant::now() < deadline, "no warning: {}", proc.log_text());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = proc.log_text();
    assert!(text.contains("will retry") && text.contains(&net.addr(1, 1)), "names the tracker and the retry: {text}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(proc.exited().is_none(), "still running after the failed announce: {}", proc.log_text());
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait(std::time::Duration::from_secs(15)).code(), Some(130), "{}", proc.log_text());
}

#[test]
fn create_rejects_a_bad_piece_length_and_a_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("x.torrent").display().to_string();
    let (code, err) = run(&["create", "/nonexistent", "-o", &t]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent"), "{err}");
    std::fs::write(dir.path().join("f"), b"abc").unwrap();
    let f = dir.path().join("f").display().to_string();
    let (code, err) = run(&["create", &f, "-o", &t, "--piece-length", "1000"]);
    assert_eq!(code, 1);
    assert!(err.contains("power of two"), "{err}");
}
