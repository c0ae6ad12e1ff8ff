//! The state store: the applied state in redb (DESIGN.md, "State machine and storage").
//!
//! Committed entries are applied here in log order, a batch per write transaction, and the
//! meta row that says how far (applied index and term, membership, revision counters,
//! replicated time) is written in the same transaction, so the store is always exactly the
//! state after some log index. Most commits are not synced; a synced one now and then marks
//! how far the Raft log may be compacted, and after a crash the store is the state at that
//! synced commit while the log still holds everything after it.
//!
//! Tables, after etcd's MVCC store:
//! - `revisions`: revision → the key, its create revision and version, and the value or a
//!   tombstone. Every put and delete adds one row; compaction removes rows.
//! - `key_index`: (key, revision) → (), every retained version of every key, for reads at an
//!   old revision and for history.
//! - `latest`: key → (revision, create revision, version) of each live key's current value.
//! - `sessions`: client id → its exactly-once session (dissertation §6.3).
//! - `meta`: the one row described above.
//!
//! The semantics (what a put, delete, compaction or retry answers) are those of the in-memory
//! model in `crate::state_machine`; a property test holds the two to the same answers.
//!
//! - `record`: the byte layout of a revision row;
//! - `stream`: the store as a stream of records, for snapshots sent to followers, and the
//!   builder that turns such a stream into a new store file.

mod record;
pub mod stream;

#[cfg(test)]
mod tests;

pub use record::RevRecord;
pub use stream::{Export, Import, ImportError};

use crate::state_machine::{
    apply_with_session, ApplyError, ApplyResult, Command, DeleteOutcome, History, KeyValue,
    KvError, LogCommand, Reply, Session, Sessions, DEFAULT_SESSION_TIMEOUT_MS,
};
use crate::storage::Vfs;
use myraft_wire::raft::{Entry, EntryPayload, Membership};
use record::RevRef;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageBackend, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const REVISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("revisions");
const KEY_INDEX: TableDefinition<(&[u8], u64), ()> = TableDefinition::new("key_index");
const LATEST: TableDefinition<&[u8], (u64, u64, u64)> = TableDefinition::new("latest");
const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_ROW: &str = "state";

/// Version of the store's layout (tables and rows); bumped whenever it changes.
pub const STORE_FORMAT: u32 = 1;
/// The store's file inside the data dir.
pub const STORE_FILE: &str = "state.redb";

/// Revisions examined per step of a compaction, so that the keys it touches stay few.
const COMPACT_STEP: u64 = 10_000;

/// The revision counters of the MVCC map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvMeta {
    /// Revision of the latest write; 0 before the first one.
    pub revision: u64,
    /// Reads below this revision fail with `compacted`; 0 if never compacted.
    pub compacted_before: u64,
    /// Keys whose latest version is a value.
    pub live_keys: u64,
    /// Rows in the revision table: retained versions over all keys, tombstones included.
    pub versions: u64,
}

/// The meta row: what state the store holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    /// The last log entry applied, and its term: the store is the state after it.
    pub applied_index: u64,
    pub applied_term: u64,
    /// The configuration of the last configuration entry applied.
    pub membership: Membership,
    pub kv: KvMeta,
    /// The latest entry time applied: where replicated time stands. It never runs backwards,
    /// or a session could expire and then seem alive again.
    pub clock_ms: u64,
    /// Must be the same on every node; a snapshot carries it and installing adopts it.
    pub session_timeout_ms: u64,
}

/// How a store is opened.
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// Bytes redb may keep in its page cache.
    pub cache_bytes: usize,
    /// For a new store only; an existing store keeps the value it was created with.
    pub session_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_bytes: 128 << 20,
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
        }
    }
}

