//! Durable storage for the Raft log, hard state and snapshot.
//!
//! The server drives a [`Storage`] with what the pure core hands it: entries to append (or a
//! conflicting suffix to drop), hard state to save, snapshots to keep. Nothing written is
//! promised to anyone until [`Storage::sync`] has returned `Ok`: **persist before you
//! promise** (DESIGN.md, principle 2). The server calls `sync` once per batch of work, after
//! all of the batch's appends and hard-state saves and before it sends a vote, an
//! acknowledgement or a "committed" reply. One `sync` covers every record written since the
//! previous one (group commit), so a busy leader pays for one fdatasync per batch, not per
//! entry.
//!
//! - [`MemStorage`]: the same rules held in memory, for tests of the layers above.
//! - [`DiskStorage`]: a segmented, checksummed, append-only write-ahead log plus a snapshot
//!   file; see `disk.rs` for the on-disk format and recovery rules.
//! - [`lock_data_dir`]: keeps a second `myraft-node` process off a data dir that is in use.
//! - [`Vfs`]: the file operations `DiskStorage` uses; [`OsFs`] is the real file system and
//!   [`SimFs`] one in memory that loses unsynced writes at a crash, for crash tests.
//!
//! Log positions follow Raft: the first entry has index 1; index 0 with term 0 stands for
//! "before the log". Once a prefix is compacted into a snapshot, the log keeps the index and
//! term of the entry just before its first one (the *base*), so the core can still check
//! `prev_log_term` at the boundary.

mod disk;
mod log;
mod mem;
mod record;
mod sim_fs;
mod vfs;

#[cfg(test)]
mod tests;

pub use disk::{
    DiskOptions, DiskStorage, PendingSync, RecoveryReport, SyncDone, DEFAULT_SEGMENT_SIZE,
};
pub use mem::MemStorage;
pub use myraft_wire::util::DataDirLock;
pub use sim_fs::{Fault, SimFs};
pub use vfs::{OpenMode, OsFs, Vfs, VfsFile};

use myraft_wire::raft::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};
use std::io;
use std::path::PathBuf;

/// What the server needs from stable storage.
///
/// Writes are buffered by the operating system until [`Storage::sync`]; reads always see
/// every successful write, synced or not. After any write error the store may refuse
/// further writes ([`StorageError::Failed`]); the node must then stop and restart, and
/// recovery keeps exactly what reached the disk.
pub trait Storage {
    /// Appends `entries`, which must have consecutive indexes. If the first index is at or
    /// below [`Storage::last_index`], the log's suffix from that index is dropped first
    /// (the caller has established that it conflicts, Raft §5.3). The first index may not be
    /// past `last_index + 1` nor at or below the compacted prefix. An empty slice is a no-op.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// Drops every entry with index `>= from`. A no-op when `from > last_index`; an error
    /// when `from` reaches into the compacted prefix (those entries are committed).
    fn truncate_suffix(&mut self, from: Index) -> Result<(), StorageError>;

    /// Records the current term, vote and commit index.
    fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError>;

    /// Makes every write since the previous `sync` durable, with one flush to disk.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Entries with index in `lo..hi`. [`StorageError::Compacted`] if `lo` is below
    /// [`Storage::first_index`]; [`StorageError::Unavailable`] if `hi > last_index + 1`.
    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, StorageError>;

    /// The term of the entry at `index`: known for every entry in the log, for the entry
    /// just before the first one (the snapshot's last entry, or 0 for index 0), and `None`
    /// elsewhere.
    fn term(&self, index: Index) -> Option<Term>;

    /// Index of the first entry held (`last_index + 1` when the log is empty).
    fn first_index(&self) -> Index;

    /// Index of the last entry held, or of the entry just before the first one when the log
    /// is empty (0 for a new node).
    fn last_index(&self) -> Index;

    /// The hard state last saved ([`HardState::default`] for a new node).
    fn hard_state(&self) -> HardState;

    /// Stores `snap` durably before returning. If the log holds the snapshot's last entry
    /// with the same term, the log is left as it is (compact it later with
    /// [`Storage::compact_prefix`]); otherwise the whole log is discarded and continues
    /// after the snapshot (Raft §7, InstallSnapshot steps 6–7). A snapshot older than the
    /// one held is refused.
    fn save_snapshot(&mut self, snap: &Snapshot) -> Result<(), StorageError>;

    /// The snapshot last saved, read back in full.
    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError>;

    /// What the snapshot last saved stands for, without its data.
    fn snapshot_meta(&self) -> Option<SnapshotMeta>;

    /// Drops every entry with index `<= through`, which must be covered by the saved
    /// snapshot. Disk space is reclaimed as far as whole segments allow. A no-op when
    /// `through` is already compacted.
    fn compact_prefix(&mut self, through: Index) -> Result<(), StorageError>;

    /// Bytes the log occupies (on disk for [`DiskStorage`], encoded for [`MemStorage`]).
    fn log_bytes(&self) -> u64;
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused an operation: disk full, permission denied, I/O error.
    #[error("cannot {op} {}: {source}; {}", path.display(), myraft_wire::util::io_advice(source))]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// A record in the middle of the log (or in the snapshot file) fails its checksum or
    /// does not make sense. Recovery never guesses past such a record.
    #[error(
        "corrupt data in {} at byte {offset}: {reason}; restore the data dir from a backup, \
         or remove it and let the node rejoin and catch up from its peers",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// Entries at or below `first_index - 1` live only in the snapshot now.
    #[error("index {index} is compacted; the log starts at {first_index}")]
    Compacted { index: Index, first_index: Index },

    /// Asked for entries past the end of the log.
    #[error("index {index} is past the end of the log (last index {last_index})")]
    Unavailable { index: Index, last_index: Index },

    /// An append whose entries do not continue the log.
    #[error("append out of order: expected index {expected}, got {got}")]
    OutOfOrder { expected: Index, got: Index },

    /// `compact_prefix` beyond what the snapshot covers would lose entries.
    #[error("cannot compact through {through}: the snapshot only covers through {snapshot_index}")]
    NotCovered {
        through: Index,
        snapshot_index: Index,
    },

    /// A snapshot older than the one already held.
    #[error("snapshot at index {index} is older than the one held (index {current})")]
    StaleSnapshot { index: Index, current: Index },

    /// An earlier write or sync failed; what is on disk may not match what is in memory, so
    /// the store refuses to write more.
    #[error("storage refuses writes after an earlier failure ({cause}); restart the node to recover from what is on disk")]
    Failed { cause: String },

    /// A record could not be encoded; nothing was written.
    #[error("cannot encode a log record: {0}")]
    Encode(String),

    /// Another process holds the data dir, or its lock file cannot be made.
    #[error(transparent)]
    Lock(#[from] myraft_wire::util::LockError),
}

/// Locks a node's data dir (through `DIR/LOCK`) for this process's whole life: two
/// processes appending to one log would break it beyond repair.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<DataDirLock, StorageError> {
    Ok(DataDirLock::acquire(dir, "LOCK", "myraft-node")?)
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            op,
            source,
        }
    }
}
