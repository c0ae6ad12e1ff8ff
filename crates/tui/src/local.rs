//! A whole cluster on this machine: one `myraft-entrance` on the base port and N
//! `myraft-node`s on the ports after it, as child processes. Used by `myraft local`,
//! `myraft bench --local N` and `myraft-tui --local N`.
//!
//! The entrance runs without `--auto-approve`, as on a real lab: a background task approves
//! the joins of exactly the nodes started here (by name and address) until all of them are
//! members, and any other node that asks to join waits for an operator. That is what lets
//! the console's approve and reject be tried on a local cluster.
//!
//! The binaries are found next to the running program, so a `cargo build` of the
//! workspace is all it takes. Each child writes its output to `DIR/<name>.log`; its data
//! lives in `DIR/<name>/`, so starting again on the same `--dir` restarts the same cluster.
//!
//! [`LocalCluster::stop`] ends the nodes first and the entrance last, each with SIGTERM and,
//! after [`STOP_GRACE`], SIGKILL. A cluster dropped without `stop` kills its children, so
//! none outlives its owner.

use myraft_wire::api::ClientOp;
use myraft_wire::api::ClientResponse;
use myraft_wire::client::{Client, ClientOptions};
use myraft_wire::ClusterKey;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub const DEFAULT_NODES: usize = 3;
pub const DEFAULT_BASE_PORT: u16 = 7000;
/// How long a child may take to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// More nodes than this on one machine is a mistake, not a cluster.
pub const MAX_NODES: usize = 99;
/// How often the approver looks for the joins of the cluster's own nodes.
const APPROVE_EVERY: Duration = Duration::from_millis(100);
/// How long the approver waits, once one of its nodes asks to join, for the others to ask
/// too. Approved together, the first founds the cluster and the others are added right
/// after it, so the cluster is complete about when its leader shows (as it was with
/// `--auto-approve`) rather than one join retry later.
const GATHER_FOR: Duration = Duration::from_secs(3);
/// The approver gives up after this; a node still waiting then is left to the operator
/// (`myraft approve NAME`), which the warning says.
pub const APPROVE_FOR: Duration = Duration::from_secs(120);

pub const ENTRANCE_BIN: &str = "myraft-entrance";
pub const NODE_BIN: &str = "myraft-node";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalOptions {
    pub nodes: usize,
    /// Where data dirs and logs go; a new temporary directory (kept afterwards) if `None`.
    pub dir: Option<PathBuf>,
    /// The entrance listens here, node `nI` on `base_port + I`.
    pub base_port: u16,
    /// Passed to every child as `--key-file`; the lab default key if `None`.
    pub key_file: Option<PathBuf>,
    /// Where `myraft-entrance` and `myraft-node` are; next to this program if `None`.
    pub bin_dir: Option<PathBuf>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            nodes: DEFAULT_NODES,
            dir: None,
            base_port: DEFAULT_BASE_PORT,
            key_file: None,
            bin_dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "{program} not found in {}: build the workspace first with `cargo build --release` \
         (it must sit next to this program)",
        .dir.display()
    )]
    MissingBinary { program: &'static str, dir: PathBuf },
    #[error("cannot tell where this program is, to find {ENTRANCE_BIN} and {NODE_BIN}: {0}")]
    CurrentExe(#[source] io::Error),
    #[error("--nodes must be between 1 and {MAX_NODES}, got {0}")]
    BadNodeCount(usize),
    #[error(
        "--base-port {base} leaves no room for {nodes} nodes after it (ports end at 65535); \
         choose a lower --base-port"
    )]
    PortRange { base: u16, nodes: usize },
    #[error(
        "UDP port {port} on 127.0.0.1 is already in use (another cluster?); stop it or choose \
         another --base-port"
    )]
    PortBusy { port: u16 },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start {}: {source}", .program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LocalError + 'a {
    move |source| LocalError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// One child process of the cluster.
#[derive(Debug)]
pub struct LocalProcess {
    name: String,
    addr: SocketAddr,
    log: PathBuf,
    child: Child,
    exit: Option<ExitStatus>,
}

impl LocalProcess {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// How the process ended, if it did (as last seen by [`LocalCluster::poll_exits`]).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    fn terminate(&mut self) {
        if self.exit.is_some() {
            return;
        }
        // `id()` is `None` once the child was reaped; until then the pid is still ours.
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            if kill(Pid::from_raw(pid), Signal::SIGTERM).is_ok() {
                return;
            }
        }
        let _ = self.child.start_kill();
    }

    async fn wait_until(&mut self, deadline: tokio::time::Instant) {
        if self.exit.is_some() {
            return;
        }
        match tokio::time::timeout_at(deadline, self.child.wait()).await {
            Ok(Ok(status)) => self.exit = Some(status),
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(name = %self.name, "did not exit after SIGTERM; killing it");
                let _ = self.child.start_kill();
                if let Ok(status) = self.child.wait().await {
                    self.exit = Some(status);
                }
            }
        }
    }
}

