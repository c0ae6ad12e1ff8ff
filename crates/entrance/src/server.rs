//! The server loop: one task owns all of the entrance's state and handles, one at a time,
//! a datagram that passed [`crate::net`], a probe tick, or the outcome of a request that a
//! task in [`crate::ops`] finished. Handlers never wait on the network: whatever they
//! answer goes into an outbox that is sent after the state they promise is on disk.
//!
//! The handlers live next to what they are about: [`crate::admission`] (joins),
//! [`crate::detector`] (probes and health), [`crate::router`] (client requests).

use crate::config::Config;
use crate::net::{Inbound, Net};
use crate::ops::{Done, LeaderAddr};
use crate::store::{PersistedState, Store};
use myraft_wire::client::{ClientError, ClientId, ClientReply, ClientResponse};
use myraft_wire::health::{Health, PeerRef};
use myraft_wire::raft::{Member, NodeId, Term};
use myraft_wire::Body;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

/// What the entrance tells whoever listens (tests, and the log): changes of its view of the
/// cluster, as they happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntranceEvent {
    Health {
        id: NodeId,
        name: String,
        health: Health,
    },
    Leader {
        leader: Option<PeerRef>,
        term: Term,
    },
}

/// Where an outgoing datagram goes: a source address we answer, or an address from the
/// configuration (maybe a host name).
pub(crate) enum Dest {
    Socket(SocketAddr),
    Addr(String),
}

/// A configuration change the entrance drives through the leader, one at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Add {
        name: String,
    },
    Remove {
        name: String,
        origin: Option<RequestKey>,
    },
}

/// `(client_id, seq)` of a client request.
pub(crate) type RequestKey = (ClientId, u64);

/// Per member, what the failure detector knows.
#[derive(Debug)]
pub(crate) struct Tracker {
    /// When the entrance started watching this member; "never answered" counts from here.
    pub since: Instant,
    pub last_contact: Option<Instant>,
    pub reply: Option<myraft_wire::health::ProbeReply>,
    /// Nonces of the last few probes, so that only answers to recent probes count.
    pub nonces: VecDeque<u64>,
    pub health: Health,
}

impl Tracker {
    pub fn new(now: Instant) -> Self {
        Self {
            since: now,
            last_contact: None,
            reply: None,
            nonces: VecDeque::new(),
            // Unknown until it answers or stays silent long enough to be called down.
            health: Health::Suspect,
        }
    }
}

/// Volatile facts about a pending join.
#[derive(Debug)]
pub(crate) struct PendingMeta {
    /// Where its last request came from, to send the verdict there.
    pub src: Option<SocketAddr>,
    pub last_heard: Instant,
}

/// A request the entrance answers itself once a task finishes it (stop, remove).
#[derive(Debug)]
pub(crate) struct LocalOp {
    /// The latest source address: a client that retried may have moved.
    pub reply_to: SocketAddr,
}

/// A client request forwarded to the leader, waiting for its reply.
#[derive(Debug)]
pub(crate) struct Relay {
    pub reply_to: SocketAddr,
    pub since: Instant,
}

