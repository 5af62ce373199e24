//! Distribution time against the fluid bound.
//!
//! `cargo bench --bench swarm -- [--n 6,12,24] [--rate-kib 1024] [--size-mib 32] [--no-libtorrent] [--coded on|off|both]`
//!
//! One seed and N leechers, every upload capped at the same rate u, the
//! file F, everyone starting together. The fluid bound (Kumar and Ross) is
//! T* = max(F/u_s, F/d_min, N F / (u_s + sum u_i)); with equal uploads and
//! unlimited downloads that is F/u. Prints the time until every leecher
//! finished over T*, and the seed's upload over F, for ccfd-bt (in-process
//! world) and for python3-libtorrent (plain and super-seeding) on the same
//! torrent in the same run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ccfd_bt::api::Peer;
use ccfd_bt::world::World;
use ccfd_proto::metainfo::{self, CreateOptions};

struct Options {
    sizes: Vec<usize>,
    rate: u64,
    file: u64,
    libtorrent: bool,
    /// ccfd-bt runs with coded cooperation on, off, or both.
    coded: Vec<bool>,
}

fn parse_args() -> Options {
    let mut o = Options { sizes: vec![6], rate: 1 << 20, file: 32 << 20, libtorrent: true, coded: vec![true, false] };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--n" => o.sizes = value().split(',').map(|s| s.parse().expect("--n 6,12,24")).collect(),
            "--rate-kib" => o.rate = value().parse::<u64>().expect("--rate-kib KIB") << 10,
            "--size-mib" => o.file = value().parse::<u64>().expect("--size-mib MIB") << 20,
            "--no-libtorrent" => o.libtorrent = false,
            "--coded" => {
                o.coded = match value().as_str() {
                    "on" => vec![true],
                    "off" => vec![false],
                    _ => vec![true, false],
                }
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

struct Outcome {
    seconds: f64,
    seed_uploaded: u64,
}

fn ccfd_swarm(dir: &Path, content: &Path, n: usize, rate: u64, subnet: u8, coded: bool) -> Outcome {
    let mut world = World::new(61, subnet).expect("world");
    world.options.coded = coded;
    world.options.download_timeout = Duration::from_secs(1800);
    world.options.data_dir = Some(dir.join("ccfd-seed"));
    let seed = world.peer(Some(rate), None).expect("seed");
    let id = seed.register(content).expect("register");
    let leechers: Vec<Peer> = (0..n)
        .map(|i| {
            world.options.data_dir = Some(dir.join(format!("ccfd-{i}")));
            world.peer(Some(rate), None).expect("leecher")
        })
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = leechers.iter().map(|p| s.spawn(|| p.download(&id).map(|b| b.len()))).collect();
        for h in handles {
            h.join().expect("leecher thread").expect("download");
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let seed_uploaded = seed.stats(&id).map_or(0, |s| s.uploaded);
    Outcome { seconds, seed_uploaded }
}

fn libtorrent_swarm(torrent: &Path, content: &Path, dir: &Path, n: usize, rate: u64, subnet: u8, super_seed: bool) -> Option<Outcome> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lt_swarm.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).arg(torrent).arg(content.parent()?).arg(dir).arg(n.to_string()).arg(rate.to_string()).arg(subnet.to_string());
    if super_seed {
        cmd.arg("super");
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        eprintln!("libtorrent swarm failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(Outcome { seconds: v["seconds"].as_f64()?, seed_uploaded: v["seed_uploaded"].as_u64()? })
}

fn main() {
    // Logs only when asked for (RUST_LOG), on stderr: the figures stay on stdout.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let o = parse_args();
    let tmp = tempfile::Builder::new().prefix("ccfd-swarm-bench-").tempdir().expect("temp dir");
    let content_dir = tmp.path().join("content");
    std::fs::create_dir_all(&content_dir).unwrap();
    let content = content_dir.join("payload.bin");
    let data = ccfd_bt::world::pseudo_random_bytes(o.file as usize, 1);
    std::fs::write(&content, &data).unwrap();
    let torrent = tmp.path().join("payload.torrent");
    let opts = CreateOptions { piece_length: metainfo::default_piece_length(o.file), trackers: Vec::new(), web_seeds: Vec::new() };
    std::fs::write(&torrent, metainfo::create(&content, &opts).unwrap()).unwrap();
    let t_star = o.file as f64 / o.rate as f64;
    println!(
        "F = {} MiB, u = {} KiB/s for every peer, pieces of {} KiB, T* = F/u = {t_star:.1} s",
        o.file >> 20,
        o.rate >> 10,
        opts.piece_length >> 10
    );
    println!("{:>4}  {:<26} {:>9} {:>8} {:>13}", "N", "client", "seconds", "T/T*", "seed up / F");
    let row = |n: usize, name: &str, r: &Outcome| {
        println!("{n:>4}  {name:<26} {:>9.1} {:>8.3} {:>13.3}", r.seconds, r.seconds / t_star, r.seed_uploaded as f64 / o.file as f64);
    };
    for (k, &n) in o.sizes.iter().enumerate() {
        let dir = tmp.path().join(format!("n{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (j, &coded) in o.coded.iter().enumerate() {
            let name = if coded { "ccfd-bt coded (super-seed)" } else { "ccfd-bt plain (super-seed)" };
            let run = dir.join(format!("ccfd-{coded}"));
            row(n, name, &ccfd_swarm(&run, &content, n, o.rate, (2 * k + j) as u8, coded));
        }
        if o.libtorrent {
            for (super_seed, name, subnet) in
                [(false, "libtorrent", 100 + 2 * k as u8), (true, "libtorrent (super-seed)", 101 + 2 * k as u8)]
            {
                let work = dir.join(format!("lt-{subnet}"));
                match libtorrent_swarm(&torrent, &content, &work, n, o.rate, subnet, super_seed) {
                    Some(r) => row(n, name, &r),
                    None => println!("{n:>4}  {name:<26} (not run: python3-libtorrent missing or failed)"),
                }
            }
        }
    }
}
