//! `myraft-tui`, the operator console: one screen that tells the cluster's health, and keys
//! to act on it.
//!
//! Data flows through the modules in this order:
//!
//! - [`event`]: terminal keys, a refresh tick and the cluster's replies, merged into one
//!   channel;
//! - [`keys`]: the one table of key bindings, read by key handling, hints and help;
//! - [`app`]: the state, and what each key, tick and reply does to it; it queues requests;
//! - [`backend`]: sends those requests (the trait, a fake for tests, the adapter spot);
//! - [`ui`] and [`popup`]: draw the state, a pure function of it; [`format`] spells numbers.
//!
//! [`launch`] starts the throw-away cluster of `--local N`.

pub mod app;
pub mod backend;
pub mod event;
pub mod format;
pub mod keys;
pub mod launch;
pub mod popup;
pub mod ui;

#[cfg(test)]
mod tests;

use anyhow::Context as _;
use app::App;
use backend::Backend;
use event::{Event, Events};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What the console connects to.
pub enum Target {
    /// `--entrance ADDR[,ADDR]`
    Entrance(Vec<String>),
    /// `--local N`
    Local(usize),
}

/// Starts what `target` says, runs the console until the operator quits, and stops a
/// local cluster afterwards.
pub async fn main(target: Target, key_file: Option<&Path>) -> anyhow::Result<()> {
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    match target {
        Target::Entrance(entrances) => {
            let backend = backend::connect(&entrances, key_file)?;
            run(backend, entrances.join(","), color, key_file.is_none()).await
        }
        Target::Local(nodes) => {
            let cluster = launch::start_local(nodes)
                .await
                .with_context(|| format!("starting a local cluster of {nodes} nodes"))?;
            let entrance = cluster.entrance_addr();
            let result = match backend::connect(
                std::slice::from_ref(&entrance),
                cluster.key_file().as_deref(),
            ) {
                Ok(backend) => {
                    let unauthenticated = cluster.key_file().is_none();
                    run(backend, entrance, color, unauthenticated).await
                }
                Err(e) => Err(e),
            };
            cluster.stop().await;
            result
        }
    }
}

/// Takes over the terminal until the operator quits; restores it on return and on panic.
/// `unauthenticated`: the cluster runs with the public lab key, which the status line says
/// until the first request's answer replaces it.
pub async fn run(
    backend: Arc<dyn Backend>,
    entrance: String,
    color: bool,
    unauthenticated: bool,
) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("myraft-tui needs a terminal; for scripts use the myraft command");
    }
    // Installs a panic hook that restores the terminal before the panic message prints.
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let mut app = App::new(entrance, Instant::now(), color);
    if unauthenticated {
        app.notice = Some(app::Notice::Err(
            myraft_wire::ClusterKey::UNAUTHENTICATED.to_owned(),
        ));
    }
    let result = event_loop(&mut terminal, backend, app).await;
    ratatui::try_restore().context("restoring the terminal")?;
    result
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    backend: Arc<dyn Backend>,
    mut app: App,
) -> anyhow::Result<()> {
    let mut events = Events::start();
    app.on_tick(Instant::now());
    loop {
        for request in app.take_requests() {
            events.send(&backend, request);
        }
        terminal
            .draw(|frame| ui::draw(frame, &app))
            .context("drawing the screen")?;
        let Some(event) = events.next().await else {
            return Ok(());
        };
        app.now = Instant::now();
        match event {
            Event::Key(key) => app.on_key(key),
            // The next draw fills the new size.
            Event::Resize => {}
            Event::Tick => app.on_tick(Instant::now()),
            Event::Reply { id, result } => app.on_reply(id, *result),
            Event::TerminalGone(e) => anyhow::bail!("the terminal stopped answering: {e}"),
        }
        if app.quit {
            tracing::info!("quit");
            return Ok(());
        }
    }
}

/// Where the log goes: `$XDG_STATE_HOME/myraft/myraft-tui.log`, else
/// `~/.local/state/myraft/myraft-tui.log`, else the temp dir. Never the terminal.
pub fn log_path() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
    match state {
        Some(dir) => dir.join("myraft").join("myraft-tui.log"),
        None => std::env::temp_dir().join("myraft-tui.log"),
    }
}
