//! Scenario tests, each after one rule of the Raft paper (§ numbers refer to the extended
//! paper, "dissertation §" to Ongaro's thesis). The harness checks the safety properties
//! after every event; these tests add liveness and the rule-specific expectations.

use crate::harness::{cmd, membership, NetConfig, Sim};
use myraft_node::raft::{Config, RaftError, Role};

/// Raft §5.2: a fresh cluster elects exactly one leader, and everyone agrees on its term.
#[test]
fn initial_election() {
    for seed in 0..20 {
        let mut s = Sim::new(seed, 3);
        let l = s.wait_leader(2_000);
        s.run_for(500);
        assert_eq!(
            s.leaders(),
            vec![l],
            "seed {seed}: leadership must be stable"
        );
        let term = s.raft(l).term();
        for id in 1..=3 {
            assert_eq!(
                s.raft(id).term(),
                term,
                "seed {seed}: n{id} disagrees on the term"
            );
            assert_eq!(
                s.raft(id).leader(),
                Some(l),
                "seed {seed}: n{id} does not know the leader"
            );
        }
    }
}

/// Raft §5.2: when the leader goes away, the rest elect a new one; when it returns it
/// follows (with CheckQuorum it has stepped down already).
#[test]
fn re_election() {
    for seed in 0..20 {
        let mut s = Sim::new(seed, 3);
        let l1 = s.wait_leader(2_000);
        s.isolate(l1);
        assert!(
            s.run_until(3_000, |s| s.leaders().iter().any(|&l| l != l1)),
            "seed {seed}: no new leader without n{l1}"
        );
        // Dissertation §6.2: the isolated leader steps down on its own.
        assert!(
            s.run_until(3_000, |s| s.raft(l1).role() != Role::Leader),
            "seed {seed}: isolated leader n{l1} never stepped down"
        );
        s.heal();
        s.run_for(1_000);
        assert_eq!(s.leaders().len(), 1, "seed {seed}: one leader after heal");
        s.commit_everywhere(1, 3_000);
    }
}

/// Raft §5.2: without a majority nobody can be elected.
#[test]
fn no_quorum_no_leader() {
    for seed in 0..10 {
        let mut s = Sim::new(seed, 5);
        let l = s.wait_leader(2_000);
        let others: Vec<u64> = (1..=5).filter(|&x| x != l).collect();
        // Leave the leader with one follower: two of five is no majority.
        s.partition(&[vec![l, others[0]], others[1..].to_vec()]);
        s.run_for(500);
        let minority = [l, others[0]];
        s.run_for(3_000);
        for &id in &minority {
            assert_ne!(
                s.raft(id).role(),
                Role::Leader,
                "seed {seed}: n{id} leads a minority"
            );
        }
        // The three others form a majority and do elect.
        assert!(s.leaders().iter().all(|x| others[1..].contains(x)));
        assert_eq!(
            s.leaders().len(),
            1,
            "seed {seed}: majority side elects one leader"
        );
    }
}

/// Raft §5.2 election safety, across many seeds and an unreliable network with partitions:
/// the harness fails on two leaders in one term; here we also require that terms advance.
#[test]
fn one_leader_per_term_many_seeds() {
    for seed in 0..60 {
        let mut s = Sim::new(seed, 5);
        s.net = NetConfig::unreliable();
        for round in 0..6u64 {
            let a = 1 + (seed + round) % 5;
            let b = 1 + (seed + 2 * round + 1) % 5;
            s.partition(&[vec![a, b], (1..=5).filter(|&x| x != a && x != b).collect()]);
            s.run_for(700);
            s.heal();
            s.run_for(300);
        }
        s.wait_leader(5_000);
    }
}

/// Raft §5.3: commands proposed to the leader are applied by everyone, in the same order.
#[test]
fn basic_agreement() {
    let mut s = Sim::new(7, 3);
    s.wait_leader(2_000);
    for c in 1..=20 {
        s.commit_everywhere(c, 2_000);
    }
    let expect: Vec<u64> = (1..=20).collect();
    for id in 1..=3 {
        assert_eq!(
            s.applied(id),
            expect.as_slice(),
            "n{id} applied a different sequence"
        );
    }
}

