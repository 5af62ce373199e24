//! Drawing one frame of the dashboard from a `Dashboard` and the UI state.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, BorderType, Cell, Chart, Clear, Dataset, GraphType, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

use crate::view::{Dashboard, Phase, PieceCell};

/// The panels `tab` moves between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Panel {
    #[default]
    Chart,
    Pieces,
    Peers,
    Log,
}

impl Panel {
    /// The next panel in tab order.
    pub fn next(self) -> Panel {
        match self {
            Panel::Chart => Panel::Pieces,
            Panel::Pieces => Panel::Peers,
            Panel::Peers => Panel::Log,
            Panel::Log => Panel::Chart,
        }
    }
}

/// What the user has done to the view: focus, help, scrolling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UiState {
    pub focus: Panel,
    pub help: bool,
    /// First peer row shown.
    pub peers_scroll: usize,
    /// Log lines scrolled back from the newest.
    pub log_scroll: usize,
}

/// Draws the whole dashboard into `frame`.
pub fn draw(frame: &mut Frame, view: &Dashboard, ui: &UiState) {
    let [header, middle, pieces, bottom, footer] =
        Layout::vertical([Constraint::Length(3), Constraint::Min(10), Constraint::Length(6), Constraint::Min(6), Constraint::Length(1)])
            .areas(frame.area());
    draw_header(frame, header, view);
    let [chart, side] = Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(middle);
    draw_chart(frame, chart, view, ui.focus == Panel::Chart);
    let [penalty, rates] = Layout::vertical([Constraint::Length(9), Constraint::Min(4)]).areas(side);
    draw_penalty(frame, penalty, view);
    draw_rates(frame, rates, view);
    draw_pieces(frame, pieces, view, ui.focus == Panel::Pieces);
    let [peers, log] = Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(bottom);
    draw_peers(frame, peers, view, ui);
    draw_log(frame, log, view, ui);
    let keys = Line::from(vec![" q".bold(), " quit  ".into(), "tab".bold(), " next panel  ".into(), "?".bold(), " help ".into()]);
    frame.render_widget(Paragraph::new(keys).style(Style::new().fg(Color::DarkGray)), footer);
    if ui.help {
        draw_help(frame);
    }
}

fn panel(title: &str, focused: bool) -> Block<'static> {
    let block = Block::bordered().title(format!(" {title} ")).border_type(BorderType::Rounded);
    if focused {
        block.border_style(Style::new().fg(Color::Cyan)).title_style(Modifier::BOLD)
    } else {
        block.border_style(Style::new().fg(Color::DarkGray))
    }
}

/// "1.23 MB", "456 kB", "789 B" (decimal units, as the rates are given).
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.0} kB", n / 1e3)
    } else {
        format!("{n:.0} B")
    }
}

fn rate(r: f64) -> String {
    format!("{}/s", bytes(r.max(0.0) as u64))
}

fn phase_style(phase: Phase) -> Style {
    match phase {
        Phase::Buffering => Style::new().fg(Color::Yellow),
        Phase::Playing => Style::new().fg(Color::Green),
        Phase::Stalled => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Phase::Done => Style::new().fg(Color::Cyan),
    }
}

fn draw_header(frame: &mut Frame, area: Rect, view: &Dashboard) {
    let played = if view.rate > 0.0 { view.play_head as f64 / view.rate } else { 0.0 };
    let length = if view.rate > 0.0 { view.total_bytes as f64 / view.rate } else { 0.0 };
    let mut spans = vec![
        Span::styled(view.name.clone(), Style::new().bold()),
        format!("  {}  ", view.mode).dark_gray(),
        format!("t={:.1}s  ", view.elapsed).into(),
        Span::styled(view.phase.label(), phase_style(view.phase)),
        format!("  at {} ({:.0}/{:.0} s)  ", bytes(view.play_head), played, length).into(),
        format!("{:.0}% present", 100.0 * view.progress()).into(),
    ];
    if let Some(url) = &view.serve_url {
        spans.push(format!("  watch: {url}").cyan());
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).block(panel("ccfd-bt", false)), area);
}

