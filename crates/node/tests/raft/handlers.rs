//! Handlers tested by what they emit (openraft's handler tests): build a server's state,
//! feed it one message, and assert on the `Ready` it hands the driver.

use crate::harness::{cmd, membership};
use myraft_node::raft::{Config, InitialState, Proposal, Raft, RaftError, ReadState, Ready, Role};
use myraft_wire::raft::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, HardState, InstallSnapshot,
    RaftBody, RaftMessage, RequestVote, RequestVoteResponse, Snapshot, SnapshotMeta,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Command(cmd(index)),
    }
}

/// A follower (id 2 of voters 1..3) holding `entries` on disk, with commit `commit`.
fn follower(entries: Vec<Entry>, term: u64, commit: u64) -> Raft {
    let mut log = vec![Entry {
        term: 0,
        index: 1,
        payload: EntryPayload::Config(membership(&[1, 2, 3], &[])),
    }];
    log.extend(entries);
    let init = InitialState {
        hard_state: HardState {
            term,
            vote: None,
            commit,
        },
        snapshot: None,
        entries: log,
        applied: 0,
    };
    Raft::new(Config::new(2), init, StdRng::seed_from_u64(1))
}

fn from_leader(term: u64, body: RaftBody) -> RaftMessage {
    RaftMessage {
        from: 3,
        to: 2,
        term,
        body,
    }
}

/// Raft §7: after a snapshot replaces a log whose entry at the snapshot's index has another
/// term, every entry the leader then sends must be handed to storage before it is
/// acknowledged — the leader counts that acknowledgement towards commit.
#[test]
fn entries_after_a_conflicting_snapshot_are_persisted_before_their_ack() {
    // A deposed leader of term 2 holds uncommitted entries 2..=20; the leader of term 3
    // compacted its own log, whose index 10 has term 3, into a snapshot.
    let mut f = follower((2..=20).map(|i| entry(2, i)).collect(), 2, 1);
    let _ = f.ready();
    f.advance();
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            last_index: 10,
            last_term: 3,
            membership: membership(&[1, 2, 3], &[]),
        },
        data: b"state at 10".to_vec(),
    };
    // The snapshot's last chunk and the next AppendEntries arrive in one batch, so one Ready
    // answers both.
    f.step(from_leader(
        3,
        RaftBody::InstallSnapshot(InstallSnapshot { snapshot }),
    ));
    f.step(from_leader(
        3,
        RaftBody::AppendEntries(AppendEntries {
            prev_log_index: 10,
            prev_log_term: 3,
            entries: (11..=13).map(|i| entry(3, i)).collect(),
            leader_commit: 10,
            read_round: 0,
        }),
    ));
    let rd = f.ready();
    assert!(
        rd.snapshot.is_some(),
        "the snapshot is handed to the driver"
    );
    let acked = rd.messages.iter().find_map(|m| match &m.body {
        RaftBody::AppendEntriesResponse(r) if r.success => Some(r.match_index),
        _ => None,
    });
    assert_eq!(acked, Some(13), "the follower acknowledges 11..=13");
    let persisted: Vec<u64> = rd.entries.iter().map(|e| e.index).collect();
    assert_eq!(
        persisted,
        vec![11, 12, 13],
        "entries acknowledged in this Ready must be in its entries to persist"
    );
    f.advance();
    assert_eq!(f.log().last_index(), 13);
    assert_eq!(
        f.log().persisted_index(),
        13,
        "persisted counts only what storage was given"
    );
}

/// The node hands a Ready's committed entries to its applier before that Ready's own fsync,
/// which is sound only if the core never hands out an entry it has not seen persisted: an
/// AppendEntries that brings entries and commits them at once yields them for applying in
/// the Ready after the one that persists them.
#[test]
fn entries_committed_in_the_message_that_brings_them_are_applied_only_once_durable() {
    let mut f = follower(vec![], 1, 1);
    let _ = f.ready();
    f.advance();
    f.step(from_leader(
        1,
        RaftBody::AppendEntries(AppendEntries {
            prev_log_index: 1,
            prev_log_term: 0,
            entries: (2..=4).map(|i| entry(1, i)).collect(),
            leader_commit: 4,
            read_round: 0,
        }),
    ));
    let rd = f.ready();
    let to_persist: Vec<u64> = rd.entries.iter().map(|e| e.index).collect();
    assert_eq!(to_persist, vec![2, 3, 4]);
    let applied_early: Vec<u64> = rd.committed.iter().map(|e| e.index).collect();
    assert!(
        applied_early.iter().all(|i| *i < 2),
        "entries {applied_early:?} handed out for applying before they are on disk"
    );
    f.advance();
    let rd = f.ready();
    let committed: Vec<u64> = rd.committed.iter().map(|e| e.index).collect();
    assert!(
        committed.ends_with(&[2, 3, 4]),
        "once persisted, the committed entries follow: {committed:?}"
    );
}

