//! The dashboard loop on a real terminal: raw mode and the alternate
//! screen while it runs, restored on return, on error and on panic.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::render::{draw, Panel, UiState};
use crate::view::Dashboard;

/// Applies one key press to the UI state; true when the user asked to quit.
pub fn handle_key(ui: &mut UiState, key: KeyEvent, view: &Dashboard) -> bool {
    if key.kind == KeyEventKind::Release {
        return false;
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc if !ui.help || key.code == KeyCode::Char('q') => return true,
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return true,
        KeyCode::Esc => ui.help = false,
        KeyCode::Char('?') => ui.help = !ui.help,
        KeyCode::Tab => ui.focus = ui.focus.next(),
        KeyCode::Up | KeyCode::Char('k') => match ui.focus {
            Panel::Peers => ui.peers_scroll = ui.peers_scroll.saturating_sub(1),
            Panel::Log => ui.log_scroll = (ui.log_scroll + 1).min(view.log.len()),
            _ => {}
        },
        KeyCode::Down | KeyCode::Char('j') => match ui.focus {
            Panel::Peers => ui.peers_scroll = (ui.peers_scroll + 1).min(view.peers.len().saturating_sub(1)),
            Panel::Log => ui.log_scroll = ui.log_scroll.saturating_sub(1),
            _ => {}
        },
        _ => {}
    }
    false
}

/// Puts the terminal back however the loop ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the dashboard until the user quits or `stop` is set, calling `feed`
/// for a fresh view every `refresh`. The terminal is restored on return,
/// on error, and (through ratatui's panic hook) on panic.
pub fn run(mut feed: impl FnMut() -> Dashboard, refresh: Duration, stop: &AtomicBool) -> io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    let mut ui = UiState::default();
    let mut view = feed();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            view = feed();
            next = Instant::now() + refresh;
        }
        terminal.draw(|f| draw(f, &view, &ui))?;
        let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
        if event::poll(wait)? {
            if let Event::Key(key) = event::read()? {
                if handle_key(&mut ui, key, &view) {
                    break;
                }
            }
        }
    }
    Ok(())
}
