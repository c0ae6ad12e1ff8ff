#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use super::render::{self, duration_ms, hex_decode, table, Align};
use super::*;
use myraft_wire::api::{
    DeleteResult, GetResult, HistoryResult, KeyVersion, MemberStatus, NodeDetail, PendingJoin,
    PutResult,
};
use myraft_wire::health::{Health, NodeStats, PeerRef, Role, StoreStats, Transfer};
use serde_json::{json, Value};

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("myraft").chain(args.iter().copied())).unwrap()
}

fn op_of(args: &[&str]) -> Result<Option<ClientOp>, CliError> {
    let cli = parse(args);
    build_op(&cli.command, cli.hex)
}

fn fields(v: &Value) -> Vec<&str> {
    let mut f: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    f.sort_unstable();
    f
}

fn has_all(v: &Value, wanted: &[&str]) {
    for w in wanted {
        assert!(v.get(*w).is_some(), "{w} missing in {v}");
    }
}

#[test]
fn global_flags_go_before_or_after_the_command() {
    let a = parse(&["--json", "--entrance", "10.0.0.1:7000", "status"]);
    let b = parse(&["status", "--json", "--entrance", "10.0.0.1:7000"]);
    assert!(a.json && b.json);
    assert_eq!(a.entrance, b.entrance);
    assert_eq!(parse(&["status"]).entrance, "127.0.0.1:7000");
    assert_eq!(parse(&["status"]).timeout_ms, 5000);
}

#[test]
fn every_documented_command_parses() {
    for args in [
        &["put", "k", "v"][..],
        &["put", "k", "-1"],
        &["get", "k", "--rev", "3", "--stale"],
        &["del", "k"],
        &["history", "k"],
        &["compact", "5"],
        &["status"],
        &["node", "n1"],
        &["pending"],
        &["approve", "n4"],
        &["reject", "n4"],
        &["stop", "n2"],
        &["stop", "--all"],
        &["remove", "n2"],
        &["transfer", "n3"],
        &["keygen", "/tmp/x.key"],
        &[
            "local",
            "--nodes",
            "5",
            "--dir",
            "/tmp/d",
            "--base-port",
            "9000",
        ],
        &[
            "bench",
            "--local",
            "3",
            "--clients",
            "4",
            "--ops",
            "10",
            "--value-size",
            "8",
            "--read-ratio",
            "0.9",
            "--keys",
            "7",
        ],
        &["bench", "--duration", "3", "--sequential-keys"],
    ] {
        assert!(
            Cli::try_parse_from(std::iter::once("myraft").chain(args.iter().copied())).is_ok(),
            "{args:?}"
        );
    }
    assert!(Cli::try_parse_from(["myraft", "stop"]).is_err());
    assert!(Cli::try_parse_from(["myraft", "stop", "n1", "--all"]).is_err());
}

#[test]
fn bench_runs_for_a_number_of_operations_or_a_time_not_both() {
    let Command::Bench(args) = parse(&["bench", "--duration", "2.5", "--sequential-keys"]).command
    else {
        panic!("not a bench");
    };
    assert_eq!(args.duration, Some(2.5));
    assert!(args.sequential_keys);
    let Command::Bench(args) = parse(&["bench", "--ops", "7"]).command else {
        panic!("not a bench");
    };
    assert_eq!(
        (args.ops, args.duration, args.sequential_keys),
        (7, None, false)
    );
    let err = Cli::try_parse_from(["myraft", "bench", "--ops", "7", "--duration", "1"])
        .err()
        .unwrap();
    assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    assert!(Cli::try_parse_from(["myraft", "bench", "--duration", "soon"]).is_err());
}

#[test]
fn commands_become_the_right_requests() {
    assert_eq!(
        op_of(&["get", "k", "--rev", "3", "--stale"]).unwrap(),
        Some(ClientOp::Get {
            key: b"k".to_vec(),
            rev: Some(3),
            consistency: Consistency::Stale
        })
    );
    assert_eq!(
        op_of(&["stop", "--all"]).unwrap(),
        Some(ClientOp::StopNode {
            target: StopTarget::All
        })
    );
    assert_eq!(
        op_of(&["--hex", "put", "00ff", "0x6869"]).unwrap(),
        Some(ClientOp::Put {
            key: vec![0, 255],
            value: b"hi".to_vec()
        })
    );
    assert_eq!(op_of(&["keygen", "f"]).unwrap(), None);
}

