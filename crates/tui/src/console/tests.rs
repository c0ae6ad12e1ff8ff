#![allow(clippy::unwrap_used)]
//! Screens rendered into a `TestBackend` and snapshotted, and key sequences driven through
//! `App`. Time is injected: every screen is drawn 0.3 s after the last status arrived.

use super::app::{App, Connection, Notice, Pane};
use super::backend::{Backend, BackendError, FakeBackend};
use super::popup::Popup;
use super::ui;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use myraft_wire::api::{
    ClientError, ClientOp, ClientResponse, ClusterStatus, Consistency, GetResult, HistoryResult,
    KeyVersion, MemberStatus, NodeDetail, PendingJoin, PutResult, StopTarget,
};
use myraft_wire::health::{Health, NodeStats, PeerRef, Role, StoreStats, Transfer};
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;
use std::time::{Duration, Instant};

const WIDTH: u16 = 120;
const HEIGHT: u16 = 30;

fn member(id: u64, role: Role, health: Health, commit: u64, contact: Option<u64>) -> MemberStatus {
    MemberStatus {
        id,
        name: format!("n{id}"),
        addr: format!("10.0.0.1{id}:7001"),
        role,
        voter: role != Role::Learner,
        health,
        term: 14,
        commit_index: commit,
        applied_index: commit,
        last_contact_ms: contact,
    }
}

fn healthy() -> ClusterStatus {
    ClusterStatus {
        cluster_id: 0x7f3a_91c2_0d4e_5b60,
        leader: Some(PeerRef {
            id: 2,
            name: "n2".into(),
        }),
        term: 14,
        commit_index: 88_412,
        entrance: Some("10.0.0.5:7000".into()),
        members: vec![
            member(1, Role::Follower, Health::Up, 88_412, Some(12)),
            member(2, Role::Leader, Health::Up, 88_412, Some(4)),
            member(3, Role::Follower, Health::Up, 88_301, Some(35)),
        ],
        pending: vec![],
    }
}

fn down_leader() -> ClusterStatus {
    let mut s = healthy();
    s.leader = None;
    s.term = 15;
    s.members[0].role = Role::Candidate;
    s.members[0].term = 15;
    s.members[1].health = Health::Down;
    s.members[1].last_contact_ms = Some(4_800);
    s.members[2].health = Health::Suspect;
    s.members[2].last_contact_ms = Some(1_200);
    s
}

fn with_pending() -> ClusterStatus {
    let mut s = healthy();
    s.members
        .push(member(4, Role::Learner, Health::Up, 61_020, Some(40)));
    s.pending = vec![PendingJoin {
        name: "n5".into(),
        addr: "10.0.0.15:7001".into(),
        waiting_ms: 42_000,
    }];
    s
}

fn detail(name: &str) -> NodeDetail {
    let id = name.trim_start_matches('n').parse().unwrap_or(0);
    let leader = PeerRef {
        id: 2,
        name: "n2".into(),
    };
    NodeDetail {
        id,
        name: name.into(),
        addr: format!("10.0.0.1{id}:7001"),
        role: if id == 2 {
            Role::Leader
        } else {
            Role::Follower
        },
        voter: true,
        health: Health::Up,
        voted_for: Some(leader.clone()),
        stats: NodeStats {
            term: 14,
            leader: Some(leader),
            commit_index: 88_412,
            applied_index: 88_412,
            last_log_index: 88_412,
            snapshot_index: 80_000,
            log_bytes: 13_002_342,
            data_dir_bytes: 100_663_296,
            uptime_ms: (3 * 86_400 + 4 * 3600 + 17) * 1000,
            dropped_datagrams: 0,
            store: StoreStats {
                store_bytes: 96 << 20,
                revision: 88_000,
                compacted_revision: 80_000,
                keys: 61_000,
                apply_lag: 0,
                transfers: if id == 2 {
                    vec![Transfer {
                        peer: "n3".into(),
                        sending: true,
                        snapshot_index: 88_000,
                        bytes_done: 24 << 20,
                        bytes_total: 90 << 20,
                        elapsed_ms: 4000,
                        resumed_after_revision: 0,
                    }]
                } else {
                    Vec::new()
                },
            },
        },
    }
}

