//! The binary's streaming commands: the default command (stream a movie)
//! and `world` (bring up a VoD world and stream in it). Part of the binary,
//! not the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ccfd_bt::client::{Client, ClientConfig};
use ccfd_bt::metainfo::Metainfo;
use ccfd_bt::session::{SessionConfig, Snapshot};
use ccfd_bt::streaming::{PickMode, Stream, StreamOptions};
use ccfd_bt::world::vod::{VodWorld, VodWorldConfig};
use ccfd_vod::plan::Policy;
use ccfd_vod::Report;

use crate::{PlaybackArgs, Signals, StreamArgs, WorldArgs};

/// `ccfd-bt [--rate R] [--delay D] [--prefetch P] TORRENT`.
pub async fn stream_command(args: StreamArgs) -> anyhow::Result<ExitCode> {
    let torrent = args.torrent.context("give the movie's .torrent")?;
    let meta = Metainfo::from_file(&torrent).with_context(|| format!("{}", torrent.display()))?;
    let output = args.output.unwrap_or_else(|| meta.files.first().map(|f| f.path.clone()).unwrap_or_else(|| PathBuf::from(&meta.name)));
    let net = args.net;
    let client = Client::start(net.client_config()).await?;
    let opts =
        options(&args.playback, args.vod_server, output.clone(), SessionConfig { max_peers: net.max_peers, ..SessionConfig::default() });
    let code = run_stream(&client, &meta, &opts, net.peers, net.json).await;
    client.shutdown();
    code
}

fn options(p: &PlaybackArgs, server: Option<String>, output: PathBuf, config: SessionConfig) -> StreamOptions {
    StreamOptions {
        rate: p.rate * 1000.0,
        delay: p.delay,
        prefetch: p.prefetch,
        server,
        output,
        policy: Policy::default(),
        mode: PickMode::Deadline,
        config,
    }
}