#[test]
fn bad_input_is_refused_before_anything_is_sent() {
    for args in [
        &["get", ""][..],
        &["put", "", "v"],
        &["get", "k", "--rev", "0"],
        &["compact", "0"],
        &["node", " "],
        &["--hex", "get", "xyz"],
        &["--hex", "get", "abc"],
    ] {
        let err = op_of(args).unwrap_err();
        assert_eq!(err.code, "bad_request", "{args:?}");
        assert!(!err.message.is_empty());
    }
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    assert_eq!(op_of(&["get", &long]).unwrap_err().code, "bad_request");
    let big = "v".repeat(MAX_VALUE_BYTES + 1);
    assert_eq!(op_of(&["put", "k", &big]).unwrap_err().code, "bad_request");
}

#[test]
fn entrance_lists_are_parsed_and_bad_ones_explained() {
    assert_eq!(
        parse_entrances("127.0.0.1:7000, 127.0.0.2:7001").unwrap(),
        vec![
            "127.0.0.1:7000".parse::<SocketAddr>().unwrap(),
            "127.0.0.2:7001".parse().unwrap()
        ]
    );
    assert_eq!(
        parse_entrances("[::1]:7000").unwrap(),
        vec!["[::1]:7000".parse::<SocketAddr>().unwrap()]
    );
    for bad in [
        "",
        ",",
        "nonsense",
        "127.0.0.1",
        "127.0.0.1:0",
        "1.2.3.4:99999",
    ] {
        let err = parse_entrances(bad).unwrap_err();
        assert_eq!(err.code, "bad_request", "{bad}");
        assert!(err.message.contains("--entrance"), "{}", err.message);
    }
    assert_eq!(client_options(0).unwrap_err().code, "bad_request");
}

#[tokio::test]
async fn a_write_of_unknown_outcome_is_a_one_line_indeterminate_error() {
    let client = Client::new(
        vec!["127.0.0.1:7000".parse().unwrap()],
        ClusterKey::lab_default(),
        ClientOptions::default(),
    )
    .unwrap();
    let op = op_of(&["put", "k", "v"]).unwrap().unwrap();
    let err = CliError::request(RequestError::Indeterminate { attempts: 2 }, &op, &client);
    assert_eq!(err.code, "indeterminate");
    assert!(!err.message.contains('\n'), "{}", err.message);
    assert!(
        err.message.contains("may or may not have been applied"),
        "{}",
        err.message
    );
    assert!(err.message.contains("myraft get"), "{}", err.message);
}

#[test]
fn a_missing_key_file_says_how_to_make_one() {
    let err = load_key(Some(std::path::Path::new("/nonexistent/cluster.key"))).unwrap_err();
    assert!(err.message.contains("myraft keygen"), "{}", err.message);
}

fn member(name: &str, role: Role) -> MemberStatus {
    MemberStatus {
        id: 1,
        name: name.to_owned(),
        addr: "127.0.0.1:7001".to_owned(),
        role,
        voter: role != Role::Learner,
        health: Health::Up,
        term: 7,
        commit_index: 120,
        applied_index: 119,
        last_contact_ms: Some(12),
    }
}

fn status() -> ClusterStatus {
    ClusterStatus {
        cluster_id: 0x7f3a,
        leader: Some(PeerRef {
            id: 1,
            name: "n1".to_owned(),
        }),
        term: 7,
        commit_index: 120,
        entrance: None,
        members: vec![
            member("n1", Role::Leader),
            MemberStatus {
                last_contact_ms: None,
                health: Health::Suspect,
                ..member("node-two", Role::Learner)
            },
        ],
        pending: vec![PendingJoin {
            name: "n5".to_owned(),
            addr: "127.0.0.1:7005".to_owned(),
            waiting_ms: 42_000,
        }],
    }
}

use myraft_wire::api::{ClientResponse, ClusterStatus};

fn render(op: ClientOp, response: ClientResponse) -> render::Report {
    render::response(&op, response, false, "127.0.0.1:7000").unwrap()
}

#[test]
fn status_json_has_the_documented_fields() {
    let r = render(ClientOp::Status, ClientResponse::Status(status()));
    has_all(
        &r.json,
        &[
            "leader",
            "term",
            "commit_index",
            "entrance",
            "members",
            "pending",
        ],
    );
    assert_eq!(r.json["leader"], json!("n1"));
    assert_eq!(r.json["entrance"], json!("127.0.0.1:7000"));
    let m = &r.json["members"][1];
    assert_eq!(
        fields(m),
        [
            "addr",
            "applied_index",
            "commit_index",
            "health",
            "last_contact_ms",
            "name",
            "role",
            "term",
            "voter"
        ]
    );
    assert_eq!(m["role"], json!("learner"));
    assert_eq!(m["health"], json!("suspect"));
    assert_eq!(m["voter"], json!(false));
    assert_eq!(m["last_contact_ms"], Value::Null);
    assert_eq!(
        r.json["pending"][0],
        json!({"name": "n5", "addr": "127.0.0.1:7005", "waiting_ms": 42000})
    );

    let mut leaderless = status();
    leaderless.leader = None;
    let r = render(ClientOp::Status, ClientResponse::Status(leaderless));
    assert_eq!(r.json["leader"], Value::Null);
}

