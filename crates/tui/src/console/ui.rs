//! Drawing: a pure function of [`App`]. It reads state and never waits for anything.

use super::app::{App, Connection, Notice, Pane};
use super::format;
use super::keys;
use crate::members::{self, COLUMNS};
use myraft_wire::api::{MemberStatus, NodeDetail};
use myraft_wire::health::{Health, Role};
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, HighlightSpacing, Padding, Paragraph, Row, Table, TableState};
use ratatui::Frame;
use std::time::Duration;

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// Styles, with colour only when it is wanted (`NO_COLOR`); state is always also text.
pub struct Theme {
    pub color: bool,
}

impl Theme {
    fn fg(&self, color: Color) -> Style {
        match self.color {
            true => Style::new().fg(color),
            false => Style::new(),
        }
    }

    pub fn health(&self, health: Health) -> Style {
        match health {
            Health::Up => self.fg(Color::Green),
            Health::Suspect => self.fg(Color::Yellow),
            Health::Down => self.fg(Color::Red).add_modifier(Modifier::BOLD),
        }
    }

    pub fn ok(&self) -> Style {
        self.fg(Color::Green)
    }

    pub fn err(&self) -> Style {
        self.fg(Color::Red)
    }

    pub fn warn(&self) -> Style {
        self.fg(Color::Yellow)
    }

    pub fn key(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn dim(&self) -> Style {
        Style::new().add_modifier(Modifier::DIM)
    }

    pub fn heading(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    pub fn focused(&self) -> Style {
        self.fg(Color::Cyan)
    }

    pub fn chosen(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
    }
}

pub fn draw(frame: &mut Frame, app: &App) {
    let theme = Theme { color: app.color };
    let pending_rows = app.status.as_ref().map_or(0, |s| s.pending.len()) as u16;
    let detail_content = detail_content(app, &theme);
    let detail_rows = u16::try_from(detail_content.len()).unwrap_or(u16::MAX);
    let [header, peers, bottom, hints, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length((pending_rows.max(detail_rows) + 2).max(7)),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let [pending, detail] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(bottom);

    draw_header(frame, header, app, &theme);
    draw_peers(frame, peers, app, &theme);
    draw_pending(frame, pending, app, &theme);
    draw_detail(frame, detail, app, detail_content, &theme);
    frame.render_widget(hint_line(app, &theme), hints);
    frame.render_widget(status_line(app, &theme), status);
    if let Some(popup) = &app.popup {
        popup.draw(frame, &theme);
    }
}

/// The cluster on the left, the connection on the right; on a narrow terminal the left
/// side loses whole items, least useful first, never the connection state.
fn draw_header(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let (mut cluster, connection) = header_lines(app, theme);
    let width = u16::try_from(connection.width()).unwrap_or(u16::MAX);
    let [left, right] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(width)]).areas(area);
    // A word cut in half ("co" of "commit") reads as nonsense; drop it instead.
    let fits = |spans: &[Span]| spans.iter().map(Span::width).sum::<usize>() <= left.width.into();
    if !fits(&cluster) && cluster.len() > 1 {
        cluster.remove(1);
    }
    while !fits(&cluster) && cluster.len() > 1 {
        cluster.pop();
    }
    frame.render_widget(Line::from(cluster), left);
    frame.render_widget(connection, right);
}

/// The cluster's spans (the cluster id second, as the first to go) and the connection line.
fn header_lines(app: &App, theme: &Theme) -> (Vec<Span<'static>>, Line<'static>) {
    let mut spans = vec![Span::styled(" MyRaft  ", theme.heading())];
    if let Some(s) = &app.status {
        let id = format!("{:016x}", s.cluster_id);
        spans.push(Span::raw(format!("cluster {}…  ", &id[..4])));
        match &s.leader {
            Some(l) => spans.push(Span::raw(format!("leader {}  ", l.name))),
            None => spans.push(Span::styled("no leader  ", theme.err())),
        }
        spans.push(Span::raw(format!("term {}  ", s.term)));
        spans.push(Span::raw(format!(
            "commit {}   ",
            format::count(s.commit_index)
        )));
    }
    let cluster = std::mem::take(&mut spans);
    spans.push(Span::raw(format!("entrance {} ", app.entrance)));
    let since = |t: Option<std::time::Instant>| t.map(|t| app.now.saturating_duration_since(t));
    match &app.connection {
        Connection::Connecting => spans.push(Span::styled("● connecting…", theme.warn())),
        Connection::Connected => spans.push(Span::styled("● connected", theme.ok())),
        Connection::Refused(e) => spans.push(Span::styled(format!("● error: {e}"), theme.warn())),
        Connection::Unreachable(_) => {
            spans.push(Span::styled("● unreachable", theme.err()));
        }
    }
    let unreachable = matches!(app.connection, Connection::Unreachable(_));
    match since(app.last_success) {
        Some(d) if unreachable => spans.push(Span::styled(
            format!("  last answer {} ago", format::ago(d)),
            theme.err(),
        )),
        Some(d) => spans.push(Span::raw(format!("  updated {} ago", format::ago(d)))),
        None if app.connection != Connection::Connecting => {
            spans.push(Span::styled("  never reached", theme.err()))
        }
        None => {}
    }
    spans.push(Span::raw(" "));
    (cluster, Line::from(spans))
}

fn pane_block(title: String, focused: bool, theme: &Theme) -> Block<'static> {
    let block = Block::bordered().title(Span::styled(title, theme.heading()));
    match focused {
        true => block.border_style(theme.focused()),
        false => block,
    }
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).alignment(Alignment::Right))
}

