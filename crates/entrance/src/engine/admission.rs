//! Admission: who may join. A node's `JoinRequest` is refused if its name or address is
//! taken, otherwise it waits (`Pending`) for an operator's `approve` (or `--auto-approve`),
//! and is `Accepted` once its configuration change is committed. Approved joins become
//! configuration changes, one at a time: the first node founds the cluster, every later one
//! is added as a learner through the leader.

use super::{Engine, RequestKey, SendTo, Task};
use crate::store::{AcceptedRecord, PendingRecord, PersistedState, RejectedRecord};
use myraft_wire::admission::{JoinDecision, JoinRequest, JoinResponse};
use myraft_wire::api::{ClientError, ClientResponse};
use myraft_wire::raft::{Member, Membership, NodeId};
use myraft_wire::Body;
use rand::RngExt;
use std::collections::{HashMap, VecDeque};
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

/// A configuration change the entrance drives through the leader, one at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add an approved pending node as a learner.
    Add {
        /// Its name.
        name: String,
    },
    /// Remove a member.
    Remove {
        /// Its name.
        name: String,
        /// The client request to answer once it is done, if a client asked.
        origin: Option<RequestKey>,
    },
}

/// Volatile facts about a pending join.
#[derive(Debug)]
struct PendingMeta {
    /// Where its last request came from, to send the verdict there.
    src: Option<SocketAddr>,
    last_heard: Instant,
}

/// Admission's volatile state: what is not worth persisting (a restart rebuilds it from the
/// pending records), and the queue of configuration changes.
#[derive(Debug, Default)]
pub struct Admission {
    pending_meta: HashMap<String, PendingMeta>,
    /// When each rejection is forgotten, so the name can ask again later.
    rejected_until: HashMap<String, Instant>,
    changes: VecDeque<Change>,
    in_flight: Option<Change>,
}

impl Admission {
    /// Queues a change; it starts once those before it are done.
    pub fn queue(&mut self, change: Change) {
        self.changes.push_back(change);
    }

    /// Whether a change is under way or waiting.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.changes.is_empty()
    }

    /// Ends the change in flight, returning it.
    pub fn finish(&mut self) -> Option<Change> {
        self.in_flight.take()
    }

    fn heard(&mut self, name: &str, src: Option<SocketAddr>, now: Instant) {
        self.pending_meta.insert(
            name.to_owned(),
            PendingMeta {
                src,
                last_heard: now,
            },
        );
    }
}

/// What the recorded state says about a join request, before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinCheck {
    /// Refused: a bad name or address, or one taken by another node.
    Refuse(String),
    /// An operator (or the leader) refused this name before; the node hears it again.
    RejectedBefore(String),
    /// Already a member: its `Accepted` was lost, or it restarted before saving it.
    Member(NodeId),
    /// Already waiting to join under this name, from the same node.
    Waiting,
    /// A new request.
    New,
}

/// Decides a join request against the recorded state alone: no clock, no change.
pub fn check_join(state: &PersistedState, request: &JoinRequest) -> JoinCheck {
    let JoinRequest {
        name,
        addr,
        node_id,
    } = request;
    if let Err(reason) = validate(request) {
        return JoinCheck::Refuse(reason);
    }
    if let Some(rejected) = state.rejected.iter().find(|r| &r.name == name) {
        return JoinCheck::RejectedBefore(rejected.reason.clone());
    }
    if let Some(member) = state.members.values().find(|m| &m.name == name) {
        let asked_for_before = state
            .accepted
            .iter()
            .any(|a| &a.name == name && a.node_id == member.id && a.requested == *node_id);
        if *node_id == Some(member.id) || asked_for_before {
            return JoinCheck::Member(member.id);
        }
        return JoinCheck::Refuse(format!(
            "name {name} is taken by member {:016x} at {}; choose another --name, or \
             restart that node on its own data dir",
            member.id, member.addr
        ));
    }
    if let Some(member) = state.members.values().find(|m| &m.addr == addr) {
        return JoinCheck::Refuse(format!(
            "address {addr} is already used by member {}; give this node another \
             --listen/--advertise address",
            member.name
        ));
    }
    if let Some(other) = state
        .pending
        .iter()
        .find(|p| &p.addr == addr && &p.name != name)
    {
        return JoinCheck::Refuse(format!(
            "address {addr} is already waiting to join as {}; give this node another \
             --listen/--advertise address",
            other.name
        ));
    }
    if let Some(pending) = state.pending.iter().find(|p| &p.name == name) {
        if pending.node_id != *node_id {
            return JoinCheck::Refuse(format!(
                "name {name} is already waiting to join from {} (another node); choose \
                 another --name",
                pending.addr
            ));
        }
        return JoinCheck::Waiting;
    }
    JoinCheck::New
}

