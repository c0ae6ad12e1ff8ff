//! Client requests. The entrance answers what it knows better than any node (status, node
//! details from its probes, pending joins, approve/reject) and what needs several nodes
//! (stop, remove); it forwards everything else to the leader and relays the leader's reply
//! to the client's address, keyed by `(client_id, seq)`.

use crate::ops;
use crate::server::{unix_ms, Change, Core, Dest, LocalOp, Relay, RequestKey};
use myraft_wire::client::{
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, ClusterStatus, MemberStatus,
    NodeDetail, PendingJoin, StopTarget,
};
use myraft_wire::health::{Health, Role};
use myraft_wire::raft::Member;
use myraft_wire::Body;
use std::net::SocketAddr;
use std::time::Instant;
use tracing::debug;

impl Core {
    pub(crate) fn on_client_request(&mut self, request: ClientRequest, src: SocketAddr) {
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
        self.reply(src, key.0, key.1, result);
    }

    /// Registers a request a task will answer; `false` if it is a retry of one already
    /// under way (the answer then goes to the retry's address).
    fn begin_local_op(&mut self, key: RequestKey, src: SocketAddr) -> bool {
        if let Some(op) = self.local_ops.get_mut(&key) {
            op.reply_to = src;
            return false;
        }
        self.local_ops.insert(key, LocalOp { reply_to: src });
        true
    }

