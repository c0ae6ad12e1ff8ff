//! The console's state and what every key, tick and reply does to it.
//!
//! Nothing here waits or touches the terminal: handlers change state and queue requests in
//! an outbox that the event loop sends, so key sequences are tested by calling methods.

use super::backend::BackendError;
use super::format;
use super::keys::{self, Action, Context};
use super::popup::{Confirm, Input, InputKind, Popup, PopupAction};
use crossterm::event::KeyEvent;
use myraft_wire::api::{ClientOp, ClientResponse, ClusterStatus, NodeDetail, StopTarget};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often the cluster status and the selected node's details are asked for.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Peers,
    Pending,
}

/// Whether the last status request got an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Connected,
    /// The entrance answered with an error.
    Refused(String),
    Unreachable(String),
}

/// The last finished user request, for the status line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Ok(String),
    Err(String),
}

/// A request for the event loop to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub op: ClientOp,
}

#[derive(Clone, Debug)]
enum Purpose {
    Status,
    Detail(String),
    /// Asked for by the operator; shown with a spinner until it is answered.
    User(ClientOp),
}

pub struct App {
    /// What the header calls the entrance (`--entrance` as given).
    pub entrance: String,
    /// Injected, so screens render the same in tests.
    pub now: Instant,
    pub color: bool,
    pub status: Option<ClusterStatus>,
    pub connection: Connection,
    pub last_success: Option<Instant>,
    /// The latest details asked for, by node name; an error string if that request failed.
    pub detail: Option<(String, Result<NodeDetail, String>)>,
    pub focus: Pane,
    pub peer: usize,
    pub pending: usize,
    pub popup: Option<Popup>,
    pub notice: Option<Notice>,
    /// Advances with every tick, for the spinner.
    pub frame: usize,
    pub quit: bool,
    in_flight: HashMap<u64, Purpose>,
    last_status_sent: Option<Instant>,
    last_detail_sent: Option<Instant>,
    next_id: u64,
    outbox: Vec<Request>,
}

impl App {
    pub fn new(entrance: impl Into<String>, now: Instant, color: bool) -> Self {
        Self {
            entrance: entrance.into(),
            now,
            color,
            status: None,
            connection: Connection::Connecting,
            last_success: None,
            detail: None,
            focus: Pane::Peers,
            peer: 0,
            pending: 0,
            popup: None,
            notice: None,
            frame: 0,
            quit: false,
            in_flight: HashMap::new(),
            last_status_sent: None,
            last_detail_sent: None,
            next_id: 1,
            outbox: Vec::new(),
        }
    }

