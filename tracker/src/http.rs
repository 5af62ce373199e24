//! HTTP tracker announces and scrapes (BEP 3, BEP 23, BEP 48).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use percent_encoding::{percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_bencode::value::Value;

use super::{compact_peers_v4, compact_peers_v6, AnnounceRequest, AnnounceResponse, Event, ScrapeStats, TrackerError};
use ccfd_proto::metainfo::InfoHash;

/// Largest tracker reply we read: 50k peers in compact form is 300 kB.
const MAX_REPLY: usize = 2 << 20;
/// Interval when a tracker gives none.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1800);

/// The full announce URL, with raw bytes percent-encoded.
pub fn announce_url(base: &str, req: &AnnounceRequest) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut url = format!(
        "{base}{sep}info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08x}",
        percent_encode(&req.info_hash.0, NON_ALPHANUMERIC),
        percent_encode(&req.peer_id, NON_ALPHANUMERIC),
        req.port,
        req.uploaded,
        req.downloaded,
        req.left,
        req.numwant,
        req.key,
    );
    let event = match req.event {
        Event::None => None,
        Event::Started => Some("started"),
        Event::Completed => Some("completed"),
        Event::Stopped => Some("stopped"),
    };
    if let Some(e) = event {
        url.push_str("&event=");
        url.push_str(e);
    }
    if let Some(id) = &req.tracker_id {
        url.push_str("&trackerid=");
        url.extend(percent_encode(id.as_bytes(), NON_ALPHANUMERIC));
    }
    match req.external_ip {
        Some(std::net::IpAddr::V4(ip)) => url.push_str(&format!("&ipv4={ip}")),
        Some(std::net::IpAddr::V6(ip)) => {
            url.push_str("&ipv6=");
            url.extend(percent_encode(ip.to_string().as_bytes(), NON_ALPHANUMERIC));
        }
        None => {}
    }
    url
}

#[derive(Debug, Deserialize)]
struct RawAnnounce {
    #[serde(default, rename = "failure reason")]
    failure: Option<Value>,
    #[serde(default, rename = "warning message")]
    warning: Option<Value>,
    #[serde(default)]
    interval: Option<i64>,
    #[serde(default, rename = "min interval")]
    min_interval: Option<i64>,
    #[serde(default, rename = "tracker id")]
    tracker_id: Option<Value>,
    #[serde(default)]
    complete: Option<i64>,
    #[serde(default)]
    incomplete: Option<i64>,
    #[serde(default)]
    peers: Option<Value>,
    #[serde(default)]
    peers6: Option<Value>,
}

fn text(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
        Some(Value::Int(i)) => Some(i.to_string()),
        _ => None,
    }
}

fn count(v: Option<i64>) -> Option<u32> {
    v.and_then(|n| u32::try_from(n).ok())
}

fn seconds(v: Option<i64>) -> Option<Duration> {
    v.and_then(|n| u64::try_from(n).ok()).map(Duration::from_secs)
}

/// Parses an HTTP tracker's announce reply (compact or dictionary peers).
pub fn parse_announce(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let raw: RawAnnounce = ccfd_proto::bencode::decode(body).map_err(|e| TrackerError::Malformed(e.to_string()))?;
    if let Some(reason) = text(raw.failure) {
        return Err(TrackerError::Failure(reason));
    }
    let mut peers = match raw.peers {
        Some(Value::Bytes(b)) => compact_peers_v4(&b),
        Some(Value::List(list)) => list.into_iter().filter_map(dict_peer).collect(),
        None => Vec::new(),
        Some(_) => return Err(TrackerError::Malformed("peers is neither a string nor a list".into())),
    };
    if let Some(Value::Bytes(b)) = raw.peers6 {
        peers.extend(compact_peers_v6(&b));
    }
    Ok(AnnounceResponse {
        peers,
        interval: seconds(raw.interval).filter(|d| !d.is_zero()).unwrap_or(DEFAULT_INTERVAL),
        min_interval: seconds(raw.min_interval),
        tracker_id: text(raw.tracker_id),
        warning: text(raw.warning),
        seeders: count(raw.complete),
        leechers: count(raw.incomplete),
    })
}

