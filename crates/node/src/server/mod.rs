//! The node process around the pure core: one UDP socket, one event loop.
//!
//! Data flows one way, and the modules are named after the steps:
//! socket → [`transport`] (decode, authenticate) → `node` (step the [`crate::raft`] core,
//! answer clients) → [`crate::storage`] (persist, fsync) → send → `apply` (state machine,
//! replies).
//!
//! - [`config`]: flags, timing and limits;
//! - [`identity`]: cluster id and node id in the data dir;
//! - `join`: asking the entrance for admission;
//! - [`transport`]: the socket, codec and drop counters;
//! - `msg_ids`: message ids that move forward across restarts, reserved in the data dir;
//! - `node`: the event loop and what it does per input;
//! - `node/apply`: committed entries into the state machine, and the replies they release;
//! - `snapshot_transfer`: snapshots larger than a datagram, in chunks.

mod applier;
mod clock;
pub mod config;
pub mod identity;
mod join;
mod log_sync;
mod msg_ids;
mod node;
#[cfg(test)]
mod recovery_tests;
mod snapshot_transfer;
pub mod transport;

pub use config::{NodeConfig, Timing};
pub use node::{run, run_with_socket};
pub use transport::Socket;

use crate::raft::InitialState;
use crate::storage::{DiskOptions, DiskStorage, Storage};
use identity::Identity;
use myraft_wire::raft::Membership;

/// Prepares `data_dir` as a founding member of a cluster with a fixed configuration, with
/// no entrance involved: the node starts as if admitted. For tests and for clusters set up
/// by hand; every founding member must get the same `membership`.
pub fn bootstrap_static(
    data_dir: &Path,
    cluster_id: u64,
    node_id: u64,
    name: &str,
    membership: Membership,
) -> Result<(), ServerError> {
    bootstrap_static_with(
        data_dir,
        cluster_id,
        node_id,
        name,
        membership,
        &DiskOptions::default(),
    )
}

/// [`bootstrap_static`] with the log kept as `disk` says (a simulated file system in tests).
pub fn bootstrap_static_with(
    data_dir: &Path,
    cluster_id: u64,
    node_id: u64,
    name: &str,
    membership: Membership,
    disk: &DiskOptions,
) -> Result<(), ServerError> {
    std::fs::create_dir_all(data_dir).map_err(|e| ServerError::io("create", data_dir, e))?;
    let _lock = crate::storage::lock_data_dir(data_dir)?;
    let (mut storage, _) = DiskStorage::open(&data_dir.join("raft"), disk.clone())?;
    if storage.last_index() == 0 {
        let init = InitialState::bootstrap(membership);
        storage.append(&init.entries)?;
        storage.save_hard_state(&init.hard_state)?;
        storage.sync()?;
    }
    Identity {
        cluster_id,
        node_id,
        name: name.to_owned(),
    }
    .store(data_dir)
}

use crate::storage::StorageError;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot {op} {}: {source}; {}", path.display(), myraft_wire::util::io_advice(source))]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind {addr}: {source}; is another process using the port? (--listen)")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("identity file {} is damaged: {reason}; restore it, or empty the data dir to join as a new node", path.display())]
    Identity { path: PathBuf, reason: String },
    #[error("the entrance refused to admit this node: {0}")]
    JoinRejected(String),
    #[error("stored state cannot be loaded: {0}")]
    Recovery(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the state store failed: {0}; restart the node to recover from what is on disk")]
    Apply(String),
    #[error("invalid Raft configuration: {0}")]
    RaftConfig(#[from] crate::raft::ConfigError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

impl ServerError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        ServerError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}
