//! Client requests and the one reply type they all get.
//!
//! Every request carries `(client_id, seq)`. The state machine remembers, per client, the
//! last sequence number it applied and that reply, so a write retried after a lost reply is
//! applied exactly once (Raft dissertation §6.3). A client numbers its requests 1, 2, 3…
//! and reuses the number only when it retries the same request. Requests that change
//! nothing use the pair only to match the reply.

use crate::admission::ClusterId;
use crate::health::{Health, NodeStats, PeerRef, Role};
use crate::raft::{Index, NodeId, Term};
use serde::{Deserialize, Serialize};

/// Random, chosen by the client when it starts.
pub type ClientId = u64;
/// The cluster-wide MVCC revision; every committed write increments it.
pub type Revision = u64;

/// A request to a node or the entrance, from a client or from the entrance itself (its own
/// operations, or a client's request it forwards unchanged). Answered with a [`ClientReply`]
/// of the same `(client_id, seq)`, sent to the address the request came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// The session writes are deduplicated under. 0 is reserved for the cluster's own
    /// writes (automatic compaction); nodes refuse it with `bad_request`.
    pub client_id: ClientId,
    /// For writes, 1, 2, 3… per client id, reused only by a retry of the same write. For
    /// anything else, any number unique among the client's requests in flight: it only
    /// matches the reply.
    pub seq: u64,
    /// What to do.
    pub op: ClientOp,
}

/// How fresh a `Get` must be, and so who may serve it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Consistency {
    /// Confirmed with a quorum (ReadIndex, dissertation §6.4): sees every committed write.
    #[default]
    Linearizable,
    /// Served from whatever the receiving node has applied: faster, maybe behind.
    Stale,
}

/// Which processes a `StopNode` ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopTarget {
    /// The member of this name, whatever its id.
    Node {
        /// The member's name; a node refuses a name not its own with `not_found`.
        name: String,
    },
    /// The whole cluster: the followers first, then the leader, then the entrance itself.
    /// Only the entrance answers it.
    All,
    /// Exactly the member with this id: a node of the same name that joined since (a
    /// removed member started again with an empty data dir) is not it and keeps running.
    Member {
        /// The member's name.
        name: String,
        /// The member's id; a node holding another id answers `not_found` and keeps
        /// running.
        id: NodeId,
    },
}

