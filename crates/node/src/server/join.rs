//! Admission: a node with an empty data dir asks the entrance to join and waits, saying so,
//! until an operator approves or rejects it (docs/protocol.md, "Admission").

use super::transport::Transport;
use super::ServerError;
use myraft_wire::admission::{JoinDecision, JoinRequest};
use myraft_wire::envelope::Body;
use myraft_wire::raft::{Membership, NodeId};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Join requests go out once a second; the log says so on the first and then every this
/// many, so a node waiting for approval neither floods its log nor looks stuck.
const LOG_EVERY_ASKS: u64 = 30;

pub struct Admitted {
    pub cluster_id: u64,
    pub node_id: NodeId,
    pub membership: Membership,
}

/// Asks every second until the entrance decides. `None` if shut down while waiting.
pub async fn join(
    t: &mut Transport,
    entrances: &[SocketAddr],
    name: &str,
    addr: &str,
    node_id: NodeId,
    shutdown: &CancellationToken,
) -> Result<Option<Admitted>, ServerError> {
    let req = JoinRequest {
        name: name.to_owned(),
        addr: addr.to_owned(),
        node_id: Some(node_id),
    };
    let mut asked = 0u64;
    let mut said_pending = false;
    loop {
        for e in entrances {
            t.send(*e, Body::JoinRequest(req.clone()));
        }
        asked += 1;
        if asked == 1 || asked.is_multiple_of(LOG_EVERY_ASKS) {
            tracing::info!(entrances = ?entrances, "asking the entrance to join as {name} at {addr}");
        }
        let deadline = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = &mut deadline => break,
                r = t.recv() => {
                    let (env, _) = r.map_err(|e| ServerError::io("receive on", std::path::Path::new("socket"), e))?;
                    let Body::JoinResponse(resp) = env.body else { continue };
                    match resp.decision {
                        JoinDecision::Accepted { node_id, membership } => {
                            return Ok(Some(Admitted { cluster_id: resp.cluster_id, node_id, membership }));
                        }
                        JoinDecision::Pending { waiting_ms } => {
                            if !said_pending {
                                tracing::info!("waiting for an operator to approve this node (myraft approve {name})");
                                eprintln!("waiting for approval: run `myraft approve {name}` ({} s so far)", waiting_ms / 1000);
                                said_pending = true;
                            }
                        }
                        JoinDecision::Rejected { reason } => return Err(ServerError::JoinRejected(reason)),
                    }
                }
            }
        }
    }
}
