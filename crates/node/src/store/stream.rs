//! The store as a stream of records: what a snapshot sent to a follower is.
//!
//! The leader reads the stream from one read transaction ([`Export`]), so it is the state at
//! one applied index however long the transfer takes, and it is produced a block at a time:
//! the whole state is never in memory. The follower feeds the bytes, in order, into an
//! [`Import`], which writes a new store file beside the live one; only a stream that ends
//! with a matching record count and checksum, and whose rows add up to the counters in its
//! meta record, becomes a store.
//!
//! Each record is `[tag: u8][length: u32 LE][payload]`, in this order:
//! 1. one `META` record: the meta row (MessagePack);
//! 2. a `REVISION` record per revision row, in revision order: `[revision: u64 LE][row]`;
//!    the key index and the latest table are rebuilt from these;
//! 3. a `SESSION` record per client session, by client id: `[client: u64 LE][MessagePack]`;
//! 4. one `END` record: `[records before it: u64 LE][CRC-32 of every byte before it: u32 LE]`.
//!
//! Revision rows never change once written, except that compaction removes some, and the
//! stream sends them in revision order. So an import cut short (the sender died, or this
//! node restarted) is kept, with a progress row written in each of its transactions and
//! synced every [`CHECKPOINT_BYTES`]; a later stream may continue it from after its last
//! row ([`ResumePoint`]) if the sender's state has the same rows up to there: compacted at
//! the same point, or at a later one no further than that row (the importer then compacts
//! its part alike). A continued stream has its own meta record (the sender's state now),
//! the revision rows after the point, every session, and an end record over its own bytes.

use super::record::RevRef;
use super::{
    begin_write, decode_meta, decode_session, encode_meta, encode_session, open_db, Meta, Reader,
    StoreError, Tables, META, META_ROW, REVISIONS, SESSIONS,
};
use crate::storage::Vfs;
use myraft_wire::snapshot::ResumePoint;
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const META_TAG: u8 = 1;
const REVISION_TAG: u8 = 2;
const SESSION_TAG: u8 = 3;
const END_TAG: u8 = 4;
const FRAME: usize = 5;
/// Largest record accepted: a revision row with the largest key and value, with room.
const MAX_RECORD: usize = 1 << 20;
/// Stream bytes an import takes between synced commits: what a crash may cost it.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
/// The meta table's row of a partial store: how far its import got.
const PROGRESS_ROW: &str = "import";

/// How far an import got, kept in the partial store in the transaction of the rows it
/// describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// The last revision row imported.
    last_revision: u64,
    /// The compaction point of the state the rows came from.
    compacted_before: u64,
    live_keys: u64,
    versions: u64,
}

fn encode_progress(p: &Progress) -> Vec<u8> {
    // Plain integers: encoding cannot fail.
    rmp_serde::to_vec(p).unwrap_or_default()
}

enum Phase {
    Meta,
    Revisions { next: u64 },
    Sessions { next: u64 },
    End,
    Done,
}

/// Frames records and keeps the running count and checksum the end record carries.
#[derive(Default)]
struct Framer {
    crc: crc32fast::Hasher,
    records: u64,
    bytes: u64,
}

