//! The entrance's rules, without I/O (the way the Raft core is): an [`Engine`] takes a
//! datagram that passed [`crate::net`], a probe tick or the completion of a task it asked
//! for, each with the time ([`Now`]), and returns [`Effect`]s: datagrams to send, the state
//! to persist before any of them, tasks to start, events. It holds no socket, reads no
//! clock and touches no file; [`crate::driver`] does all of that. Its randomness (probe
//! nonces, node ids) comes from an injected seeded RNG, so a test replays exactly.
//!
//! - [`admission`]: `JoinRequest`s ([`admission::check_join`] decides, the engine records),
//!   approve/reject, and the queue of configuration changes, one at a time;
//! - [`detector`]: probes, health, leader and term, the configuration as the leader sees
//!   it, and optional removal of long-dead members;
//! - [`router`]: client requests answered here, and those relayed to the leader.

pub mod admission;
pub mod detector;
pub mod router;

use crate::config::Config;
use crate::store::PersistedState;
use admission::Admission;
pub use admission::Change;
use detector::Detector;
use myraft_wire::api::{ClientError, ClientId, ClientReply, ClientResponse};
use myraft_wire::envelope::SenderId;
use myraft_wire::health::{Health, PeerRef};
use myraft_wire::raft::{Member, NodeId, Term};
use myraft_wire::Body;
use rand::rngs::StdRng;
use router::Router;
use std::net::SocketAddr;
use std::time::Instant;
use tracing::info;

/// What the entrance tells whoever listens (tests, and the log): changes of its view of the
/// cluster, as they happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntranceEvent {
    /// A member's health changed.
    Health {
        /// The member.
        id: NodeId,
        /// Its name in the configuration.
        name: String,
        /// What it is now.
        health: Health,
    },
    /// The leader or the term changed.
    Leader {
        /// The leader, or `None` while no member claims leadership the entrance believes.
        leader: Option<PeerRef>,
        /// The latest term the entrance knows of.
        term: Term,
    },
}

/// The time of an input: a monotonic instant for timeouts, the wall clock for what is
/// shown to operators and kept across restarts.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// For durations: health, relays, forgetting.
    pub at: Instant,
    /// Milliseconds since the Unix epoch: when a join was first asked for.
    pub unix_ms: u64,
}

impl Now {
    /// The current time, from the system's clocks.
    pub fn system() -> Now {
        Now {
            at: Instant::now(),
            unix_ms: myraft_wire::util::unix_ms(),
        }
    }
}

/// Where a datagram goes: the address a request came from, or an address from the
/// configuration (maybe a host name, resolved by the driver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendTo {
    /// Answer a source address.
    Socket(SocketAddr),
    /// A member's or a joining node's `host:port`.
    Addr(String),
}

/// `(client_id, seq)` of a client request.
pub type RequestKey = (ClientId, u64);

/// The answer to a client request.
pub type ClientResult = Result<ClientResponse, ClientError>;

/// The leader as the engine last saw it, for tasks that talk to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderAddr {
    /// Its node id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Where it listens.
    pub addr: String,
}

/// Work that talks to nodes for a while (retries, following the leader), run by the driver
/// as a task of its own; its outcome comes back as [`Input::Completed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    /// Ask the leader to add an approved node as a learner, until it commits.
    Add {
        /// The joining node's name.
        name: String,
        /// The id the entrance assigned it.
        node_id: NodeId,
        /// Where it listens.
        addr: String,
    },
    /// Ask the leader to remove a member, then tell the member to exit.
    Remove {
        /// The member's name.
        name: String,
        /// Its id, so a node of the same name that joined since is not stopped.
        id: NodeId,
        /// Where it listens.
        addr: String,
    },
    /// Stop one node and answer the client that asked.
    Stop {
        /// The client request to answer.
        key: RequestKey,
        /// The node's name.
        name: String,
        /// Where it listens.
        addr: String,
    },
    /// Stop the followers, then the leader, then the entrance itself.
    StopAll {
        /// The client request to answer.
        key: RequestKey,
        /// `(name, addr)` of every member but the leader.
        followers: Vec<(String, String)>,
        /// `(name, addr)` of the leader, stopped last.
        leader: Option<(String, String)>,
    },
}

