//! Restart from what a crash left on disk, through the same path `myraft-node` takes.

#![allow(clippy::unwrap_used)]

use super::node::recover;
use crate::raft::{Config, Raft};
use crate::state_machine::StateMachine;
use crate::storage::{DiskOptions, DiskStorage, Storage};
use myraft_wire::raft::{Entry, EntryPayload, HardState, Membership, Snapshot, SnapshotMeta};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn noop(index: u64) -> Entry {
    Entry {
        term: 1,
        index,
        payload: EntryPayload::Noop,
    }
}

/// A node took a snapshot at 10 of a log 1..=20 and crashed after the snapshot file was
/// durable but before the log was compacted to it (or compaction failed on a full disk).
/// On restart every entry must still sit at its own index.
#[test]
fn restart_after_a_crash_between_snapshot_and_compaction_keeps_entries_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = DiskStorage::open(dir.path(), DiskOptions::default()).unwrap();
        storage
            .append(&(1..=20).map(noop).collect::<Vec<_>>())
            .unwrap();
        storage
            .save_hard_state(&HardState {
                term: 1,
                vote: Some(1),
                commit: 20,
            })
            .unwrap();
        storage.sync().unwrap();
        let mut sm = StateMachine::default();
        for i in 1..=10 {
            sm.skip(i).unwrap();
        }
        let snap = Snapshot {
            meta: SnapshotMeta {
                last_index: 10,
                last_term: 1,
                membership: Membership::default(),
            },
            data: sm.snapshot(),
        };
        storage.save_snapshot(&snap).unwrap();
        // The crash: `compact_prefix(10)` never runs.
    }
    let (storage, _) = DiskStorage::open(dir.path(), DiskOptions::default()).unwrap();
    let (init, sm) = recover(&storage).unwrap();
    assert_eq!(sm.applied_index(), 10);
    let raft = Raft::new(Config::new(1), init, StdRng::seed_from_u64(0));
    assert_eq!(raft.log().snapshot_index(), 10);
    assert_eq!(raft.last_index(), 20, "the log still ends at 20");
    for i in 11..=20 {
        let at = raft.log().get(i).map(|e| e.index);
        assert_eq!(at, Some(i), "the core's entry at index {i}");
    }
}
