//! Raft messages, log entries, hard state and membership.
//!
//! These types are shared by the pure consensus core (which produces and consumes them) and
//! the codec (which puts them on the wire). They carry no behaviour.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A server's identity inside one cluster: random, chosen by the node at its first start.
pub type NodeId = u64;
/// A Raft term (§5.1).
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1.
pub type Index = u64;

/// One member of the cluster configuration. Raft itself only reads `id` and `voter`; the
/// name and address travel with the configuration so every node can reach its peers
/// without asking the entrance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
    /// `false` for a learner: it receives the log but neither votes nor counts for commit.
    pub voter: bool,
}

/// A cluster configuration (dissertation §4.1). A server uses the latest configuration in
/// its log, committed or not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
}

impl Membership {
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.values().filter(|m| m.voter).map(|m| m.id)
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| m.voter)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader so that it can commit entries of earlier terms (§5.4.2)
    /// and serve ReadIndex reads (§6.4).
    Noop,
    /// An application command, opaque to Raft.
    Command(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A new configuration that differs from the previous one by at most one voter (§4.1).
    Config(Membership),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: EntryPayload,
}

/// The state a server must persist before it answers a vote or an append (§5, Figure 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: Index,
}

/// Describes the state a snapshot stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub last_index: Index,
    pub last_term: Term,
    pub membership: Membership,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// RequestVote, or its PreVote probe (dissertation §9.6), which changes no state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVote {
    pub last_log_index: Index,
    pub last_log_term: Term,
    pub pre_vote: bool,
    /// Set when the candidate was told to campaign by `TimeoutNow` (§3.10): voters then
    /// ignore their leader lease, which would otherwise make them refuse.
    pub transfer: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVoteResponse {
    pub granted: bool,
    pub pre_vote: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries {
    pub prev_log_index: Index,
    pub prev_log_term: Term,
    pub entries: Vec<Entry>,
    pub leader_commit: Index,
    /// Heartbeat round the leader is confirming leadership in; echoed back so the leader can
    /// release ReadIndex reads once a quorum answered (§6.4).
    pub read_round: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesResponse {
    pub success: bool,
    /// On success, the last index known to match the leader's log.
    pub match_index: Index,
    /// The `prev_log_index` of the message answered, so the leader can tell a stale answer
    /// (reordered or duplicated) from a fresh one.
    pub prev_log_index: Index,
    /// On failure, where the leader should retry from (fast backtracking, §5.3).
    pub conflict_index: Index,
    /// On failure, the term of the follower's entry at `conflict_index`, if it had one.
    pub conflict_term: Option<Term>,
    pub read_round: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshot {
    pub snapshot: Snapshot,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    pub last_index: Index,
}

/// Tells the target of a leadership transfer to start an election now (§3.10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNow {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftBody {
    RequestVote(RequestVote),
    RequestVoteResponse(RequestVoteResponse),
    AppendEntries(AppendEntries),
    AppendEntriesResponse(AppendEntriesResponse),
    InstallSnapshot(InstallSnapshot),
    InstallSnapshotResponse(InstallSnapshotResponse),
    TimeoutNow(TimeoutNow),
}

/// One Raft message between two servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMessage {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: RaftBody,
}