/// What to do about a failed state store operation: for a failed file operation what
/// [`myraft_wire::util::io_advice`] says; otherwise the store may be damaged.
fn db_advice(e: &redb::Error) -> &'static str {
    // redb reports a damaged file as an I/O error too ("Not a redb database"), so only the
    // kinds that name the file system's state get the file system's remedy.
    let remedy = match e {
        redb::Error::Io(io) => myraft_wire::util::io_remedy(io),
        _ => None,
    };
    remedy.unwrap_or(
        "check the disk, or remove the data dir and let the node rejoin and catch up from its \
         peers",
    )
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {}: {source}; {}", path.display(), db_advice(source))]
    Db {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error(
        "state store is damaged: {0}; remove the data dir and let the node rejoin and catch \
         up from its peers"
    )]
    Corrupt(String),
    #[error(
        "state store format {found} is not supported by this build, which reads format \
         {STORE_FORMAT}; run the same MyRaft version on every node"
    )]
    UnsupportedFormat { found: u32 },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Entries must be applied in log order without gaps; a driver bug otherwise.
    #[error("entry {got} does not follow the applied index {applied}")]
    Gap { applied: u64, got: u64 },
    /// An earlier write failed: what is on disk may not match what is in memory.
    #[error("state store refuses writes after an earlier failure; restart the node")]
    Failed,
}

impl StoreError {
    fn db(path: &Path, e: impl Into<redb::Error>) -> Self {
        StoreError::Db {
            path: path.to_owned(),
            source: e.into(),
        }
    }
}

/// What applying one entry did, for the replies it releases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub term: u64,
    pub what: AppliedKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppliedKind {
    Command(ApplyResult),
    Config(Membership),
    Noop,
}

/// The applied state of one node.
pub struct Store {
    db: Database,
    path: PathBuf,
    meta: Meta,
    sessions: Sessions,
    failed: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// A redb backend behind a box, so the file system can be chosen at run time.
#[derive(Debug)]
pub struct DynBackend(pub Box<dyn StorageBackend>);

impl StorageBackend for DynBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.0.close()
    }
}

pub(crate) fn open_db(
    vfs: &dyn Vfs,
    path: &Path,
    cache_bytes: usize,
) -> Result<Database, StoreError> {
    let backend = vfs.open_db(path).map_err(|source| StoreError::Io {
        op: "open",
        path: path.to_owned(),
        source,
    })?;
    Database::builder()
        .set_cache_size(cache_bytes)
        .create_with_backend(DynBackend(backend))
        .map_err(|e| StoreError::db(path, e))
}

