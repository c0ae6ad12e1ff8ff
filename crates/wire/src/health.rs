//! Health: the entrance probes every node and rebuilds its view of the cluster from the
//! replies, so it can be restarted without losing anything.

use crate::raft::{Index, Membership, NodeId, Term};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A server as humans and machines both need to name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRef {
    /// The server's id.
    pub id: NodeId,
    /// Its name, or its id in hex if the sender does not know the name (not a member of
    /// the configuration it knows).
    pub name: String,
}

/// What a server currently does in Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Leads its term: takes writes and replicates the log.
    Leader,
    /// A voter that follows a leader, or waits for one.
    Follower,
    /// A voter campaigning for leadership, PreVote included.
    Candidate,
    /// Receives the log but neither votes nor counts towards commit.
    Learner,
}

impl Role {
    /// The spelling in the `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
        }
    }
}

/// The entrance's failure-detector verdict on a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Health {
    /// Answered a probe within the last two probe intervals.
    Up,
    /// Missed recent probes but not yet for `--down-after-ms`.
    Suspect,
    /// Silent for `--down-after-ms` or longer (counted from when the entrance began to
    /// watch it, if it never answered). The entrance does not take it for the leader.
    Down,
}

impl Health {
    /// The spelling in the `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Suspect => "suspect",
            Health::Down => "down",
        }
    }
}

/// Asks a node how it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Echoed in the reply so the prober can match it and measure the round trip.
    pub nonce: u64,
}

/// A node's answer to a [`Probe`]. A node also sends one unprompted, with nonce 0, to every
/// entrance when it becomes leader or enters a new term, so the entrance learns at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReply {
    /// The probe's nonce, or 0 for an unprompted reply. The entrance ignores replies to
    /// any but its last few probes.
    pub nonce: u64,
    /// The replying node; the entrance drops a reply whose envelope comes from another id.
    pub id: NodeId,
    /// The node's name.
    pub name: String,
    /// What it does in Raft right now.
    pub role: Role,
    /// The candidate it voted for in the term of `stats`, if any.
    pub voted_for: Option<NodeId>,
    /// Its term, leader, log positions, sizes, counters and state store.
    pub stats: NodeStats,
    /// The latest configuration in the node's log, from which a restarted entrance
    /// rebuilds its member list.
    pub membership: Membership,
    /// On the leader: milliseconds since it last heard each other member, `u64::MAX` for
    /// never; empty on every other node. The entrance reaches members by its own path, so
    /// before it removes one it cannot reach it asks who the leader still hears.
    /// The last field, defaulted: a reply that leaves it out reads as empty.
    #[serde(default)]
    pub since_heard_ms: BTreeMap<NodeId, u64>,
}

/// What a node reports about itself in Raft, its disk and its traffic: the part of a
/// [`ProbeReply`] that [`NodeDetail`](crate::api::NodeDetail) passes on unchanged. The
/// entrance keeps each member's last one; a node fills it in from its current state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The node's current term.
    pub term: Term,
    /// The leader it follows (itself, if it leads); `None` if it knows none in `term`.
    pub leader: Option<PeerRef>,
    /// The highest log index it knows committed; may run ahead of what it applied.
    pub commit_index: Index,
    /// The highest log index its state store has applied.
    pub applied_index: Index,
    /// The index of its last log entry (or of its snapshot, if no entry follows).
    pub last_log_index: Index,
    /// Its log is compacted through this index; 0 if never.
    pub snapshot_index: Index,
    /// Size of the log on disk.
    pub log_bytes: u64,
    /// Size of the whole data dir (log, snapshots, metadata).
    pub data_dir_bytes: u64,
    /// Milliseconds since the node process started.
    pub uptime_ms: u64,
    /// Datagrams the node dropped as bad, foreign or replayed since it started.
    pub dropped_datagrams: u64,
    /// The state store and any snapshot transfers. The last field, defaulted: stats that
    /// leave it out read as zeros.
    #[serde(default)]
    pub store: StoreStats,
}

/// A node's state store, and the snapshots it is sending or receiving.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Size of the store's file.
    pub store_bytes: u64,
    /// The latest revision applied.
    pub revision: u64,
    /// Revisions below this were compacted away; reads there fail with `compacted`.
    pub compacted_revision: u64,
    /// Keys that hold a value.
    pub keys: u64,
    /// Committed entries not yet applied.
    pub apply_lag: u64,
    /// Snapshot streams under way to or from this node.
    pub transfers: Vec<Transfer>,
}

/// A snapshot on its way to or from a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The other side's name.
    pub peer: String,
    /// True on the sender, false on the receiver.
    pub sending: bool,
    /// The log position the snapshot stands for.
    pub snapshot_index: Index,
    /// Bytes acknowledged (sender) or received (receiver).
    pub bytes_done: u64,
    /// The sender's estimate of the whole stream; 0 while it knows nothing yet.
    pub bytes_total: u64,
    /// Milliseconds since the transfer started, counted in ticks of the node's loop.
    pub elapsed_ms: u64,
    /// The stream continues a partial store the receiver kept, from after this revision;
    /// 0 for a stream from the start.
    #[serde(default)]
    pub resumed_after_revision: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn a_probe_reply_without_its_defaulted_trailing_fields_still_decodes() {
        // rmp-serde writes a struct as an array of its fields, and a nested struct as a
        // nested array: these tuples are a ProbeReply and its NodeStats without
        // `since_heard_ms` and `store`, as a sender that does not know them writes it.
        let stats = (
            3u64,
            Some(PeerRef {
                id: 0x11,
                name: "n1".to_owned(),
            }),
            10u64,
            9u64,
            11u64,
            0u64,
            4096u64,
            8192u64,
            1234u64,
            5u64,
        );
        let shorter = (
            7u64,
            0x11u64,
            "n1",
            Role::Leader,
            Some(0x11u64),
            stats,
            Membership::default(),
        );
        let bytes = rmp_serde::to_vec(&shorter).unwrap();
        let reply: ProbeReply = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!((reply.nonce, reply.id, reply.stats.term), (7, 0x11, 3));
        assert_eq!(reply.stats.dropped_datagrams, 5);
        assert_eq!(reply.stats.store, StoreStats::default());
        assert_eq!(reply.membership, Membership::default());
        assert!(reply.since_heard_ms.is_empty());
    }
}
