//! ccfd-bt: a streaming BitTorrent client. See docs/ARCHITECTURE.md.

pub mod bencode;
pub mod bitfield;
pub mod metainfo;
pub mod picker;
pub mod ratelimit;
pub mod storage;
pub mod tracker;
pub mod wire;
