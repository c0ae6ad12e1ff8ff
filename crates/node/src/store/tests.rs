//! The store against the in-memory model of `crate::state_machine`: the same log gives the
//! same answers, whatever the batching, across reopening, through a snapshot stream (whole,
//! or cut and continued by a later one), and after a power cut (then it is the state of its
//! last synced commit).

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use super::*;
use crate::state_machine::tests::{entries, steps};
use crate::state_machine::{ClientCommand, StateMachine};
use crate::storage::{Fault, OsFs, SimFs};
use myraft_wire::raft::Member;
use myraft_wire::snapshot::ResumePoint;
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
    let mut model = StateMachine::default();
    let mut replies = Vec::new();
    for e in entries {
        if let EntryPayload::Command(bytes) = &e.payload {
            replies.push(model.apply_entry(e.index, bytes));
        }
    }
    (model, replies)
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
fn same_answers(store: &Store, model: &StateMachine) -> Result<(), TestCaseError> {
    let r = store.reader().unwrap();
    let m = r.meta();
    prop_assert_eq!(m.applied_index, model.applied_index());
    prop_assert_eq!(m.kv.revision, model.revision());
    prop_assert_eq!(m.kv.compacted_before, model.compacted_before());
    prop_assert_eq!(m.clock_ms, model.clock_ms());
    let stats = model.stats();
    prop_assert_eq!(m.kv.live_keys, stats.live_keys as u64);
    prop_assert_eq!(m.kv.versions, stats.versions as u64);
    prop_assert_eq!(store.sessions(), stats.sessions);
    let (revs, idx, latest) = r.count_rows().unwrap();
    prop_assert_eq!(
        (revs, idx, latest),
        (m.kv.versions, m.kv.versions, m.kv.live_keys)
    );
    for key in keys() {
        for at in (0..=model.revision() + 1).map(Some).chain([None]) {
            prop_assert_eq!(
                r.get(&key, at).unwrap(),
                model.get(&key, at),
                "{:?} at {:?}",
                key,
                at
            );
        }
        prop_assert_eq!(r.history(&key).unwrap(), model.history(&key));
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

fn drain(mut e: Export) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(block) = e.next_block(300).unwrap() {
        out.extend(block);
    }
    out
}

/// Feeds `bytes` into `imp` in pieces of `piece` and finishes it.
fn feed_all(mut imp: Import, bytes: &[u8], piece: usize) -> Result<Meta, ImportError> {
    for chunk in bytes.chunks(piece.max(1)) {
        imp.feed(chunk)?;
    }
    imp.finish()
}

/// Where the import at `path` stands after the first `cut` bytes of `bytes`: sealed, or
/// (`reopen`) dropped and found again on disk, as after a restart.
fn cut_import(path: &Path, bytes: &[u8], cut: usize, reopen: bool) -> Option<ResumePoint> {
    let mut imp = Import::create(&OsFs, path, 1 << 20).unwrap();
    for chunk in bytes[..cut].chunks(97) {
        imp.feed(chunk).unwrap();
    }
    if reopen {
        drop(imp);
        Import::resume_point(&OsFs, path, 1 << 20).unwrap()
    } else {
        imp.seal().unwrap()
    }
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
        let (model, want) = model_of(&log);
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
        same_answers(&store, &model)?;
        // Applying again changes nothing: the store skips what it holds.
        prop_assert!(store.apply(&log, false).unwrap().is_empty());

        // Through a snapshot stream, in pieces of any size, into a store that answers the same
        // and streams the same bytes.
        let bytes = export_bytes(&store);
        let meta = import(dir.path(), &bytes, piece).unwrap();
        prop_assert_eq!(&meta, store.meta());
        let mut other = Store::open(&OsFs, &dir.path().join("other.redb"), &cfg()).unwrap();
        let replaced = other.replace_with(&OsFs, &dir.path().join("incoming.redb"), &cfg()).unwrap();
        prop_assert_eq!(replaced, model.applied_index() > 0);
        if replaced {
            same_answers(&other, &model)?;
            prop_assert_eq!(export_bytes(&other), bytes.clone());
        }

        // Reopened, it holds what it held.
        drop(store);
        let store = Store::open(&OsFs, &path, &cfg()).unwrap();
        same_answers(&store, &model)?;
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A stream cut anywhere leaves a partial store; a later stream of a newer state
    /// continues it from its point whenever the rows up to there are the same, and what
    /// results is that newer state, exactly.
    #[test]
    fn a_cut_stream_is_continued_by_a_later_one(
        steps in steps(),
        at in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        piece in 1usize..200,
        reopen in any::<bool>(),
    ) {
        let log = log(&entries(&steps));
        let (model, _) = model_of(&log);
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&OsFs, &dir.path().join(STORE_FILE), &cfg()).unwrap();
        store.apply(&log[..at.index(log.len() + 1)], true).unwrap();
        let old = store.meta().kv;
        let bytes = export_bytes(&store);
        let incoming = dir.path().join("incoming.redb");
        let point = cut_import(&incoming, &bytes, cut.index(bytes.len() + 1), reopen);
        store.apply(&log, true).unwrap();
        let new = store.meta().kv;

        let export = store.reader().unwrap().export_continuing(point).unwrap();
        let after = export.after_revision();
        prop_assert_eq!(export.resume_considered(), point.is_some());
        if let Some(p) = point {
            prop_assert_eq!(p.compacted_before, old.compacted_before);
            prop_assert!(p.after_revision <= old.revision);
            if new.compacted_before == old.compacted_before {
                prop_assert_eq!(after, p.after_revision, "same rows, yet not continued");
            }
            if new.compacted_before != old.compacted_before
                && new.compacted_before > p.after_revision
            {
                prop_assert_eq!(after, 0, "continued past a compaction it lacks");
            }
        } else {
            prop_assert_eq!(after, 0);
        }
        let stream = drain(export);
        let imp = if after > 0 {
            Import::resume(&OsFs, &incoming, 1 << 20, after).unwrap()
        } else {
            Import::create(&OsFs, &incoming, 1 << 20).unwrap()
        };
        let meta = feed_all(imp, &stream, piece).unwrap();
        prop_assert_eq!(&meta, store.meta());
        let mut other = Store::open(&OsFs, &dir.path().join("other.redb"), &cfg()).unwrap();
        if other.replace_with(&OsFs, &incoming, &cfg()).unwrap() {
            same_answers(&other, &model)?;
            prop_assert_eq!(export_bytes(&other), export_bytes(&store));
        }
        prop_assert_eq!(Import::resume_point(&OsFs, &incoming, 1 << 20).unwrap(), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A store that fell behind is brought up to a later state by a stream of only the rows
    /// after its own latest one, whenever its rows agree with that state's (the leader
    /// decides), through a copy of itself: the result is the later state, exactly. The
    /// store may have applied more entries since it offered its point (`more`): the rows in
    /// between are skipped.
    #[test]
    fn a_store_behind_is_brought_up_by_the_rows_after_it(
        steps in steps(),
        at in any::<prop::sample::Index>(),
        more in any::<prop::sample::Index>(),
        piece in 1usize..200,
    ) {
        let log = log(&entries(&steps));
        let (model, _) = model_of(&log);
        let dir = tempfile::tempdir().unwrap();
        let mut behind = Store::open(&OsFs, &dir.path().join(STORE_FILE), &cfg()).unwrap();
        let at = at.index(log.len() + 1);
        behind.apply(&log[..at], false).unwrap();
        let mut ahead = Store::open(&OsFs, &dir.path().join("ahead.redb"), &cfg()).unwrap();
        ahead.apply(&log, true).unwrap();

        let point = behind.resume_point().unwrap();
        behind.apply(&log[at..at + more.index(log.len() - at + 1)], false).unwrap();
        let export = ahead.reader().unwrap().export_continuing(point).unwrap();
        let after = export.after_revision();
        if let Some(p) = point {
            prop_assert!(p.after_revision <= behind.meta().kv.revision);
            if ahead.meta().kv.compacted_before == p.compacted_before {
                prop_assert_eq!(after, p.after_revision, "same rows, yet not continued");
            }
        }
        let stream = drain(export);
        let incoming = behind.incoming_path();
        let imp = if after > 0 {
            behind.copy_to(&OsFs, &incoming).unwrap();
            Import::resume(&OsFs, &incoming, 1 << 20, after).unwrap()
        } else {
            Import::create(&OsFs, &incoming, 1 << 20).unwrap()
        };
        let meta = feed_all(imp, &stream, piece).unwrap();
        prop_assert_eq!(&meta, ahead.meta());
        if behind.replace_with(&OsFs, &incoming, &cfg()).unwrap() {
            same_answers(&behind, &model)?;
            prop_assert_eq!(export_bytes(&behind), export_bytes(&ahead));
        } else {
            prop_assert_eq!(behind.meta().applied_index, ahead.meta().applied_index);
        }
    }
}

/// A state of `n` keys written twice each, with a compaction through `compact` (0: none).
fn two_generations(n: u64, compact: u64) -> Vec<Entry> {
    let mut cmds: Vec<Command> = (0..2 * n)
        .map(|i| Command::Put {
            key: format!("k{:03}", i % n).into_bytes(),
            value: vec![i as u8; 100],
        })
        .collect();
    if compact > 0 {
        cmds.push(Command::Compact { revision: compact });
    }
    log(&cmds
        .into_iter()
        .enumerate()
        .map(|(i, cmd)| {
            (
                1000 + i as u64,
                ClientCommand {
                    client_id: 1,
                    seq: i as u64 + 1,
                    cmd,
                },
            )
        })
        .collect::<Vec<_>>())
}

/// The cases the property test meets by chance, each for certain: a later compaction the
/// partial store has all the rows for is caught up on; one past its last row, or a row that
/// differs, means a whole stream; a partial store is only continued from where it ends.
#[test]
fn a_partial_store_is_continued_only_where_the_rows_agree() {
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming.redb");
    let base = two_generations(100, 0);
    let mut store = Store::open(&OsFs, &dir.path().join(STORE_FILE), &cfg()).unwrap();
    store.apply(&base, true).unwrap();
    let bytes = export_bytes(&store);
    // Through about three quarters of the rows: revision 150 or so of 200.
    let p = cut_import(&incoming, &bytes, bytes.len() * 3 / 4, true).unwrap();
    assert!(
        (100..200).contains(&p.after_revision),
        "cut at revision {}",
        p.after_revision
    );
    assert!(matches!(
        Import::resume(&OsFs, &incoming, 1 << 20, p.after_revision + 1),
        Err(ImportError::Stream(_))
    ));

    let continued = |log: &[Entry]| {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(&OsFs, &d.path().join(STORE_FILE), &cfg()).unwrap();
        s.apply(log, true).unwrap();
        let e = s.reader().unwrap().export_continuing(Some(p)).unwrap();
        (e.after_revision(), s, d)
    };
    // Compacted since, at a point the partial store holds every row for: continued, and
    // the partial store is compacted alike.
    let mut later = base.clone();
    later.extend(
        two_generations(100, 120)
            .split_off(200)
            .into_iter()
            .map(|mut e| {
                e.index = 201;
                e.term = 21;
                if let EntryPayload::Command(b) = &e.payload {
                    let mut c = LogCommand::decode(b).unwrap();
                    c.req.seq = 201;
                    e.payload = EntryPayload::Command(c.encode());
                }
                e
            }),
    );
    let (after, s, _d) = continued(&later);
    assert_eq!(after, p.after_revision, "not continued");
    assert_eq!(s.meta().kv.compacted_before, 120);
    let imp = Import::resume(&OsFs, &incoming, 1 << 20, after).unwrap();
    let stream = drain(s.reader().unwrap().export_continuing(Some(p)).unwrap());
    let meta = feed_all(imp, &stream, 50).unwrap();
    assert_eq!(&meta, s.meta());
    let mut other = Store::open(&OsFs, &dir.path().join("other.redb"), &cfg()).unwrap();
    assert!(other.replace_with(&OsFs, &incoming, &cfg()).unwrap());
    assert_eq!(export_bytes(&other), export_bytes(&s));

    // A compaction past the partial store's last row: whole.
    let mut past = p;
    past.after_revision = 110;
    past.row_crc = 0;
    let (after, _, _d) = continued(&later);
    assert!(after > 0);
    let d = tempfile::tempdir().unwrap();
    let mut s = Store::open(&OsFs, &d.path().join(STORE_FILE), &cfg()).unwrap();
    s.apply(&later, true).unwrap();
    let e = s.reader().unwrap().export_continuing(Some(past)).unwrap();
    assert_eq!(
        (e.after_revision(), e.resume_considered()),
        (0, true),
        "continued past a compaction it lacks"
    );
    // The same compaction point but another row there: whole.
    let mut other_row = p;
    other_row.row_crc ^= 1;
    let (after, _, _d) = {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(&OsFs, &d.path().join(STORE_FILE), &cfg()).unwrap();
        s.apply(&base, true).unwrap();
        let e = s
            .reader()
            .unwrap()
            .export_continuing(Some(other_row))
            .unwrap();
        (e.after_revision(), s, d)
    };
    assert_eq!(after, 0, "continued from a row that differs");
}

/// A power cut in the middle of an import leaves a partial store that is either dropped
/// or continues from a point within what was synced, and continuing it gives the sender's
/// state exactly.
#[test]
fn a_power_cut_during_an_import_leaves_a_store_to_continue() {
    let src_dir = tempfile::tempdir().unwrap();
    let mut src = Store::open(&OsFs, &src_dir.path().join(STORE_FILE), &cfg()).unwrap();
    src.apply(&two_generations(300, 250), true).unwrap();
    let bytes = export_bytes(&src);
    let dir = Path::new("/sim");
    let (mut continued, mut dropped) = (0, 0);
    for seed in 0..40u64 {
        let fs = SimFs::new(seed);
        fs.create_dir_all(dir).unwrap();
        let incoming = dir.join("incoming.redb");
        let mut imp = Import::create(&fs, &incoming, 1 << 20)
            .unwrap()
            .checkpoint_every(4_000);
        fs.arm(1 + seed * 11, Fault::Crash);
        for piece in bytes.chunks(700) {
            if imp.feed(piece).is_err() {
                break;
            }
        }
        drop(imp);
        assert!(!fs.fired().is_empty(), "seed {seed}: no crash");
        fs.power_cut();
        let Some(p) = Import::resume_point(&fs, &incoming, 1 << 20)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
        else {
            dropped += 1;
            continue;
        };
        let export = src.reader().unwrap().export_continuing(Some(p)).unwrap();
        assert_eq!(export.after_revision(), p.after_revision, "seed {seed}");
        let imp = Import::resume(&fs, &incoming, 1 << 20, p.after_revision)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let meta =
            feed_all(imp, &drain(export), 333).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(&meta, src.meta(), "seed {seed}");
        let mut store = Store::open(&fs, &dir.join(STORE_FILE), &cfg()).unwrap();
        assert!(store.replace_with(&fs, &incoming, &cfg()).unwrap());
        assert_eq!(export_bytes(&store), bytes, "seed {seed}");
        continued += 1;
    }
    eprintln!("{continued} continued, {dropped} dropped");
    assert!(continued >= 20, "{continued} continued, {dropped} dropped");
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
            let (model, _) = model_of(&log[..at as usize]);
            same_answers(&store, &model)
                .unwrap_or_else(|e| panic!("seed {seed}, crash at {crash_at:?}: {e}"));
        }
    }
    eprintln!("{crashes} crashes, {mid_sync} during a synced commit");
    assert!(
        crashes >= 36 && mid_sync >= 10,
        "{crashes} crashes, {mid_sync} during a sync"
    );
}

