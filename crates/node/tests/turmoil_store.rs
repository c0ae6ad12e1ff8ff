//! The state store of the real node on turmoil's simulated network: a follower far behind
//! catches up from a snapshot streamed from the leader's store through datagram loss, a
//! stream cut short by a restart of either side is continued rather than begun again, and
//! automatic compaction keeps the configured revisions on every member alike; copies of a
//! write in flight become one entry.
//!
//! `MYRAFT_SEED=N` runs seed N alone (default: seeds 0..3); a failure prints its seed.
#![allow(clippy::unwrap_used)]

mod support;

use myraft_node::server::{bootstrap_static, run_with_socket};
use myraft_wire::api::{ClientError, ClientOp, ClientResponse, Consistency};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use support::{bind, client, for_each_seed, membership, node_addr, node_config, put_op, Client};
use tokio_util::sync::CancellationToken;

const CLUSTER: u64 = 0xC5;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const WRITER: u64 = 0x100;

#[derive(Clone, Copy)]
struct Setup {
    log_retain_bytes: u64,
    auto_compact_revisions: u64,
}

async fn node(seed: u64, i: usize, dir: PathBuf, setup: Setup) -> turmoil::Result {
    let (name, id) = (NODES[i], i as u64 + 1);
    bootstrap_static(&dir, CLUSTER, id, name, membership(&NODES))?;
    let mut cfg = node_config(seed, id, name, dir);
    cfg.log_retain_bytes = setup.log_retain_bytes;
    cfg.auto_compact_revisions = setup.auto_compact_revisions;
    run_with_socket(cfg, bind().await?, CancellationToken::new()).await?;
    Ok(())
}

fn name_of(addr: SocketAddr) -> &'static str {
    support::name_of(&NODES, addr)
}

/// What a scenario may do to the simulation besides being a client.
#[derive(Clone, Default)]
struct Controls {
    /// Set to have datagrams lost: each send may cut the link for a while (turmoil's
    /// `fail_rate` 0.1), losing what is in flight, so loss comes in bursts.
    lossy: Rc<Cell<bool>>,
    /// Nodes to crash (as by `kill -9`) and start again, from their data dirs.
    restart: Rc<RefCell<Vec<&'static str>>>,
    /// What happened, for the failure message.
    log: Rc<RefCell<Vec<String>>>,
}

impl Controls {
    fn note(&self, what: String) {
        self.log.borrow_mut().push(what);
    }
}

/// Runs `scenario` as the client against three fresh nodes.
fn run<F>(
    seed: u64,
    setup: Setup,
    scenario: impl FnOnce(Client, Controls) -> F + 'static,
) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), String>> + 'static,
{
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut sim = support::sim_builder(seed, Duration::from_secs(300))
        .repair_rate(0.3)
        .udp_capacity(4096)
        .build();
    for (i, name) in NODES.into_iter().enumerate() {
        let dir = tmp.path().join(name);
        sim.host(name, move || node(seed, i, dir.clone(), setup));
    }
    let controls = Controls::default();
    let ctl = controls.clone();
    sim.client("client", async move {
        let c = client(CLUSTER, NODES.iter().map(|n| node_addr(n)).collect()).await;
        Ok(scenario(c, ctl).await?)
    });
    let mut loss_on = false;
    loop {
        let done = sim
            .step()
            .map_err(|e| format!("{e}; {}", controls.log.borrow().join("; ")))?;
        if done {
            return Ok(());
        }
        if controls.lossy.get() != loss_on {
            loss_on = controls.lossy.get();
            sim.set_fail_rate(if loss_on { 0.1 } else { 0.0 });
        }
        for name in controls.restart.borrow_mut().drain(..) {
            sim.crash(name);
            sim.bounce(name);
        }
    }
}

const KEYS: u64 = 300;

/// Node `name` holds `value(i)` at `key(i)` for every i below `n`, read from its own store.
async fn holds_every_write(
    c: &mut Client,
    name: &str,
    n: u64,
    key: impl Fn(u64) -> String,
    value: impl Fn(u64) -> String,
) -> Result<(), String> {
    let at = node_addr(name);
    for i in 0..n {
        let key = key(i);
        let mut seen = None;
        for _ in 0..20 {
            seen = c.stale_get(at, &key).await;
            if seen.is_some() {
                break;
            }
        }
        let got = seen.ok_or(format!("{name} does not answer for {key}"))?;
        if got.value.as_deref() != Some(value(i).as_bytes()) {
            return Err(format!("{name} holds {:?} for {key}", got.value));
        }
    }
    Ok(())
}

fn value(i: u64) -> String {
    format!("{i:03}-{}", "v".repeat(200))
}

