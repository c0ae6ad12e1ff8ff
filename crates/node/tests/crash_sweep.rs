//! Crash-consistency sweep of the real node: three `myraft-node` servers (the real event
//! loop, WAL, state machine, snapshots and their transfer) on turmoil's simulated network,
//! each logging to a [`SimFs`] that keeps only what was synced when the power goes.
//!
//! Every seed draws its own schedule: faults at a random durable step of a random node
//! (a crash that may tear the write it interrupts, or a write or fsync failing with ENOSPC
//! or EIO), a leader cut off while it still takes writes (so it holds a conflicting suffix
//! and catches up by snapshot), and restarts of the crashed nodes. Snapshots are taken every
//! few entries and segments are small, so appends, segment rolls, snapshot saves,
//! compactions and snapshot installs are all among the steps a crash can land on.
//!
//! Checked after every run: every acknowledged write is read back linearizably with the
//! value and revision it was acknowledged with and version 1 (none lost, none applied
//! twice); every node, once caught up, holds exactly the same keys, values and revisions;
//! no node fails to restart from what its disk kept.
//!
//! `MYRAFT_SEEDS=N` sweeps N seeds (default 1 000), `MYRAFT_SEED=N` replays one; a failure
//! prints the seed, the faults that fired and the client's log.
#![allow(clippy::unwrap_used)]

mod support;

use myraft_node::server::{bootstrap_static_with, run_with_socket};
use myraft_node::storage::{DiskOptions, Fault, SimFs};
use myraft_wire::api::ClientResponse;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{bind, client, membership, node_addr, node_config, put_op};
use tokio_util::sync::CancellationToken;

const CLUSTER: u64 = 0xC2;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const WRITES: u64 = 24;
const WRITER: u64 = 0x100;
const DEFAULT_SEEDS: u64 = 1_000;
/// Seeds that once found a bug, run on top of the default range: a restart after a failed
/// fsync built on writes only the page cache held (a new segment, a compaction to a
/// snapshot whose rename was not durable), which a later power cut broke.
const REGRESSION_SEEDS: [u64; 3] = [7_659, 7_730, 9_084];
/// Wall-clock time one seed may take before the sweep calls it a hang (a seed takes tens of
/// milliseconds; a failing one a few seconds).
const SEED_WALL_LIMIT: Duration = Duration::from_secs(60);

/// Errors the nodes stopped with, by node: the sweep tells the ones its faults caused from
/// the ones they did not.
type Stops = Arc<Mutex<Vec<(usize, String)>>>;

