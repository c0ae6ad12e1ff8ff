//! What the applier reports (`server/applier.rs`), and the client replies it releases: writes
//! when their entry applies, linearizable reads once served at their ReadIndex (§6.4).

use super::*;
use crate::server::applier::map_kv;
use crate::state_machine::{ApplyError, Reply};
use crate::store::{Applied, AppliedKind};
use myraft_wire::api::{CompactResult, DeleteResult, PutResult};
use myraft_wire::raft::{InstallSnapshot, Snapshot, SnapshotMeta};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingKind {
    Write,
    Config,
}

/// The proposals waiting for their entries, by log index, and the writes among them by
/// `(client_id, seq)`: a copy of a write already proposed (a client retrying, or asking
/// every member while it looks for the leader) waits for that entry instead of adding
/// another.
#[derive(Debug, Default)]
pub struct PendingWrites {
    by_index: BTreeMap<u64, PendingWrite>,
    by_session: HashMap<(u64, u64), u64>,
}

impl PendingWrites {
    pub fn contains(&self, index: u64) -> bool {
        self.by_index.contains_key(&index)
    }

    pub fn insert(&mut self, index: u64, w: PendingWrite) {
        if w.kind == PendingKind::Write {
            self.by_session.insert((w.client_id, w.seq), index);
        }
        self.by_index.insert(index, w);
    }

    /// The write `(client_id, seq)` proposed and still waiting, with its index.
    pub fn write_mut(&mut self, client_id: u64, seq: u64) -> Option<(u64, &mut PendingWrite)> {
        let index = *self.by_session.get(&(client_id, seq))?;
        self.by_index.get_mut(&index).map(|w| (index, w))
    }

    pub fn remove(&mut self, index: u64) -> Option<PendingWrite> {
        let w = self.by_index.remove(&index)?;
        self.forget_session(index, &w);
        Some(w)
    }

    /// Every proposal at or below `index`.
    pub fn take_through(&mut self, index: u64) -> Vec<PendingWrite> {
        let keep = self.by_index.split_off(&(index + 1));
        let lost = std::mem::replace(&mut self.by_index, keep);
        lost.into_iter()
            .map(|(i, w)| {
                self.forget_session(i, &w);
                w
            })
            .collect()
    }

    pub fn take_all(&mut self) -> Vec<PendingWrite> {
        self.by_session.clear();
        std::mem::take(&mut self.by_index).into_values().collect()
    }

    fn forget_session(&mut self, index: u64, w: &PendingWrite) {
        let key = (w.client_id, w.seq);
        if self.by_session.get(&key) == Some(&index) {
            self.by_session.remove(&key);
        }
    }
}

/// A proposal waiting for its entry to apply. It committed if the entry applied at its
/// index has its term; otherwise it was lost with a leader and the client retries.
#[derive(Debug, Clone)]
pub struct PendingWrite {
    term: u64,
    addr: SocketAddr,
    client_id: u64,
    seq: u64,
    kind: PendingKind,
}

impl PendingWrite {
    /// The answer goes to whoever asked last: the client may have moved on from the path
    /// its first copy took (an entrance, a member it tried while looking for the leader).
    pub fn answer_to(&mut self, addr: SocketAddr) {
        self.addr = addr;
    }

    /// Tells the client to ask `hint` (its retry is applied at most once).
    pub fn redirect(self, node: &mut Node, hint: Option<LeaderHint>) {
        let result = Err(ClientError::NotLeader { hint });
        node.reply(self.addr, self.client_id, self.seq, result);
    }

    pub fn new(term: u64, addr: SocketAddr, client_id: u64, seq: u64, kind: PendingKind) -> Self {
        PendingWrite {
            term,
            addr,
            client_id,
            seq,
            kind,
        }
    }
}

/// A read waiting for its ReadIndex to be confirmed and applied.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    addr: SocketAddr,
    client_id: u64,
    seq: u64,
    op: ClientOp,
}

impl ReadRequest {
    pub fn new(addr: SocketAddr, client_id: u64, seq: u64, op: ClientOp) -> Self {
        ReadRequest {
            addr,
            client_id,
            seq,
            op,
        }
    }

    pub fn op(&self) -> &ClientOp {
        &self.op
    }

    pub fn answer(self, node: &mut Node, result: Result<ClientResponse, ClientError>) {
        node.reply(self.addr, self.client_id, self.seq, result);
    }
}