    /// Requests queued since the last call, oldest first.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.outbox)
    }

    /// The operator's requests still waiting for an answer, oldest first.
    pub fn running(&self) -> Vec<&ClientOp> {
        let mut ids: Vec<_> = self
            .in_flight
            .iter()
            .filter_map(|(id, p)| match p {
                Purpose::User(op) => Some((*id, op)),
                _ => None,
            })
            .collect();
        ids.sort_by_key(|(id, _)| *id);
        ids.into_iter().map(|(_, op)| op).collect()
    }

    pub fn selected_peer(&self) -> Option<&myraft_wire::api::MemberStatus> {
        self.status.as_ref()?.members.get(self.peer)
    }

    pub fn selected_pending(&self) -> Option<&myraft_wire::api::PendingJoin> {
        self.status.as_ref()?.pending.get(self.pending)
    }

    /// The key contexts that apply right now, most specific first.
    pub fn contexts(&self) -> Vec<Context> {
        match &self.popup {
            None => vec![
                Context::Always,
                Context::Global,
                Context::Peers,
                Context::Pending,
            ],
            Some(p) => vec![Context::Always, p.context()],
        }
    }

    // ---- inputs ----

    pub fn on_tick(&mut self, now: Instant) {
        self.now = now;
        self.frame = self.frame.wrapping_add(1);
        self.poll(false);
    }

    pub fn on_key(&mut self, key: KeyEvent) {
        let Some(popup) = &mut self.popup else {
            if let Some(action) = keys::action(&self.contexts(), &key) {
                self.act(action);
            }
            return;
        };
        if keys::action(&[Context::Always], &key) == Some(Action::Quit) {
            self.quit = true;
            return;
        }
        match popup.on_key(&key) {
            PopupAction::Stay => {}
            PopupAction::Close => self.popup = None,
            PopupAction::Send(op) => {
                self.popup = None;
                self.send_user(op);
            }
            PopupAction::Replace(next) => self.popup = Some(*next),
        }
    }

    pub fn on_reply(&mut self, id: u64, result: Result<ClientResponse, BackendError>) {
        let Some(purpose) = self.in_flight.remove(&id) else {
            return;
        };
        match purpose {
            Purpose::Status => self.on_status(result),
            Purpose::Detail(name) => {
                let detail = match result {
                    Ok(ClientResponse::NodeDetail(d)) => Ok(d),
                    Ok(other) => Err(unexpected(&other)),
                    Err(e) => Err(e.to_string()),
                };
                self.detail = Some((name, detail));
            }
            Purpose::User(op) => self.on_user_reply(op, result),
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Down => self.move_selection(1),
            Action::Up => self.move_selection(-1),
            Action::SwitchPane => {
                self.focus = match self.focus {
                    Pane::Peers => Pane::Pending,
                    Pane::Pending => Pane::Peers,
                }
            }
            Action::Details => self.request_detail(),
            Action::Put => self.popup = Some(Popup::Input(Input::new(InputKind::Put))),
            Action::Get => self.popup = Some(Popup::Input(Input::new(InputKind::Get))),
            Action::Delete => self.popup = Some(Popup::Input(Input::new(InputKind::Delete))),
            Action::History => self.popup = Some(Popup::Input(Input::new(InputKind::History))),
            Action::Stop => self.on_peer(|name| {
                Confirm::ask(
                    format!("Stop node {name}? Its process ends; it stays a member."),
                    ClientOp::StopNode {
                        target: StopTarget::Node { name },
                    },
                )
            }),
            Action::Remove => self.on_peer(|name| {
                Confirm::ask(
                    format!("Remove node {name} from the cluster? It exits afterwards."),
                    ClientOp::RemoveNode { name },
                )
            }),
            Action::Transfer => {
                if let Some(name) = self.selected_peer().map(|m| m.name.clone()) {
                    self.send_user(ClientOp::TransferLeader { name });
                } else {
                    self.no_selection("peer");
                }
            }
            Action::Approve => match self.selected_pending().map(|p| p.name.clone()) {
                Some(name) => self.send_user(ClientOp::Approve { name }),
                None => self.no_selection("pending join"),
            },
            Action::Reject => match self.selected_pending().map(|p| p.name.clone()) {
                Some(name) => {
                    self.popup = Some(Confirm::ask(
                        format!("Reject the join of {name}? The node exits."),
                        ClientOp::Reject { name },
                    ))
                }
                None => self.no_selection("pending join"),
            },
            Action::Refresh => self.poll(true),
            Action::Help => self.popup = Some(Popup::Help { scroll: 0 }),
            Action::Quit => self.quit = true,
            // Popup actions; popups handle their own.
            Action::Close
            | Action::Submit
            | Action::NextField
            | Action::Yes
            | Action::No
            | Action::Toggle => {}
        }
    }

    fn on_peer(&mut self, confirm: impl FnOnce(String) -> Popup) {
        match self.selected_peer().map(|m| m.name.clone()) {
            Some(name) => self.popup = Some(confirm(name)),
            None => self.no_selection("peer"),
        }
    }

    fn no_selection(&mut self, what: &str) {
        self.notice = Some(Notice::Err(format!(
            "no {what} selected; wait for the cluster status, or Tab to the other pane"
        )));
    }

    fn move_selection(&mut self, by: isize) {
        let (len, sel) = match (self.focus, &self.status) {
            (_, None) => return,
            (Pane::Peers, Some(s)) => (s.members.len(), &mut self.peer),
            (Pane::Pending, Some(s)) => (s.pending.len(), &mut self.pending),
        };
        let before = *sel;
        *sel = sel.saturating_add_signed(by).min(len.saturating_sub(1));
        if self.focus == Pane::Peers && *sel != before {
            // Details follow the selection at once rather than at the next poll.
            self.request_detail();
        }
    }

    // ---- requests ----

    fn send(&mut self, op: ClientOp, purpose: Purpose) {
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.insert(id, purpose);
        self.outbox.push(Request { id, op });
    }

    fn send_user(&mut self, op: ClientOp) {
        self.send(op.clone(), Purpose::User(op));
    }

    fn in_flight(&self, f: impl Fn(&Purpose) -> bool) -> bool {
        self.in_flight.values().any(f)
    }

    /// Asks for status and details when they are due, or now if `force`; never twice at once,
    /// so an unreachable entrance does not pile up requests.
    fn poll(&mut self, force: bool) {
        let due = |last: Option<Instant>, now: Instant| {
            force || last.is_none_or(|t| now.saturating_duration_since(t) >= POLL_EVERY)
        };
        if !self.in_flight(|p| matches!(p, Purpose::Status)) && due(self.last_status_sent, self.now)
        {
            self.last_status_sent = Some(self.now);
            self.send(ClientOp::Status, Purpose::Status);
        }
        if due(self.last_detail_sent, self.now) {
            self.request_detail();
        }
    }

    fn request_detail(&mut self) {
        let Some(name) = self.selected_peer().map(|m| m.name.clone()) else {
            return;
        };
        if self.in_flight(|p| matches!(p, Purpose::Detail(n) if *n == name)) {
            return;
        }
        self.last_detail_sent = Some(self.now);
        self.send(
            ClientOp::NodeDetail { name: name.clone() },
            Purpose::Detail(name),
        );
    }

    fn on_status(&mut self, result: Result<ClientResponse, BackendError>) {
        match result {
            Ok(ClientResponse::Status(status)) => {
                let peer = self.selected_peer().map(|m| m.name.clone());
                let pending = self.selected_pending().map(|p| p.name.clone());
                self.peer = reselect(&status.members, |m| &m.name, peer, self.peer);
                self.pending = reselect(&status.pending, |p| &p.name, pending, self.pending);
                let first = self.status.is_none();
                let had_pending = self.status.as_ref().is_some_and(|s| !s.pending.is_empty());
                if had_pending && status.pending.is_empty() && self.focus == Pane::Pending {
                    // The last join was decided; j/k would move nothing in an empty pane.
                    self.focus = Pane::Peers;
                }
                self.status = Some(status);
                self.connection = Connection::Connected;
                self.last_success = Some(self.now);
                if first {
                    self.request_detail();
                }
            }
            Ok(other) => self.connection = Connection::Refused(unexpected(&other)),
            Err(BackendError::Cluster(e)) => self.connection = Connection::Refused(e.to_string()),
            Err(BackendError::Unreachable(e)) => self.connection = Connection::Unreachable(e),
        }
    }

    fn on_user_reply(&mut self, op: ClientOp, result: Result<ClientResponse, BackendError>) {
        let what = describe(&op);
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                self.notice = Some(Notice::Err(format!("{what}: {e}")));
                return;
            }
        };
        let message = match (&op, response) {
            (ClientOp::Put { .. }, ClientResponse::Put(r)) => {
                format!("{what}  (revision {})", format::count(r.revision))
            }
            (ClientOp::Get { key, .. }, ClientResponse::Get(r)) => {
                let message = match (&r.value, r.found) {
                    (Some(v), true) => format!(
                        "get {} = {}  (revision {}, version {})",
                        format::text(key),
                        format::text(v),
                        format::count(r.revision),
                        r.version
                    ),
                    _ => format!("get {}: not found", format::text(key)),
                };
                self.popup = Some(Popup::Value {
                    key: key.clone(),
                    result: r,
                });
                message
            }
            (ClientOp::Delete { key }, ClientResponse::Delete(r)) => {
                let key = format::text(key);
                match r.deleted {
                    true => format!("deleted {key}  (revision {})", format::count(r.revision)),
                    false => format!("{key} did not exist; nothing deleted"),
                }
            }
            (ClientOp::History { key }, ClientResponse::History(r)) => {
                let message = format!(
                    "history {}: {} version(s)",
                    format::text(key),
                    r.versions.len()
                );
                self.popup = Some(Popup::History {
                    key: key.clone(),
                    result: r,
                    scroll: 0,
                });
                message
            }
            (_, ClientResponse::Done) => {
                // Membership or leadership changed: show it now, not at the next poll.
                self.poll(true);
                match &op {
                    // Approved is not yet a member; say what comes next.
                    ClientOp::Approve { name } => {
                        format!("approved {name}: it joins as a learner, then votes once caught up")
                    }
                    _ => format!("{what}: done"),
                }
            }
            (_, other) => {
                self.notice = Some(Notice::Err(format!("{what}: unexpected answer {other:?}")));
                return;
            }
        };
        self.notice = Some(Notice::Ok(message));
    }
}

