//! `--serve`: the movie over HTTP while it downloads, so a player (mpv, VLC)
//! can watch it. Range requests are served; a read of a byte not present
//! yet waits until its piece is verified; a request that jumps away from
//! where playback is counts as a seek, and the stream re-plans its
//! deadlines from there so the picker fetches what the viewer wants next.
//! The movie is served under its path in the torrent, its subtitles beside
//! it, and `/` lists the torrent's files: opening any other one adds it to
//! the download, and its reads become due as the player makes them.

use std::net::SocketAddr;

use ccfd_vod::Playback;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::StreamHandle;
use crate::http1::{content_type, encode_segment, parse_head, range_response, read_head};

/// Seconds of playback ahead of the play head a read may start at without
/// counting as a seek (players read ahead of what they show).
const SEEK_WINDOW: f64 = 10.0;
/// Bytes written per socket write (at most one piece's worth is read at once).
const CHUNK: u64 = 64 * 1024;

/// A running `--serve` endpoint.
pub struct WatchServer {
    pub addr: SocketAddr,
    /// The URL a player opens.
    pub url: String,
    /// The URLs of the subtitles.
    pub extra_urls: Vec<String>,
}

/// What a served file is to the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The movie: reads may seek or probe.
    Movie,
    /// Its subtitles, fetched before the opening.
    Extra,
    /// Any other file, fetched when a player opens it from the index.
    Other,
}

impl StreamHandle {
    fn role(&self, file: usize) -> Role {
        if file == self.file {
            Role::Movie
        } else if self.extras.contains(&file) {
            Role::Extra
        } else {
            Role::Other
        }
    }
}

/// The URL path of a torrent path: each component percent-encoded.
fn url_path(path: &std::path::Path) -> String {
    path.iter().map(|c| encode_segment(&c.to_string_lossy())).collect::<Vec<_>>().join("/")
}

impl WatchServer {
    /// Serves `stream`'s file on `listener` until `shutdown` (or the torrent stops).
    pub fn start(listener: TcpListener, stream: StreamHandle, shutdown: CancellationToken) -> std::io::Result<WatchServer> {
        let addr = listener.local_addr()?;
        let meta = &stream.torrent.meta;
        let url_of = |i: usize| format!("http://{addr}/{}", url_path(&meta.files[i].path));
        let url = url_of(stream.file);
        let extra_urls = stream.extras.iter().map(|&i| url_of(i)).collect();
        let torrent_done = stream.torrent.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = torrent_done.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                tokio::spawn(serve_connection(socket, stream.clone(), shutdown.clone()));
            }
        });
        Ok(WatchServer { addr, url, extra_urls })
    }
}

/// Bytes of a probe read made urgent at once (the rest follows as read).
const PROBE_READ: u64 = 4 << 20;

/// Whether a read starting at `start` of a file of `len` bytes is a
/// player's probe of the file's end (mp4's moov, Matroska's cues), which
/// players make before playing and then jump back from: the last 2% of the
/// file, and at least two pieces. A real seek there is served the same
/// way, only without re-planning playback.
pub fn is_probe(start: u64, len: u64, piece_length: u64) -> bool {
    let tail = (len / 50).max(2 * piece_length);
    tail < len && start >= len - tail
}

/// Whether a read starting at `start` is a jump away from playback: it
/// starts at a byte that is not present and is neither near the play head
/// nor in the stretch the picker is already working on (the next
/// `window` seconds of playback).
pub fn is_seek(start: u64, present: bool, playback: &Playback, now: f64, window: f64, piece_length: u64) -> bool {
    if present {
        return false;
    }
    let head = playback.play_head(now);
    let slack = 2 * piece_length;
    // B(t) runs P seconds ahead of the head; the window goes beyond that.
    let frontier = playback.origin() + playback.required_bytes(now) + (playback.rate * window) as u64;
    start + slack < head || start > frontier + slack
}

async fn serve_connection(mut socket: TcpStream, stream: StreamHandle, shutdown: CancellationToken) {
    let _ = socket.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head = tokio::select! {
            _ = shutdown.cancelled() => return,
            h = read_head(&mut socket, &mut buf) => match h { Some(h) => h, None => return },
        };
        match respond(&mut socket, &stream, &head, &shutdown).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
    }
}