/// Raft §5.3: a crashed follower does not stop a majority from agreeing, and catches up
/// after it restarts.
#[test]
fn agreement_despite_failed_follower() {
    for seed in 0..10 {
        let mut s = Sim::new(seed, 3);
        let l = s.wait_leader(2_000);
        let f = if l == 1 { 2 } else { 1 };
        s.crash(f);
        for c in 1..=5 {
            s.commit_everywhere(c, 3_000);
        }
        s.restart(f);
        s.commit_everywhere(6, 3_000);
        assert_eq!(
            s.applied(f),
            &[1, 2, 3, 4, 5, 6],
            "seed {seed}: n{f} did not catch up"
        );
    }
}

/// Raft §5.3–5.4: without a majority a proposal does not commit; once the majority is
/// back it does, exactly once.
#[test]
fn no_agreement_without_quorum() {
    for seed in 0..10 {
        let mut s = Sim::new(seed, 5);
        let l = s.wait_leader(2_000);
        s.commit_everywhere(1, 2_000);
        let followers: Vec<u64> = (1..=5).filter(|&x| x != l).collect();
        for &f in &followers[..3] {
            s.crash(f);
        }
        let p = s.propose(l, 2).expect("the leader accepts a proposal");
        s.run_for(2_000);
        assert!(
            s.raft(l).commit_index() < p.index,
            "seed {seed}: committed without a quorum"
        );
        for &f in &followers[..3] {
            s.restart(f);
        }
        s.commit_everywhere(3, 5_000);
        let l2 = s.leader().expect("a leader");
        let applied = s.applied(l2).to_vec();
        assert_eq!(applied.iter().filter(|&&c| c == 3).count(), 1);
        assert!(
            applied.iter().filter(|&&c| c == 2).count() <= 1,
            "seed {seed}: applied twice"
        );
    }
}

/// Raft §5.3: many proposals in flight at once all commit, each once, in one order.
#[test]
fn concurrent_proposals() {
    let mut s = Sim::new(11, 3);
    let l = s.wait_leader(2_000);
    let mut indexes = Vec::new();
    for c in 1..=200 {
        indexes.push(s.propose(l, c).expect("leader accepts").index);
    }
    s.commit_everywhere(1_000, 5_000);
    for id in 1..=3 {
        let a = s.applied(id);
        assert_eq!(a.len(), 201, "n{id} applied {} commands", a.len());
        assert_eq!(&a[..200], (1..=200).collect::<Vec<_>>().as_slice());
    }
    // Pipelining: the leader did not wait for a round trip per entry.
    indexes.dedup();
    assert_eq!(indexes.len(), 200);
}

/// Raft §5.3–5.4.1: a partitioned leader's uncommitted entries are discarded when it
/// rejoins a cluster that moved on; every log converges on the new leader's.
#[test]
fn rejoin_of_partitioned_leader() {
    for seed in 0..10 {
        let mut s = Sim::new(seed, 3);
        let l1 = s.wait_leader(2_000);
        s.commit_everywhere(1, 2_000);
        s.isolate(l1);
        for c in 100..105 {
            let _ = s.propose(l1, c);
        }
        let others: Vec<u64> = (1..=3).filter(|&x| x != l1).collect();
        assert!(s.run_until(3_000, |s| s.leaders().iter().any(|l| others.contains(l))));
        s.commit(2, 3_000);
        s.heal();
        s.commit_everywhere(3, 5_000);
        for id in 1..=3 {
            assert_eq!(
                s.applied(id),
                &[1, 2, 3],
                "seed {seed}: n{id} kept a stale entry"
            );
        }
    }
}

/// Raft §5.3 fast backtracking: a follower with a long conflicting suffix is repaired in a
/// handful of round trips, not one per entry.
#[test]
fn backup_far_behind_follower() {
    let mut s = Sim::new(3, 5);
    let l1 = s.wait_leader(2_000);
    s.commit_everywhere(1, 2_000);
    // Leader and one follower take 50 uncommitted entries in a minority.
    let f1 = (1..=5).find(|&x| x != l1).expect("a follower");
    let rest: Vec<u64> = (1..=5).filter(|&x| x != l1 && x != f1).collect();
    s.partition(&[vec![l1, f1], rest.clone()]);
    for c in 100..150 {
        let _ = s.propose(l1, c);
    }
    s.run_for(200);
    // The majority commits 50 other entries.
    assert!(s.run_until(3_000, |s| s.leaders().iter().any(|l| rest.contains(l))));
    for c in 200..250 {
        s.commit(c, 3_000);
    }
    // Now the old pair rejoins; count messages spent on catching up.
    let before = s.messages_sent;
    s.heal();
    s.commit_everywhere(300, 5_000);
    let spent = s.messages_sent - before;
    assert_eq!(s.applied(f1).len(), 52, "n{f1} did not converge");
    assert!(!s.applied(f1).contains(&120));
    // One probe per conflicting entry would be over 100 messages per follower.
    assert!(spent < 400, "catching up took {spent} messages");
}