/// A crash at any step of bringing a store up to date from a stream, whole or continuing
/// a copy of the store itself, leaves after the power cut the old state or the new one,
/// never a mix, and a store that opens. Every step is tried, the swap's rename among them.
#[test]
fn a_crash_at_any_step_of_an_install_leaves_the_old_state_or_the_new() {
    let log = two_generations(300, 0);
    let old_len = 400;
    let src_dir = tempfile::tempdir().unwrap();
    let mut src = Store::open(&OsFs, &src_dir.path().join(STORE_FILE), &cfg()).unwrap();
    src.apply(&log[..old_len], true).unwrap();
    let old_bytes = export_bytes(&src);
    src.apply(&log[old_len..], true).unwrap();
    let new_bytes = export_bytes(&src);
    let dir = Path::new("/sim");
    for continued in [false, true] {
        let (mut olds, mut news, mut renames) = (0, 0, 0);
        for step in 1u64.. {
            let fs = SimFs::new(step);
            fs.create_dir_all(dir).unwrap();
            let path = dir.join(STORE_FILE);
            let mut store = Store::open(&fs, &path, &cfg()).unwrap();
            store.apply(&log[..old_len], true).unwrap();
            let point = if continued {
                store.resume_point().unwrap()
            } else {
                None
            };
            let export = src.reader().unwrap().export_continuing(point).unwrap();
            let after = export.after_revision();
            assert_eq!(after > 0, continued, "step {step}");
            let stream = drain(export);
            let incoming = store.incoming_path();
            fs.arm(step, Fault::Crash);
            let installed = (|| -> Result<bool, String> {
                let imp = if continued {
                    store.copy_to(&fs, &incoming).map_err(|e| e.to_string())?;
                    Import::resume(&fs, &incoming, 1 << 20, after).map_err(|e| e.to_string())?
                } else {
                    Import::create(&fs, &incoming, 1 << 20).map_err(|e| e.to_string())?
                };
                feed_all(imp, &stream, 4096).map_err(|e| e.to_string())?;
                store
                    .replace_with(&fs, &incoming, &cfg())
                    .map_err(|e| e.to_string())
            })();
            let fired = fs.fired();
            drop(store);
            fs.power_cut();
            let store = Store::open(&fs, &path, &cfg())
                .unwrap_or_else(|e| panic!("continued {continued}, step {step}: {e}"));
            let bytes = export_bytes(&store);
            if bytes == new_bytes {
                news += 1;
            } else {
                assert!(
                    bytes == old_bytes,
                    "continued {continued}, step {step}: neither the old state nor the new"
                );
                olds += 1;
            }
            renames += usize::from(fired.iter().any(|f| f.contains("rename")));
            if fired.is_empty() {
                assert_eq!(installed, Ok(true), "continued {continued}, step {step}");
                break;
            }
        }
        assert!(
            olds > 0 && news > 0 && renames > 0,
            "continued {continued}: {olds} old, {news} new, {renames} crashes at a rename"
        );
    }
}

