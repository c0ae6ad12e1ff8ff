//! The node's event loop: one task owns the socket, the Raft core, the storage and the state
//! machine. Each turn takes whatever inputs are waiting (datagrams, a tick), steps them into
//! the core, then persists, sends and applies what the core hands back (`Ready`).
//!
//! - `startup`: from flags to a running loop (lock, bind, join or restart, recover);
//! - this file: the loop, the `Ready` handling, snapshots and membership upkeep;
//! - `apply`: committed entries into the state machine, and the replies they release;
//! - `client`: client requests, from validation to the proposal or read they start;
//! - `status`: what the node reports about itself.

mod apply;
mod client;
mod startup;
mod status;

pub use client::bad;
use startup::dir_size;
#[cfg(test)]
pub(super) use startup::recover;
pub use startup::{run, run_with_socket};

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
use apply::{PendingKind, PendingWrite, ReadRequest};
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
    cfg: NodeConfig,
    advertise: String,
    raft: Raft,
    storage: DiskStorage,
    sm: StateMachine,
    t: Transport,
    snaps: SnapshotTransfers,
    /// Peer addresses: from the configuration, else from where their datagrams came.
    seen: BTreeMap<NodeId, SocketAddr>,
    pending_writes: BTreeMap<u64, PendingWrite>,
    pending_reads: BTreeMap<u64, ReadRequest>,
    /// Released reads waiting for the state machine to reach their index.
    ready_reads: BTreeMap<u64, Vec<u64>>,
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
    shutdown: CancellationToken,
}

struct RemovedNotice {
    name: String,
    addr: SocketAddr,
    sends_left: u32,
}

/// How often a removed member is told to stop, once per heartbeat, against datagram loss.
const REMOVED_NOTICES: u32 = 5;

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
}
