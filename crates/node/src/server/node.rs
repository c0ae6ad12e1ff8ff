//! The node's event loop: one task owns the socket, the Raft core, the storage and the state
//! machine. Each turn takes whatever inputs are waiting (datagrams, a tick), steps them into
//! the core, then persists, sends and applies what the core hands back (`Ready`).

use super::apply::{PendingKind, PendingWrite, ReadRequest};
use super::clock::ReplicatedClock;
use super::config::NodeConfig;
use super::identity::Identity;
use super::join::join;
use super::snapshot_transfer::SnapshotTransfers;
use super::transport::{Socket, Transport};
use super::ServerError;
use crate::raft::{Config as RaftConfig, InitialState, Raft, RaftError, Role as RaftRole};
use crate::state_machine::{ClientCommand, Command, LogCommand, StateMachine};
use crate::storage::{DataDirLock, DiskStorage, Storage};
use myraft_wire::client::{
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, Consistency, LeaderHint,
    NodeDetail, StopTarget,
};
use myraft_wire::envelope::{Body, UNKNOWN_CLUSTER};
use myraft_wire::health::{Health, PeerRef, Probe, ProbeReply, Role};
use myraft_wire::raft::{Member, Membership, NodeId, RaftBody, RaftMessage};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Keys and values beyond these sizes are refused: an entry must fit a datagram.
pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
/// Datagrams handled per turn before the core's output is persisted: the group-commit batch.
const MAX_BATCH: usize = 256;

pub(super) struct Node {
    pub cfg: NodeConfig,
    pub advertise: String,
    pub raft: Raft,
    pub storage: DiskStorage,
    pub sm: StateMachine,
    pub t: Transport,
    pub snaps: SnapshotTransfers,
    /// Peer addresses: from the configuration, else from where their datagrams came.
    pub seen: BTreeMap<NodeId, SocketAddr>,
    pub pending_writes: BTreeMap<u64, PendingWrite>,
    pub pending_reads: BTreeMap<u64, ReadRequest>,
    /// Released reads waiting for the state machine to reach their index.
    pub ready_reads: BTreeMap<u64, Vec<u64>>,
    next_ctx: u64,
    started: Instant,
    was_leader: bool,
    data_dir_bytes: u64,
    ticks: u64,
    clock: ReplicatedClock,
    /// The configuration last applied, to tell which members a new one removes.
    applied_membership: Membership,
    /// Members a committed configuration removed: told to stop a few times, since a removed
    /// follower hears nothing more from the leader and would never learn it on its own.
    removed_notices: Vec<RemovedNotice>,
    pub shutdown: CancellationToken,
}

struct RemovedNotice {
    name: String,
    addr: SocketAddr,
    sends_left: u32,
}

/// How often a removed member is told to stop, once per heartbeat, against datagram loss.
const REMOVED_NOTICES: u32 = 5;

/// Runs a node until `shutdown` is cancelled (Ctrl-C, SIGTERM, a `StopNode` request or a
/// test), then flushes and returns.
pub async fn run(cfg: NodeConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    let lock = lock_data_dir(&cfg)?;
    let socket =
        super::transport::UdpSocket::bind(cfg.listen).map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    serve(cfg, Box::new(socket), shutdown, lock).await
}

/// [`run`] on a socket the caller bound, such as one of a simulated network; `cfg.listen`
/// is not used.
pub async fn run_with_socket(
    cfg: NodeConfig,
    socket: impl Socket,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let lock = lock_data_dir(&cfg)?;
    serve(cfg, Box::new(socket), shutdown, lock).await
}

/// Taken before the socket is bound, so that a second process on the same data dir is told
/// about the data dir, not about the port.
fn lock_data_dir(cfg: &NodeConfig) -> Result<DataDirLock, ServerError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| ServerError::io("create", &cfg.data_dir, e))?;
    Ok(DataDirLock::acquire(&cfg.data_dir)?)
}

