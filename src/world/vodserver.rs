//! The world's VoD server: a small HTTP/1.1 file server with Range support
//! that counts the bytes it sends to each client address (the penalty).
//!
//! It serves one folder read-only; paths are percent-decoded and may not
//! leave it. Requests are bounded (8 KiB heads); keep-alive is supported so
//! a client's range requests reuse one connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::http1::{content_type, encode_segment, parse_head, range_response, read_head, Request};

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
        format!("http://{}/{}", self.addr, encode_segment(name))
    }

    /// Bytes sent to `ip` so far.
    pub fn served_to(&self, ip: IpAddr) -> u64 {
        self.served.lock().get(&ip).copied().unwrap_or(0)
    }
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
    while let Some(head) = read_head(&mut stream, &mut buf).await {
        let Some(req) = parse_head(&head) else {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
            return;
        };
        if respond(&mut stream, from, &root, &served, &req).await.is_err() || req.close {
            return;
        }
    }
}

async fn respond(stream: &mut TcpStream, from: SocketAddr, root: &Path, served: &ServedBytes, req: &Request) -> std::io::Result<()> {
    let file = match resolve(root, &req.path) {
        Some(p) => tokio::fs::File::open(p).await.ok(),
        None => None,
    };
    let Some(mut file) = file else {
        return stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
    };
    let size = file.metadata().await?.len();
    let (start, end, reply) = match range_response(req.range, size, content_type(&req.path)) {
        Ok(r) => r,
        Err(refusal) => return stream.write_all(refusal.0.as_bytes()).await,
    };
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
        *served.lock().entry(from.ip()).or_default() += want as u64;
        left -= want as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        let root = Path::new("/srv");
        assert_eq!(resolve(root, "/movie%20a.mp4"), Some(PathBuf::from("/srv/movie a.mp4")));
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/%2e%2e/%2e%2e/x"), None);
    }
}
