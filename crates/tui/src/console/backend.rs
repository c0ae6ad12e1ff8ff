//! What the console needs from the network: send one client op, get one answer.
//!
//! The console depends on this trait only, so screens and key handling are tested against
//! [`FakeBackend`] and the real transport stays a thin adapter.

use myraft_wire::api::{ClientError, ClientOp, ClientResponse};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Boxed so the trait stays object-safe without a macro crate.
pub type BackendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ClientResponse, BackendError>> + Send + 'a>>;

/// Sends client requests to the cluster: the entrance first, then the leader it names.
/// Retries, leader caching and authentication are the implementation's business.
pub trait Backend: Send + Sync + 'static {
    fn request(&self, op: ClientOp) -> BackendFuture<'_>;
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Someone in the cluster answered, and said no.
    #[error("{0}")]
    Cluster(#[from] ClientError),
    /// Nobody answered, or the answer could not be read: the console shows the entrance as
    /// unreachable.
    #[error("{0}")]
    Unreachable(String),
}

/// The real backend: the shared UDP request client (retries, leader cache, auth).
impl Backend for myraft_wire::client::Client {
    fn request(&self, op: ClientOp) -> BackendFuture<'_> {
        Box::pin(async move {
            myraft_wire::client::Client::request(self, op)
                .await
                .map_err(|e| match e {
                    myraft_wire::client::RequestError::Server(err) => BackendError::Cluster(err),
                    other => BackendError::Unreachable(other.to_string()),
                })
        })
    }
}

/// Builds the backend the console talks to from `--entrance` and `--key-file`. Needs a
/// tokio runtime (the client runs a receive task).
pub fn connect(
    entrances: &[String],
    key_file: Option<&std::path::Path>,
) -> anyhow::Result<Arc<dyn Backend>> {
    let addrs =
        crate::cli::parse_entrances(&entrances.join(",")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = crate::cli::load_key(key_file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let client =
        myraft_wire::client::Client::new(addrs, key, myraft_wire::client::ClientOptions::default())
            .map_err(|e| anyhow::anyhow!("cannot open a UDP socket: {e}"))?;
    Ok(Arc::new(client))
}

/// A scripted backend for tests: answers each op with the first queued answer that
/// matches it, or with a default, and records every op it was asked.
#[derive(Default)]
pub struct FakeBackend {
    inner: Mutex<FakeState>,
}

type Answer = Result<ClientResponse, BackendError>;
type Matcher = fn(&ClientOp) -> bool;

#[derive(Default)]
struct FakeState {
    seen: Vec<ClientOp>,
    queued: VecDeque<(Matcher, Answer)>,
    fallback: Option<Answer>,
}

impl FakeBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next op for which `matches` is true gets `answer`, once.
    pub fn answer_once(&self, matches: Matcher, answer: Answer) {
        self.lock().queued.push_back((matches, answer));
    }

    /// What every op without a queued answer gets; `Unreachable` if never set.
    pub fn answer_always(&self, answer: Answer) {
        self.lock().fallback = Some(answer);
    }

    pub fn seen(&self) -> Vec<ClientOp> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock already failed; keep its state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for FakeBackend {
    fn request(&self, op: ClientOp) -> BackendFuture<'_> {
        let answer = {
            let mut state = self.lock();
            state.seen.push(op.clone());
            let position = state.queued.iter().position(|(m, _)| m(&op));
            match position.and_then(|i| state.queued.remove(i)) {
                Some((_, answer)) => answer,
                None => state.fallback.clone().unwrap_or_else(|| {
                    Err(BackendError::Unreachable("fake backend: no answer".into()))
                }),
            }
        };
        Box::pin(async move { answer })
    }
}