/// Node 1 of voters 1..=3, elected in term 1 with node 2's vote; its no-op (index 2) is
/// written and its flush deferred, as a node's leader does.
fn deferring_leader() -> Raft {
    let init = InitialState::bootstrap(membership(&[1, 2, 3], &[]));
    let mut cfg = Config::new(1);
    cfg.pre_vote = false;
    let mut l = Raft::new(cfg, init, StdRng::seed_from_u64(1));
    l.campaign();
    let _ = l.ready();
    l.advance();
    l.step(RaftMessage {
        from: 2,
        to: 1,
        term: 1,
        body: RaftBody::RequestVoteResponse(RequestVoteResponse {
            granted: true,
            pre_vote: false,
        }),
    });
    assert!(l.is_leader());
    let _ = l.ready();
    assert_eq!(l.advance_written(), 2);
    l
}

/// A follower's answer to everything the leader has sent it.
fn ack_all(leader: &mut Raft, from: u64) {
    leader.step(RaftMessage {
        from,
        to: 1,
        term: leader.term(),
        body: RaftBody::AppendEntriesResponse(AppendEntriesResponse {
            success: true,
            match_index: leader.last_index(),
            prev_log_index: 1,
            conflict_index: 0,
            conflict_term: None,
            read_round: 0,
        }),
    });
}

/// With its flush beside the loop, a leader counts itself towards commit only once the
/// driver reports the flush, and hands out for applying only what is on its own disk, even
/// when both followers have committed it without it.
#[test]
fn a_leader_whose_flush_is_deferred_counts_itself_only_once_it_is_reported() {
    let mut l = deferring_leader();
    l.propose(cmd(3)).expect("a leader takes proposals");
    let rd = l.ready();
    assert_eq!(rd.entries.last().map(|e| e.index), Some(3));
    assert_eq!(l.advance_written(), 3);
    ack_all(&mut l, 2);
    assert!(
        l.commit_index() < 3,
        "one follower and an unflushed leader are not a quorum"
    );
    ack_all(&mut l, 3);
    assert_eq!(l.commit_index(), 3, "both followers make a quorum");
    let rd = l.ready();
    assert!(
        rd.committed.iter().all(|e| e.index < 2),
        "entries {:?} handed out before the leader's own flush",
        rd.committed.iter().map(|e| e.index).collect::<Vec<_>>()
    );
    let _ = l.advance_written();
    l.persisted(1, 3);
    let rd = l.ready();
    let committed: Vec<u64> = rd.committed.iter().map(|e| e.index).collect();
    assert!(
        committed.ends_with(&[2, 3]),
        "then they follow: {committed:?}"
    );
}

#[test]
fn a_reported_flush_commits_with_one_follower() {
    let mut l = deferring_leader();
    l.propose(cmd(3)).expect("a leader takes proposals");
    let _ = l.ready();
    let _ = l.advance_written();
    ack_all(&mut l, 2);
    assert!(l.commit_index() < 3);
    l.persisted(1, 3);
    assert_eq!(
        l.commit_index(),
        3,
        "the leader and one follower are a quorum"
    );
}

/// A flush that finishes after its leader stepped down reports on a log that may have been
/// cut and rewritten since: it must not make newer entries count as durable.
#[test]
fn a_flush_reported_after_stepping_down_is_ignored() {
    let mut l = deferring_leader();
    for i in 3..=5 {
        l.propose(cmd(i)).expect("a leader takes proposals");
    }
    let _ = l.ready();
    assert_eq!(l.advance_written(), 5);
    // Node 2 leads term 2 and replaces 3..=5, which never committed.
    l.step(RaftMessage {
        from: 2,
        to: 1,
        term: 2,
        body: RaftBody::AppendEntries(AppendEntries {
            prev_log_index: 2,
            prev_log_term: 1,
            entries: vec![entry(2, 3)],
            leader_commit: 2,
            read_round: 0,
        }),
    });
    assert!(!l.is_leader());
    let _ = l.ready();
    l.advance();
    l.step(RaftMessage {
        from: 2,
        to: 1,
        term: 2,
        body: RaftBody::AppendEntries(AppendEntries {
            prev_log_index: 3,
            prev_log_term: 2,
            entries: vec![entry(2, 4), entry(2, 5)],
            leader_commit: 5,
            read_round: 0,
        }),
    });
    // The old flush of 3..=5 of term 1 reports only now.
    l.persisted(1, 5);
    assert_eq!(l.log().persisted_index(), 3);
    let rd = l.ready();
    assert!(
        rd.committed.iter().all(|e| e.index <= 3),
        "entries {:?} handed out before they are on disk",
        rd.committed.iter().map(|e| e.index).collect::<Vec<_>>()
    );
}

