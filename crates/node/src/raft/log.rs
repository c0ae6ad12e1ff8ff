//! The in-memory view of the replicated log: entries after the latest snapshot, the commit
//! and apply cursors, and which part still has to reach stable storage.

use myraft_wire::raft::{Entry, Index, Membership, SnapshotMeta, Term};

/// What [`entry_size`] counts for an entry besides its payload: term, index and tag.
const ENTRY_OVERHEAD_BYTES: usize = 24;
/// What [`entry_size`] counts for a member of a configuration besides its name and address.
const MEMBER_OVERHEAD_BYTES: usize = 16;

/// The log after the latest snapshot. Entries are contiguous from `first_index()`, and
/// `snapshot_index() <= applied <= commit <= last_index()`: nothing is applied before it
/// commits, nor committed beyond the log.
#[derive(Debug, Clone)]
pub struct RaftLog {
    /// Everything up to and including this index lives only in the snapshot.
    snapshot_index: Index,
    snapshot_term: Term,
    /// Entries `snapshot_index + 1 ..= last_index()`.
    entries: Vec<Entry>,
    pub(crate) commit: Index,
    /// Highest index already handed to the driver for applying.
    pub(crate) applied: Index,
    /// Entries at or above this index have not been handed to the driver for persisting.
    unstable_from: Index,
    /// Highest index the driver has confirmed durable.
    pub(crate) persisted: Index,
}

impl RaftLog {
    /// The log as recovered from storage: the run of `entries` that directly follows the
    /// snapshot, all counted as persisted, with `commit` clamped into it.
    pub fn new(snapshot: &SnapshotMeta, mut entries: Vec<Entry>, commit: Index) -> Self {
        // Entries are found by their distance from the snapshot's index, so keep exactly the
        // run that follows it: storage may still hold entries the snapshot covers (a crash
        // between saving a snapshot and compacting the log).
        entries.retain(|e| e.index > snapshot.last_index);
        let contiguous = entries
            .iter()
            .zip(snapshot.last_index + 1..)
            .take_while(|(e, i)| e.index == *i)
            .count();
        entries.truncate(contiguous);
        let last = entries.last().map_or(snapshot.last_index, |e| e.index);
        RaftLog {
            snapshot_index: snapshot.last_index,
            snapshot_term: snapshot.last_term,
            entries,
            // A persisted commit index can never run ahead of the persisted log, but a
            // damaged hard state must not make us apply entries we do not have.
            commit: commit.clamp(snapshot.last_index, last),
            applied: snapshot.last_index,
            unstable_from: last + 1,
            persisted: last,
        }
    }

    /// The last index the snapshot covers (0 without one).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// The term of the entry at [`RaftLog::snapshot_index`].
    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    /// The highest index the driver has confirmed durable.
    pub fn persisted_index(&self) -> Index {
        self.persisted
    }

    /// The lowest index still held as an entry (one past the snapshot).
    pub fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    /// The index of the last entry, or the snapshot's index if no entry follows it.
    pub fn last_index(&self) -> Index {
        self.entries.last().map_or(self.snapshot_index, |e| e.index)
    }

