//! Responses to output: the `--json` objects whose fields DESIGN.md fixes, and text for
//! people. Pure functions of the response, so tests check them without a cluster.

use crate::local::LocalCluster;
use crate::verify::{Checked, History, Verdict};
use myraft_wire::api::{
    ClientOp, ClientResponse, ClusterStatus, Consistency, HistoryResult, MemberStatus, NodeDetail,
    PendingJoin, StopTarget,
};
use myraft_wire::health::{PeerRef, Transfer};
use serde_json::{json, Value};

/// What one command prints: `json` with `--json`, else `human` on stdout and `note` (if
/// any) on stderr. `failed`: the command ran, but what it found is a failure, so it exits 1
/// (a history that `verify` cannot show linearizable).
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub json: Value,
    pub human: String,
    pub note: Option<String>,
    pub failed: bool,
}

impl Report {
    pub fn new(json: Value, human: impl Into<String>) -> Self {
        Self {
            json,
            human: human.into(),
            note: None,
            failed: false,
        }
    }

    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.json);
            return;
        }
        if !self.human.is_empty() {
            println!("{}", self.human.trim_end_matches('\n'));
        }
        if let Some(note) = &self.note {
            eprintln!("{note}");
        }
    }
}

pub fn op_name(op: &ClientOp) -> &'static str {
    match op {
        ClientOp::Put { .. } => "put",
        ClientOp::Get { .. } => "get",
        ClientOp::Delete { .. } => "del",
        ClientOp::History { .. } => "history",
        ClientOp::Compact { .. } => "compact",
        ClientOp::Status => "status",
        ClientOp::NodeDetail { .. } => "node",
        ClientOp::PendingJoins => "pending",
        ClientOp::Approve { .. } => "approve",
        ClientOp::Reject { .. } => "reject",
        ClientOp::StopNode { .. } => "stop",
        ClientOp::RemoveNode { .. } => "remove",
        ClientOp::TransferLeader { .. } => "transfer",
        ClientOp::AddMember { .. } => "add-member",
    }
}

fn response_name(response: &ClientResponse) -> &'static str {
    match response {
        ClientResponse::Put(_) => "Put",
        ClientResponse::Delete(_) => "Delete",
        ClientResponse::Get(_) => "Get",
        ClientResponse::History(_) => "History",
        ClientResponse::Compact(_) => "Compact",
        ClientResponse::Status(_) => "Status",
        ClientResponse::NodeDetail(_) => "NodeDetail",
        ClientResponse::PendingJoins(_) => "PendingJoins",
        ClientResponse::Done => "Done",
    }
}

