//! The `ccfd-bt` command line.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use ccfd_bt::client::{Client, ClientConfig};
use ccfd_bt::decide::file_select;
use ccfd_bt::decide::superseed::SuperSeedMode;
use ccfd_bt::discovery::dht::DhtConfig;
use ccfd_bt::net::Encryption;
use ccfd_bt::storage::OpenMode;
use ccfd_bt::swarm::{Snapshot, TorrentConfig};
use ccfd_proto::metainfo::{self, CreateOptions, Metainfo};

use source::{load, Source};

mod dashboard_feed;
mod log_sink;
mod source;
mod stream_cli;

/// A streaming BitTorrent client. Rates are in kB/s (1 kB = 1000 bytes), times in seconds.
///
/// Without a subcommand it streams a movie: `ccfd-bt --rate 60 --delay 6 --prefetch 2 movie.torrent`.
#[derive(Parser)]
#[command(
    name = "ccfd-bt",
    version,
    about,
    propagate_version = true,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    stream: StreamArgs,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Download a torrent; exits 0 once every piece is verified.
    Download(DownloadArgs),
    /// Seed a torrent from data already on disk, until SIGINT/SIGTERM.
    Seed(SeedArgs),
    /// Create a .torrent file for a file or folder.
    Create(CreateArgs),
    /// Describe a torrent (a .torrent, or a magnet link whose metadata is fetched): trackers, web seeds, files.
    Info(InfoArgs),
    /// Run a BitTorrent tracker (HTTP and/or UDP), open to any torrent, until SIGINT/SIGTERM.
    Tracker(TrackerArgs),
    /// Bring up a local VoD world (tracker, capped world peers, VoD server) and stream a movie in it.
    World(WorldArgs),
    /// The world on the bundled demo movie, streamed on the dashboard (the README's first command).
    Demo(WorldArgs),
}

/// Playback parameters (the workshop's flags).
#[derive(Args, Clone)]
struct PlaybackArgs {
    /// Playback rate R, kB/s (1000 B/s).
    #[arg(long, default_value_t = 60.0, value_parser = parse_positive)]
    rate: f64,
    /// Startup delay D, seconds: playback starts this long after the client.
    #[arg(long, default_value_t = 6.0, value_parser = parse_non_negative)]
    delay: f64,
    /// Prefetch P, seconds: bytes must arrive this long before they play.
    #[arg(long, default_value_t = 2.0, value_parser = parse_non_negative)]
    prefetch: f64,
}

#[derive(Args)]
struct StreamArgs {
    /// The movie: a .torrent file, a magnet link, or a bare info-hash.
    #[arg(required = true, value_name = "TORRENT|MAGNET")]
    torrent: Option<String>,
    #[command(flatten)]
    playback: PlaybackArgs,
    /// VoD server (HTTP, Range requests); default: the torrent's url-list (BEP 19).
    #[arg(long, value_name = "URL")]
    vod_server: Option<String>,
    /// Where to write: the movie's file for a single-file torrent (default:
    /// its name in the current folder) or an existing folder to put it in;
    /// the download folder for one file of many (default: the current folder).
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// The file to play, by index or path (`ccfd-bt info` lists them);
    /// default: the largest video file.
    #[arg(long, value_name = "PATH|INDEX")]
    file: Option<String>,
    /// Do not fetch the subtitle files beside the movie (.srt, .ass, .ssa, .vtt) nor hand them to the player.
    #[arg(long)]
    no_subs: bool,
    #[command(flatten)]
    magnet: MagnetArgs,
    #[command(flatten)]
    view: ViewArgs,
    #[command(flatten)]
    net: NetArgs,
}

/// How a stream is shown and watched.
#[derive(Args, Clone)]
struct ViewArgs {
    /// Plain progress lines instead of the dashboard (the default when stdout is not a terminal).
    #[arg(long)]
    no_tui: bool,
    /// Serve the movie over HTTP at this address while it downloads (Range requests; a seek re-plans deadlines).
    #[arg(long, value_name = "IP:PORT")]
    serve: Option<SocketAddr>,
    /// Start this player on the served URL, e.g. `mpv` (serves on 127.0.0.1 with a free port unless --serve is given).
    #[arg(long, value_name = "CMD")]
    player: Option<String>,
}