/// What a [`ClientRequest`] asks for. Data ops (`Put`, `Get`, `Delete`, `History`,
/// `Compact`) and `TransferLeader` are the leader's to answer (the entrance forwards them);
/// the other admin ops are the entrance's, except where a variant says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientOp {
    /// Sets a key: a write, answered with [`ClientResponse::Put`].
    Put {
        /// Not empty, at most [`MAX_KEY_BYTES`].
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// At most [`MAX_VALUE_BYTES`]; may be empty.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Reads a key, answered with [`ClientResponse::Get`]. A revision below the compaction
    /// point fails with `compacted`, one above the current revision with `bad_request`.
    Get {
        /// Not empty, at most [`MAX_KEY_BYTES`].
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Read the key as it was at this revision; `None` reads the latest.
        rev: Option<Revision>,
        /// `Stale` may be served by any node; a follower answers `not_leader` otherwise.
        consistency: Consistency,
    },
    /// Deletes a key (writes a tombstone): a write, answered with
    /// [`ClientResponse::Delete`]. A key that does not exist is not an error.
    Delete {
        /// Not empty, at most [`MAX_KEY_BYTES`].
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Lists the versions of a key kept since the last compaction, answered with
    /// [`ClientResponse::History`]. Read like a linearizable `Get`.
    History {
        /// Not empty, at most [`MAX_KEY_BYTES`].
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Drop every version older than `rev`, except each key's latest.
    Compact {
        /// The new compaction point: reads below it fail with `compacted` from then on. Past
        /// the current revision is `bad_request`; below the current point, `compacted`.
        rev: Revision,
    },
    /// The whole cluster as the entrance sees it, answered with [`ClientResponse::Status`].
    /// Clients also learn the leader and the members' addresses from it.
    Status,
    /// One node in detail, answered with [`ClientResponse::NodeDetail`]. The entrance
    /// answers about any member from its probes; a node only about itself.
    NodeDetail {
        /// The member's name; a node also takes an empty name as its own.
        name: String,
    },
    /// The joins waiting for an operator, answered with [`ClientResponse::PendingJoins`].
    PendingJoins,
    /// Lets a waiting node join. `Done` means approved: the entrance then adds the node as
    /// a configuration change of its own, and tells it once that committed.
    Approve {
        /// The name the node asked to join under; unknown is `not_found`.
        name: String,
    },
    /// Refuses a waiting node for good: it hears the reason and exits. Too late
    /// (`rejected`) once its configuration change is under way.
    Reject {
        /// The name the node asked to join under; unknown is `not_found`.
        name: String,
    },
    /// Ends node processes; they stay members.
    StopNode {
        /// Which ones. The entrance forwards to the node; a node stops only if it is the
        /// target, after it answered `Done`.
        target: StopTarget,
    },
    /// Takes a node out of the configuration; it exits afterwards.
    RemoveNode {
        /// The member's name. The leader answers `Done` once the configuration without it
        /// is committed.
        name: String,
    },
    /// Hands leadership to another voter (§3.10), answered by the leader. `Done` means the
    /// transfer started, not that it finished: writes meet `unavailable` until the new
    /// leader takes over or an election timeout passes.
    TransferLeader {
        /// The voter to lead next; a learner is `rejected`, an unknown name `not_found`.
        name: String,
    },
    /// Sent by the entrance to the leader once an operator approved a join: add the node
    /// as a learner. The leader promotes it to voter itself once it has caught up.
    AddMember {
        /// The id the entrance gives the node in [`JoinDecision::Accepted`].
        ///
        /// [`JoinDecision::Accepted`]: crate::admission::JoinDecision::Accepted
        id: NodeId,
        /// The name from the node's join request; must not be a member's already.
        name: String,
        /// The address from the node's join request; must not be a member's already.
        addr: String,
    },
}

/// Keys beyond this size are refused: an entry must fit a datagram.
pub const MAX_KEY_BYTES: usize = 1024;
/// Values beyond this size are refused: an entry must fit a datagram.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;

impl ClientOp {
    /// Checks what can be checked without the cluster: keys present and within
    /// [`MAX_KEY_BYTES`], values within [`MAX_VALUE_BYTES`]. Nodes refuse what fails this
    /// with `bad_request`; clients may check before sending.
    pub fn validate(&self) -> Result<(), ClientError> {
        match self {
            ClientOp::Put { key, value } => {
                check_key(key)?;
                if value.len() > MAX_VALUE_BYTES {
                    return Err(ClientError::BadRequest {
                        reason: format!(
                            "value of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
                            value.len()
                        ),
                    });
                }
                Ok(())
            }
            ClientOp::Delete { key } | ClientOp::Get { key, .. } | ClientOp::History { key } => {
                check_key(key)
            }
            _ => Ok(()),
        }
    }

    /// Whether the op goes through the log and so is deduplicated by `(client_id, seq)`.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            ClientOp::Put { .. } | ClientOp::Delete { .. } | ClientOp::Compact { .. }
        )
    }
}

fn check_key(key: &[u8]) -> Result<(), ClientError> {
    if key.is_empty() {
        return Err(ClientError::BadRequest {
            reason: "the key is empty; give a non-empty key".into(),
        });
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ClientError::BadRequest {
            reason: format!(
                "key of {} bytes exceeds the {MAX_KEY_BYTES}-byte limit",
                key.len()
            ),
        });
    }
    Ok(())
}

/// The answer to a [`ClientRequest`]. A retried write that was applied already gets the
/// answer of its first application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReply {
    /// The request's, echoed: with `seq`, how the client finds the request it answers.
    pub client_id: ClientId,
    /// The request's, echoed.
    pub seq: u64,
    /// What the request returned, or why it failed.
    pub result: Result<ClientResponse, ClientError>,
}

