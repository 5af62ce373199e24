//! The binary's streaming commands: the default command (stream a movie),
//! `world` (bring up a VoD world and stream in it) and `demo` (the world on
//! the bundled movie). Each shows the dashboard or progress lines, and can
//! serve the movie to a player while it downloads. Part of the binary.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ccfd_bt::client::{Client, ClientConfig};
use ccfd_bt::decide::file_select;
use ccfd_bt::decide::stream_plan::PickMode;
use ccfd_bt::stream::watch_server::WatchServer;
use ccfd_bt::stream::{Stream, StreamOptions};
use ccfd_bt::swarm::{Snapshot, TorrentConfig};
use ccfd_bt::world::vod::{VodWorld, VodWorldConfig};
use ccfd_proto::metainfo::Metainfo;
use ccfd_vod::plan::Policy;
use ccfd_vod::Report;
use tokio_util::sync::CancellationToken;

use crate::dashboard_feed::Feed;
use crate::log_sink::LogSink;
use crate::source::{human, Source};
use crate::{PlaybackArgs, Signals, StreamArgs, ViewArgs, WorldArgs};

/// The bundled demo movie (60 s of ffmpeg test pattern and tone, H.264/AAC,
/// 397 kbit/s) and its .torrent, so `ccfd-bt demo` needs nothing else.
const DEMO_MOVIE: &[u8] = include_bytes!("../../../torrents/ccfd-demo.mp4");
const DEMO_TORRENT: &[u8] = include_bytes!("../../../torrents/ccfd-demo.mp4.torrent");

/// How a stream is presented.
struct Presentation<'a> {
    json: bool,
    view: &'a ViewArgs,
    /// Set when the dashboard owns the terminal.
    dashboard: Option<LogSink>,
    /// Header text: picker and where the run takes place.
    mode: String,
    /// Seconds spent fetching a magnet link's metadata before the stream started.
    metadata_seconds: f64,
}

/// `ccfd-bt [--rate R] [--delay D] [--prefetch P] TORRENT|MAGNET`.
pub async fn stream_command(args: StreamArgs, dashboard: Option<LogSink>) -> anyhow::Result<ExitCode> {
    let arg = args.torrent.context("give the movie's .torrent or magnet link")?;
    let source = Source::parse(&arg, args.magnet.trackers, args.magnet.metadata_timeout)?;
    let net = args.net;
    let client = Client::start(net.client_config()).await?;
    let code = async {
        let Some(resolved) = source.resolve(&client, &net.peers, net.json).await? else {
            return Ok(ExitCode::from(130));
        };
        let meta = resolved.meta;
        let file = match &args.file {
            Some(spec) => file_select::resolve(&meta, spec)?,
            None => file_select::default_stream_file(&meta)?,
        };
        let extras = if args.no_subs { Vec::new() } else { file_select::subtitles_for(&meta, file) };
        if meta.files.len() > 1 && !net.json {
            let f = &meta.files[file];
            eprintln!("playing file {file}: {} ({})", f.path.display(), human(f.length));
            for &i in &extras {
                eprintln!("  with subtitles {i}: {}", meta.files[i].path.display());
            }
        }
        let output = match args.output {
            Some(o) => o,
            None if meta.files.len() == 1 => meta.files[0].path.clone(),
            None => PathBuf::from("."),
        };
        let config = TorrentConfig { max_peers: net.max_peers, recheck: net.recheck, ..TorrentConfig::default() };
        let opts = StreamOptions { file, extras, ..options(&args.playback, args.vod_server, output, config) };
        let show = Presentation {
            json: net.json,
            view: &args.view,
            dashboard,
            mode: "deadline picker".into(),
            metadata_seconds: resolved.fetch_seconds,
        };
        run_stream(&client, &meta, &opts, net.peers.clone(), show).await
    }
    .await;
    client.close().await;
    code
}

fn options(p: &PlaybackArgs, server: Option<String>, output: PathBuf, config: TorrentConfig) -> StreamOptions {
    StreamOptions {
        rate: p.rate * 1000.0,
        delay: p.delay,
        prefetch: p.prefetch,
        server,
        output,
        file: 0,
        extras: Vec::new(),
        policy: Policy::default(),
        mode: PickMode::Deadline,
        config,
    }
}