/// Streams, printing a progress line each second on stderr, then the report.
async fn run_stream(
    client: &Client,
    meta: &Metainfo,
    opts: &StreamOptions,
    peers: Vec<std::net::SocketAddr>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let stream = Stream::start(client, meta, opts, peers).await?;
    let session = stream.session.clone();
    let show = !json && std::io::stderr().is_terminal();
    let mut signals = Signals::new()?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut done = session.subscribe_complete();
    loop {
        tokio::select! {
            _ = signals.recv() => {
                session.stop().await;
                return Ok(ExitCode::from(130));
            }
            _ = tick.tick() => if show { eprintln!("{}", progress_line(&stream)) },
            r = done.changed() => if r.is_err() || *done.borrow() { break },
            _ = session.shutdown.cancelled() => break,
        }
    }
    let report = {
        let snap = session.snapshot();
        let plan = stream.plan.clone();
        let result = tokio::time::timeout(Duration::from_secs(10), stream.finish()).await;
        let report = match result {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("the stream did not settle"),
        };
        print_report(meta, opts, &report, &snap, plan.playback.delay, json);
        report
    };
    session.stop().await;
    Ok(if report.stalls == 0 { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

fn progress_line(stream: &Stream) -> String {
    let now = stream.session.started.elapsed().as_secs_f64();
    let snap = stream.session.snapshot();
    let need = stream.plan.playback.required_bytes(now);
    let report = stream.report();
    format!(
        "t={now:5.1}s  need {:7.0} kB  have {:7.0} kB ({:5.1}%)  server {:6.0} kB  peers {}  stalls {}",
        need as f64 / 1e3,
        snap.verified_bytes as f64 / 1e3,
        100.0 * snap.verified_bytes as f64 / snap.total_length.max(1) as f64,
        snap.server_bytes as f64 / 1e3,
        snap.peers,
        report.stalls,
    )
}

fn print_report(meta: &Metainfo, opts: &StreamOptions, r: &Report, snap: &Snapshot, delay: f64, json: bool) {
    let from: serde_json::Map<String, serde_json::Value> = snap.bytes_from.iter().map(|(a, b)| (a.to_string(), (*b).into())).collect();
    if json {
        let v = serde_json::json!({
            "event": "stream_complete",
            "name": meta.name,
            "output": opts.output.display().to_string(),
            "bytes": r.total_bytes,
            "server_bytes": r.server_bytes,
            "server_share": r.server_share,
            "missed_pieces": r.missed_pieces,
            "pieces": r.pieces,
            "continuity": r.continuity,
            "startup_seconds": r.startup_seconds,
            "stalls": r.stalls,
            "stall_seconds": r.stall_seconds,
            "seconds": snap.seconds_to_complete,
            "bytes_from": from,
            "wasted": snap.wasted,
        });
        println!("{v}");
        return;
    }
    eprintln!("stream of {} complete: {} bytes in {:.1} s", meta.name, r.total_bytes, snap.seconds_to_complete.unwrap_or(0.0));
    eprintln!(
        "  VoD server: {} bytes ({:.1}% of the movie), {} of {} pieces missed by the swarm",
        r.server_bytes,
        100.0 * r.server_share,
        r.missed_pieces,
        r.pieces
    );
    eprintln!("  continuity index {:.3}, stalls {} ({:.1} s)", r.continuity, r.stalls, r.stall_seconds);
    match r.startup_seconds {
        Some(t) => eprintln!("  opening ready at {t:.2} s (playback starts at {delay:.1} s)"),
        None => eprintln!("  opening never complete"),
    }
    for (addr, bytes) in &snap.bytes_from {
        eprintln!("  {addr}: {bytes} bytes");
    }
}

/// `ccfd-bt world`.
pub async fn world_command(args: WorldArgs) -> anyhow::Result<ExitCode> {
    let temp;
    let dir: PathBuf = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("ccfd-world-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let movie = match &args.movie {
        Some(m) => std::fs::canonicalize(m).with_context(|| format!("cannot read {}", m.display()))?,
        None => generate_movie(&dir, args.size_kb * 1000, args.seed)?,
    };
    anyhow::ensure!(
        args.piece_kib.is_power_of_two() && (16..=4096).contains(&args.piece_kib),
        "--piece-kib must be a power of two from 16 to 4096"
    );
    let config = VodWorldConfig {
        peers: args.peers,
        upload: (args.upload * 1000.0) as u64,
        piece_length: args.piece_kib * 1024,
        seed: args.seed,
        prefix: args.prefix,
        permanent_seed: !args.no_permanent_seed,
        ..VodWorldConfig::default()
    };
    let world = VodWorld::start(&movie, &dir, config).await?;
    eprintln!("world: tracker {}, VoD server http://{}, torrent {}", world.announce, world.server.addr, world.torrent_path.display());
    if args.no_client {
        Signals::new()?.recv().await;
        return Ok(ExitCode::SUCCESS);
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let client = Client::start(ClientConfig { bind: world.client_ip(0), port: 0, ..ClientConfig::default() }).await?;
    let output = dir.join("streamed").join(movie.file_name().unwrap_or_default());
    std::fs::create_dir_all(output.parent().unwrap_or(Path::new(".")))?;
    let opts = options(&args.playback, None, output.clone(), SessionConfig::default());
    let code = run_stream(&client, &world.meta.clone(), &opts, Vec::new(), args.json).await?;
    client.shutdown();
    let same = std::fs::read(&output)? == std::fs::read(&movie)?;
    anyhow::ensure!(same, "the streamed movie differs from the original");
    Ok(code)
}

/// A stand-in movie of `len` pseudo-random bytes (seeded).
fn generate_movie(dir: &Path, len: u64, seed: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join("movie.bin");
    let data = ccfd_bt::world::pseudo_random_bytes(len as usize, seed);
    std::fs::write(&path, data)?;
    Ok(path)
}
