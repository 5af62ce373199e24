//! Where a torrent comes from on every command: a .torrent file, a magnet
//! link, or a bare info-hash (whose metadata is fetched from peers, BEP 9);
//! and `ccfd-bt info`, which describes one. Part of the binary.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ccfd_bt::client::Client;
use ccfd_bt::discovery::metadata;
use ccfd_proto::magnet::Magnet;
use ccfd_proto::metainfo::{Metainfo, MetainfoError};

use crate::{InfoArgs, Signals};

/// Where a torrent's metadata comes from.
pub enum Source {
    Torrent(Arc<Metainfo>),
    /// Fetched from peers (BEP 9) within the given time.
    Magnet(Magnet, Duration),
}

/// The metadata in hand, and how long fetching it took (zero for a file).
pub struct Resolved {
    pub meta: Arc<Metainfo>,
    pub fetch_seconds: f64,
    /// A magnet's BEP 53 `so=` selection.
    pub select_only: Option<Vec<usize>>,
}

impl Source {
    /// Reads `arg`: a magnet link or info-hash (with `trackers` added), or a
    /// .torrent path (for which `trackers` must be empty).
    pub fn parse(arg: &str, trackers: Vec<String>, metadata_timeout: u64) -> anyhow::Result<Source> {
        if Magnet::looks_like(arg) {
            let mut magnet = Magnet::parse(arg)?;
            magnet.trackers.extend(trackers);
            return Ok(Source::Magnet(magnet, Duration::from_secs(metadata_timeout)));
        }
        if !trackers.is_empty() {
            bail!("--tracker is for magnet links and info-hashes; a .torrent names its own trackers");
        }
        Ok(Source::Torrent(load(Path::new(arg))?))
    }

    /// The metadata: at once for a file, from peers for a magnet; `None`
    /// when a signal came first.
    pub async fn resolve(self, client: &Client, peers: &[SocketAddr], quiet: bool) -> anyhow::Result<Option<Resolved>> {
        let (magnet, limit) = match self {
            Source::Torrent(meta) => return Ok(Some(Resolved { meta, fetch_seconds: 0.0, select_only: None })),
            Source::Magnet(magnet, limit) => (magnet, limit),
        };
        if magnet.trackers.is_empty() && magnet.peers.is_empty() && peers.is_empty() && client.dht().is_none() {
            bail!("no way to find peers for {}: give --tracker URL or --peer IP:PORT, or leave the DHT on", magnet.info_hash);
        }
        if !quiet {
            eprintln!("fetching metadata for {} from peers", magnet.info_hash);
        }
        let began = Instant::now();
        let mut signals = Signals::new()?;
        let meta = tokio::select! {
            m = metadata::fetch(client.net.clone(), client.dht(), &magnet, peers, limit) => m?,
            _ = signals.recv() => return Ok(None),
        };
        let fetch_seconds = began.elapsed().as_secs_f64();
        if !quiet {
            eprintln!("metadata of {:?} in {fetch_seconds:.1} s", meta.name);
        }
        Ok(Some(Resolved { meta: Arc::new(meta), fetch_seconds, select_only: magnet.select_only }))
    }
}

/// Reads a .torrent file; an unreadable file's error names it once.
pub fn load(path: &Path) -> anyhow::Result<Arc<Metainfo>> {
    match Metainfo::from_file(path) {
        Ok(meta) => Ok(Arc::new(meta)),
        Err(e @ MetainfoError::Io { .. }) => Err(e.into()),
        Err(e) => Err(anyhow::Error::new(e).context(path.display().to_string())),
    }
}

/// Writes the metadata as a .torrent file (`download --save-torrent`).
pub fn save_torrent(meta: &Metainfo, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, meta.to_torrent_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// `ccfd-bt info`: what `transmission-show` prints, or one JSON object.
pub async fn info_command(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let source = Source::parse(&args.torrent, args.magnet.trackers, args.magnet.metadata_timeout)?;
    let resolved = match source {
        Source::Torrent(meta) => Resolved { meta, fetch_seconds: 0.0, select_only: None },
        magnet => {
            let client = Client::start(args.net.client_config()).await?;
            let r = magnet.resolve(&client, &args.net.peers, args.net.json).await;
            client.close().await;
            match r? {
                Some(r) => r,
                None => return Ok(ExitCode::from(130)),
            }
        }
    };
    let meta = &resolved.meta;
    if args.net.json {
        println!("{}", info_json(meta));
    } else {
        print!("{}", info_text(meta));
    }
    Ok(ExitCode::SUCCESS)
}

fn info_json(meta: &Metainfo) -> serde_json::Value {
    let files: Vec<serde_json::Value> = meta
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            serde_json::json!({"index": i, "path": f.path.to_string_lossy(), "length": f.length, "offset": f.offset, "padding": f.pad})
        })
        .collect();
    serde_json::json!({
        "name": meta.name,
        "info_hash": meta.info_hash.to_hex(),
        "piece_length": meta.piece_length,
        "pieces": meta.piece_count(),
        "total_length": meta.total_length,
        "private": meta.private,
        "trackers": meta.trackers,
        "web_seeds": meta.web_seeds,
        "files": files,
    })
}

fn info_text(meta: &Metainfo) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Name: {}", meta.name);
    let _ = writeln!(out, "Hash: {}", meta.info_hash);
    let _ = writeln!(out, "Private: {}", if meta.private { "yes" } else { "no" });
    let _ = writeln!(out, "Total size: {} ({} bytes)", human(meta.total_length), meta.total_length);
    let _ = writeln!(out, "Piece size: {} ({} bytes), {} pieces", human(meta.piece_length), meta.piece_length, meta.piece_count());
    let _ = writeln!(out, "\nTRACKERS");
    for (tier, urls) in meta.trackers.iter().enumerate() {
        for url in urls {
            let _ = writeln!(out, "  tier {}: {url}", tier + 1);
        }
    }
    if !meta.web_seeds.is_empty() {
        let _ = writeln!(out, "\nWEB SEEDS");
        for url in &meta.web_seeds {
            let _ = writeln!(out, "  {url}");
        }
    }
    let _ = writeln!(out, "\nFILES");
    for (i, f) in meta.files.iter().enumerate() {
        let pad = if f.pad { "  (padding)" } else { "" };
        let _ = writeln!(out, "  {i:>4}  {:>10}  {}{pad}", human(f.length), f.path.display());
    }
    out
}

/// Sizes as people read them: 1.5 GiB, 700 MiB, 12 kiB.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(700 << 20), "700.0 MiB");
    }
}
