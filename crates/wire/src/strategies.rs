//! Proptest strategies for every message, so tests here and in other crates can generate
//! wire traffic. Sizes stay small enough that any generated envelope fits in one datagram.
//!
//! Enabled in this crate's tests, and elsewhere with the `proptest` feature. The
//! strategies are boxed: unboxed, the value trees of nested message types are large enough to
//! overflow a test thread's stack.

use crate::admission::{JoinDecision, JoinRequest, JoinResponse};
use crate::api::{
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, ClusterStatus,
    CompactResult, Consistency, DeleteResult, GetResult, HistoryResult, KeyVersion, LeaderHint,
    MemberStatus, NodeDetail, PendingJoin, PutResult, StopTarget,
};
use crate::envelope::{Body, Envelope};
use crate::health::{Health, NodeStats, PeerRef, Probe, ProbeReply, Role, StoreStats, Transfer};
use crate::raft::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, InstallSnapshot,
    InstallSnapshotResponse, Member, Membership, RaftBody, RaftMessage, RequestVote,
    RequestVoteResponse, Snapshot, SnapshotMeta, TimeoutNow,
};
use crate::snapshot::{ResumePoint, SnapshotChunk, SnapshotChunkAck};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// A proptest configuration with `cases` cases. `MYRAFT_SEED=N` fixes the random seed, so a
/// run can be repeated exactly; proptest prints the failing input, shrunk, either way.
pub fn config(cases: u32) -> Config {
    let rng_seed = match std::env::var("MYRAFT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => RngSeed::Fixed(seed),
        None => RngSeed::Random,
    };
    Config {
        cases,
        rng_seed,
        ..Config::default()
    }
}

/// Any u64, with the edges (0, 1, max) more likely than uniform sampling makes them.
pub fn num() -> BoxedStrategy<u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        0u64..1_000,
        any::<u64>()
    ]
    .boxed()
}

/// Names: mostly of the usual shape (`n1`, `db-3`), sometimes any short string.
pub fn name() -> BoxedStrategy<String> {
    prop_oneof!["[a-z][a-z0-9-]{0,8}", ".{0,12}"].boxed()
}

/// Strings shaped like `ip:port`, not always valid ones (octets and ports may overflow).
pub fn addr() -> BoxedStrategy<String> {
    "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}:[0-9]{1,5}".boxed()
}

/// Any bytes, at most `max` of them.
pub fn bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..=max).boxed()
}

/// A member with any id, name, address and voter flag.
pub fn member() -> BoxedStrategy<Member> {
    (num(), name(), addr(), any::<bool>())
        .prop_map(|(id, name, addr, voter)| Member {
            id,
            name,
            addr,
            voter,
        })
        .boxed()
}

/// Up to four members, each under its own id.
pub fn membership() -> BoxedStrategy<Membership> {
    btree_map(num(), member(), 0..5)
        .prop_map(|members| Membership {
            // Keep the invariant that a member's key is its id.
            members: members.into_values().map(|m| (m.id, m)).collect(),
        })
        .boxed()
}

/// An entry with any term and index, carrying a no-op, a command of up to 64 bytes or a
/// configuration.
pub fn entry() -> BoxedStrategy<Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::Noop),
        bytes(64).prop_map(EntryPayload::Command),
        membership().prop_map(EntryPayload::Config),
    ];
    (num(), num(), payload)
        .prop_map(|(term, index, payload)| Entry {
            term,
            index,
            payload,
        })
        .boxed()
}

/// Every [`RaftBody`] variant: up to three entries per `AppendEntries`, up to 256 bytes of
/// snapshot data.
pub fn raft_body() -> BoxedStrategy<RaftBody> {
    prop_oneof![
        (num(), num(), any::<bool>(), any::<bool>()).prop_map(|(i, t, pre_vote, transfer)| {
            RaftBody::RequestVote(RequestVote {
                last_log_index: i,
                last_log_term: t,
                pre_vote,
                transfer,
            })
        }),
        (any::<bool>(), any::<bool>()).prop_map(|(granted, pre_vote)| {
            RaftBody::RequestVoteResponse(RequestVoteResponse { granted, pre_vote })
        }),
        (num(), num(), vec(entry(), 0..4), num(), num()).prop_map(|(i, t, entries, c, r)| {
            RaftBody::AppendEntries(AppendEntries {
                prev_log_index: i,
                prev_log_term: t,
                entries,
                leader_commit: c,
                read_round: r,
            })
        }),
        (any::<bool>(), num(), num(), num(), option::of(num()), num()).prop_map(
            |(success, m, p, ci, ct, r)| {
                RaftBody::AppendEntriesResponse(AppendEntriesResponse {
                    success,
                    match_index: m,
                    prev_log_index: p,
                    conflict_index: ci,
                    conflict_term: ct,
                    read_round: r,
                })
            }
        ),
        (num(), num(), membership(), bytes(256)).prop_map(|(i, t, membership, data)| {
            RaftBody::InstallSnapshot(InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        last_index: i,
                        last_term: t,
                        membership,
                    },
                    data,
                },
            })
        }),
        num().prop_map(|last_index| {
            RaftBody::InstallSnapshotResponse(InstallSnapshotResponse { last_index })
        }),
        Just(RaftBody::TimeoutNow(TimeoutNow {})),
    ]
    .boxed()
}