/// Answers one request; `Ok(false)` when the connection should close.
async fn respond(socket: &mut TcpStream, stream: &StreamHandle, head: &str, shutdown: &CancellationToken) -> std::io::Result<bool> {
    let Some(req) = parse_head(head) else {
        socket.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await?;
        return Ok(false);
    };
    let keep = !req.close;
    if req.path == "/" {
        let page = index_page(stream);
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n", content_type("index.html"), page.len());
        socket.write_all(reply.as_bytes()).await?;
        if !req.head_only {
            socket.write_all(page.as_bytes()).await?;
        }
        return Ok(keep);
    }
    let decoded = percent_encoding::percent_decode_str(&req.path).decode_utf8_lossy();
    let torrent = &stream.torrent;
    let wanted = decoded.trim_start_matches('/');
    let found = torrent.meta.files.iter().position(|f| !f.pad && f.path.to_string_lossy() == wanted);
    let Some(index) = found else {
        socket.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await?;
        return Ok(keep);
    };
    let file = &torrent.meta.files[index];
    let role = stream.role(index);
    if role == Role::Other {
        if let Err(e) = stream.select_file(index).await {
            tracing::warn!(error = %e, file = %wanted, "--serve: cannot add the file to the download");
            socket.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await?;
            return Ok(keep);
        }
    }
    let size = file.length;
    let (start, end, reply) = match range_response(req.range, size, content_type(wanted)) {
        Ok(r) => r,
        Err(refusal) => {
            socket.write_all(refusal.0.as_bytes()).await?;
            return Ok(keep);
        }
    };
    socket.write_all(reply.as_bytes()).await?;
    if req.head_only {
        return Ok(keep);
    }
    let piece_length = torrent.meta.piece_length;
    if end > start && role == Role::Movie {
        let piece = ((file.offset + start) / piece_length) as u32;
        let present = torrent.has_piece(piece);
        let schedule = stream.plan.schedule();
        if !present && is_probe(start, file.length, piece_length) {
            stream.probe(start, end.min(start + PROBE_READ));
        } else if is_seek(start, present, &schedule.playback, stream.now(), SEEK_WINDOW, piece_length) {
            stream.seek(start);
        }
    }
    let mut verified = torrent.subscribe_verified();
    // Torrent offsets from here on.
    let (mut at, end) = (file.offset + start, file.offset + end);
    while at < end {
        let piece = (at / piece_length) as u32;
        // Another file's read makes what it waits for due now.
        if role == Role::Other && !torrent.has_piece(piece) {
            stream.read_other(at, end);
        }
        // Wait for the piece; the torrent's end or ours ends the wait.
        while !torrent.has_piece(piece) {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = torrent.shutdown.cancelled() => return Ok(false),
                r = verified.changed() => if r.is_err() { return Ok(false) },
            }
        }
        let piece_end = (u64::from(piece) + 1) * piece_length;
        let len = (end.min(piece_end) - at).min(CHUNK);
        let mut data = vec![0u8; len as usize];
        if let Err(e) = torrent.storage().read_at(at, &mut data) {
            tracing::warn!(error = %e, "--serve: cannot read the movie");
            return Ok(false);
        }
        socket.write_all(&data).await?;
        at += len;
    }
    Ok(keep)
}

/// `/`: the torrent's files, each a link; the movie and its subtitles are
/// marked, and a file not fetched yet is fetched when opened.
fn index_page(stream: &StreamHandle) -> String {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let torrent = &stream.torrent;
    let meta = &torrent.meta;
    let mut page = format!("<!doctype html><meta charset=utf-8><title>{0}</title><h1>{0}</h1><ul>\n", escape(&meta.name));
    for (i, f) in meta.files.iter().enumerate().filter(|(_, f)| !f.pad) {
        let note = match stream.role(i) {
            Role::Movie => " (playing)",
            Role::Extra => " (subtitles)",
            Role::Other if torrent.storage().is_selected(i) => " (opened)",
            Role::Other => " (fetched when opened)",
        };
        let (href, path) = (url_path(&f.path), escape(&f.path.to_string_lossy()));
        page.push_str(&format!("<li>{i}: <a href=\"/{href}\">{path}</a> {} bytes{note}</li>\n", f.length));
    }
    page.push_str("</ul>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_away_from_playback_are_seeks() {
        // 60 kB/s, D = 6, P = 2, 64 KiB pieces; at t = 20 s the play head is at 840 kB.
        let p = Playback::new(60_000.0, 6.0, 2.0, 10_000_000);
        let piece = 65_536;
        assert_eq!(p.play_head(20.0), 840_000);
        // Reading on from the head, or a little ahead of it: no seek.
        assert!(!is_seek(840_000, false, &p, 20.0, 10.0, piece));
        assert!(!is_seek(1_400_000, false, &p, 20.0, 10.0, piece));
        // Far ahead, or back before the head: a seek, unless the bytes are here.
        assert!(is_seek(3_000_000, false, &p, 20.0, 10.0, piece));
        assert!(is_seek(100_000, false, &p, 20.0, 10.0, piece));
        assert!(!is_seek(100_000, true, &p, 20.0, 10.0, piece));
        // The player's first request, before playback starts.
        assert!(!is_seek(0, false, &p, 0.5, 10.0, piece));
    }

    #[test]
    fn reads_of_a_files_end_are_probes() {
        let piece = 65_536;
        // 1 GB: the last 2% (20 MB) is the probe zone.
        assert!(is_probe(999_000_000, 1_000_000_000, piece));
        assert!(is_probe(980_000_000, 1_000_000_000, piece));
        assert!(!is_probe(500_000_000, 1_000_000_000, piece));
        // A small file: two pieces at its end.
        assert!(is_probe(2_900_000, 2_974_805, piece));
        assert!(!is_probe(2_000_000, 2_974_805, piece));
        // A file of two pieces or less has no probe zone.
        assert!(!is_probe(100, 120_000, piece));
    }
}
