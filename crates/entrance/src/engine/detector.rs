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

use super::{Change, Engine, EntranceEvent, SendTo};
use myraft_wire::envelope::SenderId;
use myraft_wire::health::{Health, Probe, ProbeReply, Role};
use myraft_wire::raft::{Member, NodeId};
use myraft_wire::Body;
use rand::RngExt;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Nonces remembered per member: a reply to an older probe is stale news.
const NONCES_KEPT: usize = 4;
/// A member is up while its last answer is at most this many probe intervals old.
const UP_WITHIN_PROBES: u32 = 2;

/// Per member, what the failure detector knows.
#[derive(Debug)]
struct Tracker {
    /// When the entrance started watching this member; "never answered" counts from here.
    since: Instant,
    last_contact: Option<Instant>,
    reply: Option<ProbeReply>,
    /// Nonces of the last few probes, so that only answers to recent probes count.
    nonces: VecDeque<u64>,
    health: Health,
}

impl Tracker {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            last_contact: None,
            reply: None,
            nonces: VecDeque::new(),
            // Unknown until it answers or stays silent long enough to be called down.
            health: Health::Suspect,
        }
    }

    /// How long it has been silent (since it was first watched, if it never answered).
    fn silent_for(&self, now: Instant) -> Duration {
        now.duration_since(self.last_contact.unwrap_or(self.since))
    }
}

/// Why a probe reply was not taken: the reason it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyRefused {
    /// The reply is about another node than the one that sent it.
    SenderMismatch,
    /// The sender is not a member.
    NotAMember,
    /// It answers a probe older than the last few.
    Stale,
}

impl ReplyRefused {
    /// The drop counter's name.
    pub fn reason(self) -> &'static str {
        match self {
            ReplyRefused::SenderMismatch => "sender_mismatch",
            ReplyRefused::NotAMember => "not_a_member",
            ReplyRefused::Stale => "stale_probe_reply",
        }
    }
}

/// The failure detector's state: one tracker per member, private to it.
#[derive(Debug)]
pub struct Detector {
    trackers: BTreeMap<NodeId, Tracker>,
    probe_interval: Duration,
    down_after: Duration,
}

impl Detector {
    /// Probes every `probe_interval` (on average); silent for `down_after` is down.
    pub fn new(probe_interval: Duration, down_after: Duration) -> Detector {
        Detector {
            trackers: BTreeMap::new(),
            probe_interval,
            down_after,
        }
    }

    /// Watches exactly `members`: new ones from `now`, removed ones forgotten.
    pub fn watch(&mut self, members: &BTreeMap<NodeId, Member>, now: Instant) {
        self.trackers.retain(|id, _| members.contains_key(id));
        for id in members.keys() {
            self.trackers
                .entry(*id)
                .or_insert_with(|| Tracker::new(now));
        }
    }

    /// A member's health; `None` for a node not watched.
    pub fn health(&self, id: NodeId) -> Option<Health> {
        self.trackers.get(&id).map(|t| t.health)
    }

    /// A member's latest probe reply.
    pub fn reply(&self, id: NodeId) -> Option<&ProbeReply> {
        self.trackers.get(&id).and_then(|t| t.reply.as_ref())
    }

    /// Every member's latest reply, with its health.
    pub fn replies(&self) -> impl Iterator<Item = (NodeId, Health, &ProbeReply)> {
        self.trackers
            .iter()
            .filter_map(|(id, t)| t.reply.as_ref().map(|r| (*id, t.health, r)))
    }

    /// When a member last answered.
    pub fn last_contact(&self, id: NodeId) -> Option<Instant> {
        self.trackers.get(&id).and_then(|t| t.last_contact)
    }

    /// How long a watched member has been silent.
    pub fn silent_for(&self, id: NodeId, now: Instant) -> Option<Duration> {
        self.trackers.get(&id).map(|t| t.silent_for(now))
    }

    fn health_at(&self, tracker: &Tracker, now: Instant) -> Health {
        let up_window = self.probe_interval * UP_WITHIN_PROBES;
        if tracker
            .last_contact
            .is_some_and(|at| now.duration_since(at) <= up_window)
        {
            return Health::Up;
        }
        if tracker.silent_for(now) >= self.down_after {
            Health::Down
        } else {
            Health::Suspect
        }
    }

    /// The health every member has at `now`: those that changed, and are now recorded so.
    pub fn review(&mut self, now: Instant) -> Vec<(NodeId, Health)> {
        let verdicts: Vec<(NodeId, Health)> = self
            .trackers
            .iter()
            .map(|(id, t)| (*id, self.health_at(t, now)))
            .filter(|(id, h)| self.trackers.get(id).is_some_and(|t| t.health != *h))
            .collect();
        for (id, health) in &verdicts {
            if let Some(t) = self.trackers.get_mut(id) {
                t.health = *health;
            }
        }
        verdicts
    }

