//! A register workload against a live cluster, recorded as a history for [`super::check`]:
//! what `myraft verify` runs, and what the fault tests run while they break the cluster.
//!
//! [`Workload::start`] starts C clients, each its own [`Client`] (its own client id,
//! session and socket, as separate client processes would have), each one operation at a
//! time: a linearizable get or a put of a value never written before, on one of K keys
//! under a prefix of the run's own (`verify/<run>/k<n>`), so a run reads nothing it did not
//! write and two runs never meet. Every call and every return is recorded, in the order
//! they happened, with a monotonic timestamp, as the JSON lines of [`super`]
//! ([`Workload::history_text`]).
//!
//! How a result is recorded ([`classify`]) decides what the checker may assume, so it errs
//! on the side of "unknown":
//!
//! - `ok`: the cluster answered; a get records the value it read (`null`: absent).
//! - `fail`: certainly no effect. A get has none whatever happened; a put only when the
//!   request was refused before it could be proposed (it could not be encoded, or the
//!   cluster called it a bad request: out of bounds, or a sequence number its session had
//!   passed, which is refused when applied and changes nothing).
//! - `info`: anything else on a put: a timeout, an indeterminate write, a server error, an
//!   unexpected reply. It may have taken effect, at any time after its call, or never.
//!
//! [`Workload::stop`] stops the clients, letting each finish the operation it is in (a
//! workload dropped instead cuts them short: they stay without a return, which the checker
//! treats as `info`). [`Workload::read_back`] then reads every key once
//! more, as further processes of the same history, so the final state is held to the
//! history like any other read: every acknowledged write must be readable or overwritten.

use super::parse::{parse_json_lines, ParseError};
use super::History;
use myraft_wire::api::{ClientError, ClientOp, ClientResponse, Consistency};
use myraft_wire::client::{Client, ClientOptions, RequestError};
use myraft_wire::ClusterKey;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What a workload does; [`WorkloadOptions::new`] gives the defaults of `myraft verify`.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Concurrent clients, each with its own [`Client`].
    pub clients: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Keys are `<prefix>k<n>`; a prefix of the run's own keeps runs apart.
    pub prefix: String,
    /// The chance that an operation is a get rather than a put.
    pub read_ratio: f64,
    /// Makes the choice of operations and keys replayable (the cluster's timing is not).
    pub seed: u64,
    /// Each client's timing: how long one operation may take before it is `info`.
    pub client: ClientOptions,
}

impl WorkloadOptions {
    /// `clients` clients over `keys` keys under `verify/<run>/`, where `<run>` is new, half
    /// reads, a random seed, and the client timing of `client`.
    pub fn new(clients: usize, keys: u64, client: ClientOptions) -> Self {
        let seed = rand::random::<u64>();
        Self {
            clients,
            keys,
            prefix: format!("verify/{}/", run_id()),
            read_ratio: 0.5,
            seed,
            client,
        }
    }
}

/// A name for a run that no other run has: the time in microseconds and a random part.
pub fn run_id() -> String {
    format!(
        "{:x}-{:04x}",
        myraft_wire::util::unix_us(),
        rand::random::<u16>()
    )
}

/// One operation of the workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Get { key: String },
    Put { key: String, value: String },
}

impl Call {
    fn f(&self) -> &'static str {
        match self {
            Call::Get { .. } => "get",
            Call::Put { .. } => "put",
        }
    }

    fn key(&self) -> &str {
        match self {
            Call::Get { key } | Call::Put { key, .. } => key,
        }
    }

    /// The request it sends.
    pub fn op(&self) -> ClientOp {
        match self {
            Call::Get { key } => ClientOp::Get {
                key: key.as_bytes().to_vec(),
                rev: None,
                consistency: Consistency::Linearizable,
            },
            Call::Put { key, value } => ClientOp::Put {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
            },
        }
    }
}

/// How an operation ended, as the history records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// It took effect; a get carries what it read (`None`: absent).
    Ok { read: Option<String> },
    /// It certainly did not take effect.
    Fail,
    /// It may or may not have taken effect.
    Info,
}

