//! ccfd-proto: the BitTorrent formats, pure (bytes in, values out, no
//! sockets, no clocks): bencode scanning and the nesting guard, piece sets,
//! .torrent metainfo, the BEP 3 peer wire, BEP 10 extensions, BEP 9
//! metadata messages, BEP 11 peer exchange, magnet links, and SHA-1 of pieces. Every length read
//! from outside is bounded before anything is allocated.

pub mod bencode;
pub mod bitfield;
pub mod extended;
pub mod fast;
pub mod hash;
pub mod magnet;
pub mod metainfo;
pub mod pex;
pub mod ut_metadata;
pub mod wire;
