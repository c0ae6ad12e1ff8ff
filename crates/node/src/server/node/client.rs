//! Client requests: validation, proposals for writes and configuration changes, ReadIndex
//! reads, and the replies.

use super::*;

impl Node {
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

    pub(super) fn not_leader(&self) -> Result<ClientResponse, ClientError> {
        Err(ClientError::NotLeader {
            hint: self.leader_hint(),
        })
    }

    pub(super) fn on_client(&mut self, addr: SocketAddr, req: ClientRequest) {
        if req.op.is_write() && self.raft.is_leader() && self.apply_lag() >= MAX_APPLY_LAG {
            // Back-pressure: the applier is behind, so new writes wait here rather than grow
            // the queue; a full waiting room is refused as busy.
            if self.deferred.len() < MAX_DEFERRED {
                self.deferred.push_back((addr, req));
            } else {
                let busy = Err(ClientError::Unavailable {
                    reason: "the node is busy applying writes; retry shortly".into(),
                });
                self.reply(addr, req.client_id, req.seq, busy);
            }
            return;
        }
        if req.client_id == SYSTEM_CLIENT {
            let r = Err(bad(format!(
                "client id {SYSTEM_CLIENT} is reserved for the cluster itself; pick another"
            )));
            return self.reply(addr, req.client_id, req.seq, r);
        }
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
                Ok(()) if consistency == Consistency::Stale => {
                    return self.start_stale_read(addr, client_id, seq, op)
                }
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
                StopTarget::Member { name, id }
                    if name != self.cfg.name || id != self.raft.id() =>
                {
                    Err(ClientError::NotFound {
                        what: format!(
                            "member {name} ({id:x}) (this is {}, {:x})",
                            self.cfg.name,
                            self.raft.id()
                        ),
                    })
                }
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

    pub(super) fn propose_write(
        &mut self,
        addr: SocketAddr,
        client_id: u64,
        seq: u64,
        cmd: Command,
    ) {
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

    pub(super) fn propose_config(
        &mut self,
        addr: SocketAddr,
        client_id: u64,
        seq: u64,
        next: Membership,
    ) {
        let proposed = self.raft.propose_membership(next);
        self.track_proposal(proposed, PendingKind::Config, addr, client_id, seq);
    }

    pub(super) fn await_membership(&mut self, addr: SocketAddr, client_id: u64, seq: u64) {
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
    pub(super) fn track_proposal(
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
                let w = PendingWrite::new(p.term, addr, client_id, seq, kind);
                self.pending_writes.insert(p.index, w);
            }
            Err(e) => {
                let e = self.raft_error(e);
                self.reply(addr, client_id, seq, Err(e));
            }
        }
    }

    pub(super) fn start_read(&mut self, addr: SocketAddr, client_id: u64, seq: u64, op: ClientOp) {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.pending_reads
                    .insert(ctx, ReadRequest::new(addr, client_id, seq, op));
            }
            Err(e) => {
                let e = self.raft_error(e);
                self.reply(addr, client_id, seq, Err(e));
            }
        }
    }
}

impl Node {
    /// A read from whatever this node has applied, without asking the leader.
    pub(super) fn start_stale_read(
        &mut self,
        addr: SocketAddr,
        client_id: u64,
        seq: u64,
        op: ClientOp,
    ) {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        self.applier.send(ApplyMsg::Read {
            ctx,
            index: 0,
            op: op.clone(),
        });
        self.pending_reads
            .insert(ctx, ReadRequest::new(addr, client_id, seq, op));
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
