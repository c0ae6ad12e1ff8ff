//! [`DiskStorage`]: a segmented write-ahead log and a snapshot file.
//!
//! # Layout
//!
//! ```text
//! DIR/wal/00000000000000000001.seg   segments, numbered from 1 without gaps, oldest first;
//! DIR/wal/00000000000000000002.seg   only the last one is written to
//! DIR/snapshot                       the latest snapshot, replaced atomically
//! ```
//!
//! A segment is a sequence of frames `[len u32 LE][crc32 u32 LE][MessagePack record]` (see
//! `record.rs`). Its first record is a checkpoint (base, last index and term, hard state as
//! they stood when the segment was opened); then come entry, truncate-suffix, hard-state and
//! set-base (compaction) records in the order they happened. A new segment is started when
//! the next write would take the active one past [`DiskOptions::segment_size`].
//!
//! The hard state is a record in the log rather than a file of its own, so that one
//! fdatasync makes a batch's entries *and* its term/vote durable together; the checkpoint at
//! the head of every segment carries it across the deletion of old segments.
//!
//! The snapshot file is `MYRAFTS1`, payload length (u64 LE), crc32 of the payload (u32 LE),
//! then the MessagePack [`Snapshot`]. It is written to `snapshot.tmp`, fsynced, renamed over
//! `snapshot` and the directory fsynced, so a crash leaves the old snapshot or the new one.
//!
//! # Durability
//!
//! Each write call goes to the operating system as one `write`; [`Storage::sync`] is one
//! `fdatasync` of the active segment. Starting a segment syncs the one before it first, so
//! every segment but the last is complete on disk. Old segments are deleted only by
//! [`Storage::compact_prefix`], after its compaction record is synced, and only while the
//! next segment's checkpoint shows that nothing in them is still needed.
//!
//! If a write fails (disk full, I/O error), the segment is cut back to its last whole
//! record, so no half record is left for later appends to bury; if even that fails, or an
//! fsync fails (after which the kernel may have dropped the unsynced pages), the store
//! refuses all further writes with [`StorageError::Failed`] and the node must restart.
//!
//! # Recovery
//!
//! [`DiskStorage::open`] replays the segments in order. A record that is short or fails its
//! checksum at the very end of the last segment, with no valid record after it, is what a
//! crash during a write leaves behind: it is cut off and reported in [`RecoveryReport`].
//! Frames inside the extent a torn record claims are its own bytes, not records after it
//! (see `record::record_after_damage`).
//! Anything else that does not read back (a bad record with valid ones after it, a bad record
//! in an earlier segment, a missing segment, a damaged snapshot) stops the open with
//! [`StorageError::Corrupt`] naming the file and byte offset: recovery never guesses.
//!
//! A node's own snapshot is saved before the log is compacted to it, so a crash in between
//! (or a compaction that failed on a full disk) leaves a log that starts below the snapshot;
//! `open` finishes that compaction, and the log always starts right after the snapshot.
//!
//! All file operations go through a [`Vfs`]: the real file system, or [`super::SimFs`] in
//! crash tests.
//!
//! All live entries are also kept in memory, so `entries` and `term` never touch the disk;
//! the snapshot policy bounds how many there are.

use super::log::MemLog;
use super::record::{self, Checkpoint, Record, RecordRef};
use super::vfs::{OpenMode, OsFs, Vfs, VfsFile};
use super::{Storage, StorageError};
use crate::raft::{MAX_INDEX, MAX_TERM};
use myraft_wire::raft::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Segments roll over at this size unless told otherwise.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

const WAL_DIR: &str = "wal";
const SEGMENT_EXT: &str = "seg";
const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
const SNAPSHOT_MAGIC: &[u8; 8] = b"MYRAFTS1";
const SNAPSHOT_HEADER_LEN: usize = 8 + 8 + 4;

#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// Start a new segment once the active one would grow past this many bytes.
    pub segment_size: u64,
    /// Where the files live: the operating system's file system, or a simulated one.
    pub vfs: Arc<dyn Vfs>,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            vfs: OsFs::shared(),
        }
    }
}