// ---- votes, conflict hints, commit counting, ReadIndex and membership -------------------

fn msg(from: u64, to: u64, term: u64, body: RaftBody) -> RaftMessage {
    RaftMessage {
        from,
        to,
        term,
        body,
    }
}

fn request_vote(last_log_index: u64, last_log_term: u64, pre_vote: bool) -> RaftBody {
    RaftBody::RequestVote(RequestVote {
        last_log_index,
        last_log_term,
        pre_vote,
        transfer: false,
    })
}

fn vote_response(granted: bool, pre_vote: bool) -> RaftBody {
    RaftBody::RequestVoteResponse(RequestVoteResponse { granted, pre_vote })
}

fn heartbeat(prev_log_index: u64, prev_log_term: u64, leader_commit: u64) -> RaftBody {
    RaftBody::AppendEntries(AppendEntries {
        prev_log_index,
        prev_log_term,
        entries: Vec::new(),
        leader_commit,
        read_round: 0,
    })
}

/// A follower's acknowledgement of everything through `match_index`.
fn append_ok(match_index: u64, read_round: u64) -> RaftBody {
    RaftBody::AppendEntriesResponse(AppendEntriesResponse {
        success: true,
        match_index,
        prev_log_index: match_index,
        conflict_index: 0,
        conflict_term: None,
        read_round,
    })
}

/// A follower's rejection of an AppendEntries at `prev_log_index`, with its hint.
fn append_rejected(
    prev_log_index: u64,
    conflict_index: u64,
    conflict_term: Option<u64>,
) -> RaftBody {
    RaftBody::AppendEntriesResponse(AppendEntriesResponse {
        success: false,
        match_index: 0,
        prev_log_index,
        conflict_index,
        conflict_term,
        read_round: 0,
    })
}

/// Server `cfg.id` of `voters` and `learners`, holding `entries` after the founding
/// configuration at index 1, in `term` with commit 1; its first `Ready` handled.
fn server(cfg: Config, voters: &[u64], learners: &[u64], entries: Vec<Entry>, term: u64) -> Raft {
    let mut log = vec![Entry {
        term: 0,
        index: 1,
        payload: EntryPayload::Config(membership(voters, learners)),
    }];
    log.extend(entries);
    let init = InitialState {
        hard_state: HardState {
            term,
            vote: None,
            commit: 1,
        },
        snapshot: None,
        entries: log,
        applied: 0,
    };
    let mut r = Raft::new(cfg, init, StdRng::seed_from_u64(1));
    settle(&mut r);
    r
}

/// Hands out, persists and sends a `Ready`, as a driver does.
fn settle(r: &mut Raft) {
    let _ = r.ready();
    r.advance();
}

/// Node 1 of `voters` and `learners`, holding `entries` after the founding configuration,
/// elected in `term + 1` with the votes of nodes 2, 3, ... as far as it needs them (`cfg`
/// has PreVote off). Its no-op and first probes are handed out and persisted.
fn leader_with(
    cfg: Config,
    voters: &[u64],
    learners: &[u64],
    entries: Vec<Entry>,
    term: u64,
) -> Raft {
    let mut l = server(cfg, voters, learners, entries, term);
    l.campaign();
    settle(&mut l);
    for &v in voters.iter().filter(|&&v| v != 1) {
        if !l.is_leader() {
            l.step(msg(v, 1, term + 1, vote_response(true, false)));
        }
    }
    assert!(l.is_leader());
    settle(&mut l);
    l
}

fn leader(voters: &[u64], learners: &[u64]) -> Raft {
    let mut cfg = Config::new(1);
    cfg.pre_vote = false;
    leader_with(cfg, voters, learners, vec![], 0)
}

