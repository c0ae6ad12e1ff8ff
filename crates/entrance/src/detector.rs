//! The failure detector: a `Probe` to every member each round, and from the replies each
//! member's health, the leader and term, and the configuration.
//!
//! A member is `up` if it answered within two probe intervals, `down` once it has been
//! silent for `--down-after-ms` (counted from when the entrance started watching it, if it
//! never answered), `suspect` in between. The leader is the member claiming leadership with
//! the highest term among those not down; a new leader's unsolicited reply (nonce 0) makes it
//! the leader at once.
//!
//! With `--auto-remove-after-ms`, a member down that long is removed only if the leader's
//! own progress says it does not hear it either, and the voters the leader hears are still a
//! quorum of the configuration without it: a node cut off from the entrance alone is a
//! working voter, and removing it while another voter is really down would stall the
//! cluster.

use crate::server::{Change, Core, Dest, EntranceEvent};
use myraft_wire::envelope::SenderId;
use myraft_wire::health::{Health, Probe, ProbeReply, Role};
use myraft_wire::raft::{Member, NodeId};
use myraft_wire::Body;
use std::collections::BTreeMap;
use std::time::Instant;
use tracing::{debug, info, warn};

/// Nonces remembered per member: a reply to an older probe is stale news.
const NONCES_KEPT: usize = 4;

impl Core {
    pub(crate) fn on_tick(&mut self) {
        let now = Instant::now();
        self.update_health(now);
        self.review_leader();
        self.send_probes();
        self.expire_admission(now);
        let relay_timeout = self.config.relay_timeout;
        self.relays
            .retain(|_, relay| now.duration_since(relay.since) < relay_timeout);
        self.maybe_auto_remove(now);
        self.start_changes();
    }

    fn health_at(&self, tracker: &crate::server::Tracker, now: Instant) -> Health {
        let up_window = self.config.probe_interval * 2;
        if tracker
            .last_contact
            .is_some_and(|at| now.duration_since(at) <= up_window)
        {
            return Health::Up;
        }
        let silent = now.duration_since(tracker.last_contact.unwrap_or(tracker.since));
        if silent >= self.config.down_after {
            Health::Down
        } else {
            Health::Suspect
        }
    }

    fn set_health(&mut self, id: u64, health: Health) {
        let Some(tracker) = self.trackers.get_mut(&id) else {
            return;
        };
        if tracker.health == health {
            return;
        }
        tracker.health = health;
        let name = self.peer_ref(id).name;
        match health {
            Health::Up => info!(%name, "{name} is up"),
            Health::Suspect => info!(%name, "{name} is suspect: missed its last probes"),
            Health::Down => warn!(%name, "{name} is down"),
        }
        self.emit(EntranceEvent::Health { id, name, health });
    }

    fn update_health(&mut self, now: Instant) {
        let verdicts: Vec<(u64, Health)> = self
            .trackers
            .iter()
            .map(|(id, t)| (*id, self.health_at(t, now)))
            .collect();
        for (id, health) in verdicts {
            self.set_health(id, health);
        }
    }

    /// Drops a leader that went down and picks the strongest fresh claim.
    fn review_leader(&mut self) {
        let term = self.state.term;
        if let Some(leader) = self.state.leader {
            if self
                .trackers
                .get(&leader)
                .is_none_or(|t| t.health == Health::Down)
            {
                self.set_leader(None, term);
            }
        }
        let best = self
            .trackers
            .iter()
            .filter(|(_, t)| t.health != Health::Down)
            .filter_map(|(id, t)| t.reply.as_ref().map(|r| (*id, r)))
            .filter(|(_, r)| r.role == Role::Leader && r.term >= term)
            .max_by_key(|(_, r)| r.term)
            .map(|(id, r)| (id, r.term));
        if let Some((id, term)) = best {
            self.set_leader(Some(id), term);
        }
    }

    fn send_probes(&mut self) {
        for member in self.state.members.values() {
            let Some(tracker) = self.trackers.get_mut(&member.id) else {
                continue;
            };
            let mut nonce = 0;
            while nonce == 0 {
                nonce = rand::random();
            }
            if tracker.nonces.len() == NONCES_KEPT {
                tracker.nonces.pop_front();
            }
            tracker.nonces.push_back(nonce);
            self.outbox.push((
                Dest::Addr(member.addr.clone()),
                Body::Probe(Probe { nonce }),
            ));
        }
    }

