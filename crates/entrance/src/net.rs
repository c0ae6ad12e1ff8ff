//! The one UDP socket: every datagram in goes through [`myraft_wire::decode`] (key, version,
//! cluster id, tag) and the freshness and per-sender replay checks of [`myraft_wire::replay`]
//! before anything else sees it; every
//! datagram out is encoded and tagged here. Drops are counted by reason, never fatal.
//!
//! Requests the entrance sends on its own behalf (add member, remove, stop) carry its own
//! client id and a fresh `seq`; their replies are matched here and handed straight to the
//! task that waits for them, so a slow node never holds up the server loop.

use myraft_wire::admission::ClusterId;
use myraft_wire::api::{ClientId, ClientOp, ClientReply, ClientRequest};
use myraft_wire::envelope::SenderId;
use myraft_wire::replay::IdSource;
use myraft_wire::util::unix_ms;
use myraft_wire::{Body, ClusterKey, Envelope, ReplayGuard, MAX_DATAGRAM};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// A datagram that passed every check, with the address to answer.
#[derive(Debug)]
pub struct Inbound {
    pub envelope: Envelope,
    pub src: SocketAddr,
}

pub struct Net {
    socket: UdpSocket,
    local_addr: SocketAddr,
    key: ClusterKey,
    cluster_id: ClusterId,
    /// The entrance's envelope sender id, also its client id for its own requests.
    id: SenderId,
    msg_ids: IdSource,
    /// When this process started, by the wall clock in ms: ids minted before are refused.
    started_ms: u64,
    next_seq: AtomicU64,
    calls: Mutex<HashMap<u64, oneshot::Sender<ClientReply>>>,
    drops: Mutex<BTreeMap<&'static str, u64>>,
    tracker: TaskTracker,
}

/// Poisoning only means another thread panicked while holding the lock; the maps stay
/// usable, and the entrance must keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Net {
    pub async fn bind(
        listen: &str,
        key: ClusterKey,
        cluster_id: ClusterId,
        tracker: TaskTracker,
    ) -> io::Result<Arc<Net>> {
        let socket = UdpSocket::bind(listen).await?;
        let local_addr = socket.local_addr()?;
        let mut id = 0;
        while id == 0 {
            id = rand::random();
        }
        // Ids start at the wall clock, above anything an earlier run of this entrance sent
        // (its sender id is new anyway), and are fresh to every peer.
        let started_ms = unix_ms();
        Ok(Arc::new(Net {
            socket,
            local_addr,
            key,
            cluster_id,
            id,
            msg_ids: IdSource::new(),
            started_ms,
            next_seq: AtomicU64::new(1),
            calls: Mutex::new(HashMap::new()),
            drops: Mutex::new(BTreeMap::new()),
            tracker,
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn cluster_id(&self) -> ClusterId {
        self.cluster_id
    }

    pub fn client_id(&self) -> ClientId {
        self.id
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub fn count_drop(&self, reason: &'static str) {
        *lock(&self.drops).entry(reason).or_default() += 1;
    }

    pub fn drop_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.drops)
            .iter()
            .map(|(reason, n)| ((*reason).to_owned(), *n))
            .collect()
    }

    fn encode(&self, body: &Body) -> Option<Vec<u8>> {
        let msg_id = self.msg_ids.next(unix_ms());
        match myraft_wire::encode_body(self.cluster_id, self.id, msg_id, body, &self.key) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                warn!(kind = body.kind(), "not sent: {e}");
                None
            }
        }
    }

    /// Sends without waiting: the socket almost always has room, and when it has not, a
    /// task finishes the send so the caller never waits for one.
    pub fn send(self: &Arc<Self>, to: SocketAddr, body: &Body) {
        let Some(bytes) = self.encode(body) else {
            return;
        };
        match self.socket.try_send_to(&bytes, to) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let net = Arc::clone(self);
                self.tracker.spawn(async move {
                    if let Err(e) = net.socket.send_to(&bytes, to).await {
                        debug!(%to, "send failed: {e}");
                    }
                });
            }
            Err(e) => debug!(%to, "send failed: {e}"),
        }
    }

    /// Like [`Net::send`] to an address as written in the configuration, which may be a
    /// host name; resolving one happens in a task, off the caller's path.
    pub fn send_to_addr(self: &Arc<Self>, addr: &str, body: &Body) {
        if let Ok(to) = addr.parse() {
            self.send(to, body);
            return;
        }
        let net = Arc::clone(self);
        let addr = addr.to_owned();
        let body = body.clone();
        self.tracker.spawn(async move {
            if let Some(to) = resolve(&addr).await {
                net.send(to, &body);
            }
        });
    }

    /// Sends `op` as the entrance's own request number `seq` and waits up to `timeout` for
    /// the reply. Retrying with the same `seq` is retrying the same request.
    pub async fn request(
        self: &Arc<Self>,
        to: SocketAddr,
        seq: u64,
        op: ClientOp,
        timeout: Duration,
    ) -> Option<ClientReply> {
        let (tx, rx) = oneshot::channel();
        lock(&self.calls).insert(seq, tx);
        let body = Body::ClientRequest(ClientRequest {
            client_id: self.id,
            seq,
            op,
        });
        self.send(to, &body);
        let reply = tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok);
        lock(&self.calls).remove(&seq);
        reply
    }

    /// Reads datagrams until `shutdown`, passing those that survive every check to `out`.
    pub async fn recv_loop(
        self: Arc<Self>,
        out: mpsc::Sender<Inbound>,
        shutdown: CancellationToken,
    ) {
        // One byte more than the largest legal datagram, so an oversized one is seen as such
        // rather than silently cut to size by the socket.
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut replay = ReplayGuard::new(self.started_ms);
        loop {
            let (len, src) = tokio::select! {
                () = shutdown.cancelled() => return,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok(received) => received,
                    Err(e) => {
                        // ICMP port-unreachable from an earlier send shows up here on
                        // some systems; it says nothing about this socket.
                        debug!("receive failed: {e}");
                        continue;
                    }
                },
            };
            let envelope = match myraft_wire::decode(&buf[..len], &self.key, Some(self.cluster_id))
            {
                Ok(envelope) => envelope,
                Err(e) => {
                    debug!(%src, "dropped datagram: {e}");
                    self.count_drop(e.reason());
                    continue;
                }
            };
            let now_ms = unix_ms();
            if let Err(e) = replay.accept(envelope.from, envelope.msg_id, now_ms) {
                if replay.warn_of_clock(&e, now_ms) {
                    warn!(%src, sender = envelope.from, "dropped datagram: {e}");
                } else {
                    debug!(%src, "dropped datagram: {e}");
                }
                self.count_drop(e.reason());
                continue;
            }
            if let Body::ClientReply(reply) = &envelope.body {
                if reply.client_id == self.id {
                    match lock(&self.calls).remove(&reply.seq) {
                        Some(waiter) => {
                            // The waiter may have timed out just now; nothing to do then.
                            let _ = waiter.send(reply.clone());
                        }
                        None => debug!(seq = reply.seq, "late reply to an own request"),
                    }
                    continue;
                }
            }
            match out.try_send(Inbound { envelope, src }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => self.count_drop("overloaded"),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}

/// `host:port` to a socket address: parsed if it is one, else looked up (first answer).
pub async fn resolve(addr: &str) -> Option<SocketAddr> {
    if let Ok(parsed) = addr.parse() {
        return Some(parsed);
    }
    match tokio::net::lookup_host(addr).await {
        Ok(mut found) => found.next(),
        Err(e) => {
            warn!("cannot resolve {addr}: {e}");
            None
        }
    }
}