/// Node 1 leading term 4 over voters 1..=3 with log [cfg@0, 1, 1, 3, 3, noop@4]: entries 4
/// and 5 were written by an earlier leader of term 3 and never committed.
fn leader_of_term_4(max_msg_bytes: usize) -> Raft {
    let mut cfg = Config::new(1);
    cfg.pre_vote = false;
    cfg.max_msg_bytes = max_msg_bytes;
    let entries = vec![entry(1, 2), entry(1, 3), entry(3, 4), entry(3, 5)];
    let l = leader_with(cfg, &[1, 2, 3], &[], entries, 3);
    assert_eq!((l.term(), l.last_index(), l.commit_index()), (4, 6, 1));
    l
}

fn noop(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Noop,
    }
}

fn committed(rd: &Ready) -> Vec<u64> {
    rd.committed.iter().map(|e| e.index).collect()
}

// ---- votes (§5.2, §5.4.1, dissertation §9.6 and §4.2.3) ---------------------------------

#[test]
fn a_vote_is_granted_once_per_term() {
    let mut f = follower(vec![], 1, 1);
    settle(&mut f);
    f.step(msg(1, 2, 2, request_vote(1, 0, false)));
    let rd = f.ready();
    let voted = HardState {
        term: 2,
        vote: Some(1),
        commit: 1,
    };
    assert_eq!(
        rd.hard_state,
        Some(voted),
        "the vote is persisted with the new term"
    );
    assert_eq!(rd.messages, vec![msg(2, 1, 2, vote_response(true, false))]);
    f.advance();

    f.step(msg(3, 2, 2, request_vote(1, 0, false)));
    let rd = f.ready();
    assert_eq!(rd.hard_state, None);
    assert_eq!(
        rd.messages,
        vec![msg(2, 3, 2, vote_response(false, false))],
        "a second candidate of the same term is refused"
    );
    f.advance();

    f.step(msg(1, 2, 2, request_vote(1, 0, false)));
    let rd = f.ready();
    assert_eq!(
        rd.messages,
        vec![msg(2, 1, 2, vote_response(true, false))],
        "a retransmitted request from the candidate voted for is granted again"
    );
}

#[test]
fn a_vote_is_refused_to_a_candidate_whose_log_is_less_up_to_date() {
    // Last entry (3, term 2).
    let mut f = follower(vec![entry(1, 2), entry(2, 3)], 2, 1);
    settle(&mut f);

    // Longer, but ending in an older term.
    f.step(msg(1, 2, 3, request_vote(5, 1, false)));
    let rd = f.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 3,
            vote: None,
            commit: 1
        }),
        "the term moves on (§5.1) but no vote is cast"
    );
    assert_eq!(rd.messages, vec![msg(2, 1, 3, vote_response(false, false))]);
    f.advance();

    // Same last term, shorter.
    f.step(msg(3, 2, 3, request_vote(2, 2, false)));
    let rd = f.ready();
    assert_eq!(rd.hard_state, None);
    assert_eq!(rd.messages, vec![msg(2, 3, 3, vote_response(false, false))]);
    f.advance();

    // The refusals cast no vote: an up-to-date candidate of the same term still gets one.
    f.step(msg(1, 2, 3, request_vote(3, 2, false)));
    let rd = f.ready();
    assert_eq!(rd.hard_state.and_then(|hs| hs.vote), Some(1));
    assert_eq!(rd.messages, vec![msg(2, 1, 3, vote_response(true, false))]);
}

#[test]
fn a_pre_vote_changes_neither_term_nor_vote() {
    let mut f = follower(vec![], 1, 1);
    settle(&mut f);
    f.step(msg(3, 2, 1, request_vote(1, 0, false)));
    settle(&mut f);
    assert_eq!(f.vote(), Some(3));

    // A PreVote asks about term 2: granted even though this server voted in term 1.
    f.step(msg(1, 2, 2, request_vote(1, 0, true)));
    let rd = f.ready();
    assert_eq!(rd.hard_state, None, "nothing to persist");
    assert_eq!(
        rd.messages,
        vec![msg(2, 1, 2, vote_response(true, true))],
        "a granted PreVote carries the term asked about"
    );
    f.advance();
    assert_eq!((f.term(), f.vote()), (1, Some(3)));

    // A PreVote for an older log is refused in the responder's own term.
    f.step(msg(1, 2, 2, request_vote(0, 0, true)));
    let rd = f.ready();
    assert_eq!(rd.hard_state, None);
    assert_eq!(rd.messages, vec![msg(2, 1, 1, vote_response(false, true))]);
}

