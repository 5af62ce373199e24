//! BEP 19 web seeds: byte ranges of the torrent fetched over HTTP, which is
//! how the VoD server fills what the swarm cannot deliver in time.
//!
//! A single-file torrent's URL is the file itself (or a folder URL ending in
//! `/`, to which the name is appended); a multi-file torrent's URL is the
//! folder holding the torrent's top folder. A torrent byte range is split
//! into per-file ranges, each fetched with a `Range` request whose reply must
//! be exactly the bytes asked for.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;

use crate::storage::segments;
use ccfd_proto::metainfo::Metainfo;

/// Why a web seed request failed.
#[derive(Debug, thiserror::Error)]
pub enum WebSeedError {
    #[error("web seed request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("web seed answered {0} to a range request")]
    Status(StatusCode),
    #[error("web seed sent {got} bytes for a {want}-byte range")]
    Length { got: usize, want: u64 },
    #[error("web seed url {0:?} is not usable")]
    BadUrl(String),
}

/// One web seed (the VoD server) and what it has served us.
#[derive(Debug, Clone)]
pub struct WebSeed {
    http: reqwest::Client,
    base: String,
}

impl WebSeed {
    /// A web seed at `url`, requests bound to `bind` when given.
    pub fn new(url: &str, bind: Option<std::net::IpAddr>) -> Result<WebSeed, WebSeedError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(WebSeedError::BadUrl(url.to_string()));
        }
        ccfd_tracker::install_tls_provider();
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(60));
        if let Some(ip) = bind.filter(|ip| !ip.is_unspecified()) {
            builder = builder.local_address(ip);
        }
        Ok(WebSeed { http: builder.build()?, base: url.to_string() })
    }

    /// The URL of file `index` of `meta`.
    fn file_url(&self, meta: &Metainfo, index: usize) -> String {
        let encode = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        let mut url = self.base.trim_end_matches('/').to_string();
        if meta.files.len() == 1 {
            if !self.base.ends_with('/') {
                return self.base.clone();
            }
            // The torrent's name, not the local file name (a stream may rename it).
            url.push('/');
            url.push_str(&encode(&meta.name));
            return url;
        }
        // A multi-file path already starts with the torrent's folder name.
        for part in meta.files[index].path.iter() {
            url.push('/');
            url.push_str(&encode(&part.to_string_lossy()));
        }
        url
    }

    /// Fetches torrent bytes `[offset, offset + len)`; returns them and the
    /// time to the first reply (the server's latency, for planning).
    pub async fn fetch(&self, meta: &Metainfo, offset: u64, len: u64) -> Result<(Bytes, Duration), WebSeedError> {
        // Bounded by the caller: at most a piece (64 MiB by the metainfo's limit).
        let mut out = BytesMut::with_capacity(len.min(64 << 20) as usize);
        let mut latency = None;
        for seg in segments(&meta.files, offset, len) {
            let url = self.file_url(meta, seg.file);
            let end = seg.file_offset + seg.len - 1;
            let started = Instant::now();
            let resp = self.http.get(&url).header(RANGE, format!("bytes={}-{end}", seg.file_offset)).send().await?;
            latency.get_or_insert(started.elapsed());
            let status = resp.status();
            // A 200 would be the whole file: refuse rather than download a movie to use a block.
            if status != StatusCode::PARTIAL_CONTENT || resp.headers().get(CONTENT_RANGE).is_none() {
                return Err(WebSeedError::Status(status));
            }
            // Read no more than was asked for: a server may send anything.
            let mut resp = resp;
            let before = out.len();
            while let Some(chunk) = resp.chunk().await? {
                if (out.len() - before + chunk.len()) as u64 > seg.len {
                    return Err(WebSeedError::Length { got: out.len() - before + chunk.len(), want: seg.len });
                }
                out.extend_from_slice(&chunk);
            }
            if (out.len() - before) as u64 != seg.len {
                return Err(WebSeedError::Length { got: out.len() - before, want: seg.len });
            }
        }
        Ok((out.freeze(), latency.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccfd_proto::metainfo::{create, CreateOptions};

    fn torrent(dir: &std::path::Path, multi: bool) -> Metainfo {
        let opts = CreateOptions { piece_length: 16384, trackers: vec![], web_seeds: vec![] };
        let path = if multi {
            std::fs::create_dir_all(dir.join("show/Sub")).unwrap();
            std::fs::write(dir.join("show/Sub/a b.srt"), b"x").unwrap();
            std::fs::write(dir.join("show/movie.mp4"), b"y").unwrap();
            dir.join("show")
        } else {
            std::fs::write(dir.join("film.mkv"), b"z").unwrap();
            dir.join("film.mkv")
        };
        Metainfo::from_bytes(&create(&path, &opts).unwrap()).unwrap()
    }

    #[test]
    fn bep19_urls_for_single_and_multi_file_torrents() {
        let dir = tempfile::tempdir().unwrap();
        let multi = torrent(dir.path(), true);
        let seed = WebSeed::new("http://h/pub/", None).unwrap();
        let urls: Vec<String> = (0..multi.files.len()).map(|i| seed.file_url(&multi, i)).collect();
        assert!(urls.contains(&"http://h/pub/show/Sub/a%20b%2Esrt".to_string()), "{urls:?}");
        assert!(urls.contains(&"http://h/pub/show/movie%2Emp4".to_string()), "{urls:?}");
        let mut single = torrent(dir.path(), false);
        // A stream writes the file under another name: the URL keeps the torrent's.
        single.files[0].path = "renamed.mkv".into();
        assert_eq!(seed.file_url(&single, 0), "http://h/pub/film%2Emkv");
        assert_eq!(WebSeed::new("http://h/film.mkv", None).unwrap().file_url(&single, 0), "http://h/film.mkv");
    }
}