impl Store {
    /// Opens the store at `path`, creating an empty one if there is none.
    pub fn open(vfs: &dyn Vfs, path: &Path, cfg: &StoreConfig) -> Result<Store, StoreError> {
        let db = open_db(vfs, path, cfg.cache_bytes)?;
        let existing = read_meta(&db, path)?;
        let meta = match existing {
            Some(m) => m,
            None => {
                let m = Meta {
                    format: STORE_FORMAT,
                    session_timeout_ms: cfg.session_timeout_ms,
                    ..Meta::default()
                };
                let txn = db.begin_write().map_err(|e| StoreError::db(path, e))?;
                {
                    let mut t = txn.open_table(META).map_err(|e| StoreError::db(path, e))?;
                    t.insert(META_ROW, encode_meta(&m).as_slice())
                        .map_err(|e| StoreError::db(path, e))?;
                    for def in [REVISIONS, SESSIONS] {
                        txn.open_table(def).map_err(|e| StoreError::db(path, e))?;
                    }
                    txn.open_table(KEY_INDEX)
                        .map_err(|e| StoreError::db(path, e))?;
                    txn.open_table(LATEST)
                        .map_err(|e| StoreError::db(path, e))?;
                }
                txn.commit().map_err(|e| StoreError::db(path, e))?;
                // The file is new: its name must be durable before the log is compacted on
                // the strength of what it holds.
                sync_parent(vfs, path)?;
                m
            }
        };
        let sessions = load_sessions(&db, path, meta.clock_ms)?;
        Ok(Store {
            db,
            path: path.to_owned(),
            meta,
            sessions,
            failed: false,
        })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a store streamed from another node is built before it replaces this one.
    pub fn incoming_path(&self) -> PathBuf {
        self.path.with_extension("redb.incoming")
    }

    /// Where a stream could continue this store: its rows are a prefix of every later state
    /// of the cluster's, so a leader whose rows agree sends only what follows (`None` for an
    /// empty store, or one whose latest row was compacted away).
    pub fn resume_point(&self) -> Result<Option<myraft_wire::snapshot::ResumePoint>, StoreError> {
        let kv = self.meta.kv;
        if kv.revision == 0 {
            return Ok(None);
        }
        stream::point_at(&self.db, &self.path, kv.revision, kv.compacted_before)
    }

    /// Copies this store, synced first, to `to`: the start of an import that continues it
    /// ([`Import::resume`]).
    pub fn copy_to(&mut self, vfs: &dyn Vfs, to: &Path) -> Result<(), StoreError> {
        self.apply(&[], true)?;
        vfs.copy_file(&self.path, to)
            .map_err(|source| StoreError::Io {
                op: "copy",
                path: self.path.clone(),
                source,
            })?;
        Ok(())
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Applies `entries` in one write transaction, synced to disk if `durable`. Entries at
    /// or below the applied index were applied before (the store was installed from a
    /// snapshot, or replay overlaps it) and are skipped.
    pub fn apply(&mut self, entries: &[Entry], durable: bool) -> Result<Vec<Applied>, StoreError> {
        if self.failed {
            return Err(StoreError::Failed);
        }
        // Any error leaves the in-memory sessions ahead of the aborted transaction: refuse
        // further writes, and let a restart read back what is on disk.
        self.failed = true;
        let out = self.apply_inner(entries, durable)?;
        self.failed = false;
        Ok(out)
    }

    fn apply_inner(
        &mut self,
        entries: &[Entry],
        durable: bool,
    ) -> Result<Vec<Applied>, StoreError> {
        let path = self.path.clone();
        let db_err = |e: redb::Error| StoreError::db(&path, e);
        let mut meta = self.meta.clone();
        let mut out = Vec::with_capacity(entries.len());
        let mut dirty: BTreeSet<u64> = BTreeSet::new();
        let txn = begin_write(&self.db, &path, durable)?;
        {
            let mut t = Tables::open(&txn, &path)?;
            for e in entries {
                if e.index <= meta.applied_index {
                    continue;
                }
                if e.index != meta.applied_index + 1 {
                    return Err(StoreError::Gap {
                        applied: meta.applied_index,
                        got: e.index,
                    });
                }
                meta.applied_index = e.index;
                meta.applied_term = e.term;
                let what = match &e.payload {
                    EntryPayload::Command(bytes) => {
                        AppliedKind::Command(match LogCommand::decode(bytes) {
                            Ok(c) => {
                                let applied = apply_with_session(
                                    &mut self.sessions,
                                    &mut meta.clock_ms,
                                    meta.session_timeout_ms,
                                    c.entry_time_ms,
                                    &c.req,
                                    |cmd| t.execute(&mut meta.kv, cmd),
                                )?;
                                dirty.extend(applied.expired);
                                if applied.touched {
                                    dirty.insert(c.req.client_id);
                                }
                                applied.reply
                            }
                            Err(err) => Err(ApplyError::BadEntry {
                                index: e.index,
                                reason: err.to_string(),
                            }),
                        })
                    }
                    EntryPayload::Config(m) => {
                        meta.membership = m.clone();
                        AppliedKind::Config(m.clone())
                    }
                    EntryPayload::Noop => AppliedKind::Noop,
                };
                out.push(Applied {
                    index: e.index,
                    term: e.term,
                    what,
                });
            }
            let mut sessions = txn.open_table(SESSIONS).map_err(|e| db_err(e.into()))?;
            for client in dirty {
                match self.sessions.get(client) {
                    Some(s) => {
                        sessions
                            .insert(client, encode_session(s).as_slice())
                            .map_err(|e| db_err(e.into()))?;
                    }
                    None => {
                        sessions.remove(client).map_err(|e| db_err(e.into()))?;
                    }
                }
            }
            let mut m = txn.open_table(META).map_err(|e| db_err(e.into()))?;
            m.insert(META_ROW, encode_meta(&meta).as_slice())
                .map_err(|e| db_err(e.into()))?;
        }
        txn.commit().map_err(|e| db_err(e.into()))?;
        self.meta = meta;
        Ok(out)
    }

    /// A consistent view of the store as of now, for reads and snapshots.
    pub fn reader(&self) -> Result<Reader, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| StoreError::db(&self.path, e))?;
        Reader::new(txn, self.path.clone())
    }