fn health_span(health: Health, theme: &Theme) -> Span<'static> {
    Span::styled(format!("● {}", health.as_str()), theme.health(health))
}

fn draw_peers(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let focused = app.focus == Pane::Peers && app.popup.is_none();
    let block = pane_block(" Peers ".into(), focused, theme);
    let Some(status) = &app.status else {
        let text = match &app.connection {
            Connection::Unreachable(e) => format!("no answer from the entrance yet: {e}"),
            Connection::Refused(e) => format!("the entrance answered with an error: {e}"),
            _ => "asking the entrance for the cluster status…".to_owned(),
        };
        let block = block.padding(Padding::horizontal(1));
        frame.render_widget(Paragraph::new(text).style(theme.dim()).block(block), area);
        return;
    };
    let header = Row::new(COLUMNS.map(|c| match c.numeric {
        true => right(c.header.to_owned()),
        false => Cell::from(c.header),
    }))
    .style(theme.heading());
    let rows: Vec<Row> = status
        .members
        .iter()
        .map(|m| peer_row(m, status.commit_index, theme))
        .collect();
    // Sized to what they hold, so that a narrow terminal cuts nothing a fixed width wasted
    // (an address lost its port at 100 columns).
    let widest = |header: &str, cell: &dyn Fn(&MemberStatus) -> usize| {
        let widest = status.members.iter().map(cell).max().unwrap_or(0);
        u16::try_from(widest.max(header.chars().count())).unwrap_or(u16::MAX)
    };
    let widths = [
        Constraint::Length(widest("NAME", &|m| m.name.chars().count())),
        Constraint::Length(widest("ADDRESS", &|m| m.addr.chars().count())),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length(widest("TERM", &|m| m.term.to_string().len())),
        Constraint::Length(widest("COMMIT", &|m| format::count(m.commit_index).len())),
        Constraint::Length(widest("APPLIED", &|m| format::count(m.applied_index).len())),
        Constraint::Length(widest("TRAILS", &|m| {
            format::count(status.commit_index.saturating_sub(m.commit_index)).len()
        })),
        Constraint::Min(12),
    ];
    let table = Table::new(rows, widths)
        .column_spacing(2)
        .header(header)
        .block(block)
        .highlight_symbol("▶")
        .highlight_spacing(HighlightSpacing::Always)
        .row_highlight_style(match focused {
            true => Style::new().add_modifier(Modifier::BOLD),
            false => Style::new(),
        });
    let mut state = TableState::default().with_selected(
        (!status.members.is_empty()).then_some(app.peer.min(status.members.len() - 1)),
    );
    frame.render_stateful_widget(table, area, &mut state);
}

fn peer_row(m: &MemberStatus, commit: u64, theme: &Theme) -> Row<'static> {
    let cells = members::cells(m, commit);
    let row =
        Row::new(
            cells
                .into_iter()
                .enumerate()
                .map(|(i, text)| match (i, COLUMNS[i].numeric) {
                    (members::at::HEALTH, _) => Cell::from(health_span(m.health, theme)),
                    (_, true) => right(text),
                    (_, false) => Cell::from(text),
                }),
        );
    match m.role {
        Role::Learner => row.style(theme.dim()),
        _ => row,
    }
}

