//! A deterministic network of Raft cores (raft-rs `harness::Network`, turmoil's faults):
//! virtual time, message drop / delay / duplication / reordering, partitions, and crashes
//! that keep only what each server persisted. After every event the harness checks Raft's
//! safety properties (Figure 3): election safety, log matching, leader completeness and
//! state machine safety, plus linearizability of ReadIndex reads.

use myraft_node::raft::{Config, InitialState, Proposal, Raft, RaftError, Role};
use myraft_wire::raft::{
    Entry, EntryPayload, HardState, Index, Member, Membership, NodeId, RaftMessage, Snapshot, Term,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub const TICK_MS: u64 = 10;

/// Network conditions. Delays are in milliseconds of virtual time.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    pub drop: f64,
    pub duplicate: f64,
    pub min_delay: u64,
    pub max_delay: u64,
}

impl NetConfig {
    pub fn reliable() -> Self {
        NetConfig {
            drop: 0.0,
            duplicate: 0.0,
            min_delay: 1,
            max_delay: 5,
        }
    }
    pub fn unreliable() -> Self {
        NetConfig {
            drop: 0.1,
            duplicate: 0.05,
            min_delay: 1,
            max_delay: 40,
        }
    }
}

/// What a server keeps across a crash.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

/// The replicated application in the simulation: the ordered list of command ids applied.
#[derive(Debug, Clone, Default)]
pub struct App {
    pub applied_index: Index,
    /// A hash chain over every applied entry: equal hashes at an index mean equal states.
    pub hash: u64,
    pub commands: Vec<u64>,
}

impl App {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.applied_index.to_le_bytes().to_vec();
        out.extend_from_slice(&self.hash.to_le_bytes());
        for c in &self.commands {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }
    fn from_bytes(b: &[u8]) -> App {
        let words: Vec<u64> = b
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        App {
            applied_index: words.first().copied().unwrap_or(0),
            hash: words.get(1).copied().unwrap_or(0),
            commands: words.get(2..).unwrap_or(&[]).to_vec(),
        }
    }

