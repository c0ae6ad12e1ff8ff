//! The real node server (`run_with_socket`, disk storage, sessions) on turmoil's simulated
//! network: three hosts n1..n3 and a client, in virtual time. The client writes while the
//! leader is cut off from its peers, after the partition heals, and while links drop
//! datagrams; then every acknowledged write must be readable, once, from the final leader.
//!
//! Each seed is its own simulation and replays exactly: `MYRAFT_SEED=N cargo test -p
//! myraft-node --test turmoil_cluster` reruns seed N alone. The network (latency, loss) comes
//! from turmoil's seeded RNG, the nodes' election timeouts from `NodeConfig::rng_seed`, and
//! time is turmoil's, and so is the nodes' wall clock (`support::sim_clock_us`), which message
//! ids are minted from and checked against. A second scenario restarts a node with its clock
//! set back, through `NodeConfig::wall_clock_us`.
#![allow(clippy::unwrap_used)]

mod support;

use myraft_node::server::{bootstrap_static, run_with_socket};
use myraft_wire::api::ClientResponse;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use support::{bind, client, membership, node_addr, node_config, put_op, sim_clock_us, Client};
use tokio_util::sync::CancellationToken;

const CLUSTER: u64 = 0xC1;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// Seeds run when `MYRAFT_SEED` is not set.
const DEFAULT_SEEDS: std::ops::Range<u64> = 0..4;
/// Writes per phase of the scenario; the lossy phase writes more, so that loss hits
/// proposals, acknowledgements and replies alike.
const WRITES: u64 = 15;
const LOSSY_WRITES: u64 = 40;

/// One node's software.
async fn node(
    seed: u64,
    id: u64,
    name: &'static str,
    dir: PathBuf,
    clock: fn() -> u64,
) -> turmoil::Result {
    bootstrap_static(&dir, CLUSTER, id, name, membership(&NODES))?;
    let mut cfg = node_config(seed, id, name, dir);
    cfg.wall_clock_us = clock;
    run_with_socket(cfg, bind().await?, CancellationToken::new()).await?;
    Ok(())
}

/// An acknowledged write: who sent it, under which sequence number, and what it returned.
#[derive(Clone, Debug)]
struct Acked {
    client_id: u64,
    seq: u64,
    key: String,
    value: String,
    revision: u64,
}

/// Each phase writes as its own client, so that the last write of every phase can be
/// retried at the end: a session remembers only its client's latest reply (§6.3).
async fn write_phase(
    c: &mut Client,
    phase: u64,
    writes: u64,
    acked: &mut Vec<Acked>,
    log: &Rc<RefCell<Vec<String>>>,
) -> Result<(), String> {
    let client_id = 0x100 + phase;
    for i in 0..writes {
        let seq = i + 1;
        let key = format!("p{phase}-k{i}");
        let value = format!("v{phase}.{i}");
        let (r, at) = c.call(client_id, seq, &put_op(&key, &value)).await?;
        let ClientResponse::Put(p) = r else {
            return Err(format!("put {key}: expected a put result, got {r:?}"));
        };
        log.borrow_mut().push(format!(
            "{:?} put {key} rev {} at {at}",
            turmoil::elapsed(),
            p.revision
        ));
        acked.push(Acked {
            client_id,
            seq,
            key,
            value,
            revision: p.revision,
        });
    }
    log.borrow_mut().push(format!(
        "phase {phase} done, {} attempts unanswered so far",
        c.unanswered
    ));
    Ok(())
}

fn name_of(addr: SocketAddr) -> &'static str {
    support::name_of(&NODES, addr)
}