fn draw_pending(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let focused = app.focus == Pane::Pending && app.popup.is_none();
    let block = pane_block(" Pending joins ".into(), focused, theme);
    let pending = app
        .status
        .as_ref()
        .map(|s| s.pending.as_slice())
        .unwrap_or(&[]);
    if pending.is_empty() {
        frame.render_widget(
            Paragraph::new("no node is waiting to join")
                .style(theme.dim())
                .block(block.padding(Padding::horizontal(1))),
            area,
        );
        return;
    }
    let rows = pending.iter().map(|p| {
        Row::new(vec![
            Cell::from(p.name.clone()),
            Cell::from(p.addr.clone()),
            Cell::from(Span::styled(
                format!(
                    "waiting {}",
                    format::span(Duration::from_millis(p.waiting_ms))
                ),
                theme.warn(),
            )),
        ])
    });
    let widest = |cell: &dyn Fn(&myraft_wire::api::PendingJoin) -> usize| {
        u16::try_from(pending.iter().map(cell).max().unwrap_or(0)).unwrap_or(u16::MAX)
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(widest(&|p| p.name.chars().count())),
            Constraint::Length(widest(&|p| p.addr.chars().count())),
            Constraint::Min(8),
        ],
    )
    .column_spacing(2)
    .block(block)
    .highlight_symbol("▶")
    .highlight_spacing(HighlightSpacing::Always)
    .row_highlight_style(match focused {
        true => Style::new().add_modifier(Modifier::BOLD),
        false => Style::new(),
    });
    let mut state = TableState::default().with_selected(Some(app.pending.min(pending.len() - 1)));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(frame: &mut Frame, area: Rect, app: &App, lines: Vec<Line<'static>>, theme: &Theme) {
    let title = match app.selected_peer() {
        Some(m) => format!(" Node {} ", m.name),
        None => " Node ".to_owned(),
    };
    let block = pane_block(title, false, theme).padding(Padding::horizontal(1));
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// What the node pane shows about the selected node.
fn detail_content(app: &App, theme: &Theme) -> Vec<Line<'static>> {
    let selected = app.selected_peer().map(|m| m.name.clone());
    match (&selected, &app.detail) {
        (None, _) => vec![Line::styled("no node selected", theme.dim())],
        (Some(name), Some((shown, Ok(d)))) if shown == name => {
            let mut lines = detail_lines(d, theme);
            // The entrance answers from the node's last probe reply: a down node's uptime
            // and indexes stand still, and must not read as current.
            if d.health != Health::Up {
                let silent = app
                    .selected_peer()
                    .and_then(|m| m.last_contact_ms)
                    .map_or("a while".to_owned(), format::millis);
                lines.push(Line::styled(
                    format!("no answer for {silent}: these are its last reported figures"),
                    theme.health(d.health),
                ));
            }
            lines
        }
        (Some(name), Some((shown, Err(e)))) if shown == name => {
            vec![Line::styled(format!("✘ {e}"), theme.err())]
        }
        (Some(name), _) => vec![Line::styled(format!("asking for {name}…"), theme.dim())],
    }
}

fn detail_lines(d: &NodeDetail, theme: &Theme) -> Vec<Line<'static>> {
    let s = &d.stats;
    let peer = |p: &Option<myraft_wire::health::PeerRef>| {
        p.as_ref().map_or("—".to_owned(), |p| p.name.clone())
    };
    let dot = || Span::styled(" · ", theme.dim());
    let revisions = match s.store.revision {
        0 => "none".to_owned(),
        r => format!(
            "{}..{}",
            format::count(s.store.compacted_revision.max(1)),
            format::count(r)
        ),
    };
    let mut lines = vec![
        Line::from(vec![
            Span::raw(format!("{} {}", d.addr, d.role.as_str())),
            dot(),
            Span::raw(if d.voter { "voter" } else { "non-voter" }),
            dot(),
            health_span(d.health, theme),
            dot(),
            Span::raw(format!("term {}", s.term)),
        ]),
        Line::from(format!(
            "voted for {} · leader {} · commit {} · applied {}",
            peer(&d.voted_for),
            peer(&s.leader),
            format::count(s.commit_index),
            format::count(s.applied_index),
        )),
        Line::from(format!(
            "last log {} · snapshot {}",
            format::count(s.last_log_index),
            format::count(s.snapshot_index),
        )),
        Line::from(format!(
            "log {} · data dir {} · up {} · dropped {}",
            format::bytes(s.log_bytes),
            format::bytes(s.data_dir_bytes),
            format::span(Duration::from_millis(s.uptime_ms)),
            format::count(s.dropped_datagrams),
        )),
        Line::from(format!(
            "store {} · keys {} · revs {} · lag {}",
            format::bytes(s.store.store_bytes),
            format::count(s.store.keys),
            revisions,
            format::count(s.store.apply_lag),
        )),
    ];
    for t in &s.store.transfers {
        lines.push(Line::styled(
            format!("snapshot {}", crate::cli::render::transfer_line(t)),
            theme.warn(),
        ));
    }
    lines
}

fn hint_line(app: &App, theme: &Theme) -> Line<'static> {
    let mut spans = vec![Span::raw(" ")];
    for b in keys::hints(&app.contexts()) {
        spans.push(Span::styled(b.label, theme.key()));
        spans.push(Span::raw(format!(" {}  ", b.hint)));
    }
    Line::from(spans)
}

fn status_line(app: &App, theme: &Theme) -> Line<'static> {
    let running = app.running();
    if let Some(first) = running.first() {
        let more = match running.len() {
            1 => String::new(),
            n => format!("  (+{} more)", n - 1),
        };
        return Line::from(vec![
            Span::styled(
                format!(" {} ", SPINNER[app.frame % SPINNER.len()]),
                theme.warn(),
            ),
            Span::raw(format!("{}…{more}", super::app::describe(first))),
        ]);
    }
    match &app.notice {
        Some(Notice::Ok(m)) => Line::styled(format!(" ✔ {m}"), theme.ok()),
        Some(Notice::Err(m)) => Line::styled(format!(" ✘ {m}"), theme.err()),
        None => Line::styled(" press ? for every key", theme.dim()),
    }
}
