//! The node's event loop: one task owns the socket, the Raft core and the log. Each turn
//! takes whatever inputs are waiting (datagrams, a tick, events from the applier), steps them
//! into the core, then persists and sends what the core hands back (`Ready`) and queues its
//! committed entries for the applier, which runs beside the loop (`server/applier.rs`).
//!
//! - `startup`: from flags to a running loop (lock, bind, join or restart, recover);
//! - this file: the loop, the `Ready` handling, log compaction and membership upkeep;
//! - `apply`: what the applier reports, and the replies it releases;
//! - `client`: client requests, from validation to the proposal or read they start;
//! - `status`: what the node reports about itself.

mod apply;
mod client;
mod startup;
mod status;

pub use client::bad;
use startup::dir_size;
#[cfg(test)]
pub(super) use startup::{migrate_legacy_snapshot, recover};
pub use startup::{run, run_with_socket};

use super::applier::{Applier, ApplyEvent, ApplyMsg, StoreState};
use super::clock::ReplicatedClock;
use super::config::NodeConfig;
use super::identity::Identity;
use super::join::join;
use super::log_sync::{Job, LogSyncer};
use super::snapshot_transfer::SnapshotTransfers;
use super::transport::{Socket, Transport};
use super::ServerError;
use crate::raft::{
    Config as RaftConfig, InitialState, ProgressState, Raft, RaftError, Role as RaftRole,
};
use crate::state_machine::{ClientCommand, Command, LogCommand, SYSTEM_CLIENT};
use crate::storage::{DataDirLock, DiskStorage, Storage};
use apply::{PendingKind, PendingWrite, PendingWrites, ReadRequest};
use myraft_wire::api::{
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, Consistency, LeaderHint,
    NodeDetail, StopTarget,
};
use myraft_wire::envelope::{Body, UNKNOWN_CLUSTER};
use myraft_wire::health::{Health, PeerRef, Probe, ProbeReply, Role};
use myraft_wire::raft::{Entry, Member, Membership, NodeId, RaftBody, RaftMessage};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::VecDeque;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Datagrams handled per turn before the core's output is persisted: the group-commit batch.
const MAX_BATCH: usize = 256;
/// Committed entries the applier may lag behind by before new writes wait (back-pressure:
/// proposals slow down, heartbeats and votes do not).
const MAX_APPLY_LAG: u64 = 20_000;
/// Writes held back by back-pressure at most; beyond that they are refused as busy.
const MAX_DEFERRED: usize = 50_000;
/// Heartbeats a leader that handed over before stopping still answers clients with a hint.
const LINGER_HEARTBEATS: u64 = 3;
/// Ticks between checks whether the log has outgrown its retention.
const COMPACT_CHECK_TICKS: u64 = 4;
/// Ticks between walks of the data dir for its size (reported in probes): a walk reads
/// every file's metadata, and the size changes slowly.
const DIR_SIZE_TICKS: u64 = 100;

