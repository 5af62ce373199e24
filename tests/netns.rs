//! Coded cooperation where the kernel drops the packets: a private network
//! namespace (its own loopback, so all traffic stays on 127.0.0.0/8) with an
//! nftables rule dropping 10% of everything sent to the receiver, TCP and
//! UDP alike. Skipped, with a message, where namespaces cannot be made.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::netns::Netns;
use common::{payload, test_dir, Proc, BIN};

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    serde_json::from_str(text.lines().next().unwrap_or("{}")).unwrap_or_default()
}

#[test]
fn coded_download_through_kernel_packet_loss() {
    let name = format!("ccfd-test-{}", std::process::id());
    let Some(ns) = Netns::create(&name) else {
        eprintln!("SKIPPED: cannot create a network namespace here (needs root and iproute2)");
        return;
    };
    let drop_rule = "add rule inet ccfd in ip daddr 127.0.0.3 numgen random mod 100 < 10 drop";
    let nft_ready = ns.run("nft", &["add", "table", "inet", "ccfd"])
        && ns.run("nft", &["add chain inet ccfd in { type filter hook input priority 0; }"])
        && ns.run("nft", &[drop_rule]);
    if !nft_ready {
        eprintln!("SKIPPED: nftables is not available (scripts/setup.sh installs it)");
        return;
    }
    let dir = test_dir();
    let d = dir.path();
    let data = payload(3_000_000, 77);
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/f.bin"), &data).unwrap();
    let torrent = d.join("f.torrent");
    let created =
        Command::new(BIN).arg("create").arg(d.join("seed/f.bin")).arg("-o").arg(&torrent).args(["--piece-length", "65536"]).output();
    assert!(created.unwrap().status.success());

    let mut seed_cmd = ns.command(BIN);
    seed_cmd.arg("seed").arg(&torrent).arg("--data").arg(d.join("seed")).args(["--bind", "127.0.0.2", "--port", "16881", "--no-dht"]);
    let _seed = Proc::spawn("seed", &mut seed_cmd, &d.join("seed.log"));
    std::thread::sleep(Duration::from_millis(500));
    let mut dl_cmd = ns.command(BIN);
    dl_cmd.arg("download").arg(&torrent).arg("-o").arg(d.join("dl"));
    // --coded: from the first block (by default it starts plain and turns coded once TCP retransmits).
    dl_cmd.args(["--bind", "127.0.0.3", "--port", "0", "--peer", "127.0.0.2:16881", "--json", "--no-dht", "--coded"]);
    let out = d.join("dl.json");
    let stdout = std::fs::File::create(&out).unwrap();
    let log = std::fs::File::create(d.join("dl.log")).unwrap();
    let mut dl = dl_cmd.stdout(stdout).stderr(log).spawn().expect("ip netns exec ccfd-bt download");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = dl.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = dl.kill();
            let _ = dl.wait();
            panic!("the download did not finish through 10% kernel loss");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "download exited {status}");
    assert!(std::fs::read(d.join("dl/f.bin")).unwrap() == data, "the file differs");
    let summary = read_json(&out);
    let coded = summary["coded_bytes"].as_u64().unwrap_or(0);
    assert!(coded >= 2_700_000, "only {coded} bytes came coded: {summary}");
    drop(ns);
}

#[test]
fn a_utp_download_through_five_percent_kernel_loss_both_ways() {
    let name = format!("ccfd-utp-{}", std::process::id());
    let Some(ns) = Netns::create(&name) else {
        eprintln!("SKIPPED: cannot create a network namespace here (needs root and iproute2)");
        return;
    };
    // 5% of every packet to either end: data one way, acks the other.
    let nft_ready = ns.run("nft", &["add", "table", "inet", "ccfd"])
        && ns.run("nft", &["add chain inet ccfd in { type filter hook input priority 0; }"])
        && ns.run("nft", &["add rule inet ccfd in ip daddr { 127.0.0.2, 127.0.0.3 } numgen random mod 100 < 5 drop"]);
    if !nft_ready {
        eprintln!("SKIPPED: nftables is not available (scripts/setup.sh installs it)");
        return;
    }
    let dir = test_dir();
    let d = dir.path();
    let data = payload(2_000_000, 78);
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/f.bin"), &data).unwrap();
    let torrent = d.join("f.torrent");
    let created =
        Command::new(BIN).arg("create").arg(d.join("seed/f.bin")).arg("-o").arg(&torrent).args(["--piece-length", "65536"]).output();
    assert!(created.unwrap().status.success());
    // uTP only, plain wire only: the loss is uTP's to recover.
    let only = ["--no-tcp", "--no-coded", "--no-dht"];
    let mut seed_cmd = ns.command(BIN);
    seed_cmd.arg("seed").arg(&torrent).arg("--data").arg(d.join("seed")).args(["--bind", "127.0.0.2", "--port", "16882"]).args(only);
    let _seed = Proc::spawn("seed", &mut seed_cmd, &d.join("seed.log"));
    std::thread::sleep(Duration::from_millis(500));
    let mut dl_cmd = ns.command(BIN);
    dl_cmd.arg("download").arg(&torrent).arg("-o").arg(d.join("dl"));
    dl_cmd.args(["--bind", "127.0.0.3", "--port", "0", "--peer", "127.0.0.2:16882", "--json"]).args(only);
    let out = d.join("dl.json");
    let log = std::fs::File::create(d.join("dl.log")).unwrap();
    let mut dl = dl_cmd.stdout(std::fs::File::create(&out).unwrap()).stderr(log).spawn().expect("ip netns exec ccfd-bt download");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = dl.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = dl.kill();
            let _ = dl.wait();
            panic!("the uTP download did not finish through 5% loss: {}", std::fs::read_to_string(d.join("dl.log")).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "download exited {status}");
    assert!(std::fs::read(d.join("dl/f.bin")).unwrap() == data, "the file differs");
    let summary = read_json(&out);
    assert_eq!(summary["peers"][0]["transport"], "utp", "{summary}");
    drop(ns);
}