fn base() -> Instant {
    // Any fixed instant will do: only differences from it are drawn.
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Answers every queued request the way a cluster showing `status` would.
fn answer_all(app: &mut App, status: &ClusterStatus) {
    for request in app.take_requests() {
        let result = match &request.op {
            ClientOp::Status => Ok(ClientResponse::Status(status.clone())),
            ClientOp::NodeDetail { name } => Ok(ClientResponse::NodeDetail(detail(name))),
            other => panic!("unexpected request {other:?}"),
        };
        app.on_reply(request.id, result);
    }
}

/// An app that received `status` and the first member's details, drawn 0.3 s later.
fn loaded(status: ClusterStatus) -> App {
    let mut app = App::new("10.0.0.5:7000", base(), true);
    app.on_tick(base());
    answer_all(&mut app, &status);
    answer_all(&mut app, &status);
    app.now = base() + Duration::from_millis(300);
    app
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn press(app: &mut App, keys: &str) {
    for c in keys.chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
}

fn render(app: &App) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).unwrap();
    terminal.draw(|frame| ui::draw(frame, app)).unwrap();
    terminal
}

// ---- screens ----

#[test]
fn screen_healthy_three_nodes() {
    let mut app = loaded(healthy());
    // The sketch in DESIGN.md shows the leader selected.
    app.on_key(key(KeyCode::Char('j')));
    answer_all(&mut app, &healthy());
    app.notice = Some(Notice::Ok("put alpha = one  (revision 88 413)".into()));
    insta::assert_snapshot!("healthy", render(&app).backend());
}

#[test]
fn screen_down_leader() {
    let mut app = loaded(down_leader());
    app.notice = Some(Notice::Err(
        "put alpha: this node is not the leader; no leader is known yet, retry shortly".into(),
    ));
    insta::assert_snapshot!("down_leader", render(&app).backend());
}

#[test]
fn screen_pending_join() {
    let mut app = loaded(with_pending());
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Pending);
    insta::assert_snapshot!("pending_join", render(&app).backend());
}

#[test]
fn screen_help_overlay() {
    let mut app = loaded(healthy());
    press(&mut app, "?");
    insta::assert_snapshot!("help", render(&app).backend());
}

#[test]
fn screen_confirm_stop() {
    let mut app = loaded(healthy());
    press(&mut app, "jjs");
    insta::assert_snapshot!("confirm_stop", render(&app).backend());
}

#[test]
fn screen_unreachable_keeps_last_view() {
    let mut app = loaded(healthy());
    app.on_tick(base() + Duration::from_secs(1));
    let status = app
        .take_requests()
        .into_iter()
        .find(|r| r.op == ClientOp::Status)
        .unwrap();
    app.on_reply(
        status.id,
        Err(BackendError::Unreachable(
            "no answer from 10.0.0.5:7000".into(),
        )),
    );
    app.now = base() + Duration::from_millis(4_200);
    assert!(matches!(app.connection, Connection::Unreachable(_)));
    let screen = render(&app);
    insta::assert_snapshot!("unreachable", screen.backend());
}

fn screen_text(app: &App) -> String {
    let terminal = render(app);
    let buffer = terminal.backend().buffer();
    buffer.content.iter().map(|c| c.symbol()).collect()
}

#[test]
fn a_narrow_terminal_keeps_the_connection_state() {
    let app = loaded(healthy());
    let mut terminal = Terminal::new(TestBackend::new(70, 20)).unwrap();
    terminal.draw(|frame| ui::draw(frame, &app)).unwrap();
    let buffer = terminal.backend().buffer();
    let header: String = buffer.content[..70].iter().map(|c| c.symbol()).collect();
    assert!(
        header.contains("● connected  updated 0.3 s ago"),
        "{header}"
    );
}

/// The screen as rows of text, at any size.
fn screen_rows(app: &App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| ui::draw(frame, app)).unwrap();
    let buffer = terminal.backend().buffer();
    buffer
        .content
        .chunks(usize::from(width))
        .map(|row| row.iter().map(|c| c.symbol()).collect())
        .collect()
}

