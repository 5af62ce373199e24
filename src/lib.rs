//! ccfd-bt: a streaming BitTorrent client. See docs/ARCHITECTURE.md.
//!
//! The engine, layered (each module imports only those listed after it):
//! `api` and `world` (faces and harnesses) over `client` (a client's
//! torrents) over `torrent` (one torrent's tasks) and `stream` (VoD) over
//! `peer` (one connection) and `discovery` (peer sources) over `swarm` (one
//! torrent's state) and `ccfd` (coded cooperation) over `decide` (pure
//! decisions), `net` (what the client shares), `storage` and `webseed`.
//! The formats are in `ccfd_proto`, the codec in `ccfd_codec`, trackers in
//! `ccfd_tracker`, VoD planning in `ccfd_vod`.

pub mod api;
pub mod ccfd;
pub mod client;
pub mod decide;
pub mod discovery;
// Public (it was crate-only) so the fuzz targets in `fuzz/` reach the
// request-head parser; nothing outside the engine calls it otherwise.
pub mod http1;
pub mod net;
pub(crate) mod peer;
pub mod resume;
pub mod storage;
pub mod stream;
pub mod swarm;
pub mod torrent;
pub mod webseed;
pub mod world;