impl DiskOptions {
    pub fn with_segment_size(segment_size: u64) -> Self {
        DiskOptions {
            segment_size,
            ..DiskOptions::default()
        }
    }
}

/// What [`DiskStorage::open`] found; worth a log line at startup when anything was cut.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// Bytes cut from the end of the last segment: a record torn by a crash mid-write.
    pub truncated_bytes: u64,
    /// The segment and offset of the first byte cut, and why it did not read back.
    pub truncated_at: Option<(PathBuf, u64, String)>,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    len: u64,
    /// Last index of the log when the segment was opened: every older segment holds only
    /// entries at or below it.
    opened_at_last: Index,
    /// Length of its checkpoint: a segment no longer than this holds nothing else.
    header_len: u64,
}

/// A flush of the log's writes up to a point, taken off the thread that writes them
/// ([`DiskStorage::sync_elsewhere`]).
#[derive(Debug)]
pub struct PendingSync {
    file: Box<dyn VfsFile>,
    path: PathBuf,
    writes: u64,
    #[cfg(test)]
    len: (u64, u64),
}

impl PendingSync {
    /// Flushes the file (fdatasync); blocks for as long as the disk takes.
    pub fn run(mut self) -> SyncDone {
        SyncDone {
            result: self.file.sync_data(),
            path: self.path,
            writes: self.writes,
            #[cfg(test)]
            len: self.len,
        }
    }
}

/// The outcome of a [`PendingSync`], for [`DiskStorage::synced_elsewhere`].
#[derive(Debug)]
pub struct SyncDone {
    result: std::io::Result<()>,
    path: PathBuf,
    writes: u64,
    #[cfg(test)]
    len: (u64, u64),
}

#[derive(Debug)]
pub struct DiskStorage {
    dir: PathBuf,
    wal_dir: PathBuf,
    options: DiskOptions,
    log: MemLog,
    hard_state: HardState,
    snapshot_meta: Option<SnapshotMeta>,
    /// Oldest first; the last one is being written.
    segments: Vec<Segment>,
    active: Box<dyn VfsFile>,
    /// Written but not yet synced.
    dirty: bool,
    /// Successful writes so far: tells whether a sync run elsewhere covered all of them.
    writes: u64,
    /// Set after a write error that could not be undone; see the module docs.
    failed: Option<String>,
    buf: Vec<u8>,
    /// (segment seq, length) known durable, for tests that simulate a crash.
    #[cfg(test)]
    synced: (u64, u64),
    /// Lets tests make the next write stop after this many bytes with ENOSPC.
    #[cfg(test)]
    fail_next_write_after: Option<usize>,
}

fn segment_path(wal_dir: &Path, seq: u64) -> PathBuf {
    wal_dir.join(format!("{seq:020}.{SEGMENT_EXT}"))
}

fn sync_dir(vfs: &dyn Vfs, dir: &Path) -> Result<(), StorageError> {
    vfs.sync_dir(dir)
        .map_err(|e| StorageError::io(dir, "sync directory", e))
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// The log's segments, oldest first, checked for gaps in their numbering.
fn list_segments(vfs: &dyn Vfs, wal_dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let read = vfs
        .list(wal_dir)
        .map_err(|e| StorageError::io(wal_dir, "list", e))?;
    let mut found = Vec::new();
    for path in read {
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        let seq = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<u64>().ok());
        match seq {
            Some(seq) => found.push((seq, path)),
            None => return Err(corrupt(&path, 0, "unexpected segment file name")),
        }
    }
    found.sort();
    for pair in found.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(corrupt(
                &pair[1].1,
                0,
                format!(
                    "segments {} to {} are missing",
                    pair[0].0 + 1,
                    pair[1].0 - 1
                ),
            ));
        }
    }
    Ok(found)
}

