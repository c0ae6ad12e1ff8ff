//! Membership changes of the real node on turmoil's simulated network (three hosts and a
//! client, in virtual time): what a node answers about a change, whom it promotes, that a
//! removed member stops, and that a leader stopped or removed hands leadership over.
//!
//! `MYRAFT_SEED=N` runs seed N alone (default: seeds 0..3); a failure prints its seed.
#![allow(clippy::unwrap_used)]

mod support;

use myraft_node::server::identity::Identity;
use myraft_node::server::{bootstrap_static, run_with_socket};
use myraft_wire::api::{ClientError, ClientOp, ClientResponse, StopTarget};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use support::{bind, client, for_each_seed, membership, node_addr, node_config, put_op, Client};
use tokio_util::sync::CancellationToken;

const CLUSTER: u64 = 0xC3;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// A member approved with an address nobody listens on.
const GHOST_ID: u64 = 99;
const GHOST_ADDR: &str = "10.99.99.99:7001";

/// Election timeouts of 10-20 s (ticks of 10 ms), for scenarios that must tell a handover
/// from an election: whatever happens within [`HANDOVER_BOUND`] was no election.
const SLOW_ELECTION_TICKS: u32 = 1000;
const HANDOVER_BOUND: Duration = Duration::from_secs(4);

async fn node(seed: u64, i: usize, dir: PathBuf, election_ticks: Option<u32>) -> turmoil::Result {
    let (name, id) = (NODES[i], i as u64 + 1);
    bootstrap_static(&dir, CLUSTER, id, name, membership(&NODES))?;
    let mut cfg = node_config(seed, id, name, dir);
    if let Some(ticks) = election_ticks {
        cfg.timing.election_ticks = ticks;
    }
    run_with_socket(cfg, bind().await?, CancellationToken::new()).await?;
    Ok(())
}

fn name_of(addr: SocketAddr) -> &'static str {
    support::name_of(&NODES, addr)
}

fn add_ghost() -> ClientOp {
    ClientOp::AddMember {
        id: GHOST_ID,
        name: "ghost".into(),
        addr: GHOST_ADDR.into(),
    }
}

/// Runs `scenario` as the client against three fresh nodes; `watch` sees the simulation
/// after every step and may fail the run.
fn run<F>(
    seed: u64,
    scenario: impl FnOnce(Client, Rc<RefCell<Vec<String>>>) -> F + 'static,
    watch: impl FnMut(&mut turmoil::Sim<'_>, &[String]) -> Result<(), String>,
) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), String>> + 'static,
{
    run_timed(seed, None, scenario, watch)
}

/// [`run`] with the nodes' election timeout set to `election_ticks`.
fn run_timed<F>(
    seed: u64,
    election_ticks: Option<u32>,
    scenario: impl FnOnce(Client, Rc<RefCell<Vec<String>>>) -> F + 'static,
    mut watch: impl FnMut(&mut turmoil::Sim<'_>, &[String]) -> Result<(), String>,
) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), String>> + 'static,
{
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut sim = support::sim_builder(seed, Duration::from_secs(120)).build();
    for (i, name) in NODES.into_iter().enumerate() {
        let dir = tmp.path().join(name);
        sim.host(name, move || node(seed, i, dir.clone(), election_ticks));
    }
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    sim.client("client", async move {
        let c = client(CLUSTER, NODES.iter().map(|n| node_addr(n)).collect()).await;
        Ok(scenario(c, l).await?)
    });
    loop {
        let done = sim
            .step()
            .map_err(|e| format!("{e}; {}", log.borrow().join("; ")))?;
        let seen = log.borrow().clone();
        watch(&mut sim, &seen).map_err(|e| format!("{e}; {}", seen.join("; ")))?;
        if done {
            return Ok(());
        }
    }
}

/// `Done` for an AddMember means the new configuration committed. A leader cut off from
/// its peers appends the change but can never commit it, so neither the request nor its
/// retry may be answered `Done` there.
#[test]
fn add_member_is_done_only_once_committed() {
    for_each_seed(|seed| {
        run(
            seed,
            |mut c, log| async move {
                let (_, leader) = c.call(0x100, 1, &put_op("a", "1")).await?;
                let l = name_of(leader);
                for other in NODES.iter().filter(|n| **n != l) {
                    turmoil::partition(l, *other);
                }
                log.borrow_mut().push(format!("cut off {l}"));
                for attempt in 0..6 {
                    match c.ask(leader, 0x200, 1, &add_ghost()).await {
                        Some(Ok(r)) => {
                            return Err(format!(
                                "attempt {attempt}: {l}, cut off, answered {r:?} to AddMember"
                            ))
                        }
                        Some(Err(e)) => log.borrow_mut().push(format!("attempt {attempt}: {e}")),
                        None => log
                            .borrow_mut()
                            .push(format!("attempt {attempt}: no answer")),
                    }
                }
                Ok(())
            },
            |_, _| Ok(()),
        )
    });
}

