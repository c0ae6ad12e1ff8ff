//! Committed entries into the state machine, and the client replies they release: writes
//! when their entry applies, linearizable reads once the state machine reaches their
//! ReadIndex (§6.4).

use super::{bad, Node};
use crate::state_machine::{ApplyError, KvError, Reply};
use myraft_wire::client::{
    ClientError, ClientOp, ClientResponse, CompactResult, DeleteResult, GetResult, HistoryResult,
    KeyVersion, PutResult,
};
use myraft_wire::raft::{Entry, EntryPayload};
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingKind {
    Write,
    Config,
}

/// A proposal waiting for its entry to apply. It committed if the entry applied at its
/// index has its term; otherwise it was lost with a leader and the client retries.
#[derive(Debug, Clone)]
pub struct PendingWrite {
    pub term: u64,
    pub addr: SocketAddr,
    pub client_id: u64,
    pub seq: u64,
    pub kind: PendingKind,
}

#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub addr: SocketAddr,
    pub client_id: u64,
    pub seq: u64,
    pub op: ClientOp,
}

impl Node {
    pub(super) fn apply(&mut self, committed: Vec<Entry>) {
        for e in committed {
            let outcome = match &e.payload {
                EntryPayload::Command(bytes) => Some(self.sm.apply_entry(e.index, bytes)),
                EntryPayload::Noop | EntryPayload::Config(_) => {
                    if let Err(err) = self.sm.skip(e.index) {
                        tracing::error!(error = %err, "state machine out of step with the log");
                    }
                    None
                }
            };
            if let EntryPayload::Config(m) = &e.payload {
                self.on_config_applied(m);
                if !m.contains(self.raft.id())
                    && self.raft.membership_committed()
                    && self.raft.membership() == m
                {
                    tracing::info!("removed from the cluster; stopping");
                    self.shutdown.cancel();
                }
            }
            let Some(p) = self.pending_writes.remove(&e.index) else {
                continue;
            };
            let result = if p.term != e.term {
                // Our proposal lost its place to another leader's entry: the client retries
                // with the same sequence number and is applied at most once.
                Err(ClientError::NotLeader {
                    hint: self.leader_hint(),
                })
            } else {
                match (p.kind, outcome) {
                    (PendingKind::Config, _) => Ok(ClientResponse::Done),
                    (PendingKind::Write, Some(r)) => map_apply(r),
                    (PendingKind::Write, None) => Err(ClientError::Unavailable {
                        reason: "entry held no command".into(),
                    }),
                }
            };
            self.reply(p.addr, p.client_id, p.seq, result);
        }
    }

    /// A snapshot replaced the log below `index`: proposals there can no longer be matched
    /// to their entries; their clients retry (and sessions keep the retry exactly-once).
    pub(super) fn fail_pending_below(&mut self, index: u64) {
        let keep = self.pending_writes.split_off(&(index + 1));
        let lost = std::mem::replace(&mut self.pending_writes, keep);
        for (_, p) in lost {
            let hint = self.leader_hint();
            self.reply(
                p.addr,
                p.client_id,
                p.seq,
                Err(ClientError::NotLeader { hint }),
            );
        }
    }

    pub(super) fn serve_ready_reads(&mut self) {
        let applied = self.sm.applied_index();
        let later = self.ready_reads.split_off(&(applied + 1));
        let now = std::mem::replace(&mut self.ready_reads, later);
        for ctx in now.into_values().flatten() {
            let Some(r) = self.pending_reads.remove(&ctx) else {
                continue;
            };
            let result = self.serve_read(&r.op);
            self.reply(r.addr, r.client_id, r.seq, result);
        }
    }

    /// Answers a read from the applied state.
    pub(super) fn serve_read(&self, op: &ClientOp) -> Result<ClientResponse, ClientError> {
        match op {
            ClientOp::Get { key, rev, .. } => match self.sm.get(key, *rev) {
                Ok(Some(kv)) => Ok(ClientResponse::Get(GetResult {
                    found: true,
                    value: Some(kv.value),
                    revision: kv.mod_revision,
                    create_revision: kv.create_revision,
                    version: kv.version,
                })),
                Ok(None) => Ok(ClientResponse::Get(GetResult {
                    found: false,
                    value: None,
                    revision: self.sm.revision(),
                    create_revision: 0,
                    version: 0,
                })),
                Err(e) => Err(map_kv(e)),
            },
            ClientOp::History { key } => {
                let h = self.sm.history(key);
                Ok(ClientResponse::History(HistoryResult {
                    versions: h
                        .versions
                        .into_iter()
                        .map(|v| KeyVersion {
                            revision: v.revision,
                            deleted: v.value.is_none(),
                            value: v.value,
                        })
                        .collect(),
                    compacted_before: h.compacted_before,
                }))
            }
            _ => Err(bad("not a read".into())),
        }
    }
}

fn map_kv(e: KvError) -> ClientError {
    match e {
        KvError::Compacted { compacted_before } => ClientError::Compacted { compacted_before },
        KvError::FutureRevision { requested, current } => bad(format!(
            "revision {requested} is in the future; the current revision is {current}"
        )),
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
