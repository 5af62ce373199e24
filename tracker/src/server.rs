//! The built-in tracker's network front ends: HTTP (BEP 3, compact BEP 23,
//! scrape) and UDP (BEP 15), both over one shared `Registry`. Open to any
//! info-hash; every request is bounded and a malformed one gets an error
//! reply, never a crash.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use percent_encoding::percent_decode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::registry::{Announce, AnnounceReply, Registry};
use super::udp::{ANNOUNCE, CONNECT, ERROR, PROTOCOL_ID, SCRAPE};
use super::{Event, ScrapeStats};
use ccfd_proto::metainfo::InfoHash;

/// Largest HTTP request head we read.
const MAX_REQUEST: usize = 8 * 1024;
/// Info-hashes per scrape (BEP 15 fits about 74 in a datagram).
const MAX_SCRAPE: usize = 74;

/// A running tracker's shared state.
pub type SharedRegistry = Arc<Mutex<Registry>>;

/// Addresses a started tracker listens on.
#[derive(Debug, Clone, Copy)]
pub struct TrackerAddrs {
    pub http: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
}

impl TrackerAddrs {
    /// The announce URL peers should use (HTTP when both run).
    pub fn announce_url(&self) -> Option<String> {
        match (self.http, self.udp) {
            (Some(a), _) => Some(format!("http://{a}/announce")),
            (None, Some(a)) => Some(format!("udp://{a}/announce")),
            (None, None) => None,
        }
    }
}

/// Binds the front ends (port 0 picks a free one) and serves until `shutdown`.
pub async fn start(
    http: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    limits: super::registry::Limits,
    shutdown: CancellationToken,
) -> std::io::Result<TrackerAddrs> {
    let interval = limits.interval;
    let registry = Arc::new(Mutex::new(Registry::new(limits)));
    let mut addrs = TrackerAddrs { http: None, udp: None };
    if let Some(addr) = http {
        let listener = TcpListener::bind(addr).await?;
        addrs.http = Some(listener.local_addr()?);
        tokio::spawn(serve_http(listener, registry.clone(), shutdown.clone()));
    }
    if let Some(addr) = udp {
        let socket = UdpSocket::bind(addr).await?;
        addrs.udp = Some(socket.local_addr()?);
        tokio::spawn(serve_udp(socket, registry.clone(), shutdown.clone()));
    }
    tokio::spawn(expire_loop(registry, (interval / 4).max(Duration::from_secs(1)), shutdown));
    Ok(addrs)
}

/// Serves HTTP announces and scrapes until `shutdown`.
pub async fn serve_http(listener: TcpListener, registry: SharedRegistry, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, from)) => {
                tokio::spawn(http_connection(stream, from, registry.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "tracker accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn http_connection(mut stream: TcpStream, from: SocketAddr, registry: SharedRegistry) {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return;
    }
    let body = http_reply(&buf, from, &registry, Instant::now());
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

/// The bencoded body answering one HTTP request head (pure).
pub fn http_reply(head: &[u8], from: SocketAddr, registry: &Mutex<Registry>, now: Instant) -> Vec<u8> {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(b"GET"), Some(target)) = (parts.next(), parts.next()) else { return failure("not a GET request") };
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &b""[..]),
    };
    let params: Vec<(Vec<u8>, Vec<u8>)> = query
        .split(|&b| b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.iter().position(|&b| b == b'=').map_or((kv, &b""[..]), |i| (&kv[..i], &kv[i + 1..]));
            (percent_decode(k).collect(), percent_decode(v).collect())
        })
        .collect();
    let get = |name: &str| params.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.as_slice());
    let number = |name: &str| get(name).and_then(|v| std::str::from_utf8(v).ok()).and_then(|s| s.parse::<u64>().ok());
    match path {
        b"/announce" => {
            let Some(info_hash) = get("info_hash").and_then(|v| <[u8; 20]>::try_from(v).ok()) else {
                return failure("missing or malformed info_hash");
            };
            let Some(peer_id) = get("peer_id").and_then(|v| <[u8; 20]>::try_from(v).ok()) else {
                return failure("missing or malformed peer_id");
            };
            let Some(port) = number("port").and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0) else {
                return failure("missing or malformed port");
            };
            let event = match get("event") {
                Some(b"started") => Event::Started,
                Some(b"completed") => Event::Completed,
                Some(b"stopped") => Event::Stopped,
                _ => Event::None,
            };
            let announce = Announce {
                info_hash: InfoHash(info_hash),
                peer_id,
                addr: SocketAddr::new(from.ip(), port),
                // A client that does not say how much it lacks (webtorrent
                // sends `left=NaN` while it fetches a magnet's metadata) is
                // not a seed: it must be given the seeds.
                left: number("left").unwrap_or(u64::MAX),
                event,
                numwant: number("numwant").map(|n| n.min(u64::from(u32::MAX)) as u32),
            };
            match registry.lock().announce(&announce, now) {
                Ok(reply) => announce_body(&reply, get("compact") != Some(b"0")),
                Err(e) => failure(&e.to_string()),
            }
        }
        b"/scrape" => {
            let reg = registry.lock();
            let mut out = b"d5:filesd".to_vec();
            let mut hashes: Vec<[u8; 20]> =
                params.iter().filter(|(k, _)| k == b"info_hash").filter_map(|(_, v)| <[u8; 20]>::try_from(v.as_slice()).ok()).collect();
            hashes.sort();
            hashes.dedup();
            for h in hashes.into_iter().take(MAX_SCRAPE) {
                let s = reg.scrape(&InfoHash(h));
                bytes(&mut out, &h);
                out.extend_from_slice(
                    format!("d8:completei{}e10:downloadedi{}e10:incompletei{}ee", s.seeders, s.completed, s.leechers).as_bytes(),
                );
            }
            out.extend_from_slice(b"ee");
            out
        }
        _ => failure("unknown path (use /announce or /scrape)"),
    }
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("{}:", b.len()).as_bytes());
    out.extend_from_slice(b);
}