#[test]
fn at_100_columns_nothing_is_cut_mid_word() {
    let app = loaded(with_pending());
    let rows = screen_rows(&app, 100, 30);
    let header = &rows[0];
    // Items that do not fit are left out whole, the cluster id first.
    assert!(header.contains("leader n2  term 14"), "{header}");
    assert!(!header.contains("cluster"), "{header}");
    assert!(
        header.contains("● connected  updated 0.3 s ago"),
        "{header}"
    );
    let text = rows.join("\n");
    // Whole addresses, with their ports, and how long a join has waited.
    for needle in [
        "10.0.0.13:7001",
        "10.0.0.14:7001",
        "10.0.0.15:7001",
        "waiting 42 s",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
}

#[test]
fn a_down_node_s_details_say_they_are_its_last_report() {
    let mut app = loaded(down_leader());
    press(&mut app, "j");
    let mut detail = detail("n2");
    detail.health = Health::Down;
    for request in app.take_requests() {
        if let ClientOp::NodeDetail { .. } = request.op {
            app.on_reply(request.id, Ok(ClientResponse::NodeDetail(detail.clone())));
        }
    }
    let text = screen_text(&app);
    assert!(
        text.contains("no answer for 4.8 s: these are its last reported figures"),
        "{text}"
    );
    let healthy = screen_text(&loaded(healthy()));
    assert!(!healthy.contains("last reported"), "{healthy}");
}

#[test]
fn the_help_overlay_leaves_the_hint_and_status_lines_in_view() {
    let mut app = loaded(healthy());
    press(&mut app, "?");
    for (width, height) in [(WIDTH, HEIGHT), (100, 30), (160, 45)] {
        let rows = screen_rows(&app, width, height);
        let hints = &rows[usize::from(height) - 2];
        assert!(
            hints.starts_with(" Esc/q close"),
            "{width}x{height}: {hints:?}"
        );
        assert!(
            rows[0].contains("● connected"),
            "{width}x{height}: {:?}",
            rows[0]
        );
    }
}

#[test]
fn approving_the_last_pending_join_returns_the_focus_to_the_peers() {
    let mut app = loaded(with_pending());
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Pending);
    press(&mut app, "a");
    let approve = app.take_requests().pop().unwrap();
    app.on_reply(approve.id, Ok(ClientResponse::Done));
    assert!(
        matches!(&app.notice, Some(Notice::Ok(m)) if m.starts_with("approved n5: it joins as a learner")),
        "{:?}",
        app.notice
    );
    let mut joined = with_pending();
    joined.pending.clear();
    answer_all(&mut app, &joined);
    assert_eq!(app.focus, Pane::Peers);
    // An empty pane the operator chose stays chosen.
    app.on_key(key(KeyCode::Tab));
    app.now += Duration::from_secs(2);
    app.on_tick(app.now);
    answer_all(&mut app, &joined);
    assert_eq!(app.focus, Pane::Pending);
}

#[test]
fn an_entrance_never_reached_says_so() {
    let mut app = App::new("10.0.0.5:7000", base(), true);
    app.on_tick(base());
    let status = app.take_requests().pop().unwrap();
    app.on_reply(
        status.id,
        Err(BackendError::Unreachable(
            "no answer from 10.0.0.5:7000".into(),
        )),
    );
    let text = screen_text(&app);
    assert!(text.contains("● unreachable  never reached"), "{text}");
    assert!(text.contains("no answer from the entrance yet: no answer from 10.0.0.5:7000"));
    // Keys that need a selection explain instead of doing nothing.
    press(&mut app, "s");
    assert!(app.popup.is_none());
    assert!(matches!(app.notice, Some(Notice::Err(_))));
}

#[test]
fn screen_put_popup_and_running_request() {
    let mut app = loaded(healthy());
    press(&mut app, "palpha");
    app.on_key(key(KeyCode::Tab));
    press(&mut app, "one");
    insta::assert_snapshot!("put_popup", render(&app).backend());
    app.on_key(key(KeyCode::Enter));
    app.frame = 3;
    insta::assert_snapshot!("put_running", render(&app).backend());
}

#[test]
fn screen_get_result_and_history() {
    let mut app = loaded(healthy());
    press(&mut app, "galpha");
    app.on_key(key(KeyCode::Enter));
    let get = app.take_requests().pop().unwrap();
    app.on_reply(
        get.id,
        Ok(ClientResponse::Get(GetResult {
            found: true,
            value: Some(b"one".to_vec()),
            revision: 88_413,
            create_revision: 88_400,
            version: 2,
        })),
    );
    insta::assert_snapshot!("get_result", render(&app).backend());
    app.on_key(key(KeyCode::Esc));
    press(&mut app, "halpha");
    app.on_key(key(KeyCode::Enter));
    let history = app.take_requests().pop().unwrap();
    let version = |revision, value: Option<&str>| KeyVersion {
        revision,
        value: value.map(|v| v.as_bytes().to_vec()),
        deleted: value.is_none(),
    };
    app.on_reply(
        history.id,
        Ok(ClientResponse::History(HistoryResult {
            versions: vec![
                version(88_400, Some("zero")),
                version(88_401, None),
                version(88_413, Some("one")),
            ],
            compacted_before: 80_000,
        })),
    );
    insta::assert_snapshot!("history_result", render(&app).backend());
}

