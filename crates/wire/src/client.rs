//! The UDP request client shared by `myraft`, the console and `bench`.
//!
//! A [`Client`] sends [`ClientOp`]s and waits for the matching [`ClientReply`], retrying
//! over a lossy network until an overall deadline:
//!
//! - **Routing.** Data ops (`Put`, `Get`, `Delete`, `History`, `Compact`) go straight to the
//!   leader once it is known; admin ops go to the entrance. The leader is learned from
//!   `Status` replies (`ClusterStatus.leader` and the members' addresses) and from
//!   `NotLeader { hint }`. Without a known leader, a data op first asks the entrance for
//!   `Status` (at most once a second), and otherwise goes to the entrance, which forwards it.
//!   The entrance list is tried in turn, starting with the one that answered last, so a
//!   comma-separated list survives one entrance being away.
//! - **Failover.** Silence from the leader (`attempt_timeout`, 150 ms by default) or
//!   `NotLeader` without a usable hint forgets the leader and starts a search: each round
//!   sends the request to the entrance and to every member of the last `Status` at once and
//!   listens for `search_interval`. The first member to answer a write is the leader; a
//!   member naming a leader other than the silent one sends the request there. So a write
//!   goes through as soon as a new leader is elected, whatever the entrance's failure
//!   detector knows yet. The copies are one write: they carry one `(client_id, seq)`.
//! - **Exactly once.** Writes ([`ClientOp::is_write`]) are numbered 1, 2, 3… per client id,
//!   one write in flight per client: concurrent writes on one `Client` queue behind each
//!   other. A retry reuses the `(client_id, seq)` of the first attempt, so the state machine
//!   applies a write once however many copies arrive (Raft dissertation §6.3).
//! - **Reads and admin ops** do not touch the session table; they only need the pair to
//!   match their reply. They take sequence numbers from a separate space with the top bit set
//!   ([`READ_SEQ_BASE`]), unique per request, so that any number of them can be in flight at
//!   once and a write session still opens at seq 1. Servers must echo `(client_id, seq)` and
//!   must not pass non-writes through the session table.
//! - **Concurrency.** One socket per `Client`; a background task receives every datagram,
//!   authenticates it ([`crate::codec::decode`]) and hands it to the request waiting on its
//!   `(client_id, seq)`. Datagrams that fail to decode or match no waiting request are
//!   dropped and counted ([`Client::dropped_datagrams`]). `Client` is an `Arc` inside: clone
//!   it freely and call it from many tasks. `bench` gives each worker its own `Client`
//!   anyway, so that its writes do not queue behind each other.
//! - **Cluster id.** [`UNKNOWN_CLUSTER`] until the first authenticated reply tells it; from
//!   then on requests carry it and replies of other clusters are dropped.
//! - **Message ids** come from one process-wide counter that starts at the process start
//!   time in microseconds (see [`crate::replay`]).
//!
//! A session the server expired (`SessionExpired`, after minutes of idleness) is renewed only
//! when the answer is to the write's first and only attempt: the client picks a new id and
//! sends the write again as seq 1. That is safe because nothing of this write was applied
//! (the one copy sent was refused) and every earlier write of this client had its answer.
//! Once a write has been sent more than once, an earlier copy may have been applied and its
//! reply lost (a failover, a dropped datagram) before the session was forgotten; sending it
//! under a new id would apply it twice. Such a write ends in
//! [`RequestError::Indeterminate`] instead, and the next write opens a new session. Whether
//! to renew is decided by counting attempts, never by how long anything took.

use crate::api::{ClientError, ClientId, ClientOp, ClientReply, ClientRequest, ClientResponse};
use crate::codec::{decode, encode_body, EncodeError, MAX_DATAGRAM};
use crate::envelope::{Body, UNKNOWN_CLUSTER};
use crate::key::ClusterKey;
use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Sequence numbers of non-writes start here, far above any write's.
pub const READ_SEQ_BASE: u64 = 1 << 63;

/// How long a data op without a known leader waits before asking the entrance for
/// `Status` again: often enough to find a new leader quickly, rarely enough not to double
/// the entrance's load while the cluster has none.
const LEADER_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// How many `NotLeader` hints one request follows at once before it pauses between them.
const MAX_QUICK_REDIRECTS: u32 = 3;

