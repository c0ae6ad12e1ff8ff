//! Real servers as child processes on 127.0.0.1, for the tests that drive them as an
//! operator's script would (`cluster.rs`, `faults.rs`).
//!
//! `myraft-node` and `myraft-entrance` belong to other packages of the workspace, so cargo
//! does not build them for this one: they are taken from next to the `myraft` binary.
//! `cargo test --workspace` builds them before any test runs; `cargo test -p myraft-tui`
//! alone does not, and then these tests fail saying so rather than pass without testing.
//!
//! Every server is SIGKILLed when its guard drops, so a failing assertion leaves nothing
//! running; the servers' logs are kept and their directory printed when a test fails.

#![allow(dead_code)] // Each test file uses its own part of these helpers.
#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any one awaited change may take. Generous: the machine may be busy with other
/// builds, and a slow pass is better than a flaky one.
pub const POLL_LIMIT: Duration = Duration::from_secs(20);
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// Faster than the defaults so that elections fit a test, still ten heartbeats per election
/// timeout so that a busy machine does not depose healthy leaders.
pub const NODE_TIMING: [&str; 4] = ["--heartbeat-ms", "50", "--election-timeout-ms", "500"];
/// Down after a second of silence: quick enough for the test, slow enough not to flap.
pub const ENTRANCE_TIMING: [&str; 4] = ["--probe-interval-ms", "100", "--down-after-ms", "1000"];

/// A server binary of another package, from the directory cargo put `myraft` in.
pub fn server_bin(program: &str) -> PathBuf {
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
pub fn poll<T>(what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
    poll_within(POLL_LIMIT, what, probe)
}

/// [`poll`] for at most `limit`.
pub fn poll_within<T>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= limit => {
                panic!("{what}: not within {limit:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(POLL_EVERY),
        }
    }
}

/// One run of `myraft --json`.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub json: Value,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

