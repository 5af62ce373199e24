//! The built-in tracker with real clients: they announce to it and find
//! each other through it, over HTTP and UDP.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(120);

fn builtin_tracker(dir: &std::path::Path, net: &Net) -> Proc {
    let (http, udp) = (net.addr(1, 6969), net.addr(1, 6970));
    let p = Proc::spawn(
        "tracker",
        Command::new(BIN).args(["tracker", "--http", &http, "--udp", &udp]).env("RUST_LOG", log_filter()),
        &dir.join("tracker.log"),
    );
    wait_port(&http, Duration::from_secs(10));
    p
}

#[test]
fn transmission_seeds_aria2_and_libtorrent_leech_through_the_http_tracker() {
    let tmp = test_dir();
    let dir = tmp.path();
    let net = Net::new(20);
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("movie.bin"), payload(2_000_000, 11)).unwrap();
    let torrent = dir.join("movie.torrent");
    let hash = create_torrent(&seed.join("movie.bin"), &torrent, &[format!("http://{}/announce", net.addr(1, 6969))], 64 * 1024);
    let _tracker = builtin_tracker(dir, &net);
    let tr = Transmission::start(dir, "transmission-seed", &net.ip(2), 6881, 9091, &seed);
    tr.add(&torrent);
    tr.wait_percent(100.0, Duration::from_secs(30));
    wait_until("transmission's announce", Duration::from_secs(60), || scrape_seeders(&net.addr(1, 6969), &hash) >= 1);
    let (a_out, l_out) = (dir.join("aria2"), dir.join("lt"));
    std::fs::create_dir_all(&a_out).unwrap();
    std::fs::create_dir_all(&l_out).unwrap();
    let mut aria = aria2(dir, "aria2-leech", "download", &torrent, &a_out, &net.ip(3), 6881);
    let mut lt = libtorrent(dir, "lt-leech", "download", &torrent, &l_out, &net.addr(4, 6881), &[]);
    assert!(aria.wait(TIMEOUT).success(), "{}", aria.log_text());
    assert!(lt.wait(TIMEOUT).success(), "{}", lt.log_text());
    assert_same_file(&seed.join("movie.bin"), &a_out.join("movie.bin"));
    assert_same_file(&seed.join("movie.bin"), &l_out.join("movie.bin"));
}

#[test]
fn ccfd_seeds_libtorrent_leeches_through_the_udp_tracker() {
    let tmp = test_dir();
    let dir = tmp.path();
    let net = Net::new(20);
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("movie.bin"), payload(1_500_000, 12)).unwrap();
    let torrent = dir.join("movie.torrent");
    let hash = create_torrent(&seed.join("movie.bin"), &torrent, &[format!("udp://{}/announce", net.addr(1, 6970))], 64 * 1024);
    let _tracker = builtin_tracker(dir, &net);
    let (t, d, ip) = (torrent.display().to_string(), seed.display().to_string(), net.ip(2));
    let _seed = ccfd(dir, "ccfd-seed", &["seed", &t, "--data", &d, "--bind", &ip, "--port", "6881"]);
    wait_until("the seed's UDP announce", Duration::from_secs(30), || scrape_seeders(&net.addr(1, 6969), &hash) >= 1);
    let out = dir.join("lt");
    std::fs::create_dir_all(&out).unwrap();
    let mut lt = libtorrent(dir, "lt-leech", "download", &torrent, &out, &net.addr(3, 6881), &[]);
    assert!(lt.wait(TIMEOUT).success(), "{}", lt.log_text());
    assert_same_file(&seed.join("movie.bin"), &out.join("movie.bin"));
}
