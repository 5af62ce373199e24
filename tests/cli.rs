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
    assert!(err.starts_with("error: /nonexistent/x.torrent") && err.contains("No such file"), "{err}");
    let bad = dir.path().join("bad.torrent");
    std::fs::write(&bad, b"d4:infoi3ee").unwrap();
    let (code, err) = run(&["download", bad.to_str().unwrap(), "--port", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("malformed torrent"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
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