#[test]
fn colours_show_health_and_no_color_removes_them() {
    let find_health = |terminal: &Terminal<TestBackend>| {
        let buffer = terminal.backend().buffer().clone();
        let width = buffer.area.width as usize;
        let at = buffer
            .content
            .iter()
            .enumerate()
            .find(|(i, c)| {
                c.symbol() == "●"
                    && buffer.content.get(i + 2).is_some_and(|n| n.symbol() == "u")
                    && i / width > 1
            })
            .map(|(i, _)| i)
            .unwrap();
        (
            buffer.content[at].fg,
            buffer.content.iter().all(|c| c.fg == Color::Reset),
        )
    };
    let app = loaded(healthy());
    let (fg, plain) = find_health(&render(&app));
    assert_eq!(fg, Color::Green);
    assert!(!plain);

    let mut app = loaded(healthy());
    app.color = false;
    let (fg, plain) = find_health(&render(&app));
    assert_eq!(fg, Color::Reset);
    assert!(plain, "NO_COLOR: no cell may carry a colour");
}

#[test]
fn tiny_terminal_does_not_panic() {
    let mut app = loaded(with_pending());
    press(&mut app, "?");
    for (w, h) in [(1, 1), (20, 5), (40, 12), (80, 24)] {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        terminal.draw(|frame| ui::draw(frame, &app)).unwrap();
    }
}

// ---- keys ----

#[test]
fn j_and_k_move_the_selection_and_clamp() {
    let mut app = loaded(healthy());
    assert_eq!(app.peer, 0);
    press(&mut app, "k");
    assert_eq!(app.peer, 0);
    press(&mut app, "jjjjj");
    assert_eq!(app.peer, 2);
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.peer, 1);
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.peer, 2);
    // Details follow the selection.
    let asked: Vec<_> = app.take_requests().into_iter().map(|r| r.op).collect();
    assert!(asked.contains(&ClientOp::NodeDetail { name: "n3".into() }));
}

#[test]
fn tab_switches_to_pending_and_j_moves_there() {
    let mut status = with_pending();
    status.pending.push(PendingJoin {
        name: "n6".into(),
        addr: "10.0.0.16:7001".into(),
        waiting_ms: 3_000,
    });
    let mut app = loaded(status);
    app.on_key(key(KeyCode::Tab));
    press(&mut app, "jj");
    assert_eq!((app.pending, app.peer), (1, 0));
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Peers);
}

#[test]
fn put_popup_sends_a_put_and_reports_the_revision() {
    let mut app = loaded(healthy());
    press(&mut app, "p");
    assert!(matches!(app.popup, Some(Popup::Input(_))));
    // Enter on the key field moves to the value; q and j are text here, not keys.
    press(&mut app, "alpha-qj");
    app.on_key(key(KeyCode::Backspace));
    app.on_key(key(KeyCode::Backspace));
    app.on_key(key(KeyCode::Backspace));
    app.on_key(key(KeyCode::Enter));
    press(&mut app, "one");
    assert!(!app.quit);
    app.on_key(key(KeyCode::Enter));
    assert!(app.popup.is_none());
    let requests = app.take_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].op,
        ClientOp::Put {
            key: b"alpha".to_vec(),
            value: b"one".to_vec()
        }
    );
    assert_eq!(app.running().len(), 1);
    app.on_reply(
        requests[0].id,
        Ok(ClientResponse::Put(PutResult { revision: 88_413 })),
    );
    assert!(app.running().is_empty());
    assert_eq!(
        app.notice,
        Some(Notice::Ok("put alpha = one  (revision 88 413)".into()))
    );
}

#[test]
fn put_with_an_empty_key_stays_open_and_says_why() {
    let mut app = loaded(healthy());
    press(&mut app, "p");
    app.on_key(key(KeyCode::Tab));
    press(&mut app, "v");
    app.on_key(key(KeyCode::Enter));
    match &app.popup {
        Some(Popup::Input(input)) => assert!(input.error.as_deref().unwrap().contains("empty")),
        _ => panic!("the put popup must stay open"),
    }
    assert!(app.take_requests().is_empty());
}

