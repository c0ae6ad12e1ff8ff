//! `myraft-entrance`: parses flags, sets up logging, runs [`myraft_entrance::Entrance`]
//! until Ctrl-C, SIGTERM or `myraft stop --all`.

use anyhow::Context;
use clap::Parser;
use myraft_entrance::{Config, Entrance};
use myraft_wire::ClusterKey;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Admits nodes to a MyRaft cluster, watches their health and routes client requests to
/// the leader.
#[derive(Debug, Parser)]
#[command(name = "myraft-entrance", version)]
struct Args {
    /// Address to listen on for nodes and clients (UDP), e.g. 0.0.0.0:7000.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Directory for the cluster id, members, pending joins and the log (entrance.log).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Cluster key file (from `myraft keygen`); without it the public lab default key is used.
    #[arg(long, value_name = "F")]
    key_file: Option<PathBuf>,
    /// Admit every node that asks, without waiting for `myraft approve`.
    #[arg(long)]
    auto_approve: bool,
    /// How often every member is probed (jittered by ±20 %).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    probe_interval_ms: u64,
    /// A member that has not answered for this long is reported down.
    #[arg(long, value_name = "MS", default_value_t = 1500)]
    down_after_ms: u64,
    /// Remove a member from the configuration once it has been down this long, if the
    /// leader does not hear it either and the voters it hears remain a quorum without it.
    /// Off unless given.
    #[arg(long, value_name = "MS")]
    auto_remove_after_ms: Option<u64>,
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
fn cancel_on_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::spawn(async move {
        #[cfg(unix)]
        let terminated = term.recv();
        #[cfg(not(unix))]
        let terminated = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
            _ = terminated => tracing::info!("terminated; shutting down"),
            () = shutdown.cancelled() => return,
        }
        shutdown.cancel();
    });
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever RUST_BACKTRACE says: operators read this, not developers.
            tracing::error!("{}", myraft_wire::util::describe(e.as_ref()));
            eprintln!(
                "myraft-entrance: {}",
                myraft_wire::util::describe(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let key = ClusterKey::load(args.key_file.as_deref(), "myraft-entrance")
        .context("cannot load the cluster key")?;
    let lab_key = key.is_lab_default();

    let mut config = Config::new(args.listen.clone(), args.data_dir.clone());
    config.key = key;
    config.auto_approve = args.auto_approve;
    config.probe_interval = Duration::from_millis(args.probe_interval_ms);
    config.down_after = Duration::from_millis(args.down_after_ms);
    config.auto_remove_after = args.auto_remove_after_ms.map(Duration::from_millis);
    // Refused here too, before anything is written to the data dir.
    config.validate()?;
    let log = args.data_dir.join("entrance.log");
    myraft_wire::util::log_to_file(&log, Some("myraft-entrance")).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the log file {}: {e}; {}",
            log.display(),
            myraft_wire::util::io_advice(&e)
        )
    })?;

    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone())?;
    let entrance = Entrance::start(config, shutdown)
        .await
        .with_context(|| format!("cannot start the entrance on {}", args.listen))?;
    eprintln!(
        "myraft-entrance: cluster {:016x} listening on {}, data in {}, log in {}{}",
        entrance.cluster_id(),
        entrance.local_addr(),
        args.data_dir.display(),
        log.display(),
        if args.auto_approve {
            ", auto-approve"
        } else {
            ""
        },
    );
    if lab_key {
        eprintln!("myraft-entrance: warning: {}", ClusterKey::UNAUTHENTICATED);
    }
    entrance.wait().await;
    Ok(())
}
