//! VoD server bytes: our deadline picker against rarest-first and
//! sequential, each streaming in the same seeded worlds.
//!
//! `cargo bench --bench vod -- [--worlds 10] [--first-world 1] [--size-kb 6000] [--rate 60] [--delay 6] [--prefetch 2] [--peers 10] [--upload 70]`
//! `  [--clients deadline,rarest,sequential,lt-a,lt-b,deadline-coded] [--horizon 60] [--prior-kbps 60] [--rescue 0] [--opening-lead 0] [--upload-slots 4]`
//!
//! `deadline-no-fast` (not run unless named) is the deadline picker that
//! ignores the allowed-fast pieces peers grant (BEP 6): what they bring.
//! `deadline-coded` is the deadline picker with coded cooperation on, in a
//! world whose peers offer it too; every other client runs in a world of
//! plain peers (coded off), as libtorrent has no ccfd.
//!
//! Every world (seed k) is rebuilt for every client, so each starts from the
//! same saved fractions. Prints the mean share of the movie taken from the
//! VoD server with a 95% interval, missed pieces, continuity and stalls.

use std::path::Path;
use std::time::Duration;

use ccfd_bt::client::{Client, ClientConfig};
use ccfd_bt::decide::choker::ChokerConfig;
use ccfd_bt::decide::stream_plan::PickMode;
use ccfd_bt::stream::{Stream, StreamOptions};
use ccfd_bt::swarm::TorrentConfig;
use ccfd_bt::world::vod::{VodWorld, VodWorldConfig};
use ccfd_vod::plan::Policy;
use ccfd_vod::Report;

struct Options {
    worlds: u64,
    /// The first world's seed; the rest follow (split a long run across processes).
    first_world: u64,
    size: usize,
    rate: f64,
    delay: f64,
    prefetch: f64,
    peers: usize,
    upload: u64,
    /// Which clients to run (by name: deadline, rarest, sequential, lt-a, lt-b, deadline-coded).
    clients: Vec<String>,
    policy: Policy,
    /// Our client's regular unchoke slots.
    upload_slots: usize,
}