/// Raft §5.4.2 and Figure 8: entries of an earlier term are never committed by counting
/// replicas; under an unreliable network with crashing leaders, committed entries survive.
#[test]
fn figure8_unreliable() {
    for seed in 0..15 {
        let mut s = Sim::new(seed, 5);
        s.net = NetConfig::unreliable();
        s.wait_leader(5_000);
        let mut c = 1;
        for _ in 0..40 {
            if let Some(l) = s.leader() {
                let _ = s.propose(l, c);
                c += 1;
            }
            let ms = if s.rng_bool(0.1) { 500 } else { 15 };
            s.run_for(ms);
            if let Some(l) = s.leader() {
                if s.rng_bool(0.5) {
                    s.crash(l);
                }
            }
            let down: Vec<u64> = (1..=5).filter(|&x| !s.is_up(x)).collect();
            if down.len() >= 3 {
                s.restart(down[0]);
            }
        }
        for id in 1..=5 {
            s.restart(id);
        }
        s.net = NetConfig::reliable();
        s.commit_everywhere(10_000, 10_000);
    }
}

/// Unreliable churn: servers crash and restart at random while clients propose; every
/// acknowledged command stays and every server ends with the same sequence.
#[test]
fn unreliable_churn() {
    for seed in 0..10 {
        let mut s = Sim::new(seed, 5);
        s.net = NetConfig::unreliable();
        let mut c = 1;
        for _ in 0..100 {
            if let Some(l) = s.leader() {
                let _ = s.propose(l, c);
                c += 1;
            }
            if s.rng_bool(0.1) {
                let id = s.rng_node(5);
                s.crash(id);
            }
            if s.rng_bool(0.2) {
                let id = s.rng_node(5);
                s.restart(id);
            }
            s.run_for(30);
        }
        for id in 1..=5 {
            s.restart(id);
        }
        s.net = NetConfig::reliable();
        s.commit_everywhere(100_000, 10_000);
        let reference = s.applied(1).to_vec();
        for id in 2..=5 {
            assert_eq!(
                s.applied(id),
                reference.as_slice(),
                "seed {seed}: n{id} diverged"
            );
        }
    }
}

/// Dissertation §4.2.1: a new server joins as a learner (catching up without voting), then
/// is promoted to voter by a second single-server change.
#[test]
fn add_learner_then_promote() {
    let mut s = Sim::new(5, 3);
    let l = s.wait_leader(2_000);
    for c in 1..=10 {
        s.commit_everywhere(c, 2_000);
    }
    s.add_empty_node(4);
    let p = s
        .with_raft(l, |r| r.propose_membership(membership(&[1, 2, 3], &[4])))
        .expect("leader runs")
        .expect("adding a learner is allowed");
    assert!(s.run_until(3_000, |s| s.raft(4).applied_index() >= p.index));
    assert!(!s.raft(4).membership().is_voter(4), "n4 is a learner first");
    assert_eq!(s.applied(4), (1..=10).collect::<Vec<_>>().as_slice());
    // A learner never campaigns, even when it stops hearing from the leader.
    s.isolate(4);
    s.run_for(2_000);
    assert_eq!(
        s.raft(4).term(),
        s.raft(l).term(),
        "a learner must not start elections"
    );
    s.heal();
    let l = s.wait_leader(2_000);
    s.with_raft(l, |r| r.propose_membership(membership(&[1, 2, 3, 4], &[])))
        .expect("leader runs")
        .expect("promotion is a single voter change");
    s.commit_everywhere(11, 3_000);
    assert!(s.raft(4).membership().is_voter(4));
    // Two voters at once is refused (§4.1: one server at a time).
    let l = s.wait_leader(2_000);
    s.add_empty_node(5);
    s.add_empty_node(6);
    let r = s.with_raft(l, |r| {
        r.propose_membership(membership(&[1, 2, 3, 4, 5, 6], &[]))
    });
    assert!(
        matches!(r, Some(Err(RaftError::InvalidConfigChange(_)))),
        "{r:?}"
    );
    // The four voters keep working with one down: quorum is 3 of 4.
    let down = (1..=4).find(|&x| x != l).expect("a follower");
    s.crash(down);
    s.commit_everywhere(12, 3_000);
}

