//! The envelope every datagram travels in, and the [`Body`] it carries.

use crate::admission::{ClusterId, JoinRequest, JoinResponse};
use crate::api::{ClientReply, ClientRequest};
use crate::health::{Probe, ProbeReply};
use crate::raft::RaftMessage;
use crate::snapshot::{SnapshotChunk, SnapshotChunkAck};
use serde::{Deserialize, Serialize};

/// Who sent a datagram: a node's [`crate::raft::NodeId`], a client's
/// [`crate::api::ClientId`], or the entrance's own random id. Replay protection keeps one
/// window per sender id.
pub type SenderId = u64;

/// The cluster id of a sender that has not learned one yet: a node asking to join for the
/// first time, or a client before its first reply. Receivers accept it only on bodies such a
/// sender may send ([`Body::allowed_before_join`]); the cluster key still authenticates them.
pub const UNKNOWN_CLUSTER: ClusterId = 0;

/// Length of the authentication tag (HMAC-SHA256).
pub const TAG_LEN: usize = 32;

/// One datagram. On the wire it is the MessagePack array
/// `[version, cluster_id, from, msg_id, body, tag]`, so any MessagePack tool can read it;
/// `tag` is a `bin 8` of 32 bytes, always last, and authenticates every byte before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`crate::codec::PROTOCOL_VERSION`] of the sender. Always the first field, in every
    /// version, so a receiver can tell "newer protocol" from "garbage".
    pub version: u16,
    /// The sender's cluster, or [`UNKNOWN_CLUSTER`] before it learned one.
    /// [`crate::codec::decode`] checks it against the receiver's before the tag.
    pub cluster_id: ClusterId,
    /// The sender's id: what replay protection keys its window by. Nodes send their
    /// [`crate::raft::NodeId`], so a receiver may check it against what the body claims.
    pub from: SenderId,
    /// Increases with every datagram a sender sends (see [`crate::replay`]).
    pub msg_id: u64,
    /// The message itself.
    pub body: Body,
    /// Filled in by [`crate::codec::encode`]; what [`crate::codec::decode`] verified.
    #[serde(with = "serde_bytes")]
    pub tag: [u8; TAG_LEN],
}

impl Envelope {
    /// An envelope of the current protocol version, ready for [`crate::codec::encode`].
    pub fn new(cluster_id: ClusterId, from: SenderId, msg_id: u64, body: Body) -> Self {
        Self {
            version: crate::codec::PROTOCOL_VERSION,
            cluster_id,
            from,
            msg_id,
            body,
            tag: [0; TAG_LEN],
        }
    }
}

/// Everything a datagram can carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Between members: elections and replication.
    Raft(RaftMessage),
    /// From a node to the entrance, until it has a final verdict.
    JoinRequest(JoinRequest),
    /// From the entrance to a node that asked to join.
    JoinResponse(JoinResponse),
    /// From the entrance to every member, every probe interval.
    Probe(Probe),
    /// From a node to the entrance: the answer to a probe, or unprompted news of a leader
    /// or a new term.
    ProbeReply(ProbeReply),
    /// From a client, or the entrance, to a node or the entrance.
    ClientRequest(ClientRequest),
    /// The answer to a [`ClientRequest`], sent to the address the request came from.
    ClientReply(ClientReply),
    /// From a leader to a follower: a piece of the state store.
    SnapshotChunk(SnapshotChunk),
    /// From the follower back to the leader: how much of the stream arrived.
    SnapshotChunkAck(SnapshotChunkAck),
}

impl Body {
    /// A short name for logs and per-kind counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Raft(_) => "raft",
            Body::JoinRequest(_) => "join_request",
            Body::JoinResponse(_) => "join_response",
            Body::Probe(_) => "probe",
            Body::ProbeReply(_) => "probe_reply",
            Body::ClientRequest(_) => "client_request",
            Body::ClientReply(_) => "client_reply",
            Body::SnapshotChunk(_) => "snapshot_chunk",
            Body::SnapshotChunkAck(_) => "snapshot_chunk_ack",
        }
    }

    /// Whether a sender that has no cluster id yet ([`UNKNOWN_CLUSTER`]) may send this body:
    /// a node asking to join, a client asking its first question. Servers reply with their
    /// cluster id and expect it from then on; everything between members must match.
    pub fn allowed_before_join(&self) -> bool {
        matches!(self, Body::JoinRequest(_) | Body::ClientRequest(_))
    }
}