async fn node(seed: u64, i: usize, dir: PathBuf, fs: SimFs, stops: Stops) -> turmoil::Result {
    let name = NODES[i];
    let id = i as u64 + 1;
    let disk = DiskOptions {
        segment_size: 512,
        vfs: Arc::new(fs),
    };
    let started = async {
        bootstrap_static_with(&dir, CLUSTER, id, name, membership(&NODES), &disk)?;
        let socket = bind().await?;
        let mut cfg = node_config(seed, id, name, dir);
        // A log of a few entries, compacted as soon as the store has synced them: writes
        // beyond it reach a lagging follower as a snapshot streamed from the store.
        cfg.log_retain_bytes = 600;
        cfg.disk = disk;
        run_with_socket(cfg, socket, CancellationToken::new()).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    if let Err(e) = started.await {
        stops.lock().unwrap().push((i, e.to_string()));
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct Acked {
    key: String,
    value: String,
    revision: u64,
}

fn name_of(addr: SocketAddr) -> &'static str {
    support::name_of(&NODES, addr)
}

/// The client host: writes, cuts the leader off for a while after a third of them, then
/// checks everything once the harness says all nodes are back.
async fn scenario(
    cut_after: u64,
    settled: Rc<RefCell<bool>>,
    log: Rc<RefCell<Vec<String>>>,
) -> Result<(), String> {
    let nodes: Vec<SocketAddr> = NODES.iter().map(|n| node_addr(n)).collect();
    let mut c = client(CLUSTER, nodes.clone()).await;
    c.attempt = Duration::from_millis(300);
    let mut acked = Vec::new();
    let mut cut: Option<&'static str> = None;
    for i in 0..WRITES {
        if i == cut_after {
            if let Some(l) = c.leader {
                // The leader keeps taking writes it cannot commit: a suffix that the new
                // leader's snapshot will have to replace.
                let l = name_of(l);
                for other in NODES.iter().filter(|n| **n != l) {
                    turmoil::partition(l, *other);
                }
                cut = Some(l);
                log.borrow_mut().push(format!("cut off {l}"));
            }
        }
        if i == cut_after + 8 {
            if let Some(l) = cut.take() {
                for other in NODES.iter().filter(|n| **n != l) {
                    turmoil::repair(l, *other);
                }
                log.borrow_mut().push(format!("repaired {l}"));
            }
        }
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let (r, at) = c.call(WRITER, i + 1, &put_op(&key, &value)).await?;
        let ClientResponse::Put(p) = r else {
            return Err(format!("put {key}: expected a put result, got {r:?}"));
        };
        log.borrow_mut().push(format!(
            "{:?} put {key} rev {} at {}",
            turmoil::elapsed(),
            p.revision,
            name_of(at)
        ));
        acked.push(Acked {
            key,
            value,
            revision: p.revision,
        });
    }
    if let Some(l) = cut.take() {
        for other in NODES.iter().filter(|n| **n != l) {
            turmoil::repair(l, *other);
        }
    }
    *settled.borrow_mut() = true;

    // No acknowledged write lost, none applied twice.
    for a in &acked {
        let (g, at) = c.get(&a.key).await?;
        if g.value.as_deref() != Some(a.value.as_bytes()) || g.revision != a.revision {
            return Err(format!(
                "acknowledged {a:?}, but {} answers {:?} at revision {} (version {})",
                name_of(at),
                g.value.map(|v| String::from_utf8_lossy(&v).into_owned()),
                g.revision,
                g.version
            ));
        }
        if g.version != 1 {
            return Err(format!("{a:?} was applied {} times", g.version));
        }
    }
    let last = acked.last().map_or(0, |a| a.revision);

    // Every node catches up and then holds the same state.
    for &n in &nodes {
        let mut caught_up = false;
        for _ in 0..200 {
            if c.stale_get(n, &format!("k{}", WRITES - 1))
                .await
                .is_some_and(|s| s.revision == last)
            {
                caught_up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !caught_up {
            let d = c.detail(n).await;
            return Err(format!(
                "{} never applied the last write (revision {last}); it reports {:?}",
                name_of(n),
                d.map(|d| (
                    d.role,
                    d.stats.term,
                    d.stats.commit_index,
                    d.stats.applied_index,
                    d.stats.snapshot_index
                ))
            ));
        }
        for a in &acked {
            let s = c.stale_get(n, &a.key).await;
            let want = Some((Some(a.value.as_bytes().to_vec()), a.revision, 1));
            let got = s.map(|s| (s.value, s.revision, s.version));
            if got != want {
                return Err(format!(
                    "{} holds {:?} for {}, the cluster acknowledged {:?}",
                    name_of(n),
                    got,
                    a.key,
                    want
                ));
            }
        }
    }
    log.borrow_mut()
        .push(format!("checked at {:?}", turmoil::elapsed()));
    Ok(())
}

/// What one seed's schedule does to the nodes' disks.
#[derive(Debug, Clone, Copy)]
struct Planned {
    at_ms: u64,
    node: usize,
    step: u64,
    fault: Fault,
    /// Only steps of this kind are counted (see `TARGETS`).
    on: Option<&'static str>,
}

/// Steps of an install that counting every step reaches too rarely: the swap of a store
/// built from a snapshot stream into place, any step on that store's file, the copy a
/// follower continues its own store in.
const TARGETS: [&str; 3] = ["rename", "state.redb.incoming", "copy"];

fn plan(rng: &mut StdRng, targets: &mut StdRng) -> Vec<Planned> {
    let count = rng.random_range(1..=3);
    let mut out: Vec<Planned> = (0..count)
        .map(|_| Planned {
            at_ms: rng.random_range(0..1_200),
            node: rng.random_range(0..NODES.len()),
            step: rng.random_range(1..=60),
            fault: match rng.random_range(0..10) {
                0 => Fault::NoSpace,
                1 => Fault::Io,
                _ => Fault::Crash,
            },
            on: None,
        })
        .collect();
    // A quarter of the faults aim at a step kind; drawn apart so the rest of the plan is
    // the same as without aiming.
    for p in &mut out {
        if targets.random_range(0..4) == 0 {
            p.on = Some(TARGETS[targets.random_range(0..TARGETS.len())]);
            p.step = targets.random_range(1..=3);
        }
    }
    out.sort_by_key(|p| p.at_ms);
    out
}

/// The faults that fired, described.
fn run_seed(seed: u64) -> Result<Vec<String>, String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC4A5);
    let planned = plan(&mut rng, &mut StdRng::seed_from_u64(seed ^ 0x7A26));
    let cut_after = rng.random_range(2..10);
    let tmp = tempdir();
    let fss: Vec<SimFs> = (0..NODES.len())
        .map(|i| SimFs::new(seed.wrapping_mul(7).wrapping_add(i as u64)))
        .collect();
    let stops: Stops = Arc::default();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(60))
        .tick_duration(Duration::from_millis(2))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(4))
        .udp_capacity(4096)
        .build();
    for (i, name) in NODES.into_iter().enumerate() {
        let dir = tmp.path().join(name);
        let (fs, stops) = (fss[i].clone(), stops.clone());
        sim.host(name, move || {
            node(seed, i, dir.clone(), fs.clone(), stops.clone())
        });
    }
    let settled = Rc::new(RefCell::new(false));
    let log = Rc::new(RefCell::new(Vec::new()));
    let (s, l) = (settled.clone(), log.clone());
    sim.client(
        "client",
        async move { Ok(scenario(cut_after, s, l).await?) },
    );

    let report = |msg: String, log: &Rc<RefCell<Vec<String>>>, fss: &[SimFs]| {
        let fired: Vec<String> = fss
            .iter()
            .enumerate()
            .flat_map(|(i, fs)| {
                fs.fired()
                    .into_iter()
                    .map(move |f| format!("{}: {f}", NODES[i]))
            })
            .collect();
        format!(
            "{msg}\nplan: {planned:?}, leader cut after write {cut_after}\nfired: {fired:?}\nclient: {}",
            log.borrow().join("; ")
        )
    };

    let mut next = 0;
    let mut down_since: [Option<Duration>; 3] = [None; 3];
    let mut restarts = [0u32; 3];
    loop {
        let done = match sim.step() {
            Ok(done) => done,
            Err(e) => return Err(report(e.to_string(), &log, &fss)),
        };
        if done {
            break;
        }
        let now = sim.elapsed();
        while next < planned.len() && now >= Duration::from_millis(planned[next].at_ms) {
            let p = planned[next];
            if !*settled.borrow() {
                match p.on {
                    Some(on) => fss[p.node].arm_on(on, p.step, p.fault),
                    None => fss[p.node].arm(p.step, p.fault),
                }
            }
            next += 1;
        }
        for (i, name) in NODES.into_iter().enumerate() {
            if fss[i].crashed() {
                // The machine died mid-step: the process goes with it, and the disk keeps
                // only what was durable.
                sim.crash(name);
                fss[i].power_cut();
                down_since[i] = Some(now);
            } else if down_since[i].is_none() && !sim.is_host_running(name) {
                // The node stopped on its own, on a disk error.
                down_since[i] = Some(now);
            }
            if down_since[i].is_some_and(|t| now >= t + Duration::from_millis(300)) {
                down_since[i] = None;
                restarts[i] += 1;
                if restarts[i] > 6 {
                    return Err(report(
                        format!("{name} keeps stopping: {:?}", stops.lock().unwrap()),
                        &log,
                        &fss,
                    ));
                }
                sim.bounce(name);
            }
        }
    }
    // Every stop must be explained by a fault that fired on that node: a crash (the dying
    // process may notice the dead disk first) or an injected error. Anything else, such as
    // a node that cannot recover from what its disk kept, is a bug.
    let stops = stops.lock().unwrap().clone();
    for (i, fs) in fss.iter().enumerate() {
        let caused = fs.fired().len();
        let mine: Vec<&String> = stops
            .iter()
            .filter(|(n, _)| *n == i)
            .map(|(_, e)| e)
            .collect();
        let unexplained: Vec<&&String> = mine
            .iter()
            .filter(|e| {
                !e.contains("lost power") && !e.contains("os error 28") && !e.contains("os error 5")
            })
            .collect();
        if !unexplained.is_empty() || mine.len() > caused {
            return Err(report(
                format!(
                    "{} stopped {} times for {caused} faults: {mine:?}",
                    NODES[i],
                    mine.len()
                ),
                &log,
                &fss,
            ));
        }
    }
    let fired: Vec<String> = fss.iter().flat_map(|f| f.fired()).collect();
    Ok(fired)
}