/// A follower cut off while the others write far past the log's retention can only catch
/// up from a snapshot of the store: it arrives in chunks through 10 % loss, is installed, and
/// the follower then holds every acknowledged write.
#[test]
fn a_follower_far_behind_catches_up_from_a_streamed_snapshot() {
    for_each_seed(|seed| {
        let setup = Setup {
            log_retain_bytes: 4 << 10,
            auto_compact_revisions: 0,
        };
        run(seed, setup, |mut c, ctl| async move {
            let (_, leader) = c.call(WRITER, 1, &put_op("first", "1")).await?;
            let behind = NODES
                .iter()
                .copied()
                .find(|n| *n != name_of(leader))
                .ok_or("no follower")?;
            for other in NODES.iter().filter(|n| **n != behind) {
                turmoil::partition(behind, *other);
            }
            ctl.note(format!("cut off {behind}"));
            for i in 0..KEYS {
                c.call(WRITER, i + 2, &put_op(&format!("k{i:03}"), &value(i)))
                    .await?;
            }
            let at = node_addr(behind);
            let before = c
                .detail(at)
                .await
                .ok_or("the cut-off follower does not answer")?;
            let leader_detail = c.detail(c.leader.ok_or("no leader")?).await;
            let compacted = leader_detail.map_or(0, |d| d.stats.snapshot_index);
            if compacted <= before.stats.last_log_index {
                return Err(format!(
                    "the leader's log starts after {compacted}, the follower has up to {}: \
                     no snapshot is needed, so the test tests nothing",
                    before.stats.last_log_index
                ));
            }
            ctl.lossy.set(true);
            for other in NODES.iter().filter(|n| **n != behind) {
                turmoil::repair(behind, *other);
            }
            ctl.note(format!("repaired {behind}, loss on"));
            // Every write must show on the follower, read from its own store.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            let last = format!("k{:03}", KEYS - 1);
            loop {
                if let Some(s) = c.stale_get(at, &last).await {
                    if s.value.as_deref() == Some(value(KEYS - 1).as_bytes()) {
                        break;
                    }
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(format!("{behind} did not catch up within 120 s"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ctl.lossy.set(false);
            holds_every_write(&mut c, behind, KEYS, |i| format!("k{i:03}"), value).await?;
            let after = c.detail(at).await.ok_or("no detail")?;
            if after.stats.snapshot_index <= before.stats.last_log_index {
                return Err(format!(
                    "{behind} caught up without a snapshot (its log starts after {})",
                    after.stats.snapshot_index
                ));
            }
            Ok(())
        })
    });
}

/// With `--auto-compact-revisions 20` the leader compacts through the log as writes go on:
/// old revisions read as `compacted` naming the oldest kept, recent ones stay readable, and
/// every member compacts alike.
#[test]
fn automatic_compaction_keeps_the_configured_revisions() {
    for_each_seed(|seed| {
        let setup = Setup {
            log_retain_bytes: 64 << 20,
            auto_compact_revisions: 20,
        };
        run(seed, setup, |mut c, _ctl| async move {
            for i in 0..100u64 {
                c.call(WRITER, i + 1, &put_op("k", &i.to_string())).await?;
            }
            // One write more, so that the compaction proposed after the last batch applies.
            c.call(WRITER, 101, &put_op("other", "x")).await?;
            let old = ClientOp::Get {
                key: "k".into(),
                rev: Some(5),
                consistency: Consistency::Linearizable,
            };
            let leader = c.leader.ok_or("no leader")?;
            let compacted_before = match c.ask(leader, 0x200, 1, &old).await {
                Some(Err(ClientError::Compacted { compacted_before })) => compacted_before,
                other => return Err(format!("a read at revision 5 answered {other:?}")),
            };
            if !(60..=81).contains(&compacted_before) {
                return Err(format!(
                    "kept revisions from {compacted_before} of 101 with 20 to keep"
                ));
            }
            let recent = ClientOp::Get {
                key: "k".into(),
                rev: Some(95),
                consistency: Consistency::Linearizable,
            };
            match c.ask(leader, 0x200, 2, &recent).await {
                Some(Ok(ClientResponse::Get(g))) if g.value.as_deref() == Some(b"94") => {}
                other => return Err(format!("a read at revision 95 answered {other:?}")),
            }
            // Every member applies the same compaction entry.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let mut points = Vec::new();
                for n in NODES {
                    points.push(
                        c.detail(node_addr(n))
                            .await
                            .map(|d| d.stats.store.compacted_revision),
                    );
                }
                if points.iter().all(|p| *p == Some(compacted_before)) {
                    return Ok(());
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(format!(
                        "compaction points {points:?}, leader {compacted_before}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
}

/// A client looking for the leader sends a write to every member, and a retry sends it
/// again: copies that reach the leader while the first is on its way to commit wait for that
/// entry instead of becoming entries of their own, and the client gets its answer.
#[test]
fn copies_of_a_write_in_flight_become_one_entry() {
    for_each_seed(|seed| {
        let setup = Setup {
            log_retain_bytes: 64 << 20,
            auto_compact_revisions: 0,
        };
        run(seed, setup, |mut c, _ctl| async move {
            let (_, leader) = c.call(WRITER, 1, &put_op("a", "1")).await?;
            let before = c.detail(leader).await.ok_or("the leader gave no detail")?;
            let op = put_op("b", "2");
            for _ in 0..5 {
                c.send(leader, WRITER, 2, &op).await;
            }
            match c.ask(leader, WRITER, 2, &op).await {
                Some(Ok(ClientResponse::Put(_))) => {}
                other => return Err(format!("six copies of a put answered {other:?}")),
            }
            let after = c.detail(leader).await.ok_or("the leader gave no detail")?;
            if after.stats.term != before.stats.term {
                return Err(format!(
                    "the term moved from {} to {}",
                    before.stats.term, after.stats.term
                ));
            }
            let added = after.stats.last_log_index - before.stats.last_log_index;
            if added != 1 {
                return Err(format!("six copies of one write added {added} entries"));
            }
            Ok(())
        })
    });
}

/// Keys and values of the restart scenarios: a state of about 800 KiB, a few hundred chunks.
const BIG_KEYS: u64 = 800;

fn big_value(i: u64) -> String {
    format!("{i:04}-{}", "w".repeat(1000))
}

/// Which side of a snapshot transfer a scenario restarts.
#[derive(Clone, Copy, Debug)]
enum Restart {
    Follower,
    Leader,
}

/// A follower far behind gets a snapshot through bursts of loss; a fifth of the way in,
/// `who` is crashed and started again. The stream that follows continues the follower's
/// partial store (a transfer on the follower shows `resumed_after_revision` above its own
/// store's revision), and the follower ends up with every acknowledged write.
fn a_stream_cut_by_a_restart_is_continued(who: Restart) {
    for_each_seed(|seed| {
        let setup = Setup {
            log_retain_bytes: 4 << 10,
            auto_compact_revisions: 0,
        };
        run(seed, setup, move |mut c, ctl| async move {
            let (_, leader) = c.call(WRITER, 1, &put_op("first", "1")).await?;
            let leader = name_of(leader);
            let behind = NODES
                .iter()
                .copied()
                .find(|n| *n != leader)
                .ok_or("no follower")?;
            for other in NODES.iter().filter(|n| **n != behind) {
                turmoil::partition(behind, *other);
            }
            ctl.note(format!("cut off {behind}"));
            for i in 0..BIG_KEYS {
                c.call(WRITER, i + 2, &put_op(&format!("b{i:04}"), &big_value(i)))
                    .await?;
            }
            ctl.lossy.set(true);
            for other in NODES.iter().filter(|n| **n != behind) {
                turmoil::repair(behind, *other);
            }
            ctl.note(format!("repaired {behind}, loss on"));
            let at = node_addr(behind);
            // What the follower's own store holds: a stream may continue that too, so only
            // a stream after a later revision shows that the cut one was continued.
            let own = c
                .detail(at)
                .await
                .ok_or("the cut-off follower does not answer")?
                .stats
                .store
                .revision;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                let receiving = c.detail(at).await.and_then(|d| {
                    d.stats
                        .store
                        .transfers
                        .into_iter()
                        .find(|t| !t.sending && t.bytes_total > 0)
                });
                if let Some(t) = receiving {
                    if t.bytes_done * 5 >= t.bytes_total {
                        ctl.note(format!(
                            "{behind} has {} of ~{} bytes",
                            t.bytes_done, t.bytes_total
                        ));
                        break;
                    }
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(format!("no snapshot reached {behind} within 120 s"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let victim = match who {
                Restart::Follower => behind,
                Restart::Leader => leader,
            };
            ctl.restart.borrow_mut().push(victim);
            ctl.note(format!("restarted {victim}"));

            let last = format!("b{:04}", BIG_KEYS - 1);
            let mut resumed = None;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
            loop {
                if let Some(d) = c.detail(at).await {
                    if let Some(t) = d
                        .stats
                        .store
                        .transfers
                        .iter()
                        .find(|t| !t.sending && t.resumed_after_revision > own)
                    {
                        resumed.get_or_insert((t.peer.clone(), t.resumed_after_revision));
                    }
                }
                if let Some(s) = c.stale_get(at, &last).await {
                    if s.value.as_deref() == Some(big_value(BIG_KEYS - 1).as_bytes()) {
                        break;
                    }
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(format!("{behind} did not catch up within 240 s"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ctl.lossy.set(false);
            let Some((from, after)) = resumed else {
                return Err(format!(
                    "{behind} caught up, but never from a stream that continued its partial store"
                ));
            };
            ctl.note(format!(
                "{behind} continued after revision {after} from {from}"
            ));
            holds_every_write(&mut c, behind, BIG_KEYS, |i| format!("b{i:04}"), big_value).await
        })
    });
}

#[test]
fn a_follower_restarted_mid_snapshot_continues_it() {
    a_stream_cut_by_a_restart_is_continued(Restart::Follower);
}

#[test]
fn a_leader_restarted_mid_snapshot_is_continued_by_the_next() {
    a_stream_cut_by_a_restart_is_continued(Restart::Leader);
}
