//! State store cost of applying committed writes: `Store::apply` of a batch of 64 puts of
//! 256-byte values in one redb write transaction, as the applier hands it a batch of
//! committed entries. Each batch comes from 64 clients, one put each, so it also writes 64
//! session rows, as under the 64-client load of `scripts/bench-scale.sh`.
//!
//! - fresh keys: every put creates a key;
//! - existing keys: overwrites of 4 096 keys filled before the timed run, cycled through;
//! - existing keys, synced commit: the same with a durable commit, which the applier makes
//!   once per sync interval; that one is mostly the disk's fsync.
//!
//! Only `Store::apply` is timed. Entries are built and encoded outside it (the applier
//! receives them from the log that way); decoding them is part of applying. In the unsynced
//! cases an untimed synced commit follows every 32nd batch, standing in for the applier's
//! sync interval: redb frees the pages that unsynced commits replaced only at a synced one,
//! and without it the file would grow far faster than a node's and the figures would
//! measure that growth. A store starts over, untimed, once it holds 500 000 revisions, so
//! that neither the figures nor the disk space (about 300 MB at most) depend on how long
//! the run is. The stores live in a temporary directory on the default temp filesystem
//! (`TMPDIR` to move it).
//!
//! `cargo bench -p myraft-node --bench store`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use myraft_node::state_machine::{ClientCommand, Command, LogCommand};
use myraft_node::storage::OsFs;
use myraft_node::store::{Store, StoreConfig};
use myraft_wire::raft::{Entry, EntryPayload};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BATCH: u64 = 64;
const VALUE: usize = 256;
/// Keys overwritten by the existing-keys cases: more than a batch, so a batch does not keep
/// rewriting the same few pages.
const EXISTING_KEYS: u64 = 4_096;
/// Unsynced batches between two synced commits.
const SYNC_EVERY: u64 = 32;
/// Revisions after which a store starts over.
const MAX_REVISIONS: u64 = 500_000;

/// One store and the log applied to it: consecutive indexes, one put per client per batch.
struct Case {
    dir: PathBuf,
    name: &'static str,
    overwrite: bool,
    generation: u32,
    store: Store,
    next_index: u64,
    seq: u64,
    time_ms: u64,
    next_key: u64,
    batches: u64,
}

impl Case {
    /// A new, empty store; for `overwrite`, filled with the keys it will overwrite.
    fn start(dir: &Path, name: &'static str, overwrite: bool, generation: u32) -> Case {
        let path = dir.join(format!("{name}-{generation}.redb"));
        let store =
            Store::open(&OsFs, &path, &StoreConfig::default()).expect("open the state store");
        let mut case = Case {
            dir: dir.to_owned(),
            name,
            overwrite,
            generation,
            store,
            next_index: 1,
            seq: 0,
            time_ms: 1_000,
            next_key: 0,
            batches: 0,
        };
        if overwrite {
            for _ in 0..EXISTING_KEYS / BATCH {
                let batch = case.next_batch();
                case.store.apply(&batch, false).expect("fill the store");
            }
            case.store.apply(&[], true).expect("sync the filled store");
            case.check();
        }
        case
    }

    fn next_batch(&mut self) -> Vec<Entry> {
        self.seq += 1;
        self.time_ms += 1;
        let first_key = if self.overwrite {
            self.next_key % EXISTING_KEYS
        } else {
            self.next_key
        };
        self.next_key += BATCH;
        (first_key..first_key + BATCH)
            .zip(1..)
            .map(|(k, client_id)| {
                let payload = LogCommand {
                    entry_time_ms: self.time_ms,
                    req: ClientCommand {
                        client_id,
                        seq: self.seq,
                        cmd: Command::Put {
                            key: format!("key/{k:010}").into_bytes(),
                            value: vec![0xab; VALUE],
                        },
                    },
                }
                .encode();
                self.next_index += 1;
                Entry {
                    term: 1,
                    index: self.next_index - 1,
                    payload: EntryPayload::Command(payload),
                }
            })
            .collect()
    }

    /// Every entry applied as a put: a duplicate or stale session would not have written.
    fn check(&self) {
        let kv = self.store.meta().kv;
        assert_eq!(
            kv.revision,
            self.next_index - 1,
            "every entry must be a put"
        );
        let keys = if self.overwrite {
            EXISTING_KEYS
        } else {
            self.next_key
        };
        assert_eq!(kv.live_keys, keys, "{}: live keys", self.name);
    }

    fn restart(&mut self) {
        self.check();
        let old = self.store.path().to_owned();
        *self = Case::start(&self.dir, self.name, self.overwrite, self.generation + 1);
        std::fs::remove_file(&old).expect("remove the previous store");
    }

    /// Applies `iters` batches, timing only `Store::apply`.
    fn run(&mut self, iters: u64, durable: bool) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            if self.store.meta().kv.revision >= MAX_REVISIONS {
                self.restart();
            }
            let batch = self.next_batch();
            let start = Instant::now();
            let applied = self.store.apply(&batch, durable).expect("apply");
            total += start.elapsed();
            // Freed untimed: the applier hands the replies on instead of dropping them.
            drop(applied);
            self.batches += 1;
            if !durable && self.batches.is_multiple_of(SYNC_EVERY) {
                self.store.apply(&[], true).expect("synced commit");
            }
        }
        total
    }
}

fn store(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let dir = tempfile::tempdir().expect("create a temporary directory");
    eprintln!(
        "cargo bench -p myraft-node --bench store  ({cores} cores, stores in {})",
        dir.path().display()
    );

    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(BATCH));

    let mut fresh = Case::start(dir.path(), "fresh", false, 0);
    group.bench_function("apply 64 puts x 256 B, fresh keys", |b| {
        b.iter_custom(|iters| fresh.run(iters, false))
    });
    fresh.check();
    drop(fresh);

    let mut existing = Case::start(dir.path(), "existing", true, 0);
    group.bench_function("apply 64 puts x 256 B, existing keys", |b| {
        b.iter_custom(|iters| existing.run(iters, false))
    });
    group.bench_function("apply 64 puts x 256 B, existing keys, synced commit", |b| {
        b.iter_custom(|iters| existing.run(iters, true))
    });
    existing.check();
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
