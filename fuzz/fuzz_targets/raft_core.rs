//! The Raft core fed arbitrary inputs — messages from anyone with any term and body, ticks,
//! proposals, reads, transfers, compactions — through the driver's loop, with the
//! invariants of `crates/node/tests/raft/invariants.rs` (the same checker the stable
//! property test `arbitrary.rs` uses) asserted after each.

#![no_main]

#[path = "../../crates/node/tests/raft/invariants.rs"]
#[allow(dead_code)]
mod invariants;

use arbitrary::Arbitrary;
use invariants::{three_voters, Driver, Input, ME};
use libfuzzer_sys::fuzz_target;
use myraft_fuzz::Num;
use myraft_wire::raft::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, InstallSnapshot,
    InstallSnapshotResponse, Membership, RaftBody, RaftMessage, RequestVote, RequestVoteResponse,
    Snapshot, SnapshotMeta, TimeoutNow,
};

#[derive(Arbitrary, Debug)]
enum Sender {
    Peer(bool),
    Me,
    Stranger(u64),
}

#[derive(Arbitrary, Debug)]
enum PayloadSpec {
    Noop,
    Command(u8),
    Config,
    EmptyConfig,
}

#[derive(Arbitrary, Debug)]
struct EntrySpec {
    /// Added to the term of the entry before, so terms mostly do not decrease.
    term_up: u8,
    /// Numbered in place, unless the fuzzer says otherwise.
    index: Option<Num>,
    payload: PayloadSpec,
}

#[derive(Arbitrary, Debug)]
enum BodySpec {
    RequestVote {
        last: Num,
        last_term: Num,
        pre_vote: bool,
        transfer: bool,
    },
    RequestVoteResponse {
        granted: bool,
        pre_vote: bool,
    },
    AppendEntries {
        prev: Num,
        prev_term: Num,
        entries: Vec<EntrySpec>,
        commit: Num,
        round: u8,
    },
    AppendEntriesResponse {
        success: bool,
        matched: Num,
        prev: Num,
        conflict: Num,
        conflict_term: Option<Num>,
        round: u8,
    },
    InstallSnapshot {
        last: Num,
        last_term: Num,
        members: bool,
    },
    InstallSnapshotResponse {
        last: Num,
    },
    TimeoutNow,
}

#[derive(Arbitrary, Debug)]
enum InputSpec {
    Message {
        from: Sender,
        to_me: bool,
        term: Num,
        body: BodySpec,
    },
    Tick,
    Propose(u8),
    Read(u8),
    Transfer(u8),
    Compact,
}

fn body(spec: BodySpec) -> RaftBody {
    match spec {
        BodySpec::RequestVote {
            last,
            last_term,
            pre_vote,
            transfer,
        } => RaftBody::RequestVote(RequestVote {
            last_log_index: last.get(12),
            last_log_term: last_term.get(6),
            pre_vote,
            transfer,
        }),
        BodySpec::RequestVoteResponse { granted, pre_vote } => {
            RaftBody::RequestVoteResponse(RequestVoteResponse { granted, pre_vote })
        }
        BodySpec::AppendEntries {
            prev,
            prev_term,
            entries,
            commit,
            round,
        } => {
            let prev = prev.get(12);
            let prev_term = prev_term.get(6);
            let mut term = prev_term;
            let entries = entries
                .into_iter()
                .take(8)
                .enumerate()
                .map(|(i, e)| {
                    term = term.saturating_add(u64::from(e.term_up % 3));
                    Entry {
                        term,
                        index: match e.index {
                            Some(n) => n.get(12),
                            None => prev.saturating_add(1 + i as u64),
                        },
                        payload: match e.payload {
                            PayloadSpec::Noop => EntryPayload::Noop,
                            PayloadSpec::Command(b) => EntryPayload::Command(vec![b; 3]),
                            PayloadSpec::Config => EntryPayload::Config(three_voters()),
                            PayloadSpec::EmptyConfig => EntryPayload::Config(Membership::default()),
                        },
                    }
                })
                .collect();
            RaftBody::AppendEntries(AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: commit.get(12),
                read_round: u64::from(round % 4),
            })
        }
        BodySpec::AppendEntriesResponse {
            success,
            matched,
            prev,
            conflict,
            conflict_term,
            round,
        } => RaftBody::AppendEntriesResponse(AppendEntriesResponse {
            success,
            match_index: matched.get(12),
            prev_log_index: prev.get(12),
            conflict_index: conflict.get(12),
            conflict_term: conflict_term.map(|t| t.get(6)),
            read_round: u64::from(round % 4),
        }),
        BodySpec::InstallSnapshot {
            last,
            last_term,
            members,
        } => RaftBody::InstallSnapshot(InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    last_index: last.get(12),
                    last_term: last_term.get(6),
                    membership: if members {
                        three_voters()
                    } else {
                        Membership::default()
                    },
                },
                data: Vec::new(),
            },
        }),
        BodySpec::InstallSnapshotResponse { last } => {
            RaftBody::InstallSnapshotResponse(InstallSnapshotResponse {
                last_index: last.get(12),
            })
        }
        BodySpec::TimeoutNow => RaftBody::TimeoutNow(TimeoutNow {}),
    }
}

fn input(spec: InputSpec) -> Input {
    match spec {
        InputSpec::Message {
            from,
            to_me,
            term,
            body: b,
        } => Input::Message(RaftMessage {
            from: match from {
                Sender::Peer(second) => 2 + u64::from(second),
                Sender::Me => ME,
                Sender::Stranger(id) => id,
            },
            to: if to_me { ME } else { 2 },
            term: term.get(6),
            body: body(b),
        }),
        InputSpec::Tick => Input::Tick,
        InputSpec::Propose(b) => Input::Propose(b),
        InputSpec::Read(ctx) => Input::Read(u64::from(ctx % 4)),
        InputSpec::Transfer(to) => Input::Transfer(u64::from(to % 5)),
        InputSpec::Compact => Input::Compact,
    }
}

fuzz_target!(|inputs: Vec<InputSpec>| {
    let mut d = Driver::new().unwrap_or_else(|e| panic!("a new server: {e}"));
    for spec in inputs.into_iter().take(256) {
        let i = input(spec);
        let shown = i.clone();
        if let Err(e) = d.step(i) {
            panic!("after {shown:?}: {e}");
        }
    }
});
