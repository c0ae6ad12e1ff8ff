//! The core fed arbitrary inputs — messages from anyone with any term and body, ticks,
//! proposals, reads, transfers and snapshots of its own — with its invariants checked after
//! every one, through the driver's loop (`ready`, persist, `advance`). The stable
//! counterpart of a fuzz target: proptest shrinks a failure to a short sequence, and
//! `PROPTEST_CASES=N` runs more.
//!
//! Checked: no panic, and the invariants of `invariants.rs` (the term never goes back,
//! votes, commits and applies in order, nothing acknowledged before it was handed out for
//! persisting, …), which the `raft_core` fuzz target shares.

use crate::harness::membership;
use crate::invariants::{Driver, Input};
use myraft_wire::raft::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, Index, RaftBody, RaftMessage,
    RequestVote, RequestVoteResponse, Term, TimeoutNow,
};
use proptest::collection::vec;
use proptest::prelude::*;

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

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_core_keeps_its_invariants_whatever_it_is_fed(inputs in vec(input(), 1..120)) {
        let mut d = Driver::new().map_err(TestCaseError::fail)?;
        for input in inputs {
            d.step(input).map_err(TestCaseError::fail)?;
        }
    }
}
