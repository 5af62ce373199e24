//! The fuzz targets' bodies, written once (issue 22).
//!
//! Each `pub fn <target>(data: &[u8])` feeds outside bytes to the real
//! parser of one format, as the engine does, and checks what must hold
//! when a parse succeeds (a re-encoding reads back the same, lengths stay
//! in bounds). None of them may panic on any input. They are compiled
//! twice: by cargo-fuzz, one `fuzz_targets/<target>.rs` per function (with
//! sanitizers, on nightly), and by the root crate's `tests/fuzz_replay.rs`
//! (stable, `cargo test`), which includes this file as a module and runs
//! every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`
//! through `TARGETS`. So this file uses only crates the root crate depends on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Instant;

use bytes::BytesMut;
use serde_bencode::value::Value;
use tokio_util::codec::{Decoder, Encoder};

use ccfd_proto::metainfo::{InfoHash, Metainfo};

/// A target's body: any bytes in, no panic.
pub type Target = fn(&[u8]);

/// Every target by name: `fuzz/fuzz_targets/<name>.rs`, `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("bencode", bencode),
    ("metainfo", metainfo),
    ("magnet", magnet),
    ("wire", wire),
    ("extended", extended),
    ("tracker_http", tracker_http),
    ("tracker_udp", tracker_udp),
    ("tracker_server", tracker_server),
    ("coded", coded),
    ("http1", http1),
    ("krpc", krpc),
    ("utp", utp),
    ("resume", resume),
];

/// The info-hash the scrape-reply targets look for (seeds use it).
pub const SCRAPE_HASH: [u8; 20] = *b"ccfd-bt fuzz scrape!";
/// The transaction id the UDP tracker reply target expects (seeds use it).
pub const UDP_TX: u32 = 0x0BAD_F00D;
/// The built-in UDP tracker's connection-id secret in `tracker_server`.
const TRACKER_SECRET: u64 = 0x5EED_5EED_5EED_5EED;

/// `ccfd_proto::bencode`: the bounded scan, spans, and the serde decode
/// behind every structured decode of network data.
pub fn bencode(data: &[u8]) {
    use ccfd_proto::bencode::{decode, dict_value_span, read_bytes, scan, skip_value};
    if let Ok(end) = scan(data) {
        assert!(end <= data.len());
        assert_eq!(skip_value(data, 0), Ok(end));
    }
    if let Ok(span) = dict_value_span(data, b"info") {
        assert!(span.start <= span.end && span.end <= data.len());
    }
    if let Ok((range, end)) = read_bytes(data, 0) {
        assert!(range.end == end && end <= data.len());
    }
    if let Ok(value) = decode::<Value>(data) {
        // serde_bencode writes what it read in canonical form, which reads back equal.
        let again = serde_bencode::to_bytes(&value).expect("a decoded value encodes");
        assert_eq!(decode::<Value>(&again).as_ref(), Ok(&value));
    }
}

/// .torrent files (`Metainfo::from_bytes`: scan, info span, lava_torrent,
/// validation) and a bare info dictionary (`from_info_bytes`, BEP 9).
pub fn metainfo(data: &[u8]) {
    if let Ok(m) = Metainfo::from_bytes(data) {
        // What we save for a magnet reads back as the same torrent.
        let again = Metainfo::from_bytes(&m.to_torrent_bytes()).expect("our own .torrent reads back");
        assert_eq!(again.info_hash, m.info_hash);
        assert_eq!((&again.name, again.piece_length, again.total_length), (&m.name, m.piece_length, m.total_length));
        assert_eq!(again.piece_hashes, m.piece_hashes);
        assert_eq!(again.files, m.files);
        assert_eq!(again.trackers, m.trackers);
        assert_eq!(again.web_seeds, m.web_seeds);
        assert_eq!(again.private, m.private);
        let count = m.piece_count();
        assert!(count >= 1);
        let last = u64::from(m.piece_len(count - 1));
        assert!(last >= 1 && last <= m.piece_length);
        for f in &m.files {
            assert!(f.offset + f.length <= m.total_length);
        }
    }
    if let Ok(m) = Metainfo::from_info_bytes(data, vec![vec!["http://t/announce".into()]]) {
        assert_eq!(m.info_bytes, data[..m.info_bytes.len()]);
    }
}

