//! Tests of both stores, of crash recovery and of the data-dir lock.
//!
//! Randomised tests print their seed and take `MYRAFT_SEED=<u64>` to replay one.

#![allow(clippy::unwrap_used)]

use super::*;
use myraft_wire::raft::{EntryPayload, Membership};
use std::fs;
use std::path::Path;

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Command(format!("value-{index}-{term}").into_bytes()),
    }
}

fn entries(lo: Index, hi: Index, term: Term) -> Vec<Entry> {
    (lo..hi).map(|i| entry(i, term)).collect()
}

fn snapshot_at(index: Index, term: Term) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: index,
            last_term: term,
            membership: Membership::default(),
        },
        data: format!("state through {index}").into_bytes(),
    }
}

/// A temporary directory, in memory where the system has one: these tests simulate their
/// crashes themselves, so a real fsync (milliseconds on a busy disk, hundreds of them per
/// test) would only make them slow.
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

fn open(dir: &Path) -> (DiskStorage, RecoveryReport) {
    DiskStorage::open(dir, DiskOptions::default()).unwrap()
}

fn open_small(dir: &Path, segment_size: u64) -> (DiskStorage, RecoveryReport) {
    DiskStorage::open(dir, DiskOptions::with_segment_size(segment_size)).unwrap()
}

fn all_entries(s: &impl Storage) -> Vec<Entry> {
    s.entries(s.first_index(), s.last_index() + 1).unwrap()
}

/// A seed from `MYRAFT_SEED`, or a fixed one; printed so a failure can be replayed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("MYRAFT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d);
    eprintln!("{test}: MYRAFT_SEED={seed}");
    seed
}

/// splitmix64: enough randomness for picking bytes to damage, with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for item in fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            fs::copy(item.path(), target).unwrap();
        }
    }
}

fn flip_bit(path: &Path, byte: u64, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[byte as usize] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------------------------------
// The log's rules, checked on both stores.

fn check_log_rules(s: &mut impl Storage) {
    assert_eq!((s.first_index(), s.last_index()), (1, 0));
    assert_eq!(s.term(0), Some(0));
    assert_eq!(s.hard_state(), HardState::default());

    s.append(&entries(1, 6, 1)).unwrap();
    assert_eq!(s.last_index(), 5);
    assert_eq!(s.term(3), Some(1));
    assert_eq!(s.term(6), None);
    assert_eq!(s.entries(2, 4).unwrap(), entries(2, 4, 1));
    assert_eq!(s.entries(3, 3).unwrap(), vec![]);
    assert!(matches!(
        s.entries(2, 8),
        Err(StorageError::Unavailable { last_index: 5, .. })
    ));

    // A conflicting append replaces the suffix from its first index.
    s.append(&entries(4, 8, 2)).unwrap();
    assert_eq!(s.last_index(), 7);
    assert_eq!(s.term(3), Some(1));
    assert_eq!(s.term(4), Some(2));

    // Gaps and non-consecutive batches are refused and change nothing.
    assert!(matches!(
        s.append(&entries(9, 10, 2)),
        Err(StorageError::OutOfOrder {
            expected: 8,
            got: 9
        })
    ));
    assert!(s.append(&[entry(8, 2), entry(10, 2)]).is_err());
    assert_eq!(s.last_index(), 7);

    s.truncate_suffix(6).unwrap();
    assert_eq!(s.last_index(), 5);
    s.truncate_suffix(10).unwrap();
    assert_eq!(s.last_index(), 5);

    let hs = HardState {
        term: 2,
        vote: Some(7),
        commit: 3,
    };
    s.save_hard_state(&hs).unwrap();
    s.sync().unwrap();
    assert_eq!(s.hard_state(), hs);

    // Compaction needs a snapshot that covers it.
    assert!(matches!(
        s.compact_prefix(3),
        Err(StorageError::NotCovered {
            through: 3,
            snapshot_index: 0
        })
    ));
    s.save_snapshot(&snapshot_at(3, 1)).unwrap();
    assert_eq!(s.first_index(), 1, "a matching snapshot keeps the log");
    s.compact_prefix(3).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (4, 5));
    assert_eq!(s.term(3), Some(1));
    assert_eq!(s.term(2), None);
    assert!(matches!(
        s.entries(2, 5),
        Err(StorageError::Compacted { first_index: 4, .. })
    ));
    assert!(s.truncate_suffix(3).is_err());
    assert!(s.append(&entries(3, 4, 2)).is_err());
    assert!(matches!(
        s.save_snapshot(&snapshot_at(2, 1)),
        Err(StorageError::StaleSnapshot {
            index: 2,
            current: 3
        })
    ));

    // A snapshot the log disagrees with replaces the whole log.
    s.save_snapshot(&snapshot_at(9, 3)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (10, 9));
    assert_eq!(s.term(9), Some(3));
    assert_eq!(s.snapshot().unwrap().unwrap(), snapshot_at(9, 3));
    s.append(&entries(10, 12, 3)).unwrap();
    assert_eq!(all_entries(s), entries(10, 12, 3));
    s.sync().unwrap();
}

