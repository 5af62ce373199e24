//! BEP 11 peer exchange (`ut_pex`): which peers a neighbour connected to
//! or dropped since its last message, in compact form with a flags byte
//! per added peer. Lists are bounded both ways: we send at most
//! `MAX_PER_MESSAGE` of each, and take no more than that from a message.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_bencode::value::Value;

/// Peers per list in one message (BEP 11 asks for at most 50 added and 50 dropped).
pub const MAX_PER_MESSAGE: usize = 50;
/// Largest `ut_pex` payload we read (100 IPv6 peers with flags fit in 2 kB).
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// `added.f` bits.
pub const FLAG_ENCRYPTION: u8 = 0x01;
pub const FLAG_SEED: u8 = 0x02;
pub const FLAG_UTP: u8 = 0x04;
pub const FLAG_HOLEPUNCH: u8 = 0x08;
/// We reached it by connecting to it: it accepts connections.
pub const FLAG_REACHABLE: u8 = 0x10;

/// Why a `ut_pex` message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad ut_pex message: {0}")]
pub struct PexError(pub String);

/// One `ut_pex` message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Peers connected since the last message, with their flags.
    pub added: Vec<(SocketAddr, u8)>,
    pub dropped: Vec<SocketAddr>,
}

impl PexMessage {
    pub fn parse(payload: &[u8]) -> Result<PexMessage, PexError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(PexError(format!("{} bytes", payload.len())));
        }
        let value: Value = crate::bencode::decode(payload).map_err(|e| PexError(e.to_string()))?;
        let Value::Dict(d) = value else { return Err(PexError("not a dictionary".into())) };
        let bytes = |k: &[u8]| match d.get(k) {
            Some(Value::Bytes(b)) => b.as_slice(),
            _ => &[],
        };
        let mut added = Vec::new();
        for (list, flags, size) in [(&b"added"[..], &b"added.f"[..], 6), (b"added6", b"added6.f", 18)] {
            let flags = bytes(flags);
            for (i, chunk) in bytes(list).chunks_exact(size).take(MAX_PER_MESSAGE).enumerate() {
                if let Some(addr) = compact(chunk) {
                    added.push((addr, flags.get(i).copied().unwrap_or(0)));
                }
            }
        }
        let mut dropped = Vec::new();
        for (list, size) in [(&b"dropped"[..], 6), (b"dropped6", 18)] {
            dropped.extend(bytes(list).chunks_exact(size).take(MAX_PER_MESSAGE).filter_map(compact));
        }
        Ok(PexMessage { added, dropped })
    }

    /// The payload; lists longer than `MAX_PER_MESSAGE` are cut.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut d: HashMap<Vec<u8>, Value> = HashMap::new();
        let (mut a4, mut f4, mut a6, mut f6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (addr, flags) in self.added.iter().take(MAX_PER_MESSAGE) {
            let (list, fl) = if addr.is_ipv4() { (&mut a4, &mut f4) } else { (&mut a6, &mut f6) };
            list.extend_from_slice(&encode(addr));
            fl.push(*flags);
        }
        let (mut d4, mut d6) = (Vec::new(), Vec::new());
        for addr in self.dropped.iter().take(MAX_PER_MESSAGE) {
            if addr.is_ipv4() { &mut d4 } else { &mut d6 }.extend_from_slice(&encode(addr));
        }
        for (k, v) in [("added", a4), ("added.f", f4), ("added6", a6), ("added6.f", f6), ("dropped", d4), ("dropped6", d6)] {
            d.insert(k.as_bytes().to_vec(), Value::Bytes(v));
        }
        serde_bencode::to_bytes(&Value::Dict(d)).unwrap_or_default()
    }
}

fn compact(b: &[u8]) -> Option<SocketAddr> {
    let (ip, port) = match b.len() {
        6 => (IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])), u16::from_be_bytes([b[4], b[5]])),
        18 => (IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).ok()?)), u16::from_be_bytes([b[16], b[17]])),
        _ => return None,
    };
    (port != 0 && !ip.is_unspecified()).then_some(SocketAddr::new(ip, port))
}

fn encode(addr: &SocketAddr) -> Vec<u8> {
    let mut out = match addr.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_families_with_flags() {
        let m = PexMessage {
            added: vec![("127.0.0.2:6881".parse().unwrap(), FLAG_SEED | FLAG_REACHABLE), ("[::1]:7000".parse().unwrap(), FLAG_UTP)],
            dropped: vec!["127.0.0.3:1".parse().unwrap()],
        };
        assert_eq!(PexMessage::parse(&m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn real_libtorrent_shape_and_bounds() {
        // As libtorrent sends it: added, added.f, dropped (and empty v6 lists).
        let mut p = b"d5:added12:".to_vec();
        p.extend_from_slice(&[127, 0, 0, 5, 0x1a, 0xe1, 127, 0, 0, 6, 0, 0]);
        p.extend_from_slice(b"7:added.f1:\x10");
        p.extend_from_slice(b"7:dropped0:e");
        let m = PexMessage::parse(&p).unwrap();
        assert_eq!(m.added, vec![("127.0.0.5:6881".parse().unwrap(), 0x10)], "port 0 dropped; a missing flag is 0");
        // 2,000 peers in one message: only the first 50 are taken.
        let mut big = b"d5:added12000:".to_vec();
        for i in 0..2000u32 {
            big.extend_from_slice(&[10, (i >> 8) as u8, i as u8, 1, 0x1a, 0xe1]);
        }
        big.push(b'e');
        assert_eq!(PexMessage::parse(&big).unwrap().added.len(), MAX_PER_MESSAGE);
        // A length that is no multiple of 6 keeps the whole entries.
        assert_eq!(PexMessage::parse(b"d5:added7:\x7f\0\0\x01\x1a\xe1\x00e").unwrap().added.len(), 1);
        assert!(PexMessage::parse(b"le").is_err());
        assert!(PexMessage::parse(&vec![b'x'; MAX_PAYLOAD + 1]).is_err());
    }
}