#[test]
fn status_text_is_an_aligned_table_under_a_leader_line() {
    let r = render(ClientOp::Status, ClientResponse::Status(status()));
    let lines: Vec<&str> = r.human.lines().collect();
    assert!(
        lines[0].starts_with("leader n1  term 7  commit 120"),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("NAME"));
    for header in [
        "ADDRESS", "ROLE", "VOTER", "HEALTH", "TERM", "COMMIT", "APPLIED",
    ] {
        assert!(lines[1].contains(header));
    }
    assert!(lines[1].ends_with("LAST CONTACT"));
    // Columns line up: each ROLE cell starts where its header does.
    let role_at = lines[1].find("ROLE").unwrap();
    assert_eq!(&lines[2][role_at..role_at + 6], "leader");
    assert_eq!(&lines[3][role_at..role_at + 7], "learner");
    assert!(lines[2].ends_with("12 ms"));
    assert!(r.human.contains("n5"));
    assert!(r.human.contains("42.0 s"));
}

#[test]
fn get_json_for_a_found_and_a_missing_key() {
    let op = ClientOp::Get {
        key: b"k".to_vec(),
        rev: None,
        consistency: Consistency::Linearizable,
    };
    let found = render(
        op.clone(),
        ClientResponse::Get(GetResult {
            found: true,
            value: Some(b"v2".to_vec()),
            revision: 5,
            create_revision: 4,
            version: 2,
        }),
    );
    assert_eq!(
        found.json,
        json!({"key": "k", "found": true, "value": "v2", "revision": 5,
               "create_revision": 4, "version": 2})
    );
    assert_eq!(found.human, "v2");
    let missing = render(
        op,
        ClientResponse::Get(GetResult {
            found: false,
            value: None,
            revision: 0,
            create_revision: 0,
            version: 0,
        }),
    );
    assert_eq!(missing.json["found"], json!(false));
    assert_eq!(missing.json["value"], Value::Null);
    assert!(missing.note.unwrap().contains("not found"));
}

#[test]
fn a_stale_get_says_so_and_a_linearizable_one_keeps_its_fields() {
    let found = || {
        ClientResponse::Get(GetResult {
            found: true,
            value: Some(b"v".to_vec()),
            revision: 5,
            create_revision: 4,
            version: 2,
        })
    };
    let stale = render(op_of(&["get", "k", "--stale"]).unwrap().unwrap(), found());
    assert_eq!(
        stale.json,
        json!({"key": "k", "found": true, "value": "v", "revision": 5,
               "create_revision": 4, "version": 2, "stale": true})
    );
    // The value alone on stdout, so that scripts can use it; the marker goes to stderr.
    assert_eq!(stale.human, "v");
    assert_eq!(stale.note.as_deref(), Some("(stale read)"));

    let missing = render(
        op_of(&["get", "nope", "--stale"]).unwrap().unwrap(),
        ClientResponse::Get(GetResult {
            found: false,
            value: None,
            revision: 0,
            create_revision: 0,
            version: 0,
        }),
    );
    assert_eq!(missing.json["stale"], json!(true));
    assert_eq!(missing.note.as_deref(), Some("nope not found (stale read)"));

    let linearizable = render(op_of(&["get", "k"]).unwrap().unwrap(), found());
    assert_eq!(
        linearizable.json.get("stale"),
        None,
        "{}",
        linearizable.json
    );
    assert_eq!(linearizable.note, None);
}

#[test]
fn binary_values_show_as_hex_when_asked() {
    let op = ClientOp::Get {
        key: vec![0xff],
        rev: None,
        consistency: Consistency::Linearizable,
    };
    let response = ClientResponse::Get(GetResult {
        found: true,
        value: Some(vec![0, 0xfe]),
        revision: 1,
        create_revision: 1,
        version: 1,
    });
    let r = render::response(&op, response.clone(), true, "e").unwrap();
    assert_eq!(r.json["key"], json!("ff"));
    assert_eq!(r.json["value"], json!("00fe"));
    let r = render::response(&op, response, false, "e").unwrap();
    assert_eq!(r.json["value_hex"], json!("00fe"));
}

