//! KRPC, the DHT's messages (BEP 5, with BEP 32's `nodes6` and `want`):
//! one bencoded dictionary per datagram. Parsing goes through the
//! workspace's bencode guard (nesting bounded) and bounds every list, so
//! nothing a stranger sends can make it panic or allocate much.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use serde_bencode::value::Value;

use crate::id::Id;

/// Largest datagram we parse (BEP 32 asks nodes to receive at least 1024 bytes).
pub const MAX_MESSAGE: usize = 2048;
/// Longest transaction id and token we keep.
const MAX_TID: usize = 16;
const MAX_TOKEN: usize = 64;
/// Most peers we take from one `values` list.
const MAX_VALUES: usize = 200;
/// Our client version in the `v` key: ccfd-bt 0.1.
pub const VERSION: &[u8; 4] = b"CB01";

/// Why a datagram is not a KRPC message we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KrpcError {
    #[error("datagram of {0} bytes")]
    Size(usize),
    #[error("not bencode: {0}")]
    Bencode(String),
    #[error("missing or malformed {0}")]
    Field(&'static str),
}

/// Which address families a querier wants nodes of (BEP 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    pub v4: bool,
    pub v6: bool,
}

/// A query's method and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Ping,
    FindNode {
        target: Id,
        want: Option<Want>,
    },
    GetPeers {
        info_hash: Id,
        want: Option<Want>,
    },
    AnnouncePeer {
        info_hash: Id,
        port: u16,
        implied_port: bool,
        token: Vec<u8>,
    },
    /// A method we do not speak (answered with error 204).
    Other(String),
}

/// A node's id and address, as `nodes` / `nodes6` carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: Id,
    pub addr: SocketAddr,
}

/// What a response may carry (its method is known from the transaction).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    pub nodes: Vec<NodeInfo>,
    pub nodes6: Vec<NodeInfo>,
    pub values: Vec<SocketAddr>,
    pub token: Option<Vec<u8>>,
}

/// One KRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Query { query: Query, id: Id, read_only: bool },
    Response { id: Id, response: Response },
    Error { code: i64, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Transaction id, echoed in the answer.
    pub t: Vec<u8>,
    pub body: Body,
    /// In a response: the address the responder saw us at (BEP 42's `ip`).
    pub ip: Option<SocketAddr>,
}