    pub(crate) fn on_probe_reply(&mut self, from: SenderId, reply: ProbeReply) {
        let now = Instant::now();
        let id = reply.id;
        if from != id {
            self.net.count_drop("sender_mismatch");
            debug!(from, id, "probe reply about another node than its sender");
            return;
        }
        let Some(tracker) = self.trackers.get_mut(&id) else {
            self.net.count_drop("not_a_member");
            debug!(name = %reply.name, "probe reply from a node that is not a member");
            return;
        };
        if reply.nonce != 0 && !tracker.nonces.contains(&reply.nonce) {
            self.net.count_drop("stale_probe_reply");
            return;
        }
        tracker.last_contact = Some(now);
        let (role, term) = (reply.role, reply.term);
        let membership = reply.membership.members.clone();
        tracker.reply = Some(reply);
        self.set_health(id, Health::Up);

        if role == Role::Leader && term >= self.state.term {
            self.set_leader(Some(id), term);
        } else if self.state.leader == Some(id) && role != Role::Leader {
            self.set_leader(None, term.max(self.state.term));
        } else if term > self.state.term {
            // A member in a later term than the leader's: an election is under way (with
            // PreVote a term moves only once a majority stopped hearing the leader), so
            // there is no leader until one claims the new term.
            self.set_leader(None, term);
        }

        // Raft keeps the configuration; the leader's latest is the one to follow.
        if self.state.leader == Some(id)
            && !membership.is_empty()
            && membership != self.state.members
        {
            info!(
                members = membership.len(),
                "configuration from the leader: {}",
                membership
                    .values()
                    .map(|m| format!("{}{}", m.name, if m.voter { "" } else { " (learner)" }))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.state.members = membership;
            self.dirty = true;
            self.sync_trackers();
        }
    }

    /// With `--auto-remove-after-ms`: removes one member that has been down that long, if
    /// the leader does not hear it either and the members it hears remain a quorum (see
    /// [`may_auto_remove`]).
    fn maybe_auto_remove(&mut self, now: Instant) {
        let Some(after) = self.config.auto_remove_after else {
            return;
        };
        if self.in_flight.is_some() || !self.changes.is_empty() {
            return;
        }
        let Some(view) = self.leader_view() else {
            return;
        };
        let candidate = self.state.members.values().find(|m| {
            let Some(t) = self.trackers.get(&m.id) else {
                return false;
            };
            let silent = now.duration_since(t.last_contact.unwrap_or(t.since));
            t.health == Health::Down
                && silent >= after
                && may_auto_remove(&self.state.members, m.id, &view)
        });
        if let Some(name) = candidate.map(|m| m.name.clone()) {
            warn!(
                %name,
                "{name} has been down for longer than --auto-remove-after-ms and the leader \
                 does not hear it either; removing it"
            );
            self.changes
                .push_back(Change::Remove { name, origin: None });
        }
    }

    /// The leader's account of whom it hears, from its latest reply; none while the leader
    /// misses probes, since its account is then as old as that reply.
    fn leader_view(&self) -> Option<LeaderView<'_>> {
        let leader = self.state.leader?;
        let reply = self
            .trackers
            .get(&leader)
            .filter(|t| t.health == Health::Up)?
            .reply
            .as_ref()
            .filter(|r| r.role == Role::Leader)?;
        Some(LeaderView {
            leader,
            since_heard_ms: &reply.since_heard_ms,
            out_of_contact_ms: u64::try_from(self.config.down_after.as_millis())
                .unwrap_or(u64::MAX),
        })
    }
}

/// Whom the leader hears, by its own replication progress. The entrance reaches each member
/// by its own path, so a member silent to the entrance may still be a working voter.
struct LeaderView<'a> {
    leader: NodeId,
    /// From the leader's `ProbeReply`. A member missing from it is neither heard nor known
    /// to be silent: a leader too old to report has no say, so it never agrees.
    since_heard_ms: &'a BTreeMap<NodeId, u64>,
    /// Silence after which the leader counts as out of contact with a member: the same
    /// `--down-after-ms` the entrance applies to its own probes.
    out_of_contact_ms: u64,
}

impl LeaderView<'_> {
    fn hears(&self, id: NodeId) -> bool {
        id == self.leader
            || self
                .since_heard_ms
                .get(&id)
                .is_some_and(|ms| *ms < self.out_of_contact_ms)
    }

    fn lost_contact(&self, id: NodeId) -> bool {
        id != self.leader
            && self
                .since_heard_ms
                .get(&id)
                .is_some_and(|ms| *ms >= self.out_of_contact_ms)
    }
}

/// Whether the entrance may take `removing` out of the configuration `members` on its own:
/// the leader must not hear it either, and the voters of the configuration without it that
/// the leader hears (itself included) must be a quorum of that configuration, so the cluster
/// can still commit after the removal. On top of that the configuration keeps at least a
/// quorum of its current voters ([`removal_keeps_quorum`]).
fn may_auto_remove(
    members: &BTreeMap<NodeId, Member>,
    removing: NodeId,
    view: &LeaderView<'_>,
) -> bool {
    let Some(member) = members.get(&removing) else {
        return false;
    };
    if !view.lost_contact(removing) {
        return false;
    }
    let voters = members.values().filter(|m| m.voter).count();
    if !removal_keeps_quorum(voters, member.voter) {
        return false;
    }
    let (left, live) = members
        .values()
        .filter(|m| m.voter && m.id != removing)
        .fold((0, 0), |(left, live), m| {
            (left + 1, live + usize::from(view.hears(m.id)))
        });
    live > left / 2
}