/// Dissertation §4.2.1: a learner whose address is unreachable never answers, so it must
/// stay a learner however young the log is, and the voters keep committing.
#[test]
fn an_unreachable_learner_stays_a_learner() {
    for_each_seed(|seed| {
        run(
            seed,
            |mut c, log| async move {
                c.call(0x100, 1, &put_op("a", "1")).await?;
                match c.call(0x200, 1, &add_ghost()).await? {
                    (ClientResponse::Done, _) => {}
                    (other, _) => return Err(format!("AddMember answered {other:?}")),
                }
                log.borrow_mut().push("ghost added as a learner".into());
                for i in 0..20 {
                    c.call(0x100, i + 2, &put_op(&format!("k{i}"), "v")).await?;
                }
                let leader = c.leader.ok_or("no leader")?;
                let p = c
                    .probe(leader)
                    .await
                    .ok_or("the leader did not answer a probe")?;
                let ghost = p.membership.members.get(&GHOST_ID).ok_or("ghost is gone")?;
                if ghost.voter {
                    return Err(format!(
                        "{} promoted the unreachable learner to voter",
                        name_of(leader)
                    ));
                }
                Ok(())
            },
            |_, _| Ok(()),
        )
    });
}

/// A follower removed from the configuration hears nothing more from the leader, so it
/// cannot learn on its own that its removal committed: the leader tells it, and it stops.
#[test]
fn a_removed_follower_stops() {
    for_each_seed(|seed| {
        let removed: Rc<RefCell<Option<(&'static str, Duration)>>> = Rc::default();
        let r = removed.clone();
        run(
            seed,
            move |mut c, log| async move {
                let (_, leader) = c.call(0x100, 1, &put_op("a", "1")).await?;
                let victim = NODES
                    .iter()
                    .copied()
                    .find(|n| *n != name_of(leader))
                    .ok_or("no follower")?;
                let op = ClientOp::RemoveNode {
                    name: victim.into(),
                };
                match c.call(0x200, 1, &op).await {
                    Ok((ClientResponse::Done, _)) => {}
                    Ok((other, _)) => return Err(format!("RemoveNode answered {other:?}")),
                    Err(e) => return Err(e),
                }
                log.borrow_mut().push(format!("removed {victim}"));
                *r.borrow_mut() = Some((victim, turmoil::elapsed()));
                // Writes go on with the two members left, and the client stays around so
                // that the harness can watch the removed node.
                for i in 0..10 {
                    c.call(0x100, i + 2, &put_op(&format!("k{i}"), "v")).await?;
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(())
            },
            move |sim, _| match *removed.borrow() {
                Some((victim, at)) if sim.elapsed() > at + Duration::from_secs(2) => {
                    if sim.is_host_running(victim) {
                        Err(format!(
                            "{victim} still runs 2 s after its removal committed"
                        ))
                    } else {
                        Ok(())
                    }
                }
                _ => Ok(()),
            },
        )
    });
}

/// A removed member is told to stop by its id, not only its name: a node started since at
/// the same name and address with an empty data dir is a new member, and a late notice for
/// the old one must not stop it.
#[test]
fn a_stop_meant_for_an_earlier_member_of_the_same_name_is_refused() {
    for_each_seed(|seed| {
        run(
            seed,
            |mut c, _log| async move {
                c.call(0x100, 1, &put_op("a", "1")).await?;
                let n2 = node_addr("n2");
                let stale = ClientOp::StopNode {
                    target: StopTarget::Member {
                        name: "n2".into(),
                        id: 0x9999,
                    },
                };
                match c.ask(n2, 0x300, 1, &stale).await {
                    Some(Err(ClientError::NotFound { .. })) => {}
                    other => return Err(format!("a stop for another id answered {other:?}")),
                }
                if c.probe(n2).await.is_none() {
                    return Err("n2 stopped for a notice meant for another member".into());
                }
                let exact = ClientOp::StopNode {
                    target: StopTarget::Member {
                        name: "n2".into(),
                        id: 2,
                    },
                };
                match c.ask(n2, 0x300, 2, &exact).await {
                    Some(Ok(ClientResponse::Done)) => Ok(()),
                    other => Err(format!("a stop for n2's own id answered {other:?}")),
                }
            },
            |_, _| Ok(()),
        )
    });
}

/// A leader asked to stop hands leadership to a caught-up voter first (§3.10): with
/// elections that take 10 s or more, a write still goes through within a few seconds.
#[test]
fn a_leader_asked_to_stop_hands_over_leadership_first() {
    for_each_seed(|seed| {
        run_timed(
            seed,
            Some(SLOW_ELECTION_TICKS),
            |mut c, log| async move {
                let first = Duration::from_secs(60);
                let (_, leader) = c.call_within(0x100, 1, &put_op("a", "1"), first).await?;
                let l = name_of(leader);
                let stop = ClientOp::StopNode {
                    target: StopTarget::Node { name: l.into() },
                };
                match c.ask(leader, 0x300, 1, &stop).await {
                    Some(Ok(ClientResponse::Done)) => {}
                    other => return Err(format!("stopping {l} answered {other:?}")),
                }
                log.borrow_mut().push(format!("stopped {l}"));
                let (_, next) = c
                    .call_within(0x100, 2, &put_op("b", "2"), HANDOVER_BOUND)
                    .await?;
                if next == leader {
                    return Err(format!("{l} still took writes after it was stopped"));
                }
                Ok(())
            },
            |_, _| Ok(()),
        )
    });
}

/// A leader that removes itself steps down as the change commits and sends `TimeoutNow` to
/// the most up-to-date voter left: no election timeout passes without a leader.
#[test]
fn removing_the_leader_leaves_no_election_timeout_without_one() {
    for_each_seed(|seed| {
        run_timed(
            seed,
            Some(SLOW_ELECTION_TICKS),
            |mut c, log| async move {
                let first = Duration::from_secs(60);
                let (_, leader) = c.call_within(0x100, 1, &put_op("a", "1"), first).await?;
                let l = name_of(leader);
                let remove = ClientOp::RemoveNode { name: l.into() };
                match c.call_within(0x200, 1, &remove, HANDOVER_BOUND).await? {
                    (ClientResponse::Done, _) => {}
                    (other, at) => {
                        return Err(format!(
                            "removing {l} answered {other:?} at {}",
                            name_of(at)
                        ))
                    }
                }
                log.borrow_mut().push(format!("removed {l}"));
                // A client still asking the removed leader is sent on, not left to time out.
                match c.ask(leader, 0x400, 1, &put_op("c", "3")).await {
                    Some(Err(ClientError::NotLeader { hint: Some(h) })) if h.name != l => {}
                    other => {
                        return Err(format!(
                            "the removed {l} answered a client with {other:?}, not the next leader"
                        ))
                    }
                }
                let (_, next) = c
                    .call_within(0x100, 2, &put_op("b", "2"), HANDOVER_BOUND)
                    .await?;
                let p = c
                    .probe(next)
                    .await
                    .ok_or("the new leader gave no probe reply")?;
                if p.membership.members.values().any(|m| m.name == l) {
                    return Err(format!("{l} is still a member"));
                }
                Ok(())
            },
            |_, _| Ok(()),
        )
    });
}

/// A node added to a running cluster catches up through the leader's log from its start,
/// configurations from before it existed included: applying one that does not list it is
/// history, not its removal. The log reaches it in many AppendEntries (each a datagram), so
/// for a while its log ends at such a configuration, committed; it used to stop there,
/// "removed from the cluster", before it ever learned that it had been added.
#[test]
fn a_new_member_catching_up_through_older_configurations_keeps_running() {
    const NEWCOMER: u64 = 4;
    for_each_seed(|seed| {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut sim = support::sim_builder(seed, Duration::from_secs(120)).build();
        for (i, name) in NODES.into_iter().enumerate() {
            let dir = tmp.path().join(name);
            sim.host(name, move || node(seed, i, dir.clone(), None));
        }
        // As the entrance's acceptance leaves a new node: an identity, an empty log.
        let dir = tmp.path().join("n4");
        sim.host("n4", move || {
            let dir = dir.clone();
            async move {
                std::fs::create_dir_all(&dir)?;
                Identity {
                    cluster_id: CLUSTER,
                    node_id: NEWCOMER,
                    name: "n4".into(),
                }
                .store(&dir)?;
                let cfg = node_config(seed, NEWCOMER, "n4", dir);
                run_with_socket(cfg, bind().await?, CancellationToken::new()).await?;
                Ok(())
            }
        });
        sim.client("client", async move {
            let mut c = client(CLUSTER, NODES.iter().map(|n| node_addr(n)).collect()).await;
            // Far more than one datagram of entries after the founding configuration.
            let value = "v".repeat(100);
            for i in 0..100 {
                c.call(0x100, i + 1, &put_op(&format!("k{i}"), &value))
                    .await?;
            }
            let add = ClientOp::AddMember {
                id: NEWCOMER,
                name: "n4".into(),
                addr: node_addr("n4").to_string(),
            };
            match c.call(0x200, 1, &add).await? {
                (ClientResponse::Done, _) => {}
                (other, _) => return Err(format!("AddMember answered {other:?}").into()),
            }
            // Caught up: it has applied the last write.
            loop {
                let got = c.stale_get(node_addr("n4"), "k99").await;
                if got.is_some_and(|g| g.found) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        loop {
            let done = sim.step().map_err(|e| e.to_string())?;
            if !sim.is_host_running("n4") {
                return Err("n4 stopped while catching up".into());
            }
            if done {
                return Ok(());
            }
        }
    });
}
