//! Admission: who may join. A node's `JoinRequest` is refused if its name or address is
//! taken, otherwise it waits (`Pending`) for an operator's `approve` (or `--auto-approve`),
//! and is `Accepted` once its configuration change is committed. Approved joins become
//! configuration changes, one at a time: the first node founds the cluster, every later one
//! is added as a learner through the leader.

use crate::ops::{self, Ctx};
use crate::server::{unix_ms, Change, Core, Dest, PendingMeta};
use crate::store::{AcceptedRecord, PendingRecord, RejectedRecord};
use myraft_wire::admission::{JoinDecision, JoinRequest, JoinResponse};
use myraft_wire::client::{ClientError, ClientResponse};
use myraft_wire::raft::{Member, Membership, NodeId};
use myraft_wire::Body;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// A pending node that stopped asking this long ago has given up; forget it.
const PENDING_FORGET_AFTER: Duration = Duration::from_secs(600);
/// A rejection no node asked about is forgotten after this, so the name can be used again.
const REJECTION_KEPT: Duration = Duration::from_secs(600);
/// Once told, a rejection is kept this much longer, for the node's retries of a lost reply.
const REJECTION_KEPT_AFTER_TOLD: Duration = Duration::from_secs(60);
const MAX_NAME_LEN: usize = 63;

fn validate(request: &JoinRequest) -> Result<(), String> {
    let name = &request.name;
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name {name:?} must have 1 to {MAX_NAME_LEN} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "name {name:?} may only use letters, digits, '-', '_' and '.'"
        ));
    }
    let port_ok = request
        .addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !port_ok {
        return Err(format!(
            "address {:?} is not HOST:PORT; set --advertise to where peers reach the node",
            request.addr
        ));
    }
    Ok(())
}

impl Core {
    pub(crate) fn ctx(&self) -> Ctx {
        Ctx {
            net: self.net.clone(),
            leader: self.leader_tx.subscribe(),
            done: self.done_tx.clone(),
            shutdown: self.shutdown.clone(),
            tracker: self.tracker.clone(),
            timeout: self.config.request_timeout,
        }
    }

    fn send_join_response(&mut self, to: SocketAddr, decision: JoinDecision) {
        let response = JoinResponse {
            cluster_id: self.state.cluster_id,
            decision,
        };
        self.outbox
            .push((Dest::Socket(to), Body::JoinResponse(response)));
    }

    pub(crate) fn on_join_request(&mut self, request: JoinRequest, src: SocketAddr) {
        if let Some(decision) = self.decide_join(&request, src) {
            self.send_join_response(src, decision);
        }
    }

    fn current_membership(&self) -> Membership {
        Membership {
            members: self.state.members.clone(),
        }
    }

    /// `None` when the verdict was already sent (a join that was accepted on the spot).
    fn decide_join(&mut self, request: &JoinRequest, src: SocketAddr) -> Option<JoinDecision> {
        let JoinRequest {
            name,
            addr,
            node_id,
        } = request;
        let now = Instant::now();
        if let Err(reason) = validate(request) {
            return Some(JoinDecision::Rejected { reason });
        }
        if let Some(rejected) = self.state.rejected.iter().find(|r| &r.name == name) {
            let reason = rejected.reason.clone();
            let until = self
                .rejected_until
                .entry(name.clone())
                .or_insert(now + REJECTION_KEPT);
            *until = (*until).min(now + REJECTION_KEPT_AFTER_TOLD);
            return Some(JoinDecision::Rejected { reason });
        }
        if let Some(member) = self.member_by_name(name) {
            let asked_for_before = self
                .state
                .accepted
                .iter()
                .any(|a| &a.name == name && a.node_id == member.id && a.requested == *node_id);
            if *node_id == Some(member.id) || asked_for_before {
                // Its `Accepted` was lost, or it restarted before saving it: same answer.
                return Some(JoinDecision::Accepted {
                    node_id: member.id,
                    membership: self.current_membership(),
                });
            }
            return Some(JoinDecision::Rejected {
                reason: format!(
                    "name {name} is taken by member {:016x} at {}; choose another --name, or \
                     restart that node on its own data dir",
                    member.id, member.addr
                ),
            });
        }
        if let Some(member) = self.state.members.values().find(|m| &m.addr == addr) {
            return Some(JoinDecision::Rejected {
                reason: format!(
                    "address {addr} is already used by member {}; give this node another \
                     --listen/--advertise address",
                    member.name
                ),
            });
        }
        if let Some(other) = self
            .state
            .pending
            .iter()
            .find(|p| &p.addr == addr && &p.name != name)
        {
            return Some(JoinDecision::Rejected {
                reason: format!(
                    "address {addr} is already waiting to join as {}; give this node another \
                     --listen/--advertise address",
                    other.name
                ),
            });
        }
        if let Some(pending) = self.state.pending.iter_mut().find(|p| &p.name == name) {
            if pending.node_id != *node_id {
                return Some(JoinDecision::Rejected {
                    reason: format!(
                        "name {name} is already waiting to join from {} (another node); choose \
                         another --name",
                        pending.addr
                    ),
                });
            }
            if !pending.approved && &pending.addr != addr {
                pending.addr = addr.clone();
                self.dirty = true;
            }
            let waiting_ms = unix_ms().saturating_sub(pending.since_unix_ms);
            self.pending_meta.insert(
                name.clone(),
                PendingMeta {
                    src: Some(src),
                    last_heard: now,
                },
            );
            return Some(JoinDecision::Pending { waiting_ms });
        }

        self.state.pending.push(PendingRecord {
            name: name.clone(),
            addr: addr.clone(),
            node_id: *node_id,
            since_unix_ms: unix_ms(),
            approved: self.config.auto_approve,
        });
        self.pending_meta.insert(
            name.clone(),
            PendingMeta {
                src: Some(src),
                last_heard: now,
            },
        );
        self.dirty = true;
        if self.config.auto_approve {
            info!(%name, %addr, "{name} at {addr} asks to join; approved automatically");
            self.changes.push_back(Change::Add { name: name.clone() });
            self.start_changes();
            if self.member_by_name(name).is_some() {
                return None;
            }
        } else {
            info!(
                %name, %addr,
                "{name} at {addr} asks to join; `myraft approve {name}` or `myraft reject {name}`"
            );
        }
        Some(JoinDecision::Pending { waiting_ms: 0 })
    }

