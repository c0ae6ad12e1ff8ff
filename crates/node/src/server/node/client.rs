//! Client requests: validation, proposals for writes and configuration changes, ReadIndex
//! reads, and the replies.

use super::*;

impl Node {
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        let id = self.raft.leader().or_else(|| self.raft.handed_to())?;
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
        self.transport.send(
            to,
            Body::ClientReply(ClientReply {
                client_id,
                seq,
                result,
            }),
        );
    }

    pub(super) fn not_leader(&self) -> Result<ClientResponse, ClientError> {
        Err(ClientError::NotLeader {
            hint: self.leader_hint(),
        })
    }

    pub(super) fn on_client(&mut self, addr: SocketAddr, req: ClientRequest) {
        if req.op.is_write() && self.raft.is_leader() {
            match admit_write(self.apply_lag(), self.deferred.len()) {
                Admission::Now => {}
                Admission::Wait => return self.deferred.push_back((addr, req)),
                Admission::Busy => {
                    let busy = Err(ClientError::Unavailable {
                        reason: "the node is busy applying writes; retry shortly".into(),
                    });
                    return self.reply(addr, req.client_id, req.seq, busy);
                }
            }
        }
        if req.client_id == SYSTEM_CLIENT {
            let r = Err(bad(format!(
                "client id {SYSTEM_CLIENT} is reserved for the cluster itself; pick another"
            )));
            return self.reply(addr, req.client_id, req.seq, r);
        }
        if let Err(e) = req.op.validate() {
            return self.reply(addr, req.client_id, req.seq, Err(e));
        }
        let ClientRequest { client_id, seq, op } = req;
        let r = Asker {
            addr,
            client_id,
            seq,
        };
        match op {
            ClientOp::Put { key, value } => self.propose_write(r, Command::Put { key, value }),
            ClientOp::Delete { key } => self.propose_write(r, Command::Delete { key }),
            ClientOp::Compact { rev } => self.propose_write(r, Command::Compact { revision: rev }),
            ClientOp::Get {
                consistency: Consistency::Stale,
                ..
            } => self.start_stale_read(r, op),
            ClientOp::Get { .. } | ClientOp::History { .. } => self.start_read(r, op),
            ClientOp::NodeDetail { name } => self.on_node_detail(r, &name),
            ClientOp::StopNode { target } => self.on_stop(r, target),
            ClientOp::TransferLeader { name } => self.on_transfer(r, &name),
            ClientOp::RemoveNode { name } => self.on_remove(r, &name),
            ClientOp::AddMember {
                id,
                name,
                addr: member_addr,
            } => self.on_add_member(r, id, name, member_addr),
            ClientOp::Status
            | ClientOp::PendingJoins
            | ClientOp::Approve { .. }
            | ClientOp::Reject { .. } => self.answer(
                r,
                Err(bad(
                    "this request is answered by the entrance, not by a node".into(),
                )),
            ),
        }
    }

    fn answer(&mut self, r: Asker, result: Result<ClientResponse, ClientError>) {
        self.reply(r.addr, r.client_id, r.seq, result);
    }

    fn on_node_detail(&mut self, r: Asker, name: &str) {
        let result = if name.is_empty() || name == self.cfg.name {
            Ok(ClientResponse::NodeDetail(self.node_detail()))
        } else {
            Err(ClientError::NotFound {
                what: format!("node {name} (a node describes only itself; ask the entrance)"),
            })
        };
        self.answer(r, result);
    }

    fn on_stop(&mut self, r: Asker, target: StopTarget) {
        let refused = match target {
            StopTarget::Node { name } if name != self.cfg.name => {
                Some(format!("node {name} (this is {})", self.cfg.name))
            }
            StopTarget::Member { name, id } if name != self.cfg.name || id != self.raft.id() => {
                Some(format!(
                    "member {name} ({id:x}) (this is {}, {:x})",
                    self.cfg.name,
                    self.raft.id()
                ))
            }
            _ => None,
        };
        if let Some(what) = refused {
            return self.answer(r, Err(ClientError::NotFound { what }));
        }
        tracing::info!("stopping on request from {}", r.addr);
        self.answer(r, Ok(ClientResponse::Done));
        self.shutdown.cancel();
    }

    fn on_transfer(&mut self, r: Asker, name: &str) {
        let result = match self.member_by_name(name) {
            None => Err(ClientError::NotFound {
                what: format!("member {name}"),
            }),
            Some(m) => self
                .raft
                .transfer_leader(m.id)
                .map(|()| ClientResponse::Done)
                .map_err(|e| self.raft_error(e)),
        };
        self.answer(r, result);
    }

    fn on_remove(&mut self, r: Asker, name: &str) {
        let Some(m) = self.member_by_name(name) else {
            let what = format!("member {name}");
            return self.answer(r, Err(ClientError::NotFound { what }));
        };
        let mut next = self.raft.membership().clone();
        next.members.remove(&m.id);
        self.propose_config(r, next);
    }

    fn on_add_member(&mut self, r: Asker, id: NodeId, name: String, member_addr: String) {
        let current = self.raft.membership();
        if !self.raft.is_leader() {
            // `Done` means committed, and only the leader knows that.
            let result = self.not_leader();
            return self.answer(r, result);
        }
        if current.members.get(&id).is_some_and(|m| m.name == name) {
            if self.raft.membership_committed() {
                return self.answer(r, Ok(ClientResponse::Done));
            }
            // A retry while the change is still uncommitted: answer when it commits, or
            // with `NotLeader` if another leader's entry replaces it.
            return self.await_membership(r);
        }
        if let Some(other) = current
            .members
            .values()
            .find(|m| m.name == name || m.addr == member_addr)
        {
            let reason = format!("{} at {} is already a member", other.name, other.addr);
            return self.answer(r, Err(ClientError::Rejected { reason }));
        }
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
        self.propose_config(r, next);
    }

    pub(super) fn member_by_name(&self, name: &str) -> Option<Member> {
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

    fn propose_write(&mut self, r: Asker, cmd: Command) {
        if !self.raft.is_leader() {
            let result = self.not_leader();
            return self.answer(r, result);
        }
        if let Some((index, p)) = self.pending_writes.write_mut(r.client_id, r.seq) {
            tracing::trace!(
                client_id = r.client_id,
                seq = r.seq,
                index,
                "a copy of a write already proposed waits for its entry"
            );
            p.answer_to(r.addr);
            return;
        }
        let entry_time_ms = self.replicated_now();
        let payload = LogCommand {
            entry_time_ms,
            req: ClientCommand {
                client_id: r.client_id,
                seq: r.seq,
                cmd,
            },
        }
        .encode();
        let proposed = self.raft.propose(payload);
        self.track_proposal(proposed, PendingKind::Write, r);
    }

    /// The time to stamp on a new entry (see `clock.rs`).
    pub(super) fn replicated_now(&mut self) -> u64 {
        let (store, log) = (&self.store, self.raft.log());
        // tokio's clock, so that a simulated run stamps simulated time.
        let now = tokio::time::Instant::now().into_std();
        self.clock.stamp(self.raft.term(), now, || {
            // Entries not applied yet may carry later times than the state machine has seen.
            log.entries()
                .iter()
                .filter(|e| e.index > store.applied_index)
                .filter_map(|e| match &e.payload {
                    myraft_wire::raft::EntryPayload::Command(c) => LogCommand::decode(c).ok(),
                    _ => None,
                })
                .map(|c| c.entry_time_ms)
                .fold(store.clock_ms, u64::max)
        })
    }

    fn propose_config(&mut self, r: Asker, next: Membership) {
        let proposed = self.raft.propose_membership(next);
        self.track_proposal(proposed, PendingKind::Config, r);
    }

    fn await_membership(&mut self, r: Asker) {
        let index = self.raft.membership_index();
        let Some(term) = self.raft.log().term(index) else {
            let result = Err(ClientError::Unavailable {
                reason: "the membership change is being committed; retry shortly".into(),
            });
            return self.answer(r, result);
        };
        let proposed = Ok(crate::raft::Proposal { index, term });
        self.track_proposal(proposed, PendingKind::Config, r);
    }

    /// Remembers who waits for a proposal's entry, or tells them at once why it was refused.
    fn track_proposal(
        &mut self,
        proposed: Result<crate::raft::Proposal, RaftError>,
        kind: PendingKind,
        r: Asker,
    ) {
        match proposed {
            Ok(p) if self.pending_writes.contains(p.index) => {
                // Only a retried membership change can land on an index already waited on;
                // its first request is answered when the entry applies.
                let result = Err(ClientError::Unavailable {
                    reason: "the membership change is being committed; retry shortly".into(),
                });
                self.answer(r, result);
            }
            Ok(p) => {
                let w = PendingWrite::new(p.term, r.addr, r.client_id, r.seq, kind);
                self.pending_writes.insert(p.index, w);
            }
            Err(e) => {
                let e = self.raft_error(e);
                self.answer(r, Err(e));
            }
        }
    }

    fn start_read(&mut self, r: Asker, op: ClientOp) {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.pending_reads.insert(ctx, r.waiting_for(op));
            }
            Err(e) => {
                let e = self.raft_error(e);
                self.answer(r, Err(e));
            }
        }
    }

    /// A read from whatever this node has applied, without asking the leader.
    fn start_stale_read(&mut self, r: Asker, op: ClientOp) {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        self.applier.send(ApplyMsg::Read {
            ctx,
            index: 0,
            op: op.clone(),
        });
        self.pending_reads.insert(ctx, r.waiting_for(op));
    }
}