impl ViewArgs {
    /// Where to serve the movie, if anywhere.
    fn serve_addr(&self) -> Option<SocketAddr> {
        self.serve.or_else(|| self.player.as_ref().map(|_| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)))
    }
}

#[derive(Args)]
struct WorldArgs {
    /// The movie; default: a generated one of --size-kb.
    #[arg(long)]
    movie: Option<PathBuf>,
    /// Size of the generated movie, kB.
    #[arg(long, default_value_t = 3000)]
    size_kb: u64,
    /// World peers besides the permanent seed.
    #[arg(long, default_value_t = 10)]
    peers: usize,
    /// Upload cap of each world peer, kB/s.
    #[arg(long, default_value_t = 70.0, value_parser = parse_positive)]
    upload: f64,
    /// Piece length, KiB.
    #[arg(long, default_value_t = 64)]
    piece_kib: u64,
    /// Seed for every random choice (saved fractions, pieces, rejoins).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Saved fractions are prefixes of the movie instead of random pieces.
    #[arg(long)]
    prefix: bool,
    /// No permanent full seed among the world peers.
    #[arg(long)]
    no_permanent_seed: bool,
    /// World peers and our client stay plain BitTorrent (no coded cooperation).
    #[arg(long)]
    no_coded: bool,
    /// Seconds the world peers run before our client starts.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Do not start our client: print the torrent, tracker and server, and run until SIGINT.
    #[arg(long)]
    no_client: bool,
    /// Working folder (torrent, world peers' data, the streamed movie); default: a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(flatten)]
    playback: PlaybackArgs,
    #[command(flatten)]
    view: ViewArgs,
    /// Print the client's report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrackerArgs {
    /// HTTP address (announce at http://ADDR/announce, scrape at /scrape).
    #[arg(long, value_name = "IP:PORT")]
    http: Option<SocketAddr>,
    /// UDP address (BEP 15; announce URL udp://ADDR/announce).
    #[arg(long, value_name = "IP:PORT")]
    udp: Option<SocketAddr>,
    /// Announce interval to ask of peers, seconds; peers silent for twice this are dropped.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    interval: u64,
}

#[derive(Args)]
struct NetArgs {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 6881)]
    port: u16,
    /// Local address for the listener and all outgoing connections; `::`
    /// (the default) listens on IPv6 and IPv4 both.
    #[arg(long, default_value_t = IpAddr::V6(Ipv6Addr::UNSPECIFIED))]
    bind: IpAddr,
    /// Dial this peer directly (repeatable); e.g. transmission never dials loopback peers.
    #[arg(long = "peer", value_name = "IP:PORT")]
    peers: Vec<SocketAddr>,
    /// Upload cap over all peers, kB/s (1000 B/s); default unlimited.
    #[arg(long, value_name = "KB/S", value_parser = parse_rate)]
    max_upload_rate: Option<u64>,
    /// Download cap over all peers, kB/s (1000 B/s); default unlimited.
    #[arg(long, value_name = "KB/S", value_parser = parse_rate)]
    max_download_rate: Option<u64>,
    /// Most connections for this torrent, inbound and outbound.
    #[arg(long, default_value_t = 50)]
    max_peers: usize,
    /// Most connections over all torrents, inbound and outbound.
    #[arg(long, default_value_t = 200)]
    max_connections: usize,
    /// While seeding, reveal pieces one by one (BEP 16 super-seeding) so
    /// each leaves us about once: `auto` while no other seed is connected,
    /// until one leecher has been alone with us for a second; `--super-seed`
    /// alone is `always`.
    #[arg(long, value_name = "WHEN", default_value = "auto", default_missing_value = "always", num_args = 0..=1, value_parser = parse_super_seed)]
    super_seed: SuperSeedMode,
    /// Hash every piece already on disk at the start, even where the resume
    /// record says a file is unchanged since the last run.
    #[arg(long)]
    recheck: bool,
    /// Never use coded cooperation (ccfd) with peers that offer it; plain BitTorrent only.
    #[arg(long, conflicts_with = "coded")]
    no_coded: bool,
    /// Ask coded peers for coded packets on every path. By default only
    /// from a peer that brings at least half of the download over a round
    /// trip of 5 ms or more (on a short path, or from one of many slow
    /// peers, plain blocks are faster). Offering the extension and serving
    /// coded requesters is on either way.
    #[arg(long)]
    coded: bool,
    /// Print one JSON summary line on stdout (and nothing else there).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dht: DhtArgs,
    /// Message stream encryption (MSE/PE): prefer (accept both, retry a
    /// peer the other way at once), require (encrypted only), off.
    #[arg(long, value_name = "MODE", default_value = "prefer", value_parser = parse_encryption)]
    encryption: Encryption,
    /// No uTP (BEP 29): TCP only.
    #[arg(long, conflicts_with = "no_tcp")]
    no_utp: bool,
    /// No TCP: uTP only.
    #[arg(long)]
    no_tcp: bool,
    /// Do not ask the router (UPnP IGD, NAT-PMP/PCP) to forward our port;
    /// it is never asked when binding a loopback address.
    #[arg(long)]
    no_port_mapping: bool,
}

