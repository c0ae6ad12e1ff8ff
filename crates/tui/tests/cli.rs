//! The `myraft` binary against a scripted entrance on loopback: exit codes, the JSON on
//! stdout and the reason on stderr, as scripts see them.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use myraft_wire::api::{
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, ClusterStatus, GetResult,
    MemberStatus, PutResult,
};
use myraft_wire::health::{Health, PeerRef, Role};
use myraft_wire::{decode, encode, Body, ClusterKey, Envelope, MAX_DATAGRAM};
use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio::net::UdpSocket;
use tokio::process::Command;

const CLUSTER: u64 = 0x5eed;

/// Answers like an entrance that is also the leader of a one-node cluster holding `k = v`.
async fn fake_entrance(key: ClusterKey) -> SocketAddr {
    serve(key, |op, _, _, me| Some(answer(op, me))).await
}

/// A fake entrance on 127.0.0.1 that answers each request with what `respond` returns for
/// it (op, client id, seq, its own address); `None` leaves the request unanswered.
async fn serve(
    key: ClusterKey,
    mut respond: impl FnMut(ClientOp, u64, u64, SocketAddr) -> Option<Result<ClientResponse, ClientError>>
        + Send
        + 'static,
) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let (len, from) = socket.recv_from(&mut buf).await.unwrap();
            let Ok(env) = decode(&buf[..len], &key, Some(CLUSTER)) else {
                continue;
            };
            let Body::ClientRequest(ClientRequest { client_id, seq, op }) = env.body else {
                continue;
            };
            let Some(result) = respond(op, client_id, seq, addr) else {
                continue;
            };
            let reply = Body::ClientReply(ClientReply {
                client_id,
                seq,
                result,
            });
            let bytes = encode(&Envelope::new(CLUSTER, 1, seq, reply), &key).unwrap();
            socket.send_to(&bytes, from).await.unwrap();
        }
    });
    addr
}

fn answer(op: ClientOp, me: SocketAddr) -> Result<ClientResponse, ClientError> {
    match op {
        ClientOp::Status => Ok(ClientResponse::Status(ClusterStatus {
            cluster_id: CLUSTER,
            leader: Some(PeerRef {
                id: 1,
                name: "n1".to_owned(),
            }),
            term: 2,
            commit_index: 5,
            entrance: Some(me.to_string()),
            members: vec![MemberStatus {
                id: 1,
                name: "n1".to_owned(),
                addr: me.to_string(),
                role: Role::Leader,
                voter: true,
                health: Health::Up,
                term: 2,
                commit_index: 5,
                applied_index: 5,
                last_contact_ms: Some(3),
            }],
            pending: vec![],
        })),
        ClientOp::Put { .. } => Ok(ClientResponse::Put(PutResult { revision: 6 })),
        ClientOp::Get { key, .. } if key == b"k" => Ok(ClientResponse::Get(GetResult {
            found: true,
            value: Some(b"v".to_vec()),
            revision: 3,
            create_revision: 3,
            version: 1,
        })),
        ClientOp::Get { .. } => Ok(ClientResponse::Get(GetResult {
            found: false,
            value: None,
            revision: 0,
            create_revision: 0,
            version: 0,
        })),
        ClientOp::NodeDetail { name } => Err(ClientError::NotFound {
            what: format!("node {name}"),
        }),
        _ => Ok(ClientResponse::Done),
    }
}

/// The `(client_id, seq)` of every write request a fake entrance received, in order.
type Writes = std::sync::Arc<std::sync::Mutex<Vec<(u64, u64)>>>;

/// Answers `Status` like [`fake_entrance`]. The first copy of each write is lost, and every
/// later copy is answered `SessionExpired`: a leader applied the write, the reply was lost,
/// and the cluster forgot the client's session before the retry came.
async fn forgetful_entrance(key: ClusterKey) -> (SocketAddr, Writes) {
    let writes = Writes::default();
    let seen = std::sync::Arc::clone(&writes);
    let addr = serve(key, move |op, client_id, seq, me| {
        if !op.is_write() {
            return Some(answer(op, me));
        }
        let mut seen = seen.lock().unwrap();
        let again = seen.contains(&(client_id, seq));
        seen.push((client_id, seq));
        again.then_some(Err(ClientError::SessionExpired))
    })
    .await;
    (addr, writes)
}

