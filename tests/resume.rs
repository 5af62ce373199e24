//! Fast resume against a real seed: a clean restart trusts the files it
//! left without hashing them, `kill -9` at random moments loses no
//! verified piece, `--recheck` hashes everything, and a file changed on
//! disk between runs is caught. A ccfd-bt seed; the leecher is restarted
//! as a user would.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_same_file, ccfd, ccfd_json, create_torrent, payload, test_dir, wait_json, wait_port, Proc};

const PIECE: u64 = 65536;
const PIECES: usize = 128;

/// The `storage checked verified=N` count a run logged at its start.
fn verified_at_start(proc: &Proc) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = proc.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("storage checked")) {
            let n = line.split("verified=").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok());
            return n.unwrap_or_else(|| panic!("cannot read {line:?}"));
        }
        assert!(Instant::now() < deadline, "no storage check logged:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The verified pieces in the resume record under `dir` (a one-file
/// torrent: magic, hash, counts, one file entry, then the bitfield).
fn recorded(dir: &Path) -> Vec<usize> {
    let Ok(bytes) = std::fs::read(dir.join(".payload.bin.resume")) else { return Vec::new() };
    let at = 8 + 20 + 4 + 4 + 1 + 20;
    (0..PIECES).filter(|&i| bytes[at + i / 8] & (0x80 >> (i % 8)) != 0).collect()
}

#[test]
fn restarts_trust_unchanged_files_and_kill_9_loses_no_verified_piece() {
    let dir = test_dir();
    let net = common::Net::new(120);
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let data = payload(PIECES * PIECE as usize, 9);
    std::fs::write(content.join("payload.bin"), &data).unwrap();
    let torrent = dir.path().join("payload.torrent");
    create_torrent(&content.join("payload.bin"), &torrent, &[], PIECE);
    let seed_args = ["seed", torrent.to_str().unwrap(), "--data", content.to_str().unwrap(), "--bind", &net.ip(2), "--port", "6881"];
    let _seed = ccfd(dir.path(), "seed", &seed_args);
    wait_port(&net.addr(2, 6881), Duration::from_secs(20));

    let out = dir.path().join("out");
    let seed_addr = net.addr(2, 6881);
    // 8 MiB at 1.5 MB/s: five seconds of download to interrupt.
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = ["download", torrent.to_str().unwrap(), "-o", out.to_str().unwrap(), "--peer", &seed_addr]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--bind", &net.ip(10), "--port", "0", "--max-download-rate", "1500"].iter().map(|s| s.to_string()));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |name: &str, extra: &[&'static str]| {
        let a = args(extra);
        ccfd(dir.path(), name, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // A clean stop: the restart trusts every piece it had and hashes none.
    let mut first = run("run0", &[]);
    std::thread::sleep(Duration::from_millis(1500));
    first.signal(libc::SIGTERM);
    first.wait(Duration::from_secs(20));
    let mut had = recorded(&out).len();
    assert!(had > 0 && had < PIECES, "{had} pieces recorded after a clean stop:\n{}", first.log_text());

    // kill -9 at random moments: each restart keeps at least what the
    // record held at the kill (pieces verified since are found by hashing).
    let mut seed = 0x9e3779b97f4a7c15u64;
    for k in 1..=4 {
        let mut proc = run(&format!("run{k}"), &[]);
        let kept = verified_at_start(&proc);
        assert!(kept >= had, "run{k} started with {kept} pieces; the record had {had}");
        if k == 1 {
            let log = proc.log_text();
            assert!(log.contains("resume record used") && log.contains("hashed=0"), "a clean stop's record was not trusted:\n{log}");
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(300 + (seed >> 33) % 700));
        had = recorded(&out).len();
        proc.signal(libc::SIGKILL);
        proc.wait(Duration::from_secs(10));
    }

    // A clean stop, then a byte changed under a recorded piece: the file's
    // stamp moved, so the restart hashes it and drops that piece.
    let mut stop = run("stop", &[]);
    verified_at_start(&stop);
    std::thread::sleep(Duration::from_millis(500));
    stop.signal(libc::SIGTERM);
    stop.wait(Duration::from_secs(20));
    let pieces = recorded(&out);
    let file = out.join("payload.bin");
    if let Some(&victim) = pieces.first() {
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[victim * PIECE as usize] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let changed = run("changed", &[]);
        let kept = verified_at_start(&changed);
        drop(changed);
        let log = std::fs::read_to_string(dir.path().join("changed.log")).unwrap();
        assert!(log.contains("resume record used") && !log.contains("hashed=0"), "{log}");
        assert_eq!(kept, pieces.len() - 1, "the changed piece was trusted");
    }

    // --recheck hashes everything, and the download completes byte-exact.
    let a = args(&["--recheck", "--json"]);
    let (mut last, json) = ccfd_json(dir.path(), "last", &a.iter().map(String::as_str).collect::<Vec<_>>());
    wait_json(&mut last, &json, Duration::from_secs(60));
    last.wait(Duration::from_secs(20));
    let log = std::fs::read_to_string(dir.path().join("last.log")).unwrap();
    assert!(log.contains("no resume record to use") && log.contains("--recheck"), "{log}");
    assert_same_file(&content.join("payload.bin"), &file);
}