/// How many replies to one request may wait unread; more are duplicates and are dropped.
const REPLY_QUEUE: usize = 8;

/// Timing of [`Client`] requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The whole request, every retry included (`--timeout-ms`).
    pub timeout: Duration,
    /// How long the first attempt waits for an answer before it is sent again; doubles with
    /// every silent attempt up to `max_attempt_timeout`.
    pub attempt_timeout: Duration,
    /// The most any one attempt waits, however many went unanswered before it.
    pub max_attempt_timeout: Duration,
    /// The pause before retrying after an answer that says "not now" (no leader yet,
    /// unavailable, server-side timeout); doubles up to `max_backoff`, with jitter.
    pub backoff: Duration,
    /// The longest such pause, before jitter.
    pub max_backoff: Duration,
    /// While the client looks for a leader (the one it knew went silent, or the cluster
    /// has none), how long each round that asks the entrance and every member at once waits
    /// for answers before asking again; it grows after the first second or so.
    pub search_interval: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(5_000),
            // A write waits for an fsync on a majority, a few milliseconds even on a busy
            // machine; a leader silent for this long is looked for elsewhere (a new one is
            // elected within an election timeout, 250-500 ms by default). Copies sent
            // meanwhile cost little: the leader drops those of a write it already holds.
            attempt_timeout: Duration::from_millis(150),
            max_attempt_timeout: Duration::from_millis(2_000),
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
            search_interval: Duration::from_millis(40),
        }
    }
}

impl ClientOptions {
    /// The defaults with an overall timeout, the first attempt's wait capped to it.
    pub fn with_timeout(timeout: Duration) -> Self {
        let default = Self::default();
        Self {
            timeout,
            attempt_timeout: default.attempt_timeout.min(timeout),
            ..default
        }
    }
}

/// Why [`Client::request`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// [`ClientOptions::timeout`] passed without a final answer. A write may or may not
    /// have been applied.
    #[error("no answer from {} within {ms} ms", describe_tried(.tried))]
    Timeout {
        /// The overall timeout, in milliseconds.
        ms: u64,
        /// Every target sent to, in the order first tried.
        tried: Vec<Target>,
    },
    /// The cluster answered with an error retrying will not cure. `NotLeader`,
    /// `Unavailable` and `Timeout` never end up here: they are retried until the deadline.
    #[error(transparent)]
    Server(ClientError),
    /// The write was sent `attempts` times and the server had forgotten the session when it
    /// answered, so it cannot say whether an earlier copy was applied.
    #[error(
        "the outcome of the write is unknown: it was sent {attempts} times and the cluster \
         forgot this client's session meanwhile, so it may or may not have been applied; \
         read the key to find out"
    )]
    Indeterminate {
        /// Copies of the write handed to the network under its `(client_id, seq)`.
        attempts: u32,
    },
    /// The socket could not be set up, or [`Client::new`] got no entrance. A failed send
    /// is not reported: it counts as silence from that target.
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    /// The request could not be encoded, in practice because it does not fit a datagram
    /// ([`MAX_DATAGRAM`]). Nothing was sent.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl RequestError {
    /// The `"error"` code of the `--json` output.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Timeout { .. } => "timeout",
            RequestError::Server(e) => e.code(),
            RequestError::Indeterminate { .. } => "indeterminate",
            RequestError::Io(_) => "io",
            RequestError::Encode(_) => "bad_request",
        }
    }
}

/// Where one attempt of a request went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One of the entrances given to [`Client::new`].
    Entrance(SocketAddr),
    /// The leader the client had learned.
    Leader(SocketAddr),
    /// A member asked while the client looked for the leader.
    Member(SocketAddr),
}

impl Target {
    /// The address the attempt was sent to, whatever the kind of target.
    pub fn addr(self) -> SocketAddr {
        match self {
            Target::Entrance(a) | Target::Leader(a) | Target::Member(a) => a,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Entrance(a) => write!(f, "entrance {a}"),
            Target::Leader(a) => write!(f, "leader {a}"),
            Target::Member(a) => write!(f, "member {a}"),
        }
    }
}

