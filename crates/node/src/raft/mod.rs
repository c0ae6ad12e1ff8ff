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

#![warn(missing_docs)]

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

/// Default base election timeout: five default heartbeat intervals, so a follower waits out
/// a few lost heartbeats before it campaigns.
const DEFAULT_ELECTION_TICKS: u32 = 10;
/// Default interval between a leader's heartbeats.
const DEFAULT_HEARTBEAT_TICKS: u32 = 2;
/// Default cap on the entry bytes in one AppendEntries.
const DEFAULT_MAX_MSG_BYTES: usize = 32 * 1024;
/// Default cap on AppendEntries in flight to one streaming peer.
const DEFAULT_MAX_INFLIGHT: usize = 64;
/// Default cap on the entry bytes handed out for applying in one `Ready`.
const DEFAULT_MAX_APPLY_BYTES: usize = 4 * 1024 * 1024;

/// Tuning of one Raft server. Times are in ticks; the driver decides how long a tick is.
#[derive(Debug, Clone)]
pub struct Config {
    /// This server's id: [`Raft::step`] ignores messages addressed to any other, and the
    /// server votes for and counts itself under it.
    pub id: NodeId,
    /// The base election timeout; each timeout is drawn from
    /// `[election_ticks, 2 × election_ticks)`. A leader also uses it as its CheckQuorum
    /// period, and a follower that heard a leader within it ignores vote requests (with
    /// `check_quorum`).
    pub election_ticks: u32,
    /// How often a leader sends heartbeats to peers with nothing new to receive. Must stay
    /// below `election_ticks`, or followers time out between two heartbeats.
    pub heartbeat_ticks: u32,
    /// Dissertation §9.6: ask before disrupting the cluster with a new term.
    pub pre_vote: bool,
    /// Dissertation §6.2: a leader that cannot hear a quorum steps down, and servers that hear
    /// a leader ignore vote requests.
    pub check_quorum: bool,
    /// Cap on the entry bytes (as estimated by [`log::entry_size`]) in one AppendEntries. An
    /// entry larger than the cap still goes, alone.
    pub max_msg_bytes: usize,
    /// Cap on AppendEntries in flight to one peer while streaming (a probing peer gets one
    /// at a time).
    pub max_inflight: usize,
    /// Cap on the entry bytes handed out for applying in one `Ready`. An entry larger than
    /// the cap is still handed out, alone.
    pub max_apply_bytes: usize,
}

impl Config {
    /// The defaults for server `id`: election timeout 10 ticks, heartbeat every 2, PreVote
    /// and CheckQuorum on, 32 KiB per AppendEntries, 64 in flight per peer, 4 MiB to apply
    /// per `Ready`.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_ticks: DEFAULT_ELECTION_TICKS,
            heartbeat_ticks: DEFAULT_HEARTBEAT_TICKS,
            pre_vote: true,
            check_quorum: true,
            max_msg_bytes: DEFAULT_MAX_MSG_BYTES,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_apply_bytes: DEFAULT_MAX_APPLY_BYTES,
        }
    }

    /// Refuses a configuration the core cannot run with; the first rule broken is reported.
    /// The byte caps take any value: a message or a `Ready` always carries at least one
    /// entry, so even 0 only means one entry at a time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError::ZeroHeartbeatTicks);
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election_ticks: self.election_ticks,
                heartbeat_ticks: self.heartbeat_ticks,
            });
        }
        if self.election_ticks > MAX_ELECTION_TICKS {
            return Err(ConfigError::ElectionTicksTooLarge {
                election_ticks: self.election_ticks,
            });
        }
        if self.max_inflight == 0 {
            return Err(ConfigError::ZeroMaxInflight);
        }
        Ok(())
    }
}

/// The largest `election_ticks`: timeouts are drawn below twice it, which must fit a `u32`.
pub const MAX_ELECTION_TICKS: u32 = u32::MAX / 2;