pub(crate) struct Core {
    pub config: Config,
    pub net: Arc<Net>,
    pub store: Arc<Store>,
    pub state: PersistedState,
    /// The persistent state changed since it was last saved.
    pub dirty: bool,
    pub outbox: Vec<(Dest, Body)>,
    pub trackers: BTreeMap<NodeId, Tracker>,
    pub pending_meta: HashMap<String, PendingMeta>,
    /// When each rejection is forgotten, so the name can ask again later.
    pub rejected_until: HashMap<String, Instant>,
    pub changes: VecDeque<Change>,
    pub in_flight: Option<Change>,
    pub local_ops: HashMap<RequestKey, LocalOp>,
    pub relays: HashMap<RequestKey, Relay>,
    pub leader_tx: watch::Sender<Option<LeaderAddr>>,
    pub events: broadcast::Sender<EntranceEvent>,
    pub done_tx: mpsc::UnboundedSender<Done>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    /// Set by `stop --all`: end the entrance once the reply is out.
    pub stop_after_flush: bool,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Core {
    pub fn reply(&mut self, to: SocketAddr, client_id: ClientId, seq: u64, result: ClientResult) {
        self.outbox.push((
            Dest::Socket(to),
            Body::ClientReply(ClientReply {
                client_id,
                seq,
                result,
            }),
        ));
    }

    pub fn emit(&self, event: EntranceEvent) {
        // Nobody listening is the normal case outside tests.
        let _ = self.events.send(event);
    }

    pub fn member_by_name(&self, name: &str) -> Option<&Member> {
        self.state.members.values().find(|m| m.name == name)
    }

    pub fn peer_ref(&self, id: NodeId) -> PeerRef {
        let name = self
            .state
            .members
            .get(&id)
            .map(|m| m.name.clone())
            .or_else(|| {
                self.trackers
                    .get(&id)
                    .and_then(|t| t.reply.as_ref())
                    .map(|r| r.name.clone())
            })
            .unwrap_or_else(|| format!("{id:016x}"));
        PeerRef { id, name }
    }

    /// Keeps one tracker per member: new members are watched from now, removed ones
    /// forgotten.
    pub fn sync_trackers(&mut self) {
        let now = Instant::now();
        self.trackers
            .retain(|id, _| self.state.members.contains_key(id));
        for id in self.state.members.keys() {
            self.trackers
                .entry(*id)
                .or_insert_with(|| Tracker::new(now));
        }
        self.publish_leader();
    }

    pub fn set_leader(&mut self, leader: Option<NodeId>, term: Term) {
        if self.state.leader == leader && self.state.term == term {
            return;
        }
        let changed_leader = self.state.leader != leader;
        self.state.leader = leader;
        self.state.term = term;
        self.dirty = true;
        let peer = leader.map(|id| self.peer_ref(id));
        if changed_leader {
            match &peer {
                Some(p) => info!(leader = %p.name, term, "leader is {}", p.name),
                None => info!(term, "no leader known"),
            }
        }
        self.emit(EntranceEvent::Leader { leader: peer, term });
        self.publish_leader();
    }

    /// Tells the tasks that talk to the leader where it is now.
    pub fn publish_leader(&self) {
        let current = self.state.leader.and_then(|id| {
            self.state.members.get(&id).map(|m| LeaderAddr {
                id,
                name: m.name.clone(),
                addr: m.addr.clone(),
            })
        });
        self.leader_tx.send_if_modified(|old| {
            if *old == current {
                false
            } else {
                *old = current;
                true
            }
        });
    }

    fn handle(&mut self, inbound: Inbound) {
        let Inbound { envelope, src } = inbound;
        match envelope.body {
            Body::JoinRequest(request) => self.on_join_request(request, src),
            Body::ProbeReply(reply) => self.on_probe_reply(envelope.from, reply),
            Body::ClientRequest(request) => self.on_client_request(request, src),
            Body::ClientReply(reply) => self.on_relayed_reply(reply),
            other => {
                self.net.count_drop("unexpected");
                tracing::debug!(kind = other.kind(), %src, "dropped: not for the entrance");
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Added {
                name,
                node_id,
                result,
            } => self.on_added(name, node_id, result),
            Done::Removed { name, id, result } => self.on_removed(name, id, result),
            Done::Answer { key, result } => {
                if let Some(op) = self.local_ops.remove(&key) {
                    self.reply(op.reply_to, key.0, key.1, result);
                }
            }
            Done::StoppedAll { key, result } => {
                if let Some(op) = self.local_ops.remove(&key) {
                    self.reply(op.reply_to, key.0, key.1, result);
                }
                info!("every node was asked to stop; the entrance stops too");
                self.stop_after_flush = true;
            }
        }
    }

    /// Saves the state if it changed, then sends what the handlers queued: nothing is
    /// promised to a node or client before it is on disk.
    async fn flush(&mut self) {
        if self.dirty {
            self.dirty = false;
            let store = Arc::clone(&self.store);
            let snapshot = self.state.clone();
            let saved = tokio::task::spawn_blocking(move || store.save(&snapshot)).await;
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!("cannot save the entrance state: {e}"),
                Err(e) => error!("cannot save the entrance state: {e}"),
            }
        }
        for (dest, body) in self.outbox.drain(..) {
            match dest {
                Dest::Socket(to) => self.net.send(to, &body),
                Dest::Addr(addr) => self.net.send_to_addr(&addr, &body),
            }
        }
    }
}

pub(crate) type ClientResult = Result<ClientResponse, ClientError>;

fn jittered(interval: Duration) -> Duration {
    // ±20 %, so probes of several entrances (or restarts) do not fall into lockstep.
    interval.mul_f64(rand::random_range(0.8..=1.2))
}

/// Runs the server loop until `shutdown`.
pub(crate) async fn serve(
    mut core: Core,
    mut inbound: mpsc::Receiver<Inbound>,
    mut done_rx: mpsc::UnboundedReceiver<Done>,
) {
    core.sync_trackers();
    core.restart_changes();
    let shutdown = core.shutdown.clone();
    let mut next_tick = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(datagram) = inbound.recv() => core.handle(datagram),
            Some(done) = done_rx.recv() => core.on_done(done),
            () = tokio::time::sleep_until(next_tick) => {
                core.on_tick();
                next_tick = tokio::time::Instant::now() + jittered(core.config.probe_interval);
            }
        }
        core.flush().await;
        if core.stop_after_flush {
            shutdown.cancel();
        }
    }
    core.flush().await;
    info!("entrance stopped");
}
