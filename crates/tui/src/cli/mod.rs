//! The scriptable `myraft` command.
//!
//! Flags are parsed in [`Cli`]; [`run`] checks the user's input, sends one request through
//! the shared [`Client`], and prints the answer: one JSON object on stdout with `--json`
//! (the fields are fixed by DESIGN.md), readable text otherwise. Every failure exits 1 with
//! a one-line reason on stderr that says what to do, and with `--json` an
//! `{"error": CODE, "message": ...}` object on stdout.
//!
//! - [`render`]: responses to JSON and to text, as pure functions.
//! - [`bench`]: `myraft bench`.
//! - `verify` runs [`crate::verify::live`]'s workload or reads a history file, and checks
//!   it with [`crate::verify`]; only its report is here.
//! - `local` lives in [`crate::local`], shared with the console.

pub mod bench;
pub mod render;

use crate::local::{LocalCluster, LocalError, LocalOptions, DEFAULT_BASE_PORT, DEFAULT_NODES};
use clap::{Args, Parser, Subcommand};
use myraft_wire::api::{ClientError, ClientOp, Consistency, StopTarget};
use myraft_wire::client::{Client, ClientOptions, RequestError, Target};
use myraft_wire::ClusterKey;
use render::Report;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

// The nodes' own limits: refusing a key or value here says why sooner.
pub use myraft_wire::api::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

#[derive(Debug, Parser)]
#[command(
    name = "myraft",
    version,
    about = "Scriptable client of a MyRaft cluster: read and write keys, inspect and manage \
             nodes, run a local cluster or a benchmark, check a recorded history.",
    after_help = "Examples:\n  myraft local                      # a 3-node cluster on 127.0.0.1:7000..7003\n  \
                  myraft put greeting hello\n  myraft get greeting\n  \
                  myraft --json status\n  myraft --entrance 10.0.0.5:7000,10.0.0.6:7000 status"
)]
pub struct Cli {
    /// Entrance address(es), comma-separated; the next one is tried when one does not answer.
    #[arg(
        long,
        global = true,
        value_name = "ADDR[,ADDR]",
        default_value = "127.0.0.1:7000"
    )]
    pub entrance: String,
    /// Cluster key file (see `myraft keygen`); without it the public lab default key is used.
    #[arg(long, global = true, value_name = "F")]
    pub key_file: Option<PathBuf>,
    /// Print exactly one JSON object on stdout per command.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a request after this many milliseconds, retries included.
    #[arg(long, global = true, value_name = "N", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Keys and values on the command line and in the output are hex, for binary data.
    #[arg(long, global = true)]
    pub hex: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write VALUE under KEY; prints the new revision.
    Put {
        key: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Read KEY (linearizable unless --stale). A missing key is not an error: found is false.
    Get {
        key: String,
        /// Read the key as it was at this revision.
        #[arg(long, value_name = "N")]
        rev: Option<u64>,
        /// Let any node answer from what it has applied: faster, possibly behind.
        #[arg(long)]
        stale: bool,
    },
    /// Delete KEY (writes a tombstone; history keeps the old versions).
    Del { key: String },
    /// List the retained versions of KEY, oldest first.
    History { key: String },
    /// Drop every version older than REV, except each key's latest.
    Compact { rev: u64 },
    /// Leader, term and every member's health and progress, as the entrance sees them.
    Status,
    /// Everything known about one node.
    Node { name: String },
    /// Nodes waiting for `approve` or `reject`.
    Pending,
    /// Let a pending node join the cluster.
    Approve { name: String },
    /// Refuse a pending node.
    Reject { name: String },
    /// End a node's process (it stays a member), or with --all every node and the entrance.
    Stop {
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Stop every node, then the entrance.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// Take a node out of the configuration; it exits afterwards.
    Remove { name: String },
    /// Hand leadership to NAME.
    Transfer { name: String },
    /// Write a new random cluster key to FILE (mode 0600); never overwrites.
    Keygen { file: PathBuf },
    /// Run an entrance and N nodes on this machine until Ctrl-C.
    Local(LocalArgs),
    /// Measure throughput and latency with concurrent clients.
    Bench(bench::BenchArgs),
    /// Run a register workload against the cluster and check what the clients saw for
    /// linearizability, or check a recorded history (--history); exits 1 unless it is
    /// linearizable.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// How many nodes.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_NODES)]
    pub nodes: usize,
    /// Data dirs and logs go here (created if missing); a new temporary directory if absent.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The entrance listens on this port of 127.0.0.1, the nodes on the ports after it.
    #[arg(long, value_name = "P", default_value_t = DEFAULT_BASE_PORT)]
    pub base_port: u16,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Check this recorded history instead of running a workload: MyRaft's JSON lines,
    /// Jepsen EDN or a Jepsen log, told apart by their first line (the formats are
    /// described in myraft_tui::verify).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["duration", "clients", "keys", "save_history"])]
    pub history: Option<PathBuf>,
    /// Give up checking after this many seconds, with the verdict unknown rather than a
    /// guess.
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub budget_s: u64,
    /// Run the workload against the cluster for S seconds (fractions allowed).
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub duration: f64,
    /// Concurrent clients, each with its own client id and session.
    #[arg(long, value_name = "C", default_value_t = 4)]
    pub clients: usize,
    /// Keys the clients read and write (under a prefix of the run's own).
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub keys: u64,
    /// Write the recorded history (JSON lines) to F; without it, the history is written to a
    /// temporary file only when it is not linearizable.
    #[arg(long, value_name = "F")]
    pub save_history: Option<PathBuf>,
}

/// The longest `verify --duration`: a day, and small enough that the deadline cannot
/// overflow the clock.
const MAX_VERIFY_S: f64 = 86_400.0;

/// Why a command failed: a stable code for `--json` and a message that says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub code: &'static str,
    pub message: String,
}