fn parse_encryption(s: &str) -> Result<Encryption, String> {
    match s {
        "prefer" => Ok(Encryption::Prefer),
        "require" => Ok(Encryption::Require),
        "off" => Ok(Encryption::Off),
        _ => Err(format!("{s:?}: use prefer, require or off")),
    }
}

/// The DHT (BEP 5): on by default for public torrents.
#[derive(Args, Clone)]
struct DhtArgs {
    /// Do not run a DHT node (trackers, PEX and --peer only).
    #[arg(long)]
    no_dht: bool,
    /// A DHT node to start from, HOST:PORT (repeatable); replaces the public routers.
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT", conflicts_with = "no_dht")]
    dht_bootstrap: Vec<String>,
    /// Where state is kept between runs (the DHT's routing table); default
    /// $XDG_STATE_HOME/ccfd-bt or ~/.local/state/ccfd-bt.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl DhtArgs {
    /// The DHT node these flags describe, if any.
    fn config(&self) -> Option<DhtConfig> {
        if self.no_dht {
            return None;
        }
        let state_dir = self.state_dir.clone().or_else(default_state_dir);
        let mut config = DhtConfig::public(state_dir.as_deref());
        if !self.dht_bootstrap.is_empty() {
            config.bootstrap = self.dht_bootstrap.clone();
        }
        Some(config)
    }
}

/// The user's state folder, as the XDG base directory spec places it.
fn default_state_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = || std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/state"));
    xdg.or_else(home).map(|d| d.join("ccfd-bt"))
}

/// How a magnet link's metadata is found.
#[derive(Args, Clone)]
struct MagnetArgs {
    /// Extra tracker for a magnet link or info-hash (repeatable).
    #[arg(long = "tracker", value_name = "URL")]
    trackers: Vec<String>,
    /// Give up fetching a magnet link's metadata from peers after this many seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    metadata_timeout: u64,
}

#[derive(Args)]
struct DownloadArgs {
    /// A .torrent file, a magnet link, or a bare info-hash (40 hex digits).
    torrent: String,
    #[command(flatten)]
    magnet: MagnetArgs,
    /// Folder to download into.
    #[arg(short, long, default_value = ".")]
    output: PathBuf,
    /// Fetch only these files, by index or path (repeatable, or comma-separated);
    /// a magnet's `so=` selects the same way. The others are never created.
    #[arg(long, value_name = "PATH|INDEX", value_delimiter = ',')]
    only: Vec<String>,
    /// Write the torrent's metadata (fetched for a magnet link) to this .torrent file.
    #[arg(long, value_name = "FILE")]
    save_torrent: Option<PathBuf>,
    /// Do not download from the torrent's web seeds (BEP 19 url-list); peers only.
    #[arg(long)]
    no_web_seeds: bool,
    /// Keep seeding after the download completes, until SIGINT/SIGTERM.
    #[arg(long)]
    seed_after: bool,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args)]
struct InfoArgs {
    /// A .torrent file, a magnet link, or a bare info-hash.
    torrent: String,
    #[command(flatten)]
    magnet: MagnetArgs,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args)]