    pub(crate) fn approve(&mut self, name: &str) -> Result<ClientResponse, ClientError> {
        let Some(pending) = self.state.pending.iter_mut().find(|p| p.name == name) else {
            return Err(ClientError::NotFound {
                what: format!("pending join {name}"),
            });
        };
        if !pending.approved {
            pending.approved = true;
            self.dirty = true;
            info!(%name, "join of {name} approved");
            self.changes.push_back(Change::Add {
                name: name.to_owned(),
            });
            self.start_changes();
        }
        Ok(ClientResponse::Done)
    }

    pub(crate) fn reject(&mut self, name: &str) -> Result<ClientResponse, ClientError> {
        let Some(index) = self.state.pending.iter().position(|p| p.name == name) else {
            return Err(ClientError::NotFound {
                what: format!("pending join {name}"),
            });
        };
        let adding = Change::Add {
            name: name.to_owned(),
        };
        if self.in_flight.as_ref() == Some(&adding) {
            return Err(ClientError::Rejected {
                reason: format!(
                    "{name} is being added to the configuration already; remove it once it joined"
                ),
            });
        }
        self.changes.retain(|c| *c != adding);
        let pending = self.state.pending.remove(index);
        let reason = format!("an operator rejected the join of {name}");
        info!(%name, "join of {name} rejected");
        self.reject_pending(pending, reason);
        Ok(ClientResponse::Done)
    }

    /// Records a refusal and tells the node now if we know where it is; its next request
    /// hears the same.
    fn reject_pending(&mut self, pending: PendingRecord, reason: String) {
        let now = Instant::now();
        let src = self.pending_meta.remove(&pending.name).and_then(|m| m.src);
        self.state.rejected.retain(|r| r.name != pending.name);
        self.state.rejected.push(RejectedRecord {
            name: pending.name.clone(),
            node_id: pending.node_id,
            reason: reason.clone(),
        });
        self.rejected_until
            .insert(pending.name, now + REJECTION_KEPT);
        self.dirty = true;
        if let Some(src) = src {
            self.send_join_response(src, JoinDecision::Rejected { reason });
        }
    }

    /// The id a joining node gets: the one it asked for, unless that is absent, zero, or
    /// already somebody's.
    fn assign_node_id(&self, requested: Option<NodeId>) -> NodeId {
        let taken = |id: NodeId| {
            id == 0
                || self.state.members.contains_key(&id)
                || self.state.accepted.iter().any(|a| a.node_id == id)
        };
        if let Some(id) = requested.filter(|id| !taken(*id)) {
            return id;
        }
        loop {
            let id = rand::random();
            if !taken(id) {
                return id;
            }
        }
    }