fn read_snapshot_file(vfs: &dyn Vfs, path: &Path) -> Result<Option<Snapshot>, StorageError> {
    let bytes = match vfs.read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(path, "read", e)),
    };
    if bytes.len() < SNAPSHOT_HEADER_LEN || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(path, 0, "not a snapshot file (bad header)"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[8..16]);
    let len = u64::from_le_bytes(len);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[16..20]);
    let stored = u32::from_le_bytes(crc);
    let payload = &bytes[SNAPSHOT_HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(corrupt(
            path,
            SNAPSHOT_HEADER_LEN as u64,
            format!(
                "snapshot says {len} bytes but the file holds {}",
                payload.len()
            ),
        ));
    }
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(corrupt(
            path,
            SNAPSHOT_HEADER_LEN as u64,
            format!(
                "snapshot checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        ));
    }
    let snap: Snapshot = rmp_serde::from_slice(payload)
        .map_err(|e| corrupt(path, SNAPSHOT_HEADER_LEN as u64, e.to_string()))?;
    if snap.meta.last_index > MAX_INDEX || snap.meta.last_term > MAX_TERM {
        return Err(corrupt(
            path,
            SNAPSHOT_HEADER_LEN as u64,
            format!(
                "snapshot at index {} term {} is past the largest a log holds",
                snap.meta.last_index, snap.meta.last_term
            ),
        ));
    }
    Ok(Some(snap))
}

/// Whether every index and term in `rec` is one a log can reach ([`MAX_INDEX`],
/// [`MAX_TERM`], which the Raft core never passes). The log computes `index + 1` (the next
/// entry, the first after the base), which must not wrap: a record beyond them, however
/// well its checksum matches, is damage, not a log.
fn within_bounds(rec: &Record) -> bool {
    let index = |i: Index| i <= MAX_INDEX;
    let term = |t: Term| t <= MAX_TERM;
    let hard_state = |hs: &HardState| term(hs.term) && index(hs.commit);
    match rec {
        Record::Checkpoint(c) => {
            index(c.base_index)
                && term(c.base_term)
                && index(c.last_index)
                && term(c.last_term)
                && hard_state(&c.hard_state)
        }
        Record::Entry(e) => index(e.index) && term(e.term),
        Record::TruncateSuffix { from } => index(*from),
        Record::HardState(hs) => hard_state(hs),
        Record::SetBase { index: i, term: t } => index(*i) && term(*t),
    }
}

/// Rebuilt state after replaying the segments.
struct Replayed {
    log: MemLog,
    hard_state: HardState,
    segments: Vec<Segment>,
    report: RecoveryReport,
}

fn replay(vfs: &dyn Vfs, wal_dir: &Path) -> Result<Replayed, StorageError> {
    let files = list_segments(vfs, wal_dir)?;
    let mut log = MemLog::new();
    let mut hard_state = HardState::default();
    let mut segments = Vec::with_capacity(files.len());
    let mut report = RecoveryReport {
        segments: files.len(),
        ..RecoveryReport::default()
    };
    // Set when older segments were deleted after a compaction: the log must, by the end of
    // replay, be compacted at least through this index, or entries are missing.
    let mut prefix_deleted_through: Option<Index> = None;
    let count = files.len();
    for (i, (seq, path)) in files.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let bytes = vfs
            .read(&path)
            .map_err(|e| StorageError::io(&path, "read", e))?;
        let mut offset = 0usize;
        let mut opened_at_last = None;
        let mut header_len = 0;
        while offset < bytes.len() {
            let (rec, len) = match record::decode(&bytes[offset..]) {
                Ok(ok) => ok,
                Err(why) => {
                    if let Some(next) = record::record_after_damage(&bytes, offset) {
                        return Err(corrupt(
                            &path,
                            offset as u64,
                            format!("{why}, and a valid record follows at byte {next}"),
                        ));
                    }
                    if !is_last {
                        return Err(corrupt(
                            &path,
                            offset as u64,
                            format!("{why}, in a segment that is not the last"),
                        ));
                    }
                    cut_tail(vfs, &path, offset as u64)?;
                    report.truncated_bytes = (bytes.len() - offset) as u64;
                    report.truncated_at = Some((path.clone(), offset as u64, why.to_string()));
                    break;
                }
            };
            let at = offset as u64;
            let bad = |reason: String| corrupt(&path, at, reason);
            if !within_bounds(&rec) {
                return Err(bad(format!(
                    "a record with an index past {MAX_INDEX} or a term past {MAX_TERM}"
                )));
            }
            match (offset, rec) {
                (0, Record::Checkpoint(c)) => {
                    if i == 0 {
                        if seq != 1 && c.base_index < c.last_index {
                            prefix_deleted_through = Some(c.last_index);
                        }
                        log = MemLog::with_base(c.last_index, c.last_term);
                        hard_state = c.hard_state;
                    } else if c.last_index != log.last_index() || c.hard_state != hard_state {
                        return Err(bad(format!(
                            "checkpoint (last index {}, {:?}) disagrees with the segments before it \
                             (last index {}, {:?})",
                            c.last_index,
                            c.hard_state,
                            log.last_index(),
                            hard_state
                        )));
                    }
                    opened_at_last = Some(c.last_index);
                    header_len = len as u64;
                }
                (0, _) => return Err(bad("segment does not start with a checkpoint".into())),
                (_, Record::Checkpoint(_)) => {
                    return Err(bad("checkpoint in the middle of a segment".into()))
                }
                (_, Record::Entry(e)) => {
                    // Terms never go back along a log (each leader's term is above the
                    // last): a checksum that matches does not make such an entry one.
                    let before = e.index.checked_sub(1).and_then(|i| log.term(i));
                    if let Some(before) = before.filter(|&t| e.term < t) {
                        return Err(bad(format!(
                            "entry {} has term {}, below the term {before} of the entry \
                             before it",
                            e.index, e.term
                        )));
                    }
                    let applied = if prefix_deleted_through.is_some() {
                        log.append_below_base(&e)
                    } else {
                        log.append(std::slice::from_ref(&e))
                    };
                    applied.map_err(|err| bad(format!("entry does not fit the log: {err}")))?;
                }
                (_, Record::TruncateSuffix { from }) => {
                    if prefix_deleted_through.is_some() {
                        log.truncate_suffix_below_base(from);
                    } else {
                        log.truncate_suffix(from).map_err(|err| {
                            bad(format!("truncation does not fit the log: {err}"))
                        })?;
                    }
                }
                (_, Record::HardState(hs)) => hard_state = hs,
                (_, Record::SetBase { index, term }) => log.set_base(index, term),
            }
            report.records += 1;
            offset += len;
        }
        let len = offset as u64;
        let opened_at_last = match opened_at_last {
            Some(last) => last,
            // A crash while the segment was being started; `open` writes its checkpoint.
            None if is_last && len == 0 => log.last_index(),
            None => return Err(corrupt(&path, 0, "segment has no checkpoint")),
        };
        segments.push(Segment {
            seq,
            path,
            len,
            opened_at_last,
            header_len,
        });
    }
    if let Some(through) = prefix_deleted_through {
        if log.base_index() < through || log.base_term().is_none() {
            let first = segments.first().map(|s| s.path.clone()).unwrap_or_default();
            return Err(corrupt(
                &first,
                0,
                format!(
                    "older segments are gone but the log is only compacted through {}, \
                     not {through}",
                    log.base_index()
                ),
            ));
        }
    }
    // The same rule over the whole log, for entries kept across a base whose term was
    // unknown while they were replayed (a truncation below the oldest segment).
    let mut last_term = log.base_term().unwrap_or(0);
    for e in log.iter() {
        if e.term < last_term {
            let last = segments.last().map(|s| s.path.clone()).unwrap_or_default();
            return Err(corrupt(
                &last,
                0,
                format!(
                    "entry {} has term {}, below the term {last_term} of the entry before it",
                    e.index, e.term
                ),
            ));
        }
        last_term = e.term;
    }
    Ok(Replayed {
        log,
        hard_state,
        segments,
        report,
    })
}