#[test]
fn storage_mem_follows_the_log_rules() {
    check_log_rules(&mut MemStorage::new());
}

#[test]
fn storage_disk_follows_the_log_rules_and_keeps_them_across_restart() {
    let dir = tempdir();
    let (mut s, report) = open(dir.path());
    assert_eq!(report.truncated_bytes, 0);
    check_log_rules(&mut s);
    let before = (
        all_entries(&s),
        s.hard_state(),
        s.snapshot_meta(),
        s.term(9),
    );
    drop(s);
    let (s, report) = open(dir.path());
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(
        (
            all_entries(&s),
            s.hard_state(),
            s.snapshot_meta(),
            s.term(9)
        ),
        before
    );
    assert_eq!(s.snapshot().unwrap().unwrap(), snapshot_at(9, 3));
    assert!(s.log_bytes() > 0);
}

// ---------------------------------------------------------------------------------------
// Crash recovery.

/// The log and hard state a store shows.
type State = (Vec<Entry>, HardState);

fn state(s: &impl Storage) -> State {
    (all_entries(s), s.hard_state())
}

/// Every cut at every byte of the last records: what comes back is exactly the state after
/// the last whole record before the cut (for a cut inside a batch, the state before it plus
/// a prefix of the batch), and the log keeps working afterwards.
#[test]
fn storage_crash_cut_at_every_byte_of_the_tail_recovers_a_synced_prefix() {
    let dir = tempdir();
    let (mut s, _) = open(dir.path());
    s.append(&entries(1, 30, 1)).unwrap();
    s.sync().unwrap();
    let seg = s.segment_paths()[0].clone();
    let tail_start = fs::metadata(&seg).unwrap().len();

    // (segment length after the step was synced, state then, batch written by the step)
    let mut steps: Vec<(u64, State, Vec<Entry>)> = vec![(tail_start, state(&s), vec![])];
    let mut step = |s: &mut DiskStorage, batch: Vec<Entry>| {
        s.sync().unwrap();
        steps.push((fs::metadata(&seg).unwrap().len(), state(s), batch));
    };
    s.append(&[entry(30, 1)]).unwrap();
    step(&mut s, vec![]);
    s.save_hard_state(&HardState {
        term: 2,
        vote: Some(3),
        commit: 28,
    })
    .unwrap();
    step(&mut s, vec![]);
    s.truncate_suffix(29).unwrap();
    step(&mut s, vec![]);
    let batch = entries(29, 33, 2);
    s.append(&batch).unwrap();
    step(&mut s, batch);
    s.append(&[entry(31, 3)]).unwrap();
    step(&mut s, vec![]);
    drop(s);

    let end = steps.last().unwrap().0;
    let scratch = tempdir();
    for cut in tail_start..=end {
        let copy = scratch.path().join(format!("cut-{cut}"));
        copy_dir(dir.path(), &copy);
        let seg_copy = copy.join("wal").join(seg.file_name().unwrap());
        fs::OpenOptions::new()
            .write(true)
            .open(&seg_copy)
            .unwrap()
            .set_len(cut)
            .unwrap();

        let (mut r, report) = open(&copy);
        let k = steps.iter().rposition(|(len, _, _)| *len <= cut).unwrap();
        let (len_k, ref state_k, _) = steps[k];
        let got = state(&r);
        if cut == len_k {
            assert_eq!(got, *state_k, "cut at byte {cut}");
            assert_eq!(report.truncated_bytes, 0);
        } else {
            // Inside step k+1: a partial batch may survive, record by record.
            let (_, _, ref batch) = steps[k + 1];
            assert_eq!(got.1, state_k.1, "hard state, cut at byte {cut}");
            let kept = got.0.len() as i64 - state_k.0.len() as i64;
            if batch.is_empty() || kept <= 0 {
                assert_eq!(got, *state_k, "cut at byte {cut}");
            } else {
                let mut want = state_k.0.clone();
                want.truncate((batch[0].index - 1) as usize);
                want.extend_from_slice(&batch[..got.0.len() - want.len()]);
                assert_eq!(got.0, want, "cut at byte {cut}");
            }
            // A cut between two whole records of a batch leaves nothing torn.
            if report.truncated_bytes > 0 {
                assert_eq!(
                    report.truncated_at.as_ref().unwrap().0,
                    seg_copy,
                    "cut at byte {cut}"
                );
            } else {
                assert!(!batch.is_empty(), "cut at byte {cut}");
            }
        }

        // Nothing torn may be left for the next append to bury.
        let next = r.last_index() + 1;
        r.append(&[entry(next, 9)]).unwrap();
        r.sync().unwrap();
        let expect = state(&r);
        drop(r);
        let (r, report) = open(&copy);
        assert_eq!(report.truncated_bytes, 0, "cut at byte {cut}");
        assert_eq!(state(&r), expect, "cut at byte {cut}");
        fs::remove_dir_all(&copy).unwrap();
    }
}