async fn serve(
    cfg: NodeConfig,
    socket: Box<dyn Socket>,
    shutdown: CancellationToken,
    _lock: DataDirLock,
) -> Result<(), ServerError> {
    let bound = socket
        .local_addr()
        .map_err(|e| ServerError::io("inspect", Path::new("socket"), e))?;
    let advertise = cfg.advertised(bound);
    let raft_dir = cfg.data_dir.join("raft");
    let (mut storage, report) = DiskStorage::open(&raft_dir, cfg.disk.clone())?;
    if report.truncated_bytes > 0 {
        tracing::warn!(?report.truncated_at, bytes = report.truncated_bytes, "cut a torn record from the log tail (a crash during a write)");
    }

    let mut rng = match cfg.rng_seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_rng(&mut rand::rng()),
    };
    let (identity, t) = match Identity::load(&cfg.data_dir)? {
        Some(id) => {
            tracing::info!(node_id = %format!("{:x}", id.node_id), "restarting from {}", cfg.data_dir.display());
            let t = Transport::open(socket, &cfg, id.cluster_id, id.node_id)?;
            (id, t)
        }
        None => {
            let node_id = loop {
                let id: u64 = rng.random();
                if id != 0 {
                    break id;
                }
            };
            let mut t = Transport::open(socket, &cfg, UNKNOWN_CLUSTER, node_id)?;
            let Some(admitted) = join(
                &mut t,
                &cfg.entrances,
                &cfg.name,
                &advertise,
                node_id,
                &shutdown,
            )
            .await?
            else {
                return Ok(());
            };
            let id = Identity {
                cluster_id: admitted.cluster_id,
                node_id: admitted.node_id,
                name: cfg.name.clone(),
            };
            let founding = admitted.membership.members.len() == 1
                && admitted.membership.is_voter(admitted.node_id);
            if founding && storage.last_index() == 0 {
                let init = InitialState::bootstrap(admitted.membership.clone());
                storage.append(&init.entries)?;
                storage.save_hard_state(&init.hard_state)?;
                storage.sync()?;
                tracing::info!("founded a new cluster {:x}", admitted.cluster_id);
            }
            id.store(&cfg.data_dir)?;
            t.cluster_id = id.cluster_id;
            t.me = id.node_id;
            tracing::info!(
                "admitted as {:x} to cluster {:x}",
                id.node_id,
                id.cluster_id
            );
            (id, t)
        }
    };

    let (init, sm) = recover(&storage)?;
    // The state machine starts from the snapshot, so the configuration applied so far is
    // the snapshot's; the log after it is applied again.
    let applied_membership = init
        .snapshot
        .as_ref()
        .map(|s| s.meta.membership.clone())
        .unwrap_or_default();
    let mut rc = RaftConfig::new(identity.node_id);
    rc.election_ticks = cfg.timing.election_ticks;
    rc.heartbeat_ticks = cfg.timing.heartbeat_ticks;
    // Leave room for the envelope, tag and message framing.
    rc.max_msg_bytes = cfg.max_datagram.saturating_sub(300).max(256);
    let raft = Raft::new(rc, init, StdRng::seed_from_u64(rng.random()));
    let mut seen = BTreeMap::new();
    remember_addrs(&mut seen, raft.membership());

    let mut node = Node {
        snaps: SnapshotTransfers::new(cfg.max_datagram),
        advertise,
        raft,
        storage,
        sm,
        t,
        seen,
        pending_writes: BTreeMap::new(),
        pending_reads: BTreeMap::new(),
        ready_reads: BTreeMap::new(),
        next_ctx: 1,
        started: Instant::now(),
        was_leader: false,
        data_dir_bytes: 0,
        ticks: 0,
        clock: ReplicatedClock::default(),
        applied_membership,
        removed_notices: Vec::new(),
        shutdown: shutdown.clone(),
        cfg,
    };
    node.data_dir_bytes = dir_size(&node.cfg.data_dir);
    tracing::info!(name = %node.cfg.name, listen = %bound, advertise = %node.advertise, "node running");
    node.event_loop().await
}

/// What the core and the state machine start from: the snapshot, and the log after it.
pub(super) fn recover(storage: &DiskStorage) -> Result<(InitialState, StateMachine), ServerError> {
    let snapshot = storage.snapshot()?;
    let sm = match &snapshot {
        Some(s) => StateMachine::restore(&s.data).map_err(|e| {
            ServerError::Recovery(format!("snapshot at index {}: {e}", s.meta.last_index))
        })?,
        None => StateMachine::default(),
    };
    let entries = storage.entries(storage.first_index(), storage.last_index() + 1)?;
    let init = InitialState {
        hard_state: storage.hard_state(),
        snapshot,
        entries,
    };
    Ok((init, sm))
}