impl Framer {
    fn push(&mut self, out: &mut Vec<u8>, tag: u8, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let start = out.len();
        out.push(tag);
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        for p in parts {
            out.extend_from_slice(p);
        }
        self.crc.update(&out[start..]);
        self.bytes += (out.len() - start) as u64;
        self.records += 1;
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        let records = self.records;
        let crc = self.crc.clone().finalize();
        let start = out.len();
        out.push(END_TAG);
        out.extend_from_slice(&12u32.to_le_bytes());
        out.extend_from_slice(&records.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        self.bytes += (out.len() - start) as u64;
        self.records += 1;
    }
}

/// The stream of a state held in memory by the model of `crate::state_machine`: how a data
/// dir of an earlier MyRaft, whose state lived in the log's snapshot file, becomes a store.
pub(crate) fn model_stream(
    model: &crate::state_machine::StateMachine,
    applied_term: u64,
    membership: myraft_wire::raft::Membership,
) -> Vec<u8> {
    let stats = model.stats();
    let meta = Meta {
        format: super::STORE_FORMAT,
        applied_index: model.applied_index(),
        applied_term,
        membership,
        kv: super::KvMeta {
            revision: model.revision(),
            compacted_before: model.compacted_before(),
            live_keys: stats.live_keys as u64,
            versions: stats.versions as u64,
        },
        clock_ms: model.clock_ms(),
        session_timeout_ms: model.session_timeout_ms(),
    };
    let mut rows: Vec<(u64, Vec<u8>)> = model
        .kv()
        .versions()
        .map(|(key, v)| {
            let row = super::record::encode(key, v.create_revision, v.version, v.value.as_deref());
            (v.revision, row)
        })
        .collect();
    rows.sort_unstable_by_key(|(rev, _)| *rev);
    let mut f = Framer::default();
    let mut out = Vec::new();
    f.push(&mut out, META_TAG, &[&encode_meta(&meta)]);
    for (rev, row) in &rows {
        f.push(&mut out, REVISION_TAG, &[&rev.to_le_bytes(), row]);
    }
    for (client, session) in model.sessions().iter() {
        f.push(
            &mut out,
            SESSION_TAG,
            &[&client.to_le_bytes(), &encode_session(session)],
        );
    }
    f.end(&mut out);
    out
}

/// Produces the stream of one read transaction, a block at a time.
pub struct Export {
    reader: Reader,
    phase: Phase,
    framer: Framer,
    after_revision: u64,
    resume_considered: bool,
}

impl Export {
    /// The stream of `reader`'s state: whole, or continuing the receiver's partial store at
    /// `resume` if that holds the same rows as this state up to its point.
    pub(super) fn new(reader: Reader, resume: Option<ResumePoint>) -> Result<Export, StoreError> {
        let after_revision = match resume {
            Some(p) if p.after_revision > 0 && continues(&reader, &p)? => p.after_revision,
            _ => 0,
        };
        Ok(Export {
            reader,
            phase: Phase::Meta,
            framer: Framer::default(),
            after_revision,
            resume_considered: resume.is_some(),
        })
    }

    pub fn meta(&self) -> &Meta {
        self.reader.meta()
    }

    /// The stream holds the revisions after this one only (0: all of them).
    pub fn after_revision(&self) -> u64 {
        self.after_revision
    }

    /// Made in answer to a resume offer, taken or not.
    pub fn resume_considered(&self) -> bool {
        self.resume_considered
    }

    /// Records the whole stream holds: for progress reports (estimated for a stream that
    /// continues another, as if revisions were spread evenly).
    pub fn total_records(&self) -> u64 {
        let kv = &self.reader.meta().kv;
        let rows = if self.after_revision == 0 {
            kv.versions
        } else {
            let span = kv.revision.saturating_sub(kv.compacted_before).max(1);
            let left = kv.revision.saturating_sub(self.after_revision);
            kv.versions.saturating_mul(left.min(span)) / span
        };
        // Meta, revisions, sessions (counted as they come; few), end.
        2 + rows
    }

    pub fn records_so_far(&self) -> u64 {
        self.framer.records
    }

    pub fn bytes_so_far(&self) -> u64 {
        self.framer.bytes
    }

    fn push(&mut self, out: &mut Vec<u8>, tag: u8, parts: &[&[u8]]) {
        self.framer.push(out, tag, parts);
    }

