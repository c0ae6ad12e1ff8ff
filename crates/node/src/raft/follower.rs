//! The receiving side of replication: AppendEntries (§5.3), InstallSnapshot (§7) and
//! TimeoutNow (§3.10).

use super::{Raft, Role};
use myraft_wire::raft::{
    AppendEntries, AppendEntriesResponse, InstallSnapshot, InstallSnapshotResponse, NodeId,
    RaftBody,
};

impl Raft {
    /// A message from the leader of our term: follow it.
    fn accept_leader(&mut self, from: NodeId) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        } else {
            self.leader = Some(from);
        }
        self.election_elapsed = 0;
    }

    pub(super) fn on_append_entries(&mut self, from: NodeId, ae: AppendEntries) {
        if self.role == Role::Leader {
            // Two leaders in one term cannot happen (§5.2); never act on it.
            return;
        }
        self.accept_leader(from);
        let commit = self.log.commit;
        if ae.prev_log_index < commit {
            // Everything up to our commit index matches any leader's log (§5.4); answer
            // with it so the leader skips ahead.
            self.reply_append(from, true, commit, ae.prev_log_index, ae.read_round);
            return;
        }
        match self.log.term(ae.prev_log_index) {
            Some(t) if t == ae.prev_log_term => {
                // Figure 2: commit up to the last entry this message vouches for, never
                // beyond — our log may hold a stale suffix past it.
                let last_new = ae.prev_log_index + ae.entries.len() as u64;
                if self.log.merge(ae.entries) {
                    self.refresh_membership();
                }
                let new_commit = ae.leader_commit.min(last_new);
                if new_commit > self.log.commit {
                    self.log.commit = new_commit;
                }
                self.reply_append(from, true, last_new, ae.prev_log_index, ae.read_round);
            }
            found => {
                // Fast backtracking (§5.3): tell the leader where our log could match.
                let (conflict_index, conflict_term) = match found {
                    None => (self.log.last_index() + 1, None),
                    Some(t) => (self.log.first_index_of_term_at(ae.prev_log_index), Some(t)),
                };
                self.send(
                    from,
                    RaftBody::AppendEntriesResponse(AppendEntriesResponse {
                        success: false,
                        match_index: 0,
                        prev_log_index: ae.prev_log_index,
                        conflict_index: conflict_index.max(commit + 1),
                        conflict_term,
                        read_round: ae.read_round,
                    }),
                );
            }
        }
    }

    fn reply_append(
        &mut self,
        to: NodeId,
        success: bool,
        match_index: u64,
        prev: u64,
        read_round: u64,
    ) {
        self.send(
            to,
            RaftBody::AppendEntriesResponse(AppendEntriesResponse {
                success,
                match_index,
                prev_log_index: prev,
                conflict_index: 0,
                conflict_term: None,
                read_round,
            }),
        );
    }

    pub(super) fn on_install_snapshot(&mut self, from: NodeId, is: InstallSnapshot) {
        if self.role == Role::Leader {
            return;
        }
        self.accept_leader(from);
        let meta = &is.snapshot.meta;
        if meta.last_index > self.log.commit {
            self.log.restore(meta);
            self.snapshot_membership = meta.membership.clone();
            self.refresh_membership();
            self.snapshot = Some(is.snapshot.clone());
            self.pending_snapshot = Some(is.snapshot);
        }
        // Either way our log matches the leader's up to our commit index now.
        let last_index = self.log.commit;
        self.send(
            from,
            RaftBody::InstallSnapshotResponse(InstallSnapshotResponse { last_index }),
        );
    }

    pub(super) fn on_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Leader || self.leader != Some(from) {
            return;
        }
        if self.membership.is_voter(self.cfg.id) {
            self.start_election(true);
        }
    }
}