    /// Replaces this store by the one at `incoming` (a finished [`Import`]): the file is
    /// renamed over this store's and the directory synced, so after a crash the data dir
    /// holds the old store or the new one, whole. Refused if the new store is not ahead.
    pub fn replace_with(
        &mut self,
        vfs: &dyn Vfs,
        incoming: &Path,
        cfg: &StoreConfig,
    ) -> Result<bool, StoreError> {
        let io = |op, path: &Path, source| StoreError::Io {
            op,
            path: path.to_owned(),
            source,
        };
        let candidate = {
            let db = open_db(vfs, incoming, cfg.cache_bytes)?;
            read_meta(&db, incoming)?
        };
        let Some(candidate) = candidate else {
            return Err(StoreError::Corrupt(format!(
                "{} has no meta row",
                incoming.display()
            )));
        };
        if candidate.applied_index <= self.meta.applied_index {
            vfs.remove_file(incoming)
                .map_err(|e| io("remove", incoming, e))?;
            return Ok(false);
        }
        vfs.rename(incoming, &self.path)
            .map_err(|e| io("rename", incoming, e))?;
        sync_parent(vfs, &self.path)?;
        *self = Store::open(vfs, &self.path.clone(), cfg)?;
        Ok(true)
    }
}

fn read_meta(db: &Database, path: &Path) -> Result<Option<Meta>, StoreError> {
    meta_table_row(db, path, META_ROW)?
        .map(|row| decode_meta(&row))
        .transpose()
}

/// A row of the meta table (the meta row, or an import's progress row), if present.
pub(crate) fn meta_table_row(
    db: &Database,
    path: &Path,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let txn = db.begin_read().map_err(|e| StoreError::db(path, e))?;
    let table = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(StoreError::db(path, e)),
    };
    let row = table.get(key).map_err(|e| StoreError::db(path, e))?;
    Ok(row.map(|r| r.value().to_vec()))
}

fn load_sessions(db: &Database, path: &Path, clock_ms: u64) -> Result<Sessions, StoreError> {
    let txn = db.begin_read().map_err(|e| StoreError::db(path, e))?;
    let table = txn
        .open_table(SESSIONS)
        .map_err(|e| StoreError::db(path, e))?;
    let mut sessions = Sessions::default();
    for row in table.iter().map_err(|e| StoreError::db(path, e))? {
        let (k, v) = row.map_err(|e| StoreError::db(path, e))?;
        sessions.insert_loaded(k.value(), decode_session(v.value())?);
    }
    sessions
        .validate_and_index(clock_ms)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(sessions)
}

pub(crate) fn encode_meta(m: &Meta) -> Vec<u8> {
    // Derived serde types into a Vec: rmp-serde fails only on I/O errors of the writer.
    rmp_serde::to_vec(m).expect("encoding the meta row into memory cannot fail")
}

pub(crate) fn decode_meta(bytes: &[u8]) -> Result<Meta, StoreError> {
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let meta: Result<Meta, _> = rmp_serde::from_slice(bytes);
    match meta {
        Ok(m) if m.format == STORE_FORMAT => Ok(m),
        Ok(m) => Err(StoreError::UnsupportedFormat { found: m.format }),
        Err(e) => match rmp_serde::from_slice::<Format>(bytes) {
            Ok(f) if f.format != STORE_FORMAT => {
                Err(StoreError::UnsupportedFormat { found: f.format })
            }
            _ => Err(StoreError::Corrupt(format!("meta row: {e}"))),
        },
    }
}