impl Engine {
    fn send_join_response(&mut self, to: SocketAddr, decision: JoinDecision) {
        let response = JoinResponse {
            cluster_id: self.state.cluster_id,
            decision,
        };
        self.send(SendTo::Socket(to), Body::JoinResponse(response));
    }

    pub(super) fn on_join_request(&mut self, request: JoinRequest, src: SocketAddr) {
        if let Some(decision) = self.decide_join(&request, src) {
            self.send_join_response(src, decision);
        }
    }

    fn current_membership(&self) -> Membership {
        Membership {
            members: self.state.members.clone(),
        }
    }

    /// Records what [`check_join`] decided. `None` when the verdict was already sent (a
    /// join accepted on the spot).
    fn decide_join(&mut self, request: &JoinRequest, src: SocketAddr) -> Option<JoinDecision> {
        let now = self.now.at;
        let name = &request.name;
        match check_join(&self.state, request) {
            JoinCheck::Refuse(reason) => Some(JoinDecision::Rejected { reason }),
            JoinCheck::RejectedBefore(reason) => {
                let until = self
                    .admission
                    .rejected_until
                    .entry(name.clone())
                    .or_insert(now + REJECTION_KEPT);
                *until = (*until).min(now + REJECTION_KEPT_AFTER_TOLD);
                Some(JoinDecision::Rejected { reason })
            }
            JoinCheck::Member(node_id) => Some(JoinDecision::Accepted {
                node_id,
                membership: self.current_membership(),
            }),
            JoinCheck::Waiting => {
                let unix_ms = self.now.unix_ms;
                let pending = self.state.pending.iter_mut().find(|p| &p.name == name)?;
                if !pending.approved && pending.addr != request.addr {
                    pending.addr = request.addr.clone();
                    self.dirty = true;
                }
                let waiting_ms = unix_ms.saturating_sub(pending.since_unix_ms);
                self.admission.heard(name, Some(src), now);
                Some(JoinDecision::Pending { waiting_ms })
            }
            JoinCheck::New => self.new_join(request, src),
        }
    }

