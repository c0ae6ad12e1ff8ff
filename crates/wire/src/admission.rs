//! Admission: a node asks the entrance to join a cluster and is told the verdict.
//!
//! The entrance decides *who may* join; Raft decides *when* they are members, so an accepted
//! node is told the configuration the entrance knows, and learns the committed one from the
//! leader's log.

use crate::raft::{Membership, NodeId};
use serde::{Deserialize, Serialize};

/// The cluster a datagram belongs to; picked at random by the entrance at its first start.
pub type ClusterId = u64;

/// Sent by a node at start-up, and again until it hears a final verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Human-chosen and unique in the cluster.
    pub name: String,
    /// Where peers reach this node (`--advertise`, else `--listen`).
    pub addr: String,
    /// The id stored in the node's data dir, if it has one. A node restarted on its old data
    /// dir sends it (with its cluster id in the envelope) and rejoins without approval.
    pub node_id: Option<NodeId>,
}

/// The entrance's answer to a [`JoinRequest`]. Also sent unprompted, as soon as the verdict
/// is decided, to the address of the node's last request; the node takes the first that comes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The cluster the node now belongs to; it keeps this in its data dir and drops
    /// datagrams of any other cluster.
    pub cluster_id: ClusterId,
    /// Whether the node may join. Only `Pending` makes it ask again.
    pub decision: JoinDecision,
}

/// The entrance's verdict on a join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinDecision {
    /// Admitted. The leader adds the node as a learner and promotes it once it caught up.
    Accepted {
        /// The id the node must use: the one it asked for, or a fresh one if that was absent
        /// or already taken.
        node_id: NodeId,
        /// The configuration the entrance last saw, so the node can reach its peers at once.
        membership: Membership,
    },
    /// Waiting for an operator's `approve`; the node asks again later and says it waits.
    Pending {
        /// Milliseconds since the node's first request, by the entrance's wall clock; it
        /// survives an entrance restart.
        waiting_ms: u64,
    },
    /// Refused for good (for example an operator's `reject` or a taken name). The node exits
    /// and shows `reason`.
    Rejected {
        /// Why, in words for the operator.
        reason: String,
    },
}
