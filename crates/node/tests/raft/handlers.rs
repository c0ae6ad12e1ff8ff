//! Handlers tested by what they emit (openraft's handler tests): build a server's state,
//! feed it one message, and assert on the `Ready` it hands the driver.

use crate::harness::{cmd, membership};
use myraft_node::raft::{Config, InitialState, Raft};
use myraft_wire::raft::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, HardState, InstallSnapshot,
    RaftBody, RaftMessage, RequestVoteResponse, Snapshot, SnapshotMeta,
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