struct SeedArgs {
    /// The .torrent file.
    torrent: PathBuf,
    /// Folder holding the content, laid out as `download -o DIR` leaves it.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args)]
struct CreateArgs {
    /// File or folder to describe.
    path: PathBuf,
    /// Where to write the .torrent.
    #[arg(short, long)]
    output: PathBuf,
    /// Tracker announce URL (repeatable; each becomes its own tier).
    #[arg(long = "tracker", value_name = "URL")]
    trackers: Vec<String>,
    /// Piece length in bytes (power of two, 16 KiB to 64 MiB); default by size.
    #[arg(long, value_name = "BYTES")]
    piece_length: Option<u64>,
    /// BEP 19 web seed URL (repeatable).
    #[arg(long = "web-seed", value_name = "URL")]
    web_seeds: Vec<String>,
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number >= 0")),
    }
}

impl NetArgs {
    /// The client these flags describe.
    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            bind: self.bind,
            port: self.port,
            upload_rate: self.max_upload_rate,
            download_rate: self.max_download_rate,
            max_connections: self.max_connections,
            coded: !self.no_coded,
            coded_min_rtt: if self.coded { Duration::ZERO } else { ccfd_bt::ccfd::DEFAULT_MIN_RTT },
            dht: self.dht.config(),
            encryption: self.encryption,
            tcp: !self.no_tcp,
            utp: !self.no_utp,
            port_mapping: !self.no_port_mapping,
            ..ClientConfig::default()
        }
    }
}

/// `--super-seed auto|always|never`.
fn parse_super_seed(s: &str) -> Result<SuperSeedMode, String> {
    match s {
        "auto" => Ok(SuperSeedMode::Auto),
        "always" => Ok(SuperSeedMode::Always),
        "never" => Ok(SuperSeedMode::Never),
        other => Err(format!("{other:?}: expected auto, always or never")),
    }
}

