//! ccfd-bt: a streaming BitTorrent client. See docs/ARCHITECTURE.md.

pub mod announce;
pub mod api;
pub mod choker;
pub mod client;
pub mod coded;
pub mod delivery_rate;
pub mod http1;
pub mod metadata;
pub mod peer;
pub mod picker;
pub mod ratelimit;
pub mod session;
pub mod storage;
pub mod streaming;
pub mod superseed;
pub mod vodserver;
pub mod watch_server;
pub mod webseed;
pub mod world;
