//! The Raft consensus core. Pure and deterministic: no tokio, no clock, no socket, no file.
//!
//! Inputs are [`Raft::step`] (a message from a peer), [`Raft::tick`] (one unit of logical
//! time), [`Raft::propose`], [`Raft::propose_membership`], [`Raft::read_index`] and
//! [`Raft::transfer_leader`]. Outputs are collected in a [`Ready`] (raft-rs style): state to
//! persist, messages to send, committed entries to apply and reads that may be served.
//!
//! The driver's loop is always the same:
//!
//! 1. `let rd = raft.ready();`
//! 2. persist `rd.snapshot`, `rd.entries` (written over any stored suffix from the first
//!    one's index) and `rd.hard_state`, and make them durable (fsync);
//! 3. send `rd.messages`;
//! 4. `raft.advance();` — and nothing else may be stepped between 1 and 4;
//! 5. apply `rd.committed` in order and serve `rd.reads` once applied reaches their index.
//!
//! `rd.committed` holds only entries already durable here (persisted by an earlier `Ready`),
//! so a driver may start applying them before step 2, overlapping the apply with the fsync.
//!
//! A leader's `Ready` (no snapshot, no new term or vote) may instead end with
//! [`Raft::advance_written`] once its entries are written but not yet synced, and the driver
//! reports the flush later with [`Raft::persisted`] (etcd raft's asynchronous storage
//! writes): the leader goes on counting its followers' acknowledgements while its own disk
//! is busy, and counts itself once the report comes.
//!
//! A leader writes its messages to peers when the driver asks for a `Ready`, not when a
//! proposal, a commit or a read comes in: everything since the last `Ready` goes out as one
//! AppendEntries (or one heartbeat) per peer, which carries the new entries, the commit
//! index and the open ReadIndex round at once. A driver that steps a batch of client
//! requests before calling `ready` sends a message per peer per batch, not per request.
//!
//! Module map, by role (openraft's handler split):
//! - [`log`]: the in-memory log, commit/apply cursors and what still needs persisting;
//! - `election`: term rules, votes, PreVote and campaigning (§5.2, dissertation §9.6);
//! - `follower`: AppendEntries, InstallSnapshot and TimeoutNow on the receiving side;
//! - `leader`: replication, commit, heartbeats, CheckQuorum, ReadIndex, transfer, membership;
//! - [`progress`]: the leader's per-peer replication state.

mod election;
mod follower;
mod leader;
pub mod log;
pub mod progress;

use myraft_wire::raft::{
    Entry, EntryPayload, HardState, Index, Membership, NodeId, RaftBody, RaftMessage, Snapshot,
    SnapshotMeta, Term,
};
use rand::rngs::StdRng;
use rand::RngExt;
use std::collections::{BTreeMap, VecDeque};

pub use log::RaftLog;
pub use progress::{Progress, ProgressState};

/// Tuning of one Raft server. Times are in ticks; the driver decides how long a tick is.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: NodeId,
    /// The base election timeout; each timeout is drawn from `[election_ticks, 2 × election_ticks)`.
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    /// Dissertation §9.6: ask before disrupting the cluster with a new term.
    pub pre_vote: bool,
    /// Dissertation §6.2: a leader that cannot hear a quorum steps down, and servers that hear
    /// a leader ignore vote requests.
    pub check_quorum: bool,
    /// Cap on the entry bytes in one AppendEntries.
    pub max_msg_bytes: usize,
    /// Cap on AppendEntries in flight to one peer while streaming.
    pub max_inflight: usize,
    /// Cap on the entry bytes handed out for applying in one `Ready`.
    pub max_apply_bytes: usize,
}

impl Config {
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            max_msg_bytes: 32 * 1024,
            max_inflight: 64,
            max_apply_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What a server recovered from stable storage.
#[derive(Debug, Clone, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot, in order.
    pub entries: Vec<Entry>,
    /// How far the state machine already holds the log (it may be ahead of the snapshot:
    /// the state store keeps its own applied index). Committed entries up to here are not
    /// handed out for applying again.
    pub applied: Index,
}

