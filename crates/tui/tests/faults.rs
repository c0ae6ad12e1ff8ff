//! Fault tests between real processes: an entrance and 3 or 5 `myraft-node`s on 127.0.0.1,
//! each node behind a chaos [`Proxy`] (it advertises the proxy's address, so every
//! datagram between two nodes, and from clients and the entrance to a node, passes one),
//! the register workload of `myraft verify` running all along, and a seeded nemesis that
//! breaks the cluster one fault at a time:
//!
//! - `kill_leader`, `kill_member`: SIGKILL (no flush, as in a power cut), then a restart on
//!   the same data dir;
//! - `pause_leader`, `pause_member`: SIGSTOP, then SIGCONT;
//! - `partition_leader`: the leader cut off from every other member;
//! - `isolate_minority`: a minority (which may hold the leader) cut off from the rest;
//! - `bridge`: two halves that hear each other only through one member;
//! - `lossy`: 30 % loss with duplication and reordering on every link;
//! - `add_member`, `remove_member`: a new node joins through the entrance and is approved
//!   (it becomes a voter once caught up), or a member is removed (the leader too);
//! - `transfer`: leadership handed to a follower;
//! - `kill_entrance`: the entrance SIGKILLed, then restarted on its data dir.
//!
//! Each fault lasts a second or two of workload and is then healed, and the next begins
//! once the cluster shows a leader and every member up and voting. After the last: the
//! writes must go on succeeding (progress), every key is read back, and the whole history,
//! those reads included, must be linearizable; so every acknowledged write is readable or
//! overwritten by a write the history allows.
//!
//! Every fault kind is injected once per scenario, in an order drawn from the seed, and
//! then the faults of processes and links once more, each on a network that loses 10 % of
//! the datagrams and duplicates and reorders some (`under_loss`); with `MYRAFT_SOAK_S=S`,
//! random faults (the leader's more often, a third of them under loss) go on until S
//! seconds have passed. The seed is `MYRAFT_SEED` or random, and is printed first; a failing run prints
//! it again with the history file and the servers' logs, which it keeps. The seed fixes
//! the schedule (which fault, on which member, for how long) and the proxies' random
//! choices; the processes' timing is the machine's own, so a replay is close, not exact.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

mod support;

use myraft_tui::chaos::{Faults, Proxy};
use myraft_tui::cli::render;
use myraft_tui::verify::live::{Workload, WorkloadOptions};
use myraft_tui::verify::{self, Verdict};
use myraft_wire::client::ClientOptions;
use myraft_wire::ClusterKey;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use support::{poll_within, Cluster, Status};

/// How long the cluster may take to show a leader and every member up after a fault is
/// healed, or to take writes again: generous, for a machine busy with other builds.
const HEAL_LIMIT: Duration = Duration::from_secs(60);

/// How long one workload operation may take before it is recorded as unknown (`info`).
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest the checker may take; past it the verdict is unknown, which fails too.
const CHECK_BUDGET: Duration = Duration::from_secs(300);

/// One scenario at a time: two clusters at once on a small machine would make each other's
/// elections, not the faults, the test.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillLeader,
    KillMember,
    PauseLeader,
    PauseMember,
    PartitionLeader,
    IsolateMinority,
    Bridge,
    Lossy,
    /// Adds a member when the cluster has its first size, else removes one.
    Membership,
    Transfer,
    KillEntrance,
}

/// Every kind once (membership twice: an addition, then a removal).
const EVERY_FAULT: [Fault; 12] = [
    Fault::KillLeader,
    Fault::KillMember,
    Fault::PauseLeader,
    Fault::PauseMember,
    Fault::PartitionLeader,
    Fault::IsolateMinority,
    Fault::Bridge,
    Fault::Lossy,
    Fault::Membership,
    Fault::Membership,
    Fault::Transfer,
    Fault::KillEntrance,
];

/// The faults that a second pass injects again on a lossy network.
const COMPOUND: [Fault; 7] = [
    Fault::KillLeader,
    Fault::KillMember,
    Fault::PauseLeader,
    Fault::PauseMember,
    Fault::PartitionLeader,
    Fault::IsolateMinority,
    Fault::Bridge,
];

/// The soak's draw: the leader's faults more often.
const WEIGHTED: [Fault; 17] = [
    Fault::KillLeader,
    Fault::KillLeader,
    Fault::KillLeader,
    Fault::KillMember,
    Fault::PauseLeader,
    Fault::PauseLeader,
    Fault::PauseMember,
    Fault::PartitionLeader,
    Fault::PartitionLeader,
    Fault::IsolateMinority,
    Fault::Bridge,
    Fault::Lossy,
    Fault::Lossy,
    Fault::Membership,
    Fault::Transfer,
    Fault::Transfer,
    Fault::KillEntrance,
];