impl Message {
    /// Parses one datagram.
    pub fn parse(bytes: &[u8]) -> Result<Message, KrpcError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(KrpcError::Size(bytes.len()));
        }
        let value: Value = ccfd_proto::bencode::decode(bytes).map_err(|e| KrpcError::Bencode(e.to_string()))?;
        let Value::Dict(top) = value else { return Err(KrpcError::Field("dictionary")) };
        let t = bytes_of(&top, b"t").filter(|t| t.len() <= MAX_TID).ok_or(KrpcError::Field("t"))?.to_vec();
        let ip = bytes_of(&top, b"ip").and_then(compact_addr);
        let body = match bytes_of(&top, b"y") {
            Some(b"q") => {
                let a = dict_of(&top, b"a").ok_or(KrpcError::Field("a"))?;
                let id = id_of(a, b"id").ok_or(KrpcError::Field("id"))?;
                let method = bytes_of(&top, b"q").ok_or(KrpcError::Field("q"))?;
                let read_only = matches!(top.get(&b"ro"[..]), Some(Value::Int(1)));
                Body::Query { query: query(method, a)?, id, read_only }
            }
            Some(b"r") => {
                let r = dict_of(&top, b"r").ok_or(KrpcError::Field("r"))?;
                let id = id_of(r, b"id").ok_or(KrpcError::Field("id"))?;
                Body::Response { id, response: response(r) }
            }
            Some(b"e") => {
                let Some(Value::List(e)) = top.get(&b"e"[..]) else { return Err(KrpcError::Field("e")) };
                let code = match e.first() {
                    Some(Value::Int(c)) => *c,
                    _ => 0,
                };
                let message = match e.get(1) {
                    Some(Value::Bytes(m)) => String::from_utf8_lossy(&m[..m.len().min(200)]).into_owned(),
                    _ => String::new(),
                };
                Body::Error { code, message }
            }
            _ => return Err(KrpcError::Field("y")),
        };
        Ok(Message { t, body, ip })
    }

    /// The datagram for this message.
    pub fn encode(&self) -> Vec<u8> {
        let mut top: HashMap<Vec<u8>, Value> = HashMap::new();
        top.insert(b"t".to_vec(), Value::Bytes(self.t.clone()));
        top.insert(b"v".to_vec(), Value::Bytes(VERSION.to_vec()));
        if let Some(ip) = self.ip {
            top.insert(b"ip".to_vec(), Value::Bytes(encode_addr(&ip)));
        }
        match &self.body {
            Body::Query { query, id, read_only } => {
                top.insert(b"y".to_vec(), Value::Bytes(b"q".to_vec()));
                let (method, mut a) = encode_query(query);
                a.insert(b"id".to_vec(), Value::Bytes(id.0.to_vec()));
                top.insert(b"q".to_vec(), Value::Bytes(method.into_bytes()));
                top.insert(b"a".to_vec(), Value::Dict(a));
                if *read_only {
                    top.insert(b"ro".to_vec(), Value::Int(1));
                }
            }
            Body::Response { id, response } => {
                top.insert(b"y".to_vec(), Value::Bytes(b"r".to_vec()));
                let mut r = HashMap::new();
                r.insert(b"id".to_vec(), Value::Bytes(id.0.to_vec()));
                if !response.nodes.is_empty() {
                    r.insert(b"nodes".to_vec(), Value::Bytes(encode_nodes(&response.nodes, false)));
                }
                if !response.nodes6.is_empty() {
                    r.insert(b"nodes6".to_vec(), Value::Bytes(encode_nodes(&response.nodes6, true)));
                }
                if !response.values.is_empty() {
                    r.insert(b"values".to_vec(), Value::List(response.values.iter().map(|a| Value::Bytes(encode_addr(a))).collect()));
                }
                if let Some(token) = &response.token {
                    r.insert(b"token".to_vec(), Value::Bytes(token.clone()));
                }
                top.insert(b"r".to_vec(), Value::Dict(r));
            }
            Body::Error { code, message } => {
                top.insert(b"y".to_vec(), Value::Bytes(b"e".to_vec()));
                top.insert(b"e".to_vec(), Value::List(vec![Value::Int(*code), Value::Bytes(message.clone().into_bytes())]));
            }
        }
        // Maps of byte strings and integers always serialize.
        serde_bencode::to_bytes(&Value::Dict(top)).unwrap_or_default()
    }
}

fn encode_query(query: &Query) -> (String, HashMap<Vec<u8>, Value>) {
    let mut a = HashMap::new();
    let want = |a: &mut HashMap<Vec<u8>, Value>, want: &Option<Want>| {
        if let Some(w) = want {
            let mut list = Vec::new();
            if w.v4 {
                list.push(Value::Bytes(b"n4".to_vec()));
            }
            if w.v6 {
                list.push(Value::Bytes(b"n6".to_vec()));
            }
            a.insert(b"want".to_vec(), Value::List(list));
        }
    };
    let method = match query {
        Query::Ping => "ping",
        Query::FindNode { target, want: w } => {
            a.insert(b"target".to_vec(), Value::Bytes(target.0.to_vec()));
            want(&mut a, w);
            "find_node"
        }
        Query::GetPeers { info_hash, want: w } => {
            a.insert(b"info_hash".to_vec(), Value::Bytes(info_hash.0.to_vec()));
            want(&mut a, w);
            "get_peers"
        }
        Query::AnnouncePeer { info_hash, port, implied_port, token } => {
            a.insert(b"info_hash".to_vec(), Value::Bytes(info_hash.0.to_vec()));
            a.insert(b"port".to_vec(), Value::Int(i64::from(*port)));
            a.insert(b"implied_port".to_vec(), Value::Int(i64::from(*implied_port)));
            a.insert(b"token".to_vec(), Value::Bytes(token.clone()));
            "announce_peer"
        }
        Query::Other(m) => return (m.clone(), a),
    };
    (method.to_string(), a)
}