/// A running local cluster; see the module documentation.
#[derive(Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    key_file: Option<PathBuf>,
    entrance: LocalProcess,
    nodes: Vec<LocalProcess>,
    /// Approves the joins of `nodes`; ends by itself once they are members.
    approver: Approver,
}

/// The approval task, aborted when the cluster stops or is dropped so that it never
/// outlives the processes it talks to.
#[derive(Debug)]
struct Approver(tokio::task::JoinHandle<()>);

impl Drop for Approver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LocalCluster {
    /// Starts the entrance and the nodes and returns at once, without waiting for a leader
    /// ([`LocalCluster::wait_ready`] does that). Must be called inside a tokio runtime.
    pub fn start(opts: &LocalOptions) -> Result<Self, LocalError> {
        if opts.nodes == 0 || opts.nodes > MAX_NODES {
            return Err(LocalError::BadNodeCount(opts.nodes));
        }
        let last_port = usize::from(opts.base_port) + opts.nodes;
        if last_port > usize::from(u16::MAX) || opts.base_port == 0 {
            return Err(LocalError::PortRange {
                base: opts.base_port,
                nodes: opts.nodes,
            });
        }
        let bin_dir = match &opts.bin_dir {
            Some(dir) => dir.clone(),
            None => default_bin_dir()?,
        };
        let entrance_bin = find_binary(&bin_dir, ENTRANCE_BIN)?;
        let node_bin = find_binary(&bin_dir, NODE_BIN)?;
        let ports: Vec<u16> = (0..=opts.nodes)
            .map(|i| opts.base_port + i as u16)
            .collect();
        for &port in &ports {
            check_port_free(port)?;
        }

        let dir = match &opts.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
                dir.clone()
            }
            None => tempfile::Builder::new()
                .prefix("myraft-local-")
                .tempdir()
                .map_err(io_err(
                    "create a temporary directory in",
                    &std::env::temp_dir(),
                ))?
                .keep(),
        };
        // Children get absolute paths, whatever their working directory.
        let dir = std::path::absolute(&dir).map_err(io_err("resolve", &dir))?;
        let key_file = match &opts.key_file {
            Some(f) => Some(std::path::absolute(f).map_err(io_err("resolve", f))?),
            None => None,
        };

        let entrance_addr = loopback(opts.base_port);
        let mut entrance_args = vec![
            "--listen".to_owned(),
            entrance_addr.to_string(),
            "--data-dir".to_owned(),
            dir.join("entrance").display().to_string(),
        ];
        push_key_file(&mut entrance_args, key_file.as_deref());
        let entrance = spawn(
            &entrance_bin,
            "entrance",
            entrance_addr,
            &entrance_args,
            &dir,
        )?;

        let mut nodes = Vec::with_capacity(opts.nodes);
        for (i, &port) in ports.iter().enumerate().skip(1) {
            let name = format!("n{i}");
            let addr = loopback(port);
            let mut args = vec![
                "--name".to_owned(),
                name.clone(),
                "--listen".to_owned(),
                addr.to_string(),
                "--entrance".to_owned(),
                entrance_addr.to_string(),
                "--data-dir".to_owned(),
                dir.join(&name).display().to_string(),
            ];
            push_key_file(&mut args, key_file.as_deref());
            // On failure the children started so far are dropped, which kills them.
            nodes.push(spawn(&node_bin, &name, addr, &args, &dir)?);
        }
        let own: Vec<(String, String)> = nodes
            .iter()
            .map(|n| (n.name.clone(), n.addr.to_string()))
            .collect();
        let approver = Approver(tokio::spawn(approve_own_nodes(
            entrance_addr,
            key_file.clone(),
            own,
        )));
        Ok(Self {
            dir,
            key_file,
            entrance,
            nodes,
            approver,
        })
    }

    pub fn entrance_addr(&self) -> SocketAddr {
        self.entrance.addr
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn entrance(&self) -> &LocalProcess {
        &self.entrance
    }

    pub fn nodes(&self) -> &[LocalProcess] {
        &self.nodes
    }

    /// The key the cluster was started with.
    pub fn key(&self) -> Result<ClusterKey, myraft_wire::key::KeyError> {
        ClusterKey::load(self.key_file.as_deref(), "myraft")
    }

    /// Children that exited since the last call, with how they ended. A node stopped with
    /// `myraft stop` shows up here too.
    pub fn poll_exits(&mut self) -> Vec<(String, ExitStatus, PathBuf)> {
        let mut exited = Vec::new();
        for p in std::iter::once(&mut self.entrance).chain(self.nodes.iter_mut()) {
            if p.exit.is_some() {
                continue;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                p.exit = Some(status);
                exited.push((p.name.clone(), status, p.log.clone()));
            }
        }
        exited
    }

    /// Waits until the entrance reports a leader and every node as a member, or `timeout`
    /// passes. Returns the leader's name.
    pub async fn wait_ready(&self, key: ClusterKey, timeout: Duration) -> Option<String> {
        wait_for_leader(self.entrance_addr(), key, self.nodes.len(), timeout).await
    }

    /// Ends every child: SIGTERM to all nodes, up to [`STOP_GRACE`] for them to exit, then
    /// SIGKILL; then the same for the entrance. Returns once none is left, with how each
    /// ended (`None` only if even waiting for it failed).
    pub async fn stop(mut self) -> Vec<(String, Option<ExitStatus>)> {
        self.approver.0.abort();
        terminate(&mut self.nodes).await;
        terminate(std::slice::from_mut(&mut self.entrance)).await;
        self.nodes
            .iter()
            .chain(std::iter::once(&self.entrance))
            .map(|p| (p.name.clone(), p.exit))
            .collect()
    }
}