/// A [`RaftMessage`] with any sender, receiver, term and body.
pub fn raft_message() -> BoxedStrategy<RaftMessage> {
    (num(), num(), num(), raft_body())
        .prop_map(|(from, to, term, body)| RaftMessage {
            from,
            to,
            term,
            body,
        })
        .boxed()
}

/// A join request, with or without a node id.
pub fn join_request() -> BoxedStrategy<JoinRequest> {
    (name(), addr(), option::of(num()))
        .prop_map(|(name, addr, node_id)| JoinRequest {
            name,
            addr,
            node_id,
        })
        .boxed()
}

/// A join response with each [`JoinDecision`] variant.
pub fn join_response() -> BoxedStrategy<JoinResponse> {
    let decision = prop_oneof![
        (num(), membership()).prop_map(|(node_id, membership)| JoinDecision::Accepted {
            node_id,
            membership
        }),
        num().prop_map(|waiting_ms| JoinDecision::Pending { waiting_ms }),
        name().prop_map(|reason| JoinDecision::Rejected { reason }),
    ];
    (num(), decision)
        .prop_map(|(cluster_id, decision)| JoinResponse {
            cluster_id,
            decision,
        })
        .boxed()
}

/// Every [`Role`], each equally likely.
pub fn role() -> BoxedStrategy<Role> {
    prop_oneof![
        Just(Role::Leader),
        Just(Role::Follower),
        Just(Role::Candidate),
        Just(Role::Learner)
    ]
    .boxed()
}

/// Every [`Health`], each equally likely.
pub fn health() -> BoxedStrategy<Health> {
    prop_oneof![Just(Health::Up), Just(Health::Suspect), Just(Health::Down)].boxed()
}

/// A [`PeerRef`] with any id and name.
pub fn peer_ref() -> BoxedStrategy<PeerRef> {
    (num(), name())
        .prop_map(|(id, name)| PeerRef { id, name })
        .boxed()
}

/// A probe with any nonce.
pub fn probe() -> BoxedStrategy<Probe> {
    num().prop_map(|nonce| Probe { nonce }).boxed()
}

/// Store statistics with any numbers and up to two transfers.
pub fn store_stats() -> BoxedStrategy<StoreStats> {
    let transfer = (name(), any::<bool>(), num(), num(), num(), num(), num()).prop_map(
        |(peer, sending, snapshot_index, bytes_done, bytes_total, elapsed_ms, resumed_after)| {
            Transfer {
                peer,
                sending,
                snapshot_index,
                bytes_done,
                bytes_total,
                elapsed_ms,
                resumed_after_revision: resumed_after,
            }
        },
    );
    (
        num(),
        num(),
        num(),
        num(),
        num(),
        prop::collection::vec(transfer, 0..3),
    )
        .prop_map(
            |(store_bytes, revision, compacted_revision, keys, apply_lag, transfers)| StoreStats {
                store_bytes,
                revision,
                compacted_revision,
                keys,
                apply_lag,
                transfers,
            },
        )
        .boxed()
}

/// A node's stats with any figures and a leader or none.
pub fn node_stats() -> BoxedStrategy<NodeStats> {
    (
        (num(), option::of(peer_ref()), num(), num(), num(), num()),
        (num(), num(), num(), num(), store_stats()),
    )
        .prop_map(
            |(
                (term, leader, commit_index, applied_index, last_log_index, snapshot_index),
                (log_bytes, data_dir_bytes, uptime_ms, dropped_datagrams, store),
            )| NodeStats {
                term,
                leader,
                commit_index,
                applied_index,
                last_log_index,
                snapshot_index,
                log_bytes,
                data_dir_bytes,
                uptime_ms,
                dropped_datagrams,
                store,
            },
        )
        .boxed()
}

/// A probe reply with any figures, a membership and up to four `since_heard_ms` entries.
pub fn probe_reply() -> BoxedStrategy<ProbeReply> {
    (
        (num(), num(), name(), role(), option::of(num())),
        (node_stats(), membership(), btree_map(num(), num(), 0..5)),
    )
        .prop_map(
            |((nonce, id, name, role, voted_for), (stats, membership, since_heard_ms))| {
                ProbeReply {
                    nonce,
                    id,
                    name,
                    role,
                    voted_for,
                    stats,
                    membership,
                    since_heard_ms,
                }
            },
        )
        .boxed()
}