fn draw_chart(frame: &mut Frame, area: Rect, view: &Dashboard, focused: bool) {
    let pts = |f: fn(&crate::view::CurvePoint) -> u64| -> Vec<(f64, f64)> { view.curve.iter().map(|p| (p.t, f(p) as f64)).collect() };
    let mut required = pts(|p| p.required);
    required.extend(view.required_ahead.iter().map(|&(t, b)| (t, b as f64)));
    let contiguous = pts(|p| p.contiguous);
    let held = pts(|p| p.held);
    let x_max = (view.elapsed + view.horizon).max(1.0);
    let y_max = required.iter().chain(&held).map(|p| p.1).fold(1.0, f64::max) * 1.05;
    let now = [(view.elapsed, 0.0), (view.elapsed, y_max)];
    let horizon = [(x_max, 0.0), (x_max, y_max)];
    let line = |name: &'static str, color: Color, data| {
        Dataset::default().name(name).marker(Marker::Braille).graph_type(GraphType::Line).style(Style::new().fg(color)).data(data)
    };
    let datasets = vec![
        line("B(t) required", Color::Red, &required),
        line("contiguous", Color::Green, &contiguous),
        line("held", Color::Blue, &held),
        line("now", Color::DarkGray, &now),
        line("horizon", Color::Magenta, &horizon),
    ];
    let x_labels = vec![Line::from("0 s"), Line::from(format!("{:.0} s", view.elapsed)), Line::from(format!("{x_max:.0} s"))];
    let y_labels = vec![Line::from("0"), Line::from(bytes((y_max / 2.0) as u64)), Line::from(bytes(y_max as u64))];
    let chart = Chart::new(datasets)
        .block(panel("B(t) against what has arrived", focused))
        .x_axis(Axis::default().bounds([0.0, x_max]).labels(x_labels).style(Style::new().fg(Color::Gray)))
        .y_axis(Axis::default().bounds([0.0, y_max]).labels(y_labels).style(Style::new().fg(Color::Gray)))
        .legend_position(Some(ratatui::widgets::LegendPosition::TopLeft))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)));
    frame.render_widget(chart, area);
}

fn draw_penalty(frame: &mut Frame, area: Rect, view: &Dashboard) {
    let p = &view.penalty;
    let row = |k: &str, v: String| Line::from(vec![format!("{k:<15}").dark_gray(), v.bold()]);
    let lines = vec![
        row("VoD server", format!("{} ({:.1}% of the movie)", bytes(p.server_bytes), 100.0 * p.server_share)),
        row("missed pieces", format!("{} of {}", p.missed_pieces, p.pieces)),
        row("continuity", format!("{:.3}", p.continuity)),
        row("startup", p.startup_seconds.map_or("not yet".to_string(), |s| format!("{s:.2} s"))),
        row("stalls", p.stalls.to_string()),
        row("duplicates", bytes(p.duplicate_bytes)),
    ];
    frame.render_widget(Paragraph::new(lines).block(panel("penalties", false)), area);
}

fn draw_rates(frame: &mut Frame, area: Rect, view: &Dashboard) {
    let [down, up] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let last = |h: &[u64]| h.last().copied().unwrap_or(0);
    let spark = |title: String, data: &[u64], color: Color| {
        // Newest samples on the right: keep only what fits.
        let width = area.width.saturating_sub(2) as usize;
        let shown = &data[data.len().saturating_sub(width)..];
        Sparkline::default().block(panel(&title, false)).data(shown.to_vec()).style(Style::new().fg(color))
    };
    frame.render_widget(spark(format!("down {}", rate(last(&view.down_history) as f64)), &view.down_history, Color::Green), down);
    frame.render_widget(spark(format!("up {}", rate(last(&view.up_history) as f64)), &view.up_history, Color::Blue), up);
}

fn cell_style(c: PieceCell) -> Color {
    match c {
        PieceCell::Missing => Color::DarkGray,
        PieceCell::Partial => Color::Blue,
        PieceCell::Peer => Color::Green,
        PieceCell::Coded => Color::Cyan,
        PieceCell::Server => Color::Yellow,
        PieceCell::Missed => Color::Red,
    }
}

/// The state shown for a group of pieces that share one cell: a stall
/// first, then any server or coded source, then partial progress.
pub fn group_state(group: &[PieceCell]) -> PieceCell {
    let any = |c: PieceCell| group.contains(&c);
    let present = |c: &PieceCell| matches!(c, PieceCell::Peer | PieceCell::Coded | PieceCell::Server);
    if any(PieceCell::Missed) {
        PieceCell::Missed
    } else if !group.is_empty() && group.iter().all(present) {
        [PieceCell::Server, PieceCell::Coded].into_iter().find(|&c| any(c)).unwrap_or(PieceCell::Peer)
    } else if group.iter().any(|c| present(c) || *c == PieceCell::Partial) {
        PieceCell::Partial
    } else {
        PieceCell::Missing
    }
}