fn query(method: &[u8], a: &HashMap<Vec<u8>, Value>) -> Result<Query, KrpcError> {
    let want = || match a.get(&b"want"[..]) {
        Some(Value::List(items)) => Some(Want {
            v4: items.iter().any(|i| matches!(i, Value::Bytes(b) if b == b"n4")),
            v6: items.iter().any(|i| matches!(i, Value::Bytes(b) if b == b"n6")),
        }),
        _ => None,
    };
    Ok(match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode { target: id_of(a, b"target").ok_or(KrpcError::Field("target"))?, want: want() },
        b"get_peers" => Query::GetPeers { info_hash: id_of(a, b"info_hash").ok_or(KrpcError::Field("info_hash"))?, want: want() },
        b"announce_peer" => Query::AnnouncePeer {
            info_hash: id_of(a, b"info_hash").ok_or(KrpcError::Field("info_hash"))?,
            port: match a.get(&b"port"[..]) {
                Some(Value::Int(p)) => u16::try_from(*p).unwrap_or(0),
                _ => 0,
            },
            implied_port: matches!(a.get(&b"implied_port"[..]), Some(Value::Int(i)) if *i != 0),
            token: bytes_of(a, b"token").filter(|t| t.len() <= MAX_TOKEN).ok_or(KrpcError::Field("token"))?.to_vec(),
        },
        other => Query::Other(String::from_utf8_lossy(&other[..other.len().min(32)]).into_owned()),
    })
}

fn response(r: &HashMap<Vec<u8>, Value>) -> Response {
    let values = match r.get(&b"values"[..]) {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::Bytes(b) => compact_addr(b),
                _ => None,
            })
            .filter(|a| a.port() != 0)
            .take(MAX_VALUES)
            .collect(),
        _ => Vec::new(),
    };
    Response {
        nodes: bytes_of(r, b"nodes").map(|b| decode_nodes(b, false)).unwrap_or_default(),
        nodes6: bytes_of(r, b"nodes6").map(|b| decode_nodes(b, true)).unwrap_or_default(),
        values,
        token: bytes_of(r, b"token").filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN).map(<[u8]>::to_vec),
    }
}

fn bytes_of<'a>(d: &'a HashMap<Vec<u8>, Value>, key: &[u8]) -> Option<&'a [u8]> {
    match d.get(key) {
        Some(Value::Bytes(b)) => Some(b),
        _ => None,
    }
}

fn dict_of<'a>(d: &'a HashMap<Vec<u8>, Value>, key: &[u8]) -> Option<&'a HashMap<Vec<u8>, Value>> {
    match d.get(key) {
        Some(Value::Dict(inner)) => Some(inner),
        _ => None,
    }
}

fn id_of(d: &HashMap<Vec<u8>, Value>, key: &[u8]) -> Option<Id> {
    bytes_of(d, key).and_then(Id::from_slice)
}

/// A compact address: 6 bytes (IPv4) or 18 (IPv6), port last.
pub fn compact_addr(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(b[0], b[1], b[2], b[3]), u16::from_be_bytes([b[4], b[5]])))),
        18 => {
            let ip: [u8; 16] = b[..16].try_into().ok()?;
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), u16::from_be_bytes([b[16], b[17]]), 0, 0)))
        }
        _ => None,
    }
}

/// The compact form of an address.
pub fn encode_addr(a: &SocketAddr) -> Vec<u8> {
    let mut out = match a {
        SocketAddr::V4(v4) => v4.ip().octets().to_vec(),
        SocketAddr::V6(v6) => v6.ip().octets().to_vec(),
    };
    out.extend_from_slice(&a.port().to_be_bytes());
    out
}

/// `nodes` (26-byte entries) or `nodes6` (38-byte entries); a trailing partial entry is ignored.
fn decode_nodes(b: &[u8], v6: bool) -> Vec<NodeInfo> {
    let size = if v6 { 38 } else { 26 };
    b.chunks_exact(size)
        .filter_map(|c| Some(NodeInfo { id: Id::from_slice(&c[..20])?, addr: compact_addr(&c[20..])? }))
        .filter(|n| n.addr.port() != 0)
        .collect()
}

