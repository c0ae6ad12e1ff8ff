//! Client requests and the one reply type they all get.
//!
//! Every request carries `(client_id, seq)`. The state machine remembers, per client, the
//! last sequence number it applied and that reply, so a write retried after a lost reply is
//! applied exactly once (Raft dissertation §6.3). A client numbers its requests 1, 2, 3…
//! and reuses the number only when it retries the same request. Requests that change
//! nothing use the pair only to match the reply.

use crate::admission::ClusterId;
use crate::health::{Health, PeerRef, Role, StoreStats};
use crate::raft::{Index, NodeId, Term};
use serde::{Deserialize, Serialize};

/// Random, chosen by the client when it starts.
pub type ClientId = u64;
/// The cluster-wide MVCC revision; every committed write increments it.
pub type Revision = u64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub client_id: ClientId,
    pub seq: u64,
    pub op: ClientOp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Consistency {
    /// Confirmed with a quorum (ReadIndex, dissertation §6.4): sees every committed write.
    #[default]
    Linearizable,
    /// Served from whatever the receiving node has applied: faster, maybe behind.
    Stale,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopTarget {
    Node {
        name: String,
    },
    All,
    /// Exactly the member with this id: a node of the same name that joined since (a
    /// removed member started again with an empty data dir) is not it and keeps running.
    Member {
        name: String,
        id: NodeId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientOp {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Get {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Read the key as it was at this revision; `None` reads the latest.
        rev: Option<Revision>,
        consistency: Consistency,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    History {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Drop every version older than `rev`, except each key's latest.
    Compact {
        rev: Revision,
    },
    Status,
    NodeDetail {
        name: String,
    },
    PendingJoins,
    Approve {
        name: String,
    },
    Reject {
        name: String,
    },
    /// Ends node processes; they stay members.
    StopNode {
        target: StopTarget,
    },
    /// Takes a node out of the configuration; it exits afterwards.
    RemoveNode {
        name: String,
    },
    TransferLeader {
        name: String,
    },
    /// Sent by the entrance to the leader once an operator approved a join: add the node
    /// as a learner. The leader promotes it to voter itself once it has caught up.
    AddMember {
        id: NodeId,
        name: String,
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReply {
    pub client_id: ClientId,
    pub seq: u64,
    pub result: Result<ClientResponse, ClientError>,
}

/// What a successful request returns; one variant per kind of request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    Put(PutResult),
    Delete(DeleteResult),
    Get(GetResult),
    History(HistoryResult),
    Compact(CompactResult),
    Status(ClusterStatus),
    NodeDetail(NodeDetail),
    PendingJoins(Vec<PendingJoin>),
    /// Approve, reject, stop, remove and transfer: done, nothing more to say.
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    pub revision: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    /// The revision of the tombstone, or the current revision if nothing was deleted.
    pub revision: Revision,
    /// `false` when the key did not exist: not an error.
    pub deleted: bool,
}

/// A missing key is not an error: `found` is `false` and the numbers are zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResult {
    pub found: bool,
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// The revision that wrote this value (etcd's `mod_revision`).
    pub revision: Revision,
    /// The revision that created the key since its last deletion.
    pub create_revision: Revision,
    /// How many times the key was written since its creation, starting at 1.
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    pub revision: Revision,
    /// `None` for a deletion.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    pub deleted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResult {
    /// Oldest first.
    pub versions: Vec<KeyVersion>,
    /// Versions below this revision were compacted away; 0 if none were.
    pub compacted_before: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactResult {
    pub compacted_before: Revision,
}

/// One member as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
    pub role: Role,
    pub voter: bool,
    pub health: Health,
    pub term: Term,
    pub commit_index: Index,
    pub applied_index: Index,
    /// `None` if the member never answered.
    pub last_contact_ms: Option<u64>,
}

/// A node waiting for an operator to approve or reject it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingJoin {
    pub name: String,
    pub addr: String,
    pub waiting_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster_id: ClusterId,
    pub leader: Option<PeerRef>,
    pub term: Term,
    pub commit_index: Index,
    /// The entrance's address as it knows it, if an entrance answered.
    pub entrance: Option<String>,
    pub members: Vec<MemberStatus>,
    pub pending: Vec<PendingJoin>,
}

/// Everything `node NAME` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDetail {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
    pub role: Role,
    pub voter: bool,
    pub health: Health,
    pub term: Term,
    pub voted_for: Option<PeerRef>,
    pub leader: Option<PeerRef>,
    pub commit_index: Index,
    pub applied_index: Index,
    pub last_log_index: Index,
    pub snapshot_index: Index,
    pub log_bytes: u64,
    pub data_dir_bytes: u64,
    pub uptime_ms: u64,
    pub dropped_datagrams: u64,
    #[serde(default)]
    pub store: StoreStats,
}

/// Where a follower believes the leader is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
}

/// Why a request failed. Each variant maps to one `"error"` code of the `--json` output
/// ([`ClientError::code`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClientError {
    #[error("this node is not the leader{}", match hint {
        Some(h) => format!("; try {} at {}", h.name, h.addr),
        None => "; no leader is known yet, retry shortly".to_owned(),
    })]
    NotLeader { hint: Option<LeaderHint> },
    #[error("the cluster did not answer in time; the request may or may not have been applied")]
    Timeout,
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("revisions below {compacted_before} were compacted away; ask for a newer revision")]
    Compacted { compacted_before: Revision },
    #[error("rejected: {reason}")]
    Rejected { reason: String },
    #[error("bad request: {reason}")]
    BadRequest { reason: String },
    #[error("unavailable: {reason}")]
    Unavailable { reason: String },
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
