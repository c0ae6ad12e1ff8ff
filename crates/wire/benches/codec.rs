//! Codec cost per datagram, the CPU every message pays on each hop before and after the
//! network: `encode_body` (MessagePack, then the HMAC tag) and `decode` (header checks, tag
//! verification, then the body) of the datagrams on the write path: a client put of a
//! 256-byte value, its reply, and an AppendEntries of 16 entries of 300 bytes. `encode`
//! runs the same code as `encode_body`, so it is not measured apart.
//!
//! The `envelope_tag` group isolates the tag: HMAC-SHA256 over 256 and 1 400 bytes (the
//! default payload budget), computed with the `hmac` and `sha2` crates exactly as the
//! codec's private `keyed_mac` does (the key zero-padded to a 64-byte block, a fresh MAC
//! per datagram). Before it runs, the bench checks that this reproduces the tag `encode`
//! wrote, so it cannot drift from the codec unnoticed. What the codec groups spend beyond
//! the tag is serialisation.
//!
//! `cargo bench -p myraft-wire --bench codec`, or `... --bench codec -- envelope_tag` for the
//! tag alone.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hmac::{Hmac, KeyInit, Mac};
use myraft_wire::api::{ClientOp, ClientReply, ClientRequest, ClientResponse, PutResult};
use myraft_wire::raft::{AppendEntries, Entry, EntryPayload, RaftBody, RaftMessage};
use myraft_wire::{decode, encode_body, Body, ClusterKey};
use sha2::Sha256;
use std::hint::black_box;

const CLUSTER: u64 = 0x7f3a_0000_0000_0001;
const TAG_LEN: usize = 32;

fn key() -> ClusterKey {
    ClusterKey::from_bytes([7; ClusterKey::LEN])
}

fn put_request() -> Body {
    Body::ClientRequest(ClientRequest {
        client_id: 0x5eed_0000_0000_0001,
        seq: 1_000_000,
        op: ClientOp::Put {
            key: b"user/0000012345".to_vec(),
            value: vec![0xab; 256],
        },
    })
}

fn put_reply() -> Body {
    Body::ClientReply(ClientReply {
        client_id: 0x5eed_0000_0000_0001,
        seq: 1_000_000,
        result: Ok(ClientResponse::Put(PutResult {
            revision: 1_000_000,
        })),
    })
}

/// Large indexes and terms, so the integers take their full MessagePack width as they do
/// in a long-lived cluster.
fn append_entries() -> Body {
    let first = 1_000_001;
    Body::Raft(RaftMessage {
        from: 0x1111_2222_3333_4444,
        to: 0x5555_6666_7777_8888,
        term: 42,
        body: RaftBody::AppendEntries(AppendEntries {
            prev_log_index: first - 1,
            prev_log_term: 42,
            entries: (first..first + 16)
                .map(|index| Entry {
                    term: 42,
                    index,
                    payload: EntryPayload::Command(vec![0xab; 300]),
                })
                .collect(),
            leader_commit: first - 1,
            read_round: 7,
        }),
    })
}

fn codec(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!("cargo bench -p myraft-wire --bench codec  ({cores} cores)");
    let key = key();
    let cases = [
        ("client put request, 256 B value", put_request()),
        ("client put reply", put_reply()),
        ("append entries, 16 x 300 B", append_entries()),
    ];

    let mut group = c.benchmark_group("codec");
    for (name, body) in &cases {
        let bytes = encode_body(CLUSTER, 1, 1, body, &key).expect("the body fits a datagram");
        let decoded = decode(&bytes, &key, Some(CLUSTER)).expect("the datagram decodes");
        assert_eq!(&decoded.body, body, "{name}: round trip");
        eprintln!("{name}: {} bytes", bytes.len());
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("encode {name}"), |b| {
            b.iter(|| encode_body(CLUSTER, 1, 1, black_box(body), &key).expect("encodes"))
        });
        group.bench_function(format!("decode {name}"), |b| {
            b.iter(|| decode(black_box(&bytes), &key, Some(CLUSTER)).expect("decodes"))
        });
    }
    group.finish();
}

/// The codec's `keyed_mac`: HMAC zero-pads a short key to the block size anyway, so this is
/// plain HMAC-SHA256 with the 32-byte key.
fn tag(key: &ClusterKey, signed: &[u8]) -> [u8; TAG_LEN] {
    let mut block = [0u8; 64];
    block[..ClusterKey::LEN].copy_from_slice(key.as_bytes());
    Hmac::<Sha256>::new(&block.into())
        .chain_update(signed)
        .finalize()
        .into_bytes()
        .into()
}

fn envelope_tag(c: &mut Criterion) {
    let key = key();
    let datagram = encode_body(CLUSTER, 1, 1, &put_request(), &key).expect("encodes");
    let (signed, sent) = datagram.split_at(datagram.len() - TAG_LEN);
    assert_eq!(
        tag(&key, signed),
        sent,
        "the bench's MAC must be the codec's"
    );

    let mut group = c.benchmark_group("envelope_tag");
    for len in [256usize, 1_400] {
        let data = vec![0xab; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("hmac-sha256 {len} B"), |b| {
            b.iter(|| tag(&key, black_box(&data)))
        });
    }
    group.finish();
}

criterion_group!(benches, codec, envelope_tag);
criterion_main!(benches);