pub fn bad(reason: String) -> ClientError {
    ClientError::BadRequest { reason }
}

/// Who asked: where to send the answer, and the request it answers.
#[derive(Clone, Copy)]
struct Asker {
    addr: SocketAddr,
    client_id: u64,
    seq: u64,
}

impl Asker {
    fn waiting_for(self, op: ClientOp) -> ReadRequest {
        ReadRequest::new(self.addr, self.client_id, self.seq, op)
    }
}

/// What a leader does with a new write.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Propose it.
    Now,
    /// Hold it until the applier catches up ([`may_resume`]).
    Wait,
    /// Refuse it as busy: the waiting room is full.
    Busy,
}

/// Back-pressure (DESIGN.md): while the applier trails commit by `MAX_APPLY_LAG` entries,
/// new writes wait on the leader rather than grow the queue, up to `MAX_DEFERRED` of them.
/// Only writes: heartbeats, votes and reads never pass here.
pub(super) fn admit_write(apply_lag: u64, waiting: usize) -> Admission {
    if apply_lag < MAX_APPLY_LAG {
        Admission::Now
    } else if waiting < MAX_DEFERRED {
        Admission::Wait
    } else {
        Admission::Busy
    }
}

/// Held writes go on once the applier has caught up halfway, so that they do not bounce
/// at the limit one at a time.
pub(super) fn may_resume(apply_lag: u64) -> bool {
    apply_lag < MAX_APPLY_LAG / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_wait_while_the_applier_lags_and_are_refused_when_too_many_wait() {
        assert_eq!(admit_write(0, 0), Admission::Now);
        assert_eq!(admit_write(MAX_APPLY_LAG - 1, MAX_DEFERRED), Admission::Now);
        assert_eq!(admit_write(MAX_APPLY_LAG, 0), Admission::Wait);
        assert_eq!(
            admit_write(MAX_APPLY_LAG, MAX_DEFERRED - 1),
            Admission::Wait
        );
        assert_eq!(admit_write(MAX_APPLY_LAG, MAX_DEFERRED), Admission::Busy);
        assert_eq!(admit_write(u64::MAX, usize::MAX), Admission::Busy);
    }

    #[test]
    fn held_writes_go_on_only_once_the_applier_is_halfway_back() {
        assert!(!may_resume(MAX_APPLY_LAG));
        assert!(!may_resume(MAX_APPLY_LAG / 2));
        assert!(may_resume(MAX_APPLY_LAG / 2 - 1));
        assert!(may_resume(0));
    }
}
