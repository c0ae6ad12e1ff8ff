//! The multi-version key/value map, after etcd's MVCC store (`server/storage/mvcc`).
//!
//! Every committed write gets the next value of one store-wide revision counter. Each key
//! keeps the list of its versions in revision order; a delete appends a tombstone instead of
//! removing anything, so a read at an older revision still sees what was there. Compaction is
//! the only thing that forgets.
//!
//! Differences from etcd worth knowing: revisions have no sub-revision (there are no
//! multi-key transactions), and compacting at the current compaction point again is a no-op
//! rather than an error, so that a retried `compact` from a script succeeds.

use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};
use std::collections::BTreeMap;

/// Errors of reads and of compaction. Serializable because a failed `Compact` command's
/// outcome is cached in the client's session and replayed on a retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KvError {
    /// The requested revision was dropped by compaction. etcd: `ErrCompacted`.
    #[error(
        "revision has been compacted: only revisions {compacted_before} and later are kept; \
         read at a newer revision"
    )]
    Compacted { compacted_before: u64 },
    /// The requested revision has not been written yet. etcd: `ErrFutureRev`.
    #[error("revision {requested} is in the future: the current revision is {current}")]
    FutureRevision { requested: u64, current: u64 },
}

/// One retained version of a key, as stored and as listed by [`Mvcc::history`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    /// The revision of the write that produced this version (etcd's `mod_revision`).
    pub revision: u64,
    /// Revision at which the key was last created, i.e. first put after not existing; 0 for
    /// a tombstone.
    pub create_revision: u64,
    /// Number of puts since the key was last created; 0 for a tombstone (etcd resets it on
    /// delete).
    pub version: u64,
    /// `None` marks a tombstone.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

impl KeyVersion {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// A live value, as returned by [`Mvcc::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub value: Vec<u8>,
    pub mod_revision: u64,
    pub create_revision: u64,
    pub version: u64,
}

/// The outcome of a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteOutcome {
    /// The tombstone's revision, or the unchanged current revision if nothing was deleted.
    pub revision: u64,
    pub deleted: bool,
}

/// The retained versions of one key, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    pub versions: Vec<KeyVersion>,
    /// Versions older than this revision may have been dropped by compaction.
    pub compacted_before: u64,
}

/// The versioned map. Iteration order, and so the serialized form, depends only on the
/// contents: `BTreeMap` everywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mvcc {
    /// Revision of the latest write; 0 before the first one.
    revision: u64,
    /// Reads below this revision fail with [`KvError::Compacted`]; 0 if never compacted.
    compacted_before: u64,
    /// Never holds an empty list: a key whose versions all went away is removed.
    keys: BTreeMap<ByteBuf, Vec<KeyVersion>>,
    /// Derived counters, kept so that [`Mvcc::stats`] is O(1); recomputed on restore.
    #[serde(skip)]
    counts: Counts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    live_keys: usize,
    versions: usize,
}

/// Sizes of the map, for node detail output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MvccStats {
    /// Keys whose latest version is a value.
    pub live_keys: usize,
    /// Keys with any retained version, tombstones included.
    pub tracked_keys: usize,
    /// Retained versions over all keys, tombstones included.
    pub versions: usize,
    pub revision: u64,
    pub compacted_before: u64,
}

impl Mvcc {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn compacted_before(&self) -> u64 {
        self.compacted_before
    }

    pub fn stats(&self) -> MvccStats {
        MvccStats {
            live_keys: self.counts.live_keys,
            tracked_keys: self.keys.len(),
            versions: self.counts.versions,
            revision: self.revision,
            compacted_before: self.compacted_before,
        }
    }

