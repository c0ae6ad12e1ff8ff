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

use super::record::RevRef;
use super::{
    decode_meta, decode_session, encode_meta, encode_session, open_db, Meta, Reader, StoreError,
    KEY_INDEX, LATEST, META, META_ROW, REVISIONS, SESSIONS,
};
use crate::storage::Vfs;
use redb::{Database, Durability, ReadableTable};
use std::path::{Path, PathBuf};

const META_TAG: u8 = 1;
const REVISION_TAG: u8 = 2;
const SESSION_TAG: u8 = 3;
const END_TAG: u8 = 4;
const FRAME: usize = 5;
/// Largest record accepted: a revision row with the largest key and value, with room.
const MAX_RECORD: usize = 1 << 20;

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
    sm: &crate::state_machine::StateMachine,
    applied_term: u64,
    membership: myraft_wire::raft::Membership,
) -> Vec<u8> {
    let stats = sm.stats();
    let meta = Meta {
        format: super::STORE_FORMAT,
        applied_index: sm.applied_index(),
        applied_term,
        membership,
        kv: super::KvMeta {
            revision: sm.revision(),
            compacted_before: sm.compacted_before(),
            live_keys: stats.live_keys as u64,
            versions: stats.versions as u64,
        },
        clock_ms: sm.clock_ms(),
        session_timeout_ms: sm.session_timeout_ms(),
    };
    let mut rows: Vec<(u64, Vec<u8>)> = sm
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
    for (client, session) in sm.sessions().iter() {
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
}

impl Export {
    pub(super) fn new(reader: Reader) -> Result<Export, StoreError> {
        Ok(Export {
            reader,
            phase: Phase::Meta,
            framer: Framer::default(),
        })
    }

    pub fn meta(&self) -> &Meta {
        self.reader.meta()
    }

    /// Records the whole stream holds: for progress reports.
    pub fn total_records(&self) -> u64 {
        // Meta, revisions, sessions (counted as they come; few), end.
        2 + self.reader.meta().kv.versions
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
                    self.phase = Phase::Revisions { next: 0 };
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
    last_revision: Option<u64>,
    last_client: Option<u64>,
    live_keys: u64,
    versions: u64,
    ended: bool,
}

impl Import {
    /// Starts a new store file at `path`, replacing whatever was there.
    pub fn create(vfs: &dyn Vfs, path: &Path, cache_bytes: usize) -> Result<Import, StoreError> {
        match vfs.remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    op: "remove",
                    path: path.to_owned(),
                    source,
                })
            }
        }
        let db = open_db(vfs, path, cache_bytes)?;
        Ok(Import {
            db,
            path: path.to_owned(),
            meta: None,
            partial: Vec::new(),
            crc: crc32fast::Hasher::new(),
            records: 0,
            bytes: 0,
            last_revision: None,
            last_client: None,
            live_keys: 0,
            versions: 0,
            ended: false,
        })
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
    /// in one unsynced write transaction.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ImportError> {
        if self.ended && !data.is_empty() {
            return Err(bad("bytes after the end record"));
        }
        self.bytes += data.len() as u64;
        self.partial.extend_from_slice(data);
        let buf = std::mem::take(&mut self.partial);
        let path = self.path.clone();
        let err = |e: redb::Error| ImportError::Store(StoreError::db(&path, e));
        let mut txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        txn.set_durability(Durability::None)
            .map_err(|e| err(e.into()))?;
        let mut at = 0;
        {
            let mut revs = txn.open_table(REVISIONS).map_err(|e| err(e.into()))?;
            let mut idx = txn.open_table(KEY_INDEX).map_err(|e| err(e.into()))?;
            let mut latest = txn.open_table(LATEST).map_err(|e| err(e.into()))?;
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
                if tag == END_TAG {
                    self.end(payload)?;
                } else {
                    match (tag, &self.meta) {
                        (META_TAG, None) => {
                            let m = decode_meta(payload).map_err(|e| bad(e.to_string()))?;
                            self.meta = Some(m);
                        }
                        (META_TAG, Some(_)) => return Err(bad("a second meta record")),
                        (_, None) => return Err(bad("the stream does not start with its meta")),
                        (REVISION_TAG, Some(m)) => {
                            let (rev, row) = split_id(payload)?;
                            if self.last_revision.is_some_and(|l| rev <= l) || rev == 0 {
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
                            self.last_revision = Some(rev);
                            let r = RevRef::decode(row).map_err(|e| bad(e.to_string()))?;
                            let current = latest
                                .get(r.key)
                                .map_err(|e| err(e.into()))?
                                .map(|g| g.value());
                            check_generation(rev, &r, current)?;
                            revs.insert(rev, row).map_err(|e| err(e.into()))?;
                            idx.insert((r.key, rev), ()).map_err(|e| err(e.into()))?;
                            match r.value {
                                Some(_) => {
                                    if current.is_none() {
                                        self.live_keys += 1;
                                    }
                                    latest
                                        .insert(r.key, (rev, r.create_revision, r.version))
                                        .map_err(|e| err(e.into()))?;
                                }
                                None => {
                                    latest.remove(r.key).map_err(|e| err(e.into()))?;
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
                                return Err(bad(format!(
                                    "session of client {client} is inconsistent"
                                )));
                            }
                            sessions.insert(client, bytes).map_err(|e| err(e.into()))?;
                        }
                        (other, Some(_)) => return Err(bad(format!("unknown record tag {other}"))),
                    }
                }
                self.crc.update(record);
                self.records += 1;
                at += FRAME + len;
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        self.partial = buf[at..].to_vec();
        Ok(())
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

    /// Whether the end record has arrived.
    pub fn is_complete(&self) -> bool {
        self.ended
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
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(meta)
    }
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
