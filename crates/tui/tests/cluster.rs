//! The real servers with the real `myraft`: a `myraft-entrance` and `myraft-node`s started as
//! processes on 127.0.0.1, driven the way an operator's script drives them, and judged only
//! by the `--json` output and exit codes.
//!
//! `myraft-node` and `myraft-entrance` belong to other packages of the workspace, so cargo
//! does not build them for this one: they are taken from next to the `myraft` binary.
//! `cargo test --workspace` builds them before any test runs; `cargo test -p myraft-tui`
//! alone does not, and then these tests fail saying so rather than pass without testing.
//!
//! Every server is SIGKILLed when its guard drops, so a failing assertion leaves nothing
//! running; the servers' logs are kept and their directory printed when a test fails.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use myraft_wire::api::{ClientOp, ClientResponse, Consistency};
use myraft_wire::client::{Client, ClientOptions};
use myraft_wire::ClusterKey;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any one awaited change may take. Generous: the machine may be busy with other
/// builds, and a slow pass is better than a flaky one.
const POLL_LIMIT: Duration = Duration::from_secs(20);
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Faster than the defaults so that elections fit a test, still ten heartbeats per election
/// timeout so that a busy machine does not depose healthy leaders.
const NODE_TIMING: [&str; 4] = ["--heartbeat-ms", "50", "--election-timeout-ms", "500"];
/// Down after a second of silence: quick enough for the test, slow enough not to flap.
const ENTRANCE_TIMING: [&str; 4] = ["--probe-interval-ms", "100", "--down-after-ms", "1000"];

/// A server binary of another package, from the directory cargo put `myraft` in.
fn server_bin(program: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_myraft")).parent().unwrap();
    let path = dir
        .join(program)
        .with_extension(std::env::consts::EXE_EXTENSION);
    assert!(
        path.is_file(),
        "{program} is not in {}: these tests run the real servers, which belong to other \
         packages. Build them first with `cargo build --workspace`, or run \
         `cargo test --workspace`",
        dir.display()
    );
    path
}

/// Asks `probe` again and again until it says yes, for at most [`POLL_LIMIT`]. The servers
/// run on their own; their answers are the only thing to wait on. `Err` carries what was
/// seen last, for the failure message.
fn poll<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= POLL_LIMIT => {
                panic!("{what}: not within {POLL_LIMIT:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(POLL_EVERY),
        }
    }
}

/// One run of `myraft --json`.
#[derive(Debug)]
struct Outcome {
    code: i32,
    json: Value,
    stderr: String,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.code == 0
    }
}

fn myraft(entrance: &str, args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_myraft"))
        .args(["--entrance", entrance, "--json", "--timeout-ms", "2000"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "myraft {args:?}: exactly one JSON object on stdout, got {stdout:?} (stderr {stderr:?})"
    );
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("myraft {args:?}: stdout is not JSON ({e}): {stdout:?} (stderr {stderr:?})")
    });
    Outcome {
        // Only a signal leaves no code; the CLI is never sent one here.
        code: out.status.code().unwrap(),
        json,
        stderr,
    }
}

/// A server process, SIGKILLed when dropped.
struct Proc {
    program: PathBuf,
    args: Vec<String>,
    /// stdout and stderr, appended to across restarts.
    output: PathBuf,
    child: Child,
    exit: Option<ExitStatus>,
}

