//! Popups: each one takes the keys while it is open and draws itself over the screen.
//!
//! - [`Input`]: a key (and a value, for put) for put / get / delete / history;
//! - [`Confirm`]: yes or no before anything destructive, "No" unless the operator moves;
//! - `Value` and `History`: what get and history found;
//! - `Help`: every binding of the key table.

use super::format;
use super::keys::{self, Action, Context, KEYS};
use super::ui::Theme;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use myraft_wire::api::{ClientOp, Consistency, GetResult, HistoryResult};
use ratatui::layout::{Constraint, Flex, Layout, Margin, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Padding, Paragraph, Wrap};
use ratatui::Frame;

// Keys and values above the nodes' limits are refused; say so before sending.
use myraft_wire::api::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

pub enum Popup {
    Input(Input),
    Confirm(Confirm),
    Value {
        key: Vec<u8>,
        result: GetResult,
    },
    History {
        key: Vec<u8>,
        result: HistoryResult,
        scroll: usize,
    },
    Help {
        scroll: usize,
    },
}

/// What a key did to a popup.
pub enum PopupAction {
    Stay,
    Close,
    /// Close, and send this request.
    Send(ClientOp),
    /// Another popup takes this one's place (delete: key, then confirmation).
    Replace(Box<Popup>),
}

impl Popup {
    pub fn context(&self) -> Context {
        match self {
            Popup::Input(_) => Context::Input,
            Popup::Confirm(_) => Context::Confirm,
            Popup::Value { .. } | Popup::History { .. } | Popup::Help { .. } => Context::View,
        }
    }

    pub fn on_key(&mut self, key: &KeyEvent) -> PopupAction {
        let action = keys::action(&[self.context()], key);
        match self {
            Popup::Input(input) => input.on_key(action, key),
            Popup::Confirm(confirm) => confirm.on_key(action),
            Popup::Value { .. } | Popup::History { .. } | Popup::Help { .. } => {
                let scroll = match self {
                    Popup::History { scroll, .. } | Popup::Help { scroll } => Some(scroll),
                    _ => None,
                };
                match (action, scroll) {
                    (Some(Action::Close), _) => PopupAction::Close,
                    (Some(Action::Down), Some(s)) => {
                        *s = s.saturating_add(1);
                        PopupAction::Stay
                    }
                    (Some(Action::Up), Some(s)) => {
                        *s = s.saturating_sub(1);
                        PopupAction::Stay
                    }
                    _ => PopupAction::Stay,
                }
            }
        }
    }