    /// A new probe nonce for member `id` (never 0, which stands for "unsolicited").
    pub fn next_nonce(&mut self, id: NodeId, rng: &mut impl RngExt) -> Option<u64> {
        let tracker = self.trackers.get_mut(&id)?;
        let mut nonce = 0;
        while nonce == 0 {
            nonce = rng.random();
        }
        if tracker.nonces.len() == NONCES_KEPT {
            tracker.nonces.pop_front();
        }
        tracker.nonces.push_back(nonce);
        Some(nonce)
    }

    /// Takes a reply to one of the recent probes (or an unsolicited one, nonce 0): the
    /// member is up. Returns whether its health changed to up.
    pub fn on_reply(
        &mut self,
        from: SenderId,
        reply: ProbeReply,
        now: Instant,
    ) -> Result<bool, ReplyRefused> {
        if from != reply.id {
            return Err(ReplyRefused::SenderMismatch);
        }
        let tracker = self
            .trackers
            .get_mut(&reply.id)
            .ok_or(ReplyRefused::NotAMember)?;
        if reply.nonce != 0 && !tracker.nonces.contains(&reply.nonce) {
            return Err(ReplyRefused::Stale);
        }
        tracker.last_contact = Some(now);
        tracker.reply = Some(reply);
        let changed = tracker.health != Health::Up;
        tracker.health = Health::Up;
        Ok(changed)
    }
}

impl Engine {
    /// A probe round: health, the leader, probes out, forgetting, auto-removal, and the
    /// next configuration change if one waits.
    pub(super) fn on_tick(&mut self) {
        let now = self.now.at;
        for (id, health) in self.detector.review(now) {
            self.health_changed(id, health);
        }
        self.review_leader();
        self.send_probes();
        self.expire_admission(now);
        self.router.expire(now);
        self.maybe_auto_remove(now);
        self.start_changes();
    }

    fn health_changed(&mut self, id: NodeId, health: Health) {
        let name = self.peer_ref(id).name;
        match health {
            Health::Up => info!(%name, "{name} is up"),
            Health::Suspect => info!(%name, "{name} is suspect: missed its last probes"),
            Health::Down => warn!(%name, "{name} is down"),
        }
        self.emit(EntranceEvent::Health { id, name, health });
    }

    /// Drops a leader that went down and picks the strongest fresh claim.
    fn review_leader(&mut self) {
        let term = self.state.term;
        if let Some(leader) = self.state.leader {
            if self
                .detector
                .health(leader)
                .is_none_or(|h| h == Health::Down)
            {
                self.set_leader(None, term);
            }
        }
        let best = self
            .detector
            .replies()
            .filter(|(_, health, _)| *health != Health::Down)
            .filter(|(_, _, r)| r.role == Role::Leader && r.stats.term >= term)
            .max_by_key(|(_, _, r)| r.stats.term)
            .map(|(id, _, r)| (id, r.stats.term));
        if let Some((id, term)) = best {
            self.set_leader(Some(id), term);
        }
    }

    fn send_probes(&mut self) {
        let members: Vec<(NodeId, String)> = self
            .state
            .members
            .values()
            .map(|m| (m.id, m.addr.clone()))
            .collect();
        for (id, addr) in members {
            if let Some(nonce) = self.detector.next_nonce(id, &mut self.rng) {
                self.send(SendTo::Addr(addr), Body::Probe(Probe { nonce }));
            }
        }
    }

    pub(super) fn on_probe_reply(&mut self, from: SenderId, reply: ProbeReply) {
        let id = reply.id;
        let (role, term) = (reply.role, reply.stats.term);
        let membership = reply.membership.members.clone();
        let name = reply.name.clone();
        match self.detector.on_reply(from, reply, self.now.at) {
            Ok(true) => self.health_changed(id, Health::Up),
            Ok(false) => {}
            Err(refused) => {
                self.dropped(refused.reason());
                debug!(from, id, %name, "probe reply refused: {refused:?}");
                return;
            }
        }

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
        if self.admission.busy() {
            return;
        }
        let Some(view) = self.leader_view() else {
            return;
        };
        let candidate = self.state.members.values().find(|m| {
            self.detector.health(m.id) == Some(Health::Down)
                && self
                    .detector
                    .silent_for(m.id, now)
                    .is_some_and(|s| s >= after)
                && may_auto_remove(&self.state.members, m.id, &view)
        });
        if let Some(name) = candidate.map(|m| m.name.clone()) {
            warn!(
                %name,
                "{name} has been down for longer than --auto-remove-after-ms and the leader \
                 does not hear it either; removing it"
            );
            self.admission.queue(Change::Remove { name, origin: None });
        }
    }

    /// The leader's account of whom it hears, from its latest reply; none while the leader
    /// misses probes, since its account is then as old as that reply.
    fn leader_view(&self) -> Option<LeaderView<'_>> {
        let leader = self.state.leader?;
        if !self.is_up(leader) {
            return None;
        }
        let reply = self
            .detector
            .reply(leader)
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