/// The report for `response` to `op`, or the name of a response that does not fit `op`.
/// `entrance` is the address asked, shown when the status does not name one.
pub fn response(
    op: &ClientOp,
    response: ClientResponse,
    hex: bool,
    entrance: &str,
) -> Result<Report, &'static str> {
    let unexpected = response_name(&response);
    let report = match (op, response) {
        (ClientOp::Put { key, value }, ClientResponse::Put(r)) => Report::new(
            json!({ "key": text(key, hex), "revision": r.revision }),
            format!(
                "put {} = {} (revision {})",
                text(key, hex),
                text(value, hex),
                r.revision
            ),
        ),
        (ClientOp::Delete { key }, ClientResponse::Delete(r)) => Report::new(
            json!({ "key": text(key, hex), "revision": r.revision, "deleted": r.deleted }),
            if r.deleted {
                format!("deleted {} (revision {})", text(key, hex), r.revision)
            } else {
                format!(
                    "{} did not exist; nothing deleted (revision {})",
                    text(key, hex),
                    r.revision
                )
            },
        ),
        (
            ClientOp::Get {
                key, consistency, ..
            },
            ClientResponse::Get(r),
        ) => {
            let value = r.value.as_deref().filter(|_| r.found);
            let mut report = Report::new(
                json!({
                    "key": text(key, hex),
                    "found": r.found,
                    "value": value.map(|v| text(v, hex)),
                    "revision": r.revision,
                    "create_revision": r.create_revision,
                    "version": r.version,
                }),
                value.map(|v| text(v, hex)).unwrap_or_default(),
            );
            if let (Some(v), false) = (value, hex) {
                if std::str::from_utf8(v).is_err() {
                    report.json["value_hex"] = Value::String(hex_encode(v));
                }
            }
            if value.is_none() {
                report.note = Some(format!("{} not found", text(key, hex)));
            }
            // Only when true, so that a linearizable get keeps the fields DESIGN.md fixes.
            // The request client does not tell which node answered, so the note names none.
            if *consistency == Consistency::Stale {
                report.json["stale"] = Value::Bool(true);
                report.note = Some(match report.note.take() {
                    Some(note) => format!("{note} (stale read)"),
                    None => "(stale read)".to_owned(),
                });
            }
            report
        }
        (ClientOp::History { key }, ClientResponse::History(h)) => history(key, &h, hex),
        (ClientOp::Compact { rev }, ClientResponse::Compact(r)) => Report::new(
            json!({ "ok": true, "rev": rev, "compacted_before": r.compacted_before }),
            format!(
                "compacted: versions below revision {} are gone (each key keeps its latest)",
                r.compacted_before
            ),
        ),
        (ClientOp::Status, ClientResponse::Status(s)) => status(&s, entrance),
        (ClientOp::NodeDetail { .. }, ClientResponse::NodeDetail(n)) => node(&n),
        (ClientOp::PendingJoins, ClientResponse::PendingJoins(p)) => pending(&p),
        (op, ClientResponse::Done) => done(op).ok_or(unexpected)?,
        _ => return Err(unexpected),
    };
    Ok(report)
}

fn done(op: &ClientOp) -> Option<Report> {
    let (action, name, human) = match op {
        ClientOp::Approve { name } => ("approve", name.as_str(), format!("approved {name}")),
        ClientOp::Reject { name } => ("reject", name.as_str(), format!("rejected {name}")),
        ClientOp::StopNode {
            target: StopTarget::Node { name } | StopTarget::Member { name, .. },
        } => (
            "stop",
            name.as_str(),
            format!("stopping {name}; it stays a member and rejoins when started again"),
        ),
        ClientOp::StopNode {
            target: StopTarget::All,
        } => {
            return Some(Report::new(
                json!({ "ok": true, "action": "stop", "all": true }),
                "stopping every node, then the entrance",
            ))
        }
        ClientOp::RemoveNode { name } => (
            "remove",
            name.as_str(),
            format!("removed {name} from the configuration; it exits now"),
        ),
        ClientOp::TransferLeader { name } => (
            "transfer",
            name.as_str(),
            format!("leadership handed to {name}"),
        ),
        _ => return None,
    };
    Some(Report::new(
        json!({ "ok": true, "action": action, "name": name }),
        human,
    ))
}

fn history(key: &[u8], h: &HistoryResult, hex: bool) -> Report {
    let versions: Vec<Value> = h
        .versions
        .iter()
        .map(|v| {
            json!({
                "revision": v.revision,
                "value": v.value.as_deref().map(|x| text(x, hex)),
                "deleted": v.deleted,
            })
        })
        .collect();
    let mut rows = vec![vec!["REVISION".to_owned(), "VALUE".to_owned()]];
    for v in &h.versions {
        let shown = match (&v.value, v.deleted) {
            (_, true) => "(deleted)".to_owned(),
            (Some(x), false) => text(x, hex),
            (None, false) => "(no value)".to_owned(),
        };
        rows.push(vec![v.revision.to_string(), shown]);
    }
    let mut human = if h.versions.is_empty() {
        format!("{}: no versions\n", text(key, hex))
    } else {
        table(&rows, &[Align::Right, Align::Left])
    };
    if h.compacted_before > 0 {
        human.push_str(&format!(
            "(versions below revision {} were compacted away)\n",
            h.compacted_before
        ));
    }
    Report::new(
        json!({
            "key": text(key, hex),
            "versions": versions,
            "compacted_before": h.compacted_before,
        }),
        human,
    )
}

