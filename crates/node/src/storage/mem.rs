//! [`MemStorage`]: the storage rules with nothing on disk, for tests of the layers above.

use super::log::MemLog;
use super::{Storage, StorageError};
use myraft_wire::raft::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

/// Keeps everything in memory; `sync` is free and a dropped store is gone.
#[derive(Debug, Clone)]
pub struct MemStorage {
    log: MemLog,
    hard_state: HardState,
    snapshot: Option<Snapshot>,
}

impl Default for MemStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStorage {
    pub fn new() -> Self {
        MemStorage {
            log: MemLog::new(),
            hard_state: HardState::default(),
            snapshot: None,
        }
    }
}

/// The size this entry would take as a framed log record, so that `log_bytes` means the
/// same thing for both stores.
fn encoded_len(entry: &Entry) -> u64 {
    rmp_serde::to_vec(entry).map_or(0, |v| v.len() as u64 + 8)
}

impl Storage for MemStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.log.append(entries)
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<(), StorageError> {
        self.log.truncate_suffix(from)
    }

    fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.hard_state = *hs;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
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
        if let Some(current) = &self.snapshot {
            if snap.meta.last_index < current.meta.last_index {
                return Err(StorageError::StaleSnapshot {
                    index: snap.meta.last_index,
                    current: current.meta.last_index,
                });
            }
        }
        if self.log.term(snap.meta.last_index) != Some(snap.meta.last_term) {
            self.log.set_base(snap.meta.last_index, snap.meta.last_term);
        }
        self.snapshot = Some(snap.clone());
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.snapshot.clone())
    }

    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshot.as_ref().map(|s| s.meta.clone())
    }

    fn compact_prefix(&mut self, through: Index) -> Result<(), StorageError> {
        let snapshot_index = self.snapshot.as_ref().map_or(0, |s| s.meta.last_index);
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
        self.log.set_base(through, term);
        Ok(())
    }

    fn log_bytes(&self) -> u64 {
        self.log.iter().map(encoded_len).sum()
    }
}
