//! The leader's view of one peer's replication (raft-rs `Progress`, simplified).

use myraft_wire::raft::Index;
use std::collections::VecDeque;

/// How a leader replicates to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// We do not know where the peer's log matches ours: one AppendEntries at a time.
    Probe,
    /// The peer follows us: stream AppendEntries back to back, up to the in-flight cap.
    Replicate,
    /// The peer needs a snapshot; we sent one and wait for its answer.
    Snapshot,
}

/// A leader's record of one peer, from the leader's election on. `match_index < next_index`
/// always.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The highest index known to be on the peer's log (0 until it answers); counted for
    /// commit (voters only).
    pub match_index: Index,
    /// The next index to send the peer.
    pub next_index: Index,
    /// How the leader sends to the peer.
    pub state: ProgressState,
    /// Last index of each AppendEntries in flight, oldest first.
    pub inflight: VecDeque<Index>,
    /// In Probe: a message is out and we wait for its answer or the next heartbeat.
    pub probe_sent: bool,
    /// Heard from this peer since the last CheckQuorum round (dissertation §6.2).
    pub recent_active: bool,
    /// Leader ticks since this peer last answered: what "recently in contact" means to the
    /// leader, for promoting learners and for an operator's view of who is reachable.
    pub ticks_since_heard: u32,
    /// Whether the match index moved since the previous heartbeat: a streaming peer whose
    /// match stands still with entries in flight has lost some and falls back to probing.
    pub acked_since_heartbeat: bool,
    /// The highest ReadIndex heartbeat round this peer answered (§6.4).
    pub read_round: u64,
    /// Ticks since a snapshot was sent, to resend one that was lost.
    pub snapshot_elapsed: u32,
}

impl Progress {
    /// A peer not heard from yet: probe it from `next_index` (the leader's last index + 1).
    pub fn new(next_index: Index) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            probe_sent: false,
            recent_active: false,
            // Never heard yet: as old as it gets.
            ticks_since_heard: u32::MAX,
            acked_since_heartbeat: false,
            read_round: 0,
            snapshot_elapsed: 0,
        }
    }

    /// Back to one message at a time from just past the match; what was in flight is
    /// forgotten.
    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
        self.probe_sent = false;
    }

    /// Streams from just past the match; entered once a probe succeeds.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
        self.probe_sent = false;
    }

    /// A snapshot is on its way: nothing else goes to the peer until it answers or the
    /// snapshot is given up as lost.
    pub fn become_snapshot(&mut self) {
        self.state = ProgressState::Snapshot;
        self.inflight.clear();
        self.snapshot_elapsed = 0;
    }

    /// Records a successful answer; returns whether the match index moved.
    pub fn on_success(&mut self, match_index: Index) -> bool {
        let moved = match_index > self.match_index;
        if moved {
            self.match_index = match_index;
            // Only progress counts: heartbeat answers keep coming when entries are lost.
            self.acked_since_heartbeat = true;
        }
        if self.next_index <= match_index {
            self.next_index = match_index + 1;
        }
        while self.inflight.front().is_some_and(|&i| i <= match_index) {
            self.inflight.pop_front();
        }
        moved
    }

    /// Whether another AppendEntries may go out now; `max_inflight` caps a streaming peer.
    pub fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => self.inflight.len() < max_inflight,
            ProgressState::Snapshot => false,
        }
    }

    /// Records an AppendEntries ending at `last_index`: a probe is out, or, when streaming,
    /// the next index moves past it and it counts as in flight.
    pub fn on_sent(&mut self, last_index: Index) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if last_index >= self.next_index {
                    self.next_index = last_index + 1;
                    self.inflight.push_back(last_index);
                }
            }
            ProgressState::Snapshot => {}
        }
    }
}