/// Magnet links and bare info-hashes, and BEP 53 selections.
pub fn magnet(data: &[u8]) {
    use ccfd_proto::magnet::{parse_selection, Magnet};
    let s = String::from_utf8_lossy(data);
    let _ = Magnet::looks_like(&s);
    if let Ok(m) = Magnet::parse(&s) {
        if let Some(sel) = &m.select_only {
            assert!(sel.windows(2).all(|w| w[0] < w[1]));
        }
    }
    if let Some(sel) = parse_selection(&s) {
        assert!(sel.windows(2).all(|w| w[0] < w[1]));
    }
}

/// The BEP 3 handshake (first 68 bytes) and the message codec over the
/// rest; extended messages go on to `extended`, as the reader loop does.
pub fn wire(data: &[u8]) {
    use ccfd_proto::wire::{Handshake, Message, MessageCodec, HANDSHAKE_LEN};
    let rest = match data.first_chunk::<HANDSHAKE_LEN>() {
        Some(head) => {
            if let Ok(hs) = Handshake::parse(head) {
                assert_eq!(&hs.to_bytes(), head);
                let _ = ccfd_proto::wire::client_name(&hs.peer_id);
            }
            &data[HANDSHAKE_LEN..]
        }
        None => data,
    };
    let mut codec = MessageCodec;
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(msg)) = codec.decode(&mut buf) {
        if let Message::Extended { payload, .. } = &msg {
            extended(payload);
        }
        // Unknown ids are kept without their payload: nothing to compare.
        if !matches!(msg, Message::Unknown { .. }) {
            let mut out = BytesMut::new();
            codec.encode(msg.clone(), &mut out).expect("encoding cannot fail");
            assert_eq!(codec.decode(&mut out).expect("our own frame decodes"), Some(msg));
            assert!(out.is_empty());
        }
    }
}

/// BEP 10 extended payloads: the extended handshake (with the ccfd offer
/// in it), `ut_metadata` (and its assembler), `ut_pex`, ccfd control.
pub fn extended(data: &[u8]) {
    use ccfd_bt::ccfd::proto::{Control, Offer};
    use ccfd_proto::extended::{ExtendedHandshake, TheirIds};
    use ccfd_proto::pex::PexMessage;
    use ccfd_proto::ut_metadata::{MetadataAssembler, UtMetadata};
    if let Ok(hs) = ExtendedHandshake::parse(data) {
        let _ = TheirIds::from_handshake(&hs);
        assert_eq!(ExtendedHandshake::parse(&hs.to_bytes()).expect("our own handshake parses"), hs);
        if let Some(offer) = hs.ccfd.as_ref().and_then(Offer::from_value) {
            assert_eq!(Offer::from_value(&offer.to_value()), Some(offer));
        }
    }
    if let Ok(msg) = UtMetadata::parse(data) {
        assert_eq!(UtMetadata::parse(&msg.to_bytes()).expect("our own ut_metadata parses"), msg);
        if let UtMetadata::Data { piece, total_size, data } = msg {
            if let Ok(mut asm) = MetadataAssembler::new(total_size) {
                if asm.receive(piece, &data).is_ok() && asm.is_complete() {
                    let _ = asm.finish(&InfoHash(ccfd_proto::hash::sha1(&data)));
                }
            }
        }
    }
    if let Ok(pex) = PexMessage::parse(data) {
        assert_eq!(PexMessage::parse(&pex.to_bytes()).expect("our own ut_pex parses"), pex);
    }
    if let Ok(control) = Control::parse(data) {
        assert_eq!(Control::parse(&control.encode()), Ok(control));
    }
}

/// HTTP tracker replies (client side): announce and scrape bodies.
pub fn tracker_http(data: &[u8]) {
    use ccfd_tracker::http::{parse_announce, parse_scrape};
    if let Ok(reply) = parse_announce(data) {
        assert!(!reply.interval.is_zero());
    }
    let _ = parse_scrape(data, InfoHash(SCRAPE_HASH));
}

