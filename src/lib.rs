//! ccfd-bt: a streaming BitTorrent client. See docs/ARCHITECTURE.md.

pub mod announce;
pub mod api;
pub mod bencode;
pub mod bitfield;
pub mod choker;
pub mod client;
pub mod coded;
pub mod coding;
pub mod delivery_rate;
pub mod hash;
pub mod http1;
pub mod metadata;
pub mod metainfo;
pub mod peer;
pub mod picker;
pub mod ratelimit;
pub mod session;
pub mod storage;
pub mod streaming;
pub mod superseed;
pub mod tracker;
pub mod vodserver;
pub mod watch_server;
pub mod webseed;
pub mod wire;
pub mod world;