    /// The next block of whole records, about `target` bytes long; `None` after the end.
    pub fn next_block(&mut self, target: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let mut out = Vec::with_capacity(target + 64);
        while out.len() < target {
            match self.phase {
                Phase::Meta => {
                    let meta = encode_meta(self.reader.meta());
                    self.push(&mut out, META_TAG, &[&meta]);
                    self.phase = Phase::Revisions {
                        next: self.after_revision + 1,
                    };
                }
                Phase::Revisions { next } => {
                    let revs = self
                        .reader
                        .txn
                        .open_table(REVISIONS)
                        .map_err(|e| self.reader.err(e))?;
                    let mut last = None;
                    let rows = revs.range(next..).map_err(|e| self.reader.err(e))?;
                    let mut batch = Vec::new();
                    let mut size = out.len();
                    for row in rows {
                        let (k, v) = row.map_err(|e| self.reader.err(e))?;
                        let rev = k.value();
                        let bytes = v.value().to_vec();
                        size += FRAME + 8 + bytes.len();
                        batch.push((rev, bytes));
                        last = Some(rev);
                        if size >= target {
                            break;
                        }
                    }
                    for (rev, bytes) in batch {
                        self.push(&mut out, REVISION_TAG, &[&rev.to_le_bytes(), &bytes]);
                    }
                    self.phase = match last {
                        Some(rev) => Phase::Revisions { next: rev + 1 },
                        None => Phase::Sessions { next: 0 },
                    };
                }
                Phase::Sessions { next } => {
                    let sessions = self
                        .reader
                        .txn
                        .open_table(SESSIONS)
                        .map_err(|e| self.reader.err(e))?;
                    let mut batch = Vec::new();
                    let mut last = None;
                    let mut size = out.len();
                    for row in sessions.range(next..).map_err(|e| self.reader.err(e))? {
                        let (k, v) = row.map_err(|e| self.reader.err(e))?;
                        let client = k.value();
                        // Re-encoded through the type, so a damaged row fails here and not
                        // at the follower.
                        let s = encode_session(&decode_session(v.value())?);
                        size += FRAME + 8 + s.len();
                        batch.push((client, s));
                        last = Some(client);
                        if size >= target {
                            break;
                        }
                    }
                    for (client, s) in batch {
                        self.push(&mut out, SESSION_TAG, &[&client.to_le_bytes(), &s]);
                    }
                    self.phase = match last {
                        Some(c) if c < u64::MAX => Phase::Sessions { next: c + 1 },
                        _ => Phase::End,
                    };
                }
                Phase::End => {
                    self.framer.end(&mut out);
                    self.phase = Phase::Done;
                }
                Phase::Done => break,
            }
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }
}

/// Whether a partial store at `p` holds the rows of `reader`'s state up to `p`: the same
/// compaction, or a later one the importer can catch up on (no further than its last row),
/// and the same row at the point.
fn continues(reader: &Reader, p: &ResumePoint) -> Result<bool, StoreError> {
    let kv = &reader.meta().kv;
    let compaction_ok = p.compacted_before == kv.compacted_before
        || (p.compacted_before < kv.compacted_before && kv.compacted_before <= p.after_revision);
    if p.after_revision > kv.revision || !compaction_ok {
        return Ok(false);
    }
    let revs = reader
        .txn
        .open_table(REVISIONS)
        .map_err(|e| reader.err(e))?;
    let row = revs.get(p.after_revision).map_err(|e| reader.err(e))?;
    Ok(row.is_some_and(|r| crc32fast::hash(r.value()) == p.row_crc))
}

/// Why an incoming snapshot stream was refused. `Stream` errors are the sender's or the
/// network's: drop the stream and fetch it again. `Store` errors are this node's disk.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("snapshot stream refused: {0}")]
    Stream(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn bad(why: impl Into<String>) -> ImportError {
    ImportError::Stream(why.into())
}

/// Builds a new store file from a stream of records.
pub struct Import {
    db: Database,
    path: PathBuf,
    meta: Option<Meta>,
    /// Bytes of a record not yet complete.
    partial: Vec<u8>,
    crc: crc32fast::Hasher,
    records: u64,
    bytes: u64,
    /// Stream bytes taken since the last synced commit.
    unsynced_bytes: u64,
    checkpoint_bytes: u64,
    /// The last revision row stored.
    last_revision: Option<u64>,
    /// The last revision row of the stream seen: rows come in order, after its base.
    stream_last: Option<u64>,
    last_client: Option<u64>,
    live_keys: u64,
    versions: u64,
    /// For a stream that continues a partial store: how far that store went.
    continued: Option<Progress>,
    ended: bool,
}

impl Import {
    /// Starts a new store file at `path`, replacing whatever was there.
    pub fn create(vfs: &dyn Vfs, path: &Path, cache_bytes: usize) -> Result<Import, StoreError> {
        remove_if_present(vfs, path)?;
        let db = open_db(vfs, path, cache_bytes)?;
        // The file's name must outlive a power cut for its synced part to be continued.
        super::sync_parent(vfs, path)?;
        Ok(Import::with(db, path, None, 0))
    }

    /// `continued`: how far the partial store goes, for a stream after revision `after`.
    fn with(db: Database, path: &Path, continued: Option<Progress>, after: u64) -> Import {
        Import {
            db,
            path: path.to_owned(),
            meta: None,
            partial: Vec::new(),
            crc: crc32fast::Hasher::new(),
            records: 0,
            bytes: 0,
            unsynced_bytes: 0,
            checkpoint_bytes: CHECKPOINT_BYTES,
            last_revision: continued.map(|p| p.last_revision),
            stream_last: continued.map(|_| after),
            last_client: None,
            live_keys: continued.map_or(0, |p| p.live_keys),
            versions: continued.map_or(0, |p| p.versions),
            continued,
            ended: false,
        }
    }

    /// Opens the partial store at `path` to take a stream that continues it after revision
    /// `after_revision`, which must be where it stopped: an import cut short, or a copy of
    /// this node's store ([`super::Store::copy_to`]). Its sessions are dropped: the stream
    /// brings them all.
    pub fn resume(
        vfs: &dyn Vfs,
        path: &Path,
        cache_bytes: usize,
        after_revision: u64,
    ) -> Result<Import, ImportError> {
        let db = open_db(vfs, path, cache_bytes)?;
        let progress = match read_progress(&db, path)? {
            Some(p) => Some(p),
            // A copy of a store: its meta row says how far its rows go.
            None => super::read_meta(&db, path)?.map(|m| Progress {
                last_revision: m.kv.revision,
                compacted_before: m.kv.compacted_before,
                live_keys: m.kv.live_keys,
                versions: m.kv.versions,
            }),
        };
        // A partial store that went further than the point it offered (this node's store
        // applied more entries meanwhile) still continues: the rows between are the same,
        // and are skipped.
        let Some(progress) = progress.filter(|p| p.last_revision >= after_revision) else {
            return Err(bad(format!(
                "the stream continues after revision {after_revision}, which the partial \
                 store here does not reach"
            )));
        };
        let err = |e: redb::Error| ImportError::Store(StoreError::db(path, e));
        let txn = begin_write(&db, path, false)?;
        txn.delete_table(SESSIONS).map_err(|e| err(e.into()))?;
        {
            // Not a store until the stream is whole: only the progress row says what it is.
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            meta.remove(META_ROW).map_err(|e| err(e.into()))?;
            meta.insert(PROGRESS_ROW, encode_progress(&progress).as_slice())
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(Import::with(db, path, Some(progress), after_revision))
    }

    /// Where the partial store at `path` could be continued from, if there is one there
    /// (an import cut short). A file that is not one is removed.
    pub fn resume_point(
        vfs: &dyn Vfs,
        path: &Path,
        cache_bytes: usize,
    ) -> Result<Option<ResumePoint>, StoreError> {
        match vfs.file_len(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "inspect",
                    path: path.to_owned(),
                    source,
                })
            }
        }
        let point = open_db(vfs, path, cache_bytes).and_then(|db| point_of(&db, path));
        match point {
            Ok(Some(p)) => Ok(Some(p)),
            Ok(None) => {
                remove_if_present(vfs, path)?;
                Ok(None)
            }
            Err(e) => {
                // Only ever a head start: a damaged one is dropped and the stream fetched whole.
                tracing::warn!(error = %e, "a partial snapshot store is unreadable; removed");
                remove_if_present(vfs, path)?;
                Ok(None)
            }
        }
    }