fn seed() -> u64 {
    match std::env::var("MYRAFT_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("MYRAFT_SEED={s:?} is not a number")),
        Err(_) => rand::random(),
    }
}

fn soak() -> Duration {
    match std::env::var("MYRAFT_SOAK_S") {
        Ok(s) => Duration::from_secs(
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("MYRAFT_SOAK_S={s:?} is not a number of seconds")),
        ),
        Err(_) => Duration::ZERO,
    }
}

const LOCAL: &str = "127.0.0.1:0";

/// A cluster whose nodes are behind proxies, the faults on them, and what was injected.
/// The fields are in drop order: the workload's clients and the proxies before the
/// runtime they run on, the processes before their directory (inside `cluster`).
struct Chaos {
    workload: Option<Workload>,
    proxies: BTreeMap<String, Proxy>,
    cluster: Cluster,
    rt: tokio::runtime::Runtime,
    faults: Arc<Faults>,
    rng: StdRng,
    /// The members as this test made them: the names `status` must show.
    members: Vec<String>,
    /// The cluster's first size, which membership changes return to.
    size: usize,
    next_node: usize,
    injected: BTreeMap<&'static str, u64>,
    /// The seed as given, for the message of a failure.
    given: u64,
}

impl Drop for Chaos {
    /// A failing run keeps what it saw: the history beside the servers' logs, which the
    /// cluster keeps too, and the seed.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let file = self.cluster.dir().join("history.jsonl");
        if let Some(w) = &self.workload {
            let _ = std::fs::write(&file, w.history_text());
        }
        eprintln!(
            "faults: failed with seed {} (MYRAFT_SEED={} replays it) after {:?}; history in {}",
            self.given,
            self.given,
            self.injected,
            file.display()
        );
    }
}

