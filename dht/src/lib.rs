//! ccfd-dht: a Mainline DHT node (BEP 5, with BEP 32's IPv6 keys), sans
//! I/O. The node takes datagrams and the time and returns datagrams to
//! send and events; the client's UDP task drives it on the shared port.
//! It answers every query, so it is a full member of the DHT (BEP 43's
//! read-only mode would keep libtorrent from keeping it in its tables).

pub mod id;
pub mod krpc;
mod lookup;
pub mod node;
pub mod routing;

pub use id::Id;
pub use krpc::NodeInfo;
pub use node::{Announce, Event, LookupId, Node};
