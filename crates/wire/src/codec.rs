//! Bytes to [`Envelope`] and back, with authentication.
//!
//! A datagram is the MessagePack array `[version, cluster_id, from, msg_id, body, tag]`
//! (see [`Envelope`]). The tag is HMAC-SHA256, keyed by the [`ClusterKey`], over every byte
//! of the datagram before the 32 tag bytes, as they were sent: nothing is re-encoded to be
//! checked, and the body is not parsed until the tag matched, so unauthenticated bytes
//! never reach serde beyond five integers of header.
//!
//! [`decode`] checks, in order: size, header shape, protocol version, cluster id, tag, body.
//! Each failure is its own [`DecodeError`] variant, so a server can count drops by reason.
//! Version and cluster come before the tag on purpose: "a newer node" and "another cluster
//! on this LAN" are worth telling apart from "a wrong key", and neither needs the key.
//!
//! Replays are not caught here; that needs per-sender state, see [`crate::replay`].

use crate::admission::ClusterId;
use crate::envelope::{Body, Envelope, SenderId, TAG_LEN, UNKNOWN_CLUSTER};
use crate::key::ClusterKey;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::io::{self, Cursor};

/// Bumped whenever the datagram layout or any body changes incompatibly. Nodes of different
/// versions drop each other's datagrams with [`DecodeError::WrongVersion`].
pub const PROTOCOL_VERSION: u16 = 3;

/// The hard cap on a datagram, in bytes: the largest UDP payload over IPv4
/// (65 535 − 20 bytes of IP header − 8 of UDP header). [`encode`] refuses to produce more
/// and [`decode`] rejects more. Receive into a buffer of `MAX_DATAGRAM + 1` bytes so that a
/// datagram that is too long shows up as [`DecodeError::Oversized`] instead of being silently
/// cut by the socket.
pub const MAX_DATAGRAM: usize = 65_507;

/// The default size a sender aims to keep each datagram under when it has a choice (log
/// batches, snapshot chunks). A datagram larger than the path MTU is split into IP fragments,
/// and losing any one fragment loses the whole datagram, so on an Ethernet LAN (MTU 1500:
/// 1472 bytes of UDP payload over IPv4, 1452 over IPv6) big datagrams turn light packet loss
/// into heavy message loss. 1400 leaves room for VLAN, tunnel and IPv6 headers. Make it
/// configurable; raise it on loopback or jumbo-frame networks.
pub const DEFAULT_PAYLOAD_BUDGET: usize = 1_400;

/// Fields of the envelope array.
const ENVELOPE_FIELDS: u32 = 6;
/// MessagePack `bin 8` marker and length byte in front of the tag.
const TAG_PREFIX: [u8; 2] = [0xc4, TAG_LEN as u8];

type HmacSha256 = Hmac<Sha256>;

/// Why [`encode`] produced no datagram. Nothing was sent; the caller decides whether to
/// split the message or give up.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded datagram would be longer than [`MAX_DATAGRAM`].
    #[error("datagram of {len} bytes exceeds the {max}-byte limit; split the message")]
    Oversized {
        /// Bytes the whole datagram would take, tag included.
        len: usize,
        /// The limit it passed: [`MAX_DATAGRAM`].
        max: usize,
    },
    /// MessagePack could not write the body; the serializer's message. A bug, not a
    /// condition of the network.
    #[error("cannot serialize message: {0}")]
    Serialize(String),
}