    /// Syncs what was imported so far and closes the file; a later stream may continue it
    /// from the point returned (none if not a single revision row arrived).
    pub fn seal(self) -> Result<Option<ResumePoint>, StoreError> {
        let txn = begin_write(&self.db, &self.path, true)?;
        txn.commit().map_err(|e| StoreError::db(&self.path, e))?;
        point_of(&self.db, &self.path)
    }

    /// Syncs every `bytes` instead of every [`CHECKPOINT_BYTES`]: for tests of small streams.
    #[cfg(test)]
    pub(crate) fn checkpoint_every(mut self, bytes: u64) -> Self {
        self.checkpoint_bytes = bytes;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the stream taken so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The meta record, once it has arrived.
    pub fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    /// Takes the next bytes of the stream, in order, and writes the records they complete
    /// in one write transaction, synced every [`CHECKPOINT_BYTES`]. The applier hands over
    /// all the bytes at hand at once (see `coalesce` there): a transaction per datagram
    /// would cost more than the rows it writes once the store is large.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ImportError> {
        if self.ended && !data.is_empty() {
            return Err(bad("bytes after the end record"));
        }
        self.bytes += data.len() as u64;
        self.unsynced_bytes += data.len() as u64;
        self.partial.extend_from_slice(data);
        let buf = std::mem::take(&mut self.partial);
        let path = self.path.clone();
        let err = |e: redb::Error| ImportError::Store(StoreError::db(&path, e));
        let durable = self.unsynced_bytes >= self.checkpoint_bytes;
        let txn = begin_write(&self.db, &path, durable)?;
        let mut at = 0;
        {
            let mut t = Tables::open(&txn, &path)?;
            let mut sessions = txn.open_table(SESSIONS).map_err(|e| err(e.into()))?;
            while buf.len() - at >= FRAME {
                let tag = buf[at];
                let len = u32::from_le_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]])
                    as usize;
                if len > MAX_RECORD {
                    return Err(bad(format!("record of {len} bytes")));
                }
                if buf.len() - at - FRAME < len {
                    break;
                }
                let record = &buf[at..at + FRAME + len];
                let payload = &record[FRAME..];
                if self.ended {
                    return Err(bad("records after the end record"));
                }
                match (tag, &self.meta) {
                    (END_TAG, _) => self.end(payload)?,
                    (META_TAG, None) => {
                        let m = decode_meta(payload).map_err(|e| bad(e.to_string()))?;
                        if let Some(p) = self.continued {
                            self.catch_up(&mut t, &p, &m)?;
                        }
                        self.meta = Some(m);
                    }
                    (META_TAG, Some(_)) => return Err(bad("a second meta record")),
                    (_, None) => return Err(bad("the stream does not start with its meta")),
                    (REVISION_TAG, Some(m)) => {
                        let (rev, row) = split_id(payload)?;
                        if self.stream_last.is_some_and(|l| rev <= l) || rev == 0 {
                            return Err(bad(format!("revision {rev} out of order")));
                        }
                        if rev > m.kv.revision {
                            return Err(bad(format!(
                                "revision {rev} above the store's revision {}",
                                m.kv.revision
                            )));
                        }
                        if self.last_client.is_some() {
                            return Err(bad("a revision after the sessions"));
                        }
                        self.stream_last = Some(rev);
                        let r = RevRef::decode(row).map_err(|e| bad(e.to_string()))?;
                        if self.last_revision.is_some_and(|l| rev <= l) {
                            // Already here (see `resume`): the same row, as rows never change.
                            let same = t
                                .revs
                                .get(rev)
                                .map_err(|e| err(e.into()))?
                                .is_some_and(|g| g.value() == row);
                            if !same {
                                return Err(bad(format!(
                                    "revision {rev} differs from the one the partial store holds"
                                )));
                            }
                            self.crc.update(record);
                            self.records += 1;
                            at += FRAME + len;
                            continue;
                        }
                        self.last_revision = Some(rev);
                        let current = t
                            .latest
                            .get(r.key)
                            .map_err(|e| err(e.into()))?
                            .map(|g| g.value());
                        check_generation(rev, &r, current)?;
                        t.revs.insert(rev, row).map_err(|e| err(e.into()))?;
                        t.idx.insert((r.key, rev), ()).map_err(|e| err(e.into()))?;
                        match r.value {
                            Some(_) => {
                                if current.is_none() {
                                    self.live_keys += 1;
                                }
                                t.latest
                                    .insert(r.key, (rev, r.create_revision, r.version))
                                    .map_err(|e| err(e.into()))?;
                            }
                            None => {
                                t.latest.remove(r.key).map_err(|e| err(e.into()))?;
                                self.live_keys -= 1;
                            }
                        }
                        self.versions += 1;
                    }
                    (SESSION_TAG, Some(m)) => {
                        let (client, bytes) = split_id(payload)?;
                        if self.last_client.is_some_and(|l| client <= l) {
                            return Err(bad(format!("session {client} out of order")));
                        }
                        self.last_client = Some(client);
                        let s = decode_session(bytes).map_err(|e| bad(e.to_string()))?;
                        if s.last_active_ms > m.clock_ms || s.last_seq == 0 {
                            return Err(bad(format!("session of client {client} is inconsistent")));
                        }
                        sessions.insert(client, bytes).map_err(|e| err(e.into()))?;
                    }
                    (other, Some(_)) => return Err(bad(format!("unknown record tag {other}"))),
                }
                self.crc.update(record);
                self.records += 1;
                at += FRAME + len;
            }
            if let Some(progress) = self.progress() {
                let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
                meta.insert(PROGRESS_ROW, encode_progress(&progress).as_slice())
                    .map_err(|e| err(e.into()))?;
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        if durable {
            self.unsynced_bytes = 0;
        }
        self.partial = buf[at..].to_vec();
        Ok(())
    }

