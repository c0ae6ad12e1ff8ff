//! The cases of the datagram tests, shared by the property test (`main.rs`) and the
//! `decode` and `envelope` fuzz targets (which include this file by path).
//!
//! [`decode_input`]: `codec::decode` on arbitrary bytes, with and without an expected
//! cluster id. The first byte chooses what the rest is: as it is (mode 0), or given a valid
//! tag, appended (1) or in place of its last 32 bytes (2), so that the header and body
//! parsers behind the tag see arbitrary bytes too. Checked: no panic; with an expected
//! cluster a datagram decodes exactly when it decodes without one and is of that cluster
//! (or of none, on a body a newcomer may send), to the same envelope; what decodes carries
//! the tag it came with, encodes again, and that encoding decodes to the same envelope and
//! is stable.
//!
//! [`receive`]: the receive-side checks of a node on a sequence of datagrams: `decode` for
//! our cluster, then `ReplayFilter::accept`, and beside it `ReplayGuard::accept` (freshness
//! by the receiver's clock, then the same filter) as the node's transport runs it, with a
//! clock that moves on, is set back, and prunes stale senders. Datagrams are arbitrary
//! bytes, envelopes built from arbitrary fields and correctly tagged (so the checks behind
//! the tag are reached), earlier datagrams again, and earlier datagrams with a byte
//! changed. Checked: no panic; a datagram that decodes does not once a byte is changed; an
//! envelope built here decodes to itself unless it is of another cluster; a (sender,
//! message id) accepted once is never accepted again, by the filter or by the guard, even
//! with the clock set back after a prune; an id above every id the filter accepted from
//! its sender is accepted by it.

use arbitrary::Arbitrary;
use hmac::{Hmac, KeyInit, Mac};
use myraft_wire::api::{ClientOp, ClientRequest};
use myraft_wire::codec::{decode, encode, DecodeError, PROTOCOL_VERSION};
use myraft_wire::envelope::{Body, Envelope, TAG_LEN, UNKNOWN_CLUSTER};
use myraft_wire::health::Probe;
use myraft_wire::raft::{AppendEntries, RaftBody, RaftMessage};
use myraft_wire::replay::{ReplayGuard, SEQ_BITS};
use myraft_wire::{ClusterKey, ReplayFilter};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};

/// The receiver's cluster id.
pub const CLUSTER: u64 = 0x7f3a_0000_0000_0001;

/// The cluster key every datagram here is tagged with.
pub fn key() -> ClusterKey {
    ClusterKey::from_bytes([7; ClusterKey::LEN])
}

/// MessagePack `bin 8` of 32 bytes: what precedes the tag.
const TAG_PREFIX: [u8; 2] = [0xc4, TAG_LEN as u8];

/// HMAC-SHA256 under [`key`] of `signed`: the tag a sender appends.
fn tag(signed: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(signed);
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// `bytes`, then the tag prefix and a valid tag over all of it.
pub fn append_tag(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + TAG_PREFIX.len() + TAG_LEN);
    out.extend_from_slice(bytes);
    out.extend_from_slice(&TAG_PREFIX);
    let t = tag(&out);
    out.extend_from_slice(&t);
    out
}

/// `bytes` with its last 32 bytes replaced by a valid tag over the rest.
pub fn replace_tag(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.len() >= TAG_LEN {
        let at = out.len() - TAG_LEN;
        let t = tag(&out[..at]);
        out[at..].copy_from_slice(&t);
    }
    out
}

/// The `decode` target's input: a mode byte, then the datagram's bytes.
pub fn decode_input(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        check_decode(data);
        return;
    };
    match mode % 3 {
        0 => check_decode(rest),
        1 => check_decode(&append_tag(rest)),
        _ => check_decode(&replace_tag(rest)),
    }
}

/// Whether a receiver of [`CLUSTER`] takes an envelope of `cluster_id` carrying `body`.
fn admitted(cluster_id: u64, body: &Body) -> bool {
    cluster_id == CLUSTER || (cluster_id == UNKNOWN_CLUSTER && body.allowed_before_join())
}