fn describe_tried(tried: &[Target]) -> String {
    if tried.is_empty() {
        return "anyone (no attempt was made)".to_owned();
    }
    tried
        .iter()
        .map(Target::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The next message id of this process, for every envelope any `Client` sends.
fn next_msg_id() -> u64 {
    static IDS: crate::replay::IdSource = crate::replay::IdSource::new();
    IDS.next(crate::util::unix_ms())
}

fn random_client_id() -> ClientId {
    // Zero reads as "no id" in logs; avoid it.
    rand::random::<u64>().max(1)
}

/// A request client; see the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    entrances: Vec<SocketAddr>,
    opts: ClientOptions,
    /// The next write's sequence number. Held for the whole write: one write in flight.
    write_seq: tokio::sync::Mutex<u64>,
    next_read_seq: AtomicU64,
    /// Index into `entrances` of the one to try first.
    preferred_entrance: AtomicUsize,
    leader: Mutex<LeaderCache>,
    receiver: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

#[derive(Default)]
struct LeaderCache {
    addr: Option<SocketAddr>,
    /// Every member's address, from the last `Status`: where to look for a new leader.
    members: Vec<SocketAddr>,
    last_refresh: Option<Instant>,
}

/// Where each reply goes: the request waiting on its `(client_id, seq)`.
type ReplySender = mpsc::Sender<(SocketAddr, ClientReply)>;
type WaitingMap = HashMap<(ClientId, u64), ReplySender>;

/// What the receive task and the requests share.
struct Shared {
    socket: UdpSocket,
    key: ClusterKey,
    client_id: AtomicU64,
    cluster_id: AtomicU64,
    dropped: AtomicU64,
    waiting: Mutex<WaitingMap>,
}

impl Shared {
    fn waiting(&self) -> std::sync::MutexGuard<'_, WaitingMap> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    async fn receive_loop(self: Arc<Self>) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let (len, from) = match self.socket.recv_from(&mut buf).await {
                Ok(x) => x,
                // ICMP port unreachable and the like surface here on some systems; the
                // request that caused them times out on its own.
                Err(_) => {
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let cluster = self.cluster_id.load(Ordering::Relaxed);
            let expected = (cluster != UNKNOWN_CLUSTER).then_some(cluster);
            let envelope = match decode(&buf[..len], &self.key, expected) {
                Ok(e) => e,
                Err(_) => {
                    self.drop_one();
                    continue;
                }
            };
            let Body::ClientReply(reply) = envelope.body else {
                self.drop_one();
                continue;
            };
            if cluster == UNKNOWN_CLUSTER && envelope.cluster_id != UNKNOWN_CLUSTER {
                let _ = self.cluster_id.compare_exchange(
                    UNKNOWN_CLUSTER,
                    envelope.cluster_id,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            let sender = self.waiting().get(&(reply.client_id, reply.seq)).cloned();
            match sender {
                Some(tx) if tx.try_send((from, reply)).is_ok() => {}
                _ => self.drop_one(),
            }
        }
    }
}

/// Removes a request from the waiting map however the request ends.
struct Registration<'a> {
    shared: &'a Shared,
    key: (ClientId, u64),
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.shared.waiting().remove(&self.key);
    }
}

/// What to do after one attempt.
enum Next {
    Done(Box<Result<ClientResponse, ClientError>>),
    /// Try again at once (the target changed).
    Retry,
    /// Try again after a pause (the cluster said "not now").
    Backoff,
    /// Start over as a new session (write only).
    Renew,
}

impl Client {
    /// A client of the cluster reached through `entrances`. Binds one UDP socket of the
    /// first entrance's address family and starts its receive task, so it must be called
    /// inside a tokio runtime.
    pub fn new(
        entrances: Vec<SocketAddr>,
        key: ClusterKey,
        opts: ClientOptions,
    ) -> Result<Self, RequestError> {
        if entrances.is_empty() {
            return Err(RequestError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no entrance address given",
            )));
        }
        let bind: SocketAddr = if entrances[0].is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let std_socket = std::net::UdpSocket::bind(bind)?;
        std_socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(std_socket)?;
        let shared = Arc::new(Shared {
            socket,
            key,
            client_id: AtomicU64::new(random_client_id()),
            cluster_id: AtomicU64::new(UNKNOWN_CLUSTER),
            dropped: AtomicU64::new(0),
            waiting: Mutex::new(HashMap::new()),
        });
        let receiver = tokio::spawn(Arc::clone(&shared).receive_loop());
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                entrances,
                opts,
                write_seq: tokio::sync::Mutex::new(1),
                next_read_seq: AtomicU64::new(READ_SEQ_BASE),
                preferred_entrance: AtomicUsize::new(0),
                leader: Mutex::new(LeaderCache::default()),
                receiver,
            }),
        })
    }

    /// The id the next request goes out under, also the envelope's sender id. Random;
    /// replaced when the cluster forgot the session and the client opens a new one.
    pub fn client_id(&self) -> ClientId {
        self.inner.shared.client_id.load(Ordering::Relaxed)
    }

    /// The cluster id learned from replies, if any came yet.
    pub fn cluster_id(&self) -> Option<u64> {
        let id = self.inner.shared.cluster_id.load(Ordering::Relaxed);
        (id != UNKNOWN_CLUSTER).then_some(id)
    }

    /// The leader address requests for data currently go to.
    pub fn cached_leader(&self) -> Option<SocketAddr> {
        self.leader().addr
    }

    /// The entrance addresses, as given to [`Client::new`].
    pub fn entrances(&self) -> &[SocketAddr] {
        &self.inner.entrances
    }

    /// The timing the client was created with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// Datagrams received that failed authentication or matched no waiting request.
    pub fn dropped_datagrams(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.shared.socket.local_addr()
    }

    fn leader(&self) -> std::sync::MutexGuard<'_, LeaderCache> {
        self.inner
            .leader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_leader(&self, addr: Option<SocketAddr>) {
        self.leader().addr = addr;
    }

    /// Leaves the current session behind: later writes go out under a new client id.
    fn new_session(&self) -> ClientId {
        let id = random_client_id();
        self.inner.shared.client_id.store(id, Ordering::Relaxed);
        id
    }

    /// Sends `op` and waits for its answer, retrying until [`ClientOptions::timeout`].
    pub async fn request(&self, op: ClientOp) -> Result<ClientResponse, RequestError> {
        let deadline = Instant::now() + self.inner.opts.timeout;
        if op.is_write() {
            let mut seq = self.inner.write_seq.lock().await;
            let (result, used) = self.run(&op, *seq, deadline, true).await;
            *seq = match &result {
                // The server has forgotten this session, so every later write under it would
                // be refused too; a new id at seq 1 opens a new one.
                Err(RequestError::Indeterminate { .. }) => {
                    self.new_session();
                    1
                }
                // Whatever else happened, the next write gets a new number: a timed-out write
                // may still be applied, and must not be confused with the next one.
                _ => used + 1,
            };
            result
        } else {
            let seq = self.inner.next_read_seq.fetch_add(1, Ordering::Relaxed);
            self.run(&op, seq, deadline, false).await.0
        }
    }

    /// Asks the entrance for `Status` to learn who leads. Errors are the caller's to
    /// ignore: requests work without a known leader, through the entrance.
    pub async fn refresh_leader(&self) -> Result<ClientResponse, RequestError> {
        self.leader().last_refresh = Some(Instant::now());
        self.request(ClientOp::Status).await
    }

    /// Returns the result and the sequence number of the last attempt, which differs from
    /// `seq` if the session was renewed on the way.
    async fn run(
        &self,
        op: &ClientOp,
        mut seq: u64,
        deadline: Instant,
        write: bool,
    ) -> (Result<ClientResponse, RequestError>, u64) {
        let result = self.attempts(op, &mut seq, deadline, write).await;
        (result, seq)
    }

    async fn attempts(
        &self,
        op: &ClientOp,
        seq: &mut u64,
        deadline: Instant,
        write: bool,
    ) -> Result<ClientResponse, RequestError> {
        let data = is_data_op(op);
        if data && self.wants_leader_refresh() {
            self.leader().last_refresh = Some(Instant::now());
            let budget = deadline.saturating_duration_since(Instant::now()) / 2;
            let status_deadline = Instant::now() + budget;
            let status_seq = self.inner.next_read_seq.fetch_add(1, Ordering::Relaxed);
            // Failing to learn the leader is no reason to fail the request.
            let _ = Box::pin(self.run(&ClientOp::Status, status_seq, status_deadline, false)).await;
        }

        let opts = &self.inner.opts;
        let mut attempt_timeout = opts.attempt_timeout;
        let mut backoff = opts.backoff;
        let mut renewed = false;
        // Copies handed to the network under the current (client id, seq): once there is
        // more than one, an earlier copy may have been applied even if the copy answered was
        // refused as `SessionExpired`.
        let mut sent_attempts: u32 = 0;
        let mut redirects = 0;
        let mut tried: Vec<Target> = Vec::new();
        let mut entrance_index = self.inner.preferred_entrance.load(Ordering::Relaxed);
        // Set once the leader went silent or the cluster said it has none: each round then
        // asks the entrance and every member at once, so the new leader is found as soon
        // as it is elected, without waiting for the entrance's failure detector.
        let mut searching = false;
        let mut search_rounds: u32 = 0;
        // The leader that went silent: hints that still name it are stale.
        let mut silent: Option<SocketAddr> = None;

        let mut client_id = self.client_id();
        let (tx, mut rx) = mpsc::channel(REPLY_QUEUE);
        let mut registration = self.register(client_id, *seq, tx.clone());

        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(RequestError::Timeout {
                    ms: u64::try_from(opts.timeout.as_millis()).unwrap_or(u64::MAX),
                    tried,
                });
            }
            let entrance =
                Target::Entrance(self.inner.entrances[entrance_index % self.inner.entrances.len()]);
            let (leader, members) = {
                let cache = self.leader();
                (cache.addr, cache.members.clone())
            };
            let targets: Vec<Target> = match leader {
                Some(leader) if data && !searching => vec![Target::Leader(leader)],
                _ if data && !members.is_empty() => {
                    searching = true;
                    std::iter::once(entrance)
                        .chain(members.into_iter().map(Target::Member))
                        .collect()
                }
                _ => vec![entrance],
            };
            for t in &targets {
                if !tried.contains(t) {
                    tried.push(*t);
                }
            }

            let request = ClientRequest {
                client_id,
                seq: *seq,
                op: op.clone(),
            };
            let bytes = encode_body(
                self.inner.shared.cluster_id.load(Ordering::Relaxed),
                client_id,
                next_msg_id(),
                &Body::ClientRequest(request),
                &self.inner.shared.key,
            )?;
            let mut sent = false;
            for t in &targets {
                // An address of the other family, or an unreachable route: that target is
                // silent this round.
                if self
                    .inner
                    .shared
                    .socket
                    .send_to(&bytes, t.addr())
                    .await
                    .is_ok()
                {
                    sent = true;
                    sent_attempts = sent_attempts.saturating_add(1);
                }
            }
            let wait = if searching {
                // Slower after the first second or so: a cluster that stays without a
                // leader is not asked 25 times a second until the deadline.
                jittered(opts.search_interval * (1 << (search_rounds / 25).min(4)))
            } else {
                attempt_timeout
            };
            let round_end = Instant::now() + wait.min(deadline - now);

            // The answers of this round: the first that settles it, or, while searching,
            // whatever comes until the round ends (one member's "no leader" is no reason to
            // stop listening for the others).
            let mut next = None;
            while sent && next.is_none() {
                match tokio::time::timeout_at(round_end.into(), rx.recv()).await {
                    Ok(Some((from, reply))) => {
                        let n = self.judge(&targets, silent, from, reply.result);
                        if matches!(n, Next::Backoff) && searching {
                            continue;
                        }
                        if let (Next::Done(done), true, Some(Target::Member(_))) =
                            (&n, write, targets.iter().find(|t| t.addr() == from))
                        {
                            // Only the leader answers a write: this is where the next goes.
                            if done.is_ok() {
                                self.set_leader(Some(from));
                            }
                        }
                        next = Some(n);
                    }
                    Ok(None) | Err(_) => break,
                }
            }

            match next {
                Some(Next::Done(done)) => match *done {
                    Ok(response) => {
                        if targets.len() == 1 && matches!(targets[0], Target::Entrance(_)) {
                            self.inner.preferred_entrance.store(
                                entrance_index % self.inner.entrances.len(),
                                Ordering::Relaxed,
                            );
                        }
                        self.learn(&response);
                        return Ok(response);
                    }
                    Err(e) => return Err(RequestError::Server(e)),
                },
                // A hint to a leader not known to be silent: go there, done searching.
                Some(Next::Retry) if redirects < MAX_QUICK_REDIRECTS => {
                    searching = false;
                    redirects += 1;
                }
                // Followers that point at each other (stale hints during an election)
                // would bounce a request at full speed; after a few hops, pause.
                Some(Next::Retry | Next::Backoff) => {
                    searching = false;
                    let pause =
                        jittered(backoff).min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(opts.max_backoff);
                }
                Some(Next::Renew) if write && sent_attempts > 1 => {
                    return Err(RequestError::Indeterminate {
                        attempts: sent_attempts,
                    });
                }
                Some(Next::Renew) if write && !renewed => {
                    renewed = true;
                    client_id = self.new_session();
                    *seq = 1;
                    sent_attempts = 0;
                    drop(registration);
                    registration = self.register(client_id, *seq, tx.clone());
                }
                Some(Next::Renew) => {
                    return Err(RequestError::Server(ClientError::SessionExpired));
                }
                // A round of the search went by without a leader: the wait was the pause.
                None if searching => {
                    search_rounds = search_rounds.saturating_add(1);
                    entrance_index += 1;
                }
                None => {
                    // Silence: forget a leader that does not answer and look for the next;
                    // try the next entrance.
                    match targets.first() {
                        Some(Target::Leader(addr)) => {
                            self.set_leader(None);
                            silent = Some(*addr);
                        }
                        _ => entrance_index += 1,
                    }
                    attempt_timeout = (attempt_timeout * 2).min(opts.max_attempt_timeout);
                }
            }
        }
    }

    fn register(&self, client_id: ClientId, seq: u64, tx: ReplySender) -> Registration<'_> {
        let key = (client_id, seq);
        self.inner.shared.waiting().insert(key, tx);
        Registration {
            shared: &self.inner.shared,
            key,
        }
    }

    fn wants_leader_refresh(&self) -> bool {
        let cache = self.leader();
        cache.addr.is_none()
            && cache
                .last_refresh
                .is_none_or(|t| t.elapsed() >= LEADER_REFRESH_INTERVAL)
    }

    /// What one answer means. A hint back to whoever was just asked, or to the leader that
    /// went silent, is stale (an election is under way): wait rather than follow it.
    fn judge(
        &self,
        asked: &[Target],
        silent: Option<SocketAddr>,
        from: SocketAddr,
        result: Result<ClientResponse, ClientError>,
    ) -> Next {
        match result {
            Err(ClientError::NotLeader { hint: Some(hint) }) => {
                match hint.addr.parse::<SocketAddr>() {
                    Ok(addr)
                        if addr == from
                            || Some(addr) == silent
                            || (asked.len() == 1 && asked[0].addr() == addr) =>
                    {
                        self.set_leader(None);
                        Next::Backoff
                    }
                    Ok(addr) => {
                        self.set_leader(Some(addr));
                        Next::Retry
                    }
                    Err(_) => {
                        self.set_leader(None);
                        Next::Backoff
                    }
                }
            }
            Err(ClientError::NotLeader { hint: None }) => {
                self.set_leader(None);
                Next::Backoff
            }
            Err(ClientError::Unavailable { .. }) | Err(ClientError::Timeout) => Next::Backoff,
            Err(ClientError::SessionExpired) => Next::Renew,
            other => Next::Done(Box::new(other)),
        }
    }

    fn learn(&self, response: &ClientResponse) {
        let ClientResponse::Status(status) = response else {
            return;
        };
        let addr = status.leader.as_ref().and_then(|leader| {
            status
                .members
                .iter()
                .find(|m| m.id == leader.id || m.name == leader.name)
                .and_then(|m| m.addr.parse::<SocketAddr>().ok())
        });
        let mut cache = self.leader();
        cache.addr = addr;
        cache.members = status
            .members
            .iter()
            .filter_map(|m| m.addr.parse::<SocketAddr>().ok())
            .collect();
        cache.last_refresh = Some(Instant::now());
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id())
            .field("entrances", &self.inner.entrances)
            .field("leader", &self.cached_leader())
            .finish_non_exhaustive()
    }
}

/// Whether `op` reads or writes data, and so is best sent to the leader.
pub fn is_data_op(op: &ClientOp) -> bool {
    matches!(
        op,
        ClientOp::Put { .. }
            | ClientOp::Get { .. }
            | ClientOp::Delete { .. }
            | ClientOp::History { .. }
            | ClientOp::Compact { .. }
    )
}

/// Between half and all of `d`, so that many clients told "not now" at once do not all
/// come back at once.
fn jittered(d: Duration) -> Duration {
    crate::util::jittered(d, 0.5, 1.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests;