    /// How far the rows go, once there are any.
    fn progress(&self) -> Option<Progress> {
        let meta = self.meta.as_ref()?;
        Some(Progress {
            last_revision: self.last_revision?,
            compacted_before: meta.kv.compacted_before,
            live_keys: self.live_keys,
            versions: self.versions,
        })
    }

    /// The meta record of a stream that continues the partial store `p`: the sender's state
    /// must hold the same rows up to the point, and if it was compacted further since (no
    /// further than the point) the partial store is compacted alike.
    fn catch_up(&mut self, t: &mut Tables<'_>, p: &Progress, m: &Meta) -> Result<(), ImportError> {
        if m.kv.revision < p.last_revision {
            return Err(bad(format!(
                "the stream's state ends at revision {}, before the partial store's {}",
                m.kv.revision, p.last_revision
            )));
        }
        if m.kv.compacted_before == p.compacted_before {
            return Ok(());
        }
        if m.kv.compacted_before < p.compacted_before || m.kv.compacted_before > p.last_revision {
            return Err(bad(format!(
                "the stream's state is compacted below {}, the partial store below {} \
                 through revision {}: it cannot continue it",
                m.kv.compacted_before, p.compacted_before, p.last_revision
            )));
        }
        let mut kv = super::KvMeta {
            revision: p.last_revision,
            compacted_before: p.compacted_before,
            live_keys: self.live_keys,
            versions: self.versions,
        };
        let started = std::time::Instant::now();
        match t.compact(&mut kv, m.kv.compacted_before)? {
            Ok(()) => {
                tracing::info!(
                    from = p.compacted_before,
                    to = m.kv.compacted_before,
                    versions_dropped = self.versions - kv.versions,
                    ms = started.elapsed().as_millis() as u64,
                    "compacted the partial store as the stream's state is"
                );
                self.versions = kv.versions;
                Ok(())
            }
            Err(e) => Err(bad(format!("compacting the partial store: {e}"))),
        }
    }

