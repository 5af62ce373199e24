//! Video on demand over a swarm, as pure logic: no sockets, no clock.
//!
//! Playback at R bytes per second starts D seconds after the client starts;
//! with a prefetch of P seconds, byte b must have arrived by
//! t_b = D - P + b/R, i.e. by time t the first B(t) = R(P + t - D) bytes
//! must be present. [`Playback`] turns that into piece deadlines,
//! [`plan`] decides which pieces each peer should fetch (and which are
//! already lost to the VoD server), and [`Ledger`] keeps the score: bytes
//! taken from the server, missed pieces, continuity, startup time, stalls.
//!
//! Time is seconds since the client started, as `f64`; the engine passes
//! it in.

mod ledger;
pub mod plan;
mod playback;

pub use ledger::{Ledger, PieceRecord, Report};
pub use playback::Playback;