    /// Starts queued configuration changes while none is in flight.
    pub(crate) fn start_changes(&mut self) {
        while self.in_flight.is_none() {
            let Some(change) = self.changes.pop_front() else {
                return;
            };
            match &change {
                Change::Add { name } => {
                    let Some(pending) = self
                        .state
                        .pending
                        .iter()
                        .find(|p| &p.name == name && p.approved)
                        .cloned()
                    else {
                        continue;
                    };
                    let node_id = self.assign_node_id(pending.node_id);
                    if self.state.members.is_empty() {
                        let founder = Member {
                            id: node_id,
                            name: pending.name.clone(),
                            addr: pending.addr.clone(),
                            voter: true,
                        };
                        info!(name = %founder.name, "{} founds the cluster", founder.name);
                        let membership = Membership {
                            members: [(node_id, founder)].into_iter().collect(),
                        };
                        self.accept(pending, node_id, membership);
                        continue;
                    }
                    ops::spawn_add(self.ctx(), pending.name, node_id, pending.addr);
                    self.in_flight = Some(change);
                }
                Change::Remove { name, origin } => {
                    let Some(member) = self.member_by_name(name).cloned() else {
                        if let Some(key) = origin {
                            if let Some(op) = self.local_ops.remove(key) {
                                let what = format!("node {name}");
                                self.reply(
                                    op.reply_to,
                                    key.0,
                                    key.1,
                                    Err(ClientError::NotFound { what }),
                                );
                            }
                        }
                        continue;
                    };
                    ops::spawn_remove(self.ctx(), member.name, member.id, member.addr);
                    self.in_flight = Some(change);
                }
            }
        }
    }

    /// Re-queues joins that were approved before a restart, and starts the clocks that
    /// forget stale entries.
    pub(crate) fn restart_changes(&mut self) {
        let now = Instant::now();
        for pending in &self.state.pending {
            self.pending_meta.insert(
                pending.name.clone(),
                PendingMeta {
                    src: None,
                    last_heard: now,
                },
            );
            if pending.approved {
                self.changes.push_back(Change::Add {
                    name: pending.name.clone(),
                });
            }
        }
        for rejected in &self.state.rejected {
            self.rejected_until
                .insert(rejected.name.clone(), now + REJECTION_KEPT);
        }
        self.start_changes();
    }

    /// Makes the node a member in our view and tells it so.
    fn accept(&mut self, pending: PendingRecord, node_id: NodeId, membership: Membership) {
        let name = pending.name.clone();
        self.state.pending.retain(|p| p.name != name);
        let src = self.pending_meta.remove(&name).and_then(|m| m.src);
        self.state.accepted.retain(|a| a.name != name);
        self.state.accepted.push(AcceptedRecord {
            name: name.clone(),
            requested: pending.node_id,
            node_id,
        });
        self.state.members = membership.members.clone();
        self.dirty = true;
        self.sync_trackers();
        info!(%name, "{name} joined as node {node_id:016x}");
        if let Some(src) = src {
            self.send_join_response(
                src,
                JoinDecision::Accepted {
                    node_id,
                    membership,
                },
            );
        }
    }

    pub(crate) fn on_added(&mut self, name: String, node_id: NodeId, result: Result<(), String>) {
        self.in_flight = None;
        let pending = self.state.pending.iter().find(|p| p.name == name).cloned();
        if let Some(pending) = pending {
            match result {
                Ok(()) => {
                    // The leader's own view is the freshest; the new member may not be in it
                    // yet if its last reply predates the commit.
                    let mut membership = self
                        .state
                        .leader
                        .and_then(|id| self.trackers.get(&id))
                        .and_then(|t| t.reply.as_ref())
                        .map(|r| r.membership.clone())
                        .filter(|m| !m.members.is_empty())
                        .unwrap_or_else(|| self.current_membership());
                    // Nodes accepted since that reply are committed members too (adds run
                    // one at a time, each after the previous one's `Done`); without them the
                    // view would lose the previous join until the leader's next reply.
                    for (id, member) in &self.state.members {
                        membership
                            .members
                            .entry(*id)
                            .or_insert_with(|| member.clone());
                    }
                    membership.members.entry(node_id).or_insert(Member {
                        id: node_id,
                        name: pending.name.clone(),
                        addr: pending.addr.clone(),
                        voter: false,
                    });
                    self.accept(pending, node_id, membership);
                }
                Err(reason) => {
                    warn!(%name, "the leader refused to add {name}: {reason}");
                    self.state.pending.retain(|p| p.name != name);
                    let reason = format!("the leader refused to add {name}: {reason}");
                    self.reject_pending(pending, reason);
                }
            }
        }
        self.start_changes();
    }

    /// Forgets pending nodes that gave up and rejections that were heard.
    pub(crate) fn expire_admission(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .state
            .pending
            .iter()
            .filter(|p| !p.approved)
            .filter(|p| {
                self.pending_meta
                    .get(&p.name)
                    .is_none_or(|m| now.duration_since(m.last_heard) >= PENDING_FORGET_AFTER)
            })
            .map(|p| p.name.clone())
            .collect();
        for name in gone {
            info!(%name, "{name} stopped asking to join; forgetting it");
            self.state.pending.retain(|p| p.name != name);
            self.pending_meta.remove(&name);
            self.dirty = true;
        }
        let expired: Vec<String> = self
            .rejected_until
            .iter()
            .filter(|(_, until)| now >= **until)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            self.rejected_until.remove(&name);
            self.state.rejected.retain(|r| r.name != name);
            self.dirty = true;
        }
    }
}