/// UDP tracker replies (client side, BEP 15), transaction id `UDP_TX`.
pub fn tracker_udp(data: &[u8]) {
    use ccfd_tracker::udp::{parse_announce_family, parse_connect, parse_scrape};
    let _ = parse_connect(data, UDP_TX);
    for v6 in [false, true] {
        if let Ok(reply) = parse_announce_family(data, UDP_TX, v6) {
            assert!(reply.peers.len() <= data.len().saturating_sub(20) / if v6 { 18 } else { 6 });
        }
    }
    let _ = parse_scrape(data, UDP_TX);
}

/// The built-in tracker's front ends: an HTTP request head (first byte
/// even) or a UDP request (odd; bit 1 of the first byte swaps in a valid
/// connection id, which a fuzzer could not guess). Two peers send it, so
/// the second reply carries the first; every HTTP reply is one bencoded value.
pub fn tracker_server(data: &[u8]) {
    use ccfd_tracker::registry::{Limits, Registry};
    use ccfd_tracker::server::{http_reply, udp_connection_id, udp_reply_keyed};
    let Some((&mode, req)) = data.split_first() else { return };
    let registry = parking_lot::Mutex::new(Registry::new(Limits::default()));
    let now = Instant::now();
    let peers = [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 6881),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)), 6882),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)), 6883),
    ];
    for from in peers {
        if mode & 1 == 0 {
            let body = http_reply(req, from, &registry, now);
            assert_eq!(ccfd_proto::bencode::scan(&body), Ok(body.len()), "reply is not one bencoded value");
            let _ = ccfd_tracker::http::parse_announce(&body);
        } else {
            let mut req = req.to_vec();
            if mode & 2 != 0 && req.len() >= 8 {
                req[..8].copy_from_slice(&udp_connection_id(TRACKER_SECRET, from).to_be_bytes());
            }
            let _ = udp_reply_keyed(&req, from, TRACKER_SECRET, &registry, now);
        }
    }
}

/// Coded datagrams (ccfd header + short packet, as `ccfd::router` and the
/// reader loop take them) and full-form coded packets (`ccfd_codec`).
pub fn coded(data: &[u8]) {
    use ccfd_bt::ccfd::proto::{datagram_header, datagram_packet, encode_datagram, encode_probe, is_probe};
    use ccfd_codec::packet::{GenerationId, Packet};
    if let Ok(header) = datagram_header(data) {
        if is_probe(data) {
            assert_eq!(encode_probe(&header), data);
        }
        // A torrent's geometry as the reader looks it up: any K and S for
        // most generations, none for those with the top bit set.
        let geometry = |piece: u32, generation: u16| {
            if generation & 0x8000 != 0 {
                return None;
            }
            let k = (generation & 0xff) + 1;
            let symbol_size = (piece & 0x7ff) as u16 + 1;
            let len = u32::from(k) * u32::from(symbol_size) - (piece >> 16) % u32::from(symbol_size);
            Some(GenerationId { piece, generation, k, symbol_size, len })
        };
        if let Ok(packet) = datagram_packet(data, geometry) {
            assert_eq!(encode_datagram(&header, &packet), data);
            let _ = packet.coefficients.expand(usize::from(packet.id.k));
        }
    }
    if let Ok(packet) = Packet::parse(data) {
        assert_eq!(packet.encode(), data);
        assert_eq!(packet.coefficients.expand(usize::from(packet.id.k)).len(), usize::from(packet.id.k));
    }
}

/// HTTP/1.1 request heads of the two file servers (`--serve` and the
/// world's VoD server): framing, parsing, the range reply.
pub fn http1(data: &[u8]) {
    use ccfd_bt::http1::{content_type, encode_segment, parse_head, range_response, take_head};
    // `read_head` gives up on a head over 8 KiB (it reads 1 KiB at a time).
    let mut buf = data[..data.len().min(9 * 1024)].to_vec();
    while let Some(head) = take_head(&mut buf) {
        let Some(req) = parse_head(&head) else { continue };
        let _ = encode_segment(&req.path);
        for size in [0, 1, 1000, u64::MAX] {
            if let Ok((start, end, reply)) = range_response(req.range, size, content_type(&req.path)) {
                assert!(start <= end && end <= size);
                assert!(reply.ends_with("\r\n\r\n"));
            }
        }
    }
}

