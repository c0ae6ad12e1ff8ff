//! `myraft-tui`: the operator console. Flags, logging, then the library's console.

use anyhow::Context as _;
use clap::Parser;
use myraft_tui::console::{self, Target};
use std::path::PathBuf;
use std::process::ExitCode;

/// MyRaft operator console: cluster health on one screen, keys to act on it (? for help).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Entrance addresses, comma-separated; the first that answers is used.
    #[arg(
        long,
        value_name = "ADDR[,ADDR]",
        value_delimiter = ',',
        required_unless_present = "local"
    )]
    entrance: Vec<String>,
    /// The cluster key file (see `myraft keygen`).
    #[arg(long, value_name = "F", conflicts_with = "local")]
    key_file: Option<PathBuf>,
    /// Start a throw-away local cluster of N nodes and watch it (it admits its own nodes;
    /// any other node that joins waits for approval).
    #[arg(long, value_name = "N", conflicts_with = "entrance", value_parser = clap::value_parser!(u16).range(1..))]
    local: Option<u16>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line that says what failed and why; the terminal is already restored.
            eprintln!("myraft-tui: {}", myraft_wire::util::describe(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let log = console::log_path();
    // The terminal belongs to the screen; anything printed there would tear it.
    myraft_wire::util::log_to_file(&log, None)
        .with_context(|| format!("opening the log file {}", log.display()))?;
    tracing::info!(log = %log.display(), "myraft-tui starting");
    let target = match args.local {
        Some(n) => Target::Local(usize::from(n)),
        None => Target::Entrance(args.entrance),
    };
    let result = console::main(target, args.key_file.as_deref()).await;
    if let Err(e) = &result {
        tracing::error!(error = %myraft_wire::util::describe(e.as_ref()), "myraft-tui failed");
    }
    // Said now that the terminal is restored; while the screen was up, it could not be.
    let lost = myraft_wire::util::lost_log_lines();
    if lost > 0 {
        eprintln!(
            "myraft-tui: warning: {lost} log lines could not be written to {} (is its disk \
             full?)",
            log.display()
        );
    }
    result
}