/// Either [`Consistency`].
pub fn consistency() -> BoxedStrategy<Consistency> {
    prop_oneof![Just(Consistency::Linearizable), Just(Consistency::Stale)].boxed()
}

/// Every [`ClientOp`] variant, with keys up to 32 bytes and values up to 256. Not always
/// valid ones: keys may be empty.
pub fn client_op() -> BoxedStrategy<ClientOp> {
    prop_oneof![
        (bytes(32), bytes(256)).prop_map(|(key, value)| ClientOp::Put { key, value }),
        (bytes(32), option::of(num()), consistency()).prop_map(|(key, rev, consistency)| {
            ClientOp::Get {
                key,
                rev,
                consistency,
            }
        }),
        bytes(32).prop_map(|key| ClientOp::Delete { key }),
        bytes(32).prop_map(|key| ClientOp::History { key }),
        num().prop_map(|rev| ClientOp::Compact { rev }),
        Just(ClientOp::Status),
        name().prop_map(|name| ClientOp::NodeDetail { name }),
        Just(ClientOp::PendingJoins),
        name().prop_map(|name| ClientOp::Approve { name }),
        name().prop_map(|name| ClientOp::Reject { name }),
        prop_oneof![
            name().prop_map(|name| StopTarget::Node { name }),
            (name(), num()).prop_map(|(name, id)| StopTarget::Member { name, id }),
            Just(StopTarget::All)
        ]
        .prop_map(|target| ClientOp::StopNode { target }),
        name().prop_map(|name| ClientOp::RemoveNode { name }),
        name().prop_map(|name| ClientOp::TransferLeader { name }),
        (num(), name(), name()).prop_map(|(id, name, addr)| ClientOp::AddMember { id, name, addr }),
    ]
    .boxed()
}

/// A request with any client id, sequence number and op.
pub fn client_request() -> BoxedStrategy<ClientRequest> {
    (num(), num(), client_op())
        .prop_map(|(client_id, seq, op)| ClientRequest { client_id, seq, op })
        .boxed()
}

/// A pending join with any name, address and wait.
pub fn pending_join() -> BoxedStrategy<PendingJoin> {
    (name(), addr(), num())
        .prop_map(|(name, addr, waiting_ms)| PendingJoin {
            name,
            addr,
            waiting_ms,
        })
        .boxed()
}

/// A member's status with any figures.
pub fn member_status() -> BoxedStrategy<MemberStatus> {
    (
        (num(), name(), addr(), role(), any::<bool>()),
        (health(), num(), num(), num(), option::of(num())),
    )
        .prop_map(
            |(
                (id, name, addr, role, voter),
                (health, term, commit_index, applied_index, last_contact_ms),
            )| MemberStatus {
                id,
                name,
                addr,
                role,
                voter,
                health,
                term,
                commit_index,
                applied_index,
                last_contact_ms,
            },
        )
        .boxed()
}

/// A cluster status with up to four members and two pending joins.
pub fn cluster_status() -> BoxedStrategy<ClusterStatus> {
    (
        (
            num(),
            option::of(peer_ref()),
            num(),
            num(),
            option::of(addr()),
        ),
        vec(member_status(), 0..5),
        vec(pending_join(), 0..3),
    )
        .prop_map(
            |((cluster_id, leader, term, commit_index, entrance), members, pending)| {
                ClusterStatus {
                    cluster_id,
                    leader,
                    term,
                    commit_index,
                    entrance,
                    members,
                    pending,
                }
            },
        )
        .boxed()
}

/// A node's details with any figures.
pub fn node_detail() -> BoxedStrategy<NodeDetail> {
    (
        (num(), name(), addr(), role(), any::<bool>(), health()),
        (option::of(peer_ref()), node_stats()),
    )
        .prop_map(
            |((id, name, addr, role, voter, health), (voted_for, stats))| NodeDetail {
                id,
                name,
                addr,
                role,
                voter,
                health,
                voted_for,
                stats,
            },
        )
        .boxed()
}