/// The scenario, as the client host. `lossy` asks the test loop, which owns the simulation,
/// to turn message loss on or off.
async fn scenario(lossy: Rc<Cell<bool>>, log: Rc<RefCell<Vec<String>>>) -> Result<(), String> {
    let mut c = client(CLUSTER, NODES.iter().map(|n| node_addr(n)).collect()).await;
    let mut acked = Vec::new();

    write_phase(&mut c, 1, WRITES, &mut acked, &log).await?;

    // Raft §5.2, §5.4: a leader cut off from the majority can commit nothing; the majority
    // elects a new leader, which must hold every write acknowledged so far.
    let old = c.leader.ok_or("no leader after the first phase")?;
    let old_name = name_of(old);
    for other in NODES.iter().filter(|n| **n != old_name) {
        turmoil::partition(old_name, *other);
    }
    log.borrow_mut().push(format!("partitioned {old_name}"));
    write_phase(&mut c, 2, WRITES, &mut acked, &log).await?;
    let during = c.leader.ok_or("no leader during the partition")?;
    if during == old {
        return Err(format!(
            "{old_name} acknowledged writes while cut off from its peers"
        ));
    }

    // The old leader comes back, but its link to the new leader holds datagrams for a while
    // and then delivers them in a burst: stale terms and duplicates arrive late.
    for other in NODES.iter().filter(|n| **n != old_name) {
        turmoil::repair(old_name, *other);
    }
    let new_name = name_of(during);
    turmoil::hold(old_name, new_name);
    log.borrow_mut()
        .push(format!("repaired {old_name}, held {old_name}-{new_name}"));
    write_phase(&mut c, 3, WRITES, &mut acked, &log).await?;
    turmoil::release(old_name, new_name);

    // Loss stays on through the checks below: reads and retries must cope with it too.
    lossy.set(true);
    log.borrow_mut().push("loss on".into());
    write_phase(&mut c, 4, LOSSY_WRITES, &mut acked, &log).await?;

    // Every acknowledged write is there, exactly once: the revision it was acknowledged
    // with and version 1, where a write applied twice would show a later revision and
    // version 2.
    for a in &acked {
        let (g, at) = c.get(&a.key).await?;
        if g.value.as_deref() != Some(a.value.as_bytes()) {
            return Err(format!(
                "{a:?}: {} answers {:?}",
                name_of(at),
                g.value.map(|v| String::from_utf8_lossy(&v).into_owned())
            ));
        }
        if (g.revision, g.version) != (a.revision, 1) {
            return Err(format!(
                "{a:?}: {} answers revision {} version {}",
                name_of(at),
                g.revision,
                g.version
            ));
        }
    }
    let (_, final_leader) = c.get(&acked[0].key).await?;
    log.borrow_mut()
        .push(format!("final leader {}", name_of(final_leader)));

    // Raft dissertation §6.3: the same (client id, seq) again, as after a lost reply, gets
    // the original answer and is not applied again.
    let last_rev = acked.iter().map(|a| a.revision).max().unwrap_or(0);
    for phase in 1..=4 {
        let Some(a) = acked.iter().rfind(|a| a.client_id == 0x100 + phase) else {
            continue;
        };
        let (r, _) = c
            .call(a.client_id, a.seq, &put_op(&a.key, &a.value))
            .await?;
        match r {
            ClientResponse::Put(p) if p.revision == a.revision => {}
            other => return Err(format!("retry of {a:?} answered {other:?}")),
        }
    }
    let (r, _) = c.call(0x200, 1, &put_op("after", "retries")).await?;
    match r {
        ClientResponse::Put(p) if p.revision == last_rev + 1 => {}
        other => {
            return Err(format!(
                "the first write after the retries answered {other:?}, not revision {}",
                last_rev + 1
            ))
        }
    }

    lossy.set(false);
    log.borrow_mut().push(format!(
        "loss off, {} attempts unanswered in all",
        c.unanswered
    ));

    // The old leader rejoined and catches up with everything, however it was cut off.
    for &n in &c.nodes.clone() {
        let mut caught_up = false;
        for _ in 0..100 {
            if c.stale_get(n, "after")
                .await
                .and_then(|s| s.value)
                .as_deref()
                == Some(b"retries".as_slice())
            {
                caught_up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !caught_up {
            return Err(format!("{} never applied the last write", name_of(n)));
        }
    }
    log.borrow_mut()
        .push(format!("done at {:?}", turmoil::elapsed()));
    Ok(())
}

/// Runs one seeded simulation; returns what the client saw, in order.
fn run_seed(seed: u64) -> Result<Vec<String>, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(600))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        // Loss, when on, breaks a link now and then and mends it after a few datagrams.
        .repair_rate(0.3)
        .udp_capacity(4096)
        .build();
    for (i, name) in NODES.into_iter().enumerate() {
        let dir = tmp.path().join(name);
        sim.host(name, move || {
            node(seed, i as u64 + 1, name, dir.clone(), sim_clock_us)
        });
    }
    let lossy = Rc::new(Cell::new(false));
    let log = Rc::new(RefCell::new(Vec::new()));
    let (l, g) = (lossy.clone(), log.clone());
    sim.client("client", async move { Ok(scenario(l, g).await?) });
    let mut loss_on = false;
    loop {
        let done = sim.step().map_err(|e| e.to_string())?;
        if done {
            break;
        }
        if lossy.get() != loss_on {
            loss_on = lossy.get();
            sim.set_fail_rate(if loss_on { 0.1 } else { 0.0 });
        }
    }
    drop(sim);
    let out = log.borrow().clone();
    Ok(out)
}

fn seeds() -> Vec<u64> {
    match std::env::var("MYRAFT_SEED") {
        Ok(s) => vec![s
            .trim()
            .parse()
            .expect("MYRAFT_SEED must be an unsigned integer")],
        Err(_) => DEFAULT_SEEDS.collect(),
    }
}

