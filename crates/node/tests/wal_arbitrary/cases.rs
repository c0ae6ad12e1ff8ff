//! The cases of the WAL recovery tests, shared by the property test (`main.rs`) and the
//! `wal_recovery` fuzz target (which includes this file by path): `DiskStorage::open` on
//! arbitrary files in a data dir, on the simulated file system
//! (`SimFs`, in memory; the same code runs on the real one).
//!
//! The files are segments of arbitrary bytes (their frames' checksums fixed up or not),
//! segments of well-framed records built from arbitrary fields, or a log written by
//! `DiskStorage` itself and then damaged: cut, bit-flipped, overwritten, a file removed,
//! the power cut. Checked: `open` returns, never panics; on `Ok` the log keeps its own
//! rules (every entry from the first to the last index is there, numbered in order, its
//! term what `term` says, terms never decreasing, the log starting right after the
//! snapshot); a log written and not damaged comes back as it was; and the store opened
//! takes a new entry and a hard state that a second open reads back.

use arbitrary::Arbitrary;
use myraft_node::storage::{DiskOptions, DiskStorage, OpenMode, SimFs, Storage, Vfs};
use myraft_wire::raft::{Entry, EntryPayload, HardState, Membership, Snapshot, SnapshotMeta};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[path = "../../../wire/tests/common/num.rs"]
mod num;
pub use num::Num;

const DIR: &str = "/node";

fn wal_dir() -> PathBuf {
    Path::new(DIR).join("wal")
}

fn segment(seq: u64) -> PathBuf {
    wal_dir().join(format!("{seq:020}.seg"))
}

fn snapshot_path() -> PathBuf {
    Path::new(DIR).join("snapshot")
}

/// The log's record, mirrored: the same variants and fields in the same order serialize
/// to the bytes `storage::record` reads.
#[derive(Serialize)]
enum Record {
    Checkpoint(Checkpoint),
    Entry(Entry),
    TruncateSuffix { from: u64 },
    HardState(HardState),
    SetBase { index: u64, term: u64 },
}

#[derive(Serialize)]
struct Checkpoint {
    base_index: u64,
    base_term: u64,
    last_index: u64,
    last_term: u64,
    hard_state: HardState,
}

fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("records here are small");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Rewrites the checksum of every frame whose length field fits in `bytes`, so that
/// arbitrary payloads reach the record decoder.
fn fix_checksums(bytes: &mut [u8]) {
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let end = at + 8 + len as usize;
        if len == 0 || end > bytes.len() {
            break;
        }
        let crc = crc32fast::hash(&bytes[at + 8..end]);
        bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

fn snapshot_file(snap: &Snapshot) -> Vec<u8> {
    let payload = rmp_serde::to_vec(snap).expect("encodes");
    let mut out = b"MYRAFTS1".to_vec();
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

#[derive(Arbitrary, Debug, Clone)]
pub enum PayloadSpec {
    Noop,
    Command(Vec<u8>),
    Config,
}

impl PayloadSpec {
    fn payload(self) -> EntryPayload {
        match self {
            PayloadSpec::Noop => EntryPayload::Noop,
            PayloadSpec::Command(b) => EntryPayload::Command(b),
            PayloadSpec::Config => EntryPayload::Config(Membership::default()),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum RecordSpec {
    Checkpoint {
        base: Num,
        base_term: Num,
        last: Num,
        last_term: Num,
        hs: HsSpec,
    },
    Entry {
        term: Num,
        index: Num,
        payload: PayloadSpec,
    },
    TruncateSuffix {
        from: Num,
    },
    HardState(HsSpec),
    SetBase {
        index: Num,
        term: Num,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct HsSpec {
    pub term: Num,
    pub vote: Option<u8>,
    pub commit: Num,
}

impl HsSpec {
    fn get(self) -> HardState {
        HardState {
            term: self.term.get(8),
            vote: self.vote.map(u64::from),
            commit: self.commit.get(16),
        }
    }
}

impl RecordSpec {
    fn record(self) -> Record {
        match self {
            RecordSpec::Checkpoint {
                base,
                base_term,
                last,
                last_term,
                hs,
            } => Record::Checkpoint(Checkpoint {
                base_index: base.get(16),
                base_term: base_term.get(8),
                last_index: last.get(16),
                last_term: last_term.get(8),
                hard_state: hs.get(),
            }),
            RecordSpec::Entry {
                term,
                index,
                payload,
            } => Record::Entry(Entry {
                term: term.get(8),
                index: index.get(16),
                payload: payload.payload(),
            }),
            RecordSpec::TruncateSuffix { from } => Record::TruncateSuffix { from: from.get(16) },
            RecordSpec::HardState(hs) => Record::HardState(hs.get()),
            RecordSpec::SetBase { index, term } => Record::SetBase {
                index: index.get(16),
                term: term.get(8),
            },
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct SnapSpec {
    pub last_index: Num,
    pub last_term: Num,
}

impl SnapSpec {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_index: self.last_index.get(16),
                last_term: self.last_term.get(8),
                membership: Membership::default(),
            },
            data: Vec::new(),
        }
    }
}

/// A step of the writer, on what `DiskStorage` offers the server.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Appends `count` entries, starting `back` entries before the end (overwriting them).
    Append {
        back: u8,
        count: u8,
        new_term: bool,
        payload: u8,
    },
    HardState {
        new_term: bool,
        vote: Option<u8>,
    },
    Sync,
    /// Saves a snapshot `back` entries before the end and compacts the log to it.
    Snapshot {
        back: u8,
        compact: bool,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Damage {
    Cut {
        file: u8,
        at: u16,
    },
    Flip {
        file: u8,
        at: u16,
        bit: u8,
    },
    Overwrite {
        file: u8,
        at: u16,
        bytes: Vec<u8>,
    },
    Remove {
        file: u8,
    },
    /// Keeps only what was synced (a torn tail may survive in part).
    PowerCut,
    /// Fixes the frames' checksums after the damage, so that it reaches the decoder.
    FixChecksums {
        file: u8,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Case {
    Bytes {
        segments: Vec<(u8, Vec<u8>)>,
        fix: bool,
        snapshot: Option<Vec<u8>>,
    },
    Records {
        segments: Vec<Vec<RecordSpec>>,
        first_seq: u8,
        snapshot: Option<SnapSpec>,
    },
    Written {
        segment_size: u16,
        ops: Vec<Op>,
        damage: Vec<Damage>,
    },
}

fn write_file(fs: &SimFs, path: &Path, bytes: &[u8]) {
    let mut f = fs
        .open_append(path, OpenMode::Truncate)
        .expect("SimFs creates files");
    f.write_all(bytes).expect("SimFs writes");
    f.sync_data().expect("SimFs syncs");
    fs.sync_dir(path.parent().expect("has a parent"))
        .expect("SimFs syncs dirs");
}

fn options(fs: &SimFs, segment_size: u64) -> DiskOptions {
    DiskOptions {
        segment_size,
        vfs: Arc::new(fs.clone()),
    }
}

/// What a store holds, as its readers see it.
#[derive(Debug, PartialEq, Eq)]
struct State {
    first: u64,
    last: u64,
    entries: Vec<Entry>,
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
}

fn state(s: &DiskStorage) -> State {
    let (first, last) = (s.first_index(), s.last_index());
    State {
        first,
        last,
        entries: s
            .entries(first, last + 1)
            .expect("the log's own entries read back"),
        hard_state: s.hard_state(),
        snapshot: s.snapshot_meta(),
    }
}

/// The rules a log must keep; `opened`: also those `open` establishes.
fn check(s: &DiskStorage, opened: bool) -> State {
    let st = state(s);
    assert!(
        st.first >= 1 && st.first <= st.last + 1,
        "first {} last {}",
        st.first,
        st.last
    );
    let base_term = s.term(st.first - 1).expect("the base has a term");
    assert_eq!(st.entries.len() as u64, st.last + 1 - st.first);
    let mut prev = base_term;
    for (i, e) in st.entries.iter().enumerate() {
        assert_eq!(e.index, st.first + i as u64, "entries out of place");
        assert_eq!(s.term(e.index), Some(e.term));
        assert!(
            e.term >= prev,
            "term goes back at index {}: {} after {prev}",
            e.index,
            e.term
        );
        prev = e.term;
    }
    if let Some(meta) = st.snapshot.as_ref().filter(|_| opened) {
        assert_eq!(
            st.first - 1,
            meta.last_index,
            "the log does not start after the snapshot"
        );
        assert_eq!(base_term, meta.last_term);
    }
    st
}

/// Opens what is in `fs`; if it opens, checks it, writes to it and opens it again.
fn open_and_check(fs: &SimFs, segment_size: u64) -> Option<State> {
    let (mut s, _) = DiskStorage::open(Path::new(DIR), options(fs, segment_size)).ok()?;
    let before = check(&s, true);
    // What opened can be written to, and a second open reads back both.
    let term = before.hard_state.term.max(s.term(before.last).unwrap_or(0));
    let next = Entry {
        term,
        index: before.last + 1,
        payload: EntryPayload::Command(b"after recovery".to_vec()),
    };
    let hs = HardState {
        term,
        ..before.hard_state
    };
    let wrote = s
        .append(std::slice::from_ref(&next))
        .and_then(|()| s.save_hard_state(&hs))
        .and_then(|()| s.sync());
    drop(s);
    if let Err(e) = wrote {
        panic!("a recovered store refuses a write: {e}");
    }
    let (s, _) = DiskStorage::open(Path::new(DIR), options(fs, segment_size))
        .unwrap_or_else(|e| panic!("a store written after recovery does not open: {e}"));
    let after = check(&s, true);
    let mut want = before.entries.clone();
    want.push(next);
    assert_eq!(after.entries, want);
    assert_eq!(after.hard_state, hs);
    Some(before)
}

fn run_ops(fs: &SimFs, segment_size: u64, ops: Vec<Op>) -> Option<State> {
    let (mut s, _) = DiskStorage::open(Path::new(DIR), options(fs, segment_size)).ok()?;
    for op in ops {
        let last = s.last_index();
        let first = s.first_index();
        let max_term = s.hard_state().term.max(s.term(last).unwrap_or(0));
        let result = match op {
            Op::Append {
                back,
                count,
                new_term,
                payload,
            } => {
                let start = last.saturating_sub(u64::from(back % 4)).max(first) + 1;
                // Committed entries, which a snapshot covers, are never overwritten.
                let covered = s.snapshot_meta().map_or(0, |m| m.last_index);
                let start = start.min(last + 1).max(first).max(covered + 1);
                let term = max_term + u64::from(new_term);
                let entries: Vec<Entry> = (0..u64::from(count % 8) + 1)
                    .map(|i| Entry {
                        term,
                        index: start + i,
                        payload: EntryPayload::Command(vec![payload; usize::from(payload % 64)]),
                    })
                    .collect();
                s.append(&entries)
            }
            Op::HardState { new_term, vote } => s.save_hard_state(&HardState {
                term: max_term + u64::from(new_term),
                vote: vote.map(u64::from),
                commit: s.hard_state().commit.max(last / 2),
            }),
            Op::Sync => s.sync(),
            Op::Snapshot { back, compact } => {
                let at = last.saturating_sub(u64::from(back % 4));
                let newer = s.snapshot_meta().is_none_or(|m| at > m.last_index);
                match s.term(at) {
                    Some(term) if at >= first && newer => {
                        let snap = Snapshot {
                            meta: SnapshotMeta {
                                last_index: at,
                                last_term: term,
                                membership: Membership::default(),
                            },
                            data: Vec::new(),
                        };
                        s.save_snapshot(&snap).and_then(|()| {
                            if compact {
                                s.compact_prefix(at)
                            } else {
                                Ok(())
                            }
                        })
                    }
                    _ => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            panic!("a healthy store refused a write: {e}");
        }
        check(&s, false);
    }
    let st = check(&s, false);
    drop(s);
    Some(st)
}

fn damage(fs: &SimFs, damage: Vec<Damage>) {
    for d in damage {
        let mut files: Vec<PathBuf> = fs.list(&wal_dir()).unwrap_or_default();
        files.sort();
        files.push(snapshot_path());
        let pick = |i: u8| files[usize::from(i) % files.len()].clone();
        let edit = |path: &Path, f: &dyn Fn(&mut Vec<u8>)| {
            if let Ok(mut bytes) = fs.read(path) {
                f(&mut bytes);
                write_file(fs, path, &bytes);
            }
        };
        match d {
            Damage::Cut { file, at } => edit(&pick(file), &|b| {
                b.truncate(usize::from(at) % (b.len() + 1))
            }),
            Damage::Flip { file, at, bit } => edit(&pick(file), &|b| {
                if !b.is_empty() {
                    let at = usize::from(at) % b.len();
                    b[at] ^= 1 << (bit % 8);
                }
            }),
            Damage::Overwrite { file, at, bytes } => edit(&pick(file), &|b| {
                let at = usize::from(at) % (b.len() + 1);
                for (i, x) in bytes.iter().enumerate() {
                    match b.get_mut(at + i) {
                        Some(y) => *y = *x,
                        None => b.push(*x),
                    }
                }
            }),
            Damage::Remove { file } => {
                let _ = fs.remove_file(&pick(file));
                let _ = fs.sync_dir(&wal_dir());
            }
            Damage::PowerCut => fs.power_cut(),
            Damage::FixChecksums { file } => edit(&pick(file), &|b| fix_checksums(b)),
        }
    }
}

/// Builds the case's files, opens them and checks what opened; panics on a violation.
pub fn run(case: Case) {
    let fs = SimFs::new(1);
    fs.create_dir_all(&wal_dir()).expect("SimFs makes dirs");
    match case {
        Case::Bytes {
            segments,
            fix,
            snapshot,
        } => {
            for (seq, mut bytes) in segments {
                if fix {
                    fix_checksums(&mut bytes);
                }
                write_file(&fs, &segment(u64::from(seq % 4) + 1), &bytes);
            }
            if let Some(bytes) = snapshot {
                write_file(&fs, &snapshot_path(), &bytes);
            }
            open_and_check(&fs, 1 << 20);
        }
        Case::Records {
            segments,
            first_seq,
            snapshot,
        } => {
            let first_seq = u64::from(first_seq % 3) + 1;
            for (i, records) in segments.into_iter().take(4).enumerate() {
                let mut bytes = Vec::new();
                for r in records {
                    let payload = rmp_serde::to_vec(&r.record()).expect("encodes");
                    frame(&mut bytes, &payload);
                }
                write_file(&fs, &segment(first_seq + i as u64), &bytes);
            }
            if let Some(spec) = snapshot {
                write_file(&fs, &snapshot_path(), &snapshot_file(&spec.snapshot()));
            }
            open_and_check(&fs, 1 << 20);
        }
        Case::Written {
            segment_size,
            ops,
            damage: harm,
        } => {
            let segment_size = 64 + u64::from(segment_size % 2048);
            let Some(written) = run_ops(&fs, segment_size, ops) else {
                panic!("a new store does not open");
            };
            let undamaged = harm.is_empty();
            damage(&fs, harm);
            let recovered = open_and_check(&fs, segment_size);
            if undamaged {
                // `open` finishes a compaction to the snapshot that was not done.
                let mut want = written;
                if let Some(meta) = &want.snapshot {
                    if want.first <= meta.last_index {
                        want.first = meta.last_index + 1;
                        want.entries.retain(|e| e.index > meta.last_index);
                    }
                }
                assert_eq!(recovered, Some(want), "an undamaged log did not come back");
            }
        }
    }
}
