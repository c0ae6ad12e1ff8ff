//! Who this node is: its cluster id and node id, kept in the data dir once the entrance
//! admitted it. A node whose data dir holds an identity rejoins without asking.

use super::ServerError;
use myraft_wire::admission::ClusterId;
use myraft_wire::raft::NodeId;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: ClusterId,
    pub node_id: NodeId,
    pub name: String,
}

fn path(dir: &Path) -> PathBuf {
    dir.join("identity")
}

impl Identity {
    /// The identity stored in `dir`, if the node was ever admitted.
    pub fn load(dir: &Path) -> Result<Option<Identity>, ServerError> {
        let p = path(dir);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ServerError::io("read", &p, e)),
        };
        rmp_serde::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ServerError::Identity {
                path: p,
                reason: e.to_string(),
            })
    }

    /// Writes the identity atomically: a crash leaves the old file or the new one.
    pub fn store(&self, dir: &Path) -> Result<(), ServerError> {
        let p = path(dir);
        let tmp = dir.join("identity.tmp");
        let bytes = rmp_serde::to_vec(self).map_err(|e| ServerError::Identity {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let mut f = fs::File::create(&tmp).map_err(|e| ServerError::io("create", &tmp, e))?;
        f.write_all(&bytes)
            .map_err(|e| ServerError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| ServerError::io("sync", &tmp, e))?;
        fs::rename(&tmp, &p).map_err(|e| ServerError::io("rename", &p, e))?;
        let d = fs::File::open(dir).map_err(|e| ServerError::io("open", dir, e))?;
        d.sync_all().map_err(|e| ServerError::io("sync", dir, e))?;
        Ok(())
    }
}