    fn apply(&mut self, e: &Entry) {
        self.applied_index = e.index;
        let c = cmd_id(e);
        if let Some(c) = c {
            self.commands.push(c);
        }
        // FNV-1a: cheap and deterministic.
        for b in e
            .index
            .to_le_bytes()
            .into_iter()
            .chain(c.unwrap_or(0).to_le_bytes())
        {
            self.hash ^= b as u64;
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

pub struct Node {
    pub disk: Disk,
    pub raft: Option<Raft>,
    pub app: App,
    /// Highest commit index of this server already folded into the global record.
    seen_commit: Index,
    was_leader_in: Option<Term>,
}

pub fn cmd(id: u64) -> Vec<u8> {
    id.to_le_bytes().to_vec()
}

fn cmd_id(e: &Entry) -> Option<u64> {
    match &e.payload {
        EntryPayload::Command(b) if b.len() == 8 => {
            Some(u64::from_le_bytes(b.as_slice().try_into().ok()?))
        }
        _ => None,
    }
}

pub fn member(id: NodeId, voter: bool) -> Member {
    Member {
        id,
        name: format!("n{id}"),
        addr: format!("sim:{id}"),
        voter,
    }
}

pub fn membership(voters: &[NodeId], learners: &[NodeId]) -> Membership {
    let mut m = Membership::default();
    for &id in voters {
        m.members.insert(id, member(id, true));
    }
    for &id in learners {
        m.members.insert(id, member(id, false));
    }
    m
}

struct ReadCheck {
    node: NodeId,
    /// Highest index committed anywhere when the read was requested.
    committed_before: Index,
}

pub struct Sim {
    pub seed: u64,
    pub rng: StdRng,
    pub now: u64,
    pub net: NetConfig,
    pub nodes: BTreeMap<NodeId, Node>,
    /// (deliver at, sequence) → message; the sequence keeps equal times deterministic.
    queue: BTreeMap<(u64, u64), RaftMessage>,
    seq: u64,
    next_tick: u64,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Every server's tuning; `id` is filled in per server.
    pub raft_config: Config,

    leaders: BTreeMap<Term, NodeId>,
    /// Every entry known committed by any server, with the time it was first known.
    pub committed: BTreeMap<Index, Entry>,
    pub max_committed: Index,
    /// State machine state after each applied index (as a hash chain), across all servers.
    app_hash: BTreeMap<Index, u64>,
    reads: BTreeMap<u64, ReadCheck>,
    next_read: u64,
    pub reads_served: u64,
    pub reads_failed: u64,
    pub messages_sent: u64,
    events: u64,
    trace: VecDeque<String>,
}

impl Sim {
    /// A cluster of `voters` servers (ids 1..=voters) founded together.
    pub fn new(seed: u64, voters: u64) -> Sim {
        Sim::with_config(seed, voters, Config::new(0))
    }

    pub fn with_config(seed: u64, voters: u64, raft_config: Config) -> Sim {
        let mut sim = Sim {
            seed,
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            net: NetConfig::reliable(),
            nodes: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            next_tick: TICK_MS,
            cut: BTreeSet::new(),
            raft_config,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            max_committed: 0,
            app_hash: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read: 1,
            reads_served: 0,
            reads_failed: 0,
            messages_sent: 0,
            events: 0,
            trace: VecDeque::new(),
        };
        let ids: Vec<NodeId> = (1..=voters).collect();
        let init = InitialState::bootstrap(membership(&ids, &[]));
        for id in ids {
            let disk = Disk {
                hard_state: init.hard_state,
                snapshot: None,
                entries: init.entries.clone(),
            };
            sim.nodes.insert(
                id,
                Node {
                    disk,
                    raft: None,
                    app: App::default(),
                    seen_commit: 0,
                    was_leader_in: None,
                },
            );
            sim.boot(id);
        }
        sim
    }

    /// Adds a server with an empty disk (it learns everything from the leader).
    pub fn add_empty_node(&mut self, id: NodeId) {
        self.nodes.insert(
            id,
            Node {
                disk: Disk::default(),
                raft: None,
                app: App::default(),
                seen_commit: 0,
                was_leader_in: None,
            },
        );
        self.boot(id);
    }

    fn boot(&mut self, id: NodeId) {
        let rng = StdRng::seed_from_u64(self.rng.random());
        let cfg = Config {
            id,
            ..self.raft_config.clone()
        };
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let init = InitialState {
            hard_state: n.disk.hard_state,
            snapshot: n.disk.snapshot.clone(),
            entries: n.disk.entries.clone(),
            applied: 0,
        };
        n.app = n
            .disk
            .snapshot
            .as_ref()
            .map(|s| App::from_bytes(&s.data))
            .unwrap_or_default();
        n.seen_commit = 0;
        n.was_leader_in = None;
        n.raft = Some(Raft::new(cfg, init, rng));
        self.process(id);
    }

    // ---- the schedule's vocabulary ----------------------------------------------------

    pub fn note(&mut self, s: String) {
        if self.trace.len() >= 400 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("[{:>7} ms] {s}", self.now));
    }

    pub fn crash(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.raft.take().is_some() {
                self.note(format!("crash n{id}"));
            }
        }
    }

    pub fn restart(&mut self, id: NodeId) {
        if self.nodes.get(&id).is_some_and(|n| n.raft.is_none()) {
            self.note(format!("restart n{id}"));
            self.boot(id);
        }
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.raft.is_some())
    }