fn member_json(m: &MemberStatus) -> Value {
    json!({
        "name": m.name,
        "addr": m.addr,
        "role": m.role.as_str(),
        "voter": m.voter,
        "health": m.health.as_str(),
        "term": m.term,
        "commit_index": m.commit_index,
        "applied_index": m.applied_index,
        "last_contact_ms": m.last_contact_ms,
    })
}

fn pending_json(p: &PendingJoin) -> Value {
    json!({ "name": p.name, "addr": p.addr, "waiting_ms": p.waiting_ms })
}

pub fn status(s: &ClusterStatus, asked: &str) -> Report {
    let entrance = s.entrance.clone().unwrap_or_else(|| asked.to_owned());
    let leader = s.leader.as_ref().map(|p| p.name.clone());
    let json = json!({
        "leader": leader,
        "term": s.term,
        "commit_index": s.commit_index,
        "entrance": entrance,
        "cluster_id": format!("{:016x}", s.cluster_id),
        "members": s.members.iter().map(member_json).collect::<Vec<_>>(),
        "pending": s.pending.iter().map(pending_json).collect::<Vec<_>>(),
    });

    let mut human = format!(
        "leader {}  term {}  commit {}  entrance {}  cluster {:016x}\n",
        leader.as_deref().unwrap_or("none"),
        s.term,
        s.commit_index,
        entrance,
        s.cluster_id
    );
    if s.members.is_empty() {
        human.push_str("no members yet: start a node with myraft-node --entrance ...\n");
    } else {
        use crate::members::{cells, COLUMNS};
        let mut rows = vec![COLUMNS.map(|c| c.header.to_owned()).to_vec()];
        rows.extend(s.members.iter().map(|m| cells(m, s.commit_index).to_vec()));
        let aligns = COLUMNS.map(|c| if c.numeric { Align::Right } else { Align::Left });
        human.push_str(&table(&rows, &aligns));
    }
    if !s.pending.is_empty() {
        human.push_str("\npending joins (myraft approve NAME | myraft reject NAME):\n");
        human.push_str(&pending_table(&s.pending));
    }
    Report::new(json, human)
}

fn pending_table(pending: &[PendingJoin]) -> String {
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "ADDRESS".to_owned(),
        "WAITING".to_owned(),
    ]];
    for p in pending {
        rows.push(vec![
            p.name.clone(),
            p.addr.clone(),
            duration_ms(p.waiting_ms),
        ]);
    }
    table(&rows, &[Align::Left, Align::Left, Align::Right])
}

fn pending(p: &[PendingJoin]) -> Report {
    let human = if p.is_empty() {
        "no node is waiting to join".to_owned()
    } else {
        pending_table(p)
    };
    Report::new(
        json!({ "pending": p.iter().map(pending_json).collect::<Vec<_>>() }),
        human,
    )
}

fn peer_name(p: &Option<PeerRef>) -> Option<String> {
    p.as_ref().map(|p| p.name.clone())
}

fn node(n: &NodeDetail) -> Report {
    let s = &n.stats;
    let json = json!({
        "name": n.name,
        "addr": n.addr,
        "role": n.role.as_str(),
        "voter": n.voter,
        "health": n.health.as_str(),
        "term": s.term,
        "voted_for": peer_name(&n.voted_for),
        "leader": peer_name(&s.leader),
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "last_log_index": s.last_log_index,
        "snapshot_index": s.snapshot_index,
        "log_bytes": s.log_bytes,
        "data_dir_bytes": s.data_dir_bytes,
        "uptime_ms": s.uptime_ms,
        "dropped_datagrams": s.dropped_datagrams,
        "store_bytes": s.store.store_bytes,
        "revision": s.store.revision,
        "compacted_revision": s.store.compacted_revision,
        "keys": s.store.keys,
        "apply_lag": s.store.apply_lag,
        "transfers": s.store.transfers.iter().map(transfer_json).collect::<Vec<Value>>(),
        "id": format!("{:016x}", n.id),
    });
    let none = || "none".to_owned();
    let lines = [
        ("name", n.name.clone()),
        ("address", n.addr.clone()),
        ("role", n.role.as_str().to_owned()),
        ("voter", yes_no(n.voter).to_owned()),
        ("health", n.health.as_str().to_owned()),
        ("term", s.term.to_string()),
        ("voted for", peer_name(&n.voted_for).unwrap_or_else(none)),
        ("leader", peer_name(&s.leader).unwrap_or_else(none)),
        ("commit index", s.commit_index.to_string()),
        ("applied index", s.applied_index.to_string()),
        ("last log index", s.last_log_index.to_string()),
        ("snapshot index", s.snapshot_index.to_string()),
        ("log size", bytes(s.log_bytes)),
        ("data dir size", bytes(s.data_dir_bytes)),
        ("uptime", duration_ms(s.uptime_ms)),
        ("dropped datagrams", s.dropped_datagrams.to_string()),
        ("store size", bytes(s.store.store_bytes)),
        ("keys", s.store.keys.to_string()),
        ("revisions", revision_range(n)),
        ("apply lag", format!("{} entries", s.store.apply_lag)),
    ];
    let transfers: Vec<(&str, String)> = s
        .store
        .transfers
        .iter()
        .map(|t| ("snapshot", transfer_line(t)))
        .collect();
    let lines: Vec<(&str, String)> = lines.into_iter().chain(transfers).collect();
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let human = lines
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect::<String>();
    Report::new(json, human)
}