/// Makes durable what `open` read: after a failed fsync the node stops and, restarted on the
/// same machine, reads back writes that may exist only in the page cache. Building on them
/// (a segment whose checkpoint counts them, a compaction to a snapshot whose rename never
/// reached the disk) would leave a log that a later power cut breaks beyond recovery.
fn make_durable(
    vfs: &dyn Vfs,
    dir: &Path,
    wal_dir: &Path,
    segments: &[Segment],
    has_snapshot: bool,
) -> Result<(), StorageError> {
    for seg in segments {
        vfs.open_append(&seg.path, OpenMode::Existing)
            .and_then(|mut f| f.sync_data())
            .map_err(|e| StorageError::io(&seg.path, "sync", e))?;
    }
    if has_snapshot {
        let path = dir.join(SNAPSHOT_FILE);
        vfs.open_append(&path, OpenMode::Existing)
            .and_then(|mut f| f.sync_data())
            .map_err(|e| StorageError::io(&path, "sync", e))?;
    }
    sync_dir(vfs, wal_dir)?;
    sync_dir(vfs, dir)
}

fn cut_tail(vfs: &dyn Vfs, path: &Path, len: u64) -> Result<(), StorageError> {
    let mut file = vfs
        .open_append(path, OpenMode::Existing)
        .map_err(|e| StorageError::io(path, "open for repair", e))?;
    file.set_len(len)
        .and_then(|()| file.sync_data())
        .map_err(|e| StorageError::io(path, "cut torn tail of", e))
}