impl Proc {
    fn spawn(program: PathBuf, args: Vec<String>, output: PathBuf) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&output)
            .unwrap();
        let child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self {
            program,
            args,
            output,
            child,
            exit: None,
        }
    }

    /// The same program with the same flags, on the same data dir and address.
    fn respawn(&self) -> Self {
        Self::spawn(self.program.clone(), self.args.clone(), self.output.clone())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().unwrap();
        }
        self.exit
    }

    fn wait_exit(&mut self, what: &str) -> ExitStatus {
        poll(what, || self.exited().ok_or_else(|| "still running".into()))
    }

    /// SIGKILL: no goodbye, no flush, as in a power cut.
    fn kill(&mut self) {
        if self.exited().is_none() {
            self.child.kill().unwrap();
            self.exit = Some(self.child.wait().unwrap());
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An entrance without `--auto-approve` and the nodes started so far. Declared so that the
/// processes are killed before their directory goes.
struct Cluster {
    entrance_addr: String,
    entrance: Proc,
    nodes: BTreeMap<String, Proc>,
    ports: BTreeSet<u16>,
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts the entrance and waits until it answers `status`.
    fn start() -> Self {
        let entrance_bin = server_bin("myraft-entrance");
        // Checked now so that a missing node binary is reported before anything runs.
        server_bin("myraft-node");
        let dir = tempfile::Builder::new()
            .prefix("myraft-cluster-test-")
            .tempdir()
            .unwrap();
        let mut ports = BTreeSet::new();
        let entrance_addr = format!("127.0.0.1:{}", free_port(&mut ports));
        let mut args = vec![
            "--listen".to_owned(),
            entrance_addr.clone(),
            "--data-dir".to_owned(),
            dir.path().join("entrance").display().to_string(),
        ];
        args.extend(ENTRANCE_TIMING.map(String::from));
        let entrance = Proc::spawn(entrance_bin, args, dir.path().join("entrance.out"));
        let cluster = Self {
            entrance_addr,
            entrance,
            nodes: BTreeMap::new(),
            ports,
            dir: Some(dir),
        };
        poll("the entrance answers `myraft status`", || {
            let out = cluster.cli(&["status"]);
            if out.ok() {
                Ok(())
            } else {
                Err(format!("{out:?}"))
            }
        });
        cluster
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.as_ref().unwrap().path().join(name)
    }

    fn cli(&self, args: &[&str]) -> Outcome {
        myraft(&self.entrance_addr, args)
    }

    /// Starts `myraft-node --name NAME` on a new port, with its data in `data_dir` (under
    /// the cluster's directory), and keeps it as `label`.
    fn start_node_as(&mut self, label: &str, name: &str, data_dir: &str) {
        let listen = format!("127.0.0.1:{}", free_port(&mut self.ports));
        let mut args = vec![
            "--name".to_owned(),
            name.to_owned(),
            "--listen".to_owned(),
            listen,
            "--entrance".to_owned(),
            self.entrance_addr.clone(),
            "--data-dir".to_owned(),
            self.path(data_dir).display().to_string(),
        ];
        args.extend(NODE_TIMING.map(String::from));
        let output = self.path(&format!("{label}.out"));
        let node = Proc::spawn(server_bin("myraft-node"), args, output);
        self.nodes.insert(label.to_owned(), node);
    }

    fn start_node(&mut self, name: &str) {
        self.start_node_as(name, name, name);
    }

    fn node(&mut self, name: &str) -> &mut Proc {
        self.nodes
            .get_mut(name)
            .unwrap_or_else(|| panic!("no process {name} was started"))
    }

    fn restart_node(&mut self, name: &str) {
        let again = self.node(name).respawn();
        self.nodes.insert(name.to_owned(), again);
    }

    fn restart_entrance(&mut self) {
        self.entrance = self.entrance.respawn();
    }

    /// `myraft status`, or why it failed.
    fn status(&self) -> Result<Status, String> {
        let out = self.cli(&["status"]);
        if out.ok() {
            Ok(Status(out.json))
        } else {
            Err(format!("exit {}: {}", out.code, out.stderr.trim()))
        }
    }

    /// Polls `status` until `want` holds of it.
    fn status_until(&self, what: &str, mut want: impl FnMut(&Status) -> bool) -> Status {
        poll(what, || match self.status() {
            Ok(s) if want(&s) => Ok(s),
            Ok(s) => Err(s.0.to_string()),
            Err(e) => Err(e),
        })
    }

    fn pending_names(&self) -> Result<Vec<String>, String> {
        let out = self.cli(&["pending"]);
        if !out.ok() {
            return Err(format!("exit {}: {}", out.code, out.stderr.trim()));
        }
        Ok(out.json["pending"]
            .as_array()
            .ok_or_else(|| out.json.to_string())?
            .iter()
            .filter_map(|p| p["name"].as_str().map(String::from))
            .collect())
    }

    fn approve(&self, name: &str) {
        let out = self.cli(&["approve", name]);
        assert_eq!(out.code, 0, "approve {name}: {}", out.stderr);
        assert_eq!(
            out.json,
            json!({"ok": true, "action": "approve", "name": name})
        );
    }

    fn put(&self, key: &str, value: &str) -> u64 {
        let out = self.cli(&["put", key, value]);
        assert_eq!(out.code, 0, "put {key}: {}", out.stderr);
        assert_eq!(out.json["key"], json!(key), "{}", out.json);
        out.json["revision"].as_u64().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "server data and logs kept in {} (NAME.out: stdout/stderr, NAME/node.log, \
                     entrance/entrance.log)",
                    kept.display()
                );
            }
        }
    }
}

/// A UDP port that was free a moment ago and is not handed out yet by this cluster. The
/// server that gets it binds it a moment later; nothing else on a test machine is likely to
/// take it in between.
fn free_port(taken: &mut BTreeSet<u16>) -> u16 {
    loop {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        if taken.insert(port) {
            return port;
        }
    }
}

/// The JSON of `myraft status`.
struct Status(Value);

impl Status {
    fn leader(&self) -> Option<&str> {
        self.0["leader"].as_str()
    }

    fn term(&self) -> u64 {
        self.0["term"].as_u64().unwrap()
    }

    fn members(&self) -> &[Value] {
        self.0["members"].as_array().unwrap()
    }