    fn stop(&mut self, key: RequestKey, target: StopTarget, src: SocketAddr) {
        match target {
            target @ (StopTarget::Node { .. } | StopTarget::Member { .. }) => {
                let (name, id) = match target {
                    StopTarget::Member { name, id } => (name, Some(id)),
                    StopTarget::Node { name } => (name, None),
                    StopTarget::All => return,
                };
                let found = self
                    .member_by_name(&name)
                    .filter(|m| id.is_none_or(|id| m.id == id))
                    .cloned();
                let Some(member) = found else {
                    let what = format!("node {name}");
                    return self.reply(src, key.0, key.1, Err(ClientError::NotFound { what }));
                };
                if self.begin_local_op(key, src) {
                    ops::spawn_stop(self.ctx(), key, member.name, member.addr);
                }
            }
            StopTarget::All => {
                if !self.begin_local_op(key, src) {
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
                ops::spawn_stop_all(self.ctx(), key, followers, leader);
            }
        }
    }

    fn remove(&mut self, key: RequestKey, name: String, src: SocketAddr) {
        if self.member_by_name(&name).is_none() {
            let what = format!("node {name}");
            return self.reply(src, key.0, key.1, Err(ClientError::NotFound { what }));
        }
        if self.begin_local_op(key, src) {
            self.changes.push_back(Change::Remove {
                name,
                origin: Some(key),
            });
            self.start_changes();
        }
    }

    pub(crate) fn on_removed(
        &mut self,
        name: String,
        id: u64,
        result: Result<ClientResponse, ClientError>,
    ) {
        let origin = match self.in_flight.take() {
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
            if let Some(op) = self.local_ops.remove(&key) {
                self.reply(op.reply_to, key.0, key.1, result);
            }
        }
        self.start_changes();
    }

    fn forward(&mut self, request: ClientRequest, src: SocketAddr) {
        let key = (request.client_id, request.seq);
        let leader = self.leader_tx.borrow().clone();
        // A leader that missed its last probes may be dead: say "no leader yet" at once, so
        // the client goes on looking (it asks the members too) instead of waiting on a
        // request forwarded into silence.
        let leader = leader.filter(|l| {
            self.trackers
                .get(&l.id)
                .is_some_and(|t| t.health == Health::Up)
        });
        let Some(leader) = leader else {
            return self.reply(
                src,
                key.0,
                key.1,
                Err(ClientError::NotLeader { hint: None }),
            );
        };
        debug!(leader = %leader.name, "forwarding {:?} to the leader", request.op);
        self.relays.insert(
            key,
            Relay {
                reply_to: src,
                since: Instant::now(),
            },
        );
        self.outbox
            .push((Dest::Addr(leader.addr), Body::ClientRequest(request)));
    }

    pub(crate) fn on_relayed_reply(&mut self, reply: ClientReply) {
        match self.relays.remove(&(reply.client_id, reply.seq)) {
            Some(relay) => self
                .outbox
                .push((Dest::Socket(relay.reply_to), Body::ClientReply(reply))),
            None => {
                self.net.count_drop("unexpected_reply");
                debug!(
                    client_id = reply.client_id,
                    seq = reply.seq,
                    "reply nobody waits for"
                );
            }
        }
    }

    fn pending_joins(&self) -> Vec<PendingJoin> {
        let now = unix_ms();
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
        match self.trackers.get(&member.id).and_then(|t| t.reply.as_ref()) {
            // Its last word was "leader", but someone else leads now: that word is stale
            // (it stopped or was cut off before it learned), so it is no longer leading.
            Some(reply) if reply.role == Role::Leader => Role::Follower,
            Some(reply) if reply.role != Role::Learner => reply.role,
            _ => Role::Follower,
        }
    }

    fn member_status(&self, member: &Member, now: Instant) -> MemberStatus {
        let tracker = self.trackers.get(&member.id);
        let reply = tracker.and_then(|t| t.reply.as_ref());
        MemberStatus {
            id: member.id,
            name: member.name.clone(),
            addr: member.addr.clone(),
            role: self.role_of(member),
            voter: member.voter,
            health: tracker.map_or(myraft_wire::health::Health::Down, |t| t.health),
            term: reply.map_or(0, |r| r.term),
            commit_index: reply.map_or(0, |r| r.commit_index),
            applied_index: reply.map_or(0, |r| r.applied_index),
            last_contact_ms: tracker
                .and_then(|t| t.last_contact)
                .map(|at| now.duration_since(at).as_millis() as u64),
        }
    }

    /// The address clients should use: the one given, unless it asked for any port.
    fn entrance_addr(&self) -> String {
        match self.config.listen.parse::<SocketAddr>() {
            Ok(given) if given.port() == 0 => self.net.local_addr().to_string(),
            _ => self.config.listen.clone(),
        }
    }

    pub(crate) fn cluster_status(&self) -> ClusterStatus {
        let now = Instant::now();
        let mut members: Vec<MemberStatus> = self
            .state
            .members
            .values()
            .map(|m| self.member_status(m, now))
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let replies = || self.trackers.values().filter_map(|t| t.reply.as_ref());
        let commit_index = self
            .state
            .leader
            .and_then(|id| self.trackers.get(&id))
            .and_then(|t| t.reply.as_ref())
            .map(|r| r.commit_index)
            .or_else(|| replies().map(|r| r.commit_index).max())
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
        let tracker = self.trackers.get(&member.id);
        let reply = tracker.and_then(|t| t.reply.as_ref());
        let number = |f: fn(&myraft_wire::health::ProbeReply) -> u64| reply.map_or(0, f);
        Ok(NodeDetail {
            id: member.id,
            name: member.name.clone(),
            addr: member.addr.clone(),
            role: self.role_of(member),
            voter: member.voter,
            health: tracker.map_or(myraft_wire::health::Health::Down, |t| t.health),
            term: number(|r| r.term),
            voted_for: reply.and_then(|r| r.voted_for).map(|id| self.peer_ref(id)),
            leader: reply.and_then(|r| r.leader.clone()),
            commit_index: number(|r| r.commit_index),
            applied_index: number(|r| r.applied_index),
            last_log_index: number(|r| r.last_log_index),
            snapshot_index: number(|r| r.snapshot_index),
            log_bytes: number(|r| r.log_bytes),
            data_dir_bytes: number(|r| r.data_dir_bytes),
            uptime_ms: number(|r| r.uptime_ms),
            dropped_datagrams: number(|r| r.dropped_datagrams),
            store: reply.map(|r| r.store.clone()).unwrap_or_default(),
        })
    }
}