fn encode_nodes(nodes: &[NodeInfo], v6: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for n in nodes.iter().filter(|n| n.addr.is_ipv6() == v6) {
        out.extend_from_slice(&n.id.0);
        out.extend_from_slice(&encode_addr(&n.addr));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bep_5_examples_parse() {
        let ping = Message::parse(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe").unwrap();
        assert_eq!(ping.t, b"aa");
        assert!(matches!(ping.body, Body::Query { query: Query::Ping, .. }));
        let pong = Message::parse(b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re").unwrap();
        assert!(matches!(pong.body, Body::Response { .. }));
        let err = Message::parse(b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee").unwrap();
        assert_eq!(err.body, Body::Error { code: 201, message: "A Generic Error Ocurred".into() });
        let gp =
            Message::parse(b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe").unwrap();
        assert!(matches!(gp.body, Body::Query { query: Query::GetPeers { want: None, .. }, .. }));
        let ap = Message::parse(
            b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        )
        .unwrap();
        let Body::Query { query: Query::AnnouncePeer { port, implied_port, token, .. }, .. } = ap.body else { panic!() };
        assert_eq!((port, implied_port, token.as_slice()), (6881, true, &b"aoeusnth"[..]));
    }

    #[test]
    fn messages_round_trip() {
        let id = Id([7; 20]);
        let node = NodeInfo { id: Id([9; 20]), addr: "127.0.0.5:6881".parse().unwrap() };
        let node6 = NodeInfo { id: Id([8; 20]), addr: "[::1]:6882".parse().unwrap() };
        for body in [
            Body::Query { query: Query::FindNode { target: Id([1; 20]), want: Some(Want { v4: true, v6: true }) }, id, read_only: false },
            Body::Query {
                query: Query::AnnouncePeer { info_hash: Id([2; 20]), port: 7000, implied_port: true, token: vec![1, 2, 3] },
                id,
                read_only: false,
            },
            Body::Response {
                id,
                response: Response {
                    nodes: vec![node],
                    nodes6: vec![node6],
                    values: vec!["127.0.0.9:1".parse().unwrap(), "[::2]:2".parse().unwrap()],
                    token: Some(b"tok".to_vec()),
                },
            },
            Body::Error { code: 203, message: "bad token".into() },
        ] {
            let m = Message { t: b"xy".to_vec(), body, ip: Some("127.0.0.1:5".parse().unwrap()) };
            assert_eq!(Message::parse(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn garbage_and_oversize_are_refused_without_panicking() {
        for bad in [
            &b""[..],
            b"de",
            b"d1:t2:aae",
            b"d1:t2:aa1:y1:qe",
            b"l1:ae",
            b"d1:y1:r1:t2:aa1:rd2:id3:abcee",
            b"d1:t40:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx1:y1:re",
        ] {
            assert!(Message::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Message::parse(&vec![b'd'; MAX_MESSAGE + 1]), Err(KrpcError::Size(MAX_MESSAGE + 1)));
        let mut deep = b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id20:abcdefghij01234567891:x".to_vec();
        deep.extend(std::iter::repeat_n(b'l', 500));
        deep.extend(std::iter::repeat_n(b'e', 500));
        deep.extend_from_slice(b"ee");
        assert!(Message::parse(&deep).is_err(), "nested too deep");
    }

    #[test]
    fn odd_node_lists_keep_whole_entries() {
        let mut nodes = vec![1u8; 26];
        nodes[24..].copy_from_slice(&6881u16.to_be_bytes());
        nodes.extend_from_slice(&[0u8; 10]);
        assert_eq!(decode_nodes(&nodes, false).len(), 1);
        assert!(decode_nodes(&[0u8; 25], false).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = Message::parse(&bytes);
            let mut d = b"d".to_vec();
            d.extend_from_slice(&bytes);
            let _ = Message::parse(&d);
        }
    }
}