impl DiskStorage {
    /// Opens (or creates) the store in `dir`, replaying its log. The caller should hold
    /// the [`super::DataDirLock`] of the data dir first.
    pub fn open(
        dir: &Path,
        options: DiskOptions,
    ) -> Result<(DiskStorage, RecoveryReport), StorageError> {
        let vfs = Arc::clone(&options.vfs);
        let wal_dir = dir.join(WAL_DIR);
        vfs.create_dir_all(&wal_dir)
            .map_err(|e| StorageError::io(&wal_dir, "create", e))?;
        let tmp = dir.join(SNAPSHOT_TMP);
        vfs.remove_if_present(&tmp)
            .map_err(|e| StorageError::io(&tmp, "remove", e))?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot_meta = read_snapshot_file(&*vfs, &snapshot_path)?.map(|s| s.meta);
        let Replayed {
            log,
            hard_state,
            mut segments,
            report,
        } = replay(&*vfs, &wal_dir)?;
        make_durable(&*vfs, dir, &wal_dir, &segments, snapshot_meta.is_some())?;

        let snapshot_index = snapshot_meta.as_ref().map_or(0, |m| m.last_index);
        if log.base_index() > snapshot_index {
            return Err(corrupt(
                &snapshot_path,
                0,
                format!(
                    "the log is compacted through {} but the snapshot only covers through \
                     {snapshot_index}",
                    log.base_index()
                ),
            ));
        }
        let (active, fresh) = match segments.last() {
            Some(seg) => {
                let file = vfs
                    .open_append(&seg.path, OpenMode::Existing)
                    .map_err(|e| StorageError::io(&seg.path, "open", e))?;
                (file, seg.len == 0)
            }
            None => {
                let path = segment_path(&wal_dir, 1);
                let file = create_segment_file(&*vfs, &path)?;
                segments.push(Segment {
                    seq: 1,
                    path,
                    len: 0,
                    opened_at_last: log.last_index(),
                    header_len: 0,
                });
                (file, true)
            }
        };
        let mut store = DiskStorage {
            dir: dir.to_path_buf(),
            wal_dir,
            options,
            log,
            hard_state,
            snapshot_meta,
            segments,
            active,
            dirty: false,
            writes: 0,
            failed: None,
            buf: Vec::new(),
            #[cfg(test)]
            synced: (0, 0),
            #[cfg(test)]
            fail_next_write_after: None,
        };
        if fresh {
            if let Some(seg) = store.segments.last_mut() {
                seg.opened_at_last = store.log.last_index();
            }
            store.write_checkpoint()?;
        }
        // The snapshot is made durable before the log record that resets the log to it, so
        // a crash in between leaves a log that disagrees with the snapshot. Writing the
        // record now keeps later checkpoints in agreement with a replay of the segments.
        if let Some(meta) = store.snapshot_meta.clone() {
            if store.log.term(meta.last_index) != Some(meta.last_term) {
                let (index, term) = (meta.last_index, meta.last_term);
                store.write_records([RecordRef::SetBase { index, term }])?;
                store.log.set_base(index, term);
            }
        }
        store.sync()?;
        if fresh {
            sync_dir(&*store.options.vfs, &store.wal_dir)?;
        }
        store.mark_synced();
        // A snapshot of our own is saved before the log is compacted to it; finish a
        // compaction that a crash or a failed write cut short, so the log starts right after
        // the snapshot it reports.
        if let Some(meta) = store.snapshot_meta.clone() {
            if store.log.base_index() < meta.last_index {
                store.compact_prefix(meta.last_index)?;
            }
        }
        Ok((store, report))
    }