impl CliError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new("bad_request", message)
    }

    pub fn io(message: impl Into<String>) -> Self {
        Self::new("io", message)
    }

    /// A failed request, explained for someone at a terminal.
    pub fn request(err: RequestError, op: &ClientOp, client: &Client) -> Self {
        let code = err.code();
        let message = match &err {
            RequestError::Timeout { tried, .. } => {
                let mut text = err.to_string();
                let only_entrances = tried.iter().all(|t| matches!(t, Target::Entrance(_)));
                if only_entrances {
                    text.push_str(": is myraft-entrance running? (--entrance)");
                } else {
                    text.push_str(
                        ": is the cluster up? `myraft status` shows it; raise --timeout-ms if \
                         it is only slow",
                    );
                }
                let dropped = client.dropped_datagrams();
                if dropped > 0 {
                    text.push_str(&format!(
                        "; {dropped} answer(s) failed authentication: does --key-file match \
                         the cluster's key?"
                    ));
                }
                if op.is_write() {
                    text.push_str("; the write may or may not have been applied");
                }
                text
            }
            RequestError::Server(ClientError::NotFound { what }) if names_a_node(op) => {
                format!("{what} not found: `myraft status` lists the members, `myraft pending` the waiting nodes")
            }
            RequestError::Server(ClientError::Compacted { compacted_before }) => format!(
                "revisions below {compacted_before} were compacted away: ask for --rev \
                 {compacted_before} or later, or leave out --rev"
            ),
            RequestError::Server(e) => e.to_string(),
            RequestError::Indeterminate { .. } => match op {
                ClientOp::Put { .. } | ClientOp::Delete { .. } => {
                    format!("{err} (`myraft get KEY`)")
                }
                _ => err.to_string(),
            },
            RequestError::Io(e) => format!("network error: {e}; check --entrance"),
            RequestError::Encode(e) => format!("cannot send the request: {e}"),
        };
        Self::new(code, message)
    }
}