struct Outcome {
    code: i32,
    json: Value,
    stderr: String,
}

async fn myraft(entrance: &str, args: &[&str]) -> Outcome {
    myraft_within(entrance, 3000, args).await
}

async fn myraft_within(entrance: &str, timeout_ms: u64, args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_myraft"))
        .args(["--entrance", entrance, "--json", "--timeout-ms"])
        .arg(timeout_ms.to_string())
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "exactly one JSON object on stdout: {stdout:?}"
    );
    Outcome {
        code: out.status.code().unwrap(),
        json: serde_json::from_str(&stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[tokio::test]
async fn data_commands_print_their_json_and_exit_0() {
    let entrance = fake_entrance(ClusterKey::lab_default()).await.to_string();
    let put = myraft(&entrance, &["put", "k", "v"]).await;
    assert_eq!(put.code, 0, "{}", put.stderr);
    assert_eq!(put.json, json!({"key": "k", "revision": 6}));

    let get = myraft(&entrance, &["get", "k"]).await;
    assert_eq!(get.code, 0);
    assert_eq!(get.json["value"], json!("v"));

    let missing = myraft(&entrance, &["get", "nope"]).await;
    assert_eq!(missing.code, 0, "a missing key is not an error");
    assert_eq!(missing.json["found"], json!(false));

    let status = myraft(&entrance, &["status"]).await;
    assert_eq!(status.code, 0);
    assert_eq!(status.json["leader"], json!("n1"));
    assert_eq!(status.json["members"][0]["role"], json!("leader"));

    let approve = myraft(&entrance, &["approve", "n2"]).await;
    assert_eq!(approve.json["ok"], json!(true));
}

#[tokio::test]
async fn failures_exit_1_with_a_json_error_and_a_reason_on_stderr() {
    let entrance = fake_entrance(ClusterKey::lab_default()).await.to_string();
    let unknown = myraft(&entrance, &["node", "no-such-node"]).await;
    assert_eq!(unknown.code, 1);
    assert_eq!(unknown.json["error"], json!("not_found"));
    assert_eq!(
        unknown.stderr.trim().lines().count(),
        1,
        "{}",
        unknown.stderr
    );
    assert!(
        unknown.stderr.contains("myraft status"),
        "{}",
        unknown.stderr
    );

    let empty = myraft(&entrance, &["put", "", "v"]).await;
    assert_eq!(empty.code, 1);
    assert_eq!(empty.json["error"], json!("bad_request"));

    let bad_flag = myraft(&entrance, &["get", "k", "--rev", "x"]).await;
    assert_eq!(bad_flag.code, 1);
    assert_eq!(bad_flag.json["error"], json!("bad_request"));

    let bad_addr = myraft("not-an-address", &["status"]).await;
    assert_eq!(bad_addr.code, 1);
    assert!(bad_addr.stderr.contains("--entrance"));
}

#[tokio::test]
async fn a_retried_write_whose_session_expired_exits_1_as_indeterminate() {
    let (entrance, writes) = forgetful_entrance(ClusterKey::lab_default()).await;
    let out = myraft_within(&entrance.to_string(), 60_000, &["put", "k", "v"]).await;
    let sessions: std::collections::HashSet<(u64, u64)> =
        writes.lock().unwrap().iter().copied().collect();
    assert_eq!(
        sessions.len(),
        1,
        "the write went out under more than one (client id, seq), so it could be applied \
         more than once: {sessions:?}"
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.json["error"], json!("indeterminate"), "{}", out.json);
    let message = out.json["message"].as_str().unwrap();
    assert!(
        message.contains("may or may not have been applied"),
        "{message}"
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains(message), "{}", out.stderr);
}

#[tokio::test]
async fn a_silent_entrance_is_a_timeout_that_says_what_to_check() {
    // Bound and never read, like an entrance host whose process is gone.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_myraft"))
        .args([
            "--entrance",
            &addr,
            "--json",
            "--timeout-ms",
            "300",
            "status",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"], json!("timeout"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.contains("myraft-entrance running"), "{stderr}");
}

#[tokio::test]
async fn a_cluster_with_another_key_does_not_answer() {
    let entrance = fake_entrance(ClusterKey::from_bytes([3; ClusterKey::LEN]))
        .await
        .to_string();
    // The fake drops requests it cannot authenticate, as a real server does.
    let out = myraft_within(&entrance, 300, &["status"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(out.json["error"], json!("timeout"));
}

#[tokio::test]
async fn bench_reports_every_documented_field() {
    let entrance = fake_entrance(ClusterKey::lab_default()).await.to_string();
    let out = myraft(
        &entrance,
        &[
            "bench",
            "--clients",
            "3",
            "--ops",
            "30",
            "--value-size",
            "16",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for field in [
        "clients",
        "ops",
        "value_size",
        "read_ratio",
        "elapsed_s",
        "ops_per_s",
        "write_p50_ms",
        "write_p99_ms",
        "write_p999_ms",
        "read_p50_ms",
        "read_p99_ms",
        "errors",
        "leader",
    ] {
        assert!(
            out.json.get(field).is_some(),
            "{field} missing: {}",
            out.json
        );
    }
    assert_eq!(out.json["errors"], json!(0));
    assert_eq!(out.json["leader"], json!("n1"));
    assert_eq!(out.json["clients"], json!(3));
}

#[tokio::test]
async fn a_timed_bench_fills_the_read_keys_and_counts_what_completed() {
    let entrance = fake_entrance(ClusterKey::lab_default()).await.to_string();
    let out = myraft(
        &entrance,
        &[
            "bench",
            "--clients",
            "2",
            "--duration",
            "0.2",
            "--keys",
            "5",
            "--sequential-keys",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("filling 5 key(s)"), "{}", out.stderr);
    let completed = out.json["writes"].as_u64().unwrap()
        + out.json["reads"].as_u64().unwrap()
        + out.json["errors"].as_u64().unwrap();
    assert_eq!(out.json["ops"], json!(completed));
    assert_eq!(out.json["duration_s"], json!(0.2));
    assert_eq!(out.json["sequential_keys"], json!(true));
}

#[tokio::test]
async fn keygen_writes_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.key");
    let path = file.to_str().unwrap();
    let first = myraft("127.0.0.1:7000", &["keygen", path]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(ClusterKey::from_file(&file).unwrap().warning.is_none());
    let again = myraft("127.0.0.1:7000", &["keygen", path]).await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists"));
}

#[tokio::test]
async fn local_without_the_server_binaries_says_how_to_build_them() {
    // Under `cargo test` the servers may or may not have been built next to `myraft`; only
    // when they are missing is there something to check.
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_myraft"))
        .parent()
        .unwrap()
        .to_owned();
    if bin_dir.join("myraft-node").exists() && bin_dir.join("myraft-entrance").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = myraft(
        "127.0.0.1:7000",
        &[
            "local",
            "--dir",
            dir.path().to_str().unwrap(),
            "--base-port",
            "1",
        ],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cargo build"), "{}", out.stderr);
}

/// `myraft verify` against a store that acknowledges every put and then never has the
/// value: the history it records is not linearizable, it says so, exits 1 and keeps the
/// history where the output says.
#[tokio::test]
async fn verify_catches_a_cluster_that_loses_acknowledged_writes() {
    let entrance = fake_entrance(ClusterKey::lab_default()).await.to_string();
    let out = myraft(
        &entrance,
        &["verify", "--duration", "1", "--clients", "2", "--keys", "2"],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.json);
    assert_eq!(out.json["linearizable"], json!(false), "{}", out.json);
    assert_eq!(out.json["faults"], json!(0));
    let message = out.json["message"].as_str().unwrap();
    assert!(message.starts_with("not linearizable on key"), "{message}");
    // With --json the output names the file (without, a line on stderr does).
    let file = out.json["history_file"].as_str().unwrap().to_owned();
    let again = myraft(&entrance, &["verify", "--history", &file]).await;
    std::fs::remove_file(&file).unwrap();
    assert_eq!(again.code, 1, "{}", again.json);
    assert_eq!(again.json["ops"], out.json["ops"]);
}

#[tokio::test]
async fn verify_refuses_a_workload_it_cannot_run() {
    for args in [
        ["--clients", "0"],
        ["--keys", "0"],
        ["--duration", "0"],
        ["--duration", "-1"],
    ] {
        let out = myraft("127.0.0.1:9", &[&["verify"][..], &args[..]].concat()).await;
        assert_eq!(out.code, 1, "{args:?}: {}", out.json);
        assert_eq!(
            out.json["error"],
            json!("bad_request"),
            "{args:?}: {}",
            out.json
        );
    }
}