    /// A flush of everything written so far, to be run on another thread
    /// ([`PendingSync::run`]) while this one goes on writing; its outcome comes back through
    /// [`DiskStorage::synced_elsewhere`], which is where a failure stops the store. `None`
    /// when nothing is waiting to be synced.
    pub fn sync_elsewhere(&mut self) -> Result<Option<PendingSync>, StorageError> {
        self.check_writable()?;
        if !self.dirty {
            return Ok(None);
        }
        let path = self
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        match self.active.try_clone() {
            Ok(file) => Ok(Some(PendingSync {
                file,
                path,
                writes: self.writes,
                #[cfg(test)]
                len: self.segments.last().map_or((0, 0), |s| (s.seq, s.len)),
            })),
            Err(e) => Err(self.fail(StorageError::io(path, "open a second handle to", e))),
        }
    }

    /// Takes the outcome of a [`PendingSync`]. A failed flush fails the store, as a failed
    /// [`Storage::sync`] does: the kernel may have dropped the pages it could not write.
    pub fn synced_elsewhere(&mut self, done: SyncDone) -> Result<(), StorageError> {
        if let Err(e) = done.result {
            return Err(self.fail(StorageError::io(done.path, "sync", e)));
        }
        if done.writes == self.writes {
            self.dirty = false;
            #[cfg(test)]
            {
                self.synced = done.len;
            }
        }
        Ok(())
    }