fn names_a_node(op: &ClientOp) -> bool {
    matches!(
        op,
        ClientOp::NodeDetail { .. }
            | ClientOp::Approve { .. }
            | ClientOp::Reject { .. }
            | ClientOp::StopNode { .. }
            | ClientOp::RemoveNode { .. }
            | ClientOp::TransferLeader { .. }
    )
}

/// Runs one command and prints its outcome; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let json = cli.json;
    match execute(cli).await {
        Ok(Some(report)) => {
            report.print(json);
            i32::from(report.failed)
        }
        Ok(None) => 0,
        Err(e) => {
            print_error(json, e.code, &e.message);
            1
        }
    }
}

/// Prints a failure: the reason on stderr, and with `--json` the error object on stdout.
pub fn print_error(json: bool, code: &str, message: &str) {
    // One line, whatever the message holds.
    let line = message.replace('\n', " ");
    eprintln!("myraft: {line}");
    if json {
        println!("{}", serde_json::json!({ "error": code, "message": line }));
    }
}

/// Everything a networked command needs, from the global flags.
pub struct Context {
    pub entrances: Vec<SocketAddr>,
    pub key: ClusterKey,
    pub opts: ClientOptions,
    pub hex: bool,
}

impl Context {
    pub fn from_cli(cli: &Cli) -> Result<Self, CliError> {
        Ok(Self {
            entrances: parse_entrances(&cli.entrance)?,
            key: load_key(cli.key_file.as_deref())?,
            opts: client_options(cli.timeout_ms)?,
            hex: cli.hex,
        })
    }

    pub fn client(&self) -> Result<Client, CliError> {
        Client::new(self.entrances.clone(), self.key.clone(), self.opts.clone())
            .map_err(|e| CliError::io(format!("cannot open a UDP socket: {e}")))
    }
}

pub fn client_options(timeout_ms: u64) -> Result<ClientOptions, CliError> {
    if timeout_ms == 0 {
        return Err(CliError::bad_request(
            "--timeout-ms must be at least 1 (milliseconds); the default is 5000",
        ));
    }
    Ok(ClientOptions::with_timeout(Duration::from_millis(
        timeout_ms,
    )))
}

/// Parses `ADDR[,ADDR]`; host names are resolved once, here.
pub fn parse_entrances(text: &str) -> Result<Vec<SocketAddr>, CliError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            continue;
        }
        let addr = match part.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => part
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    CliError::bad_request(format!(
                        "bad --entrance address {part:?}: expected HOST:PORT such as \
                         127.0.0.1:7000, several separated by commas"
                    ))
                })?,
        };
        if addr.port() == 0 {
            return Err(CliError::bad_request(format!(
                "bad --entrance address {part:?}: port 0 is no port; the entrance's default \
                 is 7000"
            )));
        }
        out.push(addr);
    }
    if out.is_empty() {
        return Err(CliError::bad_request(
            "--entrance is empty: give HOST:PORT such as 127.0.0.1:7000",
        ));
    }
    Ok(out)
}

pub fn load_key(path: Option<&std::path::Path>) -> Result<ClusterKey, CliError> {
    ClusterKey::load(path, "myraft").map_err(|e| CliError::bad_request(e.to_string()))
}

/// A key or value from the command line, as bytes.
pub fn arg_bytes(text: &str, hex: bool, what: &str) -> Result<Vec<u8>, CliError> {
    if !hex {
        return Ok(text.as_bytes().to_vec());
    }
    render::hex_decode(text).ok_or_else(|| {
        CliError::bad_request(format!(
            "{what} {text:?} is not hex (--hex is set): expected an even number of 0-9a-f digits"
        ))
    })
}

