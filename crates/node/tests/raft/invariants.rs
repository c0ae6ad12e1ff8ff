//! One Raft core driven the way a node's loop drives it (`ready`, persist, `advance`), with
//! its invariants checked after every input. Shared by the arbitrary-input property test
//! (`arbitrary.rs`) and the `raft_core` fuzz target (`fuzz/fuzz_targets/raft_core.rs`,
//! which includes this file by path), so both hold the core to the same rules.
//!
//! Checked: the term never goes back; within a term the vote never changes; the commit
//! index never goes back nor past the log; entries are handed out for applying in order,
//! each once, and an index once committed never holds another entry; an entry is
//! acknowledged only once it was handed out for persisting; no message carries a term the
//! server is not in; a leader leads only in a term it persisted; a driver's loop ends.
//!
//! Depends only on `myraft-node`, `myraft-wire` and `rand`, so that it compiles outside
//! this test crate too.

use myraft_node::raft::{Config, InitialState, Raft};
use myraft_wire::raft::{Entry, Index, Member, Membership, NodeId, RaftBody, RaftMessage, Term};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;

/// The server under test.
pub const ME: NodeId = 1;

/// The founding configuration: voters 1, 2 and 3.
pub fn three_voters() -> Membership {
    let mut m = Membership::default();
    for id in 1..=3 {
        let member = Member {
            id,
            name: format!("n{id}"),
            addr: format!("sim:{id}"),
            voter: true,
        };
        m.members.insert(id, member);
    }
    m
}

/// One input to the core.
#[derive(Debug, Clone)]
pub enum Input {
    Message(RaftMessage),
    Tick,
    Propose(u8),
    Read(u64),
    Transfer(u64),
    /// Compacts the log to what was applied so far.
    Compact,
}

/// Fails the check with a message, as `assert!` would without the panic.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The driver's view, and what the invariants are checked against.
pub struct Driver {
    raft: Raft,
    /// Every entry handed out for persisting, by index (the last write of an index wins).
    disk: BTreeMap<Index, Entry>,
    term: Term,
    vote: Option<(Term, u64)>,
    commit: Index,
    applied: Index,
    committed: BTreeMap<Index, Entry>,
}

impl Driver {
    /// A new server of [`three_voters`], its first `Ready` handled and checked.
    pub fn new() -> Result<Driver, String> {
        let mut cfg = Config::new(ME);
        cfg.election_ticks = 4;
        cfg.heartbeat_ticks = 1;
        let init = InitialState::bootstrap(three_voters());
        // What a new server holds on disk: the founding configuration.
        let disk = init.entries.iter().map(|e| (e.index, e.clone())).collect();
        let raft = Raft::new(cfg, init, StdRng::seed_from_u64(3));
        let mut d = Driver {
            raft,
            disk,
            term: 0,
            vote: None,
            commit: 0,
            applied: 0,
            committed: BTreeMap::new(),
        };
        d.turn()?;
        Ok(d)
    }

    /// Feeds one input, then runs the driver's loop and checks the invariants.
    pub fn step(&mut self, input: Input) -> Result<(), String> {
        match input {
            Input::Message(m) => self.raft.step(m),
            Input::Tick => self.raft.tick(),
            Input::Propose(b) => {
                let _ = self.raft.propose(vec![b]);
            }
            Input::Read(ctx) => {
                let _ = self.raft.read_index(ctx);
            }
            Input::Transfer(to) => {
                let _ = self.raft.transfer_leader(to);
            }
            Input::Compact => {
                let at = self.raft.applied_index();
                if at > self.raft.log().snapshot_index() {
                    let _ = self.raft.compact(at, Vec::new());
                }
            }
        }
        self.turn()
    }

    /// The driver's loop: persist, send, advance, apply; then the invariants.
    fn turn(&mut self) -> Result<(), String> {
        let mut readies = 0;
        while self.raft.has_ready() {
            readies += 1;
            // A driver loops while the core has work: a core that always has some would
            // spin a node's loop forever.
            check!(
                readies < 1_000,
                "has_ready stays true: {:?}",
                self.raft.ready()
            );
            let rd = self.raft.ready();
            if let Some(s) = &rd.snapshot {
                let keep = self
                    .disk
                    .get(&s.meta.last_index)
                    .is_some_and(|e| e.term == s.meta.last_term);
                if !keep {
                    self.disk.clear();
                }
                self.disk.retain(|i, _| *i > s.meta.last_index);
                self.applied = self.applied.max(s.meta.last_index);
            }
            if let Some(first) = rd.entries.first() {
                let from = first.index;
                self.disk.retain(|i, _| *i < from);
                for e in &rd.entries {
                    self.disk.insert(e.index, e.clone());
                }
            }
            if let Some(hs) = rd.hard_state {
                check!(
                    hs.term >= self.term,
                    "term went back: {} -> {}",
                    self.term,
                    hs.term
                );
                if let (Some((t, v)), Some(now)) = (self.vote, hs.vote) {
                    check!(
                        t != hs.term || v == now,
                        "vote changed within term {t}: {v} -> {now}"
                    );
                }
                if let Some(v) = hs.vote {
                    self.vote = Some((hs.term, v));
                }
                self.term = hs.term;
                check!(
                    hs.commit >= self.commit,
                    "commit went back: {} -> {}",
                    self.commit,
                    hs.commit
                );
                self.commit = hs.commit;
            }
            let last_on_disk = self.disk.keys().next_back().copied().unwrap_or(0);
            for m in &rd.messages {
                if let RaftBody::AppendEntriesResponse(r) = &m.body {
                    if r.success {
                        let base = self.raft.log().snapshot_index();
                        check!(
                            r.match_index <= last_on_disk.max(base),
                            "acknowledged {} with only {} handed out for persisting",
                            r.match_index,
                            last_on_disk
                        );
                    }
                }
                // A pre-vote asks in the term it would start, one ahead, and is answered in
                // the term it asked in, however far ahead (dissertation §9.6).
                let ahead = match &m.body {
                    RaftBody::RequestVote(r) => u64::from(r.pre_vote),
                    RaftBody::RequestVoteResponse(r) if r.pre_vote => u64::MAX / 2,
                    _ => 0,
                };
                check!(
                    m.term <= self.raft.term().saturating_add(ahead),
                    "a message of term {} from a server in term {}: {:?}",
                    m.term,
                    self.raft.term(),
                    m
                );
            }
            self.raft.advance();
            for e in rd.committed {
                check!(
                    e.index == self.applied + 1,
                    "applied out of order: {} after {}",
                    e.index,
                    self.applied
                );
                self.applied = e.index;
                if let Some(before) = self.committed.get(&e.index) {
                    check!(
                        before == &e,
                        "index {} committed twice, differently: {:?} then {:?}",
                        e.index,
                        before,
                        e
                    );
                }
                self.committed.insert(e.index, e);
            }
        }
        let log = self.raft.log();
        check!(
            self.raft.commit_index() <= log.last_index().max(log.snapshot_index()),
            "commit index {} past the log (last {}, snapshot {})",
            self.raft.commit_index(),
            log.last_index(),
            log.snapshot_index()
        );
        for (i, e) in self.committed.range(log.first_index()..) {
            if let Some(t) = log.term(*i) {
                check!(
                    t == e.term,
                    "committed index {i} now has term {t}, not {}",
                    e.term
                );
            }
        }
        if self.raft.is_leader() {
            check!(
                self.raft.term() == self.term,
                "leading in term {}, persisted {}",
                self.raft.term(),
                self.term
            );
        }
        Ok(())
    }
}