/// Parses a rate in kB/s into bytes per second.
fn parse_rate(s: &str) -> Result<u64, String> {
    let kb: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of kB/s"))?;
    if !kb.is_finite() || kb <= 0.0 {
        return Err("a rate must be a positive number of kB/s".into());
    }
    Ok((kb * 1000.0).round().max(1.0) as u64)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sink = match wants_dashboard(&cli) {
        true => match log_sink::LogSink::create(std::env::temp_dir().join(format!("ccfd-bt-{}.log", std::process::id()))) {
            Ok(sink) => Some(sink),
            Err(e) => {
                eprintln!("error: cannot create the log file for the dashboard: {e}");
                return ExitCode::FAILURE;
            }
        },
        false => None,
    };
    init_logging(cli.verbose, sink.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(16).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let job = match cli.command {
        Some(command) => run(command, sink),
        None => Box::pin(stream_cli::stream_command(cli.stream, sink)),
    };
    match runtime.block_on(job) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once (a message that
/// already quotes its cause does not repeat it).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Whether this command streams with the dashboard: a streaming command on
/// a terminal, without --no-tui or --json.
fn wants_dashboard(cli: &Cli) -> bool {
    let streaming = match &cli.command {
        None => !cli.stream.view.no_tui && !cli.stream.net.json,
        Some(Command::World(a) | Command::Demo(a)) => !a.view.no_tui && !a.json && !a.no_client,
        Some(_) => false,
    };
    streaming && std::io::stdout().is_terminal()
}

/// Logs go to stderr, or (under the dashboard) to a file and the log pane.
fn init_logging(verbose: u8, sink: Option<log_sink::LogSink>) {
    // Under the dashboard the pane notes what matters; warnings join them.
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    match sink {
        Some(sink) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_target(false)
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .with_writer(sink)
            .init(),
        // Colours only on a terminal (and never with NO_COLOR): a log
        // redirected to a file stays plain text.
        None => {
            let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
            tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour).with_writer(std::io::stderr).init()
        }
    }
}

type Job = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<ExitCode>>>>;

fn run(command: Command, sink: Option<log_sink::LogSink>) -> Job {
    Box::pin(run_command(command, sink))
}

async fn run_command(command: Command, sink: Option<log_sink::LogSink>) -> anyhow::Result<ExitCode> {
    match command {
        Command::World(args) => stream_cli::world_command(args, sink, None).await,
        Command::Demo(args) => stream_cli::demo_command(args, sink).await,
        Command::Create(args) => create(args),
        Command::Info(args) => source::info_command(args).await,
        Command::Download(args) => {
            let source = Source::parse(&args.torrent, args.magnet.trackers, args.magnet.metadata_timeout)?;
            std::fs::create_dir_all(&args.output).with_context(|| format!("cannot create {}", args.output.display()))?;
            let choice = Choice { only: args.only, save_torrent: args.save_torrent, web_seeds: !args.no_web_seeds };
            serve(source, &args.output, OpenMode::Create, args.net, args.seed_after, choice).await
        }
        Command::Tracker(args) => tracker(args).await,
        Command::Seed(args) => {
            let meta = load(&args.torrent)?;
            serve(Source::Torrent(meta), &args.data, OpenMode::Existing, args.net, true, Choice { web_seeds: true, ..Choice::default() })
                .await
        }
    }
}

async fn tracker(args: TrackerArgs) -> anyhow::Result<ExitCode> {
    use ccfd_tracker::registry::Limits;
    if args.http.is_none() && args.udp.is_none() {
        bail!("give --http ADDR, --udp ADDR, or both");
    }
    let limits = Limits { interval: Duration::from_secs(args.interval), ..Limits::default() };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let addrs = ccfd_tracker::server::start(args.http, args.udp, limits, shutdown.clone()).await.context("cannot start the tracker")?;
    if let Some(a) = addrs.http {
        eprintln!("tracker: http://{a}/announce");
    }
    if let Some(a) = addrs.udp {
        eprintln!("tracker: udp://{a}/announce");
    }
    Signals::new()?.recv().await;
    shutdown.cancel();
    Ok(ExitCode::SUCCESS)
}

fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let size = dir_size(&args.path).with_context(|| format!("cannot read {}", args.path.display()))?;
    let opts = CreateOptions {
        piece_length: args.piece_length.unwrap_or_else(|| metainfo::default_piece_length(size)),
        trackers: args.trackers,
        web_seeds: args.web_seeds,
    };
    let bytes = metainfo::create(&args.path, &opts)?;
    std::fs::write(&args.output, &bytes).with_context(|| format!("cannot write {}", args.output.display()))?;
    let meta = Metainfo::from_bytes(&bytes)?;
    eprintln!("{}: {} bytes, {} pieces, info-hash {}", args.output.display(), meta.total_length, meta.piece_count(), meta.info_hash);
    Ok(ExitCode::SUCCESS)
}

fn dir_size(path: &std::path::Path) -> std::io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += dir_size(&entry?.path())?;
    }
    Ok(total)
}

/// Which files a download fetches, and whether to save the metadata.
#[derive(Default)]
struct Choice {
    /// `--only`: files by index or path; empty: every file (or the magnet's `so=`).
    only: Vec<String>,
    save_torrent: Option<PathBuf>,
    /// Use the torrent's web seeds as sources.
    web_seeds: bool,
}