/// Keeps the same item selected when the list changes under it.
fn reselect<T>(
    items: &[T],
    name: impl Fn(&T) -> &String,
    selected: Option<String>,
    index: usize,
) -> usize {
    selected
        .and_then(|s| items.iter().position(|i| *name(i) == s))
        .unwrap_or(index)
        .min(items.len().saturating_sub(1))
}

/// A reply of the wrong kind means client and server disagree on the protocol; name the
/// kind rather than dump it, and log the rest.
fn unexpected(response: &ClientResponse) -> String {
    tracing::warn!(?response, "reply of an unexpected kind");
    let kind = match response {
        ClientResponse::Put(_) => "put",
        ClientResponse::Delete(_) => "delete",
        ClientResponse::Get(_) => "get",
        ClientResponse::History(_) => "history",
        ClientResponse::Compact(_) => "compact",
        ClientResponse::Status(_) => "status",
        ClientResponse::NodeDetail(_) => "node detail",
        ClientResponse::PendingJoins(_) => "pending joins",
        ClientResponse::Done => "done",
    };
    format!("unexpected {kind} reply; are the console and the cluster the same version?")
}

/// What the status line calls a request, as the operator would say it.
pub fn describe(op: &ClientOp) -> String {
    match op {
        ClientOp::Put { key, value } => {
            format!("put {} = {}", format::text(key), format::text(value))
        }
        ClientOp::Get { key, .. } => format!("get {}", format::text(key)),
        ClientOp::Delete { key } => format!("delete {}", format::text(key)),
        ClientOp::History { key } => format!("history {}", format::text(key)),
        ClientOp::Compact { rev } => format!("compact {rev}"),
        ClientOp::Status => "status".into(),
        ClientOp::NodeDetail { name } => format!("node {name}"),
        ClientOp::PendingJoins => "pending".into(),
        ClientOp::Approve { name } => format!("approve {name}"),
        ClientOp::Reject { name } => format!("reject {name}"),
        ClientOp::StopNode {
            target: StopTarget::Node { name } | StopTarget::Member { name, .. },
        } => format!("stop {name}"),
        ClientOp::StopNode {
            target: StopTarget::All,
        } => "stop all".into(),
        ClientOp::RemoveNode { name } => format!("remove {name}"),
        ClientOp::TransferLeader { name } => format!("transfer leadership to {name}"),
        ClientOp::AddMember { name, .. } => format!("add member {name}"),
    }
}