    /// The segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(cause) => Err(StorageError::Failed {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn fail(&mut self, err: StorageError) -> StorageError {
        self.failed = Some(err.to_string());
        err
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            base_index: self.log.base_index(),
            base_term: self.log.base_term().unwrap_or(0),
            last_index: self.log.last_index(),
            last_term: self.log.last_term().unwrap_or(0),
            hard_state: self.hard_state,
        }
    }

    fn write_checkpoint(&mut self) -> Result<(), StorageError> {
        let checkpoint = self.checkpoint();
        self.buf.clear();
        record::encode_into(&mut self.buf, &RecordRef::Checkpoint(&checkpoint))
            .map_err(StorageError::Encode)?;
        self.write_buf()?;
        if let Some(seg) = self.segments.last_mut() {
            seg.header_len = seg.len;
        }
        Ok(())
    }

    /// Encodes `records` and writes them with one `write`, starting a new segment first if
    /// they would not fit in the active one.
    fn write_records<'a>(
        &mut self,
        records: impl IntoIterator<Item = RecordRef<'a>>,
    ) -> Result<(), StorageError> {
        self.check_writable()?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let encoded = records
            .into_iter()
            .try_for_each(|r| record::encode_into(&mut buf, &r));
        self.buf = buf;
        encoded.map_err(StorageError::Encode)?;
        // Only roll a segment that holds more than its checkpoint, or an oversized write
        // would start an endless chain of empty segments.
        let roll = self.segments.last().is_some_and(|s| {
            s.len > s.header_len && s.len + self.buf.len() as u64 > self.options.segment_size
        });
        if roll {
            let pending = std::mem::take(&mut self.buf);
            let rolled = self.roll();
            self.buf = pending;
            rolled?;
        }
        self.write_buf()
    }

    /// Appends `self.buf` to the active segment, or leaves the segment as it was.
    fn write_buf(&mut self) -> Result<(), StorageError> {
        let Some(seg) = self.segments.last_mut() else {
            return Err(StorageError::Failed {
                cause: "no active segment".into(),
            });
        };
        let good_len = seg.len;
        let written = write_all_maybe_failing(
            &mut self.active,
            &self.buf,
            #[cfg(test)]
            self.fail_next_write_after.take(),
        );
        match written {
            Ok(()) => {
                seg.len += self.buf.len() as u64;
                self.dirty = true;
                self.writes += 1;
                Ok(())
            }
            Err(e) => {
                let err = StorageError::io(&seg.path, "write", e);
                // Cut back the part that made it, so the next append does not follow a
                // half record (which recovery would then take for damage mid-log).
                match self.active.set_len(good_len) {
                    Ok(()) => Err(err),
                    Err(cut) => {
                        let path = seg.path.clone();
                        self.failed = Some(format!(
                            "{err}; then cannot cut {} back to {good_len} bytes: {cut}",
                            path.display()
                        ));
                        Err(err)
                    }
                }
            }
        }
    }

    /// Closes the active segment (synced, so that only the last segment can ever have a torn
    /// tail) and starts the next one with a checkpoint.
    fn roll(&mut self) -> Result<(), StorageError> {
        self.sync()?;
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let path = segment_path(&self.wal_dir, seq);
        let file = create_segment_file(&*self.options.vfs, &path)?;
        let previous = std::mem::replace(&mut self.active, file);
        self.segments.push(Segment {
            seq,
            path: path.clone(),
            len: 0,
            opened_at_last: self.log.last_index(),
            header_len: 0,
        });
        let started = self
            .write_checkpoint()
            .and_then(|()| self.sync())
            .and_then(|()| sync_dir(&*self.options.vfs, &self.wal_dir));
        if let Err(err) = started {
            // Go back to the old segment; the new file must not survive as a checkpoint-less
            // tail unless the cleanup itself fails.
            self.active = previous;
            self.segments.pop();
            if let Err(rm) = self.options.vfs.remove_file(&path) {
                self.failed = Some(format!(
                    "{err}; then cannot remove {}: {rm}",
                    path.display()
                ));
            } else {
                self.failed = None;
            }
            return Err(err);
        }
        Ok(())
    }

    fn mark_synced(&mut self) {
        #[cfg(test)]
        {
            if let Some(seg) = self.segments.last() {
                self.synced = (seg.seq, seg.len);
            }
        }
    }

    fn write_snapshot_file(&mut self, snap: &Snapshot) -> Result<(), StorageError> {
        let payload = rmp_serde::to_vec(snap).map_err(|e| StorageError::Encode(e.to_string()))?;
        let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_LEN + payload.len());
        bytes.extend_from_slice(SNAPSHOT_MAGIC);
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let path = self.dir.join(SNAPSHOT_FILE);
        let vfs = Arc::clone(&self.options.vfs);
        vfs.open_append(&tmp, OpenMode::Truncate)
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_data()
            })
            .map_err(|e| StorageError::io(&tmp, "write", e))?;
        vfs.rename(&tmp, &path)
            .map_err(|e| StorageError::io(&path, "replace", e))?;
        // From here the new snapshot may or may not survive a crash; memory must not run
        // ahead of it, so a failure stops all writes.
        sync_dir(&*vfs, &self.dir).map_err(|e| self.fail(e))
    }
}

fn create_segment_file(vfs: &dyn Vfs, path: &Path) -> Result<Box<dyn VfsFile>, StorageError> {
    vfs.open_append(path, OpenMode::CreateNew)
        .map_err(|e| StorageError::io(path, "create", e))
}

fn write_all_maybe_failing(
    file: &mut Box<dyn VfsFile>,
    buf: &[u8],
    #[cfg(test)] fail_after: Option<usize>,
) -> io::Result<()> {
    #[cfg(test)]
    if let Some(n) = fail_after {
        file.write_all(&buf[..n.min(buf.len())])?;
        return Err(io::Error::from_raw_os_error(28));
    }
    file.write_all(buf)
}

