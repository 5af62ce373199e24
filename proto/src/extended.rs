//! BEP 10, the extension protocol: the extended handshake, and the
//! registry of the extensions we speak with the message id each side
//! chose for each. A new extension (ut_pex, say) is one more `Extension`
//! and one more name here, not an edit to every connection.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

/// Why a peer's extended handshake was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad extended handshake: {0}")]
pub struct ExtendedError(pub String);

/// The BEP 10 extensions we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Extension {
    /// BEP 9: the info dictionary, for magnet links.
    UtMetadata,
    /// Coded cooperation (docs/ccfd-extension.md).
    Ccfd,
    /// BEP 11: peer exchange.
    UtPex,
}

impl Extension {
    /// Every extension we know, in registry order.
    pub const ALL: [Extension; 3] = [Extension::UtMetadata, Extension::Ccfd, Extension::UtPex];

    /// The name in the handshake's `m` dictionary.
    pub fn name(self) -> &'static str {
        match self {
            Extension::UtMetadata => "ut_metadata",
            Extension::Ccfd => "ccfd",
            Extension::UtPex => "ut_pex",
        }
    }

    /// The message id we ask peers to use when they send us this extension.
    pub fn our_id(self) -> u8 {
        match self {
            Extension::UtMetadata => 3,
            Extension::Ccfd => 4,
            Extension::UtPex => 1,
        }
    }

    /// The extension whose messages arrive on our id `id`.
    pub fn from_our_id(id: u8) -> Option<Extension> {
        Extension::ALL.into_iter().find(|e| e.our_id() == id)
    }
}

/// The `m` dictionary we send: the extensions offered, each on its id.
pub fn our_ids(offered: impl IntoIterator<Item = Extension>) -> BTreeMap<String, i64> {
    offered.into_iter().map(|e| (e.name().to_string(), i64::from(e.our_id()))).collect()
}

/// The ids a peer asked us to use, from its handshake: an extension it
/// does not list (or lists as 0, "disabled") has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TheirIds {
    ids: [Option<u8>; Extension::ALL.len()],
}

impl TheirIds {
    pub fn from_handshake(hs: &ExtendedHandshake) -> TheirIds {
        let mut ids = [None; Extension::ALL.len()];
        for (slot, ext) in ids.iter_mut().zip(Extension::ALL) {
            *slot = hs.m.get(ext.name()).and_then(|&id| u8::try_from(id).ok()).filter(|&id| id != 0);
        }
        TheirIds { ids }
    }

    /// The id to send `ext` messages on, if the peer speaks it.
    pub fn get(&self, ext: Extension) -> Option<u8> {
        let i = Extension::ALL.iter().position(|&e| e == ext)?;
        self.ids[i]
    }
}

/// The BEP 10 extended handshake: the fields we send and read. Written
/// with serde; read by `parse`, which goes through the bencode guard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtendedHandshake {
    /// Extension name -> message id the sender wants to receive it on.
    pub m: BTreeMap<String, i64>,
    /// Client name and version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v: Option<String>,
    /// How many outstanding requests the sender will queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reqq: Option<i64>,
    /// TCP listen port of the sender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p: Option<i64>,
    /// BEP 9: size of the info dictionary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_size: Option<i64>,
    /// The ccfd extension's offer (docs/ccfd-extension.md), read leniently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ccfd: Option<serde_bencode::value::Value>,
}

impl ExtendedHandshake {
    pub fn to_bytes(&self) -> Bytes {
        // Serializing a plain struct of maps, strings and integers cannot fail.
        Bytes::from(serde_bencode::to_bytes(self).unwrap_or_default())
    }

    /// Reads a peer's handshake: it must be a bounded bencoded dictionary
    /// (anything else ends the connection), but a field of an unexpected
    /// type is ignored, as real clients vary (a `v` in Latin-1, an `m`
    /// entry that is not a number).
    pub fn parse(payload: &[u8]) -> Result<ExtendedHandshake, ExtendedError> {
        use serde_bencode::value::Value;
        let value: Value = crate::bencode::decode(payload).map_err(|e| ExtendedError(e.to_string()))?;
        let Value::Dict(mut dict) = value else { return Err(ExtendedError("not a dictionary".into())) };
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        };
        let m = match dict.get(&b"m"[..]) {
            Some(Value::Dict(m)) => {
                m.iter().filter_map(|(name, id)| Some((String::from_utf8(name.clone()).ok()?, int(Some(id))?))).collect()
            }
            _ => BTreeMap::new(),
        };
        let v = match dict.get(&b"v"[..]) {
            Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        Ok(ExtendedHandshake {
            m,
            v,
            reqq: int(dict.get(&b"reqq"[..])),
            p: int(dict.get(&b"p"[..])),
            metadata_size: int(dict.get(&b"metadata_size"[..])),
            ccfd: dict.remove(&b"ccfd"[..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_handshake_parses_real_fields_and_ignores_unknown() {
        let raw = b"d1:md11:ut_metadatai3ee1:pi6881e4:reqqi512e1:v15:Transmission 3.06:yourip4:\x7f\0\0\x01e";
        let h = ExtendedHandshake::parse(raw).unwrap();
        assert_eq!(h.reqq, Some(512));
        assert_eq!(h.m.get("ut_metadata"), Some(&3));
        assert_eq!(ExtendedHandshake::parse(&h.to_bytes()).unwrap(), h);
        assert!(ExtendedHandshake::parse(b"i3e").is_err());
        // Odd field types are skipped, not fatal.
        let odd = ExtendedHandshake::parse(b"d1:md11:ut_metadata1:x2:lti2ee1:v3:\xb5Ta4:reqq3:abce").unwrap();
        assert_eq!(odd.m.get("lt"), Some(&2));
        assert_eq!(odd.m.get("ut_metadata"), None);
        assert_eq!(odd.reqq, None);
        assert_eq!(odd.v.as_deref(), Some("\u{fffd}Ta"));
    }

    #[test]
    fn a_handshake_nested_deep_is_refused_without_recursing() {
        let mut raw = b"d4:ccfd".to_vec();
        raw.extend(std::iter::repeat_n(b'l', 20_000));
        raw.extend(std::iter::repeat_n(b'e', 20_000));
        raw.push(b'e');
        // The depth of a tokio worker's stack and less: the guard must not need it.
        let handle = std::thread::Builder::new().stack_size(128 * 1024).spawn(move || ExtendedHandshake::parse(&raw)).unwrap();
        assert!(matches!(handle.join().unwrap(), Err(ExtendedError(e)) if e.contains("nested deeper")));
    }

    #[test]
    fn the_registry_maps_names_and_ids_both_ways() {
        let m = our_ids(Extension::ALL);
        assert_eq!(m.get("ut_metadata"), Some(&3));
        assert_eq!(m.get("ccfd"), Some(&4));
        assert_eq!(Extension::from_our_id(4), Some(Extension::Ccfd));
        assert_eq!(Extension::from_our_id(9), None);
        let hs = ExtendedHandshake { m: [("ut_metadata".to_string(), 7), ("ccfd".to_string(), 0)].into(), ..Default::default() };
        let theirs = TheirIds::from_handshake(&hs);
        assert_eq!(theirs.get(Extension::UtMetadata), Some(7));
        assert_eq!(theirs.get(Extension::Ccfd), None, "0 means disabled");
    }
}