/// How the result of `call` is recorded; see the module documentation.
pub fn classify(call: &Call, result: &Result<ClientResponse, RequestError>) -> Completion {
    match (call, result) {
        (Call::Get { .. }, Ok(ClientResponse::Get(g))) => Completion::Ok {
            read: g
                .value
                .as_ref()
                .filter(|_| g.found)
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        },
        (Call::Put { .. }, Ok(ClientResponse::Put(_))) => Completion::Ok { read: None },
        // A read changes nothing; a timed-out one is only unknown, the others were refused.
        (Call::Get { .. }, Err(RequestError::Timeout { .. })) => Completion::Info,
        (Call::Get { .. }, _) => Completion::Fail,
        // Refused before anything was proposed: nothing was sent, or the request itself is
        // wrong, which every copy of it is told.
        (Call::Put { .. }, Err(RequestError::Encode(_)))
        | (Call::Put { .. }, Err(RequestError::Server(ClientError::BadRequest { .. }))) => {
            Completion::Fail
        }
        (Call::Put { .. }, _) => Completion::Info,
    }
}

/// Counts of what the workload recorded so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub invoked: u64,
    pub ok_reads: u64,
    pub ok_writes: u64,
    pub failed: u64,
    pub indeterminate: u64,
}

/// The history as it is recorded: JSON lines, in the order the events happened.
#[derive(Debug)]
struct Recorder {
    origin: Instant,
    lines: Mutex<Vec<String>>,
    invoked: AtomicU64,
    ok_reads: AtomicU64,
    ok_writes: AtomicU64,
    failed: AtomicU64,
    indeterminate: AtomicU64,
}

impl Recorder {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            lines: Mutex::new(Vec::new()),
            invoked: AtomicU64::new(0),
            ok_reads: AtomicU64::new(0),
            ok_writes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            indeterminate: AtomicU64::new(0),
        }
    }

    /// Appends one line, its time taken under the lock so that line order is time order.
    fn push(&self, make: impl FnOnce(u64) -> serde_json::Value) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let time_ns = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        lines.push(make(time_ns).to_string());
    }

    fn invoke(&self, process: u64, call: &Call) {
        self.invoked.fetch_add(1, Ordering::Relaxed);
        let value = match call {
            Call::Get { .. } => None,
            Call::Put { value, .. } => Some(value.as_str()),
        };
        self.push(|time_ns| {
            json!({"process": process, "type": "invoke", "f": call.f(), "key": call.key(),
                   "value": value, "time_ns": time_ns})
        });
    }

    fn complete(&self, process: u64, call: &Call, completion: &Completion) {
        let (kind, value) = match (completion, call) {
            (Completion::Ok { read }, Call::Get { .. }) => {
                self.ok_reads.fetch_add(1, Ordering::Relaxed);
                ("ok", read.as_deref())
            }
            (Completion::Ok { .. }, Call::Put { value, .. }) => {
                self.ok_writes.fetch_add(1, Ordering::Relaxed);
                ("ok", Some(value.as_str()))
            }
            (Completion::Fail, _) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                ("fail", None)
            }
            (Completion::Info, _) => {
                self.indeterminate.fetch_add(1, Ordering::Relaxed);
                ("info", None)
            }
        };
        self.push(|time_ns| {
            json!({"process": process, "type": kind, "f": call.f(), "key": call.key(),
                   "value": value, "time_ns": time_ns})
        });
    }

    fn stats(&self) -> Stats {
        Stats {
            invoked: self.invoked.load(Ordering::Relaxed),
            ok_reads: self.ok_reads.load(Ordering::Relaxed),
            ok_writes: self.ok_writes.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            indeterminate: self.indeterminate.load(Ordering::Relaxed),
        }
    }

    fn text(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

/// A running workload; see the module documentation.
pub struct Workload {
    entrances: Vec<SocketAddr>,
    cluster_key: ClusterKey,
    opts: WorkloadOptions,
    keys: Arc<Vec<String>>,
    recorder: Arc<Recorder>,
    stop: watch::Sender<bool>,
    clients: JoinSet<()>,
}

impl Workload {
    /// Starts the clients against the cluster reached through `entrances`. Must be called
    /// inside a tokio runtime, where the clients then run.
    pub fn start(
        entrances: Vec<SocketAddr>,
        cluster_key: ClusterKey,
        opts: WorkloadOptions,
    ) -> Result<Workload, RequestError> {
        let keys: Arc<Vec<String>> = Arc::new(
            (0..opts.keys.max(1))
                .map(|k| format!("{}k{k}", opts.prefix))
                .collect(),
        );
        let recorder = Arc::new(Recorder::new());
        let (stop, stopped) = watch::channel(false);
        let mut clients = JoinSet::new();
        for process in 0..opts.clients {
            let client = Client::new(entrances.clone(), cluster_key.clone(), opts.client.clone())?;
            let process = process as u64;
            let rng = StdRng::seed_from_u64(opts.seed.wrapping_add(process));
            clients.spawn(run_client(
                process,
                client,
                Arc::clone(&keys),
                Arc::clone(&recorder),
                stopped.clone(),
                rng,
                opts.read_ratio,
            ));
        }
        Ok(Workload {
            entrances,
            cluster_key,
            opts,
            keys,
            recorder,
            stop,
            clients,
        })
    }

    /// The keys the workload uses.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The seed it was started with.
    pub fn seed(&self) -> u64 {
        self.opts.seed
    }

    /// What has been recorded so far.
    pub fn stats(&self) -> Stats {
        self.recorder.stats()
    }

    /// Stops every client and waits until they have: no operation starts after this is
    /// called, and those in flight end as they would, within the client's timeout.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        while self.clients.join_next().await.is_some() {}
    }

    /// Reads every key once more, each by a new client (a process of its own), retrying a
    /// key until it is read or `within` has passed; returns the keys that could not be read.
    /// Call it after [`Workload::stop`].
    pub async fn read_back(&self, within: Duration) -> Result<Vec<String>, RequestError> {
        let deadline = Instant::now() + within;
        let mut unread = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            let process = (self.opts.clients + i) as u64;
            let client = Client::new(
                self.entrances.clone(),
                self.cluster_key.clone(),
                self.opts.client.clone(),
            )?;
            let call = Call::Get { key: key.clone() };
            loop {
                self.recorder.invoke(process, &call);
                let result = client.request(call.op()).await;
                let completion = classify(&call, &result);
                self.recorder.complete(process, &call, &completion);
                if matches!(completion, Completion::Ok { .. }) {
                    break;
                }
                if Instant::now() >= deadline {
                    unread.push(key.clone());
                    break;
                }
            }
        }
        Ok(unread)
    }

    /// The history so far, as JSON lines.
    pub fn history_text(&self) -> String {
        self.recorder.text()
    }

    /// The history so far, parsed for [`super::check`].
    pub fn history(&self) -> Result<History, ParseError> {
        parse_json_lines(&self.history_text())
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.clients.abort_all();
    }
}

