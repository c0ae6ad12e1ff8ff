//! Requests the entrance makes of the nodes on its own behalf, each in its own task so that
//! a slow or silent node holds up nothing else: adding an approved node (through the
//! leader, following `NotLeader` hints, until it answers), removing one, stopping one or
//! all. Each task reports its outcome to the driver as a [`Completion`].

use crate::engine::{ClientResult, Completion, LeaderAddr, RequestKey, Task};
use crate::net::{resolve, Net};
use myraft_wire::api::{ClientError, ClientOp, ClientResponse, StopTarget};
use myraft_wire::raft::NodeId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// What every task needs to call nodes on the entrance's behalf and report back.
#[derive(Clone)]
pub(crate) struct Caller {
    pub net: Arc<Net>,
    pub leader: watch::Receiver<Option<LeaderAddr>>,
    pub done: mpsc::UnboundedSender<Completion>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub timeout: Duration,
}

/// How many times a stop is sent before the node counts as not answering.
const STOP_ATTEMPTS: u32 = 3;

fn shutting_down() -> ClientError {
    ClientError::Unavailable {
        reason: "the entrance is shutting down".to_owned(),
    }
}

impl Caller {
    fn report(&self, done: Completion) {
        // The driver is gone only when the entrance shuts down; nobody needs the
        // outcome then.
        let _ = self.done.send(done);
    }

    /// Waits a retry interval, or less if the leader changes. `false` on shutdown.
    async fn pause(&self, leader: &mut watch::Receiver<Option<LeaderAddr>>) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep(self.timeout) => true,
            Ok(()) = leader.changed() => true,
        }
    }

    /// Sends `op` to the leader until it gives an answer that is not "ask someone else" or
    /// "try later", or until `deadline`. One `seq` for all attempts: they are one request.
    async fn call_leader(&self, op: ClientOp, deadline: Option<Instant>) -> ClientResult {
        let seq = self.net.next_seq();
        let mut leader = self.leader.clone();
        let mut hint: Option<String> = None;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(ClientError::Timeout);
            }
            if self.shutdown.is_cancelled() {
                return Err(shutting_down());
            }
            let target = hint
                .take()
                .or_else(|| leader.borrow_and_update().as_ref().map(|l| l.addr.clone()));
            let Some(target) = target else {
                debug!("no leader known yet; waiting to send {op:?}");
                if !self.pause(&mut leader).await {
                    return Err(shutting_down());
                }
                continue;
            };
            let Some(to) = resolve(&target).await else {
                if !self.pause(&mut leader).await {
                    return Err(shutting_down());
                }
                continue;
            };
            let reply = tokio::select! {
                () = self.shutdown.cancelled() => return Err(shutting_down()),
                reply = self.net.request(to, seq, op.clone(), self.timeout) => reply,
            };
            match reply.map(|r| r.result) {
                None => debug!(%target, "no answer from the leader; retrying"),
                Some(Ok(response)) => return Ok(response),
                Some(Err(ClientError::NotLeader { hint: Some(h) })) if h.addr != target => {
                    debug!(%target, next = %h.addr, "not the leader; following its hint");
                    hint = Some(h.addr);
                }
                Some(Err(
                    e @ (ClientError::NotLeader { .. }
                    | ClientError::Timeout
                    | ClientError::Unavailable { .. }),
                )) => {
                    debug!(%target, "leader busy or unknown ({e}); retrying");
                    if !self.pause(&mut leader).await {
                        return Err(shutting_down());
                    }
                }
                Some(Err(e)) => return Err(e),
            }
        }
    }

    /// Asks one node to exit; `Ok(Done)` once it confirms.
    async fn stop_node(&self, name: &str, addr: &str) -> ClientResult {
        let target = StopTarget::Node {
            name: name.to_owned(),
        };
        self.stop_target(name, addr, target).await
    }

    /// Stops exactly member `id`: not a node of the same name that joined since.
    async fn stop_member(&self, name: &str, id: NodeId, addr: &str) -> ClientResult {
        let target = StopTarget::Member {
            name: name.to_owned(),
            id,
        };
        self.stop_target(name, addr, target).await
    }

    async fn stop_target(&self, name: &str, addr: &str, target: StopTarget) -> ClientResult {
        let Some(to) = resolve(addr).await else {
            return Err(ClientError::Unavailable {
                reason: format!("cannot resolve the address {addr} of {name}"),
            });
        };
        let seq = self.net.next_seq();
        let op = ClientOp::StopNode { target };
        let per_attempt = self.timeout / 2;
        for _ in 0..STOP_ATTEMPTS {
            let reply = tokio::select! {
                () = self.shutdown.cancelled() => return Err(shutting_down()),
                reply = self.net.request(to, seq, op.clone(), per_attempt) => reply,
            };
            if let Some(reply) = reply {
                return reply.result;
            }
        }
        Err(ClientError::Timeout)
    }
}