/// Writes entries 1..=20 one record each and returns the segment with each record's
/// (offset, length).
fn twenty_records(dir: &Path) -> (PathBuf, Vec<(u64, u64)>) {
    let (mut s, _) = open(dir);
    let seg = s.segment_paths()[0].clone();
    let mut records = Vec::new();
    for i in 1..=20 {
        let before = fs::metadata(&seg).unwrap().len();
        s.append(&[entry(i, 1)]).unwrap();
        s.sync().unwrap();
        records.push((before, fs::metadata(&seg).unwrap().len() - before));
    }
    (seg, records)
}

#[test]
fn storage_bit_flip_in_the_last_record_is_cut_off() {
    let mut rng = Rng(seed("storage_bit_flip_in_the_last_record_is_cut_off"));
    let dir = tempdir();
    let (seg, records) = twenty_records(dir.path());
    let (offset, len) = *records.last().unwrap();
    let scratch = tempdir();
    for round in 0..40 {
        let copy = scratch.path().join(format!("flip-{round}"));
        copy_dir(dir.path(), &copy);
        let seg_copy = copy.join("wal").join(seg.file_name().unwrap());
        let at = offset + rng.below(len);
        flip_bit(&seg_copy, at, rng.below(8) as u8);
        let (s, report) = open(&copy);
        assert_eq!(s.last_index(), 19, "flip at byte {at}");
        assert_eq!(report.truncated_bytes, len, "flip at byte {at}");
        assert_eq!(
            report.truncated_at.as_ref().map(|t| (&t.0, t.1)),
            Some((&seg_copy, offset))
        );
        assert_eq!(fs::metadata(&seg_copy).unwrap().len(), offset);
        fs::remove_dir_all(&copy).unwrap();
    }
}

/// A put whose value is itself a log frame (a backup of a log, say) is torn by a crash past
/// that embedded frame: the whole frame in the torn bytes lies inside the torn record, so it
/// is no sign of damage in the middle of the log.
#[test]
fn storage_torn_tail_holding_a_whole_frame_in_its_value_is_cut_off() {
    let dir = tempdir();
    let (mut s, _) = open(dir.path());
    s.append(&entries(1, 6, 1)).unwrap();
    s.sync().unwrap();
    let seg = s.segment_paths()[0].clone();
    let offset = fs::metadata(&seg).unwrap().len();
    let mut frame = Vec::new();
    record::encode_into(&mut frame, &record::RecordRef::Entry(&entry(1, 1))).unwrap();
    let mut value = b"prefix".to_vec();
    value.extend_from_slice(&frame);
    value.extend_from_slice(&[0xA5; 32]);
    s.append(&[Entry {
        term: 1,
        index: 6,
        payload: EntryPayload::Command(value),
    }])
    .unwrap();
    s.sync().unwrap();
    drop(s);

    let bytes = fs::read(&seg).unwrap();
    let inside = bytes[offset as usize..]
        .windows(frame.len())
        .position(|w| w == frame.as_slice())
        .unwrap() as u64;
    let cut = offset + inside + frame.len() as u64 + 16;
    assert!(cut < bytes.len() as u64);
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let (s, report) = match DiskStorage::open(dir.path(), DiskOptions::default()) {
        Ok(ok) => ok,
        Err(e) => panic!("a torn tail must open: {e}"),
    };
    assert_eq!(all_entries(&s), entries(1, 6, 1));
    assert_eq!(report.truncated_bytes, cut - offset);
    assert_eq!(
        report.truncated_at.as_ref().map(|t| (&t.0, t.1)),
        Some((&seg, offset))
    );
}