impl InitialState {
    /// The state of a server that founds a new cluster with `membership`: one configuration
    /// entry at index 1, committed by construction, identical on every founding member.
    pub fn bootstrap(membership: Membership) -> Self {
        InitialState {
            hard_state: HardState {
                term: 0,
                vote: None,
                commit: 1,
            },
            snapshot: None,
            entries: vec![Entry {
                term: 0,
                index: 1,
                payload: EntryPayload::Config(membership),
            }],
            applied: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// A linearizable read that may be served once the state machine has applied `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Index,
}

/// Where a proposal landed. It is committed if the entry applied at `index` has `term`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub index: Index,
    pub term: Term,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
    #[error("a membership change is still pending")]
    ConfigChangePending,
    #[error("invalid membership change: {0}")]
    InvalidConfigChange(String),
    #[error("invalid snapshot request: {0}")]
    InvalidSnapshot(String),
}

/// Everything the driver must do after a batch of inputs.
#[derive(Debug, Default)]
pub struct Ready {
    /// Persist before sending any message.
    pub hard_state: Option<HardState>,
    /// Persist before sending any message; storage drops any suffix from `entries[0].index`.
    pub entries: Vec<Entry>,
    /// Received from the leader: persist it and restore the state machine from it. Stored
    /// log entries up to its index go; so does the whole stored log unless it holds the
    /// snapshot's last entry (same index and term).
    pub snapshot: Option<Snapshot>,
    pub messages: Vec<RaftMessage>,
    /// Apply in order. Already durable on this server, so applying need not wait for this
    /// Ready's own writes.
    pub committed: Vec<Entry>,
    pub reads: Vec<ReadState>,
    /// Reads this server can no longer serve (it lost leadership): answer "not leader".
    pub failed_reads: Vec<u64>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.snapshot.is_none()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.failed_reads.is_empty()
    }
}

/// Messages a leader owes its peers, gathered until the next Ready.
#[derive(Debug, Default, Clone, Copy)]
struct Deferred {
    /// New entries to replicate.
    entries: bool,
    /// A commit index the followers have not been told.
    commit: bool,
    /// A ReadIndex round whose heartbeats are not out yet.
    read_round: bool,
}

impl Deferred {
    fn any(&self) -> bool {
        self.entries || self.commit || self.read_round
    }
}

#[derive(Debug, Clone)]
struct PendingRead {
    ctx: u64,
    index: Index,
    round: u64,
}

pub struct Raft {
    cfg: Config,
    rng: StdRng,

    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    /// The voter a leader removed from the configuration sent `TimeoutNow` to, with the
    /// term it led: the best guess at the next leader for clients still asking here.
    handed_to: Option<(Term, NodeId)>,
    log: RaftLog,

    /// The latest configuration in the log (dissertation §4.1: used as soon as appended).
    membership: Membership,
    membership_index: Index,
    /// The configuration the snapshot stands on, for when the log holds none.
    snapshot_membership: Membership,
    snapshot: Option<Snapshot>,

    election_elapsed: u32,
    randomized_timeout: u32,
    heartbeat_elapsed: u32,

    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    /// Index of the leader's first entry of its term; reads wait until it commits (§6.4).
    term_start: Index,
    lead_transferee: Option<NodeId>,

    read_round: u64,
    pending_reads: VecDeque<PendingRead>,
    reads_awaiting_term_commit: Vec<u64>,
    /// What the leader has to tell its peers, sent once per Ready however many proposals,
    /// commits and reads came in since the last: a message per peer per Ready rather than
    /// per request.
    deferred: Deferred,

    // Output collected for the next Ready.
    msgs: Vec<RaftMessage>,
    reads: Vec<ReadState>,
    failed_reads: Vec<u64>,
    pending_snapshot: Option<Snapshot>,
    last_hard_state: HardState,
    in_ready: Option<Index>,
}