/// Why a datagram was dropped. One variant per cause; [`DecodeError::reason`] names it for
/// counters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A datagram of no bytes at all.
    #[error("empty datagram")]
    Empty,
    /// Longer than [`MAX_DATAGRAM`]; a receiver sees it only if its buffer is larger.
    #[error("datagram of {len} bytes exceeds the {MAX_DATAGRAM}-byte limit")]
    Oversized {
        /// Bytes received.
        len: usize,
    },
    /// Ends inside the header, or leaves no room for a body and the tag.
    #[error("datagram of {len} bytes ends before its header and tag")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Not shaped like an envelope: not an array, a header field that is not an unsigned
    /// integer, or the wrong number of fields for this version.
    #[error("not a MyRaft datagram: {detail}")]
    Malformed {
        /// Which check failed.
        detail: &'static str,
    },
    /// Sent under another protocol version; nothing after the version was read.
    #[error(
        "protocol version {got}, this build speaks {PROTOCOL_VERSION}; upgrade the older side"
    )]
    WrongVersion {
        /// The sender's version.
        got: u64,
    },
    /// Meant for another cluster, or [`UNKNOWN_CLUSTER`] on a body that only a member may
    /// send ([`Body::allowed_before_join`]).
    #[error("datagram of cluster {got:016x}, this is cluster {expected:016x}")]
    WrongCluster {
        /// The cluster id in the envelope.
        got: ClusterId,
        /// The receiver's own.
        expected: ClusterId,
    },
    /// The tag does not authenticate the bytes: corrupted on the way, forged, or sent under
    /// another cluster key. The body was not parsed.
    #[error("authentication tag does not match: corrupted, or sent with another cluster key")]
    BadTag,
    /// The tag matched but the body does not parse, or bytes follow it. The sender holds
    /// the key, so this is a bug or version skew, not an attack.
    #[error("authenticated datagram with an unreadable body: {detail}")]
    BadBody {
        /// The deserializer's message, or which check failed.
        detail: String,
    },
}

impl DecodeError {
    /// A stable, short name per variant, for drop counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::WrongVersion { .. } => "wrong_version",
            DecodeError::WrongCluster { .. } => "wrong_cluster",
            DecodeError::BadTag => "bad_tag",
            DecodeError::BadBody { .. } => "bad_body",
        }
    }
}

/// Encodes and authenticates `envelope`. Its `tag` field is ignored and computed afresh; its
/// `version` is used as given (normally [`PROTOCOL_VERSION`], via [`Envelope::new`]).
pub fn encode(envelope: &Envelope, key: &ClusterKey) -> Result<Vec<u8>, EncodeError> {
    encode_parts(
        envelope.version,
        envelope.cluster_id,
        envelope.from,
        envelope.msg_id,
        &envelope.body,
        key,
    )
}

/// Like [`encode`] with the current protocol version, for senders that do not want to move
/// the body into an [`Envelope`] first.
pub fn encode_body(
    cluster_id: ClusterId,
    from: SenderId,
    msg_id: u64,
    body: &Body,
    key: &ClusterKey,
) -> Result<Vec<u8>, EncodeError> {
    encode_parts(PROTOCOL_VERSION, cluster_id, from, msg_id, body, key)
}

fn encode_parts(
    version: u16,
    cluster_id: ClusterId,
    from: SenderId,
    msg_id: u64,
    body: &Body,
    key: &ClusterKey,
) -> Result<Vec<u8>, EncodeError> {
    let write_err =
        |e: rmp::encode::ValueWriteError<io::Error>| EncodeError::Serialize(e.to_string());
    let mut buf = Vec::with_capacity(128);
    rmp::encode::write_array_len(&mut buf, ENVELOPE_FIELDS).map_err(write_err)?;
    for field in [u64::from(version), cluster_id, from, msg_id] {
        rmp::encode::write_uint(&mut buf, field).map_err(write_err)?;
    }
    rmp_serde::encode::write(&mut buf, body).map_err(|e| EncodeError::Serialize(e.to_string()))?;
    buf.extend_from_slice(&TAG_PREFIX);
    let len = buf.len() + TAG_LEN;
    if len > MAX_DATAGRAM {
        return Err(EncodeError::Oversized {
            len,
            max: MAX_DATAGRAM,
        });
    }
    let tag = keyed_mac(key).chain_update(&buf).finalize().into_bytes();
    buf.extend_from_slice(&tag);
    Ok(buf)
}

