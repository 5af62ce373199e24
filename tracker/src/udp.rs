//! UDP tracker protocol (BEP 15): connect, announce, scrape, with
//! retransmission on a doubling timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::{lookup_host, UdpSocket};

use super::{compact_peers_v4, compact_peers_v6, AnnounceRequest, AnnounceResponse, Event, ScrapeStats, TrackerError, UdpTiming};
use ccfd_proto::metainfo::InfoHash;

pub(crate) const PROTOCOL_ID: u64 = 0x0417_2710_1980;
pub(crate) const CONNECT: u32 = 0;
pub(crate) const ANNOUNCE: u32 = 1;
pub(crate) const SCRAPE: u32 = 2;
pub(crate) const ERROR: u32 = 3;
/// Largest datagram we accept.
const MAX_DATAGRAM: usize = 64 * 1024;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks the action and transaction id of a reply, turning error replies into errors.
fn check_header(reply: &[u8], action: u32, tx: u32) -> Result<(), TrackerError> {
    if reply.len() < 8 {
        return Err(TrackerError::Malformed(format!("{}-byte reply", reply.len())));
    }
    if be32(reply, 4) != tx {
        return Err(TrackerError::Malformed("transaction id mismatch".into()));
    }
    match be32(reply, 0) {
        a if a == action => Ok(()),
        ERROR if reply.len() > 8 => Err(TrackerError::Failure(String::from_utf8_lossy(&reply[8..]).into_owned())),
        // opentracker answers a torrent outside its whitelist with a bare 8-byte error.
        ERROR => Err(TrackerError::Failure("error reply without a message (torrent not authorized?)".into())),
        other => Err(TrackerError::Malformed(format!("unexpected action {other}"))),
    }
}

pub fn connect_request(tx: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    b[8..12].copy_from_slice(&CONNECT.to_be_bytes());
    b[12..].copy_from_slice(&tx.to_be_bytes());
    b
}

/// Parses a connect reply into the connection id.
pub fn parse_connect(reply: &[u8], tx: u32) -> Result<u64, TrackerError> {
    check_header(reply, CONNECT, tx)?;
    let id = reply.get(8..16).ok_or_else(|| TrackerError::Malformed("short connect reply".into()))?;
    Ok(u64::from_be_bytes(id.try_into().unwrap_or_default()))
}

pub fn announce_request(conn: u64, tx: u32, req: &AnnounceRequest) -> Vec<u8> {
    let event: u32 = match req.event {
        Event::None => 0,
        Event::Completed => 1,
        Event::Started => 2,
        Event::Stopped => 3,
    };
    let mut b = Vec::with_capacity(98);
    b.extend_from_slice(&conn.to_be_bytes());
    b.extend_from_slice(&ANNOUNCE.to_be_bytes());
    b.extend_from_slice(&tx.to_be_bytes());
    b.extend_from_slice(&req.info_hash.0);
    b.extend_from_slice(&req.peer_id);
    b.extend_from_slice(&req.downloaded.to_be_bytes());
    b.extend_from_slice(&req.left.to_be_bytes());
    b.extend_from_slice(&req.uploaded.to_be_bytes());
    b.extend_from_slice(&event.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes()); // ip: the sender's
    b.extend_from_slice(&req.key.to_be_bytes());
    b.extend_from_slice(&(req.numwant.min(i32::MAX as u32) as i32).to_be_bytes());
    b.extend_from_slice(&req.port.to_be_bytes());
    b
}

/// Parses an announce reply from an IPv4 tracker.
pub fn parse_announce(reply: &[u8], tx: u32) -> Result<AnnounceResponse, TrackerError> {
    parse_announce_family(reply, tx, false)
}

/// Parses an announce reply; `v6`: the tracker was reached over IPv6.
pub fn parse_announce_family(reply: &[u8], tx: u32, v6: bool) -> Result<AnnounceResponse, TrackerError> {
    check_header(reply, ANNOUNCE, tx)?;
    if reply.len() < 20 {
        return Err(TrackerError::Malformed("short announce reply".into()));
    }
    Ok(AnnounceResponse {
        interval: std::time::Duration::from_secs(u64::from(be32(reply, 8)).max(1)),
        leechers: Some(be32(reply, 12)),
        seeders: Some(be32(reply, 16)),
        peers: if v6 { compact_peers_v6(&reply[20..]) } else { compact_peers_v4(&reply[20..]) },
        ..AnnounceResponse::default()
    })
}

pub fn scrape_request(conn: u64, tx: u32, info_hash: InfoHash) -> Vec<u8> {
    let mut b = Vec::with_capacity(36);
    b.extend_from_slice(&conn.to_be_bytes());
    b.extend_from_slice(&SCRAPE.to_be_bytes());
    b.extend_from_slice(&tx.to_be_bytes());
    b.extend_from_slice(&info_hash.0);
    b
}

/// Parses a scrape reply for one info-hash.
pub fn parse_scrape(reply: &[u8], tx: u32) -> Result<ScrapeStats, TrackerError> {
    check_header(reply, SCRAPE, tx)?;
    if reply.len() < 20 {
        return Err(TrackerError::Malformed("short scrape reply".into()));
    }
    Ok(ScrapeStats { seeders: be32(reply, 8), completed: be32(reply, 12), leechers: be32(reply, 16) })
}

/// Sends `request` and waits for a reply, retransmitting on a doubling timeout.
async fn transact(sock: &UdpSocket, request: &[u8], timing: UdpTiming) -> Result<Vec<u8>, TrackerError> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut timeout = timing.first_timeout;
    for _ in 0..timing.attempts.max(1) {
        sock.send(request).await.map_err(|e| TrackerError::Unreachable(e.to_string()))?;
        match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => return Ok(buf[..n].to_vec()),
            // ICMP port unreachable surfaces as a recv error: nobody is listening.
            Ok(Err(e)) => return Err(TrackerError::Unreachable(e.to_string())),
            Err(_) => timeout *= 2,
        }
    }
    Err(TrackerError::Timeout)
}