/// The highest term a message may carry. No cluster gets near it (2^63 elections); a
/// message beyond it is broken or hostile, and adopting its term would let the next
/// election's `term + 1` overflow and wrap the term back to 0, where this server could vote
/// a second time. Such a message is dropped.
pub const MAX_TERM: Term = u64::MAX / 2;

/// The highest log index a message may name, for the same reason: the core computes
/// `index + 1` (the next entry, the first after a snapshot), which must not wrap.
pub const MAX_INDEX: Index = u64::MAX / 2;

/// Whether `m` could come from a correct server: every term and index one a real cluster
/// can reach, no term in it after the message's own, and an AppendEntries' entries numbered
/// on from `prev_log_index` with terms that never go back (a correct leader's log). The
/// core places entries by position, so entries numbered otherwise would be stored under
/// the wrong index.
fn plausible(m: &RaftMessage) -> bool {
    let term = |t: Term| t <= MAX_TERM;
    let index = |i: Index| i <= MAX_INDEX;
    let entry = |e: &Entry| term(e.term) && index(e.index);
    term(m.term)
        && match &m.body {
            RaftBody::RequestVote(rv) => index(rv.last_log_index) && rv.last_log_term <= m.term,
            RaftBody::RequestVoteResponse(_) | RaftBody::TimeoutNow(_) => true,
            RaftBody::AppendEntries(ae) => {
                let numbered = ae.entries.iter().enumerate().all(|(k, e)| {
                    let k = u64::try_from(k).unwrap_or(u64::MAX);
                    ae.prev_log_index
                        .checked_add(k)
                        .and_then(|i| i.checked_add(1))
                        == Some(e.index)
                });
                let terms_rise = std::iter::once(ae.prev_log_term)
                    .chain(ae.entries.iter().map(|e| e.term))
                    .try_fold(0, |last, t| (t >= last && t <= m.term).then_some(t))
                    .is_some();
                index(ae.prev_log_index)
                    && index(ae.leader_commit)
                    && ae.entries.iter().all(entry)
                    && numbered
                    && terms_rise
            }
            RaftBody::AppendEntriesResponse(r) => {
                index(r.match_index)
                    && index(r.prev_log_index)
                    && index(r.conflict_index)
                    && r.conflict_term.is_none_or(term)
            }
            RaftBody::InstallSnapshot(is) => {
                index(is.snapshot.meta.last_index) && is.snapshot.meta.last_term <= m.term
            }
            RaftBody::InstallSnapshotResponse(r) => index(r.last_index),
        }
}

/// A [`Config`] the core cannot run with, from [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A leader counts heartbeat intervals to resend a lost snapshot; with none it would
    /// wait forever.
    #[error("heartbeat_ticks is 0; set it to at least 1")]
    ZeroHeartbeatTicks,
    /// Followers would time out and campaign between two heartbeats of a healthy leader, and
    /// the leader's CheckQuorum period would pass without an answer to count.
    #[error(
        "election_ticks ({election_ticks}) must be above heartbeat_ticks ({heartbeat_ticks}); \
         raise election_ticks to several heartbeats"
    )]
    ElectionNotAboveHeartbeat {
        /// The configured base election timeout.
        election_ticks: u32,
        /// The configured heartbeat interval.
        heartbeat_ticks: u32,
    },
    /// Election timeouts are drawn from `[election_ticks, 2 × election_ticks)` in a `u32`.
    #[error("election_ticks ({election_ticks}) is above {max}; lower it", max = MAX_ELECTION_TICKS)]
    ElectionTicksTooLarge {
        /// The configured base election timeout.
        election_ticks: u32,
    },
    /// A follower past its first probe is streamed to; with no message allowed in flight it
    /// would never receive another entry.
    #[error("max_inflight is 0; set it to at least 1")]
    ZeroMaxInflight,
}