#[test]
fn storage_bit_flip_in_a_middle_record_is_an_error_naming_file_and_offset() {
    let mut rng = Rng(seed(
        "storage_bit_flip_in_a_middle_record_is_an_error_naming_file_and_offset",
    ));
    let dir = tempdir();
    let (seg, records) = twenty_records(dir.path());
    let scratch = tempdir();
    for round in 0..40 {
        let copy = scratch.path().join(format!("flip-{round}"));
        copy_dir(dir.path(), &copy);
        let seg_copy = copy.join("wal").join(seg.file_name().unwrap());
        let (offset, len) = records[rng.below(records.len() as u64 - 1) as usize];
        let at = offset + rng.below(len);
        flip_bit(&seg_copy, at, rng.below(8) as u8);
        let before = fs::read(&seg_copy).unwrap();
        match DiskStorage::open(&copy, DiskOptions::default()) {
            Err(StorageError::Corrupt {
                path,
                offset: bad_at,
                ..
            }) => {
                assert_eq!((path, bad_at), (seg_copy.clone(), offset), "flip at {at}");
            }
            other => panic!("flip at byte {at}: expected Corrupt, got {other:?}"),
        }
        let err = DiskStorage::open(&copy, DiskOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&seg_copy.display().to_string()) && err.contains(&offset.to_string()),
            "{err}"
        );
        assert_eq!(
            fs::read(&seg_copy).unwrap(),
            before,
            "a failed open must not change the log"
        );
        fs::remove_dir_all(&copy).unwrap();
    }
}