/// Dissertation §4.2.2: removing the leader: it commits the new configuration without
/// counting itself, then steps down, and the rest elect a leader among themselves.
#[test]
fn remove_the_leader() {
    for seed in 0..10 {
        let mut s = Sim::new(seed, 3);
        let l = s.wait_leader(2_000);
        s.commit_everywhere(1, 2_000);
        let rest: Vec<u64> = (1..=3).filter(|&x| x != l).collect();
        s.with_raft(l, |r| r.propose_membership(membership(&rest, &[])))
            .expect("leader runs")
            .expect("removing one voter is allowed");
        assert!(
            s.run_until(3_000, |s| s.leaders().iter().any(|x| rest.contains(x))),
            "seed {seed}: no leader among the remaining voters"
        );
        assert_ne!(
            s.raft(l).role(),
            Role::Leader,
            "seed {seed}: removed leader still leads"
        );
        s.crash(l);
        s.commit_everywhere(2, 3_000);
        for &id in &rest {
            assert!(!s.raft(id).membership().contains(l));
        }
    }
}

/// Dissertation §3.10: leadership transfer with TimeoutNow hands over within about one
/// round trip, and proposals are refused while it is under way.
#[test]
fn leadership_transfer() {
    for seed in 0..10 {
        let mut s = Sim::new(seed, 3);
        let l = s.wait_leader(2_000);
        s.commit_everywhere(1, 2_000);
        let target = (1..=3).find(|&x| x != l).expect("a follower");
        let term = s.raft(l).term();
        s.with_raft(l, |r| r.transfer_leader(target))
            .expect("runs")
            .expect("accepted");
        // Before anything is delivered, the old leader refuses proposals.
        assert_eq!(s.propose(l, 99), Err(RaftError::TransferInProgress));
        assert!(
            s.run_until(200, |s| s.leaders() == vec![target]),
            "seed {seed}: transfer to n{target} did not happen within 200 ms"
        );
        assert_eq!(s.raft(target).term(), term + 1);
        s.commit_everywhere(2, 2_000);
    }
}

/// Dissertation §6.4: ReadIndex. A leader cut off from the majority never serves a read
/// (it cannot confirm its leadership); the new leader does. The harness checks that every
/// served read sees every write committed before it began.
#[test]
fn read_index_under_partition() {
    for seed in 0..10 {
        let mut s = Sim::new(seed, 5);
        let l1 = s.wait_leader(2_000);
        s.commit_everywhere(1, 2_000);
        let ok = s.read(l1).expect("leader accepts a read");
        let served = s.reads_served;
        s.run_for(200);
        assert_eq!(
            s.reads_served,
            served + 1,
            "seed {seed}: read {ok} not served"
        );
        // Cut the leader off with one follower.
        let f = (1..=5).find(|&x| x != l1).expect("follower");
        let rest: Vec<u64> = (1..=5).filter(|&x| x != l1 && x != f).collect();
        s.partition(&[vec![l1, f], rest.clone()]);
        let stale = s.read(l1).expect("it still believes it leads");
        assert!(s.run_until(3_000, |s| s.leaders().iter().any(|x| rest.contains(x))));
        s.commit(2, 3_000);
        let l2 = s
            .leaders()
            .into_iter()
            .find(|x| rest.contains(x))
            .expect("new leader");
        s.read(l2).expect("new leader accepts a read");
        s.run_for(1_000);
        assert_eq!(
            s.reads_served,
            served + 2,
            "seed {seed}: only the new leader's read serves"
        );
        assert!(
            s.reads_failed >= 1,
            "seed {seed}: read {stale} was neither served nor failed"
        );
        assert!(matches!(s.read(l1), Err(RaftError::NotLeader { .. })));
    }
}

/// Dissertation §9.6: with PreVote a server that was partitioned away does not raise its
/// term, so on its return it does not depose the leader.
#[test]
fn prevote_rejoin_does_not_disrupt() {
    for seed in 0..10 {
        let mut s = Sim::new(seed, 3);
        let l = s.wait_leader(2_000);
        let f = (1..=3).find(|&x| x != l).expect("follower");
        let term = s.raft(l).term();
        s.isolate(f);
        s.run_for(3_000);
        assert_eq!(
            s.raft(f).term(),
            term,
            "seed {seed}: isolated n{f} raised its term"
        );
        s.heal();
        s.run_for(1_000);
        assert_eq!(
            s.leaders(),
            vec![l],
            "seed {seed}: the returning server disrupted the leader"
        );
        assert_eq!(s.raft(l).term(), term);
    }
}