/// What a finished [`Task`] reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    /// `AddMember` was committed (`Ok`), or the leader refused it for good.
    Added {
        /// The node's name.
        name: String,
        /// The id it was added with.
        node_id: NodeId,
        /// The leader's refusal, if it refused.
        result: Result<(), ClientError>,
    },
    /// A removal went through the leader, or failed.
    Removed {
        /// The member's name.
        name: String,
        /// Its id.
        id: NodeId,
        /// The leader's answer.
        result: ClientResult,
    },
    /// The answer to a client's request that a task carried out.
    Answer {
        /// The client request.
        key: RequestKey,
        /// Its answer.
        result: ClientResult,
    },
    /// `stop --all` went through every node; the entrance stops next.
    StoppedAll {
        /// The client request.
        key: RequestKey,
        /// Its answer.
        result: ClientResult,
    },
}

/// One input of the engine.
#[derive(Debug)]
pub enum Input {
    /// A datagram that passed authentication and the replay filter.
    Datagram {
        /// The envelope's sender id.
        from: SenderId,
        /// The address it came from, to answer.
        src: SocketAddr,
        /// What it says.
        body: Body,
    },
    /// A probe round is due.
    Tick,
    /// A task finished.
    Completed(Completion),
}

/// What the engine asks of its driver, in order.
// Effects live only from one input to the driver's next await; boxing every datagram to
// shrink them would cost an allocation per send for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Save this state durably before doing anything that follows: nothing is promised to
    /// a node or a client before it is on disk. Always first when present.
    Persist(Box<PersistedState>),
    /// Send one datagram.
    Send {
        /// Where to.
        to: SendTo,
        /// What.
        body: Body,
    },
    /// Start a task.
    Start(Task),
    /// The leader tasks should talk to from now on.
    Leader(Option<LeaderAddr>),
    /// Tell listeners.
    Event(EntranceEvent),
    /// A datagram was dropped, for this reason (counted by the driver).
    Dropped(&'static str),
    /// Stop the entrance once the effects before this are carried out.
    Stop,
}

/// The entrance as a pure state machine; see the module docs.
pub struct Engine {
    config: Config,
    /// The address clients are told to use.
    local_addr: SocketAddr,
    state: PersistedState,
    /// `state` changed since the last [`Effect::Persist`].
    dirty: bool,
    detector: Detector,
    router: Router,
    admission: Admission,
    /// What tasks were last told about the leader.
    published_leader: Option<LeaderAddr>,
    rng: StdRng,
    now: Now,
    effects: Vec<Effect>,
}

impl Engine {
    /// An engine for the state loaded from the data dir: it watches the members, and
    /// re-queues the joins approved before a restart. The effects of that start come with
    /// the first [`Engine::handle`] (or [`Engine::take_effects`]).
    pub fn new(
        config: Config,
        state: PersistedState,
        local_addr: SocketAddr,
        rng: StdRng,
        now: Now,
    ) -> Engine {
        let detector = Detector::new(config.probe_interval, config.down_after);
        let router = Router::new(config.relay_timeout);
        let mut engine = Engine {
            config,
            local_addr,
            state,
            dirty: false,
            detector,
            router,
            admission: Admission::default(),
            published_leader: None,
            rng,
            now,
            effects: Vec::new(),
        };
        engine.sync_trackers();
        engine.restart_changes();
        engine
    }