    /// The term of the last entry, or the snapshot's term if no entry follows it.
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`, if we still know it.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.get(index).map(|e| e.term)
    }

    /// The entry at `index`, unless it is compacted into the snapshot or past the end.
    pub fn get(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// Entries `lo ..= hi`, cut short once `max_bytes` would be exceeded (but always at least
    /// one entry, so a single large entry still moves).
    pub fn slice(&self, lo: Index, hi: Index, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut i = lo.max(self.first_index());
        while i <= hi {
            let Some(e) = self.get(i) else { break };
            let size = entry_size(e);
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(e.clone());
            i += 1;
        }
        out
    }

    /// §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up-to-date as ours?
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The first index of the term of the entry at `index` (for fast backtracking, §5.3).
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut i = index;
        while i > self.first_index() && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index holding an entry of `term`, if any.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term == term)
            .map(|e| e.index)
    }

    /// Appends entries that follow the log directly.
    pub fn append(&mut self, entries: Vec<Entry>) {
        for e in entries {
            debug_assert_eq!(e.index, self.last_index() + 1);
            self.entries.push(e);
        }
    }

    /// Log Matching (§5.3): skip entries we already hold, truncate at the first conflicting
    /// one and append the rest. Returns whether the configuration may have changed: something
    /// was truncated or a configuration entry was appended.
    pub fn merge(&mut self, entries: Vec<Entry>) -> bool {
        let mut truncated = false;
        let mut config = false;
        for e in entries {
            let is_config = matches!(e.payload, myraft_wire::raft::EntryPayload::Config(_));
            if e.index <= self.snapshot_index {
                // Covered by our snapshot, hence committed, hence identical (§5.4).
                continue;
            }
            match self.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    self.truncate_from(e.index);
                    truncated = true;
                    config |= is_config;
                    self.entries.push(e);
                }
                None => {
                    if e.index == self.last_index() + 1 {
                        config |= is_config;
                        self.entries.push(e);
                    } else {
                        // A gap: the caller checked prev_log_index, so this cannot happen for
                        // a well-formed message; stop rather than leave a hole.
                        break;
                    }
                }
            }
        }
        truncated || config
    }

    fn truncate_from(&mut self, index: Index) {
        debug_assert!(index > self.commit, "truncating committed entry {index}");
        let keep = (index - self.snapshot_index - 1) as usize;
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
        self.persisted = self.persisted.min(index - 1);
    }

    /// Entries that the driver has not persisted yet; storage writes them over any suffix it
    /// holds from the first one's index on.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from.max(self.first_index());
        let out = self.slice(from, self.last_index(), usize::MAX);
        self.unstable_from = self.last_index() + 1;
        out
    }

    /// Whether some entries have not been handed out for persisting yet.
    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Committed entries that are durable here and not yet handed out for applying.
    pub fn take_committed(&mut self, max_bytes: usize) -> Vec<Entry> {
        let hi = self.commit.min(self.persisted);
        if hi <= self.applied {
            return Vec::new();
        }
        let out = self.slice(self.applied + 1, hi, max_bytes);
        if let Some(last) = out.last() {
            self.applied = last.index;
        }
        out
    }

    /// Whether committed, durable entries wait to be handed out for applying.
    pub fn has_committed(&self) -> bool {
        self.commit.min(self.persisted) > self.applied
    }

    /// Drops entries up to `index`, which a snapshot now covers.
    pub fn compact(&mut self, index: Index) {
        if index <= self.snapshot_index || index > self.applied {
            return;
        }
        let Some(term) = self.term(index) else { return };
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the whole log by a snapshot received from the leader (§7).
    pub fn restore(&mut self, meta: &SnapshotMeta) {
        if self.term(meta.last_index) == Some(meta.last_term) {
            // We already hold the entry the snapshot ends at: keep what follows (§7).
            let drop = (meta.last_index - self.snapshot_index) as usize;
            self.entries.drain(..drop);
            self.persisted = self.persisted.max(meta.last_index);
            self.unstable_from = self.unstable_from.max(meta.last_index + 1);
        } else {
            // Storage drops its whole log for this snapshot, so the cursors must forget the
            // old log's end too: whatever follows the snapshot is not on disk yet, and entries
            // appended from here on must reach storage before they are acknowledged.
            self.entries.clear();
            self.persisted = meta.last_index;
            self.unstable_from = meta.last_index + 1;
        }
        self.snapshot_index = meta.last_index;
        self.snapshot_term = meta.last_term;
        self.commit = self.commit.max(meta.last_index);
        self.applied = meta.last_index;
    }

    /// The latest configuration entry in the log, if any, with its index.
    pub fn latest_membership(&self) -> Option<(Index, &Membership)> {
        self.entries.iter().rev().find_map(|e| match &e.payload {
            myraft_wire::raft::EntryPayload::Config(m) => Some((e.index, m)),
            _ => None,
        })
    }

    /// The entries held, from [`RaftLog::first_index`] on.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

/// A cheap estimate of an entry's encoded size, for capping messages.
pub fn entry_size(e: &Entry) -> usize {
    use myraft_wire::raft::EntryPayload;
    ENTRY_OVERHEAD_BYTES
        + match &e.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(c) => c.len(),
            EntryPayload::Config(m) => m
                .members
                .values()
                .map(|m| MEMBER_OVERHEAD_BYTES + m.name.len() + m.addr.len())
                .sum(),
        }
}