/// The revisions a node can still read: from the compaction point to the latest.
fn revision_range(n: &NodeDetail) -> String {
    let store = &n.stats.store;
    match store.revision {
        0 => "none yet".to_owned(),
        latest => format!("{}..={latest}", store.compacted_revision.max(1)),
    }
}

fn transfer_rate(t: &Transfer) -> u64 {
    (t.bytes_done.saturating_mul(1000))
        .checked_div(t.elapsed_ms)
        .unwrap_or(0)
}

fn transfer_json(t: &Transfer) -> Value {
    json!({
        "peer": t.peer,
        "direction": if t.sending { "sending" } else { "receiving" },
        "snapshot_index": t.snapshot_index,
        "bytes_done": t.bytes_done,
        "bytes_total": t.bytes_total,
        "bytes_per_s": transfer_rate(t),
        "resumed_after_revision": t.resumed_after_revision,
    })
}

/// "to n3: 12.0 MiB of ~40.0 MiB at 5.1 MiB/s (index 1200)", with ", resumed after
/// revision N" for a stream that continues a partial one.
pub fn transfer_line(t: &Transfer) -> String {
    let way = if t.sending { "to" } else { "from" };
    let total = match t.bytes_total {
        0 => String::new(),
        n => format!(" of ~{}", bytes(n)),
    };
    let resumed = match t.resumed_after_revision {
        0 => String::new(),
        r => format!(", resumed after revision {r}"),
    };
    format!(
        "{way} {}: {}{total} at {}/s (index {}{resumed})",
        t.peer,
        bytes(t.bytes_done),
        bytes(transfer_rate(t)),
        t.snapshot_index
    )
}

/// Operations of a window shown at most; the rest are counted.
const WINDOW_LINES: usize = 10;

