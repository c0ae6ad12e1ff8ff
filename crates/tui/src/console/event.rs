//! One channel for everything that can change the screen: terminal keys and resizes, a
//! refresh tick, and replies from the cluster. The loop in [`super::run`] reads only it.

use super::app::Request;
use super::backend::{Backend, BackendError};
use crossterm::event::{Event as Term, EventStream, KeyEvent, KeyEventKind};
use futures_util::StreamExt;
use myraft_wire::api::ClientResponse;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the screen redraws with nothing else happening: the spinner and
/// "updated N s ago" move, and the app decides whether a poll is due.
pub const TICK: Duration = Duration::from_millis(250);

/// A request gets an answer or an error within this; the request client has its own,
/// shorter retries inside it, so this only guards the console against a stuck task.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum Event {
    Key(KeyEvent),
    Resize,
    Tick,
    Reply {
        id: u64,
        result: Box<Result<ClientResponse, BackendError>>,
    },
    /// The terminal stopped delivering input; the console cannot go on.
    TerminalGone(String),
}

pub struct Events {
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// Starts the terminal reader and the ticker; they end when `Events` is dropped.
    pub fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(read_terminal(tx.clone()));
        tokio::spawn(tick(tx.clone()));
        Self { tx, rx }
    }

    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Sends `request` on its own task; its reply arrives as [`Event::Reply`].
    pub fn send(&self, backend: &Arc<dyn Backend>, request: Request) {
        let backend = Arc::clone(backend);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tracing::debug!(id = request.id, op = ?request.op, "request");
            let result =
                match tokio::time::timeout(REQUEST_DEADLINE, backend.request(request.op)).await {
                    Ok(result) => result,
                    Err(_) => Err(BackendError::Unreachable(format!(
                        "no answer within {} s",
                        REQUEST_DEADLINE.as_secs()
                    ))),
                };
            if let Err(e) = &result {
                tracing::info!(id = request.id, error = %e, "request failed");
            }
            // The console may have quit meanwhile; then nobody wants the answer.
            let _ = tx.send(Event::Reply {
                id: request.id,
                result: Box::new(result),
            });
        });
    }
}

async fn read_terminal(tx: mpsc::UnboundedSender<Event>) {
    let mut stream = EventStream::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            // Release and repeat events (where the terminal reports them) would act twice.
            Ok(Term::Key(key)) if key.kind == KeyEventKind::Press => Event::Key(key),
            Ok(Term::Resize(..)) => Event::Resize,
            Ok(_) => continue,
            Err(e) => Event::TerminalGone(e.to_string()),
        };
        let gone = matches!(event, Event::TerminalGone(_));
        if tx.send(event).is_err() || gone {
            return;
        }
    }
}

async fn tick(tx: mpsc::UnboundedSender<Event>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        if tx.send(Event::Tick).is_err() {
            return;
        }
    }
}