pub(crate) fn encode_session(s: &Session) -> Vec<u8> {
    rmp_serde::to_vec(s).expect("encoding a session into memory cannot fail")
}

pub(crate) fn decode_session(bytes: &[u8]) -> Result<Session, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("session row: {e}")))
}

/// The MVCC tables open in one write transaction.
/// Makes the name of the file at `path` durable.
fn sync_parent(vfs: &dyn Vfs, path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(dir) => vfs.sync_dir(dir).map_err(|source| StoreError::Io {
            op: "sync",
            path: dir.to_owned(),
            source,
        }),
        None => Ok(()),
    }
}

/// A write transaction of the store's file at `path`, synced at commit if `durable`.
fn begin_write(db: &Database, path: &Path, durable: bool) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write().map_err(|e| StoreError::db(path, e))?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(|e| StoreError::db(path, e))?;
    // A synced commit also records the allocator state, so that opening after a crash
    // need not walk the whole file (a restart takes seconds whatever the data size).
    txn.set_quick_repair(durable);
    Ok(txn)
}

struct Tables<'txn> {
    revs: redb::Table<'txn, u64, &'static [u8]>,
    idx: redb::Table<'txn, (&'static [u8], u64), ()>,
    latest: redb::Table<'txn, &'static [u8], (u64, u64, u64)>,
    path: &'txn Path,
}

impl<'txn> Tables<'txn> {
    /// The MVCC tables, which every write updates together.
    fn open(txn: &'txn WriteTransaction, path: &'txn Path) -> Result<Self, StoreError> {
        let err = |e| StoreError::db(path, e);
        Ok(Tables {
            revs: txn.open_table(REVISIONS).map_err(err)?,
            idx: txn.open_table(KEY_INDEX).map_err(err)?,
            latest: txn.open_table(LATEST).map_err(err)?,
            path,
        })
    }

    fn execute(&mut self, kv: &mut KvMeta, cmd: &Command) -> Result<ApplyResult, StoreError> {
        Ok(Ok(match cmd {
            Command::Put { key, value } => Reply::Put {
                revision: self.put(kv, key, value)?,
            },
            Command::Delete { key } => {
                let DeleteOutcome { revision, deleted } = self.delete(kv, key)?;
                Reply::Delete { revision, deleted }
            }
            Command::Compact { revision } => {
                if let Err(e) = self.compact(kv, *revision)? {
                    return Ok(Err(ApplyError::Kv(e)));
                }
                Reply::Compact {
                    compacted_before: kv.compacted_before,
                }
            }
            Command::Noop => Reply::Noop {
                revision: kv.revision,
            },
        }))
    }

    fn put(&mut self, kv: &mut KvMeta, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
        kv.revision += 1;
        let rev = kv.revision;
        let current = self
            .latest
            .get(key)
            .map_err(|e| StoreError::db(self.path, e))?
            .map(|g| g.value());
        // A put after a tombstone (or on a new key) starts a new generation, as in etcd's
        // keyIndex: create_revision moves and version restarts at 1.
        let (create, version) = match current {
            Some((_, create, version)) => (create, version + 1),
            None => {
                kv.live_keys += 1;
                (rev, 1)
            }
        };
        self.write_version(rev, key, create, version, Some(value))?;
        self.latest
            .insert(key, (rev, create, version))
            .map_err(|e| StoreError::db(self.path, e))?;
        kv.versions += 1;
        Ok(rev)
    }

    /// The revision row and the key index entry of one write.
    fn write_version(
        &mut self,
        rev: u64,
        key: &[u8],
        create: u64,
        version: u64,
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let row = record::encode(key, create, version, value);
        self.revs
            .insert(rev, row.as_slice())
            .map_err(|e| StoreError::db(self.path, e))?;
        self.idx
            .insert((key, rev), ())
            .map_err(|e| StoreError::db(self.path, e))?;
        Ok(())
    }