async fn connected_socket(host: &str, bind: Option<IpAddr>, timing: UdpTiming) -> Result<(UdpSocket, u64), TrackerError> {
    let addr: SocketAddr = lookup_host(host)
        .await
        .map_err(|e| TrackerError::Unreachable(format!("{host}: {e}")))?
        .next()
        .ok_or_else(|| TrackerError::Unreachable(format!("{host}: no address")))?;
    // From our address if it is of the tracker's family, else from any.
    let any = if addr.is_ipv6() { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    let local = SocketAddr::new(bind.filter(|b| b.is_ipv6() == addr.is_ipv6()).unwrap_or(any), 0);
    let sock = UdpSocket::bind(local).await.map_err(|e| TrackerError::Unreachable(e.to_string()))?;
    sock.connect(addr).await.map_err(|e| TrackerError::Unreachable(e.to_string()))?;
    let tx = rand::random();
    let reply = transact(&sock, &connect_request(tx), timing).await?;
    let conn = parse_connect(&reply, tx)?;
    Ok((sock, conn))
}

/// Announces to `host` (`name:port`) over UDP.
pub async fn announce(
    host: &str,
    bind: Option<IpAddr>,
    timing: UdpTiming,
    req: &AnnounceRequest,
) -> Result<AnnounceResponse, TrackerError> {
    let (sock, conn) = connected_socket(host, bind, timing).await?;
    let tx = rand::random();
    let reply = transact(&sock, &announce_request(conn, tx, req), timing).await?;
    // An IPv6 tracker lists peers in 18-byte entries (BEP 15).
    let v6 = sock.peer_addr().is_ok_and(|a| a.is_ipv6());
    parse_announce_family(&reply, tx, v6)
}

/// Scrapes `host` over UDP for one torrent.
pub async fn scrape(host: &str, bind: Option<IpAddr>, timing: UdpTiming, info_hash: InfoHash) -> Result<ScrapeStats, TrackerError> {
    let (sock, conn) = connected_socket(host, bind, timing).await?;
    let tx = rand::random();
    let reply = transact(&sock, &scrape_request(conn, tx, info_hash), timing).await?;
    parse_scrape(&reply, tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_announce_replies() {
        let mut r = vec![0, 0, 0, 0, 0, 0, 0, 9];
        r.extend_from_slice(&77u64.to_be_bytes());
        assert_eq!(parse_connect(&r, 9).unwrap(), 77);
        assert!(parse_connect(&r, 8).is_err(), "wrong transaction");
        let mut a = vec![0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 60, 0, 0, 0, 2, 0, 0, 0, 1];
        a.extend_from_slice(&[127, 0, 0, 2, 0x1a, 0xe1]);
        let resp = parse_announce(&a, 5).unwrap();
        assert_eq!(resp.peers, vec!["127.0.0.2:6881".parse().unwrap()]);
        assert_eq!((resp.leechers, resp.seeders), (Some(2), Some(1)));
    }

    #[test]
    fn error_and_truncated_replies() {
        let mut e = vec![0, 0, 0, 3, 0, 0, 0, 5];
        assert!(matches!(parse_announce(&e, 5), Err(TrackerError::Failure(_))), "opentracker's bare 8 bytes");
        e.extend_from_slice(b"denied");
        assert!(matches!(parse_announce(&e, 5), Err(TrackerError::Failure(m)) if m == "denied"));
        assert!(parse_announce(&[0, 0, 0, 1], 5).is_err());
        assert!(parse_announce(&[0, 0, 0, 1, 0, 0, 0, 5, 0], 5).is_err());
    }

    #[test]
    fn request_layout() {
        let req = AnnounceRequest {
            info_hash: InfoHash([1; 20]),
            peer_id: [2; 20],
            port: 6881,
            uploaded: 0,
            downloaded: 0,
            left: 10,
            event: Event::Started,
            numwant: 50,
            key: 1,
            tracker_id: None,
            external_ip: None,
        };
        let b = announce_request(3, 4, &req);
        assert_eq!(b.len(), 98);
        assert_eq!(&b[96..], &6881u16.to_be_bytes());
        assert_eq!(be32(&b, 80), 2, "started");
        assert_eq!(connect_request(1)[..8], PROTOCOL_ID.to_be_bytes());
    }

    #[tokio::test]
    async fn retransmits_until_the_tracker_answers() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            let mut buf = [0u8; 200];
            // Drop the first connect, answer the second.
            let _ = server.recv_from(&mut buf).await.unwrap();
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(n, 16);
            let mut r = vec![0, 0, 0, 0];
            r.extend_from_slice(&buf[12..16]);
            r.extend_from_slice(&5u64.to_be_bytes());
            server.send_to(&r, from).await.unwrap();
            let (_, from) = server.recv_from(&mut buf).await.unwrap();
            let mut s = vec![0, 0, 0, 2];
            s.extend_from_slice(&buf[12..16]);
            s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
            server.send_to(&s, from).await.unwrap();
        });
        let timing = UdpTiming { first_timeout: std::time::Duration::from_millis(100), attempts: 3 };
        let stats = scrape(&addr.to_string(), None, timing, InfoHash([0; 20])).await.unwrap();
        assert_eq!(stats, ScrapeStats { seeders: 1, completed: 2, leechers: 3 });
        srv.await.unwrap();
    }
}