fn failure(reason: &str) -> Vec<u8> {
    let mut out = b"d14:failure reason".to_vec();
    bytes(&mut out, reason.as_bytes());
    out.push(b'e');
    out
}

fn announce_body(reply: &AnnounceReply, compact: bool) -> Vec<u8> {
    let interval = reply.interval.as_secs();
    let mut out = format!(
        "d8:completei{}e10:incompletei{}e8:intervali{}e12:min intervali{}e5:peers",
        reply.seeders,
        reply.leechers,
        interval,
        (interval / 2).max(1)
    )
    .into_bytes();
    if compact {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for p in &reply.peers {
            match p.ip() {
                IpAddr::V4(ip) => {
                    v4.extend_from_slice(&ip.octets());
                    v4.extend_from_slice(&p.port().to_be_bytes());
                }
                IpAddr::V6(ip) => {
                    v6.extend_from_slice(&ip.octets());
                    v6.extend_from_slice(&p.port().to_be_bytes());
                }
            }
        }
        bytes(&mut out, &v4);
        if !v6.is_empty() {
            out.extend_from_slice(b"6:peers6");
            bytes(&mut out, &v6);
        }
    } else {
        out.push(b'l');
        for p in &reply.peers {
            out.extend_from_slice(b"d2:ip");
            bytes(&mut out, p.ip().to_string().as_bytes());
            out.extend_from_slice(format!("4:porti{}ee", p.port()).as_bytes());
        }
        out.push(b'e');
    }
    out.push(b'e');
    out
}

/// Stateless BEP 15 connection ids: a keyed hash of the sender and the minute.
struct ConnectionIds {
    secret: u64,
}

impl ConnectionIds {
    fn id(&self, from: SocketAddr, minute: u64) -> u64 {
        let mut h = DefaultHasher::new();
        (self.secret, from, minute).hash(&mut h);
        h.finish()
    }

    fn minute() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
    }

    /// Valid for the minute it was issued in and the next one (BEP 15: "at least one minute").
    fn valid(&self, from: SocketAddr, id: u64) -> bool {
        let m = Self::minute();
        id == self.id(from, m) || id == self.id(from, m.saturating_sub(1))
    }
}

/// Serves UDP announces and scrapes until `shutdown`.
pub async fn serve_udp(socket: UdpSocket, registry: SharedRegistry, shutdown: CancellationToken) {
    let ids = ConnectionIds { secret: rand::random() };
    let mut buf = vec![0u8; 2048];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let Ok((n, from)) = received else { continue };
        if let Some(reply) = udp_reply(&buf[..n], from, &ids, &registry, Instant::now()) {
            let _ = socket.send_to(&reply, from).await;
        }
    }
}

