//! What the entrance keeps in its data dir, so that a restarted entrance knows its cluster
//! id, whom to probe and who is waiting to join. Everything else (leader, term, health) it
//! rebuilds by probing.
//!
//! `DIR/entrance.state` is one MessagePack map, replaced atomically (temp file, fsync,
//! rename, fsync of the dir), so a crash leaves either the old or the new state, never a
//! torn one. `DIR/entrance.lock` keeps a second entrance off the same dir.

use myraft_wire::admission::ClusterId;
use myraft_wire::raft::{Member, NodeId, Term};
use myraft_wire::util::{DataDirLock, LockError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const STATE_FILE: &str = "entrance.state";
const TEMP_FILE: &str = "entrance.state.tmp";
const LOCK_FILE: &str = "entrance.lock";
/// Bumped when a field changes meaning; an older entrance refuses a newer file.
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot {action} {path}: {source}; {}",
        myraft_wire::util::io_advice(source)
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another entrance holds the data dir, or its lock file cannot be made.
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(
        "{path} is unreadable ({detail}); restore it from a backup, or move it away to start \
         a new cluster (the nodes of the old one will then refuse this entrance)"
    )]
    Corrupt { path: PathBuf, detail: String },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A node that asked to join and waits for an operator, or for its configuration change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    pub name: String,
    pub addr: String,
    /// The id the node asked for, if any.
    pub node_id: Option<NodeId>,
    /// Wall-clock time of its first request, so `waiting_ms` survives a restart.
    pub since_unix_ms: u64,
    pub approved: bool,
}

/// A join an operator (or the leader) refused; the node is told on its next request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub name: String,
    pub node_id: Option<NodeId>,
    pub reason: String,
}

/// A join that was accepted, so a node that lost its `Accepted` and asks again gets the same
/// answer, even when the entrance gave it another id than it asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedRecord {
    pub name: String,
    pub requested: Option<NodeId>,
    pub node_id: NodeId,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    pub format: u32,
    pub cluster_id: ClusterId,
    /// The configuration as last seen in the leader's `ProbeReply`.
    pub members: BTreeMap<NodeId, Member>,
    pub pending: Vec<PendingRecord>,
    pub rejected: Vec<RejectedRecord>,
    pub accepted: Vec<AcceptedRecord>,
    pub leader: Option<NodeId>,
    pub term: Term,
}

impl PersistedState {
    /// A new cluster: a random non-zero id, nothing else.
    pub fn fresh() -> Self {
        let mut cluster_id = 0;
        while cluster_id == myraft_wire::envelope::UNKNOWN_CLUSTER {
            cluster_id = rand::random();
        }
        Self {
            format: FORMAT,
            cluster_id,
            ..Self::default()
        }
    }
}

/// The data dir, locked for this process.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    // Never read: holding it is what keeps a second entrance off the dir.
    _lock: DataDirLock,
}

impl Store {
    /// Creates `dir` if needed and locks it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let lock = DataDirLock::acquire(dir, LOCK_FILE, "myraft-entrance")?;
        Ok(Store {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The saved state, or `None` in a dir where no entrance ran yet.
    pub fn load(&self) -> Result<Option<PersistedState>, StoreError> {
        let path = self.dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let state: PersistedState =
            rmp_serde::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        if state.format > FORMAT {
            return Err(StoreError::Corrupt {
                path,
                detail: format!(
                    "written by a newer entrance (format {}, this one reads up to {FORMAT})",
                    state.format
                ),
            });
        }
        if state.cluster_id == myraft_wire::envelope::UNKNOWN_CLUSTER {
            return Err(StoreError::Corrupt {
                path,
                detail: "cluster id is 0".to_owned(),
            });
        }
        Ok(Some(state))
    }

    /// Replaces the saved state atomically and durably.
    pub fn save(&self, state: &PersistedState) -> Result<(), StoreError> {
        let bytes = rmp_serde::to_vec_named(state).map_err(|e| StoreError::Corrupt {
            path: self.dir.join(STATE_FILE),
            detail: e.to_string(),
        })?;
        let tmp = self.dir.join(TEMP_FILE);
        let path = self.dir.join(STATE_FILE);
        let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_err("write", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_err("sync", &self.dir))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = PersistedState::fresh();
        assert_ne!(state.cluster_id, 0);
        state.members.insert(
            7,
            Member {
                id: 7,
                name: "n1".into(),
                addr: "127.0.0.1:7001".into(),
                voter: true,
            },
        );
        state.term = 3;
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.load().unwrap(), None);
            store.save(&state).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
    }

    #[test]
    fn second_open_of_a_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Lock(LockError::Locked { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[test]
    fn garbage_state_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"\xc1garbage").unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