impl Node {
    pub(super) fn on_apply_event(&mut self, ev: ApplyEvent) -> Result<(), ServerError> {
        match ev {
            ApplyEvent::Applied { entries, state } => {
                self.store = state;
                for a in entries {
                    self.on_applied(a);
                }
                self.resume_deferred();
                self.maybe_auto_compact();
            }
            ApplyEvent::Synced(state) => self.store = state,
            ApplyEvent::Read { ctx, result } => {
                if let Some(r) = self.pending_reads.remove(&ctx) {
                    r.answer(self, result);
                }
            }
            ApplyEvent::Installed {
                from,
                meta,
                replaced,
                state,
            } => {
                self.store = state;
                self.snapshots
                    .on_installed(from, meta.applied_index, meta.applied_term);
                if replaced {
                    self.applied_membership = meta.membership.clone();
                }
                // Now the core may hear of it: as the leader's InstallSnapshot, at the log
                // position the store holds.
                let msg = RaftMessage {
                    from,
                    to: self.raft.id(),
                    term: self.snapshots.leader_term(from),
                    body: RaftBody::InstallSnapshot(InstallSnapshot {
                        snapshot: Snapshot {
                            meta: SnapshotMeta {
                                last_index: meta.applied_index,
                                last_term: meta.applied_term,
                                membership: meta.membership,
                            },
                            data: Vec::new(),
                        },
                    }),
                };
                self.raft.step(msg);
            }
            ApplyEvent::ImportFailed { from, reason } => {
                tracing::warn!(%reason, "snapshot stream from {from:x} refused");
                self.snapshots.reset_incoming(from);
            }
            ApplyEvent::ImportSealed(point) => self.snapshots.on_sealed(point),
            ApplyEvent::Export { to, export } => {
                if self.raft.is_leader() {
                    let term = self.raft.term();
                    self.snapshots.begin(&mut self.transport, to, export, term);
                }
            }
            ApplyEvent::Fatal(e) => return Err(ServerError::Apply(e)),
        }
        Ok(())
    }

    fn on_applied(&mut self, a: Applied) {
        if let AppliedKind::Config(m) = &a.what {
            // Removed means dropped by this configuration from the one applied before. A
            // new member catching up through the log applies configurations from before it
            // was added, none of which holds it: history, not its removal.
            let was_member = self.applied_membership.contains(self.raft.id());
            self.on_config_applied(m);
            if was_member
                && !m.contains(self.raft.id())
                && self.raft.membership_committed()
                && self.raft.membership() == m
            {
                tracing::info!("removed from the cluster; stopping");
                self.shutdown.cancel();
            }
        }
        let Some(p) = self.pending_writes.remove(a.index) else {
            return;
        };
        let result = if p.term != a.term {
            // Our proposal lost its place to another leader's entry: the client retries
            // with the same sequence number and is applied at most once.
            Err(ClientError::NotLeader {
                hint: self.leader_hint(),
            })
        } else {
            match (p.kind, a.what) {
                (PendingKind::Config, _) => Ok(ClientResponse::Done),
                (PendingKind::Write, AppliedKind::Command(r)) => map_apply(r),
                (PendingKind::Write, _) => Err(ClientError::Unavailable {
                    reason: "entry held no command".into(),
                }),
            }
        };
        self.reply(p.addr, p.client_id, p.seq, result);
    }

    /// A snapshot replaced the log below `index`: proposals there can no longer be matched
    /// to their entries; their clients retry (and sessions keep the retry exactly-once).
    pub(super) fn fail_pending_below(&mut self, index: u64) {
        for p in self.pending_writes.take_through(index) {
            let hint = self.leader_hint();
            p.redirect(self, hint);
        }
    }

    /// Committed entries the applier has yet to apply.
    pub(super) fn apply_lag(&self) -> u64 {
        self.raft
            .commit_index()
            .saturating_sub(self.store.applied_index)
    }

    /// Writes held back while the applier lagged go on once it has caught up halfway.
    fn resume_deferred(&mut self) {
        while super::client::may_resume(self.apply_lag()) {
            let Some((addr, req)) = self.deferred.pop_front() else {
                return;
            };
            self.on_client(addr, req);
        }
    }
}

fn map_apply(r: Result<Reply, ApplyError>) -> Result<ClientResponse, ClientError> {
    match r {
        Ok(Reply::Put { revision }) => Ok(ClientResponse::Put(PutResult { revision })),
        Ok(Reply::Delete { revision, deleted }) => {
            Ok(ClientResponse::Delete(DeleteResult { revision, deleted }))
        }
        Ok(Reply::Compact { compacted_before }) => {
            Ok(ClientResponse::Compact(CompactResult { compacted_before }))
        }
        Ok(Reply::Noop { .. }) => Ok(ClientResponse::Done),
        Err(ApplyError::Kv(e)) => Err(map_kv(e)),
        Err(ApplyError::SessionExpired { .. }) => Err(ClientError::SessionExpired),
        Err(e @ ApplyError::StaleSequence { .. }) => Err(bad(e.to_string())),
        Err(e) => Err(ClientError::Unavailable {
            reason: e.to_string(),
        }),
    }
}
