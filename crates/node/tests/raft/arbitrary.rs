//! The core fed arbitrary inputs — messages from anyone with any term and body, ticks,
//! proposals, reads, transfers and snapshots of its own — with its invariants checked after
//! every one, through the driver's loop (`ready`, persist, `advance`). The stable
//! counterpart of a fuzz target: proptest shrinks a failure to a short sequence, and
//! `PROPTEST_CASES=N` runs more.
//!
//! Checked: no panic; the term never goes back; within a term the vote never changes; the
//! commit index never goes back nor past the log; entries are handed out for applying in
//! order, each once, and an index once committed never holds another entry; an entry is
//! acknowledged only once it was handed out for persisting; a leader leads only in a term
//! it persisted.

use crate::harness::membership;
use myraft_node::raft::{Config, InitialState, Raft};
use myraft_wire::raft::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, Index, RaftBody, RaftMessage,
    RequestVote, RequestVoteResponse, Term, TimeoutNow,
};
use proptest::collection::vec;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;

/// One input to the core.
#[derive(Debug, Clone)]
enum Input {
    Message(RaftMessage),
    Tick,
    Propose(u8),
    Read(u64),
    Transfer(u64),
    /// Compacts the log to what was applied so far.
    Compact,
}

/// Senders are mostly the other members, sometimes a stranger or the server itself.
fn sender() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 2u64..=3, 1 => Just(1u64), 1 => Just(99u64)]
}

/// Terms and indexes near where a small cluster is, so that messages are often accepted.
fn term() -> impl Strategy<Value = Term> {
    0u64..6
}

fn index() -> impl Strategy<Value = Index> {
    0u64..12
}

fn entries(prev: Index, max_term: Term) -> impl Strategy<Value = Vec<Entry>> {
    vec((0..=max_term, 0u8..4), 0..4).prop_map(move |specs| {
        let mut term = 0;
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (t, kind))| {
                // Terms never decrease along a log.
                term = term.max(t);
                let payload = match kind {
                    0 => EntryPayload::Noop,
                    1 => EntryPayload::Config(membership(&[1, 2, 3], &[])),
                    _ => EntryPayload::Command(vec![kind; 3]),
                };
                Entry {
                    term,
                    index: prev + 1 + i as u64,
                    payload,
                }
            })
            .collect()
    })
}

fn body() -> impl Strategy<Value = (Term, RaftBody)> {
    prop_oneof![
        (term(), index(), term(), any::<bool>(), any::<bool>()).prop_map(
            |(t, i, lt, pre_vote, transfer)| {
                let rv = RequestVote {
                    last_log_index: i,
                    last_log_term: lt,
                    pre_vote,
                    transfer,
                };
                (t, RaftBody::RequestVote(rv))
            }
        ),
        (term(), any::<bool>(), any::<bool>()).prop_map(|(t, granted, pre_vote)| {
            let r = RequestVoteResponse { granted, pre_vote };
            (t, RaftBody::RequestVoteResponse(r))
        }),
        (term(), index(), term(), index(), 0u64..4).prop_flat_map(
            |(t, prev, prev_term, commit, round)| {
                entries(prev, t).prop_map(move |entries| {
                    let ae = AppendEntries {
                        prev_log_index: prev,
                        prev_log_term: prev_term.min(t),
                        entries,
                        leader_commit: commit,
                        read_round: round,
                    };
                    (t, RaftBody::AppendEntries(ae))
                })
            }
        ),
        (term(), any::<bool>(), index(), index(), index(), 0u64..4).prop_map(
            |(t, success, m, p, ci, r)| {
                let resp = AppendEntriesResponse {
                    success,
                    match_index: m,
                    prev_log_index: p,
                    conflict_index: ci,
                    conflict_term: None,
                    read_round: r,
                };
                (t, RaftBody::AppendEntriesResponse(resp))
            }
        ),
        term().prop_map(|t| (t, RaftBody::TimeoutNow(TimeoutNow {}))),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        6 => (sender(), body()).prop_map(|(from, (term, body))| Input::Message(RaftMessage {
            from,
            to: 1,
            term,
            body,
        })),
        // Anything at all, as a forger with the key or a broken peer might send.
        1 => myraft_wire::strategies::raft_message().prop_map(Input::Message),
        4 => Just(Input::Tick),
        2 => any::<u8>().prop_map(Input::Propose),
        1 => (0u64..4).prop_map(Input::Read),
        1 => (1u64..=4).prop_map(Input::Transfer),
        1 => Just(Input::Compact),
    ]
}

/// The driver's view, and what the invariants are checked against.
struct Driver {
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
    fn new() -> Driver {
        let mut cfg = Config::new(1);
        cfg.election_ticks = 4;
        cfg.heartbeat_ticks = 1;
        let init = InitialState::bootstrap(membership(&[1, 2, 3], &[]));
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
        d.turn().expect("a new server keeps its invariants");
        d
    }

    fn step(&mut self, input: Input) -> Result<(), TestCaseError> {
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
    fn turn(&mut self) -> Result<(), TestCaseError> {
        let mut readies = 0;
        while self.raft.has_ready() {
            readies += 1;
            // A driver loops while the core has work: a core that always has some would
            // spin a node's loop forever.
            prop_assert!(
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
                prop_assert!(
                    hs.term >= self.term,
                    "term went back: {} -> {}",
                    self.term,
                    hs.term
                );
                if let (Some((t, v)), Some(now)) = (self.vote, hs.vote) {
                    prop_assert!(
                        t != hs.term || v == now,
                        "vote changed within term {t}: {v} -> {now}"
                    );
                }
                if let Some(v) = hs.vote {
                    self.vote = Some((hs.term, v));
                }
                self.term = hs.term;
                prop_assert!(hs.commit >= self.commit, "commit went back");
                self.commit = hs.commit;
            }
            let last_on_disk = self.disk.keys().next_back().copied().unwrap_or(0);
            for m in &rd.messages {
                if let RaftBody::AppendEntriesResponse(r) = &m.body {
                    if r.success {
                        let base = self.raft.log().snapshot_index();
                        prop_assert!(
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
                prop_assert!(
                    m.term <= self.raft.term().saturating_add(ahead),
                    "a message of term {} from a server in term {}: {:?}",
                    m.term,
                    self.raft.term(),
                    m
                );
            }
            self.raft.advance();
            for e in rd.committed {
                prop_assert_eq!(e.index, self.applied + 1, "applied out of order");
                self.applied = e.index;
                if let Some(before) = self.committed.get(&e.index) {
                    prop_assert_eq!(before, &e, "index {} committed twice, differently", e.index);
                }
                self.committed.insert(e.index, e);
            }
        }
        let log = self.raft.log();
        prop_assert!(self.raft.commit_index() <= log.last_index().max(log.snapshot_index()));
        for (i, e) in self.committed.range(log.first_index()..) {
            if let Some(t) = log.term(*i) {
                prop_assert_eq!(t, e.term, "committed index {} now has another term", i);
            }
        }
        if self.raft.is_leader() {
            prop_assert_eq!(
                self.raft.term(),
                self.term,
                "leading in a term not persisted"
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_core_keeps_its_invariants_whatever_it_is_fed(inputs in vec(input(), 1..120)) {
        let mut d = Driver::new();
        for input in inputs {
            d.step(input)?;
        }
    }
}