impl Storage for DiskStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.log.check_append(entries)?;
        self.write_records(entries.iter().map(RecordRef::Entry))?;
        self.log.append(entries)
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<(), StorageError> {
        self.log.check_truncate(from)?;
        if from > self.log.last_index() {
            return Ok(());
        }
        self.write_records([RecordRef::TruncateSuffix { from }])?;
        self.log.truncate_suffix(from)
    }

    fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        if *hs == self.hard_state {
            return Ok(());
        }
        self.write_records([RecordRef::HardState(hs)])?;
        self.hard_state = *hs;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_writable()?;
        if !self.dirty {
            return Ok(());
        }
        if let Err(e) = self.active.sync_data() {
            let path = self
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            // After a failed fsync the kernel may have dropped the dirty pages and will not
            // report it again; retrying would claim durability that does not exist.
            return Err(self.fail(StorageError::io(path, "sync", e)));
        }
        self.dirty = false;
        self.mark_synced();
        Ok(())
    }

    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, StorageError> {
        self.log.entries(lo, hi)
    }

    fn term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    fn first_index(&self) -> Index {
        self.log.first_index()
    }

    fn last_index(&self) -> Index {
        self.log.last_index()
    }

    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn save_snapshot(&mut self, snap: &Snapshot) -> Result<(), StorageError> {
        self.check_writable()?;
        let current = self.snapshot_meta.as_ref().map_or(0, |m| m.last_index);
        if snap.meta.last_index < current {
            return Err(StorageError::StaleSnapshot {
                index: snap.meta.last_index,
                current,
            });
        }
        self.write_snapshot_file(snap)?;
        self.snapshot_meta = Some(snap.meta.clone());
        let (index, term) = (snap.meta.last_index, snap.meta.last_term);
        if self.log.term(index) != Some(term) {
            // Memory must not disagree with the snapshot it now reports; open() would
            // reconcile the disk, so stopping writes is enough.
            if let Err(e) = self.write_records([RecordRef::SetBase { index, term }]) {
                return Err(self.fail(e));
            }
            self.log.set_base(index, term);
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        if self.snapshot_meta.is_none() {
            return Ok(None);
        }
        read_snapshot_file(&*self.options.vfs, &self.dir.join(SNAPSHOT_FILE))
    }

    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshot_meta.clone()
    }

    fn compact_prefix(&mut self, through: Index) -> Result<(), StorageError> {
        let snapshot_index = self.snapshot_meta.as_ref().map_or(0, |m| m.last_index);
        if through > snapshot_index {
            return Err(StorageError::NotCovered {
                through,
                snapshot_index,
            });
        }
        if through <= self.log.base_index() {
            return Ok(());
        }
        let term = self.log.term(through).ok_or(StorageError::Unavailable {
            index: through,
            last_index: self.log.last_index(),
        })?;
        self.write_records([RecordRef::SetBase {
            index: through,
            term,
        }])?;
        self.log.set_base(through, term);
        // Segments may only go once the compaction record that makes them useless is durable.
        self.sync()?;
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[1].opened_at_last <= self.log.base_index() {
            let path = self.segments[0].path.clone();
            self.options
                .vfs
                .remove_file(&path)
                .map_err(|e| StorageError::io(&path, "remove", e))?;
            self.segments.remove(0);
            removed = true;
        }
        if removed {
            sync_dir(&*self.options.vfs, &self.wal_dir)?;
        }
        Ok(())
    }

    fn log_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }
}

#[cfg(test)]
impl DiskStorage {
    /// Leaves on disk only what was synced, as a power cut would, and returns the directory.
    pub(crate) fn crash(self) -> PathBuf {
        let (seq, len) = self.synced;
        for seg in &self.segments {
            if seg.seq > seq {
                let _ = self.options.vfs.remove_file(&seg.path);
            } else if seg.seq == seq {
                let _ = cut_tail(&*self.options.vfs, &seg.path, len);
            }
        }
        self.dir.clone()
    }

    pub(crate) fn fail_next_write_after(&mut self, bytes: usize) {
        self.fail_next_write_after = Some(bytes);
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.failed.is_some()
    }
}