    pub fn draw(&self, frame: &mut Frame, theme: &Theme) {
        let area = frame.area();
        match self {
            Popup::Input(input) => input.draw(frame, area, theme),
            Popup::Confirm(confirm) => confirm.draw(frame, area, theme),
            Popup::Value { key, result } => {
                let key = format::text(key);
                let lines = if result.found {
                    let value = result
                        .value
                        .as_deref()
                        .map(format::text)
                        .unwrap_or_default();
                    vec![
                        field("key", key.clone(), theme),
                        field("value", value, theme),
                        field("revision", format::count(result.revision), theme),
                        field("created", format::count(result.create_revision), theme),
                        field("version", result.version.to_string(), theme),
                    ]
                } else {
                    vec![Line::from(format!("{key}: not found"))]
                };
                let height = lines.len() as u16 + 2;
                let rect = centered(area, 70, height);
                frame.render_widget(Clear, rect);
                frame.render_widget(
                    Paragraph::new(lines)
                        .wrap(Wrap { trim: false })
                        .block(popup_block(format!(" get {key} "), theme)),
                    rect,
                );
            }
            Popup::History {
                key,
                result,
                scroll,
            } => {
                let mut lines = vec![Line::styled(
                    format!("{:>12}  VALUE", "REVISION"),
                    theme.heading(),
                )];
                for v in &result.versions {
                    let value = match (&v.value, v.deleted) {
                        (_, true) => Span::styled("(deleted)", theme.dim()),
                        (Some(value), false) => Span::raw(format::text(value)),
                        (None, false) => Span::styled("(empty)", theme.dim()),
                    };
                    lines.push(Line::from(vec![
                        Span::raw(format!("{:>12}  ", format::count(v.revision))),
                        value,
                    ]));
                }
                if result.versions.is_empty() {
                    lines.push(Line::styled("no versions retained", theme.dim()));
                }
                if result.compacted_before > 0 {
                    lines.push(Line::styled(
                        format!(
                            "versions below revision {} were compacted away",
                            format::count(result.compacted_before)
                        ),
                        theme.dim(),
                    ));
                }
                let rect = centered(area, 70, lines.len() as u16 + 2);
                let scroll = clamp_scroll(*scroll, lines.len(), rect.inner(Margin::new(1, 1)));
                frame.render_widget(Clear, rect);
                frame.render_widget(
                    Paragraph::new(lines).scroll((scroll, 0)).block(popup_block(
                        format!(" history {} ", format::text(key)),
                        theme,
                    )),
                    rect,
                );
            }
            Popup::Help { scroll } => draw_help(frame, area, *scroll, theme),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Put,
    Get,
    Delete,
    History,
}

pub struct Input {
    pub kind: InputKind,
    /// `[key]`, or `[key, value]` for put.
    pub fields: Vec<String>,
    pub focus: usize,
    pub error: Option<String>,
}

impl Input {
    pub fn new(kind: InputKind) -> Self {
        let fields = match kind {
            InputKind::Put => 2,
            _ => 1,
        };
        Self {
            kind,
            fields: vec![String::new(); fields],
            focus: 0,
            error: None,
        }
    }

    fn title(&self) -> &'static str {
        match self.kind {
            InputKind::Put => " put ",
            InputKind::Get => " get ",
            InputKind::Delete => " delete ",
            InputKind::History => " history ",
        }
    }

    fn on_key(&mut self, action: Option<Action>, key: &KeyEvent) -> PopupAction {
        match action {
            Some(Action::Close) => return PopupAction::Close,
            Some(Action::NextField) => {
                self.focus = (self.focus + 1) % self.fields.len();
                return PopupAction::Stay;
            }
            Some(Action::Submit) if self.focus + 1 < self.fields.len() => {
                self.focus += 1;
                return PopupAction::Stay;
            }
            Some(Action::Submit) => return self.submit(),
            _ => {}
        }
        let field = &mut self.fields[self.focus];
        match key.code {
            KeyCode::Char(c)
                if !key
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
            {
                field.push(c);
                self.error = None;
            }
            KeyCode::Backspace => {
                field.pop();
            }
            _ => {}
        }
        PopupAction::Stay
    }

    fn submit(&mut self) -> PopupAction {
        let key = self.fields[0].clone().into_bytes();
        let problem = if key.is_empty() {
            Some("the key is empty: type one, or Esc to cancel".to_owned())
        } else if key.len() > MAX_KEY_BYTES {
            Some(format!(
                "the key is {} bytes; at most {MAX_KEY_BYTES} are allowed",
                key.len()
            ))
        } else {
            match self.fields.get(1) {
                Some(v) if v.len() > MAX_VALUE_BYTES => Some(format!(
                    "the value is {} bytes; at most {MAX_VALUE_BYTES} are allowed",
                    v.len()
                )),
                _ => None,
            }
        };
        if let Some(problem) = problem {
            self.error = Some(problem);
            self.focus = 0;
            return PopupAction::Stay;
        }
        match self.kind {
            InputKind::Put => PopupAction::Send(ClientOp::Put {
                key,
                value: self.fields[1].clone().into_bytes(),
            }),
            InputKind::Get => PopupAction::Send(ClientOp::Get {
                key,
                rev: None,
                consistency: Consistency::Linearizable,
            }),
            InputKind::History => PopupAction::Send(ClientOp::History { key }),
            InputKind::Delete => PopupAction::Replace(Box::new(Confirm::ask(
                format!("Delete key {}? A tombstone is written.", self.fields[0]),
                ClientOp::Delete { key },
            ))),
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let labels = ["key", "value"];
        let mut lines = Vec::new();
        for (i, value) in self.fields.iter().enumerate() {
            let focused = i == self.focus;
            let mut spans = vec![
                Span::styled(
                    format!("{:>6} ", labels[i]),
                    if focused { theme.key() } else { theme.dim() },
                ),
                Span::raw(value.clone()),
            ];
            if focused {
                spans.push(Span::styled("▏", theme.key()));
            }
            lines.push(Line::from(spans));
        }
        if let Some(error) = &self.error {
            lines.push(Line::styled(format!("✘ {error}"), theme.err()));
        }
        lines.push(hint_line(Context::Input, theme));
        let rect = centered(area, 60, lines.len() as u16 + 2);
        frame.render_widget(Clear, rect);
        frame.render_widget(
            Paragraph::new(lines).block(popup_block(self.title().to_owned(), theme)),
            rect,
        );
    }
}

pub struct Confirm {
    pub question: String,
    pub op: ClientOp,
    /// Starts `false`: Enter without moving answers "No".
    pub yes: bool,
}

impl Confirm {
    pub fn ask(question: String, op: ClientOp) -> Popup {
        Popup::Confirm(Confirm {
            question,
            op,
            yes: false,
        })
    }

    fn on_key(&mut self, action: Option<Action>) -> PopupAction {
        match action {
            Some(Action::Yes) => PopupAction::Send(self.op.clone()),
            Some(Action::No) => PopupAction::Close,
            Some(Action::Toggle) => {
                self.yes = !self.yes;
                PopupAction::Stay
            }
            Some(Action::Submit) if self.yes => PopupAction::Send(self.op.clone()),
            Some(Action::Submit) => PopupAction::Close,
            _ => PopupAction::Stay,
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let choice = |label: &'static str, chosen: bool| {
            Span::styled(
                format!(" {label} "),
                if chosen { theme.chosen() } else { theme.dim() },
            )
        };
        let lines = vec![
            Line::from(self.question.clone()),
            Line::from(""),
            Line::from(vec![
                Span::raw("    "),
                choice("[ No ]", !self.yes),
                Span::raw("   "),
                choice("[ Yes ]", self.yes),
            ]),
            Line::from(""),
            hint_line(Context::Confirm, theme),
        ];
        let rect = centered(area, 64, lines.len() as u16 + 2);
        frame.render_widget(Clear, rect);
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(popup_block(" confirm ".to_owned(), theme).border_style(theme.warn())),
            rect,
        );
    }
}

fn draw_help(frame: &mut Frame, area: Rect, scroll: usize, theme: &Theme) {
    let main = [
        Context::Always,
        Context::Global,
        Context::Peers,
        Context::Pending,
    ];
    let popups = [Context::Input, Context::Confirm, Context::View];
    // Below the header and above the hint and status lines, which stay in view.
    let area = Rect {
        y: area.y.saturating_add(1),
        height: area.height.saturating_sub(3),
        ..area
    };
    let width = area.width.saturating_sub(4).min(116);
    // Side by side when there is room, so the whole table shows without scrolling.
    let side_by_side = width.saturating_sub(4) >= 100;
    let columns = match side_by_side {
        true => vec![help_lines(&main, theme), help_lines(&popups, theme)],
        false => vec![help_lines(&[&main[..], &popups[..]].concat(), theme)],
    };
    let tallest = columns.iter().map(Vec::len).max().unwrap_or(0);
    let height = u16::try_from(tallest).unwrap_or(u16::MAX).saturating_add(2);
    let rect = centered(area, width, height);
    frame.render_widget(Clear, rect);
    let block = popup_block(" keys (j/k scroll, Esc close) ".to_owned(), theme);
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let areas: Vec<Rect> = match side_by_side {
        true => Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
            .spacing(2)
            .split(inner)
            .to_vec(),
        false => vec![inner],
    };
    for (lines, area) in columns.into_iter().zip(areas) {
        let scroll = clamp_scroll(scroll, lines.len(), area);
        frame.render_widget(Paragraph::new(lines).scroll((scroll, 0)), area);
    }
}

fn help_lines(contexts: &[Context], theme: &Theme) -> Vec<Line<'static>> {
    let width = KEYS
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(0);
    let mut lines = Vec::new();
    for (i, &context) in contexts.iter().enumerate() {
        if i > 0 {
            lines.push(Line::from(""));
        }
        lines.push(Line::styled(context.title(), theme.heading()));
        for b in KEYS.iter().filter(|b| b.context == context) {
            lines.push(Line::from(vec![
                Span::styled(format!("  {:<width$}  ", b.label), theme.key()),
                Span::raw(b.description),
            ]));
        }
    }
    lines
}

/// Scrolls no further than the last line reaching the bottom of `area`.
fn clamp_scroll(scroll: usize, lines: usize, area: Rect) -> u16 {
    let most = lines.saturating_sub(usize::from(area.height));
    u16::try_from(scroll.min(most)).unwrap_or(u16::MAX)
}

fn field(name: &str, value: String, theme: &Theme) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{name:>9}  "), theme.dim()),
        Span::raw(value),
    ])
}

fn hint_line(context: Context, theme: &Theme) -> Line<'static> {
    let mut spans = Vec::new();
    for b in keys::hints(&[context]) {
        spans.push(Span::styled(b.label, theme.key()));
        spans.push(Span::raw(format!(" {}  ", b.hint)));
    }
    Line::from(spans)
}

fn popup_block(title: String, theme: &Theme) -> Block<'static> {
    Block::bordered()
        .title(Span::styled(title, theme.heading()))
        .border_style(theme.focused())
        .padding(Padding::horizontal(1))
}

/// A `width` × `height` rectangle in the middle of `area`, shrunk to fit.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [rect] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    rect
}