/// One client: operations one at a time until told to stop.
async fn run_client(
    process: u64,
    client: Client,
    keys: Arc<Vec<String>>,
    recorder: Arc<Recorder>,
    stopped: watch::Receiver<bool>,
    mut rng: StdRng,
    read_ratio: f64,
) {
    let mut written: u64 = 0;
    while !*stopped.borrow() {
        let key = keys[rng.random_range(0..keys.len())].clone();
        let call = if rng.random_bool(read_ratio.clamp(0.0, 1.0)) {
            Call::Get { key }
        } else {
            written += 1;
            // Unique in the run: the checker tells every write apart by its value.
            Call::Put {
                key,
                value: format!("p{process}-{written}"),
            }
        };
        recorder.invoke(process, &call);
        let result = client.request(call.op()).await;
        recorder.complete(process, &call, &classify(&call, &result));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use myraft_wire::api::{GetResult, PutResult};
    use myraft_wire::client::Target;

    fn get() -> Call {
        Call::Get { key: "k".into() }
    }

    fn put() -> Call {
        Call::Put {
            key: "k".into(),
            value: "v".into(),
        }
    }

    fn timeout() -> RequestError {
        RequestError::Timeout {
            ms: 100,
            tried: vec![Target::Entrance("127.0.0.1:1".parse().unwrap())],
        }
    }

    fn server(e: ClientError) -> RequestError {
        RequestError::Server(e)
    }

    fn read(value: Option<&str>) -> Result<ClientResponse, RequestError> {
        Ok(ClientResponse::Get(GetResult {
            found: value.is_some(),
            value: value.map(|v| v.as_bytes().to_vec()),
            revision: 3,
            create_revision: 1,
            version: 2,
        }))
    }

    #[test]
    fn answers_are_ok_with_what_was_read() {
        assert_eq!(
            classify(&get(), &read(Some("x"))),
            Completion::Ok {
                read: Some("x".into())
            }
        );
        assert_eq!(classify(&get(), &read(None)), Completion::Ok { read: None });
        let written = Ok(ClientResponse::Put(PutResult { revision: 4 }));
        assert_eq!(classify(&put(), &written), Completion::Ok { read: None });
    }

    #[test]
    fn a_put_fails_only_when_it_certainly_did_nothing() {
        let bad = server(ClientError::BadRequest {
            reason: "too long".into(),
        });
        assert_eq!(classify(&put(), &Err(bad)), Completion::Fail);
        let too_big = RequestError::Encode(myraft_wire::codec::EncodeError::Oversized {
            len: 70_000,
            max: 1_400,
        });
        assert_eq!(classify(&put(), &Err(too_big)), Completion::Fail);
    }

    #[test]
    fn a_put_whose_outcome_is_unknown_is_info() {
        let unknown = [
            timeout(),
            RequestError::Indeterminate { attempts: 3 },
            server(ClientError::Timeout),
            server(ClientError::SessionExpired),
            server(ClientError::Unavailable {
                reason: "busy".into(),
            }),
            server(ClientError::NotLeader { hint: None }),
            server(ClientError::Rejected { reason: "?".into() }),
            RequestError::Io(std::io::Error::other("send failed")),
        ];
        for e in unknown {
            let shown = e.to_string();
            assert_eq!(classify(&put(), &Err(e)), Completion::Info, "{shown}");
        }
        // An answer of the wrong kind proves nothing either.
        assert_eq!(classify(&put(), &read(Some("v"))), Completion::Info);
    }

    #[test]
    fn a_get_that_timed_out_is_unknown_and_any_other_error_a_failure() {
        assert_eq!(classify(&get(), &Err(timeout())), Completion::Info);
        let refused = server(ClientError::NotLeader { hint: None });
        assert_eq!(classify(&get(), &Err(refused)), Completion::Fail);
        let done = Ok(ClientResponse::Done);
        assert_eq!(classify(&get(), &done), Completion::Fail);
    }

    #[test]
    fn the_recorded_lines_are_a_history_the_checker_reads() {
        let r = Recorder::new();
        let (w, g) = (put(), get());
        r.invoke(0, &w);
        r.invoke(1, &g);
        r.complete(0, &w, &Completion::Ok { read: None });
        r.complete(
            1,
            &g,
            &Completion::Ok {
                read: Some("v".into()),
            },
        );
        r.invoke(0, &w);
        r.complete(0, &w, &Completion::Info);
        r.invoke(1, &g);
        r.complete(1, &g, &Completion::Fail);
        r.invoke(2, &w);
        let history = parse_json_lines(&r.text()).unwrap();
        // The failed get is dropped; the info put and the put never answered stay unknown.
        assert_eq!(history.invoked(), 5);
        assert_eq!(history.failed, 1);
        assert_eq!(history.completed(), 2);
        assert_eq!(history.indeterminate(), 2);
        assert_eq!(
            r.stats(),
            Stats {
                invoked: 5,
                ok_reads: 1,
                ok_writes: 1,
                failed: 1,
                indeterminate: 1,
            }
        );
        let checked = super::super::check(&history, Duration::from_secs(10));
        assert_eq!(checked.verdict, super::super::Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_recorded_is_caught() {
        let r = Recorder::new();
        let (w, g) = (put(), get());
        r.invoke(0, &w);
        r.complete(0, &w, &Completion::Ok { read: None });
        // Called after the put returned, yet reads the key as absent.
        r.invoke(1, &g);
        r.complete(1, &g, &Completion::Ok { read: None });
        let history = parse_json_lines(&r.text()).unwrap();
        let checked = super::super::check(&history, Duration::from_secs(10));
        assert!(
            matches!(
                checked.verdict,
                super::super::Verdict::NotLinearizable { .. }
            ),
            "{checked:?}"
        );
    }
}