pub fn key_arg(text: &str, hex: bool) -> Result<Vec<u8>, CliError> {
    let key = arg_bytes(text, hex, "KEY")?;
    if key.is_empty() {
        return Err(CliError::bad_request("KEY is empty: give a non-empty key"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(CliError::bad_request(format!(
            "KEY is {} bytes, more than the {MAX_KEY_BYTES}-byte limit: use a shorter key",
            key.len()
        )));
    }
    Ok(key)
}

fn value_arg(text: &str, hex: bool) -> Result<Vec<u8>, CliError> {
    let value = arg_bytes(text, hex, "VALUE")?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(CliError::bad_request(format!(
            "VALUE is {} bytes, more than the {MAX_VALUE_BYTES}-byte limit: store large data \
             elsewhere and keep a reference here",
            value.len()
        )));
    }
    Ok(value)
}

fn name_arg(name: &str) -> Result<String, CliError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(CliError::bad_request(
            "NAME is empty: `myraft status` lists the members' names",
        ));
    }
    Ok(name.to_owned())
}

fn revision_arg(rev: u64, flag: &str) -> Result<u64, CliError> {
    if rev == 0 {
        return Err(CliError::bad_request(format!(
            "{flag} 0 is no revision: revisions start at 1 (`myraft history KEY` lists them)"
        )));
    }
    Ok(rev)
}

/// The request a command sends, checked; `None` for commands that send none.
pub fn build_op(command: &Command, hex: bool) -> Result<Option<ClientOp>, CliError> {
    let op = match command {
        Command::Put { key, value } => ClientOp::Put {
            key: key_arg(key, hex)?,
            value: value_arg(value, hex)?,
        },
        Command::Get { key, rev, stale } => ClientOp::Get {
            key: key_arg(key, hex)?,
            rev: rev.map(|r| revision_arg(r, "--rev")).transpose()?,
            consistency: if *stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            },
        },
        Command::Del { key } => ClientOp::Delete {
            key: key_arg(key, hex)?,
        },
        Command::History { key } => ClientOp::History {
            key: key_arg(key, hex)?,
        },
        Command::Compact { rev } => ClientOp::Compact {
            rev: revision_arg(*rev, "REV")?,
        },
        Command::Status => ClientOp::Status,
        Command::Node { name } => ClientOp::NodeDetail {
            name: name_arg(name)?,
        },
        Command::Pending => ClientOp::PendingJoins,
        Command::Approve { name } => ClientOp::Approve {
            name: name_arg(name)?,
        },
        Command::Reject { name } => ClientOp::Reject {
            name: name_arg(name)?,
        },
        Command::Stop { name, all } => ClientOp::StopNode {
            target: match (name, all) {
                (_, true) => StopTarget::All,
                (Some(name), false) => StopTarget::Node {
                    name: name_arg(name)?,
                },
                (None, false) => {
                    return Err(CliError::bad_request(
                        "stop needs a NAME, or --all to stop the whole cluster",
                    ))
                }
            },
        },
        Command::Remove { name } => ClientOp::RemoveNode {
            name: name_arg(name)?,
        },
        Command::Transfer { name } => ClientOp::TransferLeader {
            name: name_arg(name)?,
        },
        Command::Keygen { .. } | Command::Local(_) | Command::Bench(_) | Command::Verify(_) => {
            return Ok(None)
        }
    };
    Ok(Some(op))
}

async fn execute(cli: Cli) -> Result<Option<Report>, CliError> {
    match &cli.command {
        Command::Keygen { file } => return keygen(file).map(Some),
        Command::Local(args) => {
            local(
                args,
                cli.key_file.clone(),
                load_key(cli.key_file.as_deref())?,
                cli.json,
            )
            .await?;
            return Ok(None);
        }
        Command::Bench(args) => return bench::run(&cli, args).await.map(Some),
        Command::Verify(args) => return verify(&cli, args).await.map(Some),
        _ => {}
    }
    let Some(op) = build_op(&cli.command, cli.hex)? else {
        return Ok(None);
    };
    let ctx = Context::from_cli(&cli)?;
    let client = ctx.client()?;
    let response = client
        .request(op.clone())
        .await
        .map_err(|e| CliError::request(e, &op, &client))?;
    let entrance = ctx.entrances[0].to_string();
    render::response(&op, response, ctx.hex, &entrance)
        .map(Some)
        .map_err(|unexpected| {
            CliError::new(
                "unexpected_reply",
                format!(
                    "the cluster answered {unexpected} to {}: are client and servers the same \
                     version?",
                    render::op_name(&op)
                ),
            )
        })
}