#[test]
fn storage_damage_in_an_earlier_segment_is_an_error() {
    let dir = tempdir();
    let (mut s, _) = open_small(dir.path(), 300);
    for i in 1..=40 {
        s.append(&[entry(i, 1)]).unwrap();
    }
    s.sync().unwrap();
    let segs = s.segment_paths();
    assert!(segs.len() >= 3, "{segs:?}");
    drop(s);
    let first = &segs[0];
    let len = fs::metadata(first).unwrap().len();
    flip_bit(first, len - 1, 0);
    match DiskStorage::open(dir.path(), DiskOptions::with_segment_size(300)) {
        Err(StorageError::Corrupt { path, reason, .. }) => {
            assert_eq!(&path, first);
            assert!(reason.contains("not the last"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn storage_missing_segment_is_an_error() {
    let dir = tempdir();
    let (mut s, _) = open_small(dir.path(), 300);
    s.append(&entries(1, 60, 1)).unwrap();
    for i in 60..=80 {
        s.append(&[entry(i, 1)]).unwrap();
    }
    s.sync().unwrap();
    let segs = s.segment_paths();
    drop(s);
    fs::remove_file(&segs[1]).unwrap();
    let err = DiskStorage::open(dir.path(), DiskOptions::with_segment_size(300)).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    // Losing the oldest segment, which no compaction made useless, is caught too.
    fs::remove_file(&segs[0]).unwrap();
    for (i, seg) in segs.iter().enumerate().skip(2) {
        fs::rename(seg, &segs[i - 2]).unwrap();
    }
    let err = DiskStorage::open(dir.path(), DiskOptions::with_segment_size(300)).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------
// Segments, snapshots and compaction.

#[test]
fn storage_segments_roll_over_and_replay_in_order() {
    let dir = tempdir();
    let (mut s, _) = open_small(dir.path(), 512);
    for i in 1..=100 {
        s.append(&[entry(i, 1 + i / 40)]).unwrap();
        if i % 10 == 0 {
            s.save_hard_state(&HardState {
                term: 1 + i / 40,
                vote: Some(1),
                commit: i - 5,
            })
            .unwrap();
            s.sync().unwrap();
        }
    }
    s.truncate_suffix(95).unwrap();
    s.sync().unwrap();
    let segs = s.segment_paths();
    assert!(segs.len() > 5, "{segs:?}");
    for seg in &segs {
        assert!(fs::metadata(seg).unwrap().len() <= 512, "{seg:?}");
    }
    assert_eq!(
        s.log_bytes(),
        segs.iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum::<u64>()
    );
    let before = state(&s);
    drop(s);
    let (s, report) = open_small(dir.path(), 512);
    assert_eq!(report.segments, segs.len());
    assert_eq!(state(&s), before);
    assert_eq!(s.last_index(), 94);
    // A single write larger than a segment still goes in whole.
    let (mut s, _) = (s, ());
    s.append(&entries(95, 200, 3)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (s, _) = open_small(dir.path(), 512);
    assert_eq!(s.last_index(), 199);
}

#[test]
fn storage_snapshot_and_compaction_free_segments_and_survive_restart() {
    let dir = tempdir();
    let (mut s, _) = open_small(dir.path(), 400);
    for i in 1..=100 {
        s.append(&[entry(i, 2)]).unwrap();
    }
    s.save_hard_state(&HardState {
        term: 2,
        vote: Some(1),
        commit: 90,
    })
    .unwrap();
    s.sync().unwrap();
    let segments_before = s.segment_paths().len();
    let bytes_before = s.log_bytes();

    s.save_snapshot(&snapshot_at(80, 2)).unwrap();
    s.compact_prefix(80).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (81, 100));
    assert!(s.segment_paths().len() < segments_before);
    assert!(s.log_bytes() < bytes_before);
    assert!(
        !s.segment_paths()[0].ends_with("00000000000000000001.seg"),
        "the oldest segment should be gone"
    );
    // Appends and truncations after the compaction replay on top of the remaining segments.
    s.truncate_suffix(95).unwrap();
    s.append(&entries(95, 120, 3)).unwrap();
    s.sync().unwrap();
    let before = (state(&s), s.term(80), s.first_index());
    drop(s);

    let (mut s, _) = open_small(dir.path(), 400);
    assert_eq!((state(&s), s.term(80), s.first_index()), before);
    assert_eq!(s.snapshot().unwrap().unwrap(), snapshot_at(80, 2));
    s.save_snapshot(&snapshot_at(110, 3)).unwrap();
    s.compact_prefix(110).unwrap();
    drop(s);
    let (s, _) = open_small(dir.path(), 400);
    assert_eq!((s.first_index(), s.last_index()), (111, 119));
    assert_eq!(s.term(110), Some(3));
}

/// After compaction deletes old segments, the oldest one left may record an overwrite that
/// reaches below its own start; replay must still rebuild the log.
#[test]
fn storage_replay_after_segment_deletion_handles_overwrites_reaching_below_it() {
    let dir = tempdir();
    let (mut s, _) = open_small(dir.path(), 300);
    for i in 1..=30 {
        s.append(&[entry(i, 1)]).unwrap();
    }
    s.sync().unwrap();
    // A new leader overwrites 20.. while the active segment began after entry 20.
    s.append(&entries(20, 23, 2)).unwrap();
    s.truncate_suffix(22).unwrap();
    for i in 22..=40 {
        s.append(&[entry(i, 2)]).unwrap();
    }
    s.sync().unwrap();
    s.save_snapshot(&snapshot_at(36, 2)).unwrap();
    s.compact_prefix(36).unwrap();
    let left = s.segment_paths();
    assert!(
        !left[0].ends_with("00000000000000000001.seg"),
        "old segments should be gone: {left:?}"
    );
    let before = (state(&s), s.term(36));
    drop(s);
    let (s, report) = open_small(dir.path(), 300);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!((state(&s), s.term(36)), before);
    assert_eq!(all_entries(&s), entries(37, 41, 2));
}

#[test]
fn storage_snapshot_from_a_leader_replaces_a_disagreeing_log_even_after_a_crash() {
    let dir = tempdir();
    let (mut s, _) = open(dir.path());
    s.append(&entries(1, 10, 1)).unwrap();
    s.sync().unwrap();
    s.save_snapshot(&snapshot_at(20, 4)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (21, 20));
    // The snapshot file is durable on return; the log's reset record was never synced.
    let dir_path = s.crash();
    let (mut s, _) = open(&dir_path);
    assert_eq!((s.first_index(), s.last_index()), (21, 20));
    assert_eq!(s.term(20), Some(4));
    s.append(&entries(21, 25, 4)).unwrap();
    s.sync().unwrap();
    // Later segments' checkpoints must agree with the reconciled log.
    drop(s);
    let (s, _) = open(&dir_path);
    assert_eq!(all_entries(&s), entries(21, 25, 4));
}

/// A node's own snapshot leaves the log as it is until `compact_prefix`; a crash in between
/// (or a compaction that failed on a full disk) must not leave a log that starts below the
/// snapshot it reports.
#[test]
fn storage_crash_between_own_snapshot_and_compaction_starts_the_log_after_the_snapshot() {
    let dir = tempdir();
    let (mut s, _) = open(dir.path());
    s.append(&entries(1, 21, 1)).unwrap();
    s.sync().unwrap();
    s.save_snapshot(&snapshot_at(10, 1)).unwrap();
    assert_eq!(s.first_index(), 1, "the log waits for compact_prefix");
    let dir_path = s.crash();
    let (s, _) = open(&dir_path);
    assert_eq!((s.first_index(), s.last_index()), (11, 20));
    assert_eq!(s.term(10), Some(1));
    assert_eq!(all_entries(&s), entries(11, 21, 1));
}

/// A failed fsync stops the node; restarted without a power cut, it reads back writes that
/// are only in the page cache. Whatever it then builds on them (a new segment whose
/// checkpoint counts them, a compaction to a snapshot whose rename was never made durable)
/// must not outlive them: after a later power cut the store must still open.
#[test]
fn storage_restart_after_a_failed_sync_does_not_build_on_unsynced_writes() {
    for (fault_at, what) in [(2, "segment sync"), (3, "snapshot dir sync")] {
        let fs = SimFs::new(fault_at);
        let opts = DiskOptions {
            segment_size: 300,
            vfs: std::sync::Arc::new(fs.clone()),
        };
        let dir = Path::new("/data/raft");
        {
            let (mut s, _) = DiskStorage::open(dir, opts.clone()).unwrap();
            s.append(&entries(1, 4, 1)).unwrap();
            s.sync().unwrap();
            s.append(&entries(4, 6, 1)).unwrap();
            if what == "segment sync" {
                fs.arm(fault_at - 1, Fault::Io);
                assert!(s.sync().is_err(), "{what}: the armed fault fires");
            } else {
                // The snapshot file: create, write, sync, rename, then the dir sync fails.
                s.sync().unwrap();
                fs.arm(5, Fault::Io);
                assert!(s.save_snapshot(&snapshot_at(5, 1)).is_err(), "{what}");
            }
        }
        // The node restarts on the same machine: the page cache still holds everything.
        {
            let (mut s, _) = DiskStorage::open(dir, opts.clone()).unwrap();
            let last = s.last_index();
            // Enough to roll into new segments, and to compact if a snapshot was read back.
            s.append(&entries(last + 1, last + 30, 1)).unwrap();
            s.sync().unwrap();
            if let Some(meta) = s.snapshot_meta() {
                s.compact_prefix(meta.last_index).unwrap();
            }
        }
        fs.power_cut();
        if let Err(e) = DiskStorage::open(dir, opts) {
            panic!("{what}: after the power cut the store does not open: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Failures.

#[test]
fn storage_failed_write_leaves_no_half_record() {
    let dir = tempdir();
    let (mut s, _) = open(dir.path());
    s.append(&entries(1, 5, 1)).unwrap();
    s.sync().unwrap();
    let seg = s.segment_paths()[0].clone();
    let len = fs::metadata(&seg).unwrap().len();

    s.fail_next_write_after(13);
    let err = s.append(&entries(5, 9, 1)).unwrap_err();
    match &err {
        StorageError::Io { path, op, source } => {
            assert_eq!(path, &seg);
            assert_eq!(*op, "write");
            assert_eq!(source.raw_os_error(), Some(28));
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(err.to_string().contains(&seg.display().to_string()));
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    assert_eq!(s.last_index(), 4, "memory must not run ahead of the disk");
    assert!(!s.is_failed());

    // The store goes on, and what it writes next replays cleanly.
    s.append(&entries(5, 7, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (s, report) = open(dir.path());
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(all_entries(&s), entries(1, 7, 1));
}

#[test]
fn storage_unusable_dir_is_a_clear_error() {
    let dir = tempdir();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let err = DiskStorage::open(&file, DiskOptions::default()).unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");

    let err = lock_data_dir(&file).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn storage_data_dir_lock_is_exclusive() {
    let dir = tempdir();
    let lock = lock_data_dir(dir.path()).unwrap();
    let err = lock_data_dir(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            StorageError::Lock(myraft_wire::util::LockError::Locked { .. })
        ),
        "{err:?}"
    );
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("another myraft-node"), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    drop(lock);
    lock_data_dir(dir.path()).unwrap();
}

// ---------------------------------------------------------------------------------------
// The model test: random operations, restarts and crashes against a Vec and a HardState.

mod model {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    #[derive(Debug, Clone)]
    enum Op {
        /// Append `count` entries starting `back` entries below the end.
        Append {
            back: u64,
            count: u64,
            new_term: bool,
        },
        TruncateSuffix {
            back: u64,
        },
        HardState {
            new_term: bool,
            vote: Option<u64>,
        },
        Sync,
        /// Snapshot at `back` entries below the end, then compact through it.
        Compact {
            back: u64,
        },
        /// Close and reopen: everything written is still there.
        Restart,
        /// Power cut: only what was synced is.
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..4u64, 1..6u64, any::<bool>())
                .prop_map(|(back, count, new_term)| Op::Append { back, count, new_term }),
            1 => (0..5u64).prop_map(|back| Op::TruncateSuffix { back }),
            2 => (any::<bool>(), proptest::option::of(0..4u64))
                .prop_map(|(new_term, vote)| Op::HardState { new_term, vote }),
            3 => Just(Op::Sync),
            1 => (0..6u64).prop_map(|back| Op::Compact { back }),
            1 => Just(Op::Restart),
            1 => Just(Op::Crash),
        ]
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Model {
        base: (Index, Term),
        log: Vec<Entry>,
        hs: HardState,
    }

    impl Model {
        fn last(&self) -> Index {
            self.base.0 + self.log.len() as u64
        }

        fn term(&self, index: Index) -> Term {
            if index == self.base.0 {
                self.base.1
            } else {
                self.log[(index - self.base.0 - 1) as usize].term
            }
        }

        fn max_term(&self) -> Term {
            self.log
                .iter()
                .map(|e| e.term)
                .chain([self.base.1, self.hs.term])
                .max()
                .unwrap_or(0)
        }
    }

    fn observe(s: &DiskStorage) -> Model {
        Model {
            base: (s.first_index() - 1, s.term(s.first_index() - 1).unwrap()),
            log: all_entries(s),
            hs: s.hard_state(),
        }
    }

    const SEGMENT: u64 = 300;

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let dir = tempdir();
        let (mut s, _) = open_small(dir.path(), SEGMENT);
        let mut m = Model {
            base: (0, 0),
            log: vec![],
            hs: HardState::default(),
        };
        // Every state since the last sync: a crash may leave any one of them.
        let mut since_sync = vec![m.clone()];
        for op in ops {
            match op {
                Op::Append {
                    back,
                    count,
                    new_term,
                } => {
                    let start = (m.last() + 1).saturating_sub(back).max(m.base.0 + 1);
                    let term = m.max_term() + u64::from(new_term);
                    let batch: Vec<Entry> =
                        (start..start + count).map(|i| entry(i, term)).collect();
                    s.append(&batch).unwrap();
                    m.log.truncate((start - m.base.0 - 1) as usize);
                    m.log.extend(batch);
                }
                Op::TruncateSuffix { back } => {
                    let from = (m.last() + 1).saturating_sub(back);
                    if from <= m.base.0 {
                        prop_assert!(s.truncate_suffix(from).is_err());
                    } else {
                        s.truncate_suffix(from).unwrap();
                        m.log.truncate((from - m.base.0 - 1) as usize);
                    }
                }
                Op::HardState { new_term, vote } => {
                    m.hs = HardState {
                        term: m.hs.term + u64::from(new_term),
                        vote,
                        commit: m.last() / 2,
                    };
                    s.save_hard_state(&m.hs).unwrap();
                }
                Op::Sync => {
                    s.sync().unwrap();
                    since_sync.clear();
                }
                Op::Compact { back } => {
                    let at = m.last().saturating_sub(back);
                    if at > m.base.0 {
                        let term = m.term(at);
                        s.save_snapshot(&snapshot_at(at, term)).unwrap();
                        s.compact_prefix(at).unwrap();
                        m.log.drain(..(at - m.base.0) as usize);
                        m.base = (at, term);
                        since_sync.clear();
                    }
                }
                Op::Restart => {
                    drop(s);
                    let (reopened, report) = open_small(dir.path(), SEGMENT);
                    prop_assert_eq!(report.truncated_bytes, 0);
                    s = reopened;
                    since_sync.clear();
                }
                Op::Crash => {
                    let path = s.crash();
                    let (reopened, _) = open_small(&path, SEGMENT);
                    s = reopened;
                    let got = observe(&s);
                    prop_assert!(
                        since_sync.contains(&got),
                        "after a crash got {:?}, expected one of {:?}",
                        got,
                        since_sync
                    );
                    m = got;
                    since_sync.clear();
                }
            }
            since_sync.push(m.clone());
            prop_assert_eq!(&observe(&s), &m);
            prop_assert_eq!(s.last_index(), m.last());
        }
        Ok(())
    }

    fn config() -> (Config, u64) {
        // A fresh seed each run unless one is given, always printed: proptest's own
        // failure files would not replay a seed-driven run on another machine.
        let seed = std::env::var("MYRAFT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        let config = Config {
            cases: 256,
            rng_seed: RngSeed::Fixed(seed),
            failure_persistence: None,
            ..Config::default()
        };
        (config, seed)
    }

    #[test]
    fn storage_disk_matches_a_vec_model_through_restarts_and_crashes() {
        let (config, seed) = config();
        eprintln!(
            "model test: {} cases, MYRAFT_SEED={seed} to replay",
            config.cases
        );
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let result = runner.run(&proptest::collection::vec(op(), 1..80), run);
        if let Err(e) = result {
            panic!("{e} (MYRAFT_SEED={seed} replays this run)");
        }
    }
}

/// A flush run on another thread covers what was written before it was taken, survives a
/// power cut like any sync, and a failed one fails the store as a failed `sync` does.
#[test]
fn storage_sync_elsewhere_is_a_sync_and_its_failure_stops_writes() {
    let fs = SimFs::new(1);
    let opts = DiskOptions {
        segment_size: 1 << 20,
        vfs: std::sync::Arc::new(fs.clone()),
    };
    let dir = Path::new("/data/raft");
    {
        let (mut s, _) = DiskStorage::open(dir, opts.clone()).unwrap();
        s.append(&entries(1, 4, 1)).unwrap();
        let flush = s
            .sync_elsewhere()
            .unwrap()
            .expect("writes wait to be synced");
        // Written after the flush was taken: not promised by it.
        s.append(&entries(4, 6, 1)).unwrap();
        let done = std::thread::spawn(move || flush.run()).join().unwrap();
        s.synced_elsewhere(done).unwrap();
        assert!(
            s.sync_elsewhere().unwrap().is_some(),
            "writes after the flush was taken still wait for one"
        );
    }
    fs.power_cut();
    let (mut s, _) = DiskStorage::open(dir, opts).unwrap();
    assert!(
        s.last_index() >= 3,
        "the flushed entries survive the power cut"
    );
    s.append(&entries(s.last_index() + 1, s.last_index() + 2, 1))
        .unwrap();
    let flush = s.sync_elsewhere().unwrap().unwrap();
    fs.arm(1, Fault::Io);
    let done = flush.run();
    assert!(
        s.synced_elsewhere(done).is_err(),
        "the failed flush is reported"
    );
    let next = s.last_index() + 1;
    assert!(
        matches!(
            s.append(&entries(next, next + 1, 1)),
            Err(StorageError::Failed { .. })
        ),
        "after a failed flush the store refuses writes"
    );
}