    fn end(&mut self, payload: &[u8]) -> Result<(), ImportError> {
        if payload.len() != 12 {
            return Err(bad("end record of the wrong size"));
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&payload[..8]);
        let records = u64::from_le_bytes(n);
        let crc = u32::from_le_bytes([payload[8], payload[9], payload[10], payload[11]]);
        if records != self.records {
            return Err(bad(format!(
                "the end record counts {records} records, {} arrived",
                self.records
            )));
        }
        if crc != self.crc.clone().finalize() {
            return Err(bad("checksum mismatch"));
        }
        self.ended = true;
        Ok(())
    }

    /// Checks that the rows add up to the meta record's counters, writes the meta row and
    /// syncs the file. The store is then ready for [`super::Store::replace_with`].
    pub fn finish(self) -> Result<Meta, ImportError> {
        if !self.ended || !self.partial.is_empty() {
            return Err(bad("the stream ended early"));
        }
        let Some(meta) = self.meta else {
            return Err(bad("no meta record"));
        };
        if (self.live_keys, self.versions) != (meta.kv.live_keys, meta.kv.versions) {
            return Err(bad(format!(
                "{} live keys and {} versions arrived; the meta row says {} and {}",
                self.live_keys, self.versions, meta.kv.live_keys, meta.kv.versions
            )));
        }
        let path = self.path.clone();
        let err = |e: redb::Error| ImportError::Store(StoreError::db(&path, e));
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = txn.open_table(META).map_err(|e| err(e.into()))?;
            t.insert(META_ROW, encode_meta(&meta).as_slice())
                .map_err(|e| err(e.into()))?;
            t.remove(PROGRESS_ROW).map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(meta)
    }
}