/// What a successful request returns; one variant per kind of request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// To [`ClientOp::Put`], once applied.
    Put(PutResult),
    /// To [`ClientOp::Delete`], once applied.
    Delete(DeleteResult),
    /// To [`ClientOp::Get`].
    Get(GetResult),
    /// To [`ClientOp::History`].
    History(HistoryResult),
    /// To [`ClientOp::Compact`], once applied.
    Compact(CompactResult),
    /// To [`ClientOp::Status`], from the entrance.
    Status(ClusterStatus),
    /// To [`ClientOp::NodeDetail`].
    NodeDetail(NodeDetail),
    /// To [`ClientOp::PendingJoins`]: every join waiting for an operator.
    PendingJoins(Vec<PendingJoin>),
    /// Approve, reject, stop, remove and transfer: done, nothing more to say.
    Done,
}

/// What a `Put` wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    /// The revision of this write: the key's `revision` in reads until it is written again.
    pub revision: Revision,
}

/// What a `Delete` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    /// The revision of the tombstone, or the current revision if nothing was deleted.
    pub revision: Revision,
    /// `false` when the key did not exist: not an error.
    pub deleted: bool,
}

/// What a `Get` read. A missing key is not an error: `found` is `false`, `revision` is the
/// store's current revision and the other numbers are zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResult {
    /// Whether the key held a value at the revision read.
    pub found: bool,
    /// The value; `None` exactly when `found` is `false`.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// The revision that wrote this value (etcd's `mod_revision`).
    pub revision: Revision,
    /// The revision that created the key since its last deletion.
    pub create_revision: Revision,
    /// How many times the key was written since its creation, starting at 1.
    pub version: u64,
}

/// One version of a key that compaction has kept, as `History` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    /// The revision of the write that made this version.
    pub revision: Revision,
    /// `None` for a deletion.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// This version is a deletion (a tombstone): the key held no value from here until the
    /// next version.
    pub deleted: bool,
}

/// The versions of one key, for `History`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResult {
    /// Oldest first.
    pub versions: Vec<KeyVersion>,
    /// Versions below this revision were compacted away; 0 if none were.
    pub compacted_before: Revision,
}

/// Where the store is compacted after a `Compact`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactResult {
    /// The compaction point now in force: reads below it fail with `compacted`.
    pub compacted_before: Revision,
}

/// One member as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's id in the configuration.
    pub id: NodeId,
    /// Its name in the configuration.
    pub name: String,
    /// Where peers reach it, from the configuration.
    pub addr: String,
    /// The entrance's view: `Leader` only for the member it takes to lead, `Learner` for
    /// every non-voter, otherwise what the member last reported.
    pub role: Role,
    /// Whether it votes and counts towards commit, per the configuration.
    pub voter: bool,
    /// The entrance's failure-detector verdict; `Suspect` for a member it has not heard
    /// from yet, until `--down-after-ms` passes.
    pub health: Health,
    /// Its term as of its last probe reply; 0 if none came yet.
    pub term: Term,
    /// Its commit index as of its last probe reply; 0 if none came yet.
    pub commit_index: Index,
    /// Its applied index as of its last probe reply; 0 if none came yet.
    pub applied_index: Index,
    /// Milliseconds since its last probe reply; `None` if the member never answered.
    pub last_contact_ms: Option<u64>,
}

/// A node waiting for an operator to approve or reject it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingJoin {
    /// The name it asks to join under: what `approve` and `reject` take.
    pub name: String,
    /// Where it says peers will reach it.
    pub addr: String,
    /// Milliseconds since its first join request, by the entrance's wall clock.
    pub waiting_ms: u64,
}

/// The cluster as the entrance sees it: the answer to `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The cluster's id, the one every member's envelopes carry.
    pub cluster_id: ClusterId,
    /// The member the entrance takes to lead: among those not down, the one claiming
    /// leadership in the highest term. `None` while there is none, e.g. during an election.
    pub leader: Option<PeerRef>,
    /// The latest term the entrance heard of: the leader's, or a later one an election is
    /// under way in.
    pub term: Term,
    /// The leader's commit index as of its last probe reply; without a leader, the highest
    /// any member reported.
    pub commit_index: Index,
    /// The entrance's address as it knows it, if an entrance answered.
    pub entrance: Option<String>,
    /// Every member of the configuration, voters and learners, sorted by name.
    pub members: Vec<MemberStatus>,
    /// The joins waiting for an operator.
    pub pending: Vec<PendingJoin>,
}

