//! Restart from what a crash left on disk, through the same path `myraft-node` takes.

#![allow(clippy::unwrap_used)]

use super::node::recover;
use crate::raft::{Config, Raft};
use crate::storage::{DiskOptions, DiskStorage, OsFs, Storage};
use crate::store::{Store, StoreConfig, STORE_FILE};
use myraft_wire::raft::{Entry, EntryPayload, HardState, Membership, Snapshot, SnapshotMeta};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn noop(index: u64) -> Entry {
    noop_in(1, index)
}

fn noop_in(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Noop,
    }
}

/// A state store in `dir` that has applied `entries`.
fn store_with(dir: &std::path::Path, entries: &[Entry]) -> Store {
    let mut store = Store::open(&OsFs, &dir.join(STORE_FILE), &StoreConfig::default()).unwrap();
    store.apply(entries, true).unwrap();
    store
}

/// A log of `1..=last` in term 1, committed through `last`.
fn log_to(dir: &std::path::Path, last: u64) -> DiskStorage {
    let (mut storage, _) = DiskStorage::open(&dir.join("raft"), DiskOptions::default()).unwrap();
    storage
        .append(&(1..=last).map(noop).collect::<Vec<_>>())
        .unwrap();
    storage
        .save_hard_state(&HardState {
            term: 1,
            vote: Some(1),
            commit: last,
        })
        .unwrap();
    storage.sync().unwrap();
    storage
}

fn position(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: index,
            last_term: term,
            membership: Membership::default(),
        },
        data: Vec::new(),
    }
}

/// A node took a snapshot at 10 of a log 1..=20 and crashed after the snapshot file was
/// durable but before the log was compacted to it (or compaction failed on a full disk).
/// On restart every entry must still sit at its own index.
#[test]
fn restart_after_a_crash_between_snapshot_and_compaction_keeps_entries_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &(1..=10).map(noop).collect::<Vec<_>>());
    {
        let mut storage = log_to(dir.path(), 20);
        storage.save_snapshot(&position(10, 1)).unwrap();
        // The crash: `compact_prefix(10)` never runs.
    }
    let (mut storage, _) =
        DiskStorage::open(&dir.path().join("raft"), DiskOptions::default()).unwrap();
    let init = recover(&mut storage, &store).unwrap();
    assert_eq!(init.applied, 10);
    let raft = Raft::new(Config::new(1), init, StdRng::seed_from_u64(0));
    assert_eq!(raft.log().snapshot_index(), 10);
    assert_eq!(raft.last_index(), 20, "the log still ends at 20");
    for i in 11..=20 {
        let at = raft.log().get(i).map(|e| e.index);
        assert_eq!(at, Some(i), "the core's entry at index {i}");
    }
}

/// The store is ahead of the log's snapshot, as it always is a little: the core starts at
/// the store's applied index and hands out only what follows it.
#[test]
fn the_core_resumes_applying_after_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &(1..=15).map(noop).collect::<Vec<_>>());
    let mut storage = log_to(dir.path(), 20);
    storage.save_snapshot(&position(10, 1)).unwrap();
    storage.compact_prefix(10).unwrap();
    let init = recover(&mut storage, &store).unwrap();
    let mut raft = Raft::new(Config::new(1), init, StdRng::seed_from_u64(0));
    assert_eq!(raft.applied_index(), 15);
    let committed: Vec<u64> = raft.ready().committed.iter().map(|e| e.index).collect();
    assert_eq!(committed, (16..=20).collect::<Vec<_>>());
}

/// A snapshot from the leader was swapped in as the store, and the node stopped before the
/// log heard of it: the log takes the store's position, and its old entries (which the
/// leader's log does not have at that term) go.
#[test]
fn a_store_installed_from_a_snapshot_moves_the_log_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries: Vec<Entry> = (1..=20).map(noop).collect();
    entries.extend((21..=30).map(|i| noop_in(2, i)));
    let store = store_with(dir.path(), &entries);
    let mut storage = log_to(dir.path(), 20);
    let init = recover(&mut storage, &store).unwrap();
    assert_eq!(init.applied, 30);
    let raft = Raft::new(Config::new(1), init, StdRng::seed_from_u64(0));
    assert_eq!(raft.log().snapshot_index(), 30);
    assert_eq!(raft.log().snapshot_term(), 2);
    assert_eq!(raft.last_index(), 30);
    assert_eq!(raft.applied_index(), 30);
    // And the log on disk agrees, for the next restart.
    assert_eq!(storage.snapshot_meta().map(|m| m.last_index), Some(30));
}