fn keygen(file: &std::path::Path) -> Result<Report, CliError> {
    let key = ClusterKey::generate();
    key.to_file(file).map_err(|e| CliError::io(e.to_string()))?;
    let path = file.display().to_string();
    Ok(Report::new(
        serde_json::json!({
            "ok": true,
            "path": path,
            "fingerprint": key.fingerprint(),
        }),
        format!(
            "wrote a new cluster key to {path} (fingerprint {}).\nGive the same file to every \
             node, the entrance and clients with --key-file {path}.",
            key.fingerprint()
        ),
    ))
}

/// `myraft verify --history FILE`: reads, checks and reports; the verdict decides the exit
/// code (the report's `failed`), a file that cannot be read or parsed is a bad request.
/// Without `--history`, [`verify_live`].
async fn verify(cli: &Cli, args: &VerifyArgs) -> Result<Report, CliError> {
    if args.budget_s == 0 {
        return Err(CliError::bad_request(
            "--budget-s must be at least 1 (seconds); the default is 60",
        ));
    }
    let budget = Duration::from_secs(args.budget_s);
    let Some(file) = &args.history else {
        return verify_live(cli, args, budget).await;
    };
    let path = file.display().to_string();
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::bad_request(format!("cannot read the history file {path}: {e}")))?;
    let history = crate::verify::parse(&text)
        .map_err(|e| CliError::bad_request(format!("{path}, {e}: fix or remove that line")))?;
    let checked = crate::verify::check(&history, budget);
    Ok(render::verify(&history, &checked, budget, 0))
}