/// Not a test: how fast a stream imports fresh and into a copy of a large store
/// (`cargo test --release -p myraft-node --lib import_rates -- --ignored --nocapture`).
#[test]
#[ignore]
fn import_rates() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let cmds = |from: u64, to: u64| -> Vec<(u64, ClientCommand)> {
        (from..to)
            .map(|i| {
                (
                    1000 + i,
                    ClientCommand {
                        client_id: 1,
                        seq: i + 1,
                        cmd: Command::Put {
                            key: format!("bench-seq-{i:06}").into_bytes(),
                            value: vec![i as u8; 256],
                        },
                    },
                )
            })
            .collect()
    };
    // The delta a follower stopped under load misses: new keys, or (OVERWRITE=1, as a
    // second run of `myraft bench --sequential-keys` does) the first keys written again.
    let overwrite = std::env::var("OVERWRITE").is_ok_and(|v| v == "1");
    let mut first = cmds(0, n);
    let more = if overwrite {
        cmds(0, n / 4)
    } else {
        cmds(n, n + n / 5)
    };
    let base = first.len() as u64;
    first.extend(more.into_iter().enumerate().map(|(j, (_, mut c))| {
        c.seq = base + j as u64 + 1;
        (1000 + base + j as u64, c)
    }));
    let all = log(&first);
    let dir = tempfile::tempdir().unwrap();
    let big = StoreConfig {
        cache_bytes: 64 << 20,
        ..cfg()
    };
    let mut leader = Store::open(&OsFs, &dir.path().join("leader.redb"), &big).unwrap();
    for c in all.chunks(1000) {
        leader.apply(c, false).unwrap();
    }
    leader.apply(&[], true).unwrap();
    let mut behind = Store::open(&OsFs, &dir.path().join(STORE_FILE), &big).unwrap();
    for c in all[..n as usize].chunks(1000) {
        behind.apply(c, false).unwrap();
    }
    behind.apply(&[], true).unwrap();

    let whole = drain(leader.reader().unwrap().export().unwrap());
    let t = std::time::Instant::now();
    let imp = Import::create(&OsFs, &dir.path().join("fresh.redb"), 64 << 20).unwrap();
    feed_all(imp, &whole, 10 << 10).unwrap();
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "fresh: {} MB in {s:.2} s = {:.1} MB/s",
        whole.len() >> 20,
        whole.len() as f64 / s / 1e6
    );

    let p = behind.resume_point().unwrap();
    let delta = drain(leader.reader().unwrap().export_continuing(p).unwrap());
    let t = std::time::Instant::now();
    let incoming = behind.incoming_path();
    behind.copy_to(&OsFs, &incoming).unwrap();
    let c = t.elapsed().as_secs_f64();
    let imp = Import::resume(&OsFs, &incoming, 64 << 20, p.unwrap().after_revision).unwrap();
    let o = t.elapsed().as_secs_f64() - c;
    let t = std::time::Instant::now();
    let feed: usize = std::env::var("FEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10 << 10);
    feed_all(imp, &delta, feed).unwrap();
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "continued: copy {c:.2} s, open {o:.2} s, {} MB in {s:.2} s = {:.1} MB/s",
        delta.len() >> 20,
        delta.len() as f64 / s / 1e6
    );
}