/// A log compacted past what the store holds has lost entries: refuse, and say what to do.
#[test]
fn a_store_behind_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &(1..=5).map(noop).collect::<Vec<_>>());
    let mut storage = log_to(dir.path(), 20);
    storage.save_snapshot(&position(10, 1)).unwrap();
    let err = recover(&mut storage, &store).unwrap_err().to_string();
    assert!(err.contains("Remove the data dir"), "{err}");
}

/// A data dir of an earlier MyRaft keeps its state in the log's snapshot file: on the first
/// start of this one the snapshot becomes the state store, and nothing is lost.
#[test]
fn the_snapshot_of_an_earlier_version_becomes_the_store() {
    use crate::server::node::migrate_legacy_snapshot;
    use crate::server::NodeConfig;
    use crate::state_machine::{ClientCommand, Command, StateMachine};
    let dir = tempfile::tempdir().unwrap();
    let mut model = StateMachine::default();
    for i in 1..=10u64 {
        let req = ClientCommand {
            client_id: 7,
            seq: i,
            cmd: Command::Put {
                key: format!("k{}", i % 4).into_bytes(),
                value: i.to_string().into_bytes(),
            },
        };
        model.apply(i, 1000 * i, &req).unwrap();
    }
    let mut storage = log_to(dir.path(), 12);
    let mut snap = position(10, 1);
    snap.data = model.snapshot();
    storage.save_snapshot(&snap).unwrap();
    storage.compact_prefix(10).unwrap();

    let cfg = NodeConfig::new(
        "n1",
        "127.0.0.1:1".parse().unwrap(),
        vec![],
        dir.path().into(),
    );
    let store_cfg = StoreConfig::default();
    let mut store = Store::open(&OsFs, &dir.path().join(STORE_FILE), &store_cfg).unwrap();
    migrate_legacy_snapshot(&mut storage, &mut store, &cfg, &store_cfg).unwrap();
    assert_eq!(store.meta().applied_index, 10);
    assert_eq!(store.meta().kv.revision, model.revision());
    assert_eq!(store.sessions(), 1);
    let reader = store.reader().unwrap();
    for k in 0..4 {
        let key = format!("k{k}").into_bytes();
        assert_eq!(reader.get(&key, None).unwrap(), model.get(&key, None));
        assert_eq!(reader.history(&key).unwrap(), model.history(&key));
    }
    let init = recover(&mut storage, &store).unwrap();
    assert_eq!(init.applied, 10);
}

/// The commit index is written but synced only with entries, a term or a vote: a crash can
/// leave it behind what the state store applied (the store syncs on its own schedule). The
/// node must start from the store's position, not apply entries again nor wait to relearn a
/// commit it already acted on.
#[test]
fn a_commit_index_behind_the_store_starts_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &(1..=15).map(noop).collect::<Vec<_>>());
    {
        let (mut storage, _) =
            DiskStorage::open(&dir.path().join("raft"), DiskOptions::default()).unwrap();
        storage
            .append(&(1..=20).map(noop).collect::<Vec<_>>())
            .unwrap();
        storage
            .save_hard_state(&HardState {
                term: 1,
                vote: Some(1),
                commit: 8,
            })
            .unwrap();
        storage.sync().unwrap();
    }
    let (mut storage, _) =
        DiskStorage::open(&dir.path().join("raft"), DiskOptions::default()).unwrap();
    let init = recover(&mut storage, &store).unwrap();
    assert_eq!(init.hard_state.commit, 8, "what the log says");
    let raft = Raft::new(Config::new(1), init, StdRng::seed_from_u64(0));
    assert_eq!(raft.commit_index(), 15, "applied entries were committed");
    assert_eq!(raft.applied_index(), 15);
}