#[test]
fn a_vote_request_while_hearing_a_leader_is_ignored_under_check_quorum() {
    let mut f = follower(vec![], 1, 1);
    settle(&mut f);
    f.step(msg(3, 2, 1, heartbeat(1, 0, 1)));
    settle(&mut f);
    assert_eq!(f.leader(), Some(3));

    for pre_vote in [false, true] {
        f.step(msg(1, 2, 2, request_vote(1, 0, pre_vote)));
        let rd = f.ready();
        assert!(
            rd.is_empty(),
            "no answer, no new term (pre_vote {pre_vote}): {rd:?}"
        );
        f.advance();
    }
    assert_eq!((f.term(), f.leader()), (1, Some(3)));

    // A campaign the leader started with TimeoutNow (§3.10) is heard.
    f.step(msg(
        1,
        2,
        2,
        RaftBody::RequestVote(RequestVote {
            last_log_index: 1,
            last_log_term: 0,
            pre_vote: false,
            transfer: true,
        }),
    ));
    let rd = f.ready();
    assert_eq!(
        rd.hard_state.map(|hs| (hs.term, hs.vote)),
        Some((2, Some(1)))
    );
    assert_eq!(rd.messages, vec![msg(2, 1, 2, vote_response(true, false))]);

    // Without CheckQuorum there is no lease: the same request deposes the leader.
    let mut cfg = Config::new(2);
    cfg.check_quorum = false;
    let mut f = server(cfg, &[1, 2, 3], &[], vec![], 1);
    f.step(msg(3, 2, 1, heartbeat(1, 0, 1)));
    settle(&mut f);
    f.step(msg(1, 2, 2, request_vote(1, 0, false)));
    let rd = f.ready();
    assert_eq!(rd.messages, vec![msg(2, 1, 2, vote_response(true, false))]);
}

// ---- AppendEntries conflict hints (§5.3) ------------------------------------------------

#[test]
fn a_mismatched_prev_log_term_hints_the_first_index_of_the_conflicting_term() {
    let mut f = follower(
        vec![entry(1, 2), entry(2, 3), entry(2, 4), entry(2, 5)],
        2,
        1,
    );
    settle(&mut f);
    f.step(from_leader(
        3,
        RaftBody::AppendEntries(AppendEntries {
            prev_log_index: 5,
            prev_log_term: 3,
            entries: vec![entry(3, 6)],
            leader_commit: 1,
            read_round: 0,
        }),
    ));
    let rd = f.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 3,
            vote: None,
            commit: 1
        })
    );
    assert!(rd.entries.is_empty(), "nothing is appended past a mismatch");
    assert_eq!(
        rd.messages,
        vec![msg(2, 3, 3, append_rejected(5, 3, Some(2)))],
        "term 2 starts at index 3 here"
    );
    assert_eq!(
        f.last_index(),
        5,
        "the log is cut only by entries that replace it"
    );
}

#[test]
fn a_too_short_log_hints_one_past_its_end() {
    let mut f = follower(vec![entry(1, 2)], 1, 1);
    settle(&mut f);
    f.step(from_leader(1, heartbeat(6, 1, 1)));
    let rd = f.ready();
    assert_eq!(rd.hard_state, None);
    assert_eq!(rd.messages, vec![msg(2, 3, 1, append_rejected(6, 3, None))]);
}

#[test]
fn a_conflict_hint_never_points_into_the_committed_prefix() {
    // Entries 1..=3 are committed; 4 of term 2 is not, and term 2 starts at 3.
    let mut f = follower(vec![entry(1, 2), entry(2, 3), entry(2, 4)], 2, 3);
    settle(&mut f);
    f.step(from_leader(3, heartbeat(4, 3, 3)));
    let rd = f.ready();
    assert_eq!(
        rd.messages,
        vec![msg(2, 3, 3, append_rejected(4, 4, Some(2)))],
        "committed entries match every leader's log (§5.4): the hint starts after them"
    );
}

#[test]
fn after_a_hint_with_a_term_it_holds_the_leader_probes_past_its_last_entry_of_that_term() {
    let mut l = leader_of_term_4(usize::MAX);
    // Node 2 holds term 1 from index 2 on: its entry at 5 has term 1, not 3.
    l.step(msg(2, 1, 4, append_rejected(5, 2, Some(1))));
    let rd = l.ready();
    assert_eq!(
        rd.messages,
        vec![msg(
            1,
            2,
            4,
            RaftBody::AppendEntries(AppendEntries {
                prev_log_index: 3,
                prev_log_term: 1,
                entries: vec![entry(3, 4), entry(3, 5), noop(4, 6)],
                leader_commit: 1,
                read_round: 0,
            })
        )],
        "the leader's term 1 ends at 3: the next probe is there, not at the hint's 2"
    );
}

