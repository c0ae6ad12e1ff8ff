//! What a leader does: replication with pipelining (§5.3), commit by counting entries of its
//! own term (§5.4.2), heartbeats and CheckQuorum (dissertation §6.2), ReadIndex (§6.4),
//! leadership transfer (§3.10) and single-server membership changes (§4.1–4.2).

use super::{PendingRead, Progress, ProgressState, Proposal, Raft, RaftError, ReadState, Role};
use myraft_wire::raft::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, Index, InstallSnapshot,
    InstallSnapshotResponse, Membership, NodeId, RaftBody, TimeoutNow,
};
use std::collections::BTreeSet;

impl Raft {
    pub(super) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.lead_transferee = None;
        self.progress.clear();
        self.sync_progress();
        // §5.4.2 and §6.4: an entry of our own term lets us commit what earlier leaders left
        // and tells us the commit index is current.
        let p = self.append_own(EntryPayload::Noop);
        self.term_start = p.index;
    }

    /// Leaves the leader role: reads in flight can no longer be proven current.
    pub(super) fn abandon_leadership(&mut self) {
        self.failed_reads
            .extend(self.pending_reads.drain(..).map(|r| r.ctx));
        self.failed_reads
            .append(&mut self.reads_awaiting_term_commit);
        self.progress.clear();
        self.lead_transferee = None;
    }

    /// Keeps one progress entry per member other than ourselves.
    pub(super) fn sync_progress(&mut self) {
        let members: BTreeSet<NodeId> = self
            .membership
            .members
            .keys()
            .copied()
            .filter(|&id| id != self.cfg.id)
            .collect();
        self.progress.retain(|id, _| members.contains(id));
        let next = self.log.last_index() + 1;
        for id in members {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next));
        }
        if self
            .lead_transferee
            .is_some_and(|t| !self.membership.is_voter(t))
        {
            self.lead_transferee = None;
        }
    }

    pub(super) fn check_can_propose(&self) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(RaftError::TransferInProgress);
        }
        Ok(())
    }

    pub(super) fn append_own(&mut self, payload: EntryPayload) -> Proposal {
        let index = self.log.last_index() + 1;
        let term = self.term;
        let is_config = matches!(payload, EntryPayload::Config(_));
        self.log.append(vec![Entry {
            term,
            index,
            payload,
        }]);
        if is_config {
            self.refresh_membership();
        }
        // A lone voter commits once its own disk has the entry (see `advance`).
        self.deferred.entries = true;
        Proposal { index, term }
    }

    pub(super) fn tick_leader(&mut self) {
        for p in self.progress.values_mut() {
            p.ticks_since_heard = p.ticks_since_heard.saturating_add(1);
        }
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_active() {
                // Dissertation §6.2: a leader cut off from a quorum stops acting as one.
                self.become_follower(self.term, None);
                return;
            }
            if self.lead_transferee.is_some() {
                // The transfer did not finish within an election timeout: give it up (§3.10).
                self.lead_transferee = None;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.heartbeat();
        }
    }

    fn quorum_active(&mut self) -> bool {
        let me = self.cfg.id;
        let mut active = 0;
        for id in self.membership.voters() {
            if id == me {
                active += 1;
            } else if let Some(p) = self.progress.get_mut(&id) {
                if p.recent_active {
                    active += 1;
                }
            }
        }
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        active >= self.quorum()
    }

    fn heartbeat(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in peers {
            let Some(p) = self.progress.get_mut(&id) else {
                continue;
            };
            match p.state {
                ProgressState::Probe => {
                    // Retry the probe: the last one or its answer may be lost.
                    p.probe_sent = false;
                    self.send_append(id, true);
                }
                ProgressState::Replicate => {
                    if !p.acked_since_heartbeat && !p.inflight.is_empty() {
                        // Streaming went quiet: messages were lost. Probe from the match.
                        p.become_probe();
                        self.send_append(id, true);
                    } else {
                        p.acked_since_heartbeat = false;
                        self.send_heartbeat(id);
                    }
                }
                ProgressState::Snapshot => {
                    p.snapshot_elapsed += self.cfg.heartbeat_ticks;
                    if p.snapshot_elapsed >= self.cfg.election_ticks {
                        // The snapshot or its answer was lost: start over.
                        p.become_probe();
                        self.send_append(id, true);
                    }
                }
            }
        }
    }

    /// An empty AppendEntries at the peer's match index: always accepted by a follower of
    /// ours, it keeps the lease, carries the commit index and confirms ReadIndex rounds.
    fn send_heartbeat(&mut self, to: NodeId) {
        let Some(p) = self.progress.get(&to) else {
            return;
        };
        let prev = p.match_index;
        let Some(prev_term) = self.log.term(prev) else {
            // The match point is compacted away; the probe path sends a snapshot.
            if let Some(p) = self.progress.get_mut(&to) {
                p.become_probe();
            }
            self.send_append(to, true);
            return;
        };
        let ae = AppendEntries {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries: Vec::new(),
            leader_commit: self.log.commit,
            read_round: self.read_round,
        };
        self.send(to, RaftBody::AppendEntries(ae));
    }

    /// Sends the peer what it lacks, if its progress state allows another message. With
    /// `allow_empty` an empty AppendEntries goes out even when there is nothing new.
    /// Returns whether a message was sent.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let max_inflight = self.cfg.max_inflight;
        let Some(p) = self.progress.get(&to) else {
            return false;
        };
        if !p.can_send(max_inflight) {
            return false;
        }
        let next = p.next_index;
        let prev = next - 1;
        let Some(prev_term) = self.log.term(prev) else {
            return self.send_snapshot(to);
        };
        let last = self.log.last_index();
        let entries = self.log.slice(next, last, self.cfg.max_msg_bytes);
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let sent_last = prev + entries.len() as u64;
        let ae = AppendEntries {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.log.commit,
            read_round: self.read_round,
        };
        if let Some(p) = self.progress.get_mut(&to) {
            p.on_sent(sent_last);
        }
        self.send(to, RaftBody::AppendEntries(ae));
        true
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let Some(snapshot) = self.snapshot.clone() else {
            // Nothing compacted yet means every index is in the log; unreachable in
            // practice, and probing again later is the safe answer.
            return false;
        };
        if let Some(p) = self.progress.get_mut(&to) {
            p.become_snapshot();
        }
        self.send(to, RaftBody::InstallSnapshot(InstallSnapshot { snapshot }));
        true
    }

    /// Streams as much as the in-flight window allows.
    fn fill_pipeline(&mut self, to: NodeId) {
        while self.send_append(to, false) {}
    }

    pub(super) fn on_append_response(&mut self, from: NodeId, r: AppendEntriesResponse) {
        if self.role != Role::Leader {
            return;
        }
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.recent_active = true;
        p.ticks_since_heard = 0;
        // Any answer in our term proves the peer still follows us, success or not (§6.4).
        if r.read_round > p.read_round {
            p.read_round = r.read_round;
            self.release_reads();
        }
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        if r.success {
            let moved = p.on_success(r.match_index);
            if p.state == ProgressState::Probe {
                p.become_replicate();
            }
            if moved {
                self.maybe_commit();
            }
            self.fill_pipeline(from);
            self.maybe_send_timeout_now(from);
            return;
        }
        // Rejections that predate what we already know are stale (reordered or duplicated).
        match p.state {
            ProgressState::Replicate if r.prev_log_index <= p.match_index => return,
            ProgressState::Probe if r.prev_log_index + 1 != p.next_index => return,
            ProgressState::Snapshot => return,
            _ => {}
        }
        // §5.3 fast backtracking: jump over a whole conflicting term at once.
        let mut next = match r.conflict_term {
            Some(t) => match self.log.last_index_of_term(t) {
                Some(i) => i + 1,
                None => r.conflict_index,
            },
            None => r.conflict_index,
        };
        next = next.min(r.prev_log_index).max(p.match_index + 1);
        p.become_probe();
        p.next_index = next;
        self.send_append(from, true);
    }

    pub(super) fn on_snapshot_response(&mut self, from: NodeId, r: InstallSnapshotResponse) {
        if self.role != Role::Leader {
            return;
        }
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.recent_active = true;
        p.ticks_since_heard = 0;
        let moved = p.on_success(r.last_index);
        p.become_probe();
        if moved {
            self.maybe_commit();
        }
        self.send_append(from, true);
    }

    /// §5.4.2 (Figure 8): an index is committed once a quorum of voters holds it and it
    /// belongs to the current term; earlier entries commit with it.
    pub(super) fn maybe_commit(&mut self) {
        let me = self.cfg.id;
        let mut matches: Vec<Index> = self
            .membership
            .voters()
            .map(|id| {
                if id == me {
                    self.log.persisted
                } else {
                    self.progress.get(&id).map_or(0, |p| p.match_index)
                }
            })
            .collect();
        if matches.is_empty() {
            return;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let n = matches[self.quorum() - 1];
        if n <= self.log.commit || self.log.term(n) != Some(self.term) {
            return;
        }
        self.log.commit = n;
        self.on_commit_advanced();
    }

    fn on_commit_advanced(&mut self) {
        if self.log.commit >= self.term_start && !self.reads_awaiting_term_commit.is_empty() {
            for ctx in std::mem::take(&mut self.reads_awaiting_term_commit) {
                self.start_read(ctx);
            }
        }
        // Followers learn the new commit index without waiting for a heartbeat (at the
        // next Ready, once for every commit since).
        self.deferred.commit = true;
        if self.membership_committed() && !self.membership.contains(self.cfg.id) {
            // §4.2.2: a leader that is not in the committed configuration steps down. It
            // hands over at once (§3.10) to the most up-to-date voter, which would otherwise
            // wait out an election timeout first.
            if let Some(to) = self.successor() {
                self.send(to, RaftBody::TimeoutNow(TimeoutNow {}));
                self.handed_to = Some((self.term, to));
            }
            self.become_follower(self.term, None);
        }
    }

    /// The voter best placed to lead next (§3.10), for a leader that steps down or stops:
    /// heard from within an election timeout, with the longest log. `None` if this server
    /// is not the leader or no other voter qualifies.
    pub fn successor(&self) -> Option<NodeId> {
        if self.role != Role::Leader {
            return None;
        }
        self.membership
            .voters()
            .filter(|&id| id != self.cfg.id)
            .filter_map(|id| self.progress.get(&id).map(|p| (id, p)))
            .filter(|(_, p)| p.ticks_since_heard < self.cfg.election_ticks)
            .max_by_key(|(_, p)| p.match_index)
            .map(|(id, _)| id)
    }

    /// A learner that is ready to vote (dissertation §4.2.1): it answered within the last
    /// election timeout and holds every committed entry. One that never answered (an
    /// unreachable address) stays a learner however short the log is, since promoting it
    /// would add a voter that cannot help commit.
    pub fn promotable_learner(&self) -> Option<NodeId> {
        if self.role != Role::Leader || !self.membership_committed() {
            return None;
        }
        let commit = self.log.commit;
        self.membership
            .members
            .values()
            .filter(|m| !m.voter)
            .find(|m| {
                self.progress.get(&m.id).is_some_and(|p| {
                    p.ticks_since_heard <= self.cfg.election_ticks && p.match_index >= commit
                })
            })
            .map(|m| m.id)
    }

    // ---- ReadIndex (§6.4) ----------------------------------------------------------

    pub(super) fn start_read(&mut self, ctx: u64) {
        let index = self.log.commit;
        if self.quorum() <= 1 && self.membership.is_voter(self.cfg.id) {
            self.reads.push(ReadState { ctx, index });
            return;
        }
        // Reads that arrive before the round's heartbeats leave share the round: its
        // answers confirm leadership after each of them arrived.
        if !self.deferred.read_round {
            self.read_round += 1;
            self.deferred.read_round = true;
        }
        self.pending_reads.push_back(PendingRead {
            ctx,
            index,
            round: self.read_round,
        });
    }

    /// Sends what [`Raft::deferred`] gathered: to each peer its new entries, else the
    /// commit index, else a heartbeat of the open read round (every AppendEntries carries
    /// the round, so one message per peer does for all three).
    pub(super) fn send_deferred(&mut self) {
        let d = std::mem::take(&mut self.deferred);
        if self.role != Role::Leader || !d.any() {
            return;
        }
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in peers {
            let mut sent = (d.entries || d.commit) && self.send_append(id, false);
            if d.commit && !sent {
                if let Some(p) = self.progress.get(&id) {
                    if p.state == ProgressState::Replicate {
                        self.send_heartbeat(id);
                        sent = true;
                    }
                }
            }
            if d.read_round && !sent {
                self.send_heartbeat(id);
            }
        }
    }

    /// Releases every read whose heartbeat round a quorum of voters has answered.
    fn release_reads(&mut self) {
        let me = self.cfg.id;
        let mut rounds: Vec<u64> = self
            .membership
            .voters()
            .map(|id| {
                if id == me {
                    u64::MAX
                } else {
                    self.progress.get(&id).map_or(0, |p| p.read_round)
                }
            })
            .collect();
        if rounds.is_empty() {
            return;
        }
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = rounds[self.quorum() - 1];
        while self
            .pending_reads
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            if let Some(r) = self.pending_reads.pop_front() {
                self.reads.push(ReadState {
                    ctx: r.ctx,
                    index: r.index,
                });
            }
        }
    }

    // ---- leadership transfer (§3.10) -------------------------------------------------

    /// Hands leadership to voter `to` (§3.10): brings its log up to date, then tells it to
    /// campaign at once with TimeoutNow. Proposals are refused until a new leader takes
    /// over or an election timeout passes. A transfer to this server itself is a no-op.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.cfg.id {
            return Ok(());
        }
        if !self.membership.is_voter(to) {
            return Err(RaftError::InvalidConfigChange(format!(
                "node {to} is not a voter and cannot lead"
            )));
        }
        self.lead_transferee = Some(to);
        self.election_elapsed = 0;
        self.maybe_send_timeout_now(to);
        if self.lead_transferee.is_some() {
            self.fill_pipeline(to);
        }
        Ok(())
    }

    fn maybe_send_timeout_now(&mut self, to: NodeId) {
        if self.lead_transferee != Some(to) {
            return;
        }
        if self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index())
        {
            self.send(to, RaftBody::TimeoutNow(TimeoutNow {}));
        }
    }

    // ---- membership (§4.1–4.2) --------------------------------------------------------

    /// Proposes a new configuration that differs from the current one by at most one voter.
    /// Learners (non-voters) may be added or removed freely alongside.
    pub fn propose_membership(&mut self, new: Membership) -> Result<Proposal, RaftError> {
        self.check_can_propose()?;
        if !self.membership_committed() {
            return Err(RaftError::ConfigChangePending);
        }
        // Until an entry of our term commits, an earlier leader's uncommitted configuration
        // may still win; changing on top of it breaks the one-at-a-time argument.
        if self.log.term(self.log.commit) != Some(self.term) {
            return Err(RaftError::ConfigChangePending);
        }
        for (id, m) in &new.members {
            if *id != m.id {
                return Err(RaftError::InvalidConfigChange(format!(
                    "member {} is filed under id {id}",
                    m.id
                )));
            }
        }
        let old: BTreeSet<NodeId> = self.membership.voters().collect();
        let next: BTreeSet<NodeId> = new.voters().collect();
        if next.is_empty() {
            return Err(RaftError::InvalidConfigChange("no voters left".into()));
        }
        if old.symmetric_difference(&next).count() > 1 {
            return Err(RaftError::InvalidConfigChange(
                "change one voter at a time".into(),
            ));
        }
        Ok(self.append_own(EntryPayload::Config(new)))
    }
}
