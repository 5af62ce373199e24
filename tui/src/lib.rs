//! ccfd-bt's terminal dashboard (ratatui + crossterm).
//!
//! The binary fills a [`Dashboard`] from the engine's statistics; this crate
//! only draws it and reads keys, so its rendering is tested with ratatui's
//! `TestBackend` on hand-made states.

mod app;
mod render;
pub mod view;

pub use app::{handle_key, run};
pub use render::{bytes, draw, group_state, Panel, UiState};
pub use view::{CurvePoint, Dashboard, PeerRow, Penalty, Phase, PieceCell};