/// "Crash at step 7 (write 60 bytes to …/raft/…)" → "Crash write log": the fault, the step,
/// and which file: the Raft log, its snapshot file, the state store, or a store being built
/// from a snapshot stream.
fn step_kind(what: &str) -> String {
    let fault = what.split_whitespace().next().unwrap_or("?");
    let op = what
        .split('(')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("?");
    let op = if what.contains("sync dir") {
        "sync-dir"
    } else {
        op
    };
    let file = if op == "sync-dir" {
        ""
    } else if what.contains("state.redb.incoming") {
        " incoming"
    } else if what.contains("state.redb") {
        " store"
    } else if what.contains("snapshot") {
        " snapshot"
    } else {
        " log"
    };
    format!("{fault} {op}{file}")
}

fn tempdir() -> tempfile::TempDir {
    // Only the data dir's small files (identity, lock, message ids) live on the real disk.
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("MYRAFT_SEED") {
        return vec![s
            .trim()
            .parse()
            .expect("MYRAFT_SEED must be an unsigned integer")];
    }
    let n = std::env::var("MYRAFT_SEEDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    let mut seeds: Vec<u64> = (0..n).collect();
    seeds.extend(REGRESSION_SEEDS.iter().filter(|&&s| s >= n));
    seeds
}

#[test]
fn crash_sweep_loses_no_acknowledged_write() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let seeds = seeds();
    let start = std::time::Instant::now();
    // Seeds are independent simulations: split them over the cores.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let fired: Mutex<std::collections::BTreeMap<String, u64>> = Mutex::default();
    // A node stuck in a loop never yields to the simulation, so its seed would hang the
    // suite instead of failing it: a watchdog names the seed and ends the run.
    let running: Mutex<Vec<Option<(u64, std::time::Instant)>>> = Mutex::new(vec![None; threads]);
    let finished = AtomicBool::new(false);
    let failures: Vec<(u64, String)> = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                for (seed, since) in running.lock().unwrap().iter().flatten() {
                    if since.elapsed() > SEED_WALL_LIMIT {
                        eprintln!(
                            "crash sweep: seed {seed} still runs after {SEED_WALL_LIMIT:?}: a \
                             node loops without yielding\nreplay: MYRAFT_SEED={seed} cargo \
                             test -p myraft-node --test crash_sweep"
                        );
                        std::process::exit(101);
                    }
                }
            }
        });
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<u64> = seeds.iter().copied().skip(t).step_by(threads).collect();
                let (fired, running) = (&fired, &running);
                scope.spawn(move || {
                    let mut failed = Vec::new();
                    for seed in mine {
                        running.lock().unwrap()[t] = Some((seed, std::time::Instant::now()));
                        let r = run_seed(seed);
                        running.lock().unwrap()[t] = None;
                        if std::env::var("MYRAFT_SEED").is_ok() {
                            eprintln!("seed {seed}: {r:?}");
                        }
                        match r {
                            Ok(f) => {
                                let mut all = fired.lock().unwrap();
                                for what in f {
                                    *all.entry(step_kind(&what)).or_default() += 1;
                                }
                            }
                            Err(e) => failed.push((seed, e)),
                        }
                    }
                    failed
                })
            })
            .collect();
        let failures = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        finished.store(true, Ordering::Relaxed);
        failures
    });
    let (seconds, total) = (start.elapsed().as_secs_f64(), seeds.len());
    if let Some((seed, e)) = failures.iter().min_by_key(|(s, _)| *s) {
        let all: Vec<u64> = failures.iter().map(|(s, _)| *s).collect();
        panic!(
            "crash sweep: {} of {total} seeds failed in {seconds:.1} s: {all:?}\nseed {seed}: {e}\nreplay: MYRAFT_SEED={seed} cargo test -p myraft-node --test crash_sweep",
            failures.len()
        );
    }
    let fired = fired.into_inner().unwrap();
    eprintln!(
        "crash sweep: {total} of {total} seeds passed in {seconds:.1} s; faults fired: {fired:?}"
    );
    if total >= 100 {
        // A sweep whose faults never land tests nothing: crashes must hit appends, syncs
        // and the snapshot file's steps.
        for kind in ["Crash write", "Crash sync", "Crash rename"] {
            assert!(
                fired.iter().any(|(k, &n)| k.starts_with(kind) && n > 0),
                "no fault of kind {kind:?} fired: {fired:?}"
            );
        }
    }
    if total >= 1_000 {
        // And the full sweep reaches both stores: the log, the state store, and a store
        // being built from a leader's snapshot stream, up to its swap.
        for kind in [
            "Crash write log",
            "Crash sync log",
            "Crash write store",
            "Crash sync store",
            "Crash write incoming",
            "Crash rename incoming",
        ] {
            assert!(
                fired.get(kind).is_some_and(|&n| n > 0),
                "no fault of kind {kind:?} fired: {fired:?}"
            );
        }
    }
}