    /// Like etcd, deleting a key that does not exist writes nothing and keeps the revision.
    fn delete(&mut self, kv: &mut KvMeta, key: &[u8]) -> Result<DeleteOutcome, StoreError> {
        let removed = self
            .latest
            .remove(key)
            .map_err(|e| StoreError::db(self.path, e))?
            .is_some();
        if !removed {
            return Ok(DeleteOutcome {
                revision: kv.revision,
                deleted: false,
            });
        }
        kv.revision += 1;
        let rev = kv.revision;
        self.write_version(rev, key, 0, 0, None)?;
        kv.versions += 1;
        kv.live_keys -= 1;
        Ok(DeleteOutcome {
            revision: rev,
            deleted: true,
        })
    }

    /// etcd's compaction: of the versions at or below `revision`, each key keeps only its
    /// latest, and only if that is a value. Only keys written since the previous compaction
    /// point can have anything to drop (every other key's latest version at or below
    /// `revision` already survived that compaction as a value), so this walks the revisions
    /// written since then, a step at a time.
    fn compact(
        &mut self,
        kv: &mut KvMeta,
        revision: u64,
    ) -> Result<Result<(), KvError>, StoreError> {
        if revision > kv.revision {
            return Ok(Err(KvError::FutureRevision {
                requested: revision,
                current: kv.revision,
            }));
        }
        if revision < kv.compacted_before {
            return Ok(Err(KvError::Compacted {
                compacted_before: kv.compacted_before,
            }));
        }
        let mut from = kv.compacted_before;
        while from < revision {
            let to = revision.min(from.saturating_add(COMPACT_STEP));
            self.compact_step(kv, from, to)?;
            from = to;
        }
        kv.compacted_before = revision;
        Ok(Ok(()))
    }

    /// Compaction from point `from` to point `to` (compacting in steps ends where compacting
    /// at once does).
    fn compact_step(&mut self, kv: &mut KvMeta, from: u64, to: u64) -> Result<(), StoreError> {
        // Each key written in (from, to], with its latest revision there.
        let mut touched: BTreeMap<Vec<u8>, (u64, bool)> = BTreeMap::new();
        for row in self
            .revs
            .range(from + 1..=to)
            .map_err(|e| StoreError::db(self.path, e))?
        {
            let (rev, bytes) = row.map_err(|e| StoreError::db(self.path, e))?;
            let r = RevRef::decode(bytes.value())?;
            touched.insert(r.key.to_vec(), (rev.value(), r.value.is_none()));
        }
        for (key, (latest, tombstone)) in touched {
            let mut drop: Vec<u64> = Vec::new();
            for row in self
                .idx
                .range((key.as_slice(), 0)..(key.as_slice(), latest))
                .map_err(|e| StoreError::db(self.path, e))?
            {
                let (k, _) = row.map_err(|e| StoreError::db(self.path, e))?;
                drop.push(k.value().1);
            }
            if tombstone {
                drop.push(latest);
            }
            for rev in drop {
                self.revs
                    .remove(rev)
                    .map_err(|e| StoreError::db(self.path, e))?;
                self.idx
                    .remove((key.as_slice(), rev))
                    .map_err(|e| StoreError::db(self.path, e))?;
                kv.versions -= 1;
            }
        }
        Ok(())
    }
}

/// A consistent view of the store: a redb read transaction and the meta row it sees.
pub struct Reader {
    txn: ReadTransaction,
    meta: Meta,
    path: PathBuf,
}

impl Reader {
    fn new(txn: ReadTransaction, path: PathBuf) -> Result<Reader, StoreError> {
        let meta = {
            let t = txn.open_table(META).map_err(|e| StoreError::db(&path, e))?;
            let row = t
                .get(META_ROW)
                .map_err(|e| StoreError::db(&path, e))?
                .ok_or_else(|| StoreError::Corrupt("no meta row".into()))?;
            decode_meta(row.value())?
        };
        Ok(Reader { txn, meta, path })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::db(&self.path, e)
    }