fn remove_if_present(vfs: &dyn Vfs, path: &Path) -> Result<(), StoreError> {
    vfs.remove_if_present(path)
        .map_err(|source| StoreError::Io {
            op: "remove",
            path: path.to_owned(),
            source,
        })
}

fn read_progress(db: &Database, path: &Path) -> Result<Option<Progress>, StoreError> {
    super::meta_table_row(db, path, PROGRESS_ROW)?
        .map(|row| {
            rmp_serde::from_slice(&row)
                .map_err(|e| StoreError::Corrupt(format!("import progress row: {e}")))
        })
        .transpose()
}

/// Where the partial store `db` could be continued from.
fn point_of(db: &Database, path: &Path) -> Result<Option<ResumePoint>, StoreError> {
    let Some(p) = read_progress(db, path)? else {
        return Ok(None);
    };
    point_at(db, path, p.last_revision, p.compacted_before)?
        .map(Some)
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the partial store's progress names revision {}, which it lacks",
                p.last_revision
            ))
        })
}

/// The point after `revision` of the store `db`, compacted below `compacted_before`: the
/// CRC of its row there names the rows up to it (`None` if it has no such row).
pub(super) fn point_at(
    db: &Database,
    path: &Path,
    revision: u64,
    compacted_before: u64,
) -> Result<Option<ResumePoint>, StoreError> {
    let txn = db.begin_read().map_err(|e| StoreError::db(path, e))?;
    let revs = txn
        .open_table(REVISIONS)
        .map_err(|e| StoreError::db(path, e))?;
    let row = revs.get(revision).map_err(|e| StoreError::db(path, e))?;
    Ok(row.map(|row| ResumePoint {
        after_revision: revision,
        compacted_before,
        row_crc: crc32fast::hash(row.value()),
    }))
}

fn split_id(payload: &[u8]) -> Result<(u64, &[u8]), ImportError> {
    if payload.len() < 8 {
        return Err(bad("record shorter than its id"));
    }
    let (id, rest) = payload.split_at(8);
    let mut a = [0u8; 8];
    a.copy_from_slice(id);
    Ok((u64::from_le_bytes(a), rest))
}

/// The rules of a key's versions (the in-memory model's `check_versions`), one row at a time:
/// `current` is the key's live version so far, if any.
fn check_generation(
    rev: u64,
    r: &RevRef<'_>,
    current: Option<(u64, u64, u64)>,
) -> Result<(), ImportError> {
    let ok = match (r.value, current) {
        // A tombstone ends a live generation.
        (None, Some(_)) => true,
        (None, None) => false,
        (Some(_), Some((_, create, version))) => {
            r.create_revision == create && r.version == version + 1
        }
        // The first retained version of a generation may follow compacted ones.
        (Some(_), None) => r.create_revision <= rev && r.create_revision > 0 && r.version >= 1,
    };
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "revision {rev} of key {:?} does not follow its earlier versions",
            String::from_utf8_lossy(r.key)
        )))
    }
}