/// Decodes `bytes` both ways and checks the rules of the module docs.
pub fn check_decode(bytes: &[u8]) {
    let key = key();
    let anyone = decode(bytes, &key, None);
    let ours = decode(bytes, &key, Some(CLUSTER));
    let Ok(env) = anyone else {
        assert!(ours.is_err(), "decodes for one cluster but not for any");
        return;
    };
    assert_eq!(env.version, PROTOCOL_VERSION);
    assert_eq!(env.tag[..], bytes[bytes.len() - TAG_LEN..]);
    match &ours {
        Ok(same) => {
            assert!(
                admitted(env.cluster_id, &env.body),
                "admitted from cluster {:#x}",
                env.cluster_id
            );
            assert_eq!(same, &env);
        }
        Err(e) => {
            assert!(
                !admitted(env.cluster_id, &env.body),
                "refused for our cluster: {e:?}"
            );
            assert!(matches!(e, DecodeError::WrongCluster { .. }), "{e:?}");
        }
    }

    let again = encode(&env, &key).expect("an envelope that decoded encodes again");
    let back = decode(&again, &key, None).expect("a re-encoded envelope decodes");
    let mut expected = env.clone();
    expected.tag = back.tag;
    assert_eq!(back, expected);
    assert_eq!(
        encode(&back, &key).expect("encodes"),
        again,
        "encoding is not stable"
    );
}

#[path = "../common/num.rs"]
mod num;
pub use num::Num;

