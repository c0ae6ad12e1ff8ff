//! The store against the in-memory model of `crate::state_machine`: the same log gives the
//! same answers, whatever the batching, across reopening, through a snapshot stream, and
//! after a power cut (then it is the state of its last synced commit).

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use super::*;
use crate::state_machine::tests::{entries, steps};
use crate::state_machine::{ClientCommand, StateMachine};
use crate::storage::{Fault, OsFs, SimFs};
use myraft_wire::raft::Member;
use proptest::prelude::*;

fn log(entries: &[(u64, ClientCommand)]) -> Vec<Entry> {
    entries
        .iter()
        .enumerate()
        .map(|(i, (time, req))| Entry {
            term: 1 + i as u64 / 10,
            index: i as u64 + 1,
            payload: EntryPayload::Command(
                LogCommand {
                    entry_time_ms: *time,
                    req: req.clone(),
                }
                .encode(),
            ),
        })
        .collect()
}

fn model_of(entries: &[Entry]) -> (StateMachine, Vec<ApplyResult>) {
    let mut sm = StateMachine::default();
    let mut replies = Vec::new();
    for e in entries {
        if let EntryPayload::Command(bytes) = &e.payload {
            replies.push(sm.apply_entry(e.index, bytes));
        }
    }
    (sm, replies)
}