#[test]
fn acknowledged_writes_survive_partition_and_loss() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    for seed in seeds() {
        match run_seed(seed) {
            Ok(log) => eprintln!("seed {seed}: {}", log.join("; ")),
            Err(e) => panic!("seed {seed} failed: {e}\nreplay with MYRAFT_SEED={seed}"),
        }
    }
}

/// The same seed twice gives the same run, datagram for datagram as far as the client can
/// tell: what every write returned, from which node, at which simulated time.
#[test]
fn a_seed_replays_the_same_run() {
    let seed = seeds()[0];
    let first = run_seed(seed).unwrap_or_else(|e| panic!("seed {seed} failed: {e}"));
    let second = run_seed(seed).unwrap_or_else(|e| panic!("seed {seed} failed: {e}"));
    assert_eq!(first, second, "seed {seed} did not replay the same run");
}

/// A clock NTP stepped back by 10 s: behind the ids the node sent before, still within
/// what its peers accept (`myraft_wire::replay::MAX_AGE_MS`).
fn clock_ten_seconds_back() -> u64 {
    sim_clock_us() - 10_000_000
}

/// The client's side of the restart test: `restart` asks the test loop to restart n3, whose
/// software counts its starts in `starts`.
async fn restart_scenario(
    restart: Rc<Cell<bool>>,
    starts: Rc<Cell<u32>>,
    log: Rc<RefCell<Vec<String>>>,
) -> Result<(), String> {
    let mut c = client(CLUSTER, NODES.iter().map(|n| node_addr(n)).collect()).await;
    let mut acked = Vec::new();
    write_phase(&mut c, 1, WRITES, &mut acked, &log).await?;
    // A follower only answers its leader, so only the leader remembers n3's ids. Cut off
    // the other node, and the leader can commit nothing without hearing n3 again.
    let leader = name_of(c.leader.ok_or("no leader after the first phase")?);
    let cut = match leader {
        "n3" => "n1",
        l => NODES
            .into_iter()
            .find(|n| *n != l && *n != "n3")
            .ok_or("three nodes have a third")?,
    };

    restart.set(true);
    let n3 = node_addr("n3");
    let mut back = false;
    for _ in 0..100 {
        let read = c.stale_get(n3, "p1-k0").await;
        if starts.get() == 2 && read.is_some() {
            back = true;
            break;
        }
    }
    if !back {
        return Err("n3 did not come back after its restart".into());
    }
    log.borrow_mut()
        .push("n3 restarted, its clock 10 seconds back".into());

    for other in NODES.iter().filter(|n| **n != cut) {
        turmoil::partition(cut, *other);
    }
    log.borrow_mut().push(format!("partitioned {cut}"));
    write_phase(&mut c, 2, WRITES, &mut acked, &log).await?;

    let last = acked.last().ok_or("nothing was acknowledged")?;
    for _ in 0..100 {
        if c.stale_get(n3, &last.key)
            .await
            .and_then(|s| s.value)
            .as_deref()
            == Some(last.value.as_bytes())
        {
            log.borrow_mut()
                .push(format!("done at {:?}", turmoil::elapsed()));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("n3 never applied {last:?}"))
}

/// NTP may step a clock back while its node is down. Its peers still remember the message
/// ids it sent before, so the restarted node must send above them to be heard at all: here
/// it has to be, for a majority of n2 and n3 to commit anything.
#[test]
fn a_node_restarted_with_its_clock_set_back_is_heard_by_its_peers() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let seed = seeds()[0];
    let tmp = tempfile::tempdir().unwrap();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(600))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .udp_capacity(4096)
        .build();
    let starts = Rc::new(Cell::new(0u32));
    for (i, name) in NODES.into_iter().enumerate() {
        let dir = tmp.path().join(name);
        let starts = starts.clone();
        sim.host(name, move || {
            let mut clock: fn() -> u64 = sim_clock_us;
            if name == "n3" {
                starts.set(starts.get() + 1);
                if starts.get() > 1 {
                    clock = clock_ten_seconds_back;
                }
            }
            node(seed, i as u64 + 1, name, dir.clone(), clock)
        });
    }
    let restart = Rc::new(Cell::new(false));
    let log = Rc::new(RefCell::new(Vec::new()));
    let (r, s, l) = (restart.clone(), starts.clone(), log.clone());
    sim.client(
        "client",
        async move { Ok(restart_scenario(r, s, l).await?) },
    );
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!(
                "seed {seed} failed: {e}\n{}\nreplay with MYRAFT_SEED={seed}",
                log.borrow().join("; ")
            ),
        }
        if restart.take() {
            sim.bounce("n3");
        }
    }
    assert_eq!(starts.get(), 2, "n3 should have started twice");
    eprintln!("seed {seed}: {}", log.borrow().join("; "));
}