/// Streams with the dashboard or progress lines, serving the movie to a
/// player if asked; then prints the report.
async fn run_stream(
    client: &Client,
    meta: &Metainfo,
    opts: &StreamOptions,
    peers: Vec<std::net::SocketAddr>,
    show: Presentation<'_>,
) -> anyhow::Result<ExitCode> {
    let stream = Stream::start(client, meta, opts, peers).await?;
    let torrent = stream.torrent.clone();
    let serving = CancellationToken::new();
    let _stop_serving = serving.clone().drop_guard();
    let watch = match show.view.serve_addr() {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot serve on {addr}"))?;
            Some(WatchServer::start(listener, stream.handle(), serving.clone())?)
        }
        None => None,
    };
    if let Some(w) = &watch {
        tracing::info!(url = %w.url, "serving the movie while it downloads");
        if show.dashboard.is_none() && !show.json {
            eprintln!("watch while it downloads: {}", w.url);
        }
    }
    let mut player = match (&show.view.player, &watch) {
        (Some(cmd), Some(w)) => {
            // Subtitles come first: give them until the opening to arrive.
            let subs = if stream.extra_paths.is_empty() { Vec::new() } else { wait_extras(&stream).await };
            Some(Player::start(cmd, &w.url, &subs, show.dashboard.is_some())?)
        }
        _ => None,
    };
    let mut signals = Signals::new()?;
    let finished = match &show.dashboard {
        Some(sink) => {
            let mode = show.mode.clone();
            dashboard(&stream, mode, watch.as_ref().map(|w| w.url.clone()), sink, &mut signals).await?
        }
        None => progress_lines(&stream, !show.json && std::io::stderr().is_terminal(), &mut signals).await,
    };
    if let Some(sink) = &show.dashboard {
        eprintln!("log: {}", sink.path.display());
    }
    if !finished {
        let report = stream.report();
        if let Some(p) = &mut player {
            p.stop();
        }
        torrent.stop().await;
        if !show.json {
            eprintln!("stopped before the end: {} bytes from the VoD server so far, {} stalls", report.server_bytes, report.stalls);
        }
        return Ok(ExitCode::from(130));
    }
    let snap = torrent.snapshot();
    let delay = stream.plan.schedule().playback.delay;
    let report = match tokio::time::timeout(Duration::from_secs(10), stream.finish()).await {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("the stream did not settle"),
    };
    print_report(meta, opts, &report, &snap, delay, show.json, show.metadata_seconds);
    // A player still watching keeps the endpoint up until it exits.
    match (&mut player, &watch) {
        (Some(p), _) if show.dashboard.is_none() => {
            tokio::select! {
                _ = p.wait() => {}
                _ = signals.recv() => p.stop(),
            }
        }
        (Some(p), _) => p.stop(),
        (None, Some(w)) if show.dashboard.is_none() => {
            eprintln!("download complete; still serving {} until Ctrl-C", w.url);
            signals.recv().await;
        }
        _ => {}
    }
    torrent.stop().await;
    Ok(if report.stalls == 0 { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

/// Progress lines each second until the download completes; false if a
/// signal stopped it first.
async fn progress_lines(stream: &Stream, show: bool, signals: &mut Signals) -> bool {
    let torrent = &stream.torrent;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut done = torrent.subscribe_complete();
    loop {
        tokio::select! {
            _ = signals.recv() => return false,
            _ = tick.tick() => if show { eprintln!("{}", progress_line(stream)) },
            r = done.changed() => if r.is_err() || *done.borrow() { return true },
            _ = torrent.shutdown.cancelled() => return true,
        }
    }
}

/// The dashboard until the user quits (or a signal); true if the download
/// had completed by then.
async fn dashboard(stream: &Stream, mode: String, url: Option<String>, sink: &LogSink, signals: &mut Signals) -> anyhow::Result<bool> {
    let mut feed = Feed::new(stream.handle(), mode, url, sink.lines.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let ui_stop = stop.clone();
    let mut ui = tokio::task::spawn_blocking(move || ccfd_tui::run(|| feed.view(), Duration::from_millis(250), &ui_stop));
    let result = tokio::select! {
        r = &mut ui => r,
        _ = signals.recv() => {
            stop.store(true, Ordering::Relaxed);
            ui.await
        }
    };
    result.context("the dashboard task failed")?.context("the dashboard failed")?;
    Ok(stream.torrent.is_complete())
}

/// The subtitle files on disk once they are verified, waiting at most
/// until the opening deadline; those still missing then are left out.
async fn wait_extras(stream: &Stream) -> Vec<PathBuf> {
    let schedule = stream.plan.schedule();
    let opening = schedule.playback.byte_deadline(schedule.playback.origin());
    let limit = Duration::from_secs_f64((opening - stream.now()).clamp(0.5, 60.0));
    let mut verified = stream.torrent.subscribe_verified();
    let _ = tokio::time::timeout(limit, async {
        while !stream.extras_ready() {
            if verified.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    if stream.extras_ready() {
        stream.extra_paths.clone()
    } else {
        tracing::warn!("the subtitles did not arrive before the opening; playing without them");
        Vec::new()
    }
}

/// A player started on the `--serve` URL; ended by pid when we stop first.
struct Player {
    child: Option<std::process::Child>,
}

impl Player {
    /// Starts `cmd` (a program and its arguments) with `url` appended, and
    /// the subtitle files for players that take `--sub-file` (mpv, VLC);
    /// `quiet` sends its output to /dev/null (the dashboard owns the terminal).
    fn start(cmd: &str, url: &str, subs: &[PathBuf], quiet: bool) -> anyhow::Result<Player> {
        let mut words = cmd.split_whitespace();
        let program = words.next().context("--player needs a command")?;
        let mut command = std::process::Command::new(program);
        command.args(words);
        let base = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or("");
        if matches!(base, "mpv" | "vlc" | "cvlc") {
            for sub in subs {
                command.arg(format!("--sub-file={}", sub.display()));
            }
        }
        command.arg(url).stdin(std::process::Stdio::null());
        if quiet {
            command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        } else if let Ok(stderr) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
            // Our stdout is for --json: the player talks on stderr.
            command.stdout(std::process::Stdio::from(stderr));
        }
        let child = command.spawn().with_context(|| format!("cannot start the player {program:?}"))?;
        tracing::info!(pid = child.id(), program, "player started");
        Ok(Player { child: Some(child) })
    }

    /// Waits for the player to exit.
    async fn wait(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        match tokio::task::spawn_blocking(move || (child.wait(), child)).await {
            Ok((status, _)) => tracing::info!(?status, "player exited"),
            Err(e) => tracing::warn!(error = %e, "waiting for the player failed"),
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop();
    }
}

fn progress_line(stream: &Stream) -> String {
    let now = stream.torrent.started.elapsed().as_secs_f64();
    let snap = stream.torrent.snapshot();
    let need = stream.plan.schedule().playback.required_bytes(now);
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

fn print_report(meta: &Metainfo, opts: &StreamOptions, r: &Report, snap: &Snapshot, delay: f64, json: bool, metadata_seconds: f64) {
    let from: serde_json::Map<String, serde_json::Value> = snap.bytes_from.iter().map(|(a, b)| (a.to_string(), (*b).into())).collect();
    if json {
        let v = serde_json::json!({
            "event": "stream_complete",
            "name": meta.name,
            "output": opts.output.display().to_string(),
            "file": opts.file,
            "path": meta.files.get(opts.file).map(|f| f.path.display().to_string()),
            "subtitles": opts.extras,
            "metadata_seconds": metadata_seconds,
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
    if metadata_seconds > 0.0 {
        eprintln!("  metadata from peers took {metadata_seconds:.2} s before that");
    }
    for (addr, bytes) in &snap.bytes_from {
        eprintln!("  {addr}: {bytes} bytes");
    }
}

/// `ccfd-bt demo`: the world on the bundled movie, on the dashboard.
pub async fn demo_command(args: WorldArgs, dashboard: Option<LogSink>) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.movie.is_none(), "the demo streams its bundled movie; use `ccfd-bt world --movie FILE` for another");
    world_command(args, dashboard, Some(DEMO_MOVIE)).await
}

/// `ccfd-bt world` (and the demo, with its bundled movie).
pub async fn world_command(args: WorldArgs, dashboard: Option<LogSink>, bundled: Option<&[u8]>) -> anyhow::Result<ExitCode> {
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
    let movie = match (&args.movie, bundled) {
        (_, Some(bytes)) => {
            let path = dir.join("ccfd-demo.mp4");
            std::fs::write(&path, bytes)?;
            path
        }
        (Some(m), None) => std::fs::canonicalize(m).with_context(|| format!("cannot read {}", m.display()))?,
        (None, None) => generate_movie(&dir, args.size_kb * 1000, args.seed)?,
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
        coded: !args.no_coded,
        ..VodWorldConfig::default()
    };
    let world = VodWorld::start(&movie, &dir, config).await?;
    if bundled.is_some() {
        // The world made its own torrent of the movie: it must be the bundled one.
        let expected = Metainfo::from_bytes(DEMO_TORRENT).context("the bundled demo torrent")?;
        anyhow::ensure!(expected.info_hash == world.meta.info_hash, "the bundled demo movie does not match its torrent");
    }
    eprintln!("world: tracker {}, VoD server http://{}, torrent {}", world.announce, world.server.addr, world.torrent_path.display());
    if args.no_client {
        Signals::new()?.recv().await;
        return Ok(ExitCode::SUCCESS);
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let client = Client::start(ClientConfig {
        bind: world.client_ip(0),
        port: 0,
        coded: !args.no_coded,
        // Like the world's peers: coded on every (loopback) path.
        coded_min_rtt: Duration::ZERO,
        ..ClientConfig::default()
    })
    .await?;
    let output = dir.join("streamed").join(movie.file_name().unwrap_or_default());
    std::fs::create_dir_all(output.parent().unwrap_or(Path::new(".")))?;
    let opts = options(&args.playback, None, output.clone(), TorrentConfig::default());
    let mode = format!("deadline picker · world of {} peers at {} kB/s", args.peers, args.upload);
    let show = Presentation { json: args.json, view: &args.view, dashboard, mode, metadata_seconds: 0.0 };
    let code = run_stream(&client, &world.meta.clone(), &opts, Vec::new(), show).await?;
    client.shutdown();
    if code == ExitCode::from(130) {
        return Ok(code);
    }
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