/// Waits until the entrance at `entrance` reports a leader and at least `members` members,
/// or `timeout` passes. Returns the leader's name. Borrows nothing, so it can run while the
/// cluster is watched.
pub async fn wait_for_leader(
    entrance: SocketAddr,
    key: ClusterKey,
    members: usize,
    timeout: Duration,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let opts = ClientOptions::with_timeout(Duration::from_millis(500));
    let client = Client::new(vec![entrance], key, opts).ok()?;
    while Instant::now() < deadline {
        if let Ok(ClientResponse::Status(status)) = client.request(ClientOp::Status).await {
            if let Some(leader) = status.leader {
                if status.members.len() >= members {
                    return Some(leader.name);
                }
            }
        }
        // Polling processes we do not control; there is nothing to wait on but time.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Approves the joins of `own` (name, address) at the entrance until every one of them is a
/// member, or [`APPROVE_FOR`] passes. A pending join of any other name or address is left
/// to the operator. Failures are expected while the entrance starts, so they are logged
/// quietly, and loudly only when giving up.
async fn approve_own_nodes(
    entrance: SocketAddr,
    key_file: Option<PathBuf>,
    own: Vec<(String, String)>,
) {
    let key = match ClusterKey::load(key_file.as_deref(), "myraft") {
        Ok(key) => key,
        Err(e) => {
            tracing::warn!(
                "cannot approve the local nodes: {e}; approve them with `myraft approve NAME`"
            );
            return;
        }
    };
    let opts = ClientOptions::with_timeout(Duration::from_secs(1));
    let client = match Client::new(vec![entrance], key, opts) {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(
                "cannot approve the local nodes: {e}; approve them with `myraft approve NAME`"
            );
            return;
        }
    };
    let deadline = Instant::now() + APPROVE_FOR;
    let mut first_waiting: Option<Instant> = None;
    let mut last_error = String::new();
    loop {
        let gathered = first_waiting.is_some_and(|t| t.elapsed() >= GATHER_FOR);
        match approve_round(&client, &own, gathered).await {
            Ok(Round::AllMembers) => {
                tracing::info!("every local node is a member");
                return;
            }
            Ok(Round::Gathering) => {
                first_waiting.get_or_insert_with(Instant::now);
            }
            Ok(Round::Waiting) => {}
            Err(e) => {
                tracing::debug!("approving the local nodes: {e}");
                last_error = e;
            }
        }
        if Instant::now() >= deadline {
            let names: Vec<&str> = own.iter().map(|(name, _)| name.as_str()).collect();
            tracing::warn!(
                "gave up approving the local nodes ({}) after {} s (last error: {}); \
                 `myraft pending` lists the ones still waiting, `myraft approve NAME` admits one",
                names.join(", "),
                APPROVE_FOR.as_secs(),
                if last_error.is_empty() {
                    "none"
                } else {
                    &last_error
                },
            );
            return;
        }
        // Polling processes we do not control; there is nothing to wait on but time.
        tokio::time::sleep(APPROVE_EVERY).await;
    }
}

/// What one look at the entrance found.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    AllMembers,
    /// Some of the nodes wait, others have not asked yet; none was approved.
    Gathering,
    /// Whatever of ours waited was approved, or nothing of ours waits.
    Waiting,
}