/// What a server recovered from stable storage.
#[derive(Debug, Clone, Default)]
pub struct InitialState {
    /// The last hard state written. Its commit index may lag the true one (it is synced
    /// only with entries or a term or vote); `applied` makes up for that.
    pub hard_state: HardState,
    /// The latest snapshot kept, if the log was ever compacted or a snapshot installed.
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

/// A server's part in the current term (§5.1, PreVote from dissertation §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Answers leaders and candidates; campaigns when its election timer fires.
    Follower,
    /// Asks whether it could win the next term before entering it; its term is unchanged.
    PreCandidate,
    /// Has entered a new term, voted for itself and waits for a quorum of votes.
    Candidate,
    /// Accepts proposals and reads and replicates its log to the other members.
    Leader,
}

impl Role {
    /// A lower-case name for logs and status output, e.g. `"pre-candidate"`.
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
    /// The token the driver passed to [`Raft::read_index`].
    pub ctx: u64,
    /// The commit index when the read started: serve it once the state machine has
    /// applied this far.
    pub index: Index,
}

/// Where a proposal landed. It is committed if the entry applied at `index` has `term`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    /// The log index the entry was appended at.
    pub index: Index,
    /// The leader's term when it appended the entry. Another entry at `index` means the
    /// proposal was overwritten by a later leader and will never apply.
    pub term: Term,
}

/// Why the core refused a request from the driver. None of these changes any state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// Only a leader takes proposals, reads and transfers.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader of the current term if this server knows it, for redirecting.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is under way: proposals wait until it completes or an election
    /// timeout gives it up.
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
    /// The last configuration change, or an entry of the leader's own term, has not
    /// committed yet; only one change may be in flight at a time (§4.1).
    #[error("a membership change is still pending")]
    ConfigChangePending,
    /// The proposed configuration is not a single-voter step from the current one, leaves
    /// no voter or files a member under another id; or a transfer names a non-voter.
    #[error("invalid membership change: {0}")]
    InvalidConfigChange(String),
    /// [`Raft::compact`] was asked for an index it cannot snapshot at.
    #[error("invalid snapshot request: {0}")]
    InvalidSnapshot(String),
}

/// Everything the driver must do after a batch of inputs, in the order of the module docs:
/// persist, send, [`Raft::advance`], apply. Nothing may be stepped into the core between
/// [`Raft::ready`] and its `advance`.
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
    /// Send once the above is durable, in any order; the core tolerates loss, duplication
    /// and reordering.
    pub messages: Vec<RaftMessage>,
    /// Apply in order. Already durable on this server, so applying need not wait for this
    /// Ready's own writes.
    pub committed: Vec<Entry>,
    /// Reads confirmed by a quorum: serve each once the state machine has applied its index.
    pub reads: Vec<ReadState>,
    /// Reads this server can no longer serve (it lost leadership): answer "not leader".
    pub failed_reads: Vec<u64>,
}

impl Ready {
    /// Whether there is nothing to persist, send, apply or answer.
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

/// One Raft server's consensus state. Its owner drives it with the inputs and the
/// [`Raft::ready`] / [`Raft::advance`] loop of the module docs; it does no I/O itself.
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
    /// Restores a server from what storage recovered. It starts as a follower that knows no
    /// leader; `rng` draws its election timeouts, so a seeded one makes it deterministic.
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