    fn new_join(&mut self, request: &JoinRequest, src: SocketAddr) -> Option<JoinDecision> {
        let JoinRequest {
            name,
            addr,
            node_id,
        } = request;
        self.state.pending.push(PendingRecord {
            name: name.clone(),
            addr: addr.clone(),
            node_id: *node_id,
            since_unix_ms: self.now.unix_ms,
            approved: self.config.auto_approve,
        });
        self.admission.heard(name, Some(src), self.now.at);
        self.dirty = true;
        if self.config.auto_approve {
            info!(%name, %addr, "{name} at {addr} asks to join; approved automatically");
            self.admission.queue(Change::Add { name: name.clone() });
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

    pub(super) fn approve(&mut self, name: &str) -> Result<ClientResponse, ClientError> {
        let Some(pending) = self.state.pending.iter_mut().find(|p| p.name == name) else {
            return Err(ClientError::NotFound {
                what: format!("pending join {name}"),
            });
        };
        if !pending.approved {
            pending.approved = true;
            self.dirty = true;
            info!(%name, "join of {name} approved");
            self.admission.queue(Change::Add {
                name: name.to_owned(),
            });
            self.start_changes();
        }
        Ok(ClientResponse::Done)
    }

    pub(super) fn reject(&mut self, name: &str) -> Result<ClientResponse, ClientError> {
        let Some(index) = self.state.pending.iter().position(|p| p.name == name) else {
            return Err(ClientError::NotFound {
                what: format!("pending join {name}"),
            });
        };
        let adding = Change::Add {
            name: name.to_owned(),
        };
        if self.admission.in_flight.as_ref() == Some(&adding) {
            return Err(ClientError::Rejected {
                reason: format!(
                    "{name} is being added to the configuration already; remove it once it joined"
                ),
            });
        }
        self.admission.changes.retain(|c| *c != adding);
        let pending = self.state.pending.remove(index);
        let reason = format!("an operator rejected the join of {name}");
        info!(%name, "join of {name} rejected");
        self.reject_pending(pending, reason);
        Ok(ClientResponse::Done)
    }

    /// Records a refusal and tells the node now if we know where it is; its next request
    /// hears the same.
    fn reject_pending(&mut self, pending: PendingRecord, reason: String) {
        let now = self.now.at;
        let src = self
            .admission
            .pending_meta
            .remove(&pending.name)
            .and_then(|m| m.src);
        self.state.rejected.retain(|r| r.name != pending.name);
        self.state.rejected.push(RejectedRecord {
            name: pending.name.clone(),
            node_id: pending.node_id,
            reason: reason.clone(),
        });
        self.admission
            .rejected_until
            .insert(pending.name, now + REJECTION_KEPT);
        self.dirty = true;
        if let Some(src) = src {
            self.send_join_response(src, JoinDecision::Rejected { reason });
        }
    }

    /// The id a joining node gets: the one it asked for, unless that is absent, zero, or
    /// already somebody's.
    fn assign_node_id(&mut self, requested: Option<NodeId>) -> NodeId {
        let state = &self.state;
        let taken = |id: NodeId| {
            id == 0
                || state.members.contains_key(&id)
                || state.accepted.iter().any(|a| a.node_id == id)
        };
        if let Some(id) = requested.filter(|id| !taken(*id)) {
            return id;
        }
        loop {
            let id = self.rng.random();
            if !taken(id) {
                return id;
            }
        }
    }

    /// Starts queued configuration changes while none is in flight.
    pub(super) fn start_changes(&mut self) {
        while self.admission.in_flight.is_none() {
            let Some(change) = self.admission.changes.pop_front() else {
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
                    self.effects.push(super::Effect::Start(Task::Add {
                        name: pending.name,
                        node_id,
                        addr: pending.addr,
                    }));
                    self.admission.in_flight = Some(change);
                }
                Change::Remove { name, origin } => {
                    let Some(member) = self.member_by_name(name).cloned() else {
                        if let Some(key) = *origin {
                            let what = format!("node {name}");
                            self.answer_local_op(key, Err(ClientError::NotFound { what }));
                        }
                        continue;
                    };
                    self.effects.push(super::Effect::Start(Task::Remove {
                        name: member.name,
                        id: member.id,
                        addr: member.addr,
                    }));
                    self.admission.in_flight = Some(change);
                }
            }
        }
    }

    /// Re-queues joins that were approved before a restart, and starts the clocks that
    /// forget stale entries.
    pub(super) fn restart_changes(&mut self) {
        let now = self.now.at;
        for pending in &self.state.pending {
            self.admission.heard(&pending.name, None, now);
            if pending.approved {
                self.admission.queue(Change::Add {
                    name: pending.name.clone(),
                });
            }
        }
        for rejected in &self.state.rejected {
            self.admission
                .rejected_until
                .insert(rejected.name.clone(), now + REJECTION_KEPT);
        }
        self.start_changes();
    }

    /// Makes the node a member in our view and tells it so.
    fn accept(&mut self, pending: PendingRecord, node_id: NodeId, membership: Membership) {
        let name = pending.name.clone();
        self.state.pending.retain(|p| p.name != name);
        let src = self
            .admission
            .pending_meta
            .remove(&name)
            .and_then(|m| m.src);
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

    pub(super) fn on_added(
        &mut self,
        name: String,
        node_id: NodeId,
        result: Result<(), ClientError>,
    ) {
        self.admission.in_flight = None;
        let pending = self.state.pending.iter().find(|p| p.name == name).cloned();
        if let Some(pending) = pending {
            match result {
                Ok(()) => {
                    // The leader's own view is the freshest; the new member may not be in it
                    // yet if its last reply predates the commit.
                    let mut membership = self
                        .state
                        .leader
                        .and_then(|id| self.detector.reply(id))
                        .map(|r| r.membership.clone())
                        .filter(|m| !m.members.is_empty())
                        .unwrap_or_else(|| self.current_membership());
                    // Nodes accepted since that reply are committed members too (adds run
                    // one at a time, each after the previous one's completion); without
                    // them the view would lose the previous join until the leader's next
                    // reply.
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
    pub(super) fn expire_admission(&mut self, now: Instant) {
        let meta = &self.admission.pending_meta;
        let gone: Vec<String> = self
            .state
            .pending
            .iter()
            .filter(|p| !p.approved)
            .filter(|p| {
                meta.get(&p.name)
                    .is_none_or(|m| now.duration_since(m.last_heard) >= PENDING_FORGET_AFTER)
            })
            .map(|p| p.name.clone())
            .collect();
        for name in gone {
            info!(%name, "{name} stopped asking to join; forgetting it");
            self.state.pending.retain(|p| p.name != name);
            self.admission.pending_meta.remove(&name);
            self.dirty = true;
        }
        let expired: Vec<String> = self
            .admission
            .rejected_until
            .iter()
            .filter(|(_, until)| now >= **until)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            self.admission.rejected_until.remove(&name);
            self.state.rejected.retain(|r| r.name != name);
            self.dirty = true;
        }
    }
}
