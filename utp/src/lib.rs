//! ccfd-utp: uTP (BEP 29), sans I/O. A connection takes packets and the
//! time and gives back datagrams to send and bytes in order; its window
//! follows LEDBAT, so uTP transfers yield to other traffic on the path.
//! The client's UDP task drives connections on the shared port.

pub mod conn;
pub mod ledbat;
pub mod packet;

pub use conn::{Closed, Connection, State, MSS};
pub use packet::{Header, Kind, Packet, PacketError};