/// Downloads and/or seeds one torrent until done (or, when `keep_seeding`, until a signal).
async fn serve(
    source: Source,
    dir: &std::path::Path,
    mode: OpenMode,
    net: NetArgs,
    keep_seeding: bool,
    choice: Choice,
) -> anyhow::Result<ExitCode> {
    let client = Client::start(net.client_config()).await?;
    let Some(resolved) = source.resolve(&client, &net.peers, net.json).await? else {
        client.close().await;
        return Ok(ExitCode::from(130));
    };
    let meta = resolved.meta;
    if let Some(path) = &choice.save_torrent {
        source::save_torrent(&meta, path)?;
    }
    let only_files = if !choice.only.is_empty() {
        Some(file_select::resolve_all(&meta, &choice.only)?)
    } else {
        resolved.select_only.map(|so| file_select::check_indexes(&meta, &so)).transpose().context("the magnet link's so= selection")?
    };
    let config = TorrentConfig {
        max_peers: net.max_peers,
        super_seed: net.super_seed,
        recheck: net.recheck,
        only_files,
        web_seeds: choice.web_seeds,
        ..TorrentConfig::default()
    };
    let torrent = client.add_torrent(meta.clone(), dir, mode, config, net.peers).await?;
    if mode == OpenMode::Existing && !torrent.is_complete() {
        tracing::warn!("data is incomplete: seeding the verified pieces and downloading the rest");
    }
    let show_progress = !net.json && std::io::stderr().is_terminal();
    let mut complete = torrent.subscribe_complete();
    let mut signals = Signals::new()?;
    let mut progress = tokio::time::interval(Duration::from_millis(500));
    let mut rate = RateMeter::new();
    let mut reported = false;
    let code = loop {
        if *complete.borrow() && !reported {
            reported = true;
            let snap = torrent.snapshot();
            if show_progress {
                eprintln!("\r{}", progress_line(&snap, &mut rate));
            }
            if net.json {
                println!("{}", summary_json(&meta, &snap));
            } else if mode == OpenMode::Create {
                eprintln!("download complete: {} bytes in {:.1} s", snap.total_length, snap.seconds_to_complete.unwrap_or(0.0));
            }
            if !keep_seeding {
                break ExitCode::SUCCESS;
            }
        }
        tokio::select! {
            _ = complete.changed() => {}
            _ = signals.recv() => break if *complete.borrow() { ExitCode::SUCCESS } else { ExitCode::from(130) },
            _ = torrent.shutdown.cancelled() => {
                let error = torrent.fatal_error().map_or_else(|| "the torrent stopped".to_string(), |e| e.to_string());
                torrent.stop().await;
                bail!(error);
            }
            _ = progress.tick() => if show_progress && !reported {
                eprint!("\r{}", progress_line(&torrent.snapshot(), &mut rate));
                let _ = std::io::stderr().flush();
            },
        }
    };
    torrent.stop().await;
    client.close().await;
    Ok(code)
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Download rate over the last progress interval.
struct RateMeter {
    last: Instant,
    bytes: u64,
    rate: f64,
}

impl RateMeter {
    fn new() -> RateMeter {
        RateMeter { last: Instant::now(), bytes: 0, rate: 0.0 }
    }

    fn update(&mut self, bytes: u64) -> f64 {
        let dt = self.last.elapsed().as_secs_f64();
        if dt >= 0.25 {
            self.rate = bytes.saturating_sub(self.bytes) as f64 / dt;
            self.bytes = bytes;
            self.last = Instant::now();
        }
        self.rate
    }
}

fn progress_line(s: &Snapshot, rate: &mut RateMeter) -> String {
    const WIDTH: usize = 30;
    let frac = s.verified_bytes as f64 / s.total_length.max(1) as f64;
    let filled = (frac * WIDTH as f64).round() as usize;
    let down = rate.update(s.downloaded);
    format!(
        "[{}{}] {:5.1}%  {}/{} pieces  {:7.2} MB/s  {} peers  up {:.1} MB ",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        frac * 100.0,
        s.pieces_verified,
        s.pieces_total,
        down / 1e6,
        s.peers,
        s.uploaded as f64 / 1e6,
    )
}

fn summary_json(meta: &Metainfo, s: &Snapshot) -> serde_json::Value {
    let seconds = s.seconds_to_complete.unwrap_or(0.0);
    let from: serde_json::Map<String, serde_json::Value> = s.bytes_from.iter().map(|(a, b)| (a.to_string(), (*b).into())).collect();
    serde_json::json!({
        "event": "complete",
        "name": meta.name,
        "info_hash": meta.info_hash.to_hex(),
        "bytes": s.total_length,
        "downloaded": s.downloaded,
        "seconds": seconds,
        "mb_per_s": if seconds > 0.0 { s.downloaded as f64 / 1e6 / seconds } else { 0.0 },
        "bytes_from": from,
        "web_seed_bytes": s.server_bytes,
        "piece_failures": s.piece_failures,
        "wasted": s.wasted,
        "coded_bytes": s.coded_bytes,
        "peer_sources": s.peer_sources,
        "peers": s.peer_list.iter().map(|p| serde_json::json!({
            "addr": p.addr.to_string(),
            "client": p.client,
            "transport": p.transport.to_string(),
            "encryption": p.encryption.name(),
            "unchokes_us": p.unchokes_us,
        })).collect::<Vec<_>>(),
        "banned": s.banned.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
    })
}
