//! What a node says about itself: its role, probe replies for the entrance, node details.

use super::*;
use myraft_wire::health::{NodeStats, StoreStats, Transfer};

impl Node {
    pub fn role(&self) -> Role {
        match self.raft.role() {
            RaftRole::Leader => Role::Leader,
            RaftRole::Candidate | RaftRole::PreCandidate => Role::Candidate,
            RaftRole::Follower if !self.raft.membership().is_voter(self.raft.id()) => Role::Learner,
            RaftRole::Follower => Role::Follower,
        }
    }

    pub(super) fn peer_ref(&self, id: Option<NodeId>) -> Option<PeerRef> {
        let id = id?;
        let name = self
            .raft
            .membership()
            .members
            .get(&id)
            .map_or_else(|| format!("{id:x}"), |m| m.name.clone());
        Some(PeerRef { id, name })
    }

    pub(super) fn probe_reply(&self, nonce: u64) -> ProbeReply {
        ProbeReply {
            nonce,
            id: self.raft.id(),
            name: self.cfg.name.clone(),
            role: self.role(),
            voted_for: self.raft.vote(),
            stats: self.node_stats(),
            membership: self.raft.membership().clone(),
            since_heard_ms: self.since_heard_ms(),
        }
    }

    fn node_stats(&self) -> NodeStats {
        NodeStats {
            term: self.raft.term(),
            leader: self.peer_ref(self.raft.leader()),
            commit_index: self.raft.commit_index(),
            applied_index: self.store.applied_index,
            last_log_index: self.raft.last_index(),
            snapshot_index: self.raft.log().snapshot_index(),
            log_bytes: self.storage.log_bytes(),
            data_dir_bytes: self.data_dir_bytes,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            dropped_datagrams: self.transport.dropped_total(),
            store: self.store_stats(),
        }
    }

    pub(super) fn store_stats(&self) -> StoreStats {
        let tick_ms = u64::try_from(self.cfg.timing.tick.as_millis()).unwrap_or(u64::MAX);
        let transfers = self
            .snapshots
            .progress()
            .into_iter()
            .map(|p| Transfer {
                peer: self
                    .peer_ref(Some(p.peer))
                    .map_or_else(String::new, |r| r.name),
                sending: p.sending,
                snapshot_index: p.snapshot_index,
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total_estimate,
                elapsed_ms: u64::from(p.elapsed_ticks).saturating_mul(tick_ms),
                resumed_after_revision: p.after_revision,
            })
            .collect();
        StoreStats {
            store_bytes: self.store.store_bytes,
            revision: self.store.revision,
            compacted_revision: self.store.compacted_before,
            keys: self.store.live_keys,
            apply_lag: self.apply_lag(),
            transfers,
        }
    }

    /// The leader's own view of whom it hears, from its replication progress: the entrance
    /// may be cut off from a member the leader still reaches.
    pub(super) fn since_heard_ms(&self) -> BTreeMap<NodeId, u64> {
        if self.raft.role() != RaftRole::Leader {
            return BTreeMap::new();
        }
        let tick_ms = u64::try_from(self.cfg.timing.tick.as_millis()).unwrap_or(u64::MAX);
        self.raft
            .membership()
            .members
            .keys()
            .filter_map(|&id| {
                let ticks = self.raft.progress(id)?.ticks_since_heard;
                let ms = if ticks == u32::MAX {
                    u64::MAX
                } else {
                    u64::from(ticks).saturating_mul(tick_ms)
                };
                Some((id, ms))
            })
            .collect()
    }

    pub(super) fn node_detail(&self) -> NodeDetail {
        NodeDetail {
            id: self.raft.id(),
            name: self.cfg.name.clone(),
            addr: self.advertise.clone(),
            role: self.role(),
            voter: self.raft.membership().is_voter(self.raft.id()),
            health: Health::Up,
            voted_for: self.peer_ref(self.raft.vote()),
            stats: self.node_stats(),
        }
    }
}