impl Raft {
    pub fn new(cfg: Config, init: InitialState, rng: StdRng) -> Self {
        let meta = init
            .snapshot
            .as_ref()
            .map(|s| s.meta.clone())
            .unwrap_or_default();
        // The commit index is volatile state (Raft, Figure 2): the driver writes it with the
        // log but syncs it only with entries or a term or vote, so after a crash it may be
        // behind what the state store applied, and everything applied was committed.
        let commit = init.hard_state.commit.max(init.applied);
        let mut log = RaftLog::new(&meta, init.entries, commit);
        log.applied = log.applied.max(init.applied.min(log.commit));
        let mut r = Raft {
            cfg,
            rng,
            term: init.hard_state.term,
            vote: init.hard_state.vote,
            role: Role::Follower,
            leader: None,
            handed_to: None,
            log,
            membership: meta.membership.clone(),
            membership_index: meta.last_index,
            snapshot_membership: meta.membership,
            snapshot: init.snapshot,
            election_elapsed: 0,
            randomized_timeout: 0,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            term_start: 0,
            lead_transferee: None,
            read_round: 0,
            deferred: Deferred::default(),
            pending_reads: VecDeque::new(),
            reads_awaiting_term_commit: Vec::new(),
            msgs: Vec::new(),
            reads: Vec::new(),
            failed_reads: Vec::new(),
            pending_snapshot: None,
            last_hard_state: init.hard_state,
            in_ready: None,
        };
        r.last_hard_state = r.hard_state();
        r.refresh_membership();
        r.reset_election_timer();
        r
    }