pub fn myraft(entrance: &str, args: &[&str]) -> Outcome {
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
pub struct Proc {
    program: PathBuf,
    args: Vec<String>,
    /// stdout and stderr, appended to across restarts.
    output: PathBuf,
    child: Child,
    exit: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(program: PathBuf, args: Vec<String>, output: PathBuf) -> Self {
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
    pub fn respawn(&self) -> Self {
        Self::spawn(self.program.clone(), self.args.clone(), self.output.clone())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().unwrap();
        }
        self.exit
    }

    pub fn wait_exit(&mut self, what: &str) -> ExitStatus {
        poll(what, || self.exited().ok_or_else(|| "still running".into()))
    }

    /// SIGKILL: no goodbye, no flush, as in a power cut.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            self.child.kill().unwrap();
            self.exit = Some(self.child.wait().unwrap());
        }
    }

    pub fn output(&self) -> String {
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
pub struct Cluster {
    pub entrance_addr: String,
    pub entrance: Proc,
    pub nodes: BTreeMap<String, Proc>,
    pub ports: BTreeSet<u16>,
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts the entrance and waits until it answers `status`.
    pub fn start() -> Self {
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

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.as_ref().unwrap().path().join(name)
    }

    pub fn cli(&self, args: &[&str]) -> Outcome {
        myraft(&self.entrance_addr, args)
    }

    /// Starts `myraft-node --name NAME` on a new port, with its data in `data_dir` (under
    /// the cluster's directory), and keeps it as `label`.
    pub fn start_node_as(&mut self, label: &str, name: &str, data_dir: &str) {
        let listen = self.new_addr();
        self.start_node_at(label, name, data_dir, &listen, None);
    }

    /// `127.0.0.1:PORT` with a port no server of this cluster has.
    pub fn new_addr(&mut self) -> String {
        format!("127.0.0.1:{}", free_port(&mut self.ports))
    }

    /// Starts `myraft-node --name NAME --listen LISTEN [--advertise ADDR]`, with its data in
    /// `data_dir` (under the cluster's directory), and keeps it as `label`.
    pub fn start_node_at(
        &mut self,
        label: &str,
        name: &str,
        data_dir: &str,
        listen: &str,
        advertise: Option<&str>,
    ) {
        let mut args = vec![
            "--name".to_owned(),
            name.to_owned(),
            "--listen".to_owned(),
            listen.to_owned(),
            "--entrance".to_owned(),
            self.entrance_addr.clone(),
            "--data-dir".to_owned(),
            self.path(data_dir).display().to_string(),
        ];
        if let Some(addr) = advertise {
            args.extend(["--advertise".to_owned(), addr.to_owned()]);
        }
        args.extend(NODE_TIMING.map(String::from));
        let output = self.path(&format!("{label}.out"));
        let node = Proc::spawn(server_bin("myraft-node"), args, output);
        self.nodes.insert(label.to_owned(), node);
    }

    /// The cluster's directory: data dirs, NAME.out, and whatever a test keeps there.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    pub fn start_node(&mut self, name: &str) {
        self.start_node_as(name, name, name);
    }

    pub fn node(&mut self, name: &str) -> &mut Proc {
        self.nodes
            .get_mut(name)
            .unwrap_or_else(|| panic!("no process {name} was started"))
    }

    pub fn restart_node(&mut self, name: &str) {
        let again = self.node(name).respawn();
        self.nodes.insert(name.to_owned(), again);
    }

    pub fn restart_entrance(&mut self) {
        self.entrance = self.entrance.respawn();
    }

    /// `myraft status`, or why it failed.
    pub fn status(&self) -> Result<Status, String> {
        let out = self.cli(&["status"]);
        if out.ok() {
            Ok(Status(out.json))
        } else {
            Err(format!("exit {}: {}", out.code, out.stderr.trim()))
        }
    }

    /// Polls `status` until `want` holds of it.
    pub fn status_until(&self, what: &str, mut want: impl FnMut(&Status) -> bool) -> Status {
        poll(what, || match self.status() {
            Ok(s) if want(&s) => Ok(s),
            Ok(s) => Err(s.0.to_string()),
            Err(e) => Err(e),
        })
    }

    pub fn pending_names(&self) -> Result<Vec<String>, String> {
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

    pub fn approve(&self, name: &str) {
        let out = self.cli(&["approve", name]);
        assert_eq!(out.code, 0, "approve {name}: {}", out.stderr);
        assert_eq!(
            out.json,
            json!({"ok": true, "action": "approve", "name": name})
        );
    }

    /// Starts the nodes `names`, approves each once it waits, and waits until they are all
    /// voters that are up, with a leader.
    pub fn admit(&mut self, names: &[&str]) -> Status {
        for name in names {
            self.start_node(name);
        }
        self.approve_when_pending(names);
        self.status_until("the new nodes voters that are up, and a leader", |s| {
            names.iter().all(|n| s.names().contains(n)) && s.all_up_voters() && s.leader().is_some()
        })
    }

    /// Waits until every one of `names` is pending, then approves them.
    pub fn approve_when_pending(&self, names: &[&str]) {
        poll(&format!("{names:?} listed by `myraft pending`"), || {
            let pending = self.pending_names()?;
            if names.iter().all(|n| pending.iter().any(|p| p == n)) {
                Ok(())
            } else {
                Err(format!("{pending:?}"))
            }
        });
        for name in names {
            self.approve(name);
        }
    }

    pub fn put(&self, key: &str, value: &str) -> u64 {
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
pub fn free_port(taken: &mut BTreeSet<u16>) -> u16 {
    loop {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        if taken.insert(port) {
            return port;
        }
    }
}

/// The JSON of `myraft status`.
pub struct Status(pub Value);

impl Status {
    pub fn leader(&self) -> Option<&str> {
        self.0["leader"].as_str()
    }

    pub fn term(&self) -> u64 {
        self.0["term"].as_u64().unwrap()
    }

    pub fn members(&self) -> &[Value] {
        self.0["members"].as_array().unwrap()
    }

    pub fn names(&self) -> Vec<&str> {
        self.members()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect()
    }

    pub fn member(&self, name: &str) -> Option<&Value> {
        self.members().iter().find(|m| m["name"] == json!(name))
    }

    pub fn all_up_voters(&self) -> bool {
        self.members()
            .iter()
            .all(|m| m["voter"] == json!(true) && m["health"] == json!("up"))
    }

    /// Members other than the leader that are up.
    pub fn up_followers(&self) -> Vec<String> {
        self.members()
            .iter()
            .filter(|m| m["health"] == json!("up") && m["name"].as_str() != self.leader())
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    }
}