    /// Cuts every link between the groups (links inside a group stay).
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.cut.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &x in a {
                        for &y in b {
                            self.cut.insert((x, y));
                        }
                    }
                }
            }
        }
        self.note(format!("partition {groups:?}"));
    }

    /// Cuts `id` off from everyone.
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|&x| x != id).collect();
        for o in others {
            self.cut.insert((id, o));
            self.cut.insert((o, id));
        }
        self.note(format!("isolate n{id}"));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.note("heal".into());
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        match self.nodes.get(&id).and_then(|n| n.raft.as_ref()) {
            Some(r) => r,
            None => self.fail(&format!("n{id} is not running")),
        }
    }

    pub fn with_raft<T>(&mut self, id: NodeId, f: impl FnOnce(&mut Raft) -> T) -> Option<T> {
        let r = self.nodes.get_mut(&id)?.raft.as_mut().map(f);
        self.process(id);
        r
    }

    /// The leader of the highest term among running servers, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.raft.as_ref().map(|r| (*id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id)
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn propose(&mut self, id: NodeId, command: u64) -> Result<Proposal, RaftError> {
        let r = self.with_raft(id, |r| r.propose(cmd(command)));
        match r {
            Some(r) => {
                if r.is_ok() {
                    self.note(format!("propose {command} on n{id}"));
                }
                r
            }
            None => Err(RaftError::NotLeader { leader: None }),
        }
    }

    /// Starts a ReadIndex read on `id`; its linearizability is checked when it is released.
    pub fn read(&mut self, id: NodeId) -> Result<u64, RaftError> {
        let ctx = self.next_read;
        self.next_read += 1;
        let before = self.max_committed;
        let r = self.with_raft(id, |r| r.read_index(ctx));
        match r {
            Some(Ok(())) => {
                self.reads.insert(
                    ctx,
                    ReadCheck {
                        node: id,
                        committed_before: before,
                    },
                );
                Ok(ctx)
            }
            Some(Err(e)) => Err(e),
            None => Err(RaftError::NotLeader { leader: None }),
        }
    }

    /// Takes a snapshot of `id`'s application at its applied index and compacts its log.
    /// Starts `n` ReadIndex reads on `id` within one turn of its event loop.
    pub fn read_many(&mut self, id: NodeId, n: u64) -> Result<(), RaftError> {
        let before = self.max_committed;
        let ctxs: Vec<u64> = (self.next_read..self.next_read + n).collect();
        self.next_read += n;
        for &ctx in &ctxs {
            let check = ReadCheck {
                node: id,
                committed_before: before,
            };
            self.reads.insert(ctx, check);
        }
        let r = self.with_raft(id, |r| ctxs.iter().try_for_each(|&c| r.read_index(c)));
        match r {
            Some(Ok(())) => Ok(()),
            other => {
                for ctx in &ctxs {
                    self.reads.remove(ctx);
                }
                Err(match other {
                    Some(Err(e)) => e,
                    _ => RaftError::NotLeader { leader: None },
                })
            }
        }
    }

    pub fn compact(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(r) = n.raft.as_mut() else { return };
        let index = n.app.applied_index;
        if index <= r.log().snapshot_index() {
            return;
        }
        if let Ok(snap) = r.compact(index, n.app.to_bytes()) {
            n.disk.entries.retain(|e| e.index > index);
            n.disk.snapshot = Some(snap);
            self.note(format!("compact n{id} at {index}"));
        }
    }

    pub fn applied(&self, id: NodeId) -> &[u64] {
        self.nodes
            .get(&id)
            .map(|n| n.app.commands.as_slice())
            .unwrap_or(&[])
    }

    pub fn rng_bool(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// A random server id in `1..=n`.
    pub fn rng_node(&mut self, n: u64) -> u64 {
        self.rng.random_range(1..=n)
    }

    // ---- the event loop -------------------------------------------------------------

    fn send(&mut self, m: RaftMessage) {
        self.messages_sent += 1;
        if self.cut.contains(&(m.from, m.to)) {
            return;
        }
        if self.net.drop > 0.0 && self.rng.random_bool(self.net.drop) {
            return;
        }
        let copies = if self.net.duplicate > 0.0 && self.rng.random_bool(self.net.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self
                .rng
                .random_range(self.net.min_delay..=self.net.max_delay.max(self.net.min_delay));
            self.seq += 1;
            self.queue.insert((self.now + delay, self.seq), m.clone());
        }
    }

    /// Runs one event: the earliest message delivery or the next tick of every server.
    pub fn step(&mut self) {
        self.events += 1;
        let next_msg = self.queue.keys().next().copied();
        match next_msg {
            Some(k) if k.0 < self.next_tick => {
                let Some(m) = self.queue.remove(&k) else {
                    return;
                };
                self.now = k.0;
                let to = m.to;
                // Partitions apply at delivery too: a message in flight when the link is cut
                // is lost.
                if self.cut.contains(&(m.from, to)) {
                    return;
                }
                if let Some(r) = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()) {
                    r.step(m);
                    self.process(to);
                }
            }
            _ => {
                self.now = self.next_tick;
                self.next_tick += TICK_MS;
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                for id in ids {
                    if let Some(r) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
                        r.tick();
                        self.process(id);
                    }
                }
            }
        }
        if self.events.is_multiple_of(64) {
            self.check_log_matching();
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until `done` holds or `ms` pass; returns whether it held.
    pub fn run_until(&mut self, ms: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + ms;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    pub fn wait_leader(&mut self, ms: u64) -> NodeId {
        if !self.run_until(ms, |s| s.leader().is_some()) {
            self.fail("no leader elected");
        }
        self.leader().unwrap_or_else(|| self.fail("no leader"))
    }

    /// Proposes `command` on the current leader until it is applied on every running
    /// member, retrying on lost leadership.
    pub fn commit_everywhere(&mut self, command: u64, ms: u64) {
        self.commit_where(command, ms, true)
    }

    /// Proposes `command` until it is committed and applied by the leader that committed it
    /// (members cut off by a partition may lag).
    pub fn commit(&mut self, command: u64, ms: u64) {
        self.commit_where(command, ms, false)
    }

    fn commit_where(&mut self, command: u64, ms: u64, everywhere: bool) {
        let end = self.now + ms;
        let mut proposed: Option<(NodeId, Proposal)> = None;
        while self.now < end {
            let done = if everywhere {
                // A removed server may never learn of its removal: members are those of the
                // leader's configuration.
                self.leader().is_some_and(|l| {
                    self.raft(l)
                        .membership()
                        .members
                        .keys()
                        .filter(|&&id| self.is_up(id))
                        .all(|&id| self.applied(id).contains(&command))
                })
            } else {
                self.leader()
                    .is_some_and(|l| self.applied(l).contains(&command))
            };
            if done {
                return;
            }
            let committed_somewhere = self.committed.values().any(|e| cmd_id(e) == Some(command));
            let lost = match proposed {
                None => true,
                Some((id, p)) => {
                    !committed_somewhere
                        && self
                            .nodes
                            .get(&id)
                            .and_then(|n| n.raft.as_ref())
                            .is_none_or(|r| r.term() != p.term || r.role() != Role::Leader)
                }
            };
            if lost {
                if let Some(l) = self.leader() {
                    if let Ok(p) = self.propose(l, command) {
                        proposed = Some((l, p));
                    }
                }
            }
            self.step();
        }
        let where_ = if everywhere {
            "every member"
        } else {
            "the leader"
        };
        self.fail(&format!(
            "command {command} not applied on {where_} within {ms} ms"
        ));
    }

    // ---- the driver's loop, as a real node runs it -----------------------------------

    fn process(&mut self, id: NodeId) {
        loop {
            let Some(n) = self.nodes.get_mut(&id) else {
                return;
            };
            let Some(r) = n.raft.as_mut() else { return };
            if !r.has_ready() {
                break;
            }
            let rd = r.ready();
            // 1. persist
            if let Some(s) = &rd.snapshot {
                let keep = n
                    .disk
                    .entries
                    .iter()
                    .any(|e| e.index == s.meta.last_index && e.term == s.meta.last_term);
                if keep {
                    n.disk.entries.retain(|e| e.index > s.meta.last_index);
                } else {
                    n.disk.entries.clear();
                }
                n.disk.snapshot = Some(s.clone());
                n.app = App::from_bytes(&s.data);
            }
            if let Some(first) = rd.entries.first() {
                let from = first.index;
                n.disk.entries.retain(|e| e.index < from);
                if let Some(last) = n.disk.entries.last() {
                    assert_eq!(
                        last.index + 1,
                        from,
                        "seed {}: gap in n{id}'s disk",
                        self.seed
                    );
                }
                n.disk.entries.extend(rd.entries.iter().cloned());
            }
            if let Some(hs) = rd.hard_state {
                n.disk.hard_state = hs;
            }
            // 2. send, 3. advance
            r.advance();
            for m in rd.messages {
                self.send(m);
            }
            // 4. apply
            for e in &rd.committed {
                self.apply(id, e);
            }
            for rs in rd.reads {
                self.check_read(id, rs.ctx, rs.index);
            }
            self.reads_failed += rd.failed_reads.len() as u64;
            for ctx in rd.failed_reads {
                self.reads.remove(&ctx);
            }
        }
        self.observe(id);
    }

    fn apply(&mut self, id: NodeId, e: &Entry) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if e.index != n.app.applied_index + 1 {
            let msg = format!(
                "n{id} applied index {} after {}: entries must apply in order, once",
                e.index, n.app.applied_index
            );
            self.fail(&msg);
        }
        n.app.apply(e);
        let hash = n.app.hash;
        // State machine safety: every server applies the same entry at each index.
        match self.committed.get(&e.index) {
            Some(c) if c != e => {
                let msg = format!("n{id} applied {e:?} at {} but {c:?} was committed", e.index);
                self.fail(&msg);
            }
            Some(_) => {}
            None => {
                self.committed.insert(e.index, e.clone());
                self.max_committed = self.max_committed.max(e.index);
            }
        }
        match self.app_hash.get(&e.index) {
            Some(&h) if h != hash => {
                let msg = format!(
                    "n{id}'s state after index {} differs from another server's",
                    e.index
                );
                self.fail(&msg);
            }
            Some(_) => {}
            None => {
                self.app_hash.insert(e.index, hash);
            }
        }
    }

    fn check_read(&mut self, id: NodeId, ctx: u64, index: Index) {
        let Some(rc) = self.reads.remove(&ctx) else {
            self.fail(&format!("n{id} released unknown or repeated read {ctx}"));
        };
        if rc.node != id {
            self.fail(&format!(
                "read {ctx} started on n{} but released on n{id}",
                rc.node
            ));
        }
        // §6.4: the read must see every write committed before it began.
        if index < rc.committed_before {
            let msg = format!(
                "n{id} served read {ctx} at index {index}, but index {} was committed before \
                 the read began: stale read",
                rc.committed_before
            );
            self.fail(&msg);
        }
        self.reads_served += 1;
    }

    /// Folds what `id` now knows into the global record and checks the safety properties
    /// that concern a single server.
    fn observe(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(r) = n.raft.as_ref() else { return };
        let term = r.term();
        let is_leader = r.role() == Role::Leader;
        // Entries newly known committed here.
        let commit = r.commit_index();
        let mut newly = Vec::new();
        if commit > n.seen_commit {
            for i in n.seen_commit + 1..=commit {
                if let Some(e) = r.log().get(i) {
                    newly.push(e.clone());
                }
            }
            n.seen_commit = commit;
        }
        let became_leader = is_leader && n.was_leader_in != Some(term);
        if is_leader {
            n.was_leader_in = Some(term);
        }
        if is_leader {
            if let Some(e) = newly.last() {
                self.check_commit_durable(id, e);
            }
        }
        for e in newly {
            match self.committed.get(&e.index) {
                Some(c) if *c != e => {
                    let msg = format!("n{id} commits {e:?} but {c:?} was committed at that index");
                    self.fail(&msg);
                }
                Some(_) => {}
                None => {
                    self.max_committed = self.max_committed.max(e.index);
                    self.committed.insert(e.index, e);
                }
            }
        }
        if became_leader {
            self.note(format!("n{id} leads term {term}"));
            // Election safety: at most one leader per term.
            if let Some(&other) = self.leaders.get(&term) {
                if other != id {
                    self.fail(&format!("two leaders in term {term}: n{other} and n{id}"));
                }
            }
            self.leaders.insert(term, id);
            // Leader completeness: the new leader holds every committed entry.
            let r = self.raft(id);
            let snap = r.log().snapshot_index();
            for (i, e) in &self.committed {
                if *i <= snap {
                    continue;
                }
                if r.log().get(*i) != Some(e) {
                    let msg = format!(
                        "leader n{id} of term {term} lacks committed entry {e:?} (has {:?})",
                        r.log().get(*i)
                    );
                    self.fail(&msg);
                }
            }
        }
    }

    /// What a server's log looks like to a voter: (last index, last term), and the term at
    /// `index` (or `None` if it does not hold that index; compacted counts as held).
    fn log_view(&self, id: NodeId, index: Index) -> Option<(Index, Term, Option<Term>)> {
        let n = self.nodes.get(&id)?;
        if let Some(r) = &n.raft {
            let l = r.log();
            let at = if index <= l.snapshot_index() {
                Some(0)
            } else {
                l.term(index)
            };
            return Some((l.last_index(), l.last_term(), at));
        }
        let (si, st) = n
            .disk
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.last_index, s.meta.last_term));
        let (li, lt) = n
            .disk
            .entries
            .last()
            .map_or((si, st), |e| (e.index, e.term));
        let at = if index <= si {
            Some(0)
        } else {
            n.disk
                .entries
                .iter()
                .find(|e| e.index == index)
                .map(|e| e.term)
        };
        Some((li, lt, at))
    }

    /// Commitment is forever (§5.4): once `leader` counts `e` committed, no voter lacking it
    /// may be able to collect a majority of votes (§5.4.1's up-to-date rule) — running or
    /// crashed, whatever happens next. This sees an unsafe commit the moment it is made,
    /// without waiting for a schedule that overwrites it.
    fn check_commit_durable(&self, leader: NodeId, e: &Entry) {
        let Some(l) = self.nodes.get(&leader).and_then(|n| n.raft.as_ref()) else {
            return;
        };
        let voters: Vec<NodeId> = l.membership().voters().collect();
        let quorum = voters.len() / 2 + 1;
        for &c in &voters {
            let Some((c_last, c_term, c_at)) = self.log_view(c, e.index) else {
                continue;
            };
            if c_at == Some(0) || c_at == Some(e.term) {
                continue;
            }
            let votes = voters
                .iter()
                .filter(|&&v| {
                    self.log_view(v, e.index)
                        .is_some_and(|(v_last, v_term, _)| {
                            c_term > v_term || (c_term == v_term && c_last >= v_last)
                        })
                })
                .count();
            if votes >= quorum {
                self.fail(&format!(
                    "n{leader} counts index {} (term {}) committed, but n{c}, which lacks it, can still win {votes} of {} votes",
                    e.index,
                    e.term,
                    voters.len()
                ));
            }
        }
    }

    /// Log matching: if two logs hold an entry with the same index and term, they are
    /// identical up to it.
    pub fn check_log_matching(&self) {
        let logs: Vec<(NodeId, &Raft)> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| n.raft.as_ref().map(|r| (*id, r)))
            .collect();
        for (i, (a, ra)) in logs.iter().enumerate() {
            for (b, rb) in logs.iter().skip(i + 1) {
                let (la, lb) = (ra.log(), rb.log());
                let lo = la.first_index().max(lb.first_index());
                let mut hi = la.last_index().min(lb.last_index());
                while hi >= lo && la.term(hi) != lb.term(hi) {
                    hi -= 1;
                }
                let mut k = hi;
                while k >= lo && k > 0 {
                    if la.get(k) != lb.get(k) {
                        self.fail(&format!(
                            "log matching violated: n{a} and n{b} agree on the term at {hi} but \
                             differ at {k}"
                        ));
                    }
                    k -= 1;
                }
            }
        }
    }

    /// One line per server: what an operator would look at first.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (id, n) in &self.nodes {
            match &n.raft {
                None => out.push_str(&format!(
                    "    n{id}: down, disk last index {:?}\n",
                    n.disk.entries.last().map(|e| e.index)
                )),
                Some(r) => {
                    let voters: Vec<NodeId> = r.membership().voters().collect();
                    out.push_str(&format!(
                        "    n{id}: {} term {} leader {:?} commit {} applied {} last {} snap {} voters {voters:?} members {:?}\n",
                        r.role().as_str(),
                        r.term(),
                        r.leader(),
                        r.commit_index(),
                        r.applied_index(),
                        r.last_index(),
                        r.log().snapshot_index(),
                        r.membership().members.keys().collect::<Vec<_>>(),
                    ));
                    if r.role() == Role::Leader {
                        for pid in r.membership().members.keys() {
                            if let Some(p) = r.progress(*pid) {
                                out.push_str(&format!(
                                    "        → n{pid}: {:?} match {} next {} inflight {}\n",
                                    p.state,
                                    p.match_index,
                                    p.next_index,
                                    p.inflight.len()
                                ));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    pub fn fail(&self, msg: &str) -> ! {
        let trace: Vec<&str> = self.trace.iter().map(|s| s.as_str()).collect();
        panic!(
            "{msg}\n  seed {seed} (replay: MYRAFT_SEED={seed}), at {now} ms\n  servers:\n{}  schedule (latest \
             last):\n    {}",
            self.dump(),
            trace.join("\n    "),
            seed = self.seed,
            now = self.now
        );
    }
}