#[test]
fn after_a_hint_with_a_term_it_lacks_or_no_term_the_leader_probes_at_the_hint() {
    let mut l = leader_of_term_4(usize::MAX);
    // Node 2's entries 3..=5 have term 2, which the leader never saw.
    l.step(msg(2, 1, 4, append_rejected(5, 3, Some(2))));
    // Node 3's log ends at 3.
    l.step(msg(3, 1, 4, append_rejected(5, 4, None)));
    let rd = l.ready();
    let probe = |prev_log_index, entries| {
        RaftBody::AppendEntries(AppendEntries {
            prev_log_index,
            prev_log_term: 1,
            entries,
            leader_commit: 1,
            read_round: 0,
        })
    };
    assert_eq!(
        rd.messages,
        vec![
            msg(
                1,
                2,
                4,
                probe(2, vec![entry(1, 3), entry(3, 4), entry(3, 5), noop(4, 6)])
            ),
            msg(
                1,
                3,
                4,
                probe(3, vec![entry(3, 4), entry(3, 5), noop(4, 6)])
            ),
        ]
    );
    l.advance();

    // The same rejection again (duplicated on the way) answers a probe no longer out.
    l.step(msg(2, 1, 4, append_rejected(5, 3, Some(2))));
    assert!(
        l.ready().messages.is_empty(),
        "a stale rejection moves nothing"
    );
}

// ---- commit counting (§5.4.2, Figure 8) -------------------------------------------------

/// [`leader_of_term_4`] sending one entry per message, after node 2 (whose log ends at 3)
/// acknowledged entry 4 and the leader streamed 5 and 6 to it.
fn leader_of_term_4_streaming_to_2() -> Raft {
    let mut l = leader_of_term_4(1);
    l.step(msg(2, 1, 4, append_rejected(5, 4, None)));
    settle(&mut l);
    l.step(msg(2, 1, 4, append_ok(4, 0)));
    settle(&mut l);
    assert_eq!(l.commit_index(), 1, "4 is on a quorum, but of term 3");
    l
}

#[test]
fn entries_of_an_earlier_term_are_not_committed_by_counting_replicas() {
    let mut l = leader_of_term_4_streaming_to_2();
    l.step(msg(2, 1, 4, append_ok(5, 0)));
    let rd = l.ready();
    assert_eq!(
        l.commit_index(),
        1,
        "entry 5 of term 3 is on a quorum (1, 2)"
    );
    assert_eq!(rd.hard_state, None);
    assert!(committed(&rd).is_empty());
}

#[test]
fn entries_of_an_earlier_term_commit_with_one_of_the_current_term() {
    let mut l = leader_of_term_4_streaming_to_2();
    l.step(msg(2, 1, 4, append_ok(5, 0)));
    settle(&mut l);
    l.step(msg(2, 1, 4, append_ok(6, 0)));
    let rd = l.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 4,
            vote: Some(1),
            commit: 6
        })
    );
    assert_eq!(
        committed(&rd),
        vec![2, 3, 4, 5, 6],
        "the no-op carries 2..=5 with it"
    );
    assert_eq!(
        rd.messages,
        vec![msg(1, 2, 4, heartbeat(6, 4, 6))],
        "the streaming follower learns the commit index at once; node 3's probe is out"
    );
}

#[test]
fn a_follower_commits_no_further_than_the_entries_the_message_vouches_for() {
    // Entry 3 of term 1 may be a stale suffix the new leader of term 2 does not have.
    let mut f = follower(vec![entry(1, 2), entry(1, 3)], 1, 1);
    settle(&mut f);
    f.step(from_leader(2, heartbeat(2, 1, 3)));
    let rd = f.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 2,
            vote: None,
            commit: 2
        }),
        "the leader's commit index 3 is capped at the last entry it vouched for"
    );
    assert_eq!(committed(&rd), vec![2]);
    assert_eq!(rd.messages, vec![msg(2, 3, 2, append_ok(2, 0))]);
}

// ---- ReadIndex (§6.4) -------------------------------------------------------------------

/// [`leader`] of voters 1..=3 whose no-op (index 2) node 2 acknowledged: committed, with
/// node 2 streaming and node 3 still probing.
fn leader_with_committed_noop() -> Raft {
    let mut l = leader(&[1, 2, 3], &[]);
    l.step(msg(2, 1, 1, append_ok(2, 0)));
    settle(&mut l);
    assert_eq!(l.commit_index(), 2);
    l
}

