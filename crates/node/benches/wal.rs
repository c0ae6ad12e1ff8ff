//! Write-ahead log cost: append + fdatasync, one entry at a time and in a batch of 64.
//!
//! `cargo bench -p myraft-node --bench wal`. The log lives in a temporary directory on the
//! default temp filesystem (`TMPDIR` to move it): what is measured is mostly that disk's
//! fdatasync, so the figures only compare runs on the same machine.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use myraft_node::storage::{DiskOptions, DiskStorage, Storage};
use myraft_wire::raft::{Entry, EntryPayload, Index};
use std::time::Duration;

const PAYLOAD: usize = 100;

fn entry(index: Index) -> Entry {
    Entry {
        term: 1,
        index,
        payload: EntryPayload::Command(vec![0xab; PAYLOAD]),
    }
}

fn wal(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let dir = tempfile::tempdir().expect("create a temporary directory");
    eprintln!(
        "cargo bench -p myraft-node --bench wal  ({cores} cores, log in {})",
        dir.path().display()
    );
    let (mut store, _) =
        DiskStorage::open(dir.path(), DiskOptions::default()).expect("open the log");
    let mut next = store.last_index() + 1;

    let mut group = c.benchmark_group("wal");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(8));

    group.throughput(Throughput::Elements(1));
    group.bench_function("append 1 x 100 B + sync", |b| {
        b.iter(|| {
            store.append(&[entry(next)]).expect("append");
            store.sync().expect("sync");
            next += 1;
        })
    });

    group.throughput(Throughput::Elements(64));
    group.bench_function("append 64 x 100 B + one sync", |b| {
        b.iter(|| {
            let batch: Vec<Entry> = (next..next + 64).map(entry).collect();
            store.append(&batch).expect("append");
            store.sync().expect("sync");
            next += 64;
        })
    });
    group.finish();
    eprintln!(
        "log: {} entries, {} bytes on disk",
        store.last_index(),
        store.log_bytes()
    );
}

criterion_group!(benches, wal);
criterion_main!(benches);