/// One peer of a BEP 3 dictionary peer list; malformed entries are skipped.
fn dict_peer(v: Value) -> Option<SocketAddr> {
    let Value::Dict(d) = v else { return None };
    let ip = match d.get(&b"ip"[..])? {
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse::<IpAddr>().ok()?,
        _ => return None,
    };
    let port = match d.get(&b"port"[..])? {
        Value::Int(p) => u16::try_from(*p).ok().filter(|&p| p != 0)?,
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A reqwest error with its causes ("invalid peer certificate: UnknownIssuer"
/// is three levels down), without the URL (it holds our peer id).
pub(crate) fn explain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, TrackerError> {
    let mut resp =
        http.get(url)
            .send()
            .await
            .map_err(|e| if e.is_timeout() { TrackerError::Timeout } else { TrackerError::Unreachable(explain(e)) })?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| TrackerError::Unreachable(explain(e)))? {
        if body.len() + chunk.len() > MAX_REPLY {
            return Err(TrackerError::Malformed(format!("reply larger than {MAX_REPLY} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Announces over HTTP.
pub async fn announce(http: &reqwest::Client, base: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, TrackerError> {
    parse_announce(&get(http, &announce_url(base, req)).await?)
}

/// The BEP 48 scrape URL of an announce URL, if it has one.
pub fn scrape_url(announce: &str) -> Option<String> {
    let (path, query) = announce.split_once('?').map_or((announce, None), |(p, q)| (p, Some(q)));
    let slash = path.rfind('/')?;
    let last = &path[slash + 1..];
    let rest = last.strip_prefix("announce")?;
    let mut url = format!("{}/scrape{rest}", &path[..slash]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    Some(url)
}

/// Parses a scrape reply for one info-hash.
pub fn parse_scrape(body: &[u8], info_hash: InfoHash) -> Result<ScrapeStats, TrackerError> {
    let v: Value = ccfd_proto::bencode::decode(body).map_err(|e| TrackerError::Malformed(e.to_string()))?;
    let Value::Dict(top) = v else {
        return Err(TrackerError::Malformed("scrape reply is not a dictionary".into()));
    };
    if let Some(Value::Bytes(reason)) = top.get(&b"failure reason"[..]) {
        return Err(TrackerError::Failure(String::from_utf8_lossy(reason).into_owned()));
    }
    let Some(Value::Dict(files)) = top.get(&b"files"[..]) else {
        return Err(TrackerError::Malformed("no files".into()));
    };
    let Some(Value::Dict(stats)) = files.get(&info_hash.0[..]) else {
        return Err(TrackerError::Malformed("torrent not in scrape reply".into()));
    };
    let field = |k: &[u8]| match stats.get(k) {
        Some(Value::Int(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    Ok(ScrapeStats { seeders: field(b"complete"), completed: field(b"downloaded"), leechers: field(b"incomplete") })
}

/// Scrapes over HTTP.
pub async fn scrape(http: &reqwest::Client, announce: &str, info_hash: InfoHash) -> Result<ScrapeStats, TrackerError> {
    let base = scrape_url(announce).ok_or_else(|| TrackerError::Unsupported(format!("{announce} has no scrape url")))?;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}info_hash={}", percent_encode(&info_hash.0, NON_ALPHANUMERIC));
    parse_scrape(&get(http, &url).await?, info_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_reply_with_all_fields() {
        let body = b"d8:completei3e10:incompletei1e8:intervali900e12:min intervali60e5:peers12:\x7f\0\0\x02\x1a\xe1\x7f\0\0\x03\x1a\xe215:warning message4:slow10:tracker id3:abce";
        let r = parse_announce(body).unwrap();
        assert_eq!(r.peers, vec!["127.0.0.2:6881".parse().unwrap(), "127.0.0.3:6882".parse().unwrap()]);
        assert_eq!(r.interval, Duration::from_secs(900));
        assert_eq!(r.min_interval, Some(Duration::from_secs(60)));
        assert_eq!((r.seeders, r.leechers), (Some(3), Some(1)));
        assert_eq!(r.warning.as_deref(), Some("slow"));
        assert_eq!(r.tracker_id.as_deref(), Some("abc"));
    }

    #[test]
    fn dictionary_peers_skip_bad_entries() {
        let body = b"d8:intervali60e5:peersld2:ip9:127.0.0.57:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti7000eed2:ip3:bad4:porti1eed2:ip9:127.0.0.64:porti99999eeee";
        let r = parse_announce(body).unwrap();
        assert_eq!(r.peers, vec!["127.0.0.5:7000".parse().unwrap()]);
    }

    #[test]
    fn failures_and_garbage() {
        let e = parse_announce(b"d14:failure reason37:Requested download is not authorized.e").unwrap_err();
        assert!(matches!(e, TrackerError::Failure(ref m) if m.contains("not authorized")));
        assert!(matches!(parse_announce(b"<html>"), Err(TrackerError::Malformed(_))));
        assert!(matches!(parse_announce(b"d5:peersi3ee"), Err(TrackerError::Malformed(_))));
        // Truncated compact list: whole entries kept, the tail ignored.
        let r = parse_announce(b"d5:peers8:\x7f\0\0\x02\x1a\xe1\x7f\0e").unwrap();
        assert_eq!(r.peers.len(), 1);
        assert_eq!(r.interval, DEFAULT_INTERVAL);
    }

    #[test]
    fn urls() {
        let req = AnnounceRequest {
            info_hash: InfoHash([0x12; 20]),
            peer_id: *b"-CB0001-abcdefghijkl",
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Event::Started,
            numwant: 50,
            key: 0xdead,
            tracker_id: None,
            external_ip: None,
        };
        let url = announce_url("http://t/announce?passkey=x", &req);
        assert!(url.starts_with("http://t/announce?passkey=x&info_hash=%12%12"));
        assert!(url.ends_with("&key=0000dead&event=started"));
        let v4 = AnnounceRequest { external_ip: Some("11.0.0.1".parse().unwrap()), ..req.clone() };
        assert!(announce_url("http://t/a", &v4).ends_with("&event=started&ipv4=11.0.0.1"));
        let v6 = AnnounceRequest { external_ip: Some("2001:db8::1".parse().unwrap()), ..req };
        assert!(announce_url("http://t/a", &v6).ends_with("&ipv6=2001%3Adb8%3A%3A1"));
        assert_eq!(scrape_url("http://t:1/announce").as_deref(), Some("http://t:1/scrape"));
        assert_eq!(scrape_url("http://t/x/announce.php?a=b").as_deref(), Some("http://t/x/scrape.php?a=b"));
        assert_eq!(scrape_url("http://t/a"), None);
    }

    #[test]
    fn scrape_reply() {
        let mut body = b"d5:filesd20:".to_vec();
        body.extend_from_slice(&[7u8; 20]);
        body.extend_from_slice(b"d8:completei5e10:downloadedi9e10:incompletei2eeee");
        let s = parse_scrape(&body, InfoHash([7; 20])).unwrap();
        assert_eq!(s, ScrapeStats { seeders: 5, completed: 9, leechers: 2 });
        assert!(parse_scrape(&body, InfoHash([8; 20])).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_replies_never_panic(bytes: Vec<u8>) {
            let _ = parse_announce(&bytes);
            let _ = parse_scrape(&bytes, InfoHash([0; 20]));
        }
    }
}