    /// This server's id, [`Config::id`].
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    /// The tuning the server was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The current role; it changes only inside an input method.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The current term, as the next [`Ready::hard_state`] will persist it.
    pub fn term(&self) -> Term {
        self.term
    }
    /// Whom this server voted for in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    /// The leader of the current term as far as this server knows: `None` during an
    /// election, after stepping down, or in a newer term whose leader it has not heard.
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
    /// Whether this server leads its current term. A deposed leader may not know yet: serve
    /// linearizable reads through [`Raft::read_index`], not on the strength of this.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
    /// The in-memory log and its cursors.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    /// The highest index known committed; it may be ahead of what is durable or applied.
    pub fn commit_index(&self) -> Index {
        self.log.commit
    }
    /// The highest index handed out for applying in some [`Ready::committed`] (or already
    /// applied at start); the driver may still be applying up to it.
    pub fn applied_index(&self) -> Index {
        self.log.applied
    }
    /// The index of the last entry in the log, or of the snapshot if none follows it.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    /// The configuration in force: the latest in the log, committed or not (§4.1).
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
    /// A leader's replication state for member `id`; `None` on a non-leader, for this
    /// server itself and for non-members.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }
    /// The voter a leadership transfer is under way to; proposals are refused meanwhile.
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.lead_transferee
    }
    /// Term, vote and commit index as they stand now, persisted or not.
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

    /// Handles one message from a peer. Messages for another server, and messages with a
    /// term beyond [`MAX_TERM`] or an index beyond [`MAX_INDEX`] anywhere in them, are
    /// ignored.
    pub fn step(&mut self, m: RaftMessage) {
        if m.to != self.cfg.id || m.from == self.cfg.id || !plausible(&m) {
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

    /// Whether [`Raft::ready`] may have work for the driver. Cheap; a driver polls it after
    /// each batch of inputs. The `Ready` may still turn out empty.
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

    /// Hands out everything gathered since the last `Ready`, and the messages a leader owes
    /// its peers. Must be followed by [`Raft::advance`] (or, for a leader,
    /// [`Raft::advance_written`]) before the next input.
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn with(f: impl FnOnce(&mut Config)) -> Result<(), ConfigError> {
        let mut cfg = Config::new(1);
        f(&mut cfg);
        cfg.validate()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Config::new(1).validate(), Ok(()));
    }

    #[test]
    fn a_zero_heartbeat_interval_is_refused() {
        assert_eq!(
            with(|c| c.heartbeat_ticks = 0),
            Err(ConfigError::ZeroHeartbeatTicks)
        );
    }

    #[test]
    fn an_election_timeout_not_above_the_heartbeat_interval_is_refused() {
        for election_ticks in [0, 1, 2] {
            assert_eq!(
                with(|c| {
                    c.election_ticks = election_ticks;
                    c.heartbeat_ticks = 2;
                }),
                Err(ConfigError::ElectionNotAboveHeartbeat {
                    election_ticks,
                    heartbeat_ticks: 2
                })
            );
        }
        assert_eq!(with(|c| c.election_ticks = 3), Ok(()));
    }

    #[test]
    fn an_election_timeout_whose_double_overflows_is_refused() {
        let cfg = |election_ticks| {
            let mut c = Config::new(1);
            c.election_ticks = election_ticks;
            c
        };
        assert_eq!(
            cfg(MAX_ELECTION_TICKS + 1).validate(),
            Err(ConfigError::ElectionTicksTooLarge {
                election_ticks: MAX_ELECTION_TICKS + 1
            })
        );
        // The largest accepted draws its timeouts without overflowing.
        let largest = cfg(MAX_ELECTION_TICKS);
        assert_eq!(largest.validate(), Ok(()));
        let mut r = Raft::new(largest, InitialState::default(), StdRng::seed_from_u64(1));
        r.tick();
        r.campaign();
    }

    #[test]
    fn no_message_in_flight_is_refused() {
        assert_eq!(
            with(|c| c.max_inflight = 0),
            Err(ConfigError::ZeroMaxInflight)
        );
    }

    #[test]
    fn any_byte_cap_is_accepted_since_one_entry_always_moves() {
        assert_eq!(
            with(|c| {
                c.max_msg_bytes = 0;
                c.max_apply_bytes = 0;
            }),
            Ok(())
        );
    }

    #[test]
    fn messages_name_the_setting_to_change() {
        let e = with(|c| c.election_ticks = 2).expect_err("equal to the heartbeat");
        assert_eq!(
            e.to_string(),
            "election_ticks (2) must be above heartbeat_ticks (2); raise election_ticks to \
             several heartbeats"
        );
        let e = with(|c| c.election_ticks = u32::MAX).expect_err("too large");
        assert_eq!(
            e.to_string(),
            format!(
                "election_ticks ({}) is above {MAX_ELECTION_TICKS}; lower it",
                u32::MAX
            )
        );
    }
}