    /// Handles one input at `now` and returns what to do, in order.
    pub fn handle(&mut self, now: Now, input: Input) -> Vec<Effect> {
        self.now = now;
        match input {
            Input::Datagram { from, src, body } => self.on_datagram(from, src, body),
            Input::Tick => self.on_tick(),
            Input::Completed(c) => self.on_completed(c),
        }
        self.take_effects()
    }

    /// The effects produced so far, with [`Effect::Persist`] first if the state changed.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        let mut out = Vec::with_capacity(self.effects.len() + 1);
        if self.dirty {
            self.dirty = false;
            out.push(Effect::Persist(Box::new(self.state.clone())));
        }
        out.append(&mut self.effects);
        out
    }

    /// The state as it stands (persisted, or about to be).
    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    /// How often probe rounds should come ([`Input::Tick`]); the driver jitters it.
    pub fn probe_interval(&self) -> std::time::Duration {
        self.config.probe_interval
    }

    fn on_datagram(&mut self, from: SenderId, src: SocketAddr, body: Body) {
        match body {
            Body::JoinRequest(request) => self.on_join_request(request, src),
            Body::ProbeReply(reply) => self.on_probe_reply(from, reply),
            Body::ClientRequest(request) => self.on_client_request(request, src),
            Body::ClientReply(reply) => self.on_relayed_reply(reply),
            other => {
                self.dropped("unexpected");
                tracing::debug!(kind = other.kind(), %src, "dropped: not for the entrance");
            }
        }
    }

    fn on_completed(&mut self, done: Completion) {
        match done {
            Completion::Added {
                name,
                node_id,
                result,
            } => self.on_added(name, node_id, result),
            Completion::Removed { name, id, result } => self.on_removed(name, id, result),
            Completion::Answer { key, result } => self.answer_local_op(key, result),
            Completion::StoppedAll { key, result } => {
                self.answer_local_op(key, result);
                info!("every node was asked to stop; the entrance stops too");
                self.effects.push(Effect::Stop);
            }
        }
    }

    // ---- helpers shared by the handlers -------------------------------------------------

    fn send(&mut self, to: SendTo, body: Body) {
        self.effects.push(Effect::Send { to, body });
    }

    fn dropped(&mut self, reason: &'static str) {
        self.effects.push(Effect::Dropped(reason));
    }

    fn emit(&mut self, event: EntranceEvent) {
        self.effects.push(Effect::Event(event));
    }

    fn reply(&mut self, to: SocketAddr, key: RequestKey, result: ClientResult) {
        let (client_id, seq) = key;
        self.send(
            SendTo::Socket(to),
            Body::ClientReply(ClientReply {
                client_id,
                seq,
                result,
            }),
        );
    }

    fn member_by_name(&self, name: &str) -> Option<&Member> {
        self.state.members.values().find(|m| m.name == name)
    }

    fn peer_ref(&self, id: NodeId) -> PeerRef {
        let name = self
            .state
            .members
            .get(&id)
            .map(|m| m.name.clone())
            .or_else(|| self.detector.reply(id).map(|r| r.name.clone()))
            .unwrap_or_else(|| format!("{id:016x}"));
        PeerRef { id, name }
    }

    /// Keeps one tracker per member: new members are watched from now, removed ones
    /// forgotten.
    fn sync_trackers(&mut self) {
        self.detector.watch(&self.state.members, self.now.at);
        self.publish_leader();
    }

    fn set_leader(&mut self, leader: Option<NodeId>, term: Term) {
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
    fn publish_leader(&mut self) {
        let current = self.state.leader.and_then(|id| {
            self.state.members.get(&id).map(|m| LeaderAddr {
                id,
                name: m.name.clone(),
                addr: m.addr.clone(),
            })
        });
        if current != self.published_leader {
            self.published_leader = current.clone();
            self.effects.push(Effect::Leader(current));
        }
    }

    /// Whether `id` answered its recent probes.
    fn is_up(&self, id: NodeId) -> bool {
        self.detector.health(id) == Some(Health::Up)
    }
}

#[cfg(test)]
mod tests;
