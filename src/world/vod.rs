//! The VoD world (the workshop's run_all as one call): a tracker, world
//! peers with upload caps that start from different saved fractions of the
//! movie and start over when done, and a VoD server that counts what it
//! serves. Our client (or any other) then streams from it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::vodserver::VodServer;
use crate::client::{Client, ClientConfig};
use crate::storage::OpenMode;
use crate::swarm::TorrentConfig;
use ccfd_proto::metainfo::{self, CreateOptions, Metainfo, MetainfoError};
use ccfd_tracker::registry::Limits;

/// Shape of a VoD world.
#[derive(Debug, Clone)]
pub struct VodWorldConfig {
    /// World peers (besides the permanent seed).
    pub peers: usize,
    /// Upload cap of each world peer, bytes per second.
    pub upload: u64,
    pub piece_length: u64,
    /// Seeds every random choice: saved fractions, which pieces, rejoin times.
    pub seed: u64,
    /// Addresses are 127.`net[0]`.`net[1]`.x.
    pub net: [u8; 2],
    /// Saved fractions are prefixes of the movie (else random pieces).
    pub prefix: bool,
    /// How long a finished world peer keeps seeding before it starts over.
    pub linger: Duration,
    /// One world peer that holds the whole movie and never leaves.
    pub permanent_seed: bool,
    pub torrent: TorrentConfig,
    /// World peers offer coded cooperation (ccfd).
    pub coded: bool,
}

impl Default for VodWorldConfig {
    fn default() -> Self {
        VodWorldConfig {
            peers: 10,
            upload: 70_000,
            piece_length: 64 * 1024,
            seed: 1,
            net: [70, 0],
            prefix: false,
            linger: Duration::from_secs(10),
            permanent_seed: true,
            torrent: TorrentConfig::default(),
            coded: true,
        }
    }
}

/// Why a world could not come up.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Metainfo(#[from] MetainfoError),
    #[error("{0} has no usable file name")]
    MovieName(PathBuf),
}

/// A running world.
pub struct VodWorld {
    pub announce: String,
    pub server: VodServer,
    /// The movie's torrent (announce = our tracker, url-list = the VoD server).
    pub meta: Arc<Metainfo>,
    pub torrent_path: PathBuf,
    shutdown: CancellationToken,
    net: [u8; 2],
}