    // ---- accessors -------------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// Whom this server, as a leader removed from the configuration, handed leadership to
    /// in the current term, while no leader of a later term is known here.
    pub fn handed_to(&self) -> Option<NodeId> {
        match self.handed_to {
            Some((term, to)) if term == self.term && self.leader.is_none() => Some(to),
            _ => None,
        }
    }
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    pub fn commit_index(&self) -> Index {
        self.log.commit
    }
    pub fn applied_index(&self) -> Index {
        self.log.applied
    }
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    /// Index of the latest configuration entry (the snapshot's index if the log holds none).
    pub fn membership_index(&self) -> Index {
        self.membership_index
    }
    /// Whether the latest configuration in the log is committed.
    pub fn membership_committed(&self) -> bool {
        self.membership_index <= self.log.commit
    }
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.lead_transferee
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }

    // ---- inputs ----------------------------------------------------------------------

    /// One unit of logical time.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Handles one message from a peer. Messages for another server are ignored.
    pub fn step(&mut self, m: RaftMessage) {
        if m.to != self.cfg.id || m.from == self.cfg.id {
            return;
        }
        if !self.step_term(&m) {
            return;
        }
        match m.body {
            RaftBody::RequestVote(rv) => self.on_request_vote(m.from, m.term, rv),
            RaftBody::RequestVoteResponse(r) => self.on_vote_response(m.from, m.term, r),
            RaftBody::AppendEntries(ae) => self.on_append_entries(m.from, ae),
            RaftBody::AppendEntriesResponse(r) => self.on_append_response(m.from, r),
            RaftBody::InstallSnapshot(is) => self.on_install_snapshot(m.from, is),
            RaftBody::InstallSnapshotResponse(r) => self.on_snapshot_response(m.from, r),
            RaftBody::TimeoutNow(_) => self.on_timeout_now(m.from),
        }
    }

    /// Appends an application command; only a leader accepts one.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Proposal, RaftError> {
        self.check_can_propose()?;
        Ok(self.append_own(EntryPayload::Command(data)))
    }

    /// Starts a linearizable read (§6.4). `ctx` comes back in a [`ReadState`] once the read
    /// may be served, or in `failed_reads` if leadership is lost first.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if self.log.term(self.log.commit) != Some(self.term) {
            // Until an entry of our term commits, our commit index may be behind what
            // earlier leaders committed.
            self.reads_awaiting_term_commit.push(ctx);
        } else {
            self.start_read(ctx);
        }
        Ok(())
    }

    /// Starts an election now, as if the election timer had fired, if this server is a
    /// voter and not already leading.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader && self.membership.is_voter(self.cfg.id) {
            self.start_election(false);
        }
    }

    /// The driver took a snapshot of the state machine at `index` (at most the applied
    /// index): the log up to there can go.
    pub fn compact(&mut self, index: Index, data: Vec<u8>) -> Result<Snapshot, RaftError> {
        if index > self.log.applied {
            return Err(RaftError::InvalidSnapshot(format!(
                "index {index} is beyond the applied index {}",
                self.log.applied
            )));
        }
        if index <= self.log.snapshot_index() {
            return Err(RaftError::InvalidSnapshot(format!(
                "index {index} is not past the current snapshot at {}",
                self.log.snapshot_index()
            )));
        }
        let term = self
            .log
            .term(index)
            .ok_or_else(|| RaftError::InvalidSnapshot(format!("no entry at index {index}")))?;
        let meta = SnapshotMeta {
            last_index: index,
            last_term: term,
            membership: self.membership_at(index),
        };
        self.log.compact(index);
        self.snapshot_membership = meta.membership.clone();
        let snap = Snapshot { meta, data };
        self.snapshot = Some(snap.clone());
        Ok(snap)
    }

    // ---- output ----------------------------------------------------------------------

    pub fn has_ready(&self) -> bool {
        self.deferred.any()
            || !self.msgs.is_empty()
            || self.log.has_unstable()
            || self.log.has_committed()
            || self.hard_state() != self.last_hard_state
            || self.pending_snapshot.is_some()
            || !self.reads.is_empty()
            || !self.failed_reads.is_empty()
    }

    pub fn ready(&mut self) -> Ready {
        self.send_deferred();
        let hs = self.hard_state();
        let hard_state = (hs != self.last_hard_state).then_some(hs);
        self.last_hard_state = hs;
        let entries = self.log.take_unstable();
        self.in_ready = Some(self.log.last_index());
        let max_apply = self.cfg.max_apply_bytes;
        Ready {
            hard_state,
            entries,
            snapshot: self.pending_snapshot.take(),
            messages: std::mem::take(&mut self.msgs),
            committed: self.log.take_committed(max_apply),
            reads: std::mem::take(&mut self.reads),
            failed_reads: std::mem::take(&mut self.failed_reads),
        }
    }

    /// A leader's last [`Ready`] is written and its messages are sent, but its entries are
    /// still on their way to the disk: the driver flushes them off its loop and reports
    /// with [`Raft::persisted`]. Until then the leader does not count itself for them, nor
    /// hand them out for applying. Returns the index that report will be for. Only a leader
    /// may defer, and only for a `Ready` without a snapshot or a new term or vote: anything
    /// that answers a peer must be durable before it is sent, which [`Raft::advance`] is for.
    pub fn advance_written(&mut self) -> Index {
        debug_assert!(
            self.role == Role::Leader,
            "only a leader defers its log sync"
        );
        self.in_ready.take().unwrap_or(self.log.persisted)
    }

    /// Entries through `index`, written while leading in `term`, are durable. A report from
    /// an earlier term, or from before this node stopped leading, is ignored: the log may
    /// since have been cut and rewritten at those indexes, and whatever stood in between was
    /// synced by a [`Raft::advance`] anyway.
    pub fn persisted(&mut self, term: Term, index: Index) {
        if self.role != Role::Leader || term != self.term || index > self.log.last_index() {
            return;
        }
        if index > self.log.persisted {
            self.log.persisted = index;
            self.maybe_commit();
        }
    }

    /// The last [`Ready`]'s state is durable and its messages are sent.
    pub fn advance(&mut self) {
        if let Some(last) = self.in_ready.take() {
            if last > self.log.persisted {
                self.log.persisted = last;
                if self.role == Role::Leader {
                    // The leader counts itself only for entries on its own disk.
                    self.maybe_commit();
                }
            }
        }
    }

    // ---- shared helpers ----------------------------------------------------------------

    fn send(&mut self, to: NodeId, body: RaftBody) {
        self.send_with_term(to, self.term, body);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, body: RaftBody) {
        self.msgs.push(RaftMessage {
            from: self.cfg.id,
            to,
            term,
            body,
        });
    }

    fn quorum(&self) -> usize {
        self.membership.voter_count() / 2 + 1
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let e = self.cfg.election_ticks.max(1);
        self.randomized_timeout = self.rng.random_range(e..2 * e);
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            self.abandon_leadership();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer();
    }

    /// The membership in force at `index`: the latest configuration entry at or before it.
    fn membership_at(&self, index: Index) -> Membership {
        self.log
            .entries()
            .iter()
            .rev()
            .filter(|e| e.index <= index)
            .find_map(|e| match &e.payload {
                EntryPayload::Config(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| self.snapshot_membership.clone())
    }

    /// Recomputes the configuration after the log changed (append, truncation, snapshot).
    fn refresh_membership(&mut self) {
        let (idx, m) = match self.log.latest_membership() {
            Some((i, m)) => (i, m.clone()),
            None => (self.log.snapshot_index(), self.snapshot_membership.clone()),
        };
        if idx != self.membership_index || m != self.membership {
            self.membership_index = idx;
            self.membership = m;
            if self.role == Role::Leader {
                self.sync_progress();
            }
        }
    }
}