    fn check_readable(&self, at: Option<u64>) -> Result<u64, KvError> {
        let kv = &self.meta.kv;
        crate::state_machine::readable_at(at, kv.revision, kv.compacted_before)
    }

    /// Reads `key` as of `at_revision` (the current revision if `None`). `Ok(Ok(None))`
    /// means the key did not exist or was deleted at that revision.
    pub fn get(
        &self,
        key: &[u8],
        at_revision: Option<u64>,
    ) -> Result<Result<Option<KeyValue>, KvError>, StoreError> {
        let at = match self.check_readable(at_revision) {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        let found = if at == self.meta.kv.revision {
            let latest = self.txn.open_table(LATEST).map_err(|e| self.err(e))?;
            let row = latest.get(key).map_err(|e| self.err(e))?;
            row.map(|g| g.value().0)
        } else {
            let idx = self.txn.open_table(KEY_INDEX).map_err(|e| self.err(e))?;
            let mut range = idx.range((key, 0)..=(key, at)).map_err(|e| self.err(e))?;
            match range.next_back() {
                Some(row) => Some(row.map_err(|e| self.err(e))?.0.value().1),
                None => None,
            }
        };
        let Some(rev) = found else {
            return Ok(Ok(None));
        };
        let revs = self.txn.open_table(REVISIONS).map_err(|e| self.err(e))?;
        let row = revs.get(rev).map_err(|e| self.err(e))?.ok_or_else(|| {
            StoreError::Corrupt(format!("key index names missing revision {rev}"))
        })?;
        let r = RevRef::decode(row.value())?;
        Ok(Ok(r.value.map(|v| KeyValue {
            value: v.to_vec(),
            mod_revision: rev,
            create_revision: r.create_revision,
            version: r.version,
        })))
    }

    /// The retained versions of `key`, oldest first.
    pub fn history(&self, key: &[u8]) -> Result<History, StoreError> {
        let idx = self.txn.open_table(KEY_INDEX).map_err(|e| self.err(e))?;
        let revs = self.txn.open_table(REVISIONS).map_err(|e| self.err(e))?;
        let mut versions = Vec::new();
        for row in idx
            .range((key, 0)..=(key, u64::MAX))
            .map_err(|e| self.err(e))?
        {
            let rev = row.map_err(|e| self.err(e))?.0.value().1;
            let bytes = revs.get(rev).map_err(|e| self.err(e))?.ok_or_else(|| {
                StoreError::Corrupt(format!("key index names missing revision {rev}"))
            })?;
            versions.push(RevRecord::decode(bytes.value())?.into_version(rev));
        }
        Ok(History {
            versions,
            compacted_before: self.meta.kv.compacted_before,
        })
    }

    /// The whole store as a stream of records (see [`stream`]).
    pub fn export(self) -> Result<Export, StoreError> {
        Export::new(self, None)
    }

    /// The stream for a receiver that offered to continue the partial store at `resume`:
    /// only what follows it if this state has the same rows there, else the whole store.
    pub fn export_continuing(
        self,
        resume: Option<myraft_wire::snapshot::ResumePoint>,
    ) -> Result<Export, StoreError> {
        Export::new(self, resume)
    }

    /// Rows in the revision table, for a check that the counters match the tables.
    pub fn count_rows(&self) -> Result<(u64, u64, u64), StoreError> {
        let revs = self.txn.open_table(REVISIONS).map_err(|e| self.err(e))?;
        let idx = self.txn.open_table(KEY_INDEX).map_err(|e| self.err(e))?;
        let latest = self.txn.open_table(LATEST).map_err(|e| self.err(e))?;
        Ok((
            revs.len().map_err(|e| self.err(e))?,
            idx.len().map_err(|e| self.err(e))?,
            latest.len().map_err(|e| self.err(e))?,
        ))
    }
}
