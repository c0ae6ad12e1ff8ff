//! `myraft-node`: one headless server of a MyRaft cluster. Parses flags, sets up logging and
//! hands over to `myraft_node::server::run`.

use anyhow::{bail, Context};
use clap::Parser;
use myraft_node::server::{config, run, NodeConfig, Timing};
use myraft_wire::key::ClusterKey;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A MyRaft node: holds a replica of the key/value map and takes part in Raft.
///
/// A node started on an empty data dir asks the entrance to join and waits for an
/// operator's approval; restarted on its data dir, it rejoins on its own.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// This node's name, unique in the cluster (e.g. n1, lab-07).
    #[arg(long)]
    name: String,
    /// UDP address to bind, e.g. 0.0.0.0:7001.
    #[arg(long)]
    listen: String,
    /// Entrance address(es), comma-separated: ADDR[,ADDR].
    #[arg(long, value_delimiter = ',', required = true)]
    entrance: Vec<String>,
    /// Directory for the log, snapshots and identity (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address others reach this node at, when --listen is 0.0.0.0 or behind NAT.
    #[arg(long)]
    advertise: Option<String>,
    /// Cluster key file (from `myraft keygen`). Without it the public lab key is used.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// Base election timeout in milliseconds (each timeout is drawn from [T, 2T)).
    #[arg(long, default_value_t = 250)]
    election_timeout_ms: u64,
    /// Largest datagram to send; keep it under the path MTU (1400 on an MTU-1500 LAN).
    #[arg(long, default_value_t = myraft_wire::codec::DEFAULT_PAYLOAD_BUDGET)]
    max_datagram: usize,
    /// Megabytes of Raft log kept below what the state store holds on disk, for followers
    /// that lag a little; one further behind gets a snapshot of the store.
    #[arg(long, default_value_t = config::DEFAULT_LOG_RETAIN_MB)]
    log_retain_mb: u64,
    /// Megabytes of the state store's page cache.
    #[arg(long, default_value_t = config::DEFAULT_CACHE_MB)]
    cache_mb: u64,
    /// How often the state store syncs to disk, in milliseconds; the log is compacted only
    /// below the last synced state.
    #[arg(long, default_value_t = config::DEFAULT_SYNC_INTERVAL_MS)]
    sync_interval_ms: u64,
    /// Revisions kept by automatic compaction (0: keep every revision until `myraft
    /// compact`).
    #[arg(long, default_value_t = config::DEFAULT_AUTO_COMPACT_REVISIONS)]
    auto_compact_revisions: u64,
}

fn resolve(s: &str, flag: &str) -> anyhow::Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("{flag} {s:?} is not a valid HOST:PORT address"))?
        .next()
        .with_context(|| format!("{flag} {s:?} resolves to no address"))
}

fn main() -> ExitCode {
    match run_node(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever RUST_BACKTRACE says: operators read this, not developers.
            tracing::error!("{e:#}");
            eprintln!("myraft-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_node(args: Args) -> anyhow::Result<()> {
    if args.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    let listen = resolve(&args.listen, "--listen")?;
    let entrances = args
        .entrance
        .iter()
        .map(|e| resolve(e, "--entrance"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.heartbeat_ms < 2 || args.election_timeout_ms < 2 * args.heartbeat_ms {
        bail!("--election-timeout-ms must be at least twice --heartbeat-ms (and the heartbeat at least 2 ms)");
    }
    if args.max_datagram < 512 || args.max_datagram > myraft_wire::codec::MAX_DATAGRAM {
        bail!(
            "--max-datagram must be between 512 and {}",
            myraft_wire::codec::MAX_DATAGRAM
        );
    }
    let key = match &args.key_file {
        Some(p) => {
            let loaded = ClusterKey::from_file(p)
                .with_context(|| format!("loading --key-file {}", p.display()))?;
            if let Some(w) = loaded.warning {
                eprintln!("warning: {w}");
            }
            loaded.key
        }
        None => ClusterKey::lab_default(),
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating --data-dir {}", args.data_dir.display()))?;
    let log_path = args.data_dir.join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening log file {}", log_path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .init();

    // A tick is half a heartbeat, so heartbeats go out every two ticks.
    let tick = Duration::from_millis(args.heartbeat_ms / 2);
    let timing = Timing {
        tick,
        heartbeat_ticks: 2,
        election_ticks: (args.election_timeout_ms / (args.heartbeat_ms / 2)).max(4) as u32,
    };
    let mut cfg = NodeConfig::new(&args.name, listen, entrances, args.data_dir.clone());
    cfg.advertise = args.advertise;
    cfg.key = key;
    cfg.timing = timing;
    cfg.max_datagram = args.max_datagram;
    if args.log_retain_mb == 0 {
        bail!("--log-retain-mb must be at least 1");
    }
    if args.sync_interval_ms == 0 || args.sync_interval_ms > 60_000 {
        bail!("--sync-interval-ms must be between 1 and 60000");
    }
    cfg.log_retain_bytes = args.log_retain_mb.saturating_mul(1 << 20);
    cfg.cache_bytes = usize::try_from(args.cache_mb.max(1).saturating_mul(1 << 20))
        .context("--cache-mb is too large for this machine")?;
    cfg.sync_interval = Duration::from_millis(args.sync_interval_ms);
    cfg.auto_compact_revisions = args.auto_compact_revisions;

    eprintln!(
        "myraft-node {} on {listen}, data in {}, log in {}",
        args.name,
        args.data_dir.display(),
        log_path.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            s.cancel();
        });
        run(cfg, shutdown).await
    })
    .context("myraft-node stopped with an error")?;
    eprintln!("myraft-node {} stopped", args.name);
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C still stops the node");
                ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c().await;
}

async fn ctrl_c() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        // Without a signal handler the node can still be stopped with a StopNode request.
        tracing::warn!(error = %e, "cannot watch Ctrl-C");
        std::future::pending::<()>().await;
    }
}
