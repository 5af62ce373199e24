//! The decisions, pure: they take state, time and randomness as values and
//! return what to do, so each is unit-tested without sockets or clocks.
//!
//! `picker` (piece states, rarest first, end game), `choker` (tit-for-tat
//! slots), `superseed` (BEP 16 reveals), `delivery_rate` (what a peer
//! delivers since its unchoke), `stream_plan` (the playback schedule the
//! picker follows while streaming) and `file_select` (which files of a
//! torrent to fetch and play).

pub mod choker;
pub mod delivery_rate;
pub mod file_select;
pub mod picker;
pub mod stream_plan;
pub mod superseed;