/// Decodes and authenticates one datagram.
///
/// `expected_cluster` is the receiver's cluster id, or `None` for a receiver that has none
/// yet (a node waiting for its `JoinResponse`), which accepts any. A datagram from a sender
/// with no cluster id yet ([`UNKNOWN_CLUSTER`]) is accepted only for bodies such a sender may
/// send ([`Body::allowed_before_join`]).
pub fn decode(
    bytes: &[u8],
    key: &ClusterKey,
    expected_cluster: Option<ClusterId>,
) -> Result<Envelope, DecodeError> {
    let len = bytes.len();
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    if len > MAX_DATAGRAM {
        return Err(DecodeError::Oversized { len });
    }

    let mut rd = bytes;
    let fields = rmp::decode::read_array_len(&mut rd).map_err(|e| match e {
        rmp::decode::ValueReadError::TypeMismatch(_) => DecodeError::Malformed {
            detail: "does not start with an array",
        },
        _ => DecodeError::Truncated { len },
    })?;
    let version = read_header_int(&mut rd, len, "version is not an unsigned integer")?;
    if version != u64::from(PROTOCOL_VERSION) {
        return Err(DecodeError::WrongVersion { got: version });
    }
    if fields != ENVELOPE_FIELDS {
        return Err(DecodeError::Malformed {
            detail: "envelope has the wrong number of fields",
        });
    }
    let cluster_id = read_header_int(&mut rd, len, "cluster id is not an unsigned integer")?;
    let from = read_header_int(&mut rd, len, "sender is not an unsigned integer")?;
    let msg_id = read_header_int(&mut rd, len, "message id is not an unsigned integer")?;
    let body_start = len - rd.len();

    let must_allow_unknown = match expected_cluster {
        Some(expected) if cluster_id != expected => {
            if cluster_id != UNKNOWN_CLUSTER {
                return Err(DecodeError::WrongCluster {
                    got: cluster_id,
                    expected,
                });
            }
            Some(expected)
        }
        _ => None,
    };

    // At least one byte of body, the tag's bin marker, and the tag.
    if rd.len() < 1 + TAG_PREFIX.len() + TAG_LEN {
        return Err(DecodeError::Truncated { len });
    }
    let (signed, tag) = bytes.split_at(len - TAG_LEN);
    keyed_mac(key)
        .chain_update(signed)
        .verify_slice(tag)
        .map_err(|_| DecodeError::BadTag)?;

    // From here on the bytes come from a key holder; failures are bugs or version skew.
    let body_bytes = signed
        .get(body_start..signed.len() - TAG_PREFIX.len())
        .filter(|_| signed.ends_with(&TAG_PREFIX))
        .ok_or_else(|| DecodeError::BadBody {
            detail: "tag is not a 32-byte bin field".to_owned(),
        })?;
    let mut de = rmp_serde::Deserializer::new(Cursor::new(body_bytes));
    let body = Body::deserialize(&mut de).map_err(|e| DecodeError::BadBody {
        detail: e.to_string(),
    })?;
    if de.position() != body_bytes.len() as u64 {
        return Err(DecodeError::BadBody {
            detail: "trailing bytes after the body".to_owned(),
        });
    }
    if let Some(expected) = must_allow_unknown {
        if !body.allowed_before_join() {
            return Err(DecodeError::WrongCluster {
                got: cluster_id,
                expected,
            });
        }
    }

    let mut tag_array = [0u8; TAG_LEN];
    tag_array.copy_from_slice(tag);
    Ok(Envelope {
        // Checked equal to PROTOCOL_VERSION above.
        version: PROTOCOL_VERSION,
        cluster_id,
        from,
        msg_id,
        body,
        tag: tag_array,
    })
}

fn read_header_int(rd: &mut &[u8], len: usize, mismatch: &'static str) -> Result<u64, DecodeError> {
    use rmp::decode::NumValueReadError as E;
    rmp::decode::read_int::<u64, _>(rd).map_err(|e| match e {
        E::InvalidMarkerRead(_) | E::InvalidDataRead(_) => DecodeError::Truncated { len },
        E::TypeMismatch(_) | E::OutOfRange => DecodeError::Malformed { detail: mismatch },
    })
}