/// Starts `task` in a task of its own; it reports through `caller`.
pub(crate) fn start(caller: Caller, task: Task) {
    match task {
        Task::Add {
            name,
            node_id,
            addr,
        } => spawn_add(caller, name, node_id, addr),
        Task::Remove { name, id, addr } => spawn_remove(caller, name, id, addr),
        Task::Stop { key, name, addr } => spawn_stop(caller, key, name, addr),
        Task::StopAll {
            key,
            followers,
            leader,
        } => spawn_stop_all(caller, key, followers, leader),
    }
}

/// Adds an approved node as a learner, retrying until the leader commits it.
fn spawn_add(ctx: Caller, name: String, node_id: NodeId, addr: String) {
    let tracker = ctx.tracker.clone();
    tracker.spawn(async move {
        info!(%name, %addr, "asking the leader to add {name} as a learner");
        let op = ClientOp::AddMember {
            id: node_id,
            name: name.clone(),
            addr,
        };
        let result = match ctx.call_leader(op, None).await {
            Ok(ClientResponse::Done) => Ok(()),
            Ok(other) => {
                warn!(%name, "unexpected answer to AddMember: {other:?}; taking it as done");
                Ok(())
            }
            Err(e) => Err(e),
        };
        if ctx.shutdown.is_cancelled() {
            // Still approved in the saved state; the next start retries it.
            return;
        }
        ctx.report(Completion::Added {
            name,
            node_id,
            result,
        });
    });
}

/// Removes a member through the leader, then tells it to exit.
fn spawn_remove(ctx: Caller, name: String, id: NodeId, addr: String) {
    let tracker = ctx.tracker.clone();
    tracker.spawn(async move {
        info!(%name, "asking the leader to remove {name}");
        // Long enough for an election to settle, short enough for an operator to wait.
        let deadline = Instant::now() + (ctx.timeout * 5).max(Duration::from_secs(10));
        let op = ClientOp::RemoveNode { name: name.clone() };
        let result = match ctx.call_leader(op, Some(deadline)).await {
            Ok(_) => Ok(ClientResponse::Done),
            // A retry after the change committed (its answer lost, or late past a leader
            // change) finds the member gone, as does a removal the entrance's view had not
            // caught up with: either way it is out, and it still has to be stopped at the
            // address the entrance knows it by.
            Err(ClientError::NotFound { .. }) => {
                info!(%name, "the leader no longer has {name} as a member; taking it as removed");
                Ok(ClientResponse::Done)
            }
            Err(e) => Err(e),
        };
        let removed = result.is_ok();
        ctx.report(Completion::Removed {
            name: name.clone(),
            id,
            result,
        });
        if removed {
            // It is out of the configuration either way; a node that is down simply never
            // hears this.
            match ctx.stop_member(&name, id, &addr).await {
                Ok(_) => info!(%name, "removed node {name} stopped"),
                Err(e) => info!(%name, "removed node {name} did not confirm its stop: {e}"),
            }
        }
    });
}

/// Stops one node and answers the client that asked.
fn spawn_stop(ctx: Caller, key: RequestKey, name: String, addr: String) {
    let tracker = ctx.tracker.clone();
    tracker.spawn(async move {
        let result = ctx
            .stop_node(&name, &addr)
            .await
            .map(|_| ClientResponse::Done);
        match &result {
            Ok(_) => info!(%name, "node {name} stopped"),
            Err(e) => warn!(%name, "node {name} did not stop: {e}"),
        }
        ctx.report(Completion::Answer { key, result });
    });
}

/// Stops the followers (together), then the leader, so the cluster never elects a new
/// leader among nodes that are about to stop anyway.
fn spawn_stop_all(
    ctx: Caller,
    key: RequestKey,
    followers: Vec<(String, String)>,
    leader: Option<(String, String)>,
) {
    let tracker = ctx.tracker.clone();
    tracker.spawn(async move {
        let mut silent = Vec::new();
        let mut followers_done = JoinSet::new();
        for (name, addr) in followers {
            let ctx = ctx.clone();
            followers_done.spawn(async move {
                let result = ctx.stop_node(&name, &addr).await;
                (name, result)
            });
        }
        while let Some(joined) = followers_done.join_next().await {
            match joined {
                Ok((_, Ok(_))) => {}
                Ok((name, Err(e))) => {
                    warn!(%name, "node {name} did not stop: {e}");
                    silent.push(name);
                }
                Err(e) => warn!("stop task failed: {e}"),
            }
        }
        if let Some((name, addr)) = leader {
            if let Err(e) = ctx.stop_node(&name, &addr).await {
                warn!(%name, "leader {name} did not stop: {e}");
                silent.push(name);
            }
        }
        let result = if silent.is_empty() {
            Ok(ClientResponse::Done)
        } else {
            silent.sort();
            Err(ClientError::Unavailable {
                reason: format!(
                    "{} did not confirm the stop (down already?); the others stopped",
                    silent.join(", ")
                ),
            })
        };
        ctx.report(Completion::StoppedAll { key, result });
    });
}
