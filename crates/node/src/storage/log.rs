//! The log's rules, held in memory. Both stores use this type, and recovery replays the
//! write-ahead log through the very same methods, so a replayed log cannot disagree with
//! the one that was written.

use super::StorageError;
use myraft_wire::raft::{Entry, Index, Term};
use std::collections::VecDeque;

#[derive(Debug, Default, Clone)]
pub(crate) struct MemLog {
    /// Index of the entry just before `entries[0]`.
    base_index: Index,
    /// Its term. `None` only mid-recovery, after a truncation reached below the oldest
    /// surviving segment; a later compaction record must restore it (checked at the end).
    base_term: Option<Term>,
    entries: VecDeque<Entry>,
}

impl MemLog {
    pub(crate) fn new() -> Self {
        MemLog {
            base_index: 0,
            base_term: Some(0),
            entries: VecDeque::new(),
        }
    }

    /// A log whose entries through `index` are known to exist only by their last term.
    pub(crate) fn with_base(index: Index, term: Term) -> Self {
        MemLog {
            base_index: index,
            base_term: Some(term),
            entries: VecDeque::new(),
        }
    }

    pub(crate) fn base_index(&self) -> Index {
        self.base_index
    }

    pub(crate) fn base_term(&self) -> Option<Term> {
        self.base_term
    }

    pub(crate) fn first_index(&self) -> Index {
        self.base_index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.base_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Option<Term> {
        self.term(self.last_index())
    }

    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.base_index {
            return self.base_term;
        }
        self.get(index).map(|e| e.term)
    }

    pub(crate) fn get(&self, index: Index) -> Option<&Entry> {
        let offset = index.checked_sub(self.base_index + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    pub(crate) fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, StorageError> {
        if lo < self.first_index() {
            return Err(StorageError::Compacted {
                index: lo,
                first_index: self.first_index(),
            });
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable {
                index: hi - 1,
                last_index: self.last_index(),
            });
        }
        if hi <= lo {
            return Ok(Vec::new());
        }
        let skip = (lo - self.first_index()) as usize;
        let take = (hi - lo) as usize;
        Ok(self.entries.iter().skip(skip).take(take).cloned().collect())
    }

    /// Checks an append without changing anything, so that a store can refuse it before it
    /// writes a byte.
    pub(crate) fn check_append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.base_index {
            return Err(StorageError::Compacted {
                index: first.index,
                first_index: self.first_index(),
            });
        }
        if first.index > self.last_index() + 1 {
            return Err(StorageError::OutOfOrder {
                expected: self.last_index() + 1,
                got: first.index,
            });
        }
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(StorageError::OutOfOrder {
                    expected: pair[0].index + 1,
                    got: pair[1].index,
                });
            }
        }
        Ok(())
    }

    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_append(entries)?;
        if let Some(first) = entries.first() {
            self.truncate_to(first.index);
            self.entries.extend(entries.iter().cloned());
        }
        Ok(())
    }

    pub(crate) fn check_truncate(&self, from: Index) -> Result<(), StorageError> {
        if from <= self.base_index {
            return Err(StorageError::Compacted {
                index: from,
                first_index: self.first_index(),
            });
        }
        Ok(())
    }

    pub(crate) fn truncate_suffix(&mut self, from: Index) -> Result<(), StorageError> {
        self.check_truncate(from)?;
        self.truncate_to(from);
        Ok(())
    }

    /// Recovery's form of `truncate_suffix`: when the oldest surviving segment starts after
    /// deleted ones, a truncation recorded in it may reach below what is left. The entries
    /// dropped are then unknown, and so is the new base's term.
    pub(crate) fn truncate_suffix_below_base(&mut self, from: Index) {
        if from <= self.base_index {
            self.entries.clear();
            self.base_index = from.saturating_sub(1);
            self.base_term = None;
        } else {
            self.truncate_to(from);
        }
    }

    /// Recovery's form of `append` for one entry, for the same reason as
    /// [`MemLog::truncate_suffix_below_base`]: an append that overwrote a conflicting suffix
    /// may start below what is left of the log.
    pub(crate) fn append_below_base(&mut self, entry: &Entry) -> Result<(), StorageError> {
        if entry.index <= self.base_index {
            self.truncate_suffix_below_base(entry.index);
        }
        self.append(std::slice::from_ref(entry))
    }

    fn truncate_to(&mut self, from: Index) {
        if from <= self.last_index() {
            let keep = from.saturating_sub(self.first_index()) as usize;
            self.entries.truncate(keep);
        }
    }

    /// Moves the base forward to (`index`, `term`). Entries after it are kept when the log
    /// holds that exact entry, and all dropped otherwise (a snapshot from the leader that
    /// this log disagrees with). Never moves the base backwards.
    pub(crate) fn set_base(&mut self, index: Index, term: Term) {
        if index < self.base_index {
            return;
        }
        let matches = (index == self.base_index && self.base_term.is_none_or(|t| t == term))
            || self.get(index).is_some_and(|e| e.term == term);
        if matches {
            let drop = (index - self.base_index) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.base_index = index;
        self.base_term = Some(term);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}