    fn names(&self) -> Vec<&str> {
        self.members()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect()
    }

    fn member(&self, name: &str) -> Option<&Value> {
        self.members().iter().find(|m| m["name"] == json!(name))
    }

    fn all_up_voters(&self) -> bool {
        self.members()
            .iter()
            .all(|m| m["voter"] == json!(true) && m["health"] == json!("up"))
    }

    /// Members other than the leader that are up.
    fn up_followers(&self) -> Vec<String> {
        self.members()
            .iter()
            .filter(|m| m["health"] == json!("up") && m["name"].as_str() != self.leader())
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[test]
fn a_cluster_of_real_processes_through_joins_failures_and_admin_commands() {
    let mut c = Cluster::start();

    // 1. Three nodes, each admitted by an operator.
    for name in ["n1", "n2", "n3"] {
        c.start_node(name);
    }
    poll("n1, n2 and n3 listed by `myraft pending`", || {
        let names = c.pending_names()?;
        if ["n1", "n2", "n3"]
            .iter()
            .all(|n| names.iter().any(|p| p == n))
        {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    });
    let n1 = c.node("n1");
    assert!(
        n1.exited().is_none(),
        "a node waiting for approval keeps waiting"
    );
    let said = n1.output();
    assert!(
        said.contains("myraft approve n1"),
        "a waiting node says what it waits for: {said:?}"
    );
    for name in ["n1", "n2", "n3"] {
        c.approve(name);
    }
    let three = c.status_until("three voters that are up, and a leader", |s| {
        s.names() == ["n1", "n2", "n3"] && s.all_up_voters() && s.leader().is_some()
    });
    assert!(three.term() >= 1, "a leader has a term: {}", three.0);
    assert_eq!(
        three.0["pending"],
        json!([]),
        "approved joins are no longer pending"
    );
    let revision = c.put("k", "v1");
    assert!(revision >= 1);

    // 2. A second n2, with its own address and data dir, is turned away.
    c.start_node_as("n2-again", "n2", "n2-again");
    let impostor = c.node("n2-again");
    let exit = impostor.wait_exit("a second n2 exits");
    let said = impostor.output();
    assert!(
        !exit.success(),
        "a refused node exits non-zero ({exit}): {said}"
    );
    // Its startup line, then the reason: one line an operator reads, no backtrace.
    let last = said.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("myraft-node: ") && last.contains("name n2 is taken"),
        "the refused node's last word says the name is taken: {said:?}"
    );
    // Between them, since this cluster runs without a key file, the plain warning that it
    // is unauthenticated.
    assert_eq!(said.lines().count(), 3, "{said:?}");
    assert!(
        said.lines().nth(1).is_some_and(
            |l| l.starts_with("myraft-node: warning: ") && l.contains("unauthenticated")
        ),
        "{said:?}"
    );
    let after = c.status().unwrap();
    assert_eq!(
        after.names(),
        ["n1", "n2", "n3"],
        "the refused node changed nothing"
    );

    // 3. A fourth node joins as a learner; the leader promotes it once it caught up.
    c.start_node("n4");
    poll("n4 listed by `myraft pending`", || {
        let names = c.pending_names()?;
        names
            .iter()
            .any(|n| n == "n4")
            .then_some(())
            .ok_or_else(|| format!("{names:?}"))
    });
    c.approve("n4");
    let mut seen_as_learner = false;
    let four = c.status_until("n4 a voter", |s| {
        let Some(n4) = s.member("n4") else {
            return false;
        };
        if n4["voter"] == json!(false) {
            assert_eq!(
                n4["role"],
                json!("learner"),
                "a non-voter is a learner: {n4}"
            );
            seen_as_learner = true;
        }
        n4["voter"] == json!(true) && n4["health"] == json!("up")
    });
    assert_ne!(four.member("n4").unwrap()["role"], json!("learner"));
    assert_eq!(four.names(), ["n1", "n2", "n3", "n4"]);
    // Promotion may come before any status shows the learner; only note it.
    eprintln!("n4 seen as a learner before its promotion: {seen_as_learner}");

    // 4. The leader dies without a word; the others elect a new one and keep serving.
    let old = c.status_until("all four up with a leader", |s| {
        s.all_up_voters() && s.leader().is_some()
    });
    let dead = old.leader().unwrap().to_owned();
    c.node(&dead).kill();
    let new = c.status_until(&format!("a new leader after {dead} was killed"), |s| {
        s.leader().is_some_and(|l| l != dead) && s.term() > old.term()
    });
    assert!(new.member(&dead).is_some(), "a dead node stays a member");
    let after_failover = c.put("k", "v2");
    assert!(after_failover > revision, "{after_failover} > {revision}");
    // Restarted on its data dir, it rejoins without asking anyone.
    c.restart_node(&dead);
    c.status_until(&format!("{dead} back up after its restart"), |s| {
        s.all_up_voters() && s.names().len() == 4 && s.leader().is_some()
    });
    assert!(c.pending_names().unwrap().is_empty(), "no approval needed");

    // 6. The entrance dies; a client that knows the leader does not need it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let entrance: std::net::SocketAddr = c.entrance_addr.parse().unwrap();
    let client = rt.block_on(async {
        let client = Client::new(
            vec![entrance],
            ClusterKey::lab_default(),
            ClientOptions::with_timeout(Duration::from_secs(5)),
        )
        .unwrap();
        client.request(ClientOp::Status).await.unwrap();
        client
    });
    assert!(client.cached_leader().is_some(), "status taught the leader");
    let before = c.status().unwrap();
    c.entrance.kill();
    let put = rt.block_on(client.request(ClientOp::Put {
        key: b"k".to_vec(),
        value: b"while the entrance is down".to_vec(),
    }));
    assert!(
        matches!(put, Ok(ClientResponse::Put(_))),
        "a put straight to the leader needs no entrance: {put:?}"
    );
    let get = rt.block_on(client.request(ClientOp::Get {
        key: b"k".to_vec(),
        rev: None,
        consistency: Consistency::Linearizable,
    }));
    match get {
        Ok(ClientResponse::Get(g)) => {
            assert_eq!(g.value.as_deref(), Some(&b"while the entrance is down"[..]))
        }
        other => panic!("a read straight to the leader needs no entrance: {other:?}"),
    }
    c.restart_entrance();
    let back = c.status_until("the restarted entrance sees all four and a leader", |s| {
        s.names() == before.names() && s.leader().is_some() && s.all_up_voters()
    });
    assert_eq!(
        back.0["pending"],
        json!([]),
        "nothing waits after a restart"
    );
    drop(client);
    drop(rt);

    // 5. Transfer, stop and remove.
    let now = c.status().unwrap();
    let followers = now.up_followers();
    assert_eq!(followers.len(), 3, "{}", now.0);
    let (heir, stopped, removed) = (&followers[0], &followers[1], &followers[2]);
    let out = c.cli(&["transfer", heir]);
    assert_eq!(out.code, 0, "transfer {heir}: {}", out.stderr);
    c.status_until(&format!("{heir} leads after `transfer {heir}`"), |s| {
        s.leader() == Some(heir.as_str())
    });

    let out = c.cli(&["stop", stopped]);
    assert_eq!(out.code, 0, "stop {stopped}: {}", out.stderr);
    assert_eq!(
        out.json,
        json!({"ok": true, "action": "stop", "name": stopped})
    );
    let exit = c
        .node(stopped)
        .wait_exit(&format!("{stopped} exits after `stop`"));
    assert!(exit.success(), "a stopped node exits 0, not {exit}");
    let s = c.status_until(&format!("{stopped} down"), |s| {
        s.member(stopped)
            .is_some_and(|m| m["health"] == json!("down"))
    });
    assert_eq!(s.names().len(), 4, "a stopped node stays a member: {}", s.0);

    let removed_pid = c.node(removed).pid();
    let out = c.cli(&["remove", removed]);
    assert_eq!(out.code, 0, "remove {removed}: {}", out.stderr);
    assert_eq!(
        out.json,
        json!({"ok": true, "action": "remove", "name": removed})
    );
    let exit = c.node(removed).wait_exit(&format!(
        "{removed} (pid {removed_pid}) exits after `remove`"
    ));
    assert!(exit.success(), "a removed node exits 0, not {exit}");
    let s = c.status_until(&format!("{removed} gone from the members"), |s| {
        s.member(removed).is_none()
    });
    assert_eq!(s.names().len(), 3, "{}", s.0);
    assert!(s.member(stopped).is_some(), "{}", s.0);
    // Two of the three voters left are up: still a quorum.
    c.put("k", "v3");
}

#[test]
fn garbage_from_the_cli_user_gets_exit_1_and_a_reason() {
    let c = Cluster::start();
    let refused = |out: &Outcome, code: &str, mentions: &str| {
        assert_eq!(out.code, 1, "{out:?}");
        assert_eq!(out.json["error"], json!(code), "{out:?}");
        assert!(out.json["message"].is_string(), "{out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {:?}", out.stderr);
        assert!(
            lines[0].contains(mentions),
            "{:?} names {mentions:?}",
            lines[0]
        );
    };

    refused(
        &myraft("127.0.0.1:99999", &["status"]),
        "bad_request",
        "--entrance",
    );
    refused(
        &myraft("not an address", &["status"]),
        "bad_request",
        "--entrance",
    );
    refused(&c.cli(&["node", "nosuch"]), "not_found", "nosuch");
    refused(&c.cli(&["put", "", "v"]), "bad_request", "KEY is empty");
}