fn remember_addrs(seen: &mut BTreeMap<NodeId, SocketAddr>, m: &Membership) {
    for mem in m.members.values() {
        if let Ok(a) = mem.addr.parse() {
            seen.insert(mem.id, a);
        }
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Node {
    async fn event_loop(&mut self) -> Result<(), ServerError> {
        let mut tick = tokio::time::interval(self.cfg.timing.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Polled in a fixed order, so that a run on a simulated network replays from its
            // seed; a tick comes at most once per `timing.tick`, so it cannot starve the socket.
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                _ = tick.tick() => self.on_tick(),
                r = self.t.recv() => {
                    let (env, from) = r.map_err(|e| ServerError::io("receive on", Path::new("socket"), e))?;
                    self.on_datagram(env.from, env.body, from);
                    // Everything already waiting joins this batch: one fsync covers it all.
                    for _ in 0..MAX_BATCH {
                        let Some((env, from)) = self.t.try_recv() else { break };
                        self.on_datagram(env.from, env.body, from);
                    }
                }
            }
            self.handle_ready()?;
            self.after_turn();
        }
        self.handle_ready()?;
        self.storage.sync()?;
        tracing::info!("node stopped");
        Ok(())
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        self.raft.tick();
        self.snaps.on_tick(&mut self.t);
        self.maybe_promote_learner();
        if self
            .ticks
            .is_multiple_of(u64::from(self.cfg.timing.heartbeat_ticks.max(1)))
        {
            self.send_removed_notices();
        }
        if self.ticks.is_multiple_of(100) {
            self.data_dir_bytes = dir_size(&self.cfg.data_dir);
        }
    }

    fn after_turn(&mut self) {
        let leader = self.raft.is_leader();
        if leader && !self.was_leader {
            tracing::info!(term = self.raft.term(), "became leader");
            // The entrance learns of a new leader at once, not at its next probe.
            let reply = self.probe_reply(0);
            for e in self.cfg.entrances.clone() {
                self.t.send(e, Body::ProbeReply(reply.clone()));
            }
        }
        self.was_leader = leader;
    }

    fn on_datagram(&mut self, sender: u64, body: Body, from: SocketAddr) {
        match body {
            Body::Raft(m) => {
                if m.from == sender {
                    self.seen.entry(sender).or_insert(from);
                }
                self.raft.step(m);
            }
            Body::SnapshotChunk(c) => {
                if let Some(m) = self.snaps.on_chunk(&mut self.t, sender, from, c) {
                    self.raft.step(m);
                }
            }
            Body::SnapshotChunkAck(a) => self.snaps.on_ack(&mut self.t, sender, a),
            Body::Probe(Probe { nonce }) => {
                let reply = self.probe_reply(nonce);
                self.t.send(from, Body::ProbeReply(reply));
            }
            Body::ClientRequest(req) => self.on_client(from, req),
            other => tracing::debug!(
                kind = other.kind(),
                "ignored datagram a node does not handle"
            ),
        }
    }

    // ---- Ready: persist, send, apply --------------------------------------------------

    fn handle_ready(&mut self) -> Result<(), ServerError> {
        while self.raft.has_ready() {
            let prev = self.storage.hard_state();
            let rd = self.raft.ready();
            // A leader's AppendEntries promise nothing, so they may leave before its own
            // fsync (dissertation §10.2.1): replication overlaps the leader's disk write.
            let early = self.raft.is_leader()
                && rd.snapshot.is_none()
                && rd
                    .hard_state
                    .is_none_or(|hs| hs.term == prev.term && hs.vote == prev.vote);
            if early {
                self.send_raft(rd.messages.clone());
            }
            let mut wrote = false;
            if let Some(s) = &rd.snapshot {
                self.storage.save_snapshot(s)?;
                self.storage.compact_prefix(s.meta.last_index)?;
                self.sm = StateMachine::restore(&s.data)
                    .map_err(|e| ServerError::Recovery(format!("snapshot from the leader: {e}")))?;
                self.fail_pending_below(s.meta.last_index);
                tracing::info!(
                    index = s.meta.last_index,
                    "installed a snapshot from the leader"
                );
            }
            if !rd.entries.is_empty() {
                self.storage.append(&rd.entries)?;
                wrote = true;
            }
            if let Some(hs) = &rd.hard_state {
                self.storage.save_hard_state(hs)?;
                wrote = true;
            }
            if wrote {
                self.storage.sync()?;
            }
            if !early {
                self.send_raft(rd.messages);
            }
            self.raft.advance();
            self.apply(rd.committed);
            for r in rd.reads {
                self.ready_reads.entry(r.index).or_default().push(r.ctx);
            }
            for ctx in rd.failed_reads {
                if let Some(r) = self.pending_reads.remove(&ctx) {
                    let hint = self.leader_hint();
                    self.reply(
                        r.addr,
                        r.client_id,
                        r.seq,
                        Err(ClientError::NotLeader { hint }),
                    );
                }
            }
            self.serve_ready_reads();
            self.maybe_snapshot()?;
        }
        Ok(())
    }

    fn send_raft(&mut self, msgs: Vec<RaftMessage>) {
        for m in msgs {
            let Some(addr) = self.peer_addr(m.to) else {
                tracing::debug!("no address for {:x}; message dropped", m.to);
                continue;
            };
            if let RaftBody::InstallSnapshot(is) = &m.body {
                let (index, term) = (is.snapshot.meta.last_index, is.snapshot.meta.last_term);
                self.snaps.start(&mut self.t, m.to, addr, index, term, &m);
                continue;
            }
            self.t.send(addr, Body::Raft(m));
        }
    }

    fn peer_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.raft
            .membership()
            .members
            .get(&id)
            .and_then(|m| m.addr.parse().ok())
            .or_else(|| self.seen.get(&id).copied())
    }

    fn maybe_snapshot(&mut self) -> Result<(), ServerError> {
        let applied = self.sm.applied_index();
        if applied < self.raft.log().snapshot_index() + self.cfg.snapshot_every {
            return Ok(());
        }
        let snap = self
            .raft
            .compact(applied, self.sm.snapshot())
            .map_err(|e| ServerError::Recovery(format!("taking a snapshot: {e}")))?;
        self.storage.save_snapshot(&snap)?;
        self.storage.compact_prefix(snap.meta.last_index)?;
        tracing::info!(index = applied, bytes = snap.data.len(), "took a snapshot");
        Ok(())
    }

    /// The leader promotes one caught-up learner at a time (dissertation §4.2.1).
    fn maybe_promote_learner(&mut self) {
        let Some(id) = self.raft.promotable_learner() else {
            return;
        };
        let Some(m) = self.raft.membership().members.get(&id).cloned() else {
            return;
        };
        let mut next = self.raft.membership().clone();
        next.members.insert(
            m.id,
            Member {
                voter: true,
                ..m.clone()
            },
        );
        match self.raft.propose_membership(next) {
            Ok(_) => tracing::info!("promoting {} to voter", m.name),
            Err(e) => tracing::debug!(error = %e, "promotion of {} postponed", m.name),
        }
    }

    /// Called as a committed configuration applies: members it drops are told to stop.
    pub(super) fn on_config_applied(&mut self, m: &Membership) {
        let previous = std::mem::replace(&mut self.applied_membership, m.clone());
        if !self.raft.is_leader() {
            return;
        }
        for gone in previous.members.values() {
            if gone.id == self.raft.id() || m.contains(gone.id) {
                continue;
            }
            let Ok(addr) = gone.addr.parse() else {
                continue;
            };
            self.removed_notices.push(RemovedNotice {
                name: gone.name.clone(),
                addr,
                sends_left: REMOVED_NOTICES,
            });
        }
        self.send_removed_notices();
    }

    fn send_removed_notices(&mut self) {
        let me = self.raft.id();
        let mut notices = std::mem::take(&mut self.removed_notices);
        for n in &mut notices {
            n.sends_left -= 1;
            let req = ClientRequest {
                client_id: me,
                seq: u64::from(n.sends_left),
                op: ClientOp::StopNode {
                    target: StopTarget::Node {
                        name: n.name.clone(),
                    },
                },
            };
            self.t.send(n.addr, Body::ClientRequest(req));
        }
        notices.retain(|n| n.sends_left > 0);
        self.removed_notices = notices;
    }

    // ---- clients -----------------------------------------------------------------------

    pub fn leader_hint(&self) -> Option<LeaderHint> {
        let id = self.raft.leader()?;
        let m = self.raft.membership().members.get(&id)?;
        Some(LeaderHint {
            id,
            name: m.name.clone(),
            addr: m.addr.clone(),
        })
    }

    pub fn reply(
        &mut self,
        to: SocketAddr,
        client_id: u64,
        seq: u64,
        result: Result<ClientResponse, ClientError>,
    ) {
        self.t.send(
            to,
            Body::ClientReply(ClientReply {
                client_id,
                seq,
                result,
            }),
        );
    }

    fn not_leader(&self) -> Result<ClientResponse, ClientError> {
        Err(ClientError::NotLeader {
            hint: self.leader_hint(),
        })
    }

    fn on_client(&mut self, addr: SocketAddr, req: ClientRequest) {
        let ClientRequest { client_id, seq, op } = req;
        let result = match op {
            ClientOp::Put { key, value } => {
                if let Err(e) = check_key(&key) {
                    Err(e)
                } else if value.len() > MAX_VALUE_BYTES {
                    Err(bad(format!(
                        "value of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
                        value.len()
                    )))
                } else {
                    return self.propose_write(addr, client_id, seq, Command::Put { key, value });
                }
            }
            ClientOp::Delete { key } => match check_key(&key) {
                Err(e) => Err(e),
                Ok(()) => return self.propose_write(addr, client_id, seq, Command::Delete { key }),
            },
            ClientOp::Compact { rev } => {
                return self.propose_write(addr, client_id, seq, Command::Compact { revision: rev })
            }
            ClientOp::Get {
                ref key,
                consistency,
                ..
            } => match check_key(key) {
                Err(e) => Err(e),
                Ok(()) if consistency == Consistency::Stale => self.serve_read(&op),
                Ok(()) => return self.start_read(addr, client_id, seq, op),
            },
            ClientOp::History { ref key } => match check_key(key) {
                Err(e) => Err(e),
                Ok(()) => return self.start_read(addr, client_id, seq, op),
            },
            ClientOp::NodeDetail { name } => {
                if name.is_empty() || name == self.cfg.name {
                    Ok(ClientResponse::NodeDetail(self.node_detail()))
                } else {
                    Err(ClientError::NotFound {
                        what: format!(
                            "node {name} (a node describes only itself; ask the entrance)"
                        ),
                    })
                }
            }
            ClientOp::StopNode { target } => match target {
                StopTarget::Node { name } if name != self.cfg.name => Err(ClientError::NotFound {
                    what: format!("node {name} (this is {})", self.cfg.name),
                }),
                _ => {
                    tracing::info!("stopping on request from {addr}");
                    self.reply(addr, client_id, seq, Ok(ClientResponse::Done));
                    self.shutdown.cancel();
                    return;
                }
            },
            ClientOp::TransferLeader { name } => match self.member_by_name(&name) {
                None => Err(ClientError::NotFound {
                    what: format!("member {name}"),
                }),
                Some(m) => self
                    .raft
                    .transfer_leader(m.id)
                    .map(|()| ClientResponse::Done)
                    .map_err(|e| self.raft_error(e)),
            },
            ClientOp::RemoveNode { name } => match self.member_by_name(&name) {
                None => Err(ClientError::NotFound {
                    what: format!("member {name}"),
                }),
                Some(m) => {
                    let mut next = self.raft.membership().clone();
                    next.members.remove(&m.id);
                    return self.propose_config(addr, client_id, seq, next);
                }
            },
            ClientOp::AddMember {
                id,
                name,
                addr: member_addr,
            } => {
                let current = self.raft.membership();
                if !self.raft.is_leader() {
                    // `Done` means committed, and only the leader knows that.
                    self.not_leader()
                } else if current.members.get(&id).is_some_and(|m| m.name == name) {
                    if self.raft.membership_committed() {
                        Ok(ClientResponse::Done)
                    } else {
                        // A retry while the change is still uncommitted: answer when it
                        // commits, or with `NotLeader` if another leader's entry replaces it.
                        return self.await_membership(addr, client_id, seq);
                    }
                } else if let Some(other) = current
                    .members
                    .values()
                    .find(|m| m.name == name || m.addr == member_addr)
                {
                    Err(ClientError::Rejected {
                        reason: format!("{} at {} is already a member", other.name, other.addr),
                    })
                } else {
                    let mut next = current.clone();
                    next.members.insert(
                        id,
                        Member {
                            id,
                            name,
                            addr: member_addr.clone(),
                            voter: false,
                        },
                    );
                    if let Ok(a) = member_addr.parse() {
                        self.seen.insert(id, a);
                    }
                    return self.propose_config(addr, client_id, seq, next);
                }
            }
            ClientOp::Status
            | ClientOp::PendingJoins
            | ClientOp::Approve { .. }
            | ClientOp::Reject { .. } => Err(bad(
                "this request is answered by the entrance, not by a node".into(),
            )),
        };
        self.reply(addr, client_id, seq, result);
    }

    fn member_by_name(&self, name: &str) -> Option<Member> {
        self.raft
            .membership()
            .members
            .values()
            .find(|m| m.name == name)
            .cloned()
    }

    pub fn raft_error(&self, e: RaftError) -> ClientError {
        match e {
            RaftError::NotLeader { .. } => ClientError::NotLeader {
                hint: self.leader_hint(),
            },
            RaftError::TransferInProgress => ClientError::Unavailable {
                reason: "a leadership transfer is in progress; retry shortly".into(),
            },
            RaftError::ConfigChangePending => ClientError::Unavailable {
                reason: "another membership change is in progress; retry shortly".into(),
            },
            RaftError::InvalidConfigChange(r) => ClientError::Rejected { reason: r },
            RaftError::InvalidSnapshot(r) => ClientError::Unavailable { reason: r },
        }
    }

    fn propose_write(&mut self, addr: SocketAddr, client_id: u64, seq: u64, cmd: Command) {
        if !self.raft.is_leader() {
            let r = self.not_leader();
            return self.reply(addr, client_id, seq, r);
        }
        let entry_time_ms = self.replicated_now();
        let payload = LogCommand {
            entry_time_ms,
            req: ClientCommand {
                client_id,
                seq,
                cmd,
            },
        }
        .encode();
        let proposed = self.raft.propose(payload);
        self.track_proposal(proposed, PendingKind::Write, addr, client_id, seq);
    }

    /// The time to stamp on a new entry (see `clock.rs`).
    fn replicated_now(&mut self) -> u64 {
        let (sm, log) = (&self.sm, self.raft.log());
        // tokio's clock, so that a simulated run stamps simulated time.
        let now = tokio::time::Instant::now().into_std();
        self.clock.stamp(self.raft.term(), now, || {
            // Entries not applied yet may carry later times than the state machine has seen.
            log.entries()
                .iter()
                .filter(|e| e.index > sm.applied_index())
                .filter_map(|e| match &e.payload {
                    myraft_wire::raft::EntryPayload::Command(c) => LogCommand::decode(c).ok(),
                    _ => None,
                })
                .map(|c| c.entry_time_ms)
                .fold(sm.clock_ms(), u64::max)
        })
    }

    fn propose_config(&mut self, addr: SocketAddr, client_id: u64, seq: u64, next: Membership) {
        let proposed = self.raft.propose_membership(next);
        self.track_proposal(proposed, PendingKind::Config, addr, client_id, seq);
    }

    fn await_membership(&mut self, addr: SocketAddr, client_id: u64, seq: u64) {
        let index = self.raft.membership_index();
        let Some(term) = self.raft.log().term(index) else {
            let r = Err(ClientError::Unavailable {
                reason: "the membership change is being committed; retry shortly".into(),
            });
            return self.reply(addr, client_id, seq, r);
        };
        let proposed = Ok(crate::raft::Proposal { index, term });
        self.track_proposal(proposed, PendingKind::Config, addr, client_id, seq);
    }

    /// Remembers who waits for a proposal's entry, or tells them at once why it was refused.
    fn track_proposal(
        &mut self,
        proposed: Result<crate::raft::Proposal, RaftError>,
        kind: PendingKind,
        addr: SocketAddr,
        client_id: u64,
        seq: u64,
    ) {
        match proposed {
            Ok(p) if self.pending_writes.contains_key(&p.index) => {
                // Only a retried membership change can land on an index already waited on;
                // its first request is answered when the entry applies.
                let r = Err(ClientError::Unavailable {
                    reason: "the membership change is being committed; retry shortly".into(),
                });
                self.reply(addr, client_id, seq, r);
            }
            Ok(p) => {
                let w = PendingWrite {
                    term: p.term,
                    addr,
                    client_id,
                    seq,
                    kind,
                };
                self.pending_writes.insert(p.index, w);
            }
            Err(e) => {
                let e = self.raft_error(e);
                self.reply(addr, client_id, seq, Err(e));
            }
        }
    }

    fn start_read(&mut self, addr: SocketAddr, client_id: u64, seq: u64, op: ClientOp) {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.pending_reads.insert(
                    ctx,
                    ReadRequest {
                        addr,
                        client_id,
                        seq,
                        op,
                    },
                );
            }
            Err(e) => {
                let e = self.raft_error(e);
                self.reply(addr, client_id, seq, Err(e));
            }
        }
    }

    pub fn role(&self) -> Role {
        match self.raft.role() {
            RaftRole::Leader => Role::Leader,
            RaftRole::Candidate | RaftRole::PreCandidate => Role::Candidate,
            RaftRole::Follower if !self.raft.membership().is_voter(self.raft.id()) => Role::Learner,
            RaftRole::Follower => Role::Follower,
        }
    }

    fn peer_ref(&self, id: Option<NodeId>) -> Option<PeerRef> {
        let id = id?;
        let name = self
            .raft
            .membership()
            .members
            .get(&id)
            .map_or_else(|| format!("{id:x}"), |m| m.name.clone());
        Some(PeerRef { id, name })
    }

    fn probe_reply(&self, nonce: u64) -> ProbeReply {
        ProbeReply {
            nonce,
            id: self.raft.id(),
            name: self.cfg.name.clone(),
            role: self.role(),
            term: self.raft.term(),
            voted_for: self.raft.vote(),
            leader: self.peer_ref(self.raft.leader()),
            commit_index: self.raft.commit_index(),
            applied_index: self.sm.applied_index(),
            last_log_index: self.raft.last_index(),
            snapshot_index: self.raft.log().snapshot_index(),
            log_bytes: self.storage.log_bytes(),
            data_dir_bytes: self.data_dir_bytes,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            dropped_datagrams: self.t.dropped_total(),
            membership: self.raft.membership().clone(),
            since_heard_ms: self.since_heard_ms(),
        }
    }

    /// The leader's own view of whom it hears, from its replication progress: the entrance
    /// may be cut off from a member the leader still reaches.
    fn since_heard_ms(&self) -> BTreeMap<NodeId, u64> {
        if self.raft.role() != RaftRole::Leader {
            return BTreeMap::new();
        }
        let tick_ms = u64::try_from(self.cfg.timing.tick.as_millis()).unwrap_or(u64::MAX);
        self.raft
            .membership()
            .members
            .keys()
            .filter_map(|&id| {
                let ticks = self.raft.progress(id)?.ticks_since_heard;
                let ms = if ticks == u32::MAX {
                    u64::MAX
                } else {
                    u64::from(ticks).saturating_mul(tick_ms)
                };
                Some((id, ms))
            })
            .collect()
    }

    fn node_detail(&self) -> NodeDetail {
        let p = self.probe_reply(0);
        NodeDetail {
            id: p.id,
            name: p.name,
            addr: self.advertise.clone(),
            role: p.role,
            voter: self.raft.membership().is_voter(self.raft.id()),
            health: Health::Up,
            term: p.term,
            voted_for: self.peer_ref(p.voted_for),
            leader: p.leader,
            commit_index: p.commit_index,
            applied_index: p.applied_index,
            last_log_index: p.last_log_index,
            snapshot_index: p.snapshot_index,
            log_bytes: p.log_bytes,
            data_dir_bytes: p.data_dir_bytes,
            uptime_ms: p.uptime_ms,
            dropped_datagrams: p.dropped_datagrams,
        }
    }
}

pub fn bad(reason: String) -> ClientError {
    ClientError::BadRequest { reason }
}

fn check_key(key: &[u8]) -> Result<(), ClientError> {
    if key.is_empty() {
        return Err(bad("the key is empty; give a non-empty key".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(bad(format!(
            "key of {} bytes exceeds the {MAX_KEY_BYTES}-byte limit",
            key.len()
        )));
    }
    Ok(())
}