/// Every [`ClientResponse`] variant, each equally likely.
pub fn client_response() -> BoxedStrategy<ClientResponse> {
    let key_version =
        (num(), option::of(bytes(64)), any::<bool>()).prop_map(|(revision, value, deleted)| {
            KeyVersion {
                revision,
                value,
                deleted,
            }
        });
    prop_oneof![
        num().prop_map(|revision| ClientResponse::Put(PutResult { revision })),
        (num(), any::<bool>()).prop_map(|(revision, deleted)| {
            ClientResponse::Delete(DeleteResult { revision, deleted })
        }),
        (any::<bool>(), option::of(bytes(256)), num(), num(), num()).prop_map(
            |(found, value, revision, create_revision, version)| {
                ClientResponse::Get(GetResult {
                    found,
                    value,
                    revision,
                    create_revision,
                    version,
                })
            }
        ),
        (vec(key_version, 0..6), num()).prop_map(|(versions, compacted_before)| {
            ClientResponse::History(HistoryResult {
                versions,
                compacted_before,
            })
        }),
        num().prop_map(|compacted_before| {
            ClientResponse::Compact(CompactResult { compacted_before })
        }),
        cluster_status().prop_map(ClientResponse::Status),
        node_detail().prop_map(ClientResponse::NodeDetail),
        vec(pending_join(), 0..4).prop_map(ClientResponse::PendingJoins),
        Just(ClientResponse::Done),
    ]
    .boxed()
}

/// Every [`ClientError`] variant, each equally likely.
pub fn client_error() -> BoxedStrategy<ClientError> {
    let hint = (num(), name(), addr()).prop_map(|(id, name, addr)| LeaderHint { id, name, addr });
    prop_oneof![
        option::of(hint).prop_map(|hint| ClientError::NotLeader { hint }),
        Just(ClientError::Timeout),
        name().prop_map(|what| ClientError::NotFound { what }),
        num().prop_map(|compacted_before| ClientError::Compacted { compacted_before }),
        name().prop_map(|reason| ClientError::Rejected { reason }),
        name().prop_map(|reason| ClientError::BadRequest { reason }),
        name().prop_map(|reason| ClientError::Unavailable { reason }),
        Just(ClientError::SessionExpired),
    ]
    .boxed()
}

/// A reply carrying a response or an error, with any client id and sequence number.
pub fn client_reply() -> BoxedStrategy<ClientReply> {
    let result = prop_oneof![client_response().prop_map(Ok), client_error().prop_map(Err),];
    (num(), num(), result)
        .prop_map(|(client_id, seq, result)| ClientReply {
            client_id,
            seq,
            result,
        })
        .boxed()
}

/// A chunk with any header and up to 1 200 data bytes, so that it still fits a datagram.
pub fn snapshot_chunk() -> BoxedStrategy<SnapshotChunk> {
    (
        num(),
        num(),
        num(),
        num(),
        bytes(1200),
        any::<bool>(),
        num(),
        (num(), any::<bool>()),
    )
        .prop_map(
            |(
                snapshot_index,
                snapshot_term,
                offset,
                leader_term,
                data,
                done,
                total_estimate,
                (after_revision, resume_considered),
            )| {
                SnapshotChunk {
                    snapshot_index,
                    snapshot_term,
                    leader_term,
                    offset,
                    data,
                    done,
                    total_estimate,
                    after_revision,
                    resume_considered,
                }
            },
        )
        .boxed()
}

/// A resume point with any revisions and checksum.
pub fn resume_point() -> BoxedStrategy<ResumePoint> {
    (num(), num(), any::<u32>())
        .prop_map(|(after_revision, compacted_before, row_crc)| ResumePoint {
            after_revision,
            compacted_before,
            row_crc,
        })
        .boxed()
}

/// An acknowledgement with any offset, with or without a resume point.
pub fn snapshot_chunk_ack() -> BoxedStrategy<SnapshotChunkAck> {
    (
        num(),
        num(),
        num(),
        any::<bool>(),
        num(),
        option::of(resume_point()),
    )
        .prop_map(
            |(snapshot_index, snapshot_term, next_offset, done, after_revision, resume)| {
                SnapshotChunkAck {
                    snapshot_index,
                    snapshot_term,
                    next_offset,
                    done,
                    after_revision,
                    resume,
                }
            },
        )
        .boxed()
}

/// Every [`Body`] variant, each equally likely.
pub fn body() -> BoxedStrategy<Body> {
    prop_oneof![
        raft_message().prop_map(Body::Raft),
        join_request().prop_map(Body::JoinRequest),
        join_response().prop_map(Body::JoinResponse),
        probe().prop_map(Body::Probe),
        probe_reply().prop_map(Body::ProbeReply),
        client_request().prop_map(Body::ClientRequest),
        client_reply().prop_map(Body::ClientReply),
        snapshot_chunk().prop_map(Body::SnapshotChunk),
        snapshot_chunk_ack().prop_map(Body::SnapshotChunkAck),
    ]
    .boxed()
}

/// An envelope of the current version with any header and body (tag zeroed, as before
/// encoding).
pub fn envelope() -> BoxedStrategy<Envelope> {
    (num(), num(), num(), body())
        .prop_map(|(cluster_id, from, msg_id, body)| Envelope::new(cluster_id, from, msg_id, body))
        .boxed()
}