#[derive(Arbitrary, Debug, Clone)]
pub enum Cluster {
    Ours,
    Unknown,
    Other(u64),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum BodySpec {
    Probe(u64),
    Status {
        client_id: u64,
        seq: u64,
    },
    Put {
        client_id: u64,
        seq: u64,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Heartbeat {
        term: Num,
        commit: Num,
    },
}

impl BodySpec {
    fn body(self, from: u64) -> Body {
        match self {
            BodySpec::Probe(nonce) => Body::Probe(Probe { nonce }),
            BodySpec::Status { client_id, seq } => Body::ClientRequest(ClientRequest {
                client_id,
                seq,
                op: ClientOp::Status,
            }),
            BodySpec::Put {
                client_id,
                seq,
                key,
                value,
            } => Body::ClientRequest(ClientRequest {
                client_id,
                seq,
                op: ClientOp::Put { key, value },
            }),
            BodySpec::Heartbeat { term, commit } => Body::Raft(RaftMessage {
                from,
                to: 1,
                term: term.get(8),
                body: RaftBody::AppendEntries(AppendEntries {
                    prev_log_index: 0,
                    prev_log_term: 0,
                    entries: Vec::new(),
                    leader_commit: commit.get(16),
                    read_round: 0,
                }),
            }),
        }
    }
}

/// A message id, mostly one a sender whose clock is near the receiver's would mint.
#[derive(Arbitrary, Debug, Clone)]
pub enum MsgId {
    /// Minted `ago_ms` before the receiver's clock (ahead of it if negative), `seq`-th of
    /// its epoch.
    Epoch {
        ago_ms: i16,
        seq: u8,
    },
    Any(u64),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Step {
    Raw(Vec<u8>),
    Built {
        cluster: Cluster,
        /// Few senders, so that windows fill and slide.
        from: u8,
        msg_id: MsgId,
        body: BodySpec,
    },
    /// An earlier datagram, again.
    Again(u8),
    /// An earlier datagram with one byte changed.
    Mutated {
        of: u8,
        at: u16,
        xor: u8,
    },
    /// The receiver's clock moves on (in seconds, so that ids go stale).
    Later(u8),
    /// The receiver's clock is set back.
    SetBack(u16),
    /// The guard forgets stale senders, as the transport does now and then.
    Prune,
}

/// Where the receiver's clock starts: 2026-12-02, in ms since the Unix epoch.
const START_MS: u64 = 1_796_000_000_000;

/// Feeds the steps to one receiver; panics on a violation.
pub fn receive(steps: Vec<Step>) {
    let key = key();
    let mut filter = ReplayFilter::new();
    let mut guard = ReplayGuard::new(START_MS);
    let mut now_ms = START_MS;
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut accepted: HashSet<(u64, u64)> = HashSet::new();
    let mut guarded: HashSet<(u64, u64)> = HashSet::new();
    let mut newest: HashMap<u64, u64> = HashMap::new();
    for step in steps {
        let (bytes, built) = match step {
            Step::Raw(bytes) => (bytes, None),
            Step::Built {
                cluster,
                from,
                msg_id,
                body,
            } => {
                let from = u64::from(from % 4);
                let msg_id = match msg_id {
                    MsgId::Epoch { ago_ms, seq } => {
                        let epoch = now_ms.saturating_add_signed(-i64::from(ago_ms));
                        (epoch << SEQ_BITS) | u64::from(seq)
                    }
                    MsgId::Any(id) => id,
                };
                let cluster_id = match cluster {
                    Cluster::Ours => CLUSTER,
                    Cluster::Unknown => UNKNOWN_CLUSTER,
                    Cluster::Other(id) => id,
                };
                let env = Envelope::new(cluster_id, from, msg_id, body.body(from));
                match encode(&env, &key) {
                    Ok(bytes) => (bytes, Some(env)),
                    // Too large for a datagram: nothing is sent.
                    Err(_) => continue,
                }
            }
            Step::Again(i) if !sent.is_empty() => (sent[usize::from(i) % sent.len()].clone(), None),
            Step::Mutated { of, at, xor } if !sent.is_empty() => {
                let mut bytes = sent[usize::from(of) % sent.len()].clone();
                if !bytes.is_empty() && xor != 0 {
                    let valid = decode(&bytes, &key, Some(CLUSTER)).is_ok();
                    let at = usize::from(at) % bytes.len();
                    bytes[at] ^= xor;
                    // The tag covers every byte before it, and itself. (A datagram that
                    // did not decode may, changed back, decode again.)
                    assert!(
                        !valid || decode(&bytes, &key, Some(CLUSTER)).is_err(),
                        "a datagram with byte {at} changed decodes"
                    );
                }
                (bytes, None)
            }
            Step::Again(_) | Step::Mutated { .. } => continue,
            Step::Later(s) => {
                now_ms += u64::from(s) * 1_000;
                continue;
            }
            Step::SetBack(ms) => {
                now_ms = now_ms.saturating_sub(u64::from(ms));
                continue;
            }
            Step::Prune => {
                guard.prune(now_ms);
                continue;
            }
        };

        let decoded = decode(&bytes, &key, Some(CLUSTER));
        if let Some(env) = &built {
            match &decoded {
                Ok(got) => {
                    assert!(
                        admitted(env.cluster_id, &env.body),
                        "admitted from cluster {:#x}",
                        env.cluster_id
                    );
                    let mut want = env.clone();
                    want.tag = got.tag;
                    assert_eq!(got, &want);
                }
                Err(e) => {
                    assert!(
                        !admitted(env.cluster_id, &env.body),
                        "a valid envelope refused: {e:?}"
                    );
                    assert!(matches!(e, DecodeError::WrongCluster { .. }), "{e:?}");
                }
            }
        }
        sent.push(bytes);
        let Ok(env) = decoded else { continue };
        let id = (env.from, env.msg_id);

        let above_all = newest.get(&env.from).is_none_or(|&n| env.msg_id > n);
        match filter.accept(env.from, env.msg_id) {
            Ok(()) => {
                assert!(
                    accepted.insert(id),
                    "message {} of sender {} accepted twice by the filter",
                    env.msg_id,
                    env.from
                );
                let n = newest.entry(env.from).or_insert(env.msg_id);
                *n = (*n).max(env.msg_id);
            }
            Err(e) => assert!(
                !above_all,
                "message {} of sender {}, above all it sent, refused: {e}",
                env.msg_id, env.from
            ),
        }
        if guard.accept(env.from, env.msg_id, now_ms).is_ok() {
            assert!(
                guarded.insert(id),
                "message {} of sender {} accepted twice by the guard (clock {now_ms})",
                env.msg_id,
                env.from
            );
        }
    }
}
