//! `myraft`: the scriptable client. Parses flags and hands over to `myraft_tui::cli`.

use anyhow::Context as _;
use clap::error::ErrorKind;
use clap::Parser;
use myraft_tui::cli::{self, Cli};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Logs go to stderr so that stdout holds only the command's output.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime");
    match runtime {
        Ok(runtime) => match runtime.block_on(cli::run(cli)) {
            0 => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        },
        Err(e) => {
            cli::print_error(false, "io", &myraft_wire::util::describe(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Help and version are not errors; anything else clap refuses is a bad request, reported
/// like every other failure (exit 1, JSON with `--json`).
fn usage_error(e: clap::Error) -> ExitCode {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let _ = e.print();
    if std::env::args().any(|a| a == "--json") {
        let rendered = e.render().to_string();
        let first = rendered
            .lines()
            .next()
            .unwrap_or("bad command line")
            .trim_start_matches("error: ");
        println!(
            "{}",
            serde_json::json!({ "error": "bad_request", "message": format!("{first} (see myraft --help)") })
        );
    }
    ExitCode::FAILURE
}
