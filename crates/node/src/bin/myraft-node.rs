//! `myraft-node`: one headless server of a MyRaft cluster. Parses flags, sets up logging and
//! hands over to `myraft_node::server::run`.

use anyhow::Context;
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
            tracing::error!("{}", myraft_wire::util::describe(e.as_ref()));
            eprintln!("myraft-node: {}", myraft_wire::util::describe(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run_node(args: Args) -> anyhow::Result<()> {
    let listen = resolve(&args.listen, "--listen")?;
    let entrances = args
        .entrance
        .iter()
        .map(|e| resolve(e, "--entrance"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = ClusterKey::load(args.key_file.as_deref(), "myraft-node")
        .context("cannot load --key-file")?;
    // Said in the flags' own terms here; `NodeConfig::validate` speaks of ticks.
    if args.heartbeat_ms < 2 {
        anyhow::bail!(
            "--heartbeat-ms must be at least 2; got {}",
            args.heartbeat_ms
        );
    }
    if args.election_timeout_ms < 2 * args.heartbeat_ms {
        anyhow::bail!(
            "--election-timeout-ms must be at least twice --heartbeat-ms; got {} and {}",
            args.election_timeout_ms,
            args.heartbeat_ms
        );
    }
    // A tick is half a heartbeat, so heartbeats go out every two ticks.
    let tick = Duration::from_millis(args.heartbeat_ms / 2);
    let timing = Timing {
        tick,
        heartbeat_ticks: 2,
        // A zero tick (a heartbeat under 2 ms) is refused by `NodeConfig::validate`.
        election_ticks: u32::try_from(
            args.election_timeout_ms
                .checked_div(args.heartbeat_ms / 2)
                .unwrap_or(0),
        )
        .unwrap_or(u32::MAX),
    };
    let mut cfg = NodeConfig::new(&args.name, listen, entrances, args.data_dir.clone());
    cfg.advertise = args.advertise;
    cfg.key = key;
    cfg.timing = timing;
    cfg.max_datagram = args.max_datagram;
    cfg.log_retain_bytes = args.log_retain_mb.saturating_mul(1 << 20);
    cfg.cache_bytes = usize::try_from(args.cache_mb.max(1).saturating_mul(1 << 20))
        .context("--cache-mb is too large for this machine")?;
    cfg.sync_interval = Duration::from_millis(args.sync_interval_ms);
    cfg.auto_compact_revisions = args.auto_compact_revisions;
    // Refused here too, before anything is written to the data dir.
    cfg.validate()?;
    let log_path = args.data_dir.join("node.log");
    myraft_wire::util::log_to_file(&log_path, Some("myraft-node")).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the log file {}: {e}; {}",
            log_path.display(),
            myraft_wire::util::io_advice(&e)
        )
    })?;

    eprintln!(
        "myraft-node {} on {listen}, data in {}, log in {}",
        args.name,
        args.data_dir.display(),
        log_path.display()
    );
    if cfg.key.is_lab_default() {
        eprintln!("myraft-node: warning: {}", ClusterKey::UNAUTHENTICATED);
        tracing::warn!("{}", ClusterKey::UNAUTHENTICATED);
    }
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
    .context("stopped with an error")?;
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