impl Chaos {
    fn start(size: usize, seed: u64, given: u64) -> Chaos {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut chaos = Chaos {
            workload: None,
            proxies: BTreeMap::new(),
            cluster: Cluster::start(),
            rt,
            faults: Faults::new(seed),
            rng: StdRng::seed_from_u64(seed),
            members: Vec::new(),
            size,
            next_node: 1,
            injected: BTreeMap::new(),
            given,
        };
        let names: Vec<String> = (0..size).map(|_| chaos.start_new_node()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        chaos.cluster.approve_when_pending(&names);
        chaos.members = names.iter().map(|n| (*n).to_owned()).collect();
        chaos.healthy("the first members voters that are up, with a leader");
        chaos
    }

    /// Starts the next node `nK` behind a proxy of its own; it waits to be approved.
    fn start_new_node(&mut self) -> String {
        let name = format!("n{}", self.next_node);
        self.next_node += 1;
        let listen = self.cluster.new_addr();
        let upstream: SocketAddr = listen.parse().unwrap();
        let proxy = self
            .rt
            .block_on(Proxy::start(
                &name,
                LOCAL.parse().unwrap(),
                upstream,
                Arc::clone(&self.faults),
            ))
            .unwrap();
        self.faults.name(upstream, &name);
        let advertise = proxy.addr().to_string();
        self.cluster
            .start_node_at(&name, &name, &name, &listen, Some(&advertise));
        self.proxies.insert(name.clone(), proxy);
        name
    }

    fn start_workload(&mut self, seed: u64) {
        let entrance: SocketAddr = self.cluster.entrance_addr.parse().unwrap();
        let mut opts = WorkloadOptions::new(4, 6, ClientOptions::with_timeout(OP_TIMEOUT));
        opts.seed = seed;
        let _runtime = self.rt.enter();
        let workload = Workload::start(vec![entrance], ClusterKey::lab_default(), opts).unwrap();
        self.workload = Some(workload);
    }

    fn workload(&mut self) -> &mut Workload {
        self.workload.as_mut().unwrap()
    }

    /// Waits until `status` shows exactly this test's members, all voters and up, and a
    /// leader among them.
    fn healthy(&self, what: &str) -> Status {
        let want = {
            let mut m = self.members.clone();
            m.sort();
            m
        };
        poll_within(HEAL_LIMIT, what, || {
            let s = self.cluster.status()?;
            let mut names: Vec<String> = s.names().iter().map(|n| (*n).to_owned()).collect();
            names.sort();
            let led = s.leader().is_some_and(|l| want.iter().any(|m| m == l));
            if names == want && s.all_up_voters() && led {
                Ok(s)
            } else {
                Err(s.0.to_string())
            }
        })
    }

    fn leader(&self) -> String {
        self.healthy("a leader to aim at")
            .leader()
            .unwrap()
            .to_owned()
    }

    fn any_member(&mut self) -> String {
        let i = self.rng.random_range(0..self.members.len());
        self.members[i].clone()
    }

    fn followers(&self, leader: &str) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.as_str() != leader)
            .cloned()
            .collect()
    }

    /// How long a fault lasts: long enough for elections to time out under it.
    fn hold(&mut self) {
        let ms = self.rng.random_range(1_000..2_500);
        // The fault's duration, not a wait for anything: the workload runs meanwhile.
        std::thread::sleep(Duration::from_millis(ms));
    }

    fn count(&mut self, what: &'static str) {
        *self.injected.entry(what).or_default() += 1;
    }

    fn signal(&mut self, name: &str, signal: Signal) {
        let pid = self.cluster.node(name).pid();
        kill(Pid::from_raw(i32::try_from(pid).unwrap()), signal).unwrap();
    }

    /// Injects one fault, holds it, heals it, and waits until the cluster is whole again.
    /// `under_loss`: on a network that loses, duplicates and reorders some datagrams
    /// meanwhile (for the faults of processes and links only: the others are operators'
    /// commands, which are not the point there).
    fn inject(&mut self, fault: Fault, under_loss: bool) {
        if under_loss && COMPOUND.contains(&fault) {
            self.count("under_loss");
            self.faults.set_loss(0.1);
            self.faults.set_duplicate(0.1);
            self.faults.set_reorder(0.2, Duration::from_millis(20));
        }
        match fault {
            Fault::KillLeader | Fault::KillMember => {
                let victim = if fault == Fault::KillLeader {
                    self.count("kill_leader");
                    self.leader()
                } else {
                    self.count("kill_member");
                    self.any_member()
                };
                self.cluster.node(&victim).kill();
                self.hold();
                self.cluster.restart_node(&victim);
            }
            Fault::PauseLeader | Fault::PauseMember => {
                let victim = if fault == Fault::PauseLeader {
                    self.count("pause_leader");
                    self.leader()
                } else {
                    self.count("pause_member");
                    self.any_member()
                };
                self.signal(&victim, Signal::SIGSTOP);
                self.hold();
                self.signal(&victim, Signal::SIGCONT);
            }
            Fault::PartitionLeader => {
                self.count("partition_leader");
                let leader = self.leader();
                let rest = self.followers(&leader);
                let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
                self.faults.partition(&[&leader], &rest);
                self.hold();
                self.faults.heal();
            }
            Fault::IsolateMinority => {
                self.count("isolate_minority");
                let mut shuffled = self.members.clone();
                shuffled.shuffle(&mut self.rng);
                let (minority, majority) = shuffled.split_at((shuffled.len() - 1) / 2);
                let a: Vec<&str> = minority.iter().map(String::as_str).collect();
                let b: Vec<&str> = majority.iter().map(String::as_str).collect();
                self.faults.partition(&a, &b);
                self.hold();
                self.faults.heal();
            }
            Fault::Bridge => {
                self.count("bridge");
                let mut shuffled = self.members.clone();
                shuffled.shuffle(&mut self.rng);
                let mid = shuffled.len() / 2;
                let a: Vec<&str> = shuffled[..=mid].iter().map(String::as_str).collect();
                let b: Vec<&str> = shuffled[mid..].iter().map(String::as_str).collect();
                self.faults.bridge(&a, &b, &shuffled[mid]);
                self.hold();
                self.faults.heal();
            }
            Fault::Lossy => {
                self.count("lossy");
                self.faults.set_loss(0.3);
                self.faults.set_duplicate(0.2);
                self.faults.set_reorder(0.3, Duration::from_millis(40));
                self.hold();
                self.faults.heal();
            }
            Fault::Membership if self.members.len() <= self.size => {
                self.count("add_member");
                let name = self.start_new_node();
                self.cluster.approve_when_pending(&[name.as_str()]);
                self.members.push(name);
            }
            Fault::Membership => {
                self.count("remove_member");
                let victim = self.any_member();
                poll_within(HEAL_LIMIT, &format!("`myraft remove {victim}`"), || {
                    let out = self.cluster.cli(&["remove", &victim]);
                    if out.ok() {
                        Ok(())
                    } else {
                        Err(format!("{out:?}"))
                    }
                });
                self.cluster
                    .node(&victim)
                    .wait_exit(&format!("{victim} exits once removed"));
                self.members.retain(|m| *m != victim);
            }
            Fault::Transfer => {
                self.count("transfer");
                let leader = self.leader();
                let heirs = self.followers(&leader);
                let heir = heirs[self.rng.random_range(0..heirs.len())].clone();
                // Asked again while it has not happened: a transfer to a follower that
                // lags is refused, and an election may intervene on a busy machine.
                poll_within(
                    HEAL_LIMIT,
                    &format!("{heir} leads after `transfer`"),
                    || {
                        let s = self.cluster.status()?;
                        if s.leader() == Some(heir.as_str()) {
                            return Ok(());
                        }
                        let out = self.cluster.cli(&["transfer", &heir]);
                        Err(format!("leader {:?}; transfer: {}", s.leader(), out.json))
                    },
                );
            }
            Fault::KillEntrance => {
                self.count("kill_entrance");
                self.cluster.entrance.kill();
                self.hold();
                self.cluster.restart_entrance();
            }
        }
        self.faults.heal();
        self.healthy(&format!("the cluster whole again after {fault:?}"));
    }
}

