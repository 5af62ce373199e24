//! Rendering tests on ratatui's TestBackend: given view models, the panels
//! show the right figures.

use ccfd_tui::{draw, group_state, handle_key, CurvePoint, Dashboard, Panel, PeerRow, Penalty, Phase, PieceCell, UiState};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;

fn sample() -> Dashboard {
    let mut pieces = vec![PieceCell::Peer; 40];
    pieces[0] = PieceCell::Server;
    pieces[1] = PieceCell::Server;
    pieces[7] = PieceCell::Coded;
    pieces[30..].fill(PieceCell::Missing);
    pieces[30] = PieceCell::Partial;
    Dashboard {
        name: "ccfd-demo.mp4".into(),
        mode: "deadline picker".into(),
        elapsed: 31.5,
        phase: Phase::Playing,
        play_head: 1_530_000,
        total_bytes: 2_974_805,
        rate: 60_000.0,
        horizon: 60.0,
        curve: (0..30).map(|t| CurvePoint { t: t as f64, required: t * 60_000, contiguous: t * 70_000, held: t * 80_000 }).collect(),
        required_ahead: vec![(31.5, 1_650_000), (91.5, 2_974_805)],
        pieces,
        penalty: Penalty {
            server_bytes: 1_234_000,
            server_share: 0.205,
            missed_pieces: 3,
            pieces: 92,
            continuity: 0.967,
            startup_seconds: Some(5.25),
            stalls: 0,
            duplicate_bytes: 16_384,
        },
        peers: vec![PeerRow {
            addr: "127.70.0.11:40001".into(),
            client: "libtorrent".into(),
            down_rate: 70_000.0,
            up_rate: 12_000.0,
            we_unchoke: true,
            unchokes_us: true,
            interested: false,
            coded: false,
            via: "tcp+rc4".into(),
        }],
        peer_sources: vec![("tracker".into(), 3), ("dht".into(), 12)],
        down_history: vec![10_000, 50_000, 70_000],
        up_history: vec![0, 5_000, 12_000],
        log: (0..50).map(|i| format!("log line {i}")).collect(),
        serve_url: Some("http://127.0.0.1:8888/ccfd-demo.mp4".into()),
    }
}

fn render(view: &Dashboard, ui: &UiState) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(140, 44)).unwrap();
    terminal.draw(|f| draw(f, view, ui)).unwrap();
    terminal.backend().buffer().clone()
}

fn text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut s = String::new();
    for y in 0..area.height {
        for x in 0..area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

#[test]
fn penalty_panel_shows_the_figures() {
    let screen = text(&render(&sample(), &UiState::default()));
    assert!(screen.contains("1.23 MB (20.5% of the movie)"), "{screen}");
    assert!(screen.contains("3 of 92"), "{screen}");
    assert!(screen.contains("0.967"), "{screen}");
    assert!(screen.contains("5.25 s"), "{screen}");
    assert!(screen.contains("16 kB"), "{screen}");
}

#[test]
fn header_peers_rates_and_chart_are_drawn() {
    let screen = text(&render(&sample(), &UiState::default()));
    assert!(screen.contains("ccfd-demo.mp4"), "{screen}");
    assert!(screen.contains("t=31.5s"), "{screen}");
    assert!(screen.contains("playing"), "{screen}");
    assert!(screen.contains("watch: http://127.0.0.1:8888/ccfd-demo.mp4"), "{screen}");
    assert!(screen.contains("127.70.0.11:40001"), "{screen}");
    assert!(screen.contains("libtorrent"), "{screen}");
    assert!(screen.contains("70 kB/s"), "{screen}");
    assert!(screen.contains("down 70 kB/s"), "{screen}");
    assert!(screen.contains("up 12 kB/s"), "{screen}");
    assert!(screen.contains("B(t) required"), "{screen}");
    assert!(screen.contains("horizon"), "{screen}");
    assert!(screen.contains("peers (1) · found by tracker 3, dht 12"), "{screen}");
    // The newest log lines fit; the oldest do not.
    assert!(screen.contains("log line 49"), "{screen}");
    assert!(!screen.contains("log line 0 "));
}

#[test]
fn piece_map_colours_by_source() {
    let buf = render(&sample(), &UiState::default());
    let mut colours = std::collections::HashMap::new();
    // The map is the first row inside the pieces panel: find it by its title.
    let screen = text(&buf);
    let row = screen.lines().position(|l| l.contains("pieces (40)")).unwrap() as u16 + 1;
    for x in 0..buf.area.width {
        let cell = &buf[(x, row)];
        if cell.symbol() == "█" {
            *colours.entry(cell.fg).or_insert(0) += 1;
        }
    }
    assert_eq!(colours.get(&Color::Yellow), Some(&2), "{colours:?}");
    assert_eq!(colours.get(&Color::Cyan), Some(&1));
    assert_eq!(colours.get(&Color::Green), Some(&27));
    assert_eq!(colours.get(&Color::Blue), Some(&1));
    assert_eq!(colours.get(&Color::DarkGray), Some(&9));
}

#[test]
fn groups_of_pieces_show_the_most_telling_state() {
    use PieceCell::*;
    assert_eq!(group_state(&[Peer, Peer]), Peer);
    assert_eq!(group_state(&[Peer, Server]), Server);
    assert_eq!(group_state(&[Peer, Missing]), Partial);
    assert_eq!(group_state(&[Missing, Missing]), Missing);
    assert_eq!(group_state(&[Peer, Missed]), Missed);
    assert_eq!(group_state(&[Coded, Peer]), Coded);
}

#[test]
fn keys_move_focus_toggle_help_scroll_and_quit() {
    let view = sample();
    let mut ui = UiState::default();
    let key = |c| KeyEvent::new(c, KeyModifiers::NONE);
    assert!(!handle_key(&mut ui, key(KeyCode::Tab), &view));
    assert_eq!(ui.focus, Panel::Pieces);
    handle_key(&mut ui, key(KeyCode::Tab), &view);
    handle_key(&mut ui, key(KeyCode::Tab), &view);
    assert_eq!(ui.focus, Panel::Log);
    handle_key(&mut ui, key(KeyCode::Up), &view);
    handle_key(&mut ui, key(KeyCode::Up), &view);
    assert_eq!(ui.log_scroll, 2);
    let screen = text(&render(&view, &ui));
    assert!(screen.contains("log line 47") && !screen.contains("log line 49"));
    handle_key(&mut ui, key(KeyCode::Char('?')), &view);
    assert!(ui.help);
    assert!(text(&render(&view, &ui)).contains("quit (the terminal is restored)"));
    // Esc closes the help first; q always quits.
    assert!(!handle_key(&mut ui, key(KeyCode::Esc), &view));
    assert!(!ui.help);
    assert!(handle_key(&mut ui, key(KeyCode::Char('q')), &view));
    assert!(handle_key(&mut ui, KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), &view));
}

#[test]
fn an_empty_view_renders_in_a_tiny_terminal() {
    // Nothing yet known, and far too small a screen: no panic.
    let mut terminal = Terminal::new(TestBackend::new(20, 8)).unwrap();
    terminal.draw(|f| draw(f, &Dashboard::default(), &UiState { help: true, ..UiState::default() })).unwrap();
    let screen = text(&render(&Dashboard::default(), &UiState::default()));
    assert!(screen.contains("buffering"));
    assert!(screen.contains("not yet"));
}
