//! Client requests. The entrance answers what it knows better than any node (status, node
//! details from its probes, pending joins, approve/reject) and what needs several nodes
//! (stop, remove); it forwards everything else to the leader and relays the leader's reply
//! to the client's address, keyed by `(client_id, seq)`.

use super::{Change, ClientResult, Effect, Engine, RequestKey, SendTo, Task};
use myraft_wire::api::{
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, ClusterStatus, MemberStatus,
    NodeDetail, PendingJoin, StopTarget,
};
use myraft_wire::health::{Health, Role};
use myraft_wire::raft::Member;
use myraft_wire::Body;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::debug;

/// A client request relayed to the leader, waiting for its reply.
#[derive(Debug)]
struct Relay {
    reply_to: SocketAddr,
    since: Instant,
}

/// The router's state: requests relayed to the leader, and requests a task answers.
#[derive(Debug)]
pub struct Router {
    relays: HashMap<RequestKey, Relay>,
    /// Requests the entrance answers once a task finishes them (stop, remove): the latest
    /// source address, since a client that retried may have moved.
    local_ops: HashMap<RequestKey, SocketAddr>,
    relay_timeout: Duration,
}

impl Router {
    /// A relayed request is forgotten after `relay_timeout` without the leader's reply.
    pub fn new(relay_timeout: Duration) -> Router {
        Router {
            relays: HashMap::new(),
            local_ops: HashMap::new(),
            relay_timeout,
        }
    }

    /// Registers a request a task will answer; `false` if it is a retry of one already
    /// under way (the answer then goes to the retry's address).
    pub fn begin_local_op(&mut self, key: RequestKey, src: SocketAddr) -> bool {
        self.local_ops.insert(key, src).is_none()
    }

    /// Where to answer a request a task finished, once.
    pub fn finish_local_op(&mut self, key: RequestKey) -> Option<SocketAddr> {
        self.local_ops.remove(&key)
    }

    /// Remembers where to send the leader's reply to a relayed request.
    pub fn relay(&mut self, key: RequestKey, reply_to: SocketAddr, now: Instant) {
        self.relays.insert(
            key,
            Relay {
                reply_to,
                since: now,
            },
        );
    }

    /// Where the leader's reply to `key` goes, once.
    pub fn take_relay(&mut self, key: RequestKey) -> Option<SocketAddr> {
        self.relays.remove(&key).map(|r| r.reply_to)
    }

    /// Forgets relays the leader never answered.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.relay_timeout;
        self.relays
            .retain(|_, relay| now.duration_since(relay.since) < timeout);
    }
}

impl Engine {
    pub(super) fn on_client_request(&mut self, request: ClientRequest, src: SocketAddr) {
        let key: RequestKey = (request.client_id, request.seq);
        let result = match &request.op {
            ClientOp::Status => Ok(ClientResponse::Status(self.cluster_status())),
            ClientOp::NodeDetail { name } => self.node_detail(name).map(ClientResponse::NodeDetail),
            ClientOp::PendingJoins => Ok(ClientResponse::PendingJoins(self.pending_joins())),
            ClientOp::Approve { name } => self.approve(name),
            ClientOp::Reject { name } => self.reject(name),
            ClientOp::StopNode { target } => {
                let target = target.clone();
                return self.stop(key, target, src);
            }
            ClientOp::RemoveNode { name } => {
                let name = name.clone();
                return self.remove(key, name, src);
            }
            ClientOp::AddMember { .. } => Err(ClientError::BadRequest {
                reason: "members are added by the entrance once an operator approves a join; \
                         start the node with --entrance instead"
                    .to_owned(),
            }),
            ClientOp::Put { .. }
            | ClientOp::Get { .. }
            | ClientOp::Delete { .. }
            | ClientOp::History { .. }
            | ClientOp::Compact { .. }
            | ClientOp::TransferLeader { .. } => return self.forward(request, src),
        };
        self.reply(src, key, result);
    }

    /// Answers a request a task (or a change) finished.
    pub(super) fn answer_local_op(&mut self, key: RequestKey, result: ClientResult) {
        if let Some(to) = self.router.finish_local_op(key) {
            self.reply(to, key, result);
        }
    }

    fn stop(&mut self, key: RequestKey, target: StopTarget, src: SocketAddr) {
        let (name, id) = match target {
            StopTarget::Member { name, id } => (name, Some(id)),
            StopTarget::Node { name } => (name, None),
            StopTarget::All => return self.stop_all(key, src),
        };
        let found = self
            .member_by_name(&name)
            .filter(|m| id.is_none_or(|id| m.id == id))
            .cloned();
        let Some(member) = found else {
            let what = format!("node {name}");
            return self.reply(src, key, Err(ClientError::NotFound { what }));
        };
        if self.router.begin_local_op(key, src) {
            self.effects.push(Effect::Start(Task::Stop {
                key,
                name: member.name,
                addr: member.addr,
            }));
        }
    }

    fn stop_all(&mut self, key: RequestKey, src: SocketAddr) {
        if !self.router.begin_local_op(key, src) {
            return;
        }
        let leader = self.state.leader;
        let (leaders, followers): (Vec<&Member>, Vec<&Member>) = self
            .state
            .members
            .values()
            .partition(|m| Some(m.id) == leader);
        let pair = |m: &&Member| (m.name.clone(), m.addr.clone());
        let followers = followers.iter().map(pair).collect();
        let leader = leaders.first().map(pair);
        self.effects.push(Effect::Start(Task::StopAll {
            key,
            followers,
            leader,
        }));
    }