/// Raft §7: a follower that missed entries the leader already compacted gets a snapshot.
#[test]
fn snapshot_catches_up_a_lagging_follower() {
    for seed in 0..5 {
        let mut s = Sim::new(seed, 3);
        let l = s.wait_leader(2_000);
        let f = (1..=3).find(|&x| x != l).expect("follower");
        s.crash(f);
        for c in 1..=30 {
            s.commit_everywhere(c, 2_000);
        }
        let l = s.wait_leader(2_000);
        s.compact(l);
        assert!(s.raft(l).log().snapshot_index() > 1);
        // AppendEntries sent to it before the compaction are lost while it is down, not
        // delivered after its restart (they would catch it up without a snapshot).
        s.run_for(100);
        s.restart(f);
        s.commit_everywhere(31, 5_000);
        assert_eq!(
            s.applied(f),
            (1..=31).collect::<Vec<_>>().as_slice(),
            "seed {seed}"
        );
        assert!(
            s.raft(f).log().snapshot_index() > 1,
            "seed {seed}: n{f} caught up without a snapshot"
        );
    }
}

/// Dissertation §6.3 relies on this: duplicated and reordered AppendEntries never make a
/// follower drop entries it acknowledged.
#[test]
fn duplicates_and_reordering_lose_nothing() {
    for seed in 0..10 {
        let mut s = Sim::new(seed, 3);
        s.net = NetConfig {
            drop: 0.0,
            duplicate: 0.5,
            min_delay: 1,
            max_delay: 60,
        };
        s.wait_leader(3_000);
        for c in 1..=30 {
            if let Some(l) = s.leader() {
                let _ = s.propose(l, c);
            }
            s.run_for(5);
        }
        s.commit_everywhere(100, 5_000);
        let reference = s.applied(1).to_vec();
        for id in 2..=3 {
            assert_eq!(s.applied(id), reference.as_slice(), "seed {seed}");
        }
    }
}

/// Raft §5.4.2, Figure 8, scripted: a leader that has replicated an entry of an earlier
/// term to a majority must not count it committed, because a server holding a later-term
/// entry at that index can still win an election and overwrite it. With the rule broken,
/// the harness sees a committed entry overwritten (state machine safety) or a leader
/// without it (leader completeness).
#[test]
fn figure8_previous_term_entry_is_not_committed_by_counting() {
    for seed in 0..20 {
        figure8_script(seed);
    }
}

fn figure8_script(seed: u64) {
    let mut cfg = Config::new(0);
    // One entry per message, so followers can hold the old entry without the new noop.
    cfg.max_msg_bytes = 1;
    let mut s = Sim::with_config(seed, 5, cfg);
    let leader_in = |s: &Sim, group: &[u64]| s.leaders().into_iter().find(|l| group.contains(l));
    s.wait_leader(2_000);
    s.commit_everywhere(1, 2_000);
    let a = s.leader().expect("leader");
    let b = (1..=5).find(|&x| x != a).expect("b");
    let rest: Vec<u64> = (1..=5).filter(|&x| x != a && x != b).collect();
    // (a) A leads and replicates entry `old` to B only.
    s.partition(&[vec![a, b], rest.clone()]);
    let old = s.propose(a, 2).expect("A leads");
    assert!(s.run_until(500, |s| s.raft(b).last_index() >= old.index));
    // (b) X wins a later term among the rest, takes an entry at the same index, and is cut
    // off before anyone else gets it.
    s.crash(a);
    assert!(
        s.run_until(3_000, |s| leader_in(s, &rest).is_some()),
        "seed {seed}: (b)"
    );
    let x = leader_in(&s, &rest).expect("X");
    s.isolate(x);
    let _ = s.propose(x, 3);
    let x_term = s.raft(x).term();
    assert_eq!(s.raft(x).log().term(old.index), Some(x_term), "seed {seed}");
    let yz: Vec<u64> = rest.iter().copied().filter(|&id| id != x).collect();
    // (c) A returns; A or B wins a later term and replicates the old entry to Y and Z, so a
    // majority (A, B, Y, Z) holds it.
    s.restart(a);
    s.partition(&[vec![a, b, yz[0], yz[1]], vec![x]]);
    assert!(
        s.run_until(3_000, |s| leader_in(s, &[a, b]).is_some()),
        "seed {seed}: (c)"
    );
    let l = leader_in(&s, &[a, b]).expect("A or B");
    // Stop the moment L counts the old entry committed, or once Y and Z also hold L's own
    // entry (then X can no longer win and the scenario is moot).
    let decided = |s: &Sim| {
        s.raft(l).commit_index() >= old.index
            || yz.iter().all(|&id| s.raft(id).last_index() > old.index)
    };
    assert!(
        s.run_until(1_000, decided),
        "seed {seed}: old entry did not spread"
    );
    // (d) That leader fails before its own-term entry spreads; X comes back and can win.
    s.isolate(l);
    s.crash(l);
    let others: Vec<u64> = (1..=5).filter(|&id| id != l).collect();
    s.partition(&[others.clone(), vec![l]]);
    s.run_until(5_000, |s| leader_in(s, &others).is_some());
    s.restart(l);
    s.heal();
    s.commit_everywhere(4, 5_000);
}