/// One look at the entrance. Approves the waiting nodes of `own`, in their order, once all
/// of `own` are waiting or members, or at once if `gathered` (the others had their time).
async fn approve_round(
    client: &Client,
    own: &[(String, String)],
    gathered: bool,
) -> Result<Round, String> {
    let members: HashSet<String> = match client.request(ClientOp::Status).await {
        Ok(ClientResponse::Status(status)) => status.members.into_iter().map(|m| m.name).collect(),
        Ok(other) => return Err(format!("unexpected answer to status: {other:?}")),
        Err(e) => return Err(format!("status: {e}")),
    };
    if own.iter().all(|(name, _)| members.contains(name)) {
        return Ok(Round::AllMembers);
    }
    let pending = match client.request(ClientOp::PendingJoins).await {
        Ok(ClientResponse::PendingJoins(pending)) => pending,
        Ok(other) => return Err(format!("unexpected answer to pending: {other:?}")),
        Err(e) => return Err(format!("pending: {e}")),
    };
    // Name and address both: a stranger that took a local node's name still waits.
    let waiting: Vec<&str> = own
        .iter()
        .filter(|(name, addr)| pending.iter().any(|p| p.name == *name && p.addr == *addr))
        .map(|(name, _)| name.as_str())
        .collect();
    if waiting.is_empty() {
        return Ok(Round::Waiting);
    }
    let everyone_asked = own
        .iter()
        .all(|(name, _)| members.contains(name) || waiting.contains(&name.as_str()));
    if !everyone_asked && !gathered {
        return Ok(Round::Gathering);
    }
    for name in waiting {
        let op = ClientOp::Approve {
            name: name.to_owned(),
        };
        match client.request(op).await {
            Ok(_) => tracing::info!(%name, "approved the join of local node {name}"),
            Err(e) => return Err(format!("approve {name}: {e}")),
        }
    }
    Ok(Round::Waiting)
}