#[test]
fn a_failed_request_is_reported_with_its_reason() {
    let mut app = loaded(healthy());
    press(&mut app, "galpha");
    app.on_key(key(KeyCode::Enter));
    let get = app.take_requests().pop().unwrap();
    assert!(matches!(
        get.op,
        ClientOp::Get {
            rev: None,
            consistency: Consistency::Linearizable,
            ..
        }
    ));
    app.on_reply(get.id, Err(BackendError::Cluster(ClientError::Timeout)));
    match &app.notice {
        Some(Notice::Err(m)) => assert!(m.starts_with("get alpha: the cluster did not answer")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stop_asks_first_and_enter_means_no() {
    let mut app = loaded(healthy());
    press(&mut app, "jjs");
    match &app.popup {
        Some(Popup::Confirm(c)) => assert!(!c.yes, "the default answer must be No"),
        _ => panic!("s must ask for confirmation"),
    }
    app.on_key(key(KeyCode::Enter));
    assert!(app.popup.is_none());
    assert!(app
        .take_requests()
        .iter()
        .all(|r| !matches!(r.op, ClientOp::StopNode { .. })));
}

#[test]
fn stop_confirmed_with_y_stops_the_selected_node() {
    let mut app = loaded(healthy());
    press(&mut app, "jj");
    app.take_requests();
    press(&mut app, "sy");
    assert!(app.popup.is_none());
    let ops: Vec<_> = app.take_requests().into_iter().map(|r| r.op).collect();
    assert_eq!(
        ops,
        vec![ClientOp::StopNode {
            target: StopTarget::Node { name: "n3".into() }
        }]
    );
}

#[test]
fn moving_to_yes_then_enter_confirms() {
    let mut app = loaded(healthy());
    press(&mut app, "r");
    app.on_key(key(KeyCode::Right));
    app.on_key(key(KeyCode::Enter));
    let ops: Vec<_> = app.take_requests().into_iter().map(|r| r.op).collect();
    assert_eq!(ops, vec![ClientOp::RemoveNode { name: "n1".into() }]);
}

#[test]
fn delete_asks_for_the_key_then_confirmation() {
    let mut app = loaded(healthy());
    press(&mut app, "dalpha");
    app.on_key(key(KeyCode::Enter));
    assert!(matches!(app.popup, Some(Popup::Confirm(_))));
    assert!(app.take_requests().is_empty());
    press(&mut app, "n");
    assert!(app.popup.is_none());
    assert!(app.take_requests().is_empty());
    press(&mut app, "dalpha");
    app.on_key(key(KeyCode::Enter));
    press(&mut app, "y");
    let ops: Vec<_> = app.take_requests().into_iter().map(|r| r.op).collect();
    assert_eq!(
        ops,
        vec![ClientOp::Delete {
            key: b"alpha".to_vec()
        }]
    );
}

#[test]
fn approve_sends_at_once_and_reject_asks_first() {
    let mut app = loaded(with_pending());
    press(&mut app, "a");
    let ops: Vec<_> = app.take_requests().into_iter().map(|r| r.op).collect();
    assert_eq!(ops, vec![ClientOp::Approve { name: "n5".into() }]);
    press(&mut app, "x");
    assert!(matches!(app.popup, Some(Popup::Confirm(_))));
    app.on_key(key(KeyCode::Esc));
    assert!(app.popup.is_none() && app.take_requests().is_empty());
    press(&mut app, "xy");
    let ops: Vec<_> = app.take_requests().into_iter().map(|r| r.op).collect();
    assert_eq!(ops, vec![ClientOp::Reject { name: "n5".into() }]);
}

#[test]
fn approve_without_a_pending_join_explains() {
    let mut app = loaded(healthy());
    press(&mut app, "a");
    assert!(app.take_requests().is_empty());
    assert!(matches!(app.notice, Some(Notice::Err(_))));
}

#[test]
fn transfer_goes_to_the_selected_node_and_refreshes() {
    let mut app = loaded(healthy());
    press(&mut app, "jj");
    app.take_requests();
    press(&mut app, "t");
    let transfer = app.take_requests().pop().unwrap();
    assert_eq!(transfer.op, ClientOp::TransferLeader { name: "n3".into() });
    app.on_reply(transfer.id, Ok(ClientResponse::Done));
    assert_eq!(
        app.notice,
        Some(Notice::Ok("transfer leadership to n3: done".into()))
    );
    assert!(app.take_requests().iter().any(|r| r.op == ClientOp::Status));
}

#[test]
fn esc_closes_every_popup() {
    let mut app = loaded(healthy());
    for opener in ["p", "g", "d", "h", "?", "s", "r"] {
        press(&mut app, opener);
        assert!(app.popup.is_some(), "{opener} opens a popup");
        app.on_key(key(KeyCode::Esc));
        assert!(app.popup.is_none(), "Esc closes the popup of {opener}");
    }
    assert!(app
        .take_requests()
        .iter()
        .all(|r| matches!(r.op, ClientOp::Status | ClientOp::NodeDetail { .. })));
}

#[test]
fn q_quits_and_ctrl_c_quits_even_from_a_popup() {
    let mut app = loaded(healthy());
    press(&mut app, "q");
    assert!(app.quit);

    let mut app = loaded(healthy());
    press(&mut app, "p");
    app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.quit);
}

#[test]
fn polls_are_due_every_second_and_never_pile_up() {
    let mut app = App::new("e", base(), false);
    app.on_tick(base());
    let first = app.take_requests();
    assert_eq!(
        first.iter().map(|r| &r.op).collect::<Vec<_>>(),
        [&ClientOp::Status]
    );
    // Unanswered: later ticks do not ask again.
    app.on_tick(base() + Duration::from_secs(5));
    assert!(app.take_requests().is_empty());
    app.on_reply(first[0].id, Ok(ClientResponse::Status(healthy())));
    // The first status brings the selected node's details at once.
    let detail = app.take_requests();
    assert_eq!(detail[0].op, ClientOp::NodeDetail { name: "n1".into() });
    app.on_tick(base() + Duration::from_millis(5_500));
    assert!(app.take_requests().iter().all(|r| r.op == ClientOp::Status));
    // R asks now, whatever the clock says.
    app.on_reply(
        detail[0].id,
        Ok(ClientResponse::NodeDetail(detail_of("n1"))),
    );
    press(&mut app, "R");
    assert!(app
        .take_requests()
        .iter()
        .any(|r| r.op == ClientOp::NodeDetail { name: "n1".into() }));
}

fn detail_of(name: &str) -> NodeDetail {
    detail(name)
}

#[test]
fn the_selection_follows_a_node_when_the_list_changes() {
    let mut app = loaded(healthy());
    press(&mut app, "jj");
    assert_eq!(app.selected_peer().unwrap().name, "n3");
    let mut reordered = healthy();
    reordered.members.reverse();
    press(&mut app, "R");
    answer_all(&mut app, &reordered);
    assert_eq!(app.selected_peer().unwrap().name, "n3");
    let mut shrunk = healthy();
    shrunk.members.truncate(1);
    press(&mut app, "R");
    answer_all(&mut app, &shrunk);
    assert_eq!(app.peer, 0);
}

#[tokio::test]
async fn requests_round_trip_through_a_backend() {
    let fake = FakeBackend::new();
    fake.answer_always(Ok(ClientResponse::Status(healthy())));
    fake.answer_once(
        |op| matches!(op, ClientOp::NodeDetail { .. }),
        Ok(ClientResponse::NodeDetail(detail("n1"))),
    );
    fake.answer_once(
        |op| matches!(op, ClientOp::Put { .. }),
        Ok(ClientResponse::Put(PutResult { revision: 7 })),
    );
    let backend: &dyn Backend = &fake;
    let mut app = App::new("e", base(), false);
    app.on_tick(base());
    press(&mut app, "pk");
    app.on_key(key(KeyCode::Tab));
    press(&mut app, "v");
    app.on_key(key(KeyCode::Enter));
    // Two rounds: the first status brings a detail request with it.
    for _ in 0..2 {
        for request in app.take_requests() {
            let result = backend.request(request.op).await;
            app.on_reply(request.id, result);
        }
    }
    assert_eq!(app.connection, Connection::Connected);
    assert!(matches!(&app.detail, Some((name, Ok(_))) if name == "n1"));
    assert_eq!(
        app.notice,
        Some(Notice::Ok("put k = v  (revision 7)".into()))
    );
    assert_eq!(fake.seen().len(), 3);
}