/// Everything `node NAME` shows. From the entrance, `voted_for` and `stats` are those of the
/// node's last [`ProbeReply`](crate::health::ProbeReply) (`None` and zeros if none came
/// yet); from the node itself, they are current.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDetail {
    /// The node's id.
    pub id: NodeId,
    /// The node's name.
    pub name: String,
    /// Where peers reach it.
    pub addr: String,
    /// As in [`MemberStatus::role`] from the entrance; the node's own role from itself.
    pub role: Role,
    /// Whether the configuration makes it a voter.
    pub voter: bool,
    /// The entrance's verdict; always `Up` when the node answers about itself.
    pub health: Health,
    /// The candidate it voted for in the term of `stats`, if any.
    pub voted_for: Option<PeerRef>,
    /// Its term, leader, log positions, sizes, counters and state store.
    pub stats: NodeStats,
}

/// Where a follower believes the leader is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The leader's id. From a leader that left the configuration: the voter it handed
    /// leadership to.
    pub id: NodeId,
    /// Its name, for messages.
    pub name: String,
    /// Where to send the request instead, as in the configuration; clients that cannot
    /// parse it as a socket address treat the hint as absent.
    pub addr: String,
}

/// Why a request failed. Each variant maps to one `"error"` code of the `--json` output
/// ([`ClientError::code`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClientError {
    /// Sent to a node that does not lead, or to an entrance that knows no leader it hears
    /// from. Send the request again to the hint, or shortly; a write keeps its
    /// `(client_id, seq)`, since a leader that stepped down may have proposed it already.
    #[error("this node is not the leader{}", match hint {
        Some(h) => format!("; try {} at {}", h.name, h.addr),
        None => "; no leader is known yet, retry shortly".to_owned(),
    })]
    NotLeader {
        /// Where the leader is, as the answering server believes; `None` if it knows none.
        hint: Option<LeaderHint>,
    },
    /// A server gave up waiting on another (the entrance on the leader, for a request it
    /// carries out). A write may or may not have been applied; the request client retries.
    #[error("the cluster did not answer in time; the request may or may not have been applied")]
    Timeout,
    /// The member, pending join or other named thing does not exist, or is not the one
    /// asked for (a node asked about another node).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `node n4`, for the message.
        what: String,
    },
    /// A read below the compaction point, or a `Compact` behind it.
    #[error("revisions below {compacted_before} were compacted away; ask for a newer revision")]
    Compacted {
        /// The compaction point: the oldest revision still readable.
        compacted_before: Revision,
    },
    /// Refused for good: the same request will be refused again (an invalid membership
    /// change, a join that is already under way, a name already taken).
    #[error("rejected: {reason}")]
    Rejected {
        /// Why, in words for the operator.
        reason: String,
    },
    /// The request itself is wrong: a key or value out of bounds, a revision in the future,
    /// a reserved client id, or an op the receiving kind of server does not answer.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong, and often what to do instead.
        reason: String,
    },
    /// Not now: the node is busy, another change or a leadership transfer is under way, or
    /// the entrance is shutting down. Retry after a pause.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// What the server is waiting for.
        reason: String,
    },
    /// The server forgot this client's session (dissertation §6.3), so it cannot tell whether
    /// a retried write was applied. The client must start over with a new client id.
    #[error("client session expired; the outcome of the last write is unknown")]
    SessionExpired,
}

impl ClientError {
    /// The stable error code of the `--json` output.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::NotLeader { .. } => "not_leader",
            ClientError::Timeout => "timeout",
            ClientError::NotFound { .. } => "not_found",
            ClientError::Compacted { .. } => "compacted",
            ClientError::Rejected { .. } => "rejected",
            ClientError::BadRequest { .. } => "bad_request",
            ClientError::Unavailable { .. } => "unavailable",
            ClientError::SessionExpired => "session_expired",
        }
    }
}