/// §4.2.2 with §3.10: a leader that removes itself hands leadership over with TimeoutNow
/// once the removal commits, so the cluster does not sit leaderless for an election
/// timeout. In simulated time: a remaining voter leads well before the shortest election
/// timeout (100 ms) could have fired.
#[test]
fn a_leader_that_removes_itself_hands_over_at_once() {
    for seed in 0..10 {
        let mut s = Sim::new(seed, 3);
        let l = s.wait_leader(2_000);
        s.commit_everywhere(1, 2_000);
        let rest: Vec<u64> = (1..=3).filter(|&x| x != l).collect();
        let term = s.raft(l).term();
        s.with_raft(l, |r| r.propose_membership(membership(&rest, &[])))
            .expect("leader runs")
            .expect("removing one voter is allowed");
        assert!(
            s.run_until(60, |s| s.leaders().iter().any(|x| rest.contains(x))),
            "seed {seed}: no remaining voter leads 60 ms after the removal was proposed\n{}",
            s.dump()
        );
        let new = s.leader().expect("a leader");
        assert_eq!(s.raft(new).term(), term + 1, "seed {seed}: one election");
    }
}

/// Dissertation §4.2.1: only a learner that answers and holds every committed entry is
/// promoted. One whose address is unreachable must stay a learner however young the log,
/// or it becomes a voter that can never help commit.
#[test]
fn an_unreachable_learner_is_never_promotable() {
    let mut s = Sim::new(7, 3);
    let l = s.wait_leader(2_000);
    s.commit_everywhere(1, 2_000);
    s.add_empty_node(4);
    s.isolate(4);
    let p = s
        .with_raft(l, |r| r.propose_membership(membership(&[1, 2, 3], &[4])))
        .expect("leader runs")
        .expect("adding a learner is allowed");
    assert!(s.run_until(2_000, |s| s.raft(l).commit_index() >= p.index));
    s.run_for(2_000);
    assert_eq!(s.raft(l).last_index(), p.index, "the log is young");
    assert_eq!(s.raft(l).promotable_learner(), None);
    s.heal();
    assert!(
        s.run_until(3_000, |s| s.raft(l).promotable_learner() == Some(4)),
        "once it answers and holds the committed log, n4 may vote\n{}",
        s.dump()
    );
}

/// Proposals and reads that arrive within one turn of the leader's loop go out as one
/// message per peer: one AppendEntries carries every proposal, one heartbeat round
/// confirms every read. (Sent one per request, they had cost the leader most of its CPU.)
#[test]
fn one_turn_of_requests_is_one_message_per_peer() {
    for seed in 0..5 {
        let mut s = Sim::new(seed, 3);
        let l = s.wait_leader(2_000);
        s.commit_everywhere(1, 2_000);
        let sent = s.messages_sent;
        s.with_raft(l, |r| {
            for c in 2..=51 {
                r.propose(cmd(c)).expect("leader");
            }
        });
        assert_eq!(s.messages_sent - sent, 2, "seed {seed}: 50 proposals");
        let all: Vec<u64> = (1..=51).collect();
        assert!(
            s.run_until(2_000, |s| (1..=3).all(|n| s.applied(n) == all.as_slice())),
            "seed {seed}: the 50 proposals applied everywhere"
        );

        let sent = s.messages_sent;
        s.read_many(l, 50).expect("leader");
        assert_eq!(s.messages_sent - sent, 2, "seed {seed}: 50 reads");
        let served = s.reads_served;
        s.run_for(200);
        assert_eq!(s.reads_served - served, 50, "seed {seed}: reads released");
    }
}