async fn terminate(processes: &mut [LocalProcess]) {
    for p in processes.iter_mut() {
        p.terminate();
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for p in processes.iter_mut() {
        p.wait_until(deadline).await;
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

fn push_key_file(args: &mut Vec<String>, key_file: Option<&Path>) {
    if let Some(f) = key_file {
        args.push("--key-file".to_owned());
        args.push(f.display().to_string());
    }
}

/// The directory of the running program. Under `cargo test` that is `target/<profile>/deps`,
/// whose parent holds the binaries.
fn default_bin_dir() -> Result<PathBuf, LocalError> {
    let exe = std::env::current_exe().map_err(LocalError::CurrentExe)?;
    let dir = exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if dir.file_name().is_some_and(|n| n == "deps") && !dir.join(ENTRANCE_BIN).exists() {
        if let Some(parent) = dir.parent() {
            return Ok(parent.to_path_buf());
        }
    }
    Ok(dir)
}

fn find_binary(dir: &Path, program: &'static str) -> Result<PathBuf, LocalError> {
    let path = dir
        .join(program)
        .with_extension(std::env::consts::EXE_EXTENSION);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LocalError::MissingBinary {
            program,
            dir: dir.to_owned(),
        })
    }
}

fn check_port_free(port: u16) -> Result<(), LocalError> {
    match std::net::UdpSocket::bind(loopback(port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(LocalError::PortBusy { port }),
        Err(source) => Err(LocalError::Io {
            action: "bind a UDP socket on",
            path: PathBuf::from(loopback(port).to_string()),
            source,
        }),
    }
}

fn spawn(
    program: &Path,
    name: &str,
    addr: SocketAddr,
    args: &[String],
    dir: &Path,
) -> Result<LocalProcess, LocalError> {
    let data_dir = dir.join(name);
    // Created here so that a server that expects its data dir to exist finds it; an empty
    // one means "new" to every server.
    std::fs::create_dir_all(&data_dir).map_err(io_err("create", &data_dir))?;
    let log = dir.join(format!("{name}.log"));
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(io_err("open the log file", &log))?;
    let err: File = out.try_clone().map_err(io_err("open the log file", &log))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LocalError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    Ok(LocalProcess {
        name: name.to_owned(),
        addr,
        log,
        child,
        exit: None,
    })
}

/// A free run of `count` UDP ports on 127.0.0.1 starting somewhere in the high range, for
/// clusters nobody needs to find by port (`bench --local`, tests).
pub fn free_base_port(count: usize) -> Option<u16> {
    for _ in 0..50 {
        let base: u16 = rand::random_range(20_000..60_000);
        let all_free = (0..count).all(|i| {
            u16::try_from(usize::from(base) + i)
                .ok()
                .is_some_and(|p| std::net::UdpSocket::bind(loopback(p)).is_ok())
        });
        if all_free {
            return Some(base);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_say_how_to_build_them() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LocalOptions {
            bin_dir: Some(dir.path().to_owned()),
            dir: Some(dir.path().join("data")),
            ..LocalOptions::default()
        };
        let err = LocalCluster::start(&opts).unwrap_err();
        assert!(matches!(err, LocalError::MissingBinary { .. }), "{err:?}");
        assert!(err.to_string().contains("cargo build --release"), "{err}");
    }

    #[test]
    fn node_count_and_port_range_are_checked() {
        let zero = LocalOptions {
            nodes: 0,
            ..LocalOptions::default()
        };
        assert!(matches!(
            LocalCluster::start(&zero),
            Err(LocalError::BadNodeCount(0))
        ));
        let high = LocalOptions {
            base_port: 65_534,
            ..LocalOptions::default()
        };
        assert!(matches!(
            LocalCluster::start(&high),
            Err(LocalError::PortRange { .. })
        ));
    }

    #[test]
    fn a_taken_port_is_reported_before_anything_starts() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        assert!(matches!(
            check_port_free(port),
            Err(LocalError::PortBusy { port: p }) if p == port
        ));
    }

    /// Stand-ins for the real binaries: shell scripts that record their arguments and
    /// wait for a signal, so start-up and shutdown are tested without the servers.
    #[cfg(unix)]
    fn fake_binaries(dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        for program in [ENTRANCE_BIN, NODE_BIN] {
            let path = dir.join(program);
            std::fs::write(
                &path,
                "#!/bin/sh\ntrap 'echo bye; exit 0' TERM\necho \"started $0 $*\"\n\
                 while :; do sleep 1 & wait $!; done\n",
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    /// Waits for a child to have written `text` to its log. The child runs on its own, so
    /// there is nothing to wait on but the file.
    async fn wait_for_line(log: &Path, text: &str) {
        for _ in 0..500 {
            if std::fs::read_to_string(log).is_ok_and(|s| s.contains(text)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} never said {text:?}", log.display());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn starts_every_child_with_the_documented_flags_and_stops_them() {
        let bins = tempfile::tempdir().unwrap();
        fake_binaries(bins.path());
        let data = tempfile::tempdir().unwrap();
        let base_port = free_base_port(3).unwrap();
        let opts = LocalOptions {
            nodes: 2,
            dir: Some(data.path().to_owned()),
            base_port,
            key_file: None,
            bin_dir: Some(bins.path().to_owned()),
        };
        let mut cluster = LocalCluster::start(&opts).unwrap();
        assert_eq!(cluster.entrance_addr(), loopback(base_port));
        let names: Vec<&str> = cluster.nodes().iter().map(LocalProcess::name).collect();
        assert_eq!(names, ["n1", "n2"]);
        assert_eq!(cluster.nodes()[1].addr(), loopback(base_port + 2));
        assert!(cluster.poll_exits().is_empty());
        // The trap must be in place before SIGTERM means anything to a shell script.
        for name in ["entrance", "n1", "n2"] {
            wait_for_line(&data.path().join(format!("{name}.log")), "started").await;
        }
        let ended = cluster.stop().await;
        let order: Vec<&str> = ended.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(order, ["n1", "n2", "entrance"]);
        for (name, status) in &ended {
            assert!(status.is_some_and(|s| s.success()), "{name}: {status:?}");
        }

        let entrance_log = std::fs::read_to_string(data.path().join("entrance.log")).unwrap();
        let expected = format!(
            "--listen 127.0.0.1:{base_port} --data-dir {}",
            data.path().join("entrance").display()
        );
        assert!(entrance_log.contains(&expected), "{entrance_log}");
        // The cluster approves its own nodes; anyone else waits for an operator.
        assert!(!entrance_log.contains("--auto-approve"), "{entrance_log}");
        assert!(entrance_log.contains("bye"), "SIGTERM reached the entrance");
        let n2_log = std::fs::read_to_string(data.path().join("n2.log")).unwrap();
        let expected = format!(
            "--name n2 --listen 127.0.0.1:{} --entrance 127.0.0.1:{base_port} --data-dir {}",
            base_port + 2,
            data.path().join("n2").display()
        );
        assert!(n2_log.contains(&expected), "{n2_log}");
        assert!(n2_log.contains("bye"), "SIGTERM reached n2");
    }
}