/// `myraft verify`'s report: the verdict in one line (`message`), and for a violation the
/// window where it shows, the last operations that took effect and those pending then.
/// `faults` is what a test that drove the run injected (0 for the command itself).
pub fn verify(
    history: &History,
    checked: &Checked,
    budget: std::time::Duration,
    faults: u64,
) -> Report {
    let keys = history.keys();
    let register = keys == [""];
    let on = |key: &str| {
        if register {
            "the register".to_owned()
        } else {
            format!("key {key:?}")
        }
    };
    let elapsed_ms = checked.elapsed.as_millis().try_into().unwrap_or(u64::MAX);
    let mut details = String::new();
    let (linearizable, message) = match &checked.verdict {
        Verdict::Linearizable => {
            let over = if register {
                "one register".to_owned()
            } else {
                format!("{} key(s)", keys.len())
            };
            (
                true,
                format!(
                    "linearizable: {} operations ({} ok, {} failed, {} indeterminate) on {over}, \
                     checked in {}",
                    history.invoked(),
                    history.completed(),
                    history.failed,
                    history.indeterminate(),
                    duration_ms(elapsed_ms)
                ),
            )
        }
        Verdict::NotLinearizable { window } => {
            let blocked = &history.ops[window.blocked];
            let prefix = &window.prefix;
            let shown_from = prefix.len().saturating_sub(WINDOW_LINES);
            details.push_str(&format!(
                "last to take effect ({} in all{}):\n",
                prefix.len(),
                if shown_from > 0 {
                    ", earlier ones left out"
                } else {
                    ""
                }
            ));
            if prefix.is_empty() {
                details.push_str("  (none)\n");
            }
            for &i in &prefix[shown_from..] {
                details.push_str(&format!("  {}\n", history.ops[i]));
            }
            details.push_str("pending then, none of which can take effect next:\n");
            for &i in window.pending.iter().take(WINDOW_LINES) {
                details.push_str(&format!("  {}\n", history.ops[i]));
            }
            if window.pending.len() > WINDOW_LINES {
                details.push_str(&format!(
                    "  and {} more\n",
                    window.pending.len() - WINDOW_LINES
                ));
            }
            (
                false,
                format!(
                    "not linearizable on {}: after {} of its operations took effect it holds {}, \
                     and {blocked} returned before it could take effect",
                    on(&window.key),
                    prefix.len(),
                    crate::verify::shown(&window.state),
                ),
            )
        }
        Verdict::Unknown => {
            let undecided: Vec<String> = checked.undecided.iter().map(|k| on(k)).collect();
            (
                false,
                format!(
                    "unknown: no verdict within the {} budget; undecided: {}; give it longer \
                     with --budget-s",
                    duration_ms(budget.as_millis().try_into().unwrap_or(u64::MAX)),
                    undecided.join(", ")
                ),
            )
        }
    };
    let json = json!({
        "ops": history.invoked(),
        "completed": history.completed(),
        "indeterminate": history.indeterminate(),
        "keys": keys.len(),
        "faults": faults,
        "linearizable": linearizable,
        "elapsed_s": (checked.elapsed.as_secs_f64() * 1e3).round() / 1e3,
        "message": message,
    });
    let mut report = Report::new(json, format!("{message}\n{details}"));
    report.failed = !linearizable;
    report
}

/// What `myraft local` prints once its processes are started.
pub fn local_started(cluster: &LocalCluster) -> Report {
    let entrance = cluster.entrance_addr();
    let dir = cluster.dir().display().to_string();
    let nodes: Vec<Value> = cluster
        .nodes()
        .iter()
        .map(|n| {
            json!({ "name": n.name(), "addr": n.addr().to_string(),
                    "log": n.log().display().to_string() })
        })
        .collect();
    let json = json!({
        "entrance": entrance.to_string(),
        "dir": dir,
        "nodes": nodes,
        "entrance_log": cluster.entrance().log().display().to_string(),
    });
    let mut human = format!(
        "entrance  {entrance}  (log {})\n",
        cluster.entrance().log().display()
    );
    for n in cluster.nodes() {
        human.push_str(&format!(
            "{:<8}  {}  (log {})\n",
            n.name(),
            n.addr(),
            n.log().display()
        ));
    }
    human.push_str(&format!(
        "data dir  {dir}\n\nTry:\n  myraft --entrance {entrance} status\n  \
         myraft --entrance {entrance} put greeting hello\n  \
         myraft-tui --entrance {entrance}\n\nCtrl-C stops the cluster.\n"
    ));
    Report::new(json, human)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

// The console and the command print sizes and durations the same way.
pub use crate::console::format::{bytes, millis as duration_ms};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Columns padded to their widest cell, two spaces apart, no trailing blanks.
pub fn table(rows: &[Vec<String>], align: &[Align]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let width = widths[c];
            let right = align.get(c) == Some(&Align::Right);
            if c > 0 {
                line.push_str("  ");
            }
            let pad = width.saturating_sub(cell.chars().count());
            if right {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes as text: UTF-8 as it is (invalid sequences replaced), or hex with `--hex`.
pub fn text(bytes: &[u8], hex: bool) -> String {
    if hex {
        hex_encode(bytes)
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

pub fn hex_encode(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Hex digits of either case, with or without a leading `0x`.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    hex::decode(text.strip_prefix("0x").unwrap_or(text)).ok()
}
