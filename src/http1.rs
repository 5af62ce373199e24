//! The bits of HTTP/1.1 our two small file servers share (the world's VoD
//! server and `--serve`): bounded request heads, GET/HEAD with one byte
//! range, and response heads for 200, 206 and 416.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Characters escaped in a URL path segment (RFC 3986 unreserved ones stay).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A file name as one URL path segment.
pub fn encode_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, PATH_SEGMENT).to_string()
}

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// A parsed request head: path and optional byte range `first-[last]`.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    pub range: Option<(u64, Option<u64>)>,
    pub head_only: bool,
    /// The client closes after this reply (`Connection: close`, or
    /// HTTP/1.0 without keep-alive): answer, then close.
    pub close: bool,
}

/// Reads one request head from `stream` (leftover bytes stay in `buf` for
/// the next request on a kept-alive connection). `None`: the connection
/// closed, failed, or sent a head over 8 KiB.
pub async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(head) = take_head(buf) {
            return Some(head);
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The first complete request head in `buf` (through its blank line),
/// removed from `buf`; `None` while the head is incomplete. The pure half
/// of `read_head`, public for the fuzz targets (`fuzz/`).
pub fn take_head(buf: &mut Vec<u8>) -> Option<String> {
    let i = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
    buf.drain(..i + 4);
    Some(head)
}

/// Parses a GET or HEAD request; anything else (or a malformed range) is `None`.
pub fn parse_head(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?;
    let path = first.next()?.split('?').next()?.to_string();
    if method != "GET" && method != "HEAD" {
        return None;
    }
    let mut close = first.next() == Some("HTTP/1.0");
    let mut range = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { continue };
        if k.trim().eq_ignore_ascii_case("connection") {
            close = !v.trim().eq_ignore_ascii_case("keep-alive");
        }
        if k.trim().eq_ignore_ascii_case("range") {
            let spec = v.trim().strip_prefix("bytes=")?;
            let (a, b) = spec.split_once('-')?;
            range = Some((a.trim().parse().ok()?, if b.trim().is_empty() { None } else { Some(b.trim().parse().ok()?) }));
        }
    }
    Some(Request { path, range, head_only: method == "HEAD", close })
}

/// A range outside the file: the 416 reply head to send instead.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable(pub String);

/// The bytes `[start, end)` a request gets from a file of `size` bytes and
/// the response head announcing them.
pub fn range_response(range: Option<(u64, Option<u64>)>, size: u64, content_type: &str) -> Result<(u64, u64, String), Unsatisfiable> {
    let (status, start, end) = match range {
        None => ("200 OK", 0, size),
        Some((a, b)) => {
            let last = b.unwrap_or(u64::MAX).min(size.saturating_sub(1));
            if a >= size || a > last {
                return Err(Unsatisfiable(format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\n\r\n"
                )));
            }
            ("206 Partial Content", a, last + 1)
        }
    };
    let mut head =
        format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n", end - start);
    if range.is_some() {
        head.push_str(&format!("Content-Range: bytes {start}-{}/{size}\r\n", end - 1));
    }
    head.push_str("\r\n");
    Ok((start, end, head))
}

/// A content type from a file name's extension (what players sniff first).
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "ts" => "video/mp2t",
        "mp3" => "audio/mpeg",
        "vtt" => "text/vtt",
        "srt" | "ass" | "ssa" => "text/plain; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_ranges() {
        let r = parse_head("GET /movie%20a.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n").unwrap();
        assert_eq!(r, Request { path: "/movie%20a.mp4".into(), range: Some((10, Some(19))), head_only: false, close: false });
        assert!(parse_head("GET /a HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap().close);
        assert!(parse_head("GET /a HTTP/1.0\r\n\r\n").unwrap().close);
        assert!(!parse_head("GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().close);
        assert_eq!(parse_head("GET /a HTTP/1.1\r\nrange: bytes=5-\r\n\r\n").unwrap().range, Some((5, None)));
        assert!(parse_head("HEAD /a HTTP/1.1\r\n\r\n").unwrap().head_only);
        assert!(parse_head("POST /a HTTP/1.1\r\n\r\n").is_none());
        assert!(parse_head("GET /a HTTP/1.1\r\nRange: bytes=x-1\r\n\r\n").is_none());
        assert!(parse_head("").is_none());

        let (start, end, head) = range_response(None, 100, "video/mp4").unwrap();
        assert_eq!((start, end), (0, 100));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Content-Length: 100\r\n"));
        let (start, end, head) = range_response(Some((90, Some(200))), 100, "video/mp4").unwrap();
        assert_eq!((start, end), (90, 100));
        assert!(head.contains("206 Partial Content") && head.contains("Content-Range: bytes 90-99/100\r\n"));
        assert!(range_response(Some((100, None)), 100, "x").unwrap_err().0.contains("416"));
        assert!(range_response(Some((5, Some(4))), 100, "x").is_err());
        assert_eq!(content_type("Movie.MP4"), "video/mp4");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(encode_segment("ccfd-demo.mp4"), "ccfd-demo.mp4");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }
}