#[test]
fn put_del_and_history_json() {
    let put = render(
        ClientOp::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        },
        ClientResponse::Put(PutResult { revision: 9 }),
    );
    assert_eq!(put.json, json!({"key": "k", "revision": 9}));
    let del = render(
        ClientOp::Delete { key: b"k".to_vec() },
        ClientResponse::Delete(DeleteResult {
            revision: 10,
            deleted: true,
        }),
    );
    assert_eq!(
        del.json,
        json!({"key": "k", "revision": 10, "deleted": true})
    );
    let history = render(
        ClientOp::History { key: b"k".to_vec() },
        ClientResponse::History(HistoryResult {
            versions: vec![
                KeyVersion {
                    revision: 9,
                    value: Some(b"v".to_vec()),
                    deleted: false,
                },
                KeyVersion {
                    revision: 10,
                    value: None,
                    deleted: true,
                },
            ],
            compacted_before: 3,
        }),
    );
    assert_eq!(
        history.json,
        json!({"key": "k", "compacted_before": 3, "versions": [
            {"revision": 9, "value": "v", "deleted": false},
            {"revision": 10, "value": null, "deleted": true}]})
    );
    assert!(history.human.contains("(deleted)"));
}

#[test]
fn node_json_names_peers_and_has_every_field() {
    let detail = NodeDetail {
        id: 3,
        name: "n3".to_owned(),
        addr: "127.0.0.1:7003".to_owned(),
        role: Role::Follower,
        voter: true,
        health: Health::Down,
        voted_for: Some(PeerRef {
            id: 1,
            name: "n1".to_owned(),
        }),
        stats: NodeStats {
            term: 4,
            leader: None,
            commit_index: 10,
            applied_index: 9,
            last_log_index: 11,
            snapshot_index: 5,
            log_bytes: 2048,
            data_dir_bytes: 4096,
            uptime_ms: 90_000,
            dropped_datagrams: 2,
            store: StoreStats {
                store_bytes: 1 << 20,
                revision: 40,
                compacted_revision: 12,
                keys: 30,
                apply_lag: 3,
                transfers: vec![Transfer {
                    peer: "n1".to_owned(),
                    sending: false,
                    snapshot_index: 8,
                    bytes_done: 3 << 20,
                    bytes_total: 12 << 20,
                    elapsed_ms: 2000,
                    resumed_after_revision: 21,
                }],
            },
        },
    };
    let r = render(
        ClientOp::NodeDetail {
            name: "n3".to_owned(),
        },
        ClientResponse::NodeDetail(detail),
    );
    has_all(
        &r.json,
        &[
            "name",
            "addr",
            "role",
            "voter",
            "health",
            "term",
            "voted_for",
            "leader",
            "commit_index",
            "applied_index",
            "last_log_index",
            "snapshot_index",
            "log_bytes",
            "data_dir_bytes",
            "uptime_ms",
            "dropped_datagrams",
            "store_bytes",
            "revision",
            "compacted_revision",
            "keys",
            "apply_lag",
            "transfers",
        ],
    );
    assert_eq!(r.json["voted_for"], json!("n1"));
    assert_eq!(
        r.json["transfers"][0],
        json!({"peer": "n1", "direction": "receiving", "snapshot_index": 8,
               "bytes_done": 3 << 20, "bytes_total": 12 << 20, "bytes_per_s": 3 << 19,
               "resumed_after_revision": 21})
    );
    assert!(
        r.human.contains("revisions          12..=40"),
        "{}",
        r.human
    );
    assert!(
        r.human.contains(
            "from n1: 3.0 MiB of ~12.0 MiB at 1.5 MiB/s (index 8, resumed after revision 21)"
        ),
        "{}",
        r.human
    );
    assert_eq!(r.json["leader"], Value::Null);
    assert_eq!(r.json["health"], json!("down"));
    assert!(r.human.contains("2.0 KiB"));
    assert!(r.human.contains("1 min 30 s"));
}

#[test]
fn admin_acks_and_pending() {
    let r = render(
        ClientOp::Approve {
            name: "n4".to_owned(),
        },
        ClientResponse::Done,
    );
    assert_eq!(
        r.json,
        json!({"ok": true, "action": "approve", "name": "n4"})
    );
    let r = render(
        ClientOp::StopNode {
            target: StopTarget::All,
        },
        ClientResponse::Done,
    );
    assert_eq!(r.json["ok"], json!(true));
    let r = render(ClientOp::PendingJoins, ClientResponse::PendingJoins(vec![]));
    assert_eq!(r.json, json!({"pending": []}));
    // A reply that does not fit the request is reported, not mis-rendered.
    assert_eq!(
        render::response(&ClientOp::Status, ClientResponse::Done, false, "e"),
        Err("Done")
    );
}

#[test]
fn helpers() {
    assert_eq!(duration_ms(12), "12 ms");
    assert_eq!(duration_ms(1_200), "1.2 s");
    assert_eq!(duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3 d 4 h");
    assert_eq!(hex_decode("0aFF"), Some(vec![10, 255]));
    assert_eq!(hex_decode("é0"), None);
    let t = table(
        &[
            vec!["A".into(), "NUM".into()],
            vec!["long".into(), "5".into()],
        ],
        &[Align::Left, Align::Right],
    );
    assert_eq!(t, "A     NUM\nlong    5\n");
}