/// `myraft verify [--duration S] [--clients C] [--keys K]`: runs the register workload of
/// [`crate::verify::live`] against the cluster, reads every key back, checks the history.
async fn verify_live(cli: &Cli, args: &VerifyArgs, budget: Duration) -> Result<Report, CliError> {
    use crate::verify::live::{Workload, WorkloadOptions};
    if !(args.duration > 0.0 && args.duration <= MAX_VERIFY_S) {
        return Err(CliError::bad_request(format!(
            "--duration must be a number of seconds above 0 and at most {MAX_VERIFY_S}"
        )));
    }
    if args.clients == 0 || args.clients > 1_000 {
        return Err(CliError::bad_request(
            "--clients must be between 1 and 1000",
        ));
    }
    if args.keys == 0 || args.keys > 100_000 {
        return Err(CliError::bad_request("--keys must be between 1 and 100000"));
    }
    let ctx = Context::from_cli(cli)?;
    let started = std::time::Instant::now();
    let opts = WorkloadOptions::new(args.clients, args.keys, ctx.opts.clone());
    let prefix = opts.prefix.clone();
    let mut workload = Workload::start(ctx.entrances.clone(), ctx.key.clone(), opts)
        .map_err(|e| CliError::io(format!("cannot start the clients: {e}")))?;
    if !cli.json {
        eprintln!(
            "myraft: {} clients on {} keys under {prefix} for {} s",
            args.clients, args.keys, args.duration
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    workload.stop().await;
    let unread = workload
        .read_back(ctx.opts.timeout)
        .await
        .map_err(|e| CliError::io(format!("cannot start a client: {e}")))?;
    let text = workload.history_text();
    let history = workload.history().map_err(|e| {
        CliError::new(
            "internal",
            format!("the recorded history does not parse ({e}); this is a bug in myraft"),
        )
    })?;
    if history.completed() == 0 {
        return Err(CliError::new(
            "timeout",
            format!(
                "no operation completed in {} s: is the cluster up? `myraft status` shows it",
                args.duration
            ),
        ));
    }
    let checked = crate::verify::check(&history, budget);
    let mut report = render::verify(&history, &checked, budget, 0);
    // The run's own time, workload and check, as `bench` reports its own: what an operator
    // waited for. `--history` reports the check's alone, there being nothing else.
    report.json["elapsed_s"] =
        serde_json::json!((started.elapsed().as_secs_f64() * 1e3).round() / 1e3);
    let saved = match &args.save_history {
        Some(path) => Some(path.clone()),
        None if report.failed => Some(std::env::temp_dir().join(format!(
            "myraft-verify-{}.jsonl",
            crate::verify::live::run_id()
        ))),
        None => None,
    };
    let mut notes = Vec::new();
    if let Some(path) = saved {
        let shown = path.display().to_string();
        std::fs::write(&path, &text)
            .map_err(|e| CliError::io(format!("cannot write the history to {shown}: {e}")))?;
        report.json["history_file"] = serde_json::json!(shown);
        notes.push(format!(
            "myraft: history written to {shown} (`myraft verify --history {shown}` checks it again)"
        ));
    }
    if !unread.is_empty() {
        report.json["unread_keys"] = serde_json::json!(unread.len());
        notes.push(format!(
            "myraft: {} key(s) could not be read back at the end, e.g. {}",
            unread.len(),
            unread[0]
        ));
    }
    if !notes.is_empty() {
        report.note = Some(notes.join("\n"));
    }
    Ok(report)
}

fn local_error(e: LocalError) -> CliError {
    let code = match e {
        LocalError::BadNodeCount(_)
        | LocalError::PortRange { .. }
        | LocalError::PortBusy { .. } => "bad_request",
        _ => "io",
    };
    CliError::new(code, e.to_string())
}

async fn local(
    args: &LocalArgs,
    key_file: Option<PathBuf>,
    key: ClusterKey,
    json: bool,
) -> Result<(), CliError> {
    // Install the handlers before any child exists, so that no signal is missed.
    let mut shutdown = Shutdown::new().map_err(|e| CliError::io(e.to_string()))?;
    let opts = LocalOptions {
        nodes: args.nodes,
        dir: args.dir.clone(),
        base_port: args.base_port,
        key_file,
        bin_dir: None,
    };
    let mut cluster = LocalCluster::start(&opts).map_err(local_error)?;
    let report = render::local_started(&cluster);
    report.print(json);

    let mut ready = std::pin::pin!(crate::local::wait_for_leader(
        cluster.entrance_addr(),
        key,
        cluster.nodes().len(),
        Duration::from_secs(30),
    ));
    let mut announced = false;
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            signal = shutdown.recv() => {
                eprintln!("myraft: {signal}: stopping the nodes, then the entrance");
                break;
            }
            leader = &mut ready, if !announced => {
                announced = true;
                match leader {
                    Some(name) => eprintln!("myraft: cluster ready, leader {name}"),
                    None => eprintln!(
                        "myraft: no leader after 30 s; see the logs in {}",
                        cluster.dir().display()
                    ),
                }
            }
            _ = check.tick() => {}
        }
        for (name, status, log) in cluster.poll_exits() {
            eprintln!(
                "myraft: {name} exited ({status}); its log is {}",
                log.display()
            );
        }
    }
    let ended = cluster.stop().await;
    for (name, status) in ended {
        if status.is_none() {
            eprintln!("myraft: could not confirm that {name} exited");
        }
    }
    eprintln!("myraft: local cluster stopped; data and logs stay in its directory");
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM, whichever comes first. Both handlers are installed when it
/// is created, so a signal that arrives before anyone waits is not lost.
pub struct Shutdown {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next signal and names it.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "interrupted",
                _ = self.term.recv() => "terminated",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "interrupted"
        }
    }
}

#[cfg(test)]
mod tests;
