//! The failure detector: a `Probe` to every member each round, and from the replies each
//! member's health, the leader and term, and the configuration.
//!
//! A member is `up` if it answered within two probe intervals, `down` once it has been
//! silent for `--down-after-ms` (counted from when the entrance started watching it, if it
//! never answered), `suspect` in between. The leader is the member claiming leadership with
//! the highest term among those not down; a new leader's unsolicited reply (nonce 0) makes it
//! the leader at once.

use crate::server::{Change, Core, Dest, EntranceEvent};
use myraft_wire::envelope::SenderId;
use myraft_wire::health::{Health, Probe, ProbeReply, Role};
use myraft_wire::Body;
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
            self.set_leader(self.state.leader, term);
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

    /// With `--auto-remove-after-ms`: removes one member that has been down that long, if the
    /// voters left still form a quorum of the current configuration.
    fn maybe_auto_remove(&mut self, now: Instant) {
        let Some(after) = self.config.auto_remove_after else {
            return;
        };
        if self.in_flight.is_some() || !self.changes.is_empty() || self.state.leader.is_none() {
            return;
        }
        let voters = self.state.members.values().filter(|m| m.voter).count();
        let candidate = self.state.members.values().find(|m| {
            let Some(t) = self.trackers.get(&m.id) else {
                return false;
            };
            let silent = now.duration_since(t.last_contact.unwrap_or(t.since));
            t.health == Health::Down
                && silent >= after
                && Some(m.id) != self.state.leader
                && removal_keeps_quorum(voters, m.voter)
        });
        if let Some(member) = candidate {
            warn!(
                name = %member.name,
                "{} has been down for longer than --auto-remove-after-ms; removing it",
                member.name
            );
            self.changes.push_back(Change::Remove {
                name: member.name.clone(),
                origin: None,
            });
        }
    }
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
    use super::removal_keeps_quorum;

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