fn read_rounds(rd: &Ready) -> Vec<(u64, u64)> {
    rd.messages
        .iter()
        .filter_map(|m| match &m.body {
            RaftBody::AppendEntries(ae) => Some((m.to, ae.read_round)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_read_is_answered_only_once_a_quorum_acknowledged_a_round_sent_after_it() {
    let mut l = leader(&[1, 2, 3, 4, 5], &[]);
    l.step(msg(2, 1, 1, append_ok(2, 0)));
    l.step(msg(3, 1, 1, append_ok(2, 0)));
    settle(&mut l);
    assert_eq!(l.commit_index(), 2);
    l.read_index(7).expect("a leader takes reads");
    let rd = l.ready();
    assert!(rd.reads.is_empty());
    assert_eq!(
        read_rounds(&rd),
        vec![(2, 1), (3, 1), (4, 1), (5, 1)],
        "one heartbeat round to every peer"
    );
    l.advance();

    // An answer to a message sent before the read proves nothing about it.
    l.step(msg(2, 1, 1, append_ok(2, 0)));
    assert!(l.ready().reads.is_empty());
    l.advance();
    l.step(msg(2, 1, 1, append_ok(2, 1)));
    assert!(
        l.ready().reads.is_empty(),
        "the leader and node 2 are 2 of 5"
    );
    l.advance();
    l.step(msg(4, 1, 1, append_ok(2, 1)));
    let rd = l.ready();
    assert_eq!(
        rd.reads,
        vec![ReadState { ctx: 7, index: 2 }],
        "3 of 5 are a quorum"
    );
}

#[test]
fn a_read_waits_for_the_leader_to_commit_an_entry_of_its_term() {
    let mut l = leader(&[1, 2, 3], &[]);
    l.read_index(7).expect("a leader takes reads");
    let rd = l.ready();
    assert!(
        rd.messages.is_empty() && rd.reads.is_empty(),
        "the commit index may be behind an earlier leader's: no round yet"
    );
    l.advance();

    l.step(msg(2, 1, 1, append_ok(2, 0)));
    let rd = l.ready();
    assert_eq!(rd.hard_state.map(|hs| hs.commit), Some(2));
    assert!(rd.reads.is_empty());
    assert_eq!(
        read_rounds(&rd),
        vec![(2, 1), (3, 1)],
        "the no-op committed: the round starts"
    );
    l.advance();

    l.step(msg(2, 1, 1, append_ok(2, 1)));
    assert_eq!(l.ready().reads, vec![ReadState { ctx: 7, index: 2 }]);
}

#[test]
fn a_follower_refuses_a_read_and_names_the_leader_it_knows() {
    let mut f = follower(vec![], 1, 1);
    settle(&mut f);
    assert_eq!(f.read_index(5), Err(RaftError::NotLeader { leader: None }));
    f.step(from_leader(1, heartbeat(1, 0, 1)));
    settle(&mut f);
    assert_eq!(
        f.read_index(5),
        Err(RaftError::NotLeader { leader: Some(3) })
    );
    assert!(f.ready().is_empty(), "a refused read sends nothing");
}

#[test]
fn reads_in_flight_fail_when_the_leader_steps_down() {
    let mut l = leader_with_committed_noop();
    l.read_index(7).expect("a leader takes reads");
    settle(&mut l);
    // Node 2 leads term 2.
    l.step(msg(2, 1, 2, heartbeat(2, 1, 2)));
    let rd = l.ready();
    assert!(!l.is_leader());
    assert!(rd.reads.is_empty());
    assert_eq!(rd.failed_reads, vec![7]);
}

// ---- membership (§4.1–4.2) --------------------------------------------------------------

#[test]
fn membership_changes_one_voter_at_a_time_each_after_the_last_commits() {
    let mut l = leader(&[1, 2, 3], &[]);
    assert_eq!(
        l.propose_membership(membership(&[1, 2, 3, 4], &[])),
        Err(RaftError::ConfigChangePending),
        "a new leader changes nothing until an entry of its term commits"
    );
    l.step(msg(2, 1, 1, append_ok(2, 0)));
    settle(&mut l);

    assert!(matches!(
        l.propose_membership(membership(&[1, 2, 3, 4, 5], &[])),
        Err(RaftError::InvalidConfigChange(_))
    ));
    assert_eq!(
        l.propose_membership(membership(&[1, 2, 3, 4], &[])),
        Ok(Proposal { index: 3, term: 1 })
    );
    assert_eq!(
        l.propose_membership(membership(&[1, 2, 3, 4], &[5])),
        Err(RaftError::ConfigChangePending),
        "even a learner waits for the change before it"
    );
    assert_eq!(l.last_index(), 3);
}

#[test]
fn a_new_configuration_counts_from_the_moment_it_is_appended() {
    let mut l = leader_with_committed_noop();
    l.propose_membership(membership(&[1, 2, 3, 4], &[]))
        .expect("one voter more");
    settle(&mut l);
    l.step(msg(2, 1, 1, append_ok(3, 0)));
    assert_eq!(l.commit_index(), 2, "2 of 4 voters are no quorum");
    l.step(msg(4, 1, 1, append_ok(3, 0)));
    assert_eq!(l.commit_index(), 3, "3 of 4 are");
    assert!(l.membership_committed());
}

#[test]
fn a_learners_acknowledgement_does_not_count_toward_commit() {
    let mut l = leader(&[1, 2, 3], &[4]);
    l.step(msg(4, 1, 1, append_ok(2, 0)));
    let rd = l.ready();
    assert_eq!(
        l.commit_index(),
        1,
        "leader and a learner are not 2 of 3 voters"
    );
    assert_eq!(rd.hard_state, None);
    l.advance();
    l.step(msg(2, 1, 1, append_ok(2, 0)));
    assert_eq!(l.commit_index(), 2);
}

#[test]
fn a_learner_is_not_asked_for_its_vote_and_its_vote_does_not_count() {
    let mut cfg = Config::new(1);
    cfg.pre_vote = false;
    let mut c = server(cfg, &[1, 2, 3], &[4], vec![], 0);
    c.campaign();
    let rd = c.ready();
    let asked: Vec<u64> = rd.messages.iter().map(|m| m.to).collect();
    assert_eq!(asked, vec![2, 3]);
    c.advance();
    c.step(msg(4, 1, 1, vote_response(true, false)));
    assert_eq!(
        c.role(),
        Role::Candidate,
        "a learner's vote is not one of a quorum"
    );
    c.step(msg(2, 1, 1, vote_response(true, false)));
    assert_eq!(c.role(), Role::Leader);

    // Nor does a learner campaign when its timer runs out.
    let mut learner = server(Config::new(4), &[1, 2, 3], &[4], vec![], 0);
    for _ in 0..100 {
        learner.tick();
    }
    learner.campaign();
    assert_eq!(learner.role(), Role::Follower);
    assert!(learner.ready().messages.is_empty());
}

/// A message with a term at the end of `u64` (from a broken or hostile peer holding the key)
/// must not be adopted: the next election's `term + 1` would wrap the term to 0, where the
/// server could vote a second time. Found by the arbitrary-input test.
#[test]
fn a_message_with_a_term_beyond_max_term_is_dropped() {
    let mut f = follower(vec![], 1, 1);
    let _ = f.ready();
    f.advance();
    f.step(RaftMessage {
        from: 3,
        to: 2,
        term: u64::MAX,
        body: RaftBody::TimeoutNow(myraft_wire::raft::TimeoutNow {}),
    });
    assert_eq!(f.term(), 1, "the absurd term is not adopted");
    assert!(!f.has_ready(), "nothing to persist or send");
    f.step(from_leader(
        myraft_node::raft::MAX_TERM,
        RaftBody::AppendEntries(AppendEntries {
            prev_log_index: 1,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 1,
            read_round: 0,
        }),
    ));
    assert_eq!(
        f.term(),
        myraft_node::raft::MAX_TERM,
        "up to MAX_TERM a term is a term"
    );
}

/// The same for indexes: a snapshot said to end at the last `u64` index would wrap the
/// index of the entry after it to 0, and the server's loop would spin on a `Ready` that
/// never empties. Found by the arbitrary-input test.
#[test]
fn a_message_with_an_index_beyond_max_index_is_dropped() {
    let mut f = follower(vec![], 1, 1);
    let _ = f.ready();
    f.advance();
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            last_index: u64::MAX,
            last_term: 1,
            membership: membership(&[1, 2, 3], &[]),
        },
        data: Vec::new(),
    };
    f.step(from_leader(
        1,
        RaftBody::InstallSnapshot(InstallSnapshot { snapshot }),
    ));
    assert!(!f.has_ready(), "the snapshot is not taken");
    assert_eq!(f.log().last_index(), 1);
}