impl VodWorld {
    /// Brings the world up around `movie`, working in `dir`.
    pub async fn start(movie: &Path, dir: &Path, config: VodWorldConfig) -> Result<VodWorld, WorldError> {
        let shutdown = CancellationToken::new();
        let ip = IpAddr::V4(Ipv4Addr::new(127, config.net[0], config.net[1], 1));
        let limits = Limits { interval: Duration::from_secs(30), ..Limits::default() };
        let tracker = ccfd_tracker::server::start(Some(SocketAddr::new(ip, 0)), None, limits, shutdown.clone()).await?;
        let announce = tracker.announce_url().unwrap_or_default();
        let movie_dir = movie.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = movie.file_name().and_then(|n| n.to_str()).ok_or_else(|| WorldError::MovieName(movie.to_path_buf()))?;
        let server = VodServer::start(tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)).await?, movie_dir, shutdown.clone())?;
        let opts = CreateOptions { piece_length: config.piece_length, trackers: vec![announce.clone()], web_seeds: vec![server.url(name)] };
        let bytes = metainfo::create(movie, &opts)?;
        let torrent_path = dir.join(format!("{name}.torrent"));
        std::fs::write(&torrent_path, &bytes)?;
        let meta = Arc::new(Metainfo::from_bytes(&bytes)?);
        let mut rng = StdRng::seed_from_u64(config.seed);
        for i in 0..config.peers + usize::from(config.permanent_seed) {
            let permanent = config.permanent_seed && i == 0;
            let peer = WorldPeer {
                ip: IpAddr::V4(Ipv4Addr::new(127, config.net[0], config.net[1], 10 + i as u8)),
                dir: dir.join(format!("peer{i}")),
                movie: movie.to_path_buf(),
                meta: meta.clone(),
                config: config.clone(),
                permanent,
                rng: StdRng::from_rng(&mut rng),
            };
            tokio::spawn(peer.run(shutdown.clone()));
        }
        Ok(VodWorld { announce, server, meta, torrent_path, shutdown, net: config.net })
    }

    /// An address for a client streaming in this world.
    pub fn client_ip(&self, n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.net[0], self.net[1], 200 + n))
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for VodWorld {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Resolves once the torrent is complete (never, if it stops first).
async fn completed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// One world peer's life: start from a saved fraction, download the rest
/// while serving, seed a while, start over.
struct WorldPeer {
    ip: IpAddr,
    dir: PathBuf,
    movie: PathBuf,
    meta: Arc<Metainfo>,
    config: VodWorldConfig,
    permanent: bool,
    rng: StdRng,
}

impl WorldPeer {
    async fn run(mut self, shutdown: CancellationToken) {
        let client = match Client::start(ClientConfig {
            bind: self.ip,
            port: 0,
            upload_rate: Some(self.config.upload),
            coded: self.config.coded,
            // A world stands for the internet on loopback: coded on every path.
            coded_min_rtt: std::time::Duration::ZERO,
            ..ClientConfig::default()
        })
        .await
        {
            Ok(c) => c,
            Err(e) => return tracing::warn!(ip = %self.ip, error = %e, "world peer cannot start"),
        };
        loop {
            let fraction = if self.permanent { 1.0 } else { self.rng.random::<f64>() };
            if let Err(e) = self.prepare(fraction) {
                return tracing::warn!(ip = %self.ip, error = %e, "world peer cannot write its data");
            }
            let mode = OpenMode::Existing;
            let torrent = match client.add_torrent(self.meta.clone(), &self.dir, mode, self.config.torrent.clone(), Vec::new()).await {
                Ok(t) => t,
                Err(e) => return tracing::warn!(ip = %self.ip, error = %e, "world peer cannot start its torrent"),
            };
            tracing::info!(ip = %self.ip, fraction, "world peer (re)joined");
            let mut done = torrent.subscribe_complete();
            tokio::select! {
                _ = shutdown.cancelled() => { torrent.stop().await; break; }
                _ = completed(&mut done) => {}
            }
            if self.permanent {
                shutdown.cancelled().await;
                torrent.stop().await;
                break;
            }
            let linger = self.config.linger.mul_f64(0.5 + self.rng.random::<f64>());
            tokio::select! {
                _ = shutdown.cancelled() => { torrent.stop().await; break; }
                _ = tokio::time::sleep(linger) => {}
            }
            torrent.stop().await;
        }
        client.shutdown();
    }

    /// Writes a fresh copy holding `fraction` of the pieces (a prefix, or
    /// random ones); the rest of the file is a sparse hole.
    fn prepare(&mut self, fraction: f64) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let dest = self.dir.join(&self.meta.files[0].path);
        let _ = std::fs::remove_file(&dest);
        let out = std::fs::File::create(&dest)?;
        out.set_len(self.meta.total_length)?;
        let n = self.meta.piece_count();
        let keep = ((f64::from(n) * fraction).round() as u32).min(n);
        let mut pieces: Vec<u32> = (0..n).collect();
        if !self.config.prefix {
            pieces.shuffle(&mut self.rng);
        }
        let src = std::fs::File::open(&self.movie)?;
        let mut buf = vec![0u8; self.meta.piece_length as usize];
        for &p in &pieces[..keep as usize] {
            let len = self.meta.piece_len(p) as usize;
            let at = u64::from(p) * self.meta.piece_length;
            src.read_exact_at(&mut buf[..len], at)?;
            out.write_all_at(&buf[..len], at)?;
        }
        Ok(())
    }
}