    /// Every retained version of every key, by key.
    pub(crate) fn versions(&self) -> impl Iterator<Item = (&[u8], &KeyVersion)> {
        self.keys
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_slice(), v)))
    }

    /// Writes `value` at the next revision and returns that revision.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>) -> u64 {
        self.revision += 1;
        let revision = self.revision;
        let versions = self.keys.entry(ByteBuf::from(key)).or_default();
        // A put after a tombstone (or on a new key) starts a new generation, as in etcd's
        // keyIndex: create_revision moves and version restarts at 1.
        let (create_revision, version) = match versions.last() {
            Some(last) if !last.is_tombstone() => (last.create_revision, last.version + 1),
            _ => {
                self.counts.live_keys += 1;
                (revision, 1)
            }
        };
        versions.push(KeyVersion {
            revision,
            create_revision,
            version,
            value: Some(value),
        });
        self.counts.versions += 1;
        revision
    }

    /// Writes a tombstone for `key` if it currently has a value. Like etcd, deleting a key
    /// that does not exist writes nothing and does not move the revision.
    pub fn delete(&mut self, key: &[u8]) -> DeleteOutcome {
        let Some(versions) = self.keys.get_mut(Bytes::new(key)) else {
            return self.nothing_deleted();
        };
        if versions.last().is_none_or(KeyVersion::is_tombstone) {
            return self.nothing_deleted();
        }
        self.revision += 1;
        versions.push(KeyVersion {
            revision: self.revision,
            create_revision: 0,
            version: 0,
            value: None,
        });
        self.counts.versions += 1;
        self.counts.live_keys -= 1;
        DeleteOutcome {
            revision: self.revision,
            deleted: true,
        }
    }

    fn nothing_deleted(&self) -> DeleteOutcome {
        DeleteOutcome {
            revision: self.revision,
            deleted: false,
        }
    }

    /// Reads `key` as of `at_revision` (the current revision if `None`). `Ok(None)` means the
    /// key did not exist or was deleted at that revision.
    pub fn get(&self, key: &[u8], at_revision: Option<u64>) -> Result<Option<KeyValue>, KvError> {
        let at = self.check_readable(at_revision)?;
        let Some(versions) = self.keys.get(Bytes::new(key)) else {
            return Ok(None);
        };
        let visible = versions.partition_point(|v| v.revision <= at);
        let Some(found) = visible.checked_sub(1).and_then(|i| versions.get(i)) else {
            return Ok(None);
        };
        Ok(found.value.as_ref().map(|value| KeyValue {
            value: value.clone(),
            mod_revision: found.revision,
            create_revision: found.create_revision,
            version: found.version,
        }))
    }

    /// The retained versions of `key`, oldest first; empty if there are none.
    pub fn history(&self, key: &[u8]) -> History {
        History {
            versions: self.keys.get(Bytes::new(key)).cloned().unwrap_or_default(),
            compacted_before: self.compacted_before,
        }
    }

    fn check_readable(&self, at_revision: Option<u64>) -> Result<u64, KvError> {
        readable_at(at_revision, self.revision, self.compacted_before)
    }

    /// Forgets what no read at `revision` or later can see, and makes reads below `revision`
    /// fail. Compaction does not move the revision (etcd neither).
    ///
    /// Per key this is etcd's `keyIndex.compact`: every version above `revision` stays, and of
    /// those at or below it only the latest survives, and only if it is a value — that one
    /// version is what a read at `revision` returns. A tombstone there reads the same as no
    /// version at all, so it goes too.
    pub fn compact(&mut self, revision: u64) -> Result<(), KvError> {
        if revision > self.revision {
            return Err(KvError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        if revision < self.compacted_before {
            return Err(KvError::Compacted {
                compacted_before: self.compacted_before,
            });
        }
        self.compacted_before = revision;
        let mut dropped = 0;
        self.keys.retain(|_, versions| {
            let at_or_below = versions.partition_point(|v| v.revision <= revision);
            let keep_from = match at_or_below.checked_sub(1).and_then(|i| versions.get(i)) {
                Some(latest) if !latest.is_tombstone() => at_or_below - 1,
                _ => at_or_below,
            };
            dropped += keep_from;
            versions.drain(..keep_from);
            !versions.is_empty()
        });
        // Live keys are unchanged: a key's latest version always survives unless it is a
        // tombstone, and a key whose latest version is a tombstone was not live.
        self.counts.versions -= dropped;
        Ok(())
    }

    /// Checks the invariants the methods above maintain, so that a restored snapshot that
    /// decodes but makes no sense is refused rather than trusted; then rebuilds the counters.
    pub(crate) fn validate_and_count(&mut self) -> Result<(), String> {
        if self.compacted_before > self.revision {
            return Err(format!(
                "compaction point {} is above the revision {}",
                self.compacted_before, self.revision
            ));
        }
        let mut counts = Counts::default();
        for (key, versions) in &self.keys {
            check_versions(versions, self.revision)
                .map_err(|why| format!("key {:?}: {why}", String::from_utf8_lossy(key)))?;
            counts.versions += versions.len();
            if versions.last().is_some_and(|v| !v.is_tombstone()) {
                counts.live_keys += 1;
            }
        }
        self.counts = counts;
        Ok(())
    }
}

/// Resolves and checks a read revision, as etcd's `rangeKeys` does: `None` reads the
/// current revision; the future and the compacted past are refused.
pub(crate) fn readable_at(
    at_revision: Option<u64>,
    revision: u64,
    compacted_before: u64,
) -> Result<u64, KvError> {
    let at = at_revision.unwrap_or(revision);
    if at > revision {
        return Err(KvError::FutureRevision {
            requested: at,
            current: revision,
        });
    }
    if at < compacted_before {
        return Err(KvError::Compacted { compacted_before });
    }
    Ok(at)
}

fn check_versions(versions: &[KeyVersion], current: u64) -> Result<(), String> {
    let Some(first) = versions.first() else {
        return Err("no versions".into());
    };
    if first.is_tombstone() {
        return Err("history starts with a tombstone".into());
    }
    let mut previous: Option<&KeyVersion> = None;
    for v in versions {
        if v.revision == 0 || v.revision > current {
            return Err(format!("revision {} outside 1..={current}", v.revision));
        }
        if let Some(p) = previous {
            if v.revision <= p.revision {
                return Err(format!("revision {} not after {}", v.revision, p.revision));
            }
            if p.is_tombstone() && v.is_tombstone() {
                return Err(format!("two tombstones in a row at {}", v.revision));
            }
        }
        let generation_ok = match (v.is_tombstone(), previous) {
            (true, _) => v.create_revision == 0 && v.version == 0,
            (false, Some(p)) if !p.is_tombstone() => {
                v.create_revision == p.create_revision && v.version == p.version + 1
            }
            // The first retained version of a generation may follow compacted ones, so only
            // the ordering of its create revision is checkable.
            (false, _) => v.create_revision <= v.revision && v.version >= 1,
        };
        if !generation_ok {
            return Err(format!(
                "create revision {} / version {} inconsistent at revision {}",
                v.create_revision, v.version, v.revision
            ));
        }
        previous = Some(v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(kv: Result<Option<KeyValue>, KvError>) -> Option<(Vec<u8>, u64, u64, u64)> {
        kv.expect("readable")
            .map(|kv| (kv.value, kv.mod_revision, kv.create_revision, kv.version))
    }

    #[test]
    fn every_write_increments_the_one_revision() {
        let mut m = Mvcc::new();
        assert_eq!(m.revision(), 0);
        assert_eq!(m.put(b"a", b"1".to_vec()), 1);
        assert_eq!(m.put(b"b", b"1".to_vec()), 2);
        assert_eq!(m.put(b"a", b"2".to_vec()), 3);
        assert_eq!(
            m.delete(b"b"),
            DeleteOutcome {
                revision: 4,
                deleted: true
            }
        );
        assert_eq!(m.revision(), 4);
    }

    #[test]
    fn deleting_a_missing_key_does_not_bump_the_revision() {
        let mut m = Mvcc::new();
        m.put(b"a", b"1".to_vec());
        let nothing = DeleteOutcome {
            revision: 1,
            deleted: false,
        };
        assert_eq!(m.delete(b"nope"), nothing);
        m.delete(b"a");
        // Deleting twice: the second finds only a tombstone.
        assert_eq!(
            m.delete(b"a"),
            DeleteOutcome {
                revision: 2,
                deleted: false
            }
        );
        assert_eq!(m.history(b"a").versions.len(), 2);
    }

    #[test]
    fn version_and_create_revision_restart_after_delete() {
        let mut m = Mvcc::new();
        m.put(b"k", b"a".to_vec()); // 1
        m.put(b"k", b"b".to_vec()); // 2
        assert_eq!(value(m.get(b"k", None)), Some((b"b".to_vec(), 2, 1, 2)));
        m.delete(b"k"); // 3
        assert_eq!(value(m.get(b"k", None)), None);
        m.put(b"other", b"x".to_vec()); // 4
        m.put(b"k", b"c".to_vec()); // 5
        assert_eq!(value(m.get(b"k", None)), Some((b"c".to_vec(), 5, 5, 1)));
        m.put(b"k", b"d".to_vec()); // 6
        assert_eq!(value(m.get(b"k", None)), Some((b"d".to_vec(), 6, 5, 2)));
    }

    #[test]
    fn get_at_an_old_revision_sees_the_value_then() {
        let mut m = Mvcc::new();
        m.put(b"k", b"a".to_vec()); // 1
        m.put(b"x", b"-".to_vec()); // 2
        m.put(b"k", b"b".to_vec()); // 3
        m.delete(b"k"); // 4
        assert_eq!(value(m.get(b"k", Some(0))), None);
        assert_eq!(value(m.get(b"k", Some(1))), Some((b"a".to_vec(), 1, 1, 1)));
        assert_eq!(value(m.get(b"k", Some(2))), Some((b"a".to_vec(), 1, 1, 1)));
        assert_eq!(value(m.get(b"k", Some(3))), Some((b"b".to_vec(), 3, 1, 2)));
        assert_eq!(value(m.get(b"k", Some(4))), None);
        assert_eq!(
            m.get(b"k", Some(5)),
            Err(KvError::FutureRevision {
                requested: 5,
                current: 4
            })
        );
    }

    #[test]
    fn history_lists_tombstones_oldest_first() {
        let mut m = Mvcc::new();
        m.put(b"k", b"a".to_vec());
        m.delete(b"k");
        m.put(b"k", b"b".to_vec());
        let h = m.history(b"k");
        let listed: Vec<_> = h
            .versions
            .iter()
            .map(|v| (v.revision, v.value.clone()))
            .collect();
        assert_eq!(
            listed,
            vec![
                (1, Some(b"a".to_vec())),
                (2, None),
                (3, Some(b"b".to_vec()))
            ]
        );
        assert_eq!(h.compacted_before, 0);
        assert!(m.history(b"never").versions.is_empty());
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_can_see() {
        let mut m = Mvcc::new();
        m.put(b"k", b"a".to_vec()); // 1
        m.put(b"k", b"b".to_vec()); // 2
        m.put(b"gone", b"g".to_vec()); // 3
        m.delete(b"gone"); // 4
        m.put(b"k", b"c".to_vec()); // 5
        m.put(b"later", b"l".to_vec()); // 6
        m.compact(4).expect("compactable");

        // k: the version visible at 4 (rev 2) and everything after it.
        let revs: Vec<_> = m
            .history(b"k")
            .versions
            .iter()
            .map(|v| v.revision)
            .collect();
        assert_eq!(revs, vec![2, 5]);
        // A key deleted at or before the compaction point is gone entirely.
        assert!(m.history(b"gone").versions.is_empty());
        assert_eq!(m.history(b"later").versions.len(), 1);

        assert_eq!(
            m.get(b"k", Some(3)),
            Err(KvError::Compacted {
                compacted_before: 4
            })
        );
        assert_eq!(value(m.get(b"k", Some(4))), Some((b"b".to_vec(), 2, 1, 2)));
        assert_eq!(value(m.get(b"gone", Some(4))), None);
        assert_eq!(m.revision(), 6, "compaction writes nothing");
        assert_eq!(
            m.stats(),
            MvccStats {
                live_keys: 2,
                tracked_keys: 2,
                versions: 3,
                revision: 6,
                compacted_before: 4
            }
        );
    }

    #[test]
    fn compaction_keeps_a_tombstone_above_the_point() {
        let mut m = Mvcc::new();
        m.put(b"k", b"a".to_vec()); // 1
        m.put(b"x", b"x".to_vec()); // 2
        m.delete(b"k"); // 3
        m.compact(2).expect("compactable");
        let h = m.history(b"k");
        assert_eq!(h.versions.len(), 2);
        assert!(h.versions[1].is_tombstone());
        assert_eq!(value(m.get(b"k", Some(2))), Some((b"a".to_vec(), 1, 1, 1)));
        assert_eq!(value(m.get(b"k", None)), None);
    }

    #[test]
    fn compaction_errors() {
        let mut m = Mvcc::new();
        m.put(b"k", b"a".to_vec());
        m.put(b"k", b"b".to_vec());
        assert_eq!(
            m.compact(3),
            Err(KvError::FutureRevision {
                requested: 3,
                current: 2
            })
        );
        m.compact(2).expect("compactable");
        assert_eq!(
            m.compact(2),
            Ok(()),
            "compacting again at the same point is a no-op"
        );
        assert_eq!(
            m.compact(1),
            Err(KvError::Compacted {
                compacted_before: 2
            })
        );
        assert_eq!(m.history(b"k").compacted_before, 2);
    }

    #[test]
    fn stats_count_keys_and_versions() {
        let mut m = Mvcc::new();
        m.put(b"a", b"1".to_vec());
        m.put(b"a", b"2".to_vec());
        m.put(b"b", b"1".to_vec());
        m.delete(b"b");
        let s = m.stats();
        assert_eq!((s.live_keys, s.tracked_keys, s.versions), (1, 2, 4));
        let mut recounted = m.clone();
        recounted.counts = Counts::default();
        recounted.validate_and_count().expect("valid");
        assert_eq!(recounted, m);
    }
}
