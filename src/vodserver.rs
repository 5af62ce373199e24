//! The world's VoD server: a small HTTP/1.1 file server with Range support
//! that counts the bytes it sends to each client address (the penalty).
//!
//! It serves one folder read-only; paths are percent-decoded and may not
//! leave it. Requests are bounded (8 KiB heads); keep-alive is supported so
//! a client's range requests reuse one connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::client::lock;

const MAX_HEAD: usize = 8 * 1024;

/// Bytes served, by client address.
pub type ServedBytes = Arc<Mutex<HashMap<IpAddr, u64>>>;

/// A running VoD server.
pub struct VodServer {
    pub addr: SocketAddr,
    pub served: ServedBytes,
}

impl VodServer {
    /// Serves `root` on `listener` until `shutdown`.
    pub fn start(listener: TcpListener, root: PathBuf, shutdown: CancellationToken) -> std::io::Result<VodServer> {
        let addr = listener.local_addr()?;
        let served: ServedBytes = Arc::default();
        let counter = served.clone();
        tokio::spawn(async move {
            loop {
                let (stream, from) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                tokio::spawn(serve_connection(stream, from, root.clone(), counter.clone()));
            }
        });
        Ok(VodServer { addr, served })
    }

    /// URL of `name` (a file under the served folder).
    pub fn url(&self, name: &str) -> String {
        let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
        format!("http://{}/{encoded}", self.addr)
    }

    /// Bytes sent to `ip` so far.
    pub fn served_to(&self, ip: IpAddr) -> u64 {
        lock(&self.served).get(&ip).copied().unwrap_or(0)
    }
}

/// A parsed request head: path and optional byte range.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    path: String,
    range: Option<(u64, Option<u64>)>,
    head_only: bool,
}

fn parse_head(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?;
    let path = first.next()?.split('?').next()?.to_string();
    if method != "GET" && method != "HEAD" {
        return None;
    }
    let mut range = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { continue };
        if k.trim().eq_ignore_ascii_case("range") {
            let spec = v.trim().strip_prefix("bytes=")?;
            let (a, b) = spec.split_once('-')?;
            range = Some((a.trim().parse().ok()?, if b.trim().is_empty() { None } else { Some(b.trim().parse().ok()?) }));
        }
    }
    Some(Request { path, range, head_only: method == "HEAD" })
}

/// The file a URL path names under `root`, if it stays inside it.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(url_path).decode_utf8().ok()?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

async fn serve_connection(mut stream: TcpStream, from: SocketAddr, root: PathBuf, served: ServedBytes) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    loop {
        // Read one request head.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return;
            }
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        if respond(&mut stream, from, &root, &served, &head).await.is_err() {
            return;
        }
    }
}

async fn respond(stream: &mut TcpStream, from: SocketAddr, root: &Path, served: &ServedBytes, head: &str) -> std::io::Result<()> {
    let Some(req) = parse_head(head) else {
        return stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    };
    let file = match resolve(root, &req.path) {
        Some(p) => tokio::fs::File::open(p).await.ok(),
        None => None,
    };
    let Some(mut file) = file else {
        return stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
    };
    let size = file.metadata().await?.len();
    let (status, start, end) = match req.range {
        None => ("200 OK", 0, size),
        Some((a, b)) => {
            let last = b.unwrap_or(u64::MAX).min(size.saturating_sub(1));
            if a >= size || a > last {
                let reply = format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\n\r\n");
                return stream.write_all(reply.as_bytes()).await;
            }
            ("206 Partial Content", a, last + 1)
        }
    };
    let mut reply = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n", end - start);
    if req.range.is_some() {
        reply.push_str(&format!("Content-Range: bytes {start}-{}/{size}\r\n", end - 1));
    }
    reply.push_str("\r\n");
    stream.write_all(reply.as_bytes()).await?;
    if req.head_only {
        return Ok(());
    }
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut left = end - start;
    let mut chunk = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = left.min(chunk.len() as u64) as usize;
        file.read_exact(&mut chunk[..want]).await?;
        stream.write_all(&chunk[..want]).await?;
        *lock(served).entry(from.ip()).or_default() += want as u64;
        left -= want as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_and_paths_stay_inside() {
        let r = parse_head("GET /movie%20a.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n").unwrap();
        assert_eq!(r, Request { path: "/movie%20a.mp4".into(), range: Some((10, Some(19))), head_only: false });
        assert_eq!(parse_head("GET /a HTTP/1.1\r\nrange: bytes=5-\r\n\r\n").unwrap().range, Some((5, None)));
        assert!(parse_head("POST /a HTTP/1.1\r\n\r\n").is_none());
        assert!(parse_head("GET /a HTTP/1.1\r\nRange: bytes=x-1\r\n\r\n").is_none());
        let root = Path::new("/srv");
        assert_eq!(resolve(root, "/movie%20a.mp4"), Some(PathBuf::from("/srv/movie a.mp4")));
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/%2e%2e/%2e%2e/x"), None);
    }
}
