//! Terms, votes and campaigns: Raft §5.1–5.2 and §5.4.1, PreVote and the leader lease of
//! dissertation §9.6 / §4.2.3.

use super::{Raft, Role};
use myraft_wire::raft::{
    AppendEntriesResponse, NodeId, RaftBody, RaftMessage, RequestVote, RequestVoteResponse, Term,
};

impl Raft {
    /// While we hear from a leader, vote requests are ignored so that a server that was
    /// partitioned away cannot depose a healthy leader (dissertation §4.2.3).
    fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.cfg.election_ticks
    }

    /// Applies the term rules of §5.1 to an incoming message. Returns whether the message
    /// should still be handled.
    pub(super) fn step_term(&mut self, m: &RaftMessage) -> bool {
        if m.term > self.term {
            match &m.body {
                RaftBody::RequestVote(rv) => {
                    if !rv.transfer && self.in_lease() {
                        return false;
                    }
                    // A PreVote asks about a term nobody has entered: it changes nothing.
                    if !rv.pre_vote {
                        self.become_follower(m.term, None);
                    }
                }
                // Granted PreVotes carry the term the pre-candidate asked about.
                RaftBody::RequestVoteResponse(r) if r.pre_vote && r.granted => {}
                RaftBody::AppendEntries(_)
                | RaftBody::InstallSnapshot(_)
                | RaftBody::TimeoutNow(_) => self.become_follower(m.term, Some(m.from)),
                _ => self.become_follower(m.term, None),
            }
            true
        } else if m.term < self.term {
            match &m.body {
                // A stale leader would otherwise never learn that it was deposed while it
                // cannot win a vote (PreVote keeps our terms from reaching it).
                RaftBody::AppendEntries(_) | RaftBody::InstallSnapshot(_)
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    self.send(
                        m.from,
                        RaftBody::AppendEntriesResponse(AppendEntriesResponse {
                            success: false,
                            match_index: 0,
                            prev_log_index: 0,
                            conflict_index: 0,
                            conflict_term: None,
                            read_round: 0,
                        }),
                    );
                }
                RaftBody::RequestVote(rv) if rv.pre_vote => {
                    self.send(
                        m.from,
                        RaftBody::RequestVoteResponse(RequestVoteResponse {
                            granted: false,
                            pre_vote: true,
                        }),
                    );
                }
                _ => {}
            }
            false
        } else {
            true
        }
    }

    pub(super) fn on_request_vote(&mut self, from: NodeId, term: Term, rv: RequestVote) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (rv.pre_vote && term > self.term);
        // §5.4.1: never vote for a log less up-to-date than ours.
        let granted = can_vote && self.log.is_up_to_date(rv.last_log_index, rv.last_log_term);
        if granted && !rv.pre_vote {
            // The vote reaches disk before the response leaves (Ready contract).
            self.vote = Some(from);
            self.reset_election_timer();
        }
        let reply_term = if granted && rv.pre_vote {
            term
        } else {
            self.term
        };
        self.send_with_term(
            from,
            reply_term,
            RaftBody::RequestVoteResponse(RequestVoteResponse {
                granted,
                pre_vote: rv.pre_vote,
            }),
        );
    }

    pub(super) fn on_vote_response(&mut self, from: NodeId, term: Term, r: RequestVoteResponse) {
        let expected = match self.role {
            Role::PreCandidate if r.pre_vote => {
                if r.granted {
                    self.term + 1
                } else {
                    self.term
                }
            }
            Role::Candidate if !r.pre_vote => self.term,
            _ => return,
        };
        if term != expected || !self.membership.is_voter(from) {
            return;
        }
        self.votes.insert(from, r.granted);
        let granted = self.votes.values().filter(|g| **g).count();
        let rejected = self.votes.len() - granted;
        if granted >= self.quorum() {
            if self.role == Role::PreCandidate {
                self.become_candidate(false);
            } else {
                self.become_leader();
            }
        } else if rejected >= self.quorum() {
            // Lost: wait for the winner's heartbeat or our next timeout.
            self.become_follower(self.term, None);
        }
    }

    pub(super) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_timeout && self.membership.is_voter(self.cfg.id)
        {
            self.start_election(false);
        }
    }

    /// Starts a campaign: with PreVote first a probe that changes no term, unless a
    /// leadership transfer told us to go straight ahead (§3.10).
    pub(super) fn start_election(&mut self, transfer: bool) {
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        if self.role == Role::Leader {
            self.abandon_leadership();
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.request_votes(true, false);
    }

    fn become_candidate(&mut self, transfer: bool) {
        if self.role == Role::Leader {
            self.abandon_leadership();
        }
        self.term += 1;
        self.vote = Some(self.cfg.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.request_votes(false, transfer);
    }

    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        self.votes.insert(self.cfg.id, true);
        if self.votes.len() >= self.quorum() {
            if pre_vote {
                self.become_candidate(transfer);
            } else {
                self.become_leader();
            }
            return;
        }
        let term = if pre_vote { self.term + 1 } else { self.term };
        let rv = RequestVote {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
            transfer,
        };
        let voters: Vec<NodeId> = self
            .membership
            .voters()
            .filter(|&id| id != self.cfg.id)
            .collect();
        for to in voters {
            self.send_with_term(to, term, RaftBody::RequestVote(rv.clone()));
        }
    }
}