/// Whether removing one member (a voter or not) from a configuration of `voters` voters
/// leaves at least a quorum of the current configuration as voters: removing the dead is
/// meant to restore a safety margin, never to shrink the cluster below what it can lose.
fn removal_keeps_quorum(voters: usize, removing_voter: bool) -> bool {
    let quorum = voters / 2 + 1;
    let left = if removing_voter {
        voters.saturating_sub(1)
    } else {
        voters
    };
    left >= quorum
}

#[cfg(test)]
mod tests {
    use super::{may_auto_remove, removal_keeps_quorum, LeaderView};
    use myraft_wire::raft::{Member, NodeId};
    use std::collections::BTreeMap;

    /// Voters and learners by id; `n1` (id 1) leads.
    fn members(voters: &[NodeId], learners: &[NodeId]) -> BTreeMap<NodeId, Member> {
        let member = |id: NodeId, voter: bool| Member {
            id,
            name: format!("n{id}"),
            addr: format!("127.0.0.1:{}", 7000 + id),
            voter,
        };
        voters
            .iter()
            .map(|&id| (id, member(id, true)))
            .chain(learners.iter().map(|&id| (id, member(id, false))))
            .collect()
    }

    /// Which members the rule lets go, given how long ago the leader heard each one.
    fn removable(members: &BTreeMap<NodeId, Member>, heard: &[(NodeId, u64)]) -> Vec<NodeId> {
        let since_heard_ms: BTreeMap<NodeId, u64> = heard.iter().copied().collect();
        let view = LeaderView {
            leader: 1,
            since_heard_ms: &since_heard_ms,
            out_of_contact_ms: 1500,
        };
        members
            .keys()
            .copied()
            .filter(|&id| may_auto_remove(members, id, &view))
            .collect()
    }

    #[test]
    fn a_member_the_leader_hears_is_never_removed() {
        let three = members(&[1, 2, 3], &[]);
        assert_eq!(removable(&three, &[(2, 100), (3, u64::MAX)]), [3]);
        assert_eq!(removable(&three, &[(2, 1499), (3, 1500)]), [3]);
        assert_eq!(removable(&three, &[(2, 0), (3, 0)]), [] as [NodeId; 0]);
    }

    #[test]
    fn removal_needs_a_live_quorum_of_the_configuration_left() {
        let five = members(&[1, 2, 3, 4, 5], &[]);
        let two_down = [(2, 0), (3, 0), (4, u64::MAX), (5, 9_000)];
        assert_eq!(removable(&five, &two_down), [4, 5]);
        // n1 and n2 alone are no quorum of four: the cluster cannot commit the removal,
        // and would not be live after it.
        let three_down = [(2, 0), (3, u64::MAX), (4, u64::MAX), (5, u64::MAX)];
        assert_eq!(removable(&five, &three_down), [] as [NodeId; 0]);
        // Both down, one at a time: after n4, n5 leaves n1, n2, n3 live of three.
        let four = members(&[1, 2, 3, 5], &[]);
        assert_eq!(removable(&four, &[(2, 0), (3, 0), (5, u64::MAX)]), [5]);
    }

    #[test]
    fn without_the_leaders_word_nobody_is_removed() {
        // A leader that does not report whom it hears (an older node) never agrees.
        let three = members(&[1, 2, 3], &[4]);
        assert_eq!(removable(&three, &[]), [] as [NodeId; 0]);
        assert_eq!(removable(&three, &[(2, 0), (4, u64::MAX)]), [4]);
        assert_eq!(removable(&three, &[(3, 0), (4, 0)]), [] as [NodeId; 0]);
    }

    #[test]
    fn the_leader_and_the_last_voters_stay() {
        let two = members(&[1, 2], &[3]);
        // Never the leader, whatever it says of itself; a learner may go.
        assert_eq!(
            removable(&two, &[(1, u64::MAX), (2, 0), (3, u64::MAX)]),
            [3]
        );
        // Never down to one voter; nor anyone while n1 alone is no quorum of two.
        let silent = [(1, u64::MAX), (2, u64::MAX), (3, u64::MAX)];
        assert_eq!(removable(&two, &silent), [] as [NodeId; 0]);
    }

    #[test]
    fn auto_removal_never_leaves_fewer_voters_than_a_quorum() {
        // (voters, removing a voter) → allowed
        let cases = [
            (1, true, false),
            (2, true, false),
            (3, true, true),
            (4, true, true),
            (5, true, true),
            (2, false, true),
            (1, false, true),
        ];
        for (voters, voter, allowed) in cases {
            assert_eq!(
                removal_keeps_quorum(voters, voter),
                allowed,
                "{voters} voters, removing a voter: {voter}"
            );
        }
    }
}