fn keyed_mac(key: &ClusterKey) -> HmacSha256 {
    // HMAC zero-pads keys shorter than the hash's 64-byte block (RFC 2104), so this is
    // exactly HMAC-SHA256 with the 32-byte key, without a fallible length check.
    let mut block = [0u8; 64];
    block[..ClusterKey::LEN].copy_from_slice(key.as_bytes());
    HmacSha256::new(&block.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::api::{ClientOp, ClientRequest};
    use crate::health::Probe;
    use crate::snapshot::{chunk_at, max_chunk_data};
    use crate::strategies;
    use proptest::prelude::*;

    const CLUSTER: ClusterId = 0x7f3a_0000_0000_0001;

    fn key() -> ClusterKey {
        ClusterKey::from_bytes([7; ClusterKey::LEN])
    }

    fn probe_envelope(cluster_id: ClusterId) -> Envelope {
        Envelope::new(cluster_id, 42, 1, Body::Probe(Probe { nonce: 9 }))
    }

    /// Length of the header (array marker and four integers) of an encoded datagram.
    fn header_len(bytes: &[u8]) -> usize {
        let mut rd = bytes;
        rmp::decode::read_array_len(&mut rd).unwrap();
        for _ in 0..4 {
            rmp::decode::read_int::<u64, _>(&mut rd).unwrap();
        }
        bytes.len() - rd.len()
    }

    /// A correctly tagged datagram around arbitrary body bytes, to reach the body parser
    /// with garbage that passed authentication.
    fn sign_raw(cluster_id: ClusterId, body: &[u8], key: &ClusterKey) -> Vec<u8> {
        let mut buf = Vec::new();
        rmp::encode::write_array_len(&mut buf, ENVELOPE_FIELDS).unwrap();
        for field in [u64::from(PROTOCOL_VERSION), cluster_id, 1, 1] {
            rmp::encode::write_uint(&mut buf, field).unwrap();
        }
        buf.extend_from_slice(body);
        buf.extend_from_slice(&TAG_PREFIX);
        let tag = keyed_mac(key).chain_update(&buf).finalize().into_bytes();
        buf.extend_from_slice(&tag);
        buf
    }

    fn round_trip(envelope: &Envelope) -> Result<(), TestCaseError> {
        let bytes = encode(envelope, &key()).unwrap();
        prop_assert!(bytes.len() <= MAX_DATAGRAM);
        let decoded = decode(&bytes, &key(), Some(envelope.cluster_id)).unwrap();
        prop_assert_eq!(&decoded.tag[..], &bytes[bytes.len() - TAG_LEN..]);
        let mut expected = envelope.clone();
        expected.tag = decoded.tag;
        prop_assert_eq!(&decoded, &expected);
        // The datagram is a plain MessagePack `Envelope`, readable by any tool.
        let plain: Envelope = rmp_serde::from_slice(&bytes).unwrap();
        prop_assert_eq!(&plain, &decoded);
        prop_assert_eq!(rmp_serde::to_vec(&decoded).unwrap(), bytes);
        Ok(())
    }

    macro_rules! round_trip_tests {
        ($($test:ident: $strategy:expr => $variant:path;)*) => {
            proptest! {
                #![proptest_config(crate::strategies::config(128))]
                $(
                    #[test]
                    fn $test(cluster in strategies::num(), from in strategies::num(),
                             msg_id in strategies::num(), inner in $strategy) {
                        round_trip(&Envelope::new(cluster, from, msg_id, $variant(inner)))?;
                    }
                )*
            }
        };
    }

    round_trip_tests! {
        round_trip_raft: strategies::raft_message() => Body::Raft;
        round_trip_join_request: strategies::join_request() => Body::JoinRequest;
        round_trip_join_response: strategies::join_response() => Body::JoinResponse;
        round_trip_probe: strategies::probe() => Body::Probe;
        round_trip_probe_reply: strategies::probe_reply() => Body::ProbeReply;
        round_trip_client_request: strategies::client_request() => Body::ClientRequest;
        round_trip_client_reply: strategies::client_reply() => Body::ClientReply;
        round_trip_snapshot_chunk: strategies::snapshot_chunk() => Body::SnapshotChunk;
        round_trip_snapshot_chunk_ack: strategies::snapshot_chunk_ack() => Body::SnapshotChunkAck;
    }

    proptest! {
        #![proptest_config(crate::strategies::config(256))]

        #[test]
        fn arbitrary_bytes_never_decode(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(decode(&bytes, &key(), Some(CLUSTER)).is_err());
            prop_assert!(decode(&bytes, &key(), None).is_err());
        }

        // Random bytes behind a valid header get past the cheap checks to the tag.
        #[test]
        fn arbitrary_bytes_behind_a_header_fail_the_tag(
            tail in prop::collection::vec(any::<u8>(), 35..600)
        ) {
            let mut bytes = encode(&probe_envelope(CLUSTER), &key()).unwrap();
            let header = header_len(&bytes);
            bytes.truncate(header);
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(decode(&bytes, &key(), Some(CLUSTER)), Err(DecodeError::BadTag));
        }

        // Garbage from a key holder (a bug, or version skew) reaches the body parser: it must
        // be an error, never a panic or a huge allocation.
        #[test]
        fn authenticated_garbage_is_a_body_error(
            body in prop::collection::vec(any::<u8>(), 1..600)
        ) {
            let bytes = sign_raw(CLUSTER, &body, &key());
            match decode(&bytes, &key(), Some(CLUSTER)) {
                Ok(env) => {
                    // Rarely the garbage is a valid body; then it must be exactly that body.
                    let again = encode(&env, &key()).unwrap();
                    prop_assert_eq!(again, bytes);
                }
                Err(e) => prop_assert!(matches!(e, DecodeError::BadBody { .. }), "{e:?}"),
            }
        }

        #[test]
        fn every_truncation_is_an_error(env in strategies::envelope()) {
            let bytes = encode(&env, &key()).unwrap();
            for cut in 0..bytes.len() {
                let err = decode(&bytes[..cut], &key(), Some(env.cluster_id));
                prop_assert!(err.is_err(), "prefix of {} bytes decoded", cut);
            }
        }
    }

    proptest! {
        #![proptest_config(crate::strategies::config(32))]

        #[test]
        fn every_flipped_bit_is_rejected(env in strategies::envelope()) {
            let bytes = encode(&env, &key()).unwrap();
            let header = header_len(&bytes);
            for bit in 0..bytes.len() * 8 {
                let mut bad = bytes.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let result = decode(&bad, &key(), Some(env.cluster_id));
                if bit / 8 >= header {
                    prop_assert_eq!(result, Err(DecodeError::BadTag), "bit {}", bit);
                } else {
                    prop_assert!(result.is_err(), "bit {} of the header", bit);
                }
            }
        }
    }

    #[test]
    fn header_fields_are_authenticated_too() {
        let bytes = encode(&probe_envelope(CLUSTER), &key()).unwrap();
        // With no expected cluster, only the tag can notice a changed sender or cluster.
        for bit in 8..header_len(&bytes) * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad, &key(), None).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn wrong_key_fails_the_tag() {
        let bytes = encode(&probe_envelope(CLUSTER), &key()).unwrap();
        assert_eq!(
            decode(&bytes, &ClusterKey::lab_default(), Some(CLUSTER)),
            Err(DecodeError::BadTag)
        );
    }

    #[test]
    fn lab_default_key_works_like_any_other() {
        let lab = ClusterKey::lab_default();
        let env = probe_envelope(CLUSTER);
        let bytes = encode(&env, &lab).unwrap();
        assert_eq!(decode(&bytes, &lab, Some(CLUSTER)).unwrap().body, env.body);
    }

    #[test]
    fn wrong_cluster_has_its_own_error() {
        let bytes = encode(&probe_envelope(CLUSTER), &key()).unwrap();
        assert_eq!(
            decode(&bytes, &key(), Some(CLUSTER + 1)),
            Err(DecodeError::WrongCluster {
                got: CLUSTER,
                expected: CLUSTER + 1
            })
        );
        // A receiver without a cluster id accepts any.
        assert!(decode(&bytes, &key(), None).is_ok());
    }

    #[test]
    fn unknown_cluster_is_accepted_only_for_first_contact_bodies() {
        let probe = encode(&probe_envelope(UNKNOWN_CLUSTER), &key()).unwrap();
        assert_eq!(
            decode(&probe, &key(), Some(CLUSTER)),
            Err(DecodeError::WrongCluster {
                got: UNKNOWN_CLUSTER,
                expected: CLUSTER
            })
        );
        let request = Body::ClientRequest(ClientRequest {
            client_id: 5,
            seq: 1,
            op: ClientOp::Status,
        });
        let bytes = encode_body(UNKNOWN_CLUSTER, 5, 1, &request, &key()).unwrap();
        assert_eq!(decode(&bytes, &key(), Some(CLUSTER)).unwrap().body, request);
    }

    #[test]
    fn wrong_version_has_its_own_error() {
        for version in [0, PROTOCOL_VERSION + 1, u16::MAX] {
            let mut env = probe_envelope(CLUSTER);
            env.version = version;
            let bytes = encode(&env, &key()).unwrap();
            assert_eq!(
                decode(&bytes, &key(), Some(CLUSTER)),
                Err(DecodeError::WrongVersion {
                    got: u64::from(version)
                })
            );
        }
    }

    #[test]
    fn a_future_layout_is_reported_as_a_version_not_garbage() {
        // A later version might have a different number of fields; the version must still
        // be read.
        let future = u64::from(PROTOCOL_VERSION) + 1;
        let mut bytes = Vec::new();
        rmp::encode::write_array_len(&mut bytes, 3).unwrap();
        rmp::encode::write_uint(&mut bytes, future).unwrap();
        bytes.extend_from_slice(&[0xc0; 40]);
        assert_eq!(
            decode(&bytes, &key(), Some(CLUSTER)),
            Err(DecodeError::WrongVersion { got: future })
        );
    }

    #[test]
    fn empty_oversized_and_malformed_have_their_own_errors() {
        assert_eq!(decode(&[], &key(), None), Err(DecodeError::Empty));
        let huge = vec![0x96; MAX_DATAGRAM + 1];
        assert_eq!(
            decode(&huge, &key(), None),
            Err(DecodeError::Oversized {
                len: MAX_DATAGRAM + 1
            })
        );
        assert!(matches!(
            decode(b"hello, world", &key(), None),
            Err(DecodeError::Malformed { .. })
        ));
        assert_eq!(
            decode(&[0x96], &key(), None),
            Err(DecodeError::Truncated { len: 1 })
        );
        let mut negative = Vec::new();
        rmp::encode::write_array_len(&mut negative, ENVELOPE_FIELDS).unwrap();
        rmp::encode::write_sint(&mut negative, -1).unwrap();
        assert!(matches!(
            decode(&negative, &key(), None),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn trailing_bytes_after_the_body_are_rejected() {
        let body = rmp_serde::to_vec(&Body::Probe(Probe { nonce: 1 })).unwrap();
        let mut padded = body.clone();
        padded.push(0xc0);
        assert!(decode(&sign_raw(CLUSTER, &body, &key()), &key(), Some(CLUSTER)).is_ok());
        assert!(matches!(
            decode(&sign_raw(CLUSTER, &padded, &key()), &key(), Some(CLUSTER)),
            Err(DecodeError::BadBody { .. })
        ));
    }

    #[test]
    fn encode_refuses_oversized_datagrams() {
        let chunk = chunk_at(1, 1, &vec![0u8; MAX_DATAGRAM], 0, MAX_DATAGRAM);
        let env = Envelope::new(CLUSTER, 1, 1, Body::SnapshotChunk(chunk));
        assert!(matches!(
            encode(&env, &key()),
            Err(EncodeError::Oversized { .. })
        ));
    }

    #[test]
    fn a_full_chunk_fits_the_payload_budget() {
        for budget in [DEFAULT_PAYLOAD_BUDGET, 512, 9_000, MAX_DATAGRAM] {
            let data = vec![0xab; MAX_DATAGRAM];
            let mut chunk = chunk_at(u64::MAX, u64::MAX, &data, 1, max_chunk_data(budget));
            chunk.offset = u64::MAX;
            chunk.leader_term = u64::MAX;
            chunk.total_estimate = u64::MAX;
            let env = Envelope::new(u64::MAX, u64::MAX, u64::MAX, Body::SnapshotChunk(chunk));
            let len = encode(&env, &key()).unwrap().len();
            assert!(len <= budget, "budget {budget}: {len} bytes");
        }
    }

    #[test]
    fn reasons_are_distinct() {
        let errors = [
            DecodeError::Empty,
            DecodeError::Oversized { len: 0 },
            DecodeError::Truncated { len: 0 },
            DecodeError::Malformed { detail: "" },
            DecodeError::WrongVersion { got: 0 },
            DecodeError::WrongCluster {
                got: 0,
                expected: 0,
            },
            DecodeError::BadTag,
            DecodeError::BadBody {
                detail: String::new(),
            },
        ];
        let reasons: std::collections::HashSet<_> = errors.iter().map(|e| e.reason()).collect();
        assert_eq!(reasons.len(), errors.len());
    }
}