/// The reply to one UDP request for a tracker whose connection ids are
/// keyed with `secret` (pure but for the clock's minute). Public so the
/// fuzz targets (`fuzz/`) reach the request parser; `serve_udp` keys it
/// with a random secret.
pub fn udp_reply_keyed(req: &[u8], from: SocketAddr, secret: u64, registry: &Mutex<Registry>, now: Instant) -> Option<Vec<u8>> {
    udp_reply(req, from, &ConnectionIds { secret }, registry, now)
}

/// The connection id a tracker keyed with `secret` issues to `from` now
/// (what a BEP 15 connect reply carries); for the fuzz targets, beside
/// `udp_reply_keyed`.
pub fn udp_connection_id(secret: u64, from: SocketAddr) -> u64 {
    ConnectionIds { secret }.id(from, ConnectionIds::minute())
}

fn udp_reply(req: &[u8], from: SocketAddr, ids: &ConnectionIds, registry: &Mutex<Registry>, now: Instant) -> Option<Vec<u8>> {
    if req.len() < 16 {
        return None;
    }
    let conn = u64::from_be_bytes(req[..8].try_into().ok()?);
    let action = u32::from_be_bytes(req[8..12].try_into().ok()?);
    let tx = &req[12..16];
    let mut out = Vec::with_capacity(64);
    let error = |msg: &str| {
        let mut e = ERROR.to_be_bytes().to_vec();
        e.extend_from_slice(tx);
        e.extend_from_slice(msg.as_bytes());
        Some(e)
    };
    if action == CONNECT {
        if conn != PROTOCOL_ID {
            return None;
        }
        out.extend_from_slice(&CONNECT.to_be_bytes());
        out.extend_from_slice(tx);
        out.extend_from_slice(&ids.id(from, ConnectionIds::minute()).to_be_bytes());
        return Some(out);
    }
    if !ids.valid(from, conn) {
        return error("invalid connection id");
    }
    match action {
        ANNOUNCE if req.len() >= 98 => {
            let field = |at: usize, len: usize| &req[at..at + len];
            let info_hash = InfoHash(field(16, 20).try_into().ok()?);
            let peer_id: [u8; 20] = field(36, 20).try_into().ok()?;
            let left = u64::from_be_bytes(field(64, 8).try_into().ok()?);
            let event = match u32::from_be_bytes(field(80, 4).try_into().ok()?) {
                1 => Event::Completed,
                2 => Event::Started,
                3 => Event::Stopped,
                _ => Event::None,
            };
            let numwant = i32::from_be_bytes(field(92, 4).try_into().ok()?);
            let port = u16::from_be_bytes(field(96, 2).try_into().ok()?);
            let announce =
                Announce { info_hash, peer_id, addr: SocketAddr::new(from.ip(), port), left, event, numwant: u32::try_from(numwant).ok() };
            let reply = match registry.lock().announce(&announce, now) {
                Ok(r) => r,
                Err(e) => return error(&e.to_string()),
            };
            out.extend_from_slice(&ANNOUNCE.to_be_bytes());
            out.extend_from_slice(tx);
            out.extend_from_slice(&(reply.interval.as_secs() as u32).to_be_bytes());
            out.extend_from_slice(&reply.leechers.to_be_bytes());
            out.extend_from_slice(&reply.seeders.to_be_bytes());
            for p in &reply.peers {
                if let IpAddr::V4(ip) = p.ip() {
                    out.extend_from_slice(&ip.octets());
                    out.extend_from_slice(&p.port().to_be_bytes());
                }
            }
            Some(out)
        }
        SCRAPE => {
            out.extend_from_slice(&SCRAPE.to_be_bytes());
            out.extend_from_slice(tx);
            let reg = registry.lock();
            for h in req[16..].chunks_exact(20).take(MAX_SCRAPE) {
                let ScrapeStats { seeders, completed, leechers } = reg.scrape(&InfoHash(h.try_into().ok()?));
                for v in [seeders, completed, leechers] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Some(out)
        }
        _ => error("malformed request"),
    }
}

/// Expires silent peers every `every`, until `shutdown`.
pub async fn expire_loop(registry: SharedRegistry, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => registry.lock().expire(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_announce, parse_scrape};
    use crate::registry::Limits;
    use proptest::prelude::*;

    fn get(info_hash: [u8; 20], peer: u8, extra: &str) -> Vec<u8> {
        let enc = |b: &[u8]| percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC).to_string();
        format!("GET /announce?info_hash={}&peer_id={}&port=6881&left=5{extra} HTTP/1.1\r\n\r\n", enc(&info_hash), enc(&[peer; 20]))
            .into_bytes()
    }

    #[test]
    fn http_announce_scrape_and_errors_parse_with_our_own_client_parsers() {
        let reg = Mutex::new(Registry::new(Limits::default()));
        let t = Instant::now();
        let a: SocketAddr = "127.0.0.2:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:1".parse().unwrap();
        parse_announce(&http_reply(&get([7; 20], 1, "&event=started"), a, &reg, t)).unwrap();
        let r = parse_announce(&http_reply(&get([7; 20], 2, ""), b, &reg, t)).unwrap();
        assert_eq!(r.peers, vec!["127.0.0.2:6881".parse().unwrap()]);
        assert_eq!(r.leechers, Some(2));
        let dict = http_reply(&get([7; 20], 2, "&compact=0"), b, &reg, t);
        assert_eq!(parse_announce(&dict).unwrap().peers, r.peers);
        let scrape =
            http_reply(b"GET /scrape?info_hash=%07%07%07%07%07%07%07%07%07%07%07%07%07%07%07%07%07%07%07%07 HTTP/1.1\r\n\r\n", a, &reg, t);
        assert_eq!(parse_scrape(&scrape, InfoHash([7; 20])).unwrap().leechers, 2);
        for bad in [&b"POST / HTTP/1.1\r\n\r\n"[..], b"GET /announce?info_hash=short HTTP/1.1\r\n\r\n", b"GET /x HTTP/1.1\r\n\r\n"] {
            assert!(matches!(parse_announce(&http_reply(bad, a, &reg, t)), Err(crate::TrackerError::Failure(_))));
        }
    }

    #[test]
    fn a_peer_that_does_not_say_what_it_lacks_is_given_the_seeds() {
        let reg = Mutex::new(Registry::new(Limits::default()));
        let t = Instant::now();
        let enc = |b: &[u8]| percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC).to_string();
        let announce = |peer: u8, left: &str| {
            format!("GET /announce?info_hash={}&peer_id={}&port=6881{left} HTTP/1.1\r\n\r\n", enc(&[9; 20]), enc(&[peer; 20])).into_bytes()
        };
        parse_announce(&http_reply(&announce(1, "&left=0"), "127.0.0.2:1".parse().unwrap(), &reg, t)).unwrap();
        for (peer, left) in [(2, "&left=NaN"), (3, "")] {
            let r = parse_announce(&http_reply(&announce(peer, left), "127.0.0.3:1".parse().unwrap(), &reg, t)).unwrap();
            assert_eq!(r.peers, vec!["127.0.0.2:6881".parse().unwrap()], "left {left:?}");
        }
    }

    #[test]
    fn udp_connect_then_announce_and_bad_connection_ids() {
        let reg = Mutex::new(Registry::new(Limits::default()));
        let ids = ConnectionIds { secret: 42 };
        let from: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let t = Instant::now();
        let reply = udp_reply(&crate::udp::connect_request(7), from, &ids, &reg, t).unwrap();
        let conn = crate::udp::parse_connect(&reply, 7).unwrap();
        let req = crate::AnnounceRequest {
            info_hash: InfoHash([3; 20]),
            peer_id: [4; 20],
            port: 6881,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: Event::Started,
            numwant: 10,
            key: 1,
            tracker_id: None,
            external_ip: None,
        };
        let reply = udp_reply(&crate::udp::announce_request(conn, 8, &req), from, &ids, &reg, t).unwrap();
        assert_eq!(crate::udp::parse_announce(&reply, 8).unwrap().seeders, Some(1));
        let forged = udp_reply(&crate::udp::announce_request(conn ^ 1, 9, &req), from, &ids, &reg, t).unwrap();
        assert!(crate::udp::parse_announce(&forged, 9).is_err());
        let other: SocketAddr = "127.0.0.10:5000".parse().unwrap();
        assert!(udp_reply(&crate::udp::announce_request(conn, 9, &req), other, &ids, &reg, t).is_some_and(|r| r[3] == 3));
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let reg = Mutex::new(Registry::new(Limits::default()));
            let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let _ = http_reply(&bytes, from, &reg, Instant::now());
            let _ = udp_reply(&bytes, from, &ConnectionIds { secret: 1 }, &reg, Instant::now());
        }
    }
}
