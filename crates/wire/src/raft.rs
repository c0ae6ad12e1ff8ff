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
    /// The node's id; also its key in [`Membership::members`].
    pub id: NodeId,
    /// Unique in the configuration: operators and the entrance name members by it.
    pub name: String,
    /// Where peers send to: the node's `--advertise`, else the address it listens on.
    pub addr: String,
    /// `false` for a learner: it receives the log but neither votes nor counts for commit.
    pub voter: bool,
}

/// A cluster configuration (dissertation §4.1). A server uses the latest configuration in
/// its log, committed or not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Voters and learners, keyed by id; each key equals its member's `id`.
    pub members: BTreeMap<NodeId, Member>,
}

impl Membership {
    /// The ids of the voters, in ascending order.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.values().filter(|m| m.voter).map(|m| m.id)
    }

    /// Whether `id` votes in this configuration: `false` for a learner or a non-member.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| m.voter)
    }

    /// Whether `id` is a member at all, voter or learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// How many voters there are; a quorum is a majority of them.
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

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that appended it; with `index`, what log matching compares.
    pub term: Term,
    /// Its position in the log.
    pub index: Index,
    /// What it carries.
    pub payload: EntryPayload,
}

/// The state a server must persist before it answers a vote or an append (§5, Figure 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term the server has seen.
    pub term: Term,
    /// The candidate it voted for in `term`, if any; never changes within a term once set.
    pub vote: Option<NodeId>,
    /// The commit index when it was written. Synced only with entries, a term or a vote,
    /// so it may lag the true one; a restart starts from it or the applied index.
    pub commit: Index,
}

/// Describes the state a snapshot stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers: the log may drop everything up to it.
    pub last_index: Index,
    /// The term of the entry at `last_index`, for log matching after it.
    pub last_term: Term,
    /// The configuration in force at `last_index`.
    pub membership: Membership,
}

/// A snapshot as the Raft core sees it: a log position, with the state machine at it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The position and configuration it stands for.
    pub meta: SnapshotMeta,
    /// The state machine, opaque to Raft. Empty in the snapshots nodes take and install:
    /// the state lives in the node's state store and travels as a stream of
    /// [`crate::snapshot::SnapshotChunk`]s. The log of an earlier MyRaft may still hold
    /// one, which the node moves into its store when it starts.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// RequestVote, or its PreVote probe (dissertation §9.6), which changes no state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVote {
    /// The index of the candidate's last entry: voters refuse a log less up to date than
    /// their own (§5.4.1).
    pub last_log_index: Index,
    /// The term of the candidate's last entry, compared first.
    pub last_log_term: Term,
    /// A PreVote: would the voter grant a vote in the message's term (the candidate's
    /// current term plus one)? Neither side changes its term or vote for it.
    pub pre_vote: bool,
    /// Set when the candidate was told to campaign by `TimeoutNow` (§3.10): voters then
    /// ignore their leader lease, which would otherwise make them refuse.
    pub transfer: bool,
}

/// A voter's answer to a [`RequestVote`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVoteResponse {
    /// Whether the voter grants the vote (or, for a PreVote, would grant it).
    pub granted: bool,
    /// The request's `pre_vote`, echoed, so that an answer to a PreVote is never counted
    /// as a vote or the other way round.
    pub pre_vote: bool,
}

/// Log entries from the leader, or none as a heartbeat (§5.3). Answered with an
/// [`AppendEntriesResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries {
    /// The index of the entry just before `entries`: the follower appends them only if its
    /// log holds that entry with `prev_log_term`.
    pub prev_log_index: Index,
    /// The term of the entry at `prev_log_index` in the leader's log.
    pub prev_log_term: Term,
    /// The entries after `prev_log_index`, in order; empty for a heartbeat. Batches stay
    /// under the payload budget, except a single larger entry, which travels alone.
    pub entries: Vec<Entry>,
    /// The leader's commit index. The follower commits up to it, but never past the last
    /// entry this message vouches for.
    pub leader_commit: Index,
    /// Heartbeat round the leader is confirming leadership in; echoed back so the leader can
    /// release ReadIndex reads once a quorum answered (§6.4).
    pub read_round: u64,
}

/// A follower's answer to an [`AppendEntries`]. With PreVote or CheckQuorum on, a server of
/// a later term answers a stale leader with `success` false and zeros, so that the term in
/// the [`RaftMessage`] tells it it was deposed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesResponse {
    /// Whether the follower's log matched at `prev_log_index` and now holds the entries.
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
    /// The `read_round` of the message answered: the leader counts it towards the
    /// ReadIndex reads of that round and earlier.
    pub read_round: u64,
}

/// The leader's snapshot for a follower whose next entry its log no longer holds (§7).
/// Nodes do not send it as is: the leader's node streams its state store instead
/// ([`crate::snapshot`]), and the follower's node hands this to its core once the stream
/// is installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshot {
    /// The log position and configuration to take on.
    pub snapshot: Snapshot,
}

/// A follower's answer to an [`InstallSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    /// The follower's commit index after it, taken or not: its log matches the leader's up
    /// to there, so replication resumes after it.
    pub last_index: Index,
}

/// Tells the target of a leadership transfer to start an election now (§3.10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNow {}

/// What a [`RaftMessage`] says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftBody {
    /// From a candidate (or pre-candidate) to every other voter.
    RequestVote(RequestVote),
    /// From a voter back to the candidate.
    RequestVoteResponse(RequestVoteResponse),
    /// From the leader to each follower and learner: entries or a heartbeat.
    AppendEntries(AppendEntries),
    /// From a follower or learner back to the leader.
    AppendEntriesResponse(AppendEntriesResponse),
    /// From the leader to a follower too far behind for the log.
    InstallSnapshot(InstallSnapshot),
    /// From that follower back to the leader.
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// From the leader to the target of a leadership transfer.
    TimeoutNow(TimeoutNow),
}

/// One Raft message between two servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMessage {
    /// The sending server.
    pub from: NodeId,
    /// The server it is meant for; a core ignores messages addressed to another id.
    pub to: NodeId,
    /// The sender's current term, by which the receiver applies the term rules (§5.1).
    /// A PreVote request, and a PreVote granted, carry the term the pre-candidate would
    /// campaign in instead.
    pub term: Term,
    /// The message itself.
    pub body: RaftBody,
}