fn parse_args() -> Options {
    let clients = ["deadline", "rarest", "sequential", "lt-a", "lt-b", "deadline-coded"].map(String::from).to_vec();
    let mut o = Options {
        worlds: 10,
        first_world: 1,
        size: 6_000_000,
        rate: 60_000.0,
        delay: 6.0,
        prefetch: 2.0,
        peers: 10,
        upload: 70_000,
        clients,
        policy: Policy::default(),
        upload_slots: ChokerConfig::default().regular_slots,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--clients" {
            o.clients = args.next().expect("--clients a,b").split(',').map(String::from).collect();
            continue;
        }
        let mut num = || args.next().and_then(|v| v.parse::<f64>().ok()).unwrap_or_else(|| panic!("{a} needs a number"));
        match a.as_str() {
            "--worlds" => o.worlds = num() as u64,
            "--first-world" => o.first_world = (num() as u64).max(1),
            "--size-kb" => o.size = (num() * 1000.0) as usize,
            "--rate" => o.rate = num() * 1000.0,
            "--delay" => o.delay = num(),
            "--prefetch" => o.prefetch = num(),
            "--peers" => o.peers = num() as usize,
            "--upload" => o.upload = (num() * 1000.0) as u64,
            "--horizon" => o.policy.horizon = num(),
            "--prior-kbps" => o.policy.prior_rate = num() * 1000.0,
            "--rescue" => o.policy.rescue_window = num(),
            "--margin" => o.policy.margin = num(),
            "--opening-lead" => o.policy.opening_lead = num(),
            "--upload-slots" => o.upload_slots = num() as usize,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

#[allow(clippy::too_many_arguments)]
async fn one_run(
    o: &Options,
    movie: &Path,
    dir: &Path,
    seed: u64,
    mode: PickMode,
    coded: bool,
    allowed_fast: bool,
    net: [u8; 2],
) -> Report {
    let config = VodWorldConfig { peers: o.peers, upload: o.upload, seed, net, coded, ..VodWorldConfig::default() };
    let world = VodWorld::start(movie, dir, config).await.expect("world");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let client_config = ClientConfig { bind: world.client_ip(0), port: 0, coded, ..ClientConfig::default() };
    let client = Client::start(client_config).await.expect("client");
    let out = dir.join("out.bin");
    let opts = StreamOptions {
        rate: o.rate,
        delay: o.delay,
        prefetch: o.prefetch,
        server: None,
        output: out,
        file: 0,
        extras: Vec::new(),
        policy: o.policy.clone(),
        mode,
        config: TorrentConfig {
            choker: ChokerConfig { regular_slots: o.upload_slots, ..ChokerConfig::default() },
            use_allowed_fast: allowed_fast,
            ..TorrentConfig::default()
        },
    };
    let stream = Stream::start(&client, &world.meta, &opts, Vec::new()).await.expect("stream");
    let report = stream.finish().await.expect("stream finished");
    client.shutdown();
    world.stop();
    report
}

/// python3-libtorrent streaming in the same world (`scripts/lt_vod.py`):
/// server share and pieces taken whole from the server (fallback mode).
async fn libtorrent_run(o: &Options, movie: &Path, dir: &Path, seed: u64, mode: &str, net: [u8; 2]) -> Option<(f64, f64)> {
    let config = VodWorldConfig { peers: o.peers, upload: o.upload, seed, net, coded: false, ..VodWorldConfig::default() };
    let world = VodWorld::start(movie, dir, config).await.ok()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ip = world.client_ip(1);
    let save = dir.join("lt");
    std::fs::create_dir_all(&save).ok()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lt_vod.py");
    let mut cmd = std::process::Command::new("/usr/bin/python3");
    cmd.arg(script).arg(&world.torrent_path).arg(&save).arg(ip.to_string());
    cmd.arg(o.rate.to_string()).arg(o.delay.to_string()).arg(o.prefetch.to_string()).arg(mode);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.ok()?.ok()?;
    world.stop();
    if !out.status.success() {
        eprintln!("libtorrent ({mode}) failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    // The fallback fetches come from the script's own HTTP client, not from ip: it counts them.
    let served = world.server.served_to(ip).max(v["server_bytes"].as_u64().unwrap_or(0));
    let share = served as f64 / o.size as f64;
    Some((share, v["pieces_from_server"].as_f64().unwrap_or(f64::NAN)))
}

fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if n > 1.0 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, 1.96 * (var / n).sqrt())
}

/// A world's 127.x.y.0/24 block: distinct per client and seed, so bench
/// processes running different worlds side by side never share addresses.
fn world_net(x: u8, client: usize, seed: u64) -> [u8; 2] {
    [x, ((client as u64 * 60 + seed) % 250) as u8]
}

fn main() {
    let o = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let tmp = tempfile::Builder::new().prefix("ccfd-vod-bench-").tempdir().expect("temp dir");
    let movie = tmp.path().join("movie.bin");
    let data = ccfd_bt::world::pseudo_random_bytes(o.size, 7);
    std::fs::write(&movie, data).unwrap();
    println!(
        "movie {} kB, R = {} kB/s, D = {} s, P = {} s, {} world peers at {} kB/s + 1 permanent seed, worlds {}..{}",
        o.size / 1000,
        o.rate / 1000.0,
        o.delay,
        o.prefetch,
        o.peers,
        o.upload / 1000,
        o.first_world,
        o.first_world + o.worlds - 1
    );
    println!("{:<14} {:>20} {:>16} {:>12} {:>8}", "client", "server share (95%)", "missed pieces", "continuity", "stalls");
    let modes = [
        (PickMode::Deadline, "ccfd deadline", "deadline", false),
        (PickMode::RarestFirst, "rarest-first", "rarest", false),
        (PickMode::Sequential, "sequential", "sequential", false),
        (PickMode::Deadline, "deadline coded", "deadline-coded", true),
        // The deadline picker that ignores allowed-fast grants (BEP 6): what they bring.
        (PickMode::Deadline, "deadline no-AF", "deadline-no-fast", false),
    ];
    for (m, (mode, name, key, coded)) in modes.into_iter().enumerate() {
        if !o.clients.iter().any(|c| c == key) {
            continue;
        }
        let mut share = Vec::new();
        let mut missed = Vec::new();
        let mut continuity = Vec::new();
        let mut stalls = 0;
        for seed in o.first_world..o.first_world + o.worlds {
            let dir = tmp.path().join(format!("{name}-{seed}").replace(' ', "-"));
            std::fs::create_dir_all(&dir).unwrap();
            let allowed_fast = key != "deadline-no-fast";
            let r = rt.block_on(one_run(&o, &movie, &dir, seed, mode, coded, allowed_fast, world_net(73, m, seed)));
            eprintln!("  {name} world {seed}: {:.1}% from the server, {} pieces missed", 100.0 * r.server_share, r.missed_pieces);
            share.push(r.server_share);
            missed.push(f64::from(r.missed_pieces));
            continuity.push(r.continuity);
            stalls += r.stalls;
        }
        let (s, ci) = mean_ci(&share);
        let (mp, _) = mean_ci(&missed);
        let (c, _) = mean_ci(&continuity);
        println!("{name:<14} {:>12.1}% ± {:>4.1} {mp:>16.1} {c:>12.3} {stalls:>8}", 100.0 * s, 100.0 * ci);
    }
    for (m, (mode, name, key)) in [("webseed", "lt (a) webseed", "lt-a"), ("fallback", "lt (b) rule", "lt-b")].into_iter().enumerate() {
        if !o.clients.iter().any(|c| c == key) {
            continue;
        }
        let mut share = Vec::new();
        let mut missed = Vec::new();
        for seed in o.first_world..o.first_world + o.worlds {
            let dir = tmp.path().join(format!("lt-{mode}-{seed}"));
            std::fs::create_dir_all(&dir).unwrap();
            match rt.block_on(libtorrent_run(&o, &movie, &dir, seed, mode, world_net(74, m, seed))) {
                Some((s, p)) => {
                    share.push(s);
                    missed.push(p);
                }
                None => break,
            }
        }
        if share.is_empty() {
            println!("{name:<14} (not run: python3-libtorrent missing or failed)");
            continue;
        }
        let (s, ci) = mean_ci(&share);
        let (mp, _) = mean_ci(&missed);
        println!("{name:<14} {:>12.1}% ± {:>4.1} {mp:>16.1} {:>12} {:>8}", 100.0 * s, 100.0 * ci, "-", "-");
    }
}