/// Runs one scenario: `size` members, every fault once, then the soak if asked for.
fn scenario(size: usize) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let given = seed();
    eprintln!("faults, {size} members: seed {given} (MYRAFT_SEED={given} replays it)");
    // Each scenario draws its own schedule from the one seed.
    let seed = given ^ size as u64;
    let started = Instant::now();
    let mut chaos = Chaos::start(size, seed, given);
    chaos.start_workload(seed);

    let mut schedule = EVERY_FAULT.to_vec();
    schedule.shuffle(&mut chaos.rng);
    for fault in schedule {
        chaos.inject(fault, false);
    }
    let mut again = COMPOUND.to_vec();
    again.shuffle(&mut chaos.rng);
    for fault in again {
        chaos.inject(fault, true);
    }
    let soak = soak();
    while started.elapsed() < soak {
        let fault = WEIGHTED[chaos.rng.random_range(0..WEIGHTED.len())];
        let under_loss = chaos.rng.random_bool(1.0 / 3.0);
        chaos.inject(fault, under_loss);
    }

    // Healed: writes go on succeeding.
    chaos.faults.heal();
    chaos.healthy("the cluster whole after the last fault");
    let before = chaos.workload().stats();
    poll_within(HEAL_LIMIT, "writes succeed once healed", || {
        let now = chaos.workload().stats();
        if now.ok_writes >= before.ok_writes + 20 && now.ok_reads > before.ok_reads {
            Ok(())
        } else {
            Err(format!("{before:?} then {now:?}"))
        }
    });
    let rt_handle = chaos.rt.handle().clone();
    let workload = chaos.workload.as_mut().unwrap();
    rt_handle.block_on(workload.stop());
    let unread = rt_handle.block_on(workload.read_back(HEAL_LIMIT)).unwrap();

    let text = workload.history_text();
    let file = chaos.cluster.dir().join("history.jsonl");
    std::fs::write(&file, &text).unwrap();
    let history = workload.history().unwrap();
    let checked = verify::check(&history, CHECK_BUDGET);
    let faults: u64 = chaos.injected.values().sum();
    let report = render::verify(&history, &checked, CHECK_BUDGET, faults);
    let datagrams = chaos.faults.counts();
    eprintln!(
        "faults, {size} members: {} operations checked ({} ok, {} failed, {} indeterminate) \
         on {} keys; {faults} faults injected {:?}; datagrams {datagrams:?}; {}; {:.1} s; \
         seed {}",
        history.invoked(),
        history.completed(),
        history.failed,
        history.indeterminate(),
        history.keys().len(),
        chaos.injected,
        report.json["message"].as_str().unwrap_or_default(),
        started.elapsed().as_secs_f64(),
        given,
    );
    let replay = format!(
        "replay with MYRAFT_SEED={given} cargo test -p myraft-tui --test faults; history in {}",
        file.display()
    );
    assert!(
        unread.is_empty(),
        "keys not read back: {unread:?}; {replay}"
    );
    assert_eq!(
        checked.verdict,
        Verdict::Linearizable,
        "{}\n{replay}",
        report.human
    );
    assert_eq!(report.json["linearizable"], json!(true));
    assert_eq!(
        chaos.injected.len(),
        13,
        "every kind injected, and some under loss: {:?}",
        chaos.injected
    );
}

#[test]
fn three_members_stay_linearizable_through_every_fault() {
    scenario(3);
}

#[test]
fn five_members_stay_linearizable_through_every_fault() {
    scenario(5);
}