/// DHT KRPC datagrams: the parser, and a fresh node receiving one.
pub fn krpc(data: &[u8]) {
    use ccfd_dht::krpc::{Body, Message, Query};
    use ccfd_dht::{Id, Node};
    // An unknown method's name is kept only to be logged: its first 32
    // bytes, lossily, so it does not read back the same (found by fuzzing,
    // fuzz/regressions/krpc/); everything else must.
    let known = |mut m: Message| {
        if let Body::Query { query: Query::Other(name), .. } = &mut m.body {
            name.clear();
        }
        m
    };
    if let Ok(msg) = Message::parse(data) {
        assert_eq!(known(Message::parse(&msg.encode()).expect("our own message parses")), known(msg));
    }
    let now = Instant::now();
    let mut node = Node::new(Id([7; 20]), now, 1);
    for from in [SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 6881), SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 6881)] {
        node.receive(now, from, data);
    }
    for _ in 0..64 {
        if node.poll_transmit(now).is_none() {
            break;
        }
    }
    while node.poll_event().is_some() {}
}

/// uTP packets: the header and extension chain, and a connection that
/// receives one (as a dialer, or as a listener for a SYN).
pub fn utp(data: &[u8]) {
    use ccfd_utp::packet::encode;
    use ccfd_utp::{Connection, Kind, Packet};
    let Ok(p) = Packet::parse(data) else { return };
    let mut out = Vec::new();
    encode(&p.header, p.sack, p.payload, &mut out);
    assert_eq!(Packet::parse(&out), Ok(p));
    let now = Instant::now();
    let mut conn = if p.header.kind == Kind::Syn {
        Connection::accept(now, &p.header, 1000)
    } else {
        let mut c = Connection::connect(now, p.header.conn_id, 1000);
        c.handle(now, &p);
        c
    };
    conn.handle(now, &p);
    for _ in 0..64 {
        if conn.poll_transmit(now).is_none() {
            break;
        }
    }
}

/// A small torrent for the resume target: 3 pieces, 2 files.
fn resume_meta() -> &'static Metainfo {
    static META: OnceLock<Metainfo> = OnceLock::new();
    META.get_or_init(|| {
        let mut info =
            b"d5:filesld6:lengthi20000e4:pathl1:aeed6:lengthi20000e4:pathl1:beee4:name1:t12:piece lengthi16384e6:pieces60:".to_vec();
        info.extend_from_slice(&[0xfe; 60]); // not UTF-8: lava_torrent reads valid UTF-8 as text
        info.push(b'e');
        Metainfo::from_info_bytes(&info, Vec::new()).expect("the resume target's torrent is valid")
    })
}

/// The fast-resume record (`ccfd_bt::resume::ResumeData::decode`). The
/// first byte picks how much of the frame the harness supplies, so the
/// fuzzer gets past the magic, the torrent's hash and the checksum:
/// 0 the bytes as they are, 1 a valid checksum appended, 2 the magic and
/// info-hash before and the checksum after.
pub fn resume(data: &[u8]) {
    use ccfd_bt::resume::ResumeData;
    use sha1::{Digest, Sha1};
    let meta = resume_meta();
    let Some((&mode, body)) = data.split_first() else { return };
    let record = match mode % 3 {
        0 => body.to_vec(),
        m => {
            let mut r = Vec::new();
            if m == 2 {
                // An empty record of this torrent begins with the magic and its hash.
                let empty = ResumeData {
                    info_hash: meta.info_hash.0,
                    pieces: ccfd_proto::bitfield::Bitfield::new(meta.piece_count()),
                    files: vec![None; meta.files.len()],
                };
                r.extend_from_slice(&empty.encode()[..28]);
            }
            r.extend_from_slice(body);
            let sum: [u8; 20] = Sha1::digest(&r).into();
            r.extend_from_slice(&sum);
            r
        }
    };
    if let Ok(rec) = ResumeData::decode(&record, meta) {
        assert_eq!(rec.encode(), record, "every byte of a record is checked, so it re-encodes exactly");
        let now: Vec<_> = rec.files.clone();
        let _ = ccfd_bt::resume::plan(meta, &rec, &now);
    }
}