fn replies(applied: &[Applied]) -> Vec<ApplyResult> {
    applied
        .iter()
        .filter_map(|a| match &a.what {
            AppliedKind::Command(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// Every key of the strategies' key space.
fn keys() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for a in 0u8..4 {
        out.push(vec![a]);
        for b in 0u8..4 {
            out.push(vec![a, b]);
        }
    }
    out
}

/// The store answers every read as the model does.
fn same_answers(store: &Store, sm: &StateMachine) -> Result<(), TestCaseError> {
    let r = store.reader().unwrap();
    let m = r.meta();
    prop_assert_eq!(m.applied_index, sm.applied_index());
    prop_assert_eq!(m.kv.revision, sm.revision());
    prop_assert_eq!(m.kv.compacted_before, sm.compacted_before());
    prop_assert_eq!(m.clock_ms, sm.clock_ms());
    let stats = sm.stats();
    prop_assert_eq!(m.kv.live_keys, stats.live_keys as u64);
    prop_assert_eq!(m.kv.versions, stats.versions as u64);
    prop_assert_eq!(store.sessions(), stats.sessions);
    let (revs, idx, latest) = r.count_rows().unwrap();
    prop_assert_eq!(
        (revs, idx, latest),
        (m.kv.versions, m.kv.versions, m.kv.live_keys)
    );
    for key in keys() {
        for at in (0..=sm.revision() + 1).map(Some).chain([None]) {
            prop_assert_eq!(
                r.get(&key, at).unwrap(),
                sm.get(&key, at),
                "{:?} at {:?}",
                key,
                at
            );
        }
        prop_assert_eq!(r.history(&key).unwrap(), sm.history(&key));
    }
    Ok(())
}

fn export_bytes(store: &Store) -> Vec<u8> {
    let mut e = store.reader().unwrap().export().unwrap();
    let mut out = Vec::new();
    while let Some(block) = e.next_block(300).unwrap() {
        out.extend(block);
    }
    out
}

fn import(dir: &Path, bytes: &[u8], piece: usize) -> Result<Meta, ImportError> {
    let mut imp = Import::create(&OsFs, &dir.join("incoming.redb"), 1 << 20)?;
    for chunk in bytes.chunks(piece.max(1)) {
        imp.feed(chunk)?;
    }
    imp.finish()
}

fn cfg() -> StoreConfig {
    StoreConfig {
        cache_bytes: 1 << 20,
        ..StoreConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_store_answers_as_the_model_does(
        steps in steps(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        piece in 1usize..200,
    ) {
        let log = log(&entries(&steps));
        let (sm, want) = model_of(&log);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        let mut store = Store::open(&OsFs, &path, &cfg()).unwrap();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(log.len() + 1)).collect();
        cuts.push(log.len());
        cuts.sort_unstable();
        let mut got = Vec::new();
        let mut from = 0;
        for (n, to) in cuts.into_iter().enumerate() {
            got.extend(replies(&store.apply(&log[from..to], n % 2 == 0).unwrap()));
            from = to;
        }
        prop_assert_eq!(&got, &want);
        same_answers(&store, &sm)?;
        // Applying again changes nothing: the store skips what it holds.
        prop_assert!(store.apply(&log, false).unwrap().is_empty());

        // Through a snapshot stream, in pieces of any size, into a store that answers the same
        // and streams the same bytes.
        let bytes = export_bytes(&store);
        let meta = import(dir.path(), &bytes, piece).unwrap();
        prop_assert_eq!(&meta, store.meta());
        let mut other = Store::open(&OsFs, &dir.path().join("other.redb"), &cfg()).unwrap();
        let replaced = other.replace_with(&OsFs, &dir.path().join("incoming.redb"), &cfg()).unwrap();
        prop_assert_eq!(replaced, sm.applied_index() > 0);
        if replaced {
            same_answers(&other, &sm)?;
            prop_assert_eq!(export_bytes(&other), bytes.clone());
        }

        // Reopened, it holds what it held.
        drop(store);
        let store = Store::open(&OsFs, &path, &cfg()).unwrap();
        same_answers(&store, &sm)?;
    }

    #[test]
    fn a_damaged_stream_is_refused(steps in steps(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let log = log(&entries(&steps));
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&OsFs, &dir.path().join(STORE_FILE), &cfg()).unwrap();
        store.apply(&log, true).unwrap();
        let bytes = export_bytes(&store);
        let i = at.index(bytes.len());
        let mut damaged = bytes.clone();
        damaged[i] ^= flip;
        prop_assert!(import(dir.path(), &damaged, 64).is_err(), "flipped byte {} of {}", i, bytes.len());
        prop_assert!(import(dir.path(), &bytes[..i], 64).is_err(), "cut at {}", i);
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(import(dir.path(), &longer, 64).is_err());
    }
}

fn membership(n: u64) -> Membership {
    let mut m = Membership::default();
    m.members.insert(
        n,
        Member {
            id: n,
            name: format!("n{n}"),
            addr: "127.0.0.1:1".into(),
            voter: true,
        },
    );
    m
}

#[test]
fn the_meta_row_follows_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STORE_FILE);
    let mut store = Store::open(&OsFs, &path, &cfg()).unwrap();
    let entries = [
        Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Config(membership(1)),
        },
        Entry {
            term: 2,
            index: 2,
            payload: EntryPayload::Noop,
        },
    ];
    let applied = store.apply(&entries, false).unwrap();
    assert_eq!(applied[0].what, AppliedKind::Config(membership(1)));
    assert_eq!(applied[1].what, AppliedKind::Noop);
    assert_eq!(
        (store.meta().applied_index, store.meta().applied_term),
        (2, 2)
    );
    assert_eq!(store.meta().membership, membership(1));
    let gap = Entry {
        term: 2,
        index: 4,
        payload: EntryPayload::Noop,
    };
    assert!(matches!(
        store.apply(&[gap], false),
        Err(StoreError::Gap { applied: 2, got: 4 })
    ));
    assert!(
        matches!(store.apply(&[], false), Err(StoreError::Failed)),
        "a failed batch poisons the store until it is reopened"
    );
    drop(store);
    let store = Store::open(&OsFs, &path, &cfg()).unwrap();
    assert_eq!(store.meta().applied_index, 2);
}

/// After a power cut the store is the state of its last synced commit (or of the commit
/// that was being synced), never a mix, whatever step the machine died at.
#[test]
fn a_power_cut_leaves_the_state_of_a_synced_commit() {
    let log = log(&(1..=60u64)
        .map(|i| {
            let cmd = match i % 5 {
                0 => Command::Delete {
                    key: vec![(i % 7) as u8],
                },
                3 => Command::Compact { revision: i / 2 },
                _ => Command::Put {
                    key: vec![(i % 7) as u8],
                    value: vec![i as u8; (i as usize * 37) % 3000],
                },
            };
            (
                1000 * i,
                ClientCommand {
                    client_id: i % 3,
                    seq: 1 + i / 3,
                    cmd,
                },
            )
        })
        .collect::<Vec<_>>());
    let dir = Path::new("/sim");
    let (mut crashes, mut mid_sync) = (0, 0);
    for seed in 0..40u64 {
        for crash_at in [None, Some(1 + seed * 4)] {
            let fs = SimFs::new(seed);
            fs.create_dir_all(dir).unwrap();
            let path = dir.join(STORE_FILE);
            let mut store = Store::open(&fs, &path, &cfg()).unwrap();
            if let Some(step) = crash_at {
                fs.arm(step, Fault::Crash);
            }
            // Synced every third batch of five entries.
            let mut synced = 0;
            let mut attempted = 0;
            for (n, batch) in log.chunks(5).enumerate() {
                let durable = n % 3 == 2;
                match store.apply(batch, durable) {
                    Ok(_) if durable => synced = batch[batch.len() - 1].index,
                    Ok(_) => {}
                    Err(_) => {
                        if durable {
                            attempted = batch[batch.len() - 1].index;
                        }
                        break;
                    }
                }
            }
            drop(store);
            crashes += usize::from(!fs.fired().is_empty());
            mid_sync += usize::from(attempted > 0);
            fs.power_cut();
            let store = Store::open(&fs, &path, &cfg())
                .unwrap_or_else(|e| panic!("seed {seed}, crash at {crash_at:?}: {e}"));
            let at = store.meta().applied_index;
            assert!(
                at == synced || (attempted > 0 && at == attempted),
                "seed {seed}, crash at {crash_at:?}: the store is at {at}, synced {synced}, \
                 attempted {attempted}"
            );
            let (sm, _) = model_of(&log[..at as usize]);
            same_answers(&store, &sm)
                .unwrap_or_else(|e| panic!("seed {seed}, crash at {crash_at:?}: {e}"));
        }
    }
    eprintln!("{crashes} crashes, {mid_sync} during a synced commit");
    assert!(
        crashes >= 36 && mid_sync >= 10,
        "{crashes} crashes, {mid_sync} during a sync"
    );
}
