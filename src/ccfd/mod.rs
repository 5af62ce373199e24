//! Coded cooperation (ccfd, docs/ccfd-extension.md): blocks as network-coded
//! packets over UDP between peers that both offer the extension in their
//! BEP 10 handshake; control stays on the peer connection.
//!
//! `proto` is the wire format (pure); `router` takes the client's coded
//! datagrams off the shared UDP socket and routes them by token; `receive`
//! is one torrent's coded state (decoders, the split of verified pieces,
//! evidence against polluters); `link` is one connection's receive side,
//! and `sender` its sending task, paced by `pacer` over the wants in `queue`.

pub(crate) mod link;
pub(crate) mod pacer;
pub mod proto;
mod queue;
pub(crate) mod receive;
pub(crate) mod router;
mod sender;

pub use receive::CodedTorrent;
pub use router::{CodedRouter, UdpShim};