    fn remove(&mut self, key: RequestKey, name: String, src: SocketAddr) {
        if self.member_by_name(&name).is_none() {
            let what = format!("node {name}");
            return self.reply(src, key, Err(ClientError::NotFound { what }));
        }
        if self.router.begin_local_op(key, src) {
            self.admission.queue(Change::Remove {
                name,
                origin: Some(key),
            });
            self.start_changes();
        }
    }

    pub(super) fn on_removed(&mut self, name: String, id: u64, result: ClientResult) {
        let origin = match self.admission.finish() {
            Some(Change::Remove { origin, .. }) => origin,
            _ => None,
        };
        match &result {
            Ok(_) => {
                tracing::info!(%name, "{name} removed from the configuration");
                self.state.members.remove(&id);
                self.state.accepted.retain(|a| a.name != name);
                self.dirty = true;
                if self.state.leader == Some(id) {
                    self.set_leader(None, self.state.term);
                }
                self.sync_trackers();
            }
            Err(e) => tracing::warn!(%name, "removing {name} failed: {e}"),
        }
        if let Some(key) = origin {
            self.answer_local_op(key, result);
        }
        self.start_changes();
    }

    fn forward(&mut self, request: ClientRequest, src: SocketAddr) {
        let key = (request.client_id, request.seq);
        // A leader that missed its last probes may be dead: say "no leader yet" at once, so
        // the client goes on looking (it asks the members too) instead of waiting on a
        // request forwarded into silence.
        let leader = self.published_leader.clone().filter(|l| self.is_up(l.id));
        let Some(leader) = leader else {
            return self.reply(src, key, Err(ClientError::NotLeader { hint: None }));
        };
        debug!(leader = %leader.name, "forwarding {:?} to the leader", request.op);
        self.router.relay(key, src, self.now.at);
        self.send(SendTo::Addr(leader.addr), Body::ClientRequest(request));
    }

    pub(super) fn on_relayed_reply(&mut self, reply: ClientReply) {
        match self.router.take_relay((reply.client_id, reply.seq)) {
            Some(to) => self.send(SendTo::Socket(to), Body::ClientReply(reply)),
            None => {
                self.dropped("unexpected_reply");
                debug!(
                    client_id = reply.client_id,
                    seq = reply.seq,
                    "reply nobody waits for"
                );
            }
        }
    }

    fn pending_joins(&self) -> Vec<PendingJoin> {
        let now = self.now.unix_ms;
        self.state
            .pending
            .iter()
            .filter(|p| !p.approved)
            .map(|p| PendingJoin {
                name: p.name.clone(),
                addr: p.addr.clone(),
                waiting_ms: now.saturating_sub(p.since_unix_ms),
            })
            .collect()
    }

    fn role_of(&self, member: &Member) -> Role {
        if !member.voter {
            return Role::Learner;
        }
        if self.state.leader == Some(member.id) {
            return Role::Leader;
        }
        match self.detector.reply(member.id) {
            // Its last word was "leader", but someone else leads now: that word is stale
            // (it stopped or was cut off before it learned), so it is no longer leading.
            Some(reply) if reply.role == Role::Leader => Role::Follower,
            Some(reply) if reply.role != Role::Learner => reply.role,
            _ => Role::Follower,
        }
    }

    fn member_status(&self, member: &Member, now: Instant) -> MemberStatus {
        let reply = self.detector.reply(member.id);
        MemberStatus {
            id: member.id,
            name: member.name.clone(),
            addr: member.addr.clone(),
            role: self.role_of(member),
            voter: member.voter,
            health: self.detector.health(member.id).unwrap_or(Health::Down),
            term: reply.map_or(0, |r| r.stats.term),
            commit_index: reply.map_or(0, |r| r.stats.commit_index),
            applied_index: reply.map_or(0, |r| r.stats.applied_index),
            last_contact_ms: self
                .detector
                .last_contact(member.id)
                .map(|at| u64::try_from(now.duration_since(at).as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// The address clients should use: the one given, unless it asked for any port.
    fn entrance_addr(&self) -> String {
        match self.config.listen.parse::<SocketAddr>() {
            Ok(given) if given.port() == 0 => self.local_addr.to_string(),
            _ => self.config.listen.clone(),
        }
    }

    fn cluster_status(&self) -> ClusterStatus {
        let now = self.now.at;
        let mut members: Vec<MemberStatus> = self
            .state
            .members
            .values()
            .map(|m| self.member_status(m, now))
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let commit_index = self
            .state
            .leader
            .and_then(|id| self.detector.reply(id))
            .map(|r| r.stats.commit_index)
            .or_else(|| {
                self.detector
                    .replies()
                    .map(|(_, _, r)| r.stats.commit_index)
                    .max()
            })
            .unwrap_or(0);
        ClusterStatus {
            cluster_id: self.state.cluster_id,
            leader: self.state.leader.map(|id| self.peer_ref(id)),
            term: self.state.term,
            commit_index,
            entrance: Some(self.entrance_addr()),
            members,
            pending: self.pending_joins(),
        }
    }

    fn node_detail(&self, name: &str) -> Result<NodeDetail, ClientError> {
        let Some(member) = self.member_by_name(name) else {
            return Err(ClientError::NotFound {
                what: format!("node {name}"),
            });
        };
        let reply = self.detector.reply(member.id);
        Ok(NodeDetail {
            id: member.id,
            name: member.name.clone(),
            addr: member.addr.clone(),
            role: self.role_of(member),
            voter: member.voter,
            health: self.detector.health(member.id).unwrap_or(Health::Down),
            voted_for: reply.and_then(|r| r.voted_for).map(|id| self.peer_ref(id)),
            stats: reply.map(|r| r.stats.clone()).unwrap_or_default(),
        })
    }
}