pub(super) struct Node {
    cfg: NodeConfig,
    advertise: String,
    raft: Raft,
    storage: DiskStorage,
    /// Flushes the leader's log beside the loop.
    syncer: LogSyncer,
    applier: Applier,
    apply_events: tokio::sync::mpsc::UnboundedReceiver<ApplyEvent>,
    /// Where the state store stands, as the applier last reported.
    store: StoreState,
    transport: Transport,
    snapshots: SnapshotTransfers,
    /// Peer addresses: from the configuration, else from where their datagrams came.
    seen: BTreeMap<NodeId, SocketAddr>,
    pending_writes: PendingWrites,
    pending_reads: BTreeMap<u64, ReadRequest>,
    /// Writes waiting for the applier to catch up (back-pressure), oldest first.
    deferred: VecDeque<(SocketAddr, ClientRequest)>,
    /// The log index of this leader's automatic compaction not yet applied.
    auto_compact_at: Option<u64>,
    next_ctx: u64,
    started: Instant,
    was_leader: bool,
    /// The term the entrances were last told of unasked.
    told_term: u64,
    /// Set while a leader asked to stop hands over leadership: the tick to stop by anyway.
    stop_by_tick: Option<u64>,
    /// The hand-over is done: another node leads, and this one stops at `stop_by_tick`.
    handed_over: bool,
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

/// About what an entry takes in the log, for retention by bytes.
fn entry_bytes(e: &myraft_wire::raft::Entry) -> u64 {
    let payload = match &e.payload {
        myraft_wire::raft::EntryPayload::Command(c) => c.len(),
        myraft_wire::raft::EntryPayload::Config(m) => 64 * m.members.len(),
        myraft_wire::raft::EntryPayload::Noop => 0,
    };
    payload as u64 + 32
}

struct RemovedNotice {
    name: String,
    id: NodeId,
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
                _ = self.shutdown.cancelled(), if self.stop_by_tick.is_none() => {
                    if !self.hand_over_before_stopping() {
                        break;
                    }
                }
                _ = tick.tick() => self.on_tick()?,
                _ = self.syncer.wake.notified() => self.on_log_synced()?,
                Some(ev) = self.apply_events.recv() => {
                    self.on_apply_event(ev)?;
                    while let Ok(ev) = self.apply_events.try_recv() {
                        self.on_apply_event(ev)?;
                    }
                }
                r = self.transport.recv() => {
                    let (env, from) = r.map_err(|e| ServerError::io("receive on", Path::new("socket"), e))?;
                    self.on_datagram(env.from, env.body, from);
                    // Everything already waiting joins this batch: one fsync covers it all.
                    for _ in 0..MAX_BATCH {
                        let Some((env, from)) = self.transport.try_recv() else { break };
                        self.on_datagram(env.from, env.body, from);
                    }
                }
            }
            self.handle_ready()?;
            self.after_turn();
            if let Some(by) = self.stop_by_tick {
                if self.ticks >= by {
                    break;
                }
                if !self.handed_over && !self.raft.is_leader() && self.raft.leader().is_some() {
                    // A new leader: for a few heartbeats more, clients that still come here
                    // are told where it is instead of meeting silence.
                    self.linger_then_stop();
                }
            }
        }
        self.handle_ready()?;
        self.redirect_waiting_clients();
        self.finish_log_syncs(false)?;
        self.storage.sync()?;
        self.applier.shutdown();
        while let Ok(ev) = self.apply_events.try_recv() {
            if let ApplyEvent::Fatal(e) = ev {
                return Err(ServerError::Apply(e));
            }
        }
        tracing::info!("node stopped");
        Ok(())
    }

    /// A leader asked to stop hands leadership to the most caught-up voter first (§3.10), so
    /// writes pause for a round trip, not an election timeout. Returns whether the loop goes
    /// on for that: until another node leads and a few heartbeats have passed, or an
    /// election timeout.
    fn hand_over_before_stopping(&mut self) -> bool {
        if self.raft.handed_to().is_some() {
            // A leader removed from the configuration handed over as the change committed;
            // it hears nothing from the next leader, so for a few heartbeats it points the
            // clients that still come here at the voter it handed to.
            self.linger_then_stop();
            return true;
        }
        let Some(to) = self.raft.successor() else {
            return false;
        };
        let name = self.member_name(to);
        match self.raft.transfer_leader(to) {
            Ok(()) => {
                tracing::info!("handing leadership to {name} before stopping");
                let timeout = u64::from(self.cfg.timing.election_ticks);
                self.stop_by_tick = Some(self.ticks + timeout);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "stopping without handing leadership to {name}");
                false
            }
        }
    }

    /// Leadership is handed over: clients waiting here are sent on, and for a few
    /// heartbeats more those that still come are told where to go instead of meeting
    /// silence.
    fn linger_then_stop(&mut self) {
        self.handed_over = true;
        self.redirect_waiting_clients();
        let linger = u64::from(self.cfg.timing.heartbeat_ticks) * LINGER_HEARTBEATS;
        self.stop_by_tick = Some(self.ticks + linger);
    }

    fn member_name(&self, id: NodeId) -> String {
        self.raft
            .membership()
            .members
            .get(&id)
            .map_or_else(|| format!("{id:x}"), |m| m.name.clone())
    }

    /// On the way out: clients still waiting here are sent to the leader at once rather
    /// than left to time out (their retries are exactly-once like any other).
    fn redirect_waiting_clients(&mut self) {
        let hint = self.leader_hint();
        for p in self.pending_writes.take_all() {
            p.redirect(self, hint.clone());
        }
        for (_, r) in std::mem::take(&mut self.pending_reads) {
            let hint = hint.clone();
            r.answer(self, Err(ClientError::NotLeader { hint }));
        }
    }

    fn on_tick(&mut self) -> Result<(), ServerError> {
        self.ticks += 1;
        self.raft.tick();
        self.applier.tick();
        self.snapshots.on_tick(&mut self.transport);
        if self.raft.is_leader() {
            let raft = &self.raft;
            self.snapshots.keep_wanted(|to| {
                raft.progress(to)
                    .is_some_and(|p| p.state == ProgressState::Snapshot)
            });
        }
        if self.ticks.is_multiple_of(COMPACT_CHECK_TICKS) {
            self.maybe_compact_log()?;
        }
        self.maybe_promote_learner();
        if self
            .ticks
            .is_multiple_of(u64::from(self.cfg.timing.heartbeat_ticks.max(1)))
        {
            self.send_removed_notices();
        }
        if self.ticks.is_multiple_of(DIR_SIZE_TICKS) {
            self.data_dir_bytes = dir_size(&self.cfg.data_dir);
        }
        Ok(())
    }

    fn after_turn(&mut self) {
        self.applier.turn();
        self.syncer.turn();
        self.snapshots.pump_all(&mut self.transport);
        let leader = self.raft.is_leader();
        if !leader && self.was_leader {
            self.snapshots.cancel_outgoing();
        }
        if leader && !self.was_leader {
            tracing::info!(term = self.raft.term(), "became leader");
        }
        // The entrance learns of a new leader, or of an election under way (a new term), at
        // once, not at its next probe: it stops routing to a leader that is gone.
        if (leader && !self.was_leader) || self.raft.term() != self.told_term {
            self.told_term = self.raft.term();
            let reply = self.probe_reply(0);
            for e in self.cfg.entrances.clone() {
                self.transport.send(e, Body::ProbeReply(reply.clone()));
            }
        }
        self.was_leader = leader;
    }

    fn on_datagram(&mut self, sender: u64, body: Body, from: SocketAddr) {
        match body {
            Body::Raft(m) => {
                // A server speaks for itself only: the envelope's sender is authenticated,
                // the message's `from` is not.
                if m.from != sender {
                    self.transport.count_drop("raft_sender_mismatch");
                    return;
                }
                // A snapshot travels as the store, streamed in chunks; the core hears of it
                // once the store is in (`on_applied`), never from the wire. One taken from
                // the wire would move the log past what the store holds.
                if let RaftBody::InstallSnapshot(_) = &m.body {
                    self.transport.count_drop("raft_snapshot_from_wire");
                    return;
                }
                self.seen.entry(sender).or_insert(from);
                self.raft.step(m);
            }
            Body::SnapshotChunk(c) => {
                if let Some(m) = self
                    .snapshots
                    .on_chunk(&mut self.transport, sender, from, c)
                {
                    self.applier.send(m);
                }
            }
            Body::SnapshotChunkAck(a) => {
                if let Some(w) = self.snapshots.on_ack(&mut self.transport, sender, a) {
                    self.applier.send(ApplyMsg::Export {
                        to: sender,
                        resume: w.resume,
                    });
                }
            }
            Body::Probe(Probe { nonce }) => {
                let reply = self.probe_reply(nonce);
                self.transport.send(from, Body::ProbeReply(reply));
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
            let leading = self.raft.is_leader();
            if !leading && self.syncer.in_flight() {
                // This Ready's acknowledgements and votes are synced here; the leader's
                // flushes still running go first, so that one that fails stops the node
                // before a later sync can claim the same pages.
                self.finish_log_syncs(true)?;
            }
            let mut rd = self.raft.ready();
            // The core hands out only entries already durable here, so they go to the
            // applier before this Ready's own fsync: the store applies them (and their
            // replies wait only for the loop) while the disk takes the newer entries.
            if rd.snapshot.is_none() && !rd.committed.is_empty() {
                let entries = std::mem::take(&mut rd.committed);
                self.applier.send(self.apply_entries(entries));
            }
            // A leader's AppendEntries promise nothing, so they may leave before its own
            // fsync (dissertation §10.2.1): replication overlaps the leader's disk write,
            // and the flush itself runs beside the loop (`log_sync`).
            let deferred = leading
                && rd.snapshot.is_none()
                && rd
                    .hard_state
                    .is_none_or(|hs| hs.term == prev.term && hs.vote == prev.vote);
            if deferred {
                self.send_raft(std::mem::take(&mut rd.messages));
            } else if self.syncer.in_flight() {
                self.finish_log_syncs(false)?;
            }
            let mut wrote = false;
            if let Some(s) = &rd.snapshot {
                // The state store already holds this snapshot, synced (the applier installs
                // a stream before the core hears of it), so the log may now drop what it
                // covers: after a crash the store is at least as far as the log's start.
                self.storage.save_snapshot(s)?;
                self.storage.compact_prefix(s.meta.last_index)?;
                self.fail_pending_below(s.meta.last_index);
            }
            if !rd.entries.is_empty() {
                self.storage.append(&rd.entries)?;
                wrote = true;
            }
            if let Some(hs) = &rd.hard_state {
                self.storage.save_hard_state(hs)?;
                // A new commit index alone is not worth an fsync on the way to the reply:
                // it is volatile state, recovered from the store and the leader (as etcd's
                // MustSync). A term or a vote must be durable before any message says so.
                wrote |= hs.term != prev.term || hs.vote != prev.vote;
            }
            if deferred {
                let index = self.raft.advance_written();
                if wrote {
                    self.sync_log_beside(index)?;
                }
            } else {
                if wrote {
                    self.storage.sync()?;
                }
                self.send_raft(rd.messages);
                self.raft.advance();
            }
            if !rd.committed.is_empty() {
                let msg = self.apply_entries(rd.committed);
                self.applier.send(msg);
            }
            for r in rd.reads {
                if let Some(p) = self.pending_reads.get(&r.ctx) {
                    let op = p.op().clone();
                    self.applier.send(ApplyMsg::Read {
                        ctx: r.ctx,
                        index: r.index,
                        op,
                    });
                }
            }
            for ctx in rd.failed_reads {
                if let Some(r) = self.pending_reads.remove(&ctx) {
                    let hint = self.leader_hint();
                    r.answer(self, Err(ClientError::NotLeader { hint }));
                }
            }
        }
        Ok(())
    }

    /// Hands the flush of the leader's writes through `index` to the log-sync thread.
    fn sync_log_beside(&mut self, index: u64) -> Result<(), ServerError> {
        let term = self.raft.term();
        match self.storage.sync_elsewhere()? {
            Some(sync) => self.syncer.submit(Job { sync, term, index }),
            // Nothing left unsynced: a flush since has covered these writes.
            None => self.raft.persisted(term, index),
        }
        Ok(())
    }

    /// Flushes of the leader's log that are done: the core counts the leader for them.
    fn on_log_synced(&mut self) -> Result<(), ServerError> {
        for s in self.syncer.take_done() {
            self.storage.synced_elsewhere(s.done)?;
            self.raft.persisted(s.term, s.index);
        }
        Ok(())
    }

    /// Waits for the leader's flushes still running. `report` tells the core of them; in
    /// the middle of a Ready it must not be stepped, and the Ready's own sync covers them.
    fn finish_log_syncs(&mut self, report: bool) -> Result<(), ServerError> {
        for s in self.syncer.finish() {
            self.storage.synced_elsewhere(s.done)?;
            if report {
                self.raft.persisted(s.term, s.index);
            }
        }
        Ok(())
    }

    /// A leader's clients wait for its entries to be applied; a follower's entries only
    /// have to be applied eventually, so its applier may gather them.
    fn apply_entries(&self, entries: Vec<Entry>) -> ApplyMsg {
        if self.raft.is_leader() {
            ApplyMsg::Entries(entries)
        } else {
            ApplyMsg::EntriesMayWait(entries)
        }
    }

    fn send_raft(&mut self, msgs: Vec<RaftMessage>) {
        for m in msgs {
            let Some(addr) = self.peer_addr(m.to) else {
                tracing::debug!("no address for {:x}; message dropped", m.to);
                continue;
            };
            if let RaftBody::InstallSnapshot(_) = &m.body {
                // The core's snapshot is only a log position; what the follower gets is
                // the store as of now, streamed from a read transaction.
                if self.snapshots.want(m.to, addr) {
                    self.applier.send(ApplyMsg::Export {
                        to: m.to,
                        resume: None,
                    });
                }
                continue;
            }
            self.transport.send(addr, Body::Raft(m));
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

    /// Compacts the log once it outgrows its retention: through what the state store holds
    /// on disk, keeping a tail of half the retention below that for followers that lag a
    /// little (DESIGN.md: the log holds only what is not yet safely in the store, plus a tail).
    fn maybe_compact_log(&mut self) -> Result<(), ServerError> {
        let retain = self.cfg.log_retain_bytes;
        if self.storage.log_bytes() <= retain {
            return Ok(());
        }
        let mut upto = self.store.synced_index.min(self.raft.applied_index());
        // A follower getting a snapshot, or one just a little behind, goes on from the log
        // after where it stands: keep that, unless the log has grown half as large again as
        // its retention (memory comes first; such a follower gets a newer snapshot).
        if self.storage.log_bytes() <= retain.saturating_add(retain / 2) {
            if let Some(hold) = self.catch_up_hold() {
                upto = upto.min(hold);
            }
        }
        let log = self.raft.log();
        let mut at = upto;
        let mut tail = 0u64;
        for e in log.entries().iter().rev().skip_while(|e| e.index > upto) {
            tail += entry_bytes(e);
            if tail > retain / 2 {
                break;
            }
            at = e.index - 1;
        }
        if at <= log.snapshot_index() {
            return Ok(());
        }
        let snap = self
            .raft
            .compact(at, Vec::new())
            .map_err(|e| ServerError::Recovery(format!("compacting the log: {e}")))?;
        self.storage.save_snapshot(&snap)?;
        self.storage.compact_prefix(at)?;
        tracing::debug!(
            index = at,
            log_bytes = self.storage.log_bytes(),
            "compacted the log"
        );
        Ok(())
    }

    /// Where the log must still start for followers that are catching up: a snapshot on its
    /// way, and members heard from lately that are a little behind.
    fn catch_up_hold(&self) -> Option<u64> {
        if !self.raft.is_leader() {
            return None;
        }
        let recent = self.cfg.timing.election_ticks;
        let lagging = self
            .raft
            .membership()
            .members
            .keys()
            .filter(|&&id| id != self.raft.id())
            .filter_map(|&id| self.raft.progress(id))
            .filter(|p| p.ticks_since_heard < recent)
            .map(|p| p.match_index);
        lagging.chain(self.snapshots.hold_index()).min()
    }

    /// The leader keeps `auto_compact_revisions` revisions: once the store holds a tenth more
    /// than that, it proposes a compaction through the log, so every member compacts at the
    /// same entry (no node decides on its own what replicated state forgets).
    pub(super) fn maybe_auto_compact(&mut self) {
        let keep = self.cfg.auto_compact_revisions;
        if keep == 0 || !self.raft.is_leader() {
            self.auto_compact_at = None;
            return;
        }
        if self
            .auto_compact_at
            .is_some_and(|i| i > self.store.applied_index)
        {
            return;
        }
        self.auto_compact_at = None;
        let step = (keep / 10).max(1);
        let target = self.store.revision.saturating_sub(keep);
        if target < self.store.compacted_before.saturating_add(step) {
            return;
        }
        let payload = LogCommand {
            entry_time_ms: self.replicated_now(),
            req: ClientCommand {
                client_id: SYSTEM_CLIENT,
                seq: 0,
                cmd: Command::Compact { revision: target },
            },
        }
        .encode();
        match self.raft.propose(payload) {
            Ok(p) => {
                tracing::debug!(revision = target, "proposed an automatic compaction");
                self.auto_compact_at = Some(p.index);
            }
            Err(e) => tracing::debug!(error = %e, "automatic compaction postponed"),
        }
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
                id: gone.id,
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
                    // By id: a node of that name started since at that address, with an
                    // empty data dir, is a new member and must not be stopped.
                    target: StopTarget::Member {
                        name: n.name.clone(),
                        id: n.id,
                    },
                },
            };
            self.transport.send(n.addr, Body::ClientRequest(req));
        }
        notices.retain(|n| n.sends_left > 0);
        self.removed_notices = notices;
    }
}