fn draw_pieces(frame: &mut Frame, area: Rect, view: &Dashboard, focused: bool) {
    let block = panel(&format!("pieces ({})", view.pieces.len()), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [map, legend] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
    let cells = (map.width as usize * map.height as usize).max(1);
    let per_cell = view.pieces.len().div_ceil(cells).max(1);
    let spans: Vec<Span> = view.pieces.chunks(per_cell).map(|g| Span::styled("█", Style::new().fg(cell_style(group_state(g))))).collect();
    frame.render_widget(Paragraph::new(Line::from(spans)).wrap(Wrap { trim: false }), map);
    let key = |c: PieceCell, name: &'static str| [Span::styled("█ ", Style::new().fg(cell_style(c))), Span::raw(name)];
    let mut legend_spans = Vec::new();
    for (c, name) in [
        (PieceCell::Peer, "peer  "),
        (PieceCell::Coded, "coded  "),
        (PieceCell::Server, "VoD server  "),
        (PieceCell::Missed, "missed  "),
        (PieceCell::Partial, "in flight  "),
        (PieceCell::Missing, "missing"),
    ] {
        legend_spans.extend(key(c, name));
    }
    if per_cell > 1 {
        legend_spans.push(format!("   ({per_cell} pieces per cell)").dark_gray());
    }
    frame.render_widget(Paragraph::new(Line::from(legend_spans)), legend);
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "-"
    }
}

fn draw_peers(frame: &mut Frame, area: Rect, view: &Dashboard, ui: &UiState) {
    let header = Row::new(["address", "client", "via", "down", "up", "we send", "sends us", "wants", "coded"]).style(Style::new().bold());
    let rows = view.peers.iter().skip(ui.peers_scroll).map(|p| {
        Row::new([
            Cell::from(p.addr.clone()),
            Cell::from(p.client.clone()),
            Cell::from(p.via.clone()),
            Cell::from(rate(p.down_rate)),
            Cell::from(rate(p.up_rate)),
            Cell::from(yes(p.we_unchoke)),
            Cell::from(yes(p.unchokes_us)),
            Cell::from(yes(p.interested)),
            Cell::from(yes(p.coded)),
        ])
    });
    // 76 columns and 8 gaps: the panel's share of a 140-column terminal
    // (an IPv4 address and port in full).
    let widths = [
        Constraint::Min(17),
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Length(5),
    ];
    let sources: Vec<String> = view.peer_sources.iter().map(|(name, n)| format!("{name} {n}")).collect();
    let title = match sources.is_empty() {
        true => format!("peers ({})", view.peers.len()),
        false => format!("peers ({}) · found by {}", view.peers.len(), sources.join(", ")),
    };
    frame.render_widget(Table::new(rows, widths).header(header).block(panel(&title, ui.focus == Panel::Peers)), area);
}

fn draw_log(frame: &mut Frame, area: Rect, view: &Dashboard, ui: &UiState) {
    let height = area.height.saturating_sub(2) as usize;
    let end = view.log.len().saturating_sub(ui.log_scroll.min(view.log.len()));
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = view.log[start..end].iter().map(|l| Line::from(l.as_str())).collect();
    frame.render_widget(Paragraph::new(lines).block(panel("log", ui.focus == Panel::Log)), area);
}

fn draw_help(frame: &mut Frame) {
    let text = vec![
        Line::from("q, Ctrl-C     quit (the terminal is restored)"),
        Line::from("tab           next panel"),
        Line::from("up / down     scroll the peers table or the log"),
        Line::from("?             show or hide this help"),
        Line::from(""),
        Line::from("The chart: B(t) (red) is what playback needs by each time;"),
        Line::from("green is what is present without a gap, blue what is held."),
        Line::from("Pieces the swarm cannot deliver by their deadline come"),
        Line::from("from the VoD server (yellow) and count as penalty."),
    ];
    let [area] = Layout::horizontal([Constraint::Length(66)]).flex(Flex::Center).areas(frame.area());
    let [area] = Layout::vertical([Constraint::Length(text.len() as u16 + 2)]).flex(Flex::Center).areas(area);
    frame.render_widget(Clear, area);
    frame.render_widget(Paragraph::new(text).block(panel("help", true)), area);
}
