//! The replicated state: a versioned key/value map plus client sessions.
//!
//! Committed entries are applied here in log order and nothing else changes it, so every
//! replica that applies the same entries holds the same state, down to the bytes of its
//! snapshot. For that the state machine reads no clock and no randomness: time comes from the
//! leader's stamp in each entry, and every map is a `BTreeMap`.
//!
//! - `command`: what a log entry carries ([`LogCommand`]) and what applying it answers.
//! - `session`: exactly-once client sessions (Raft dissertation §6.3).
//! - `mvcc`: the multi-version map ([`Mvcc`]), after etcd's MVCC store.
//!
//! Snapshots hold the map, the sessions and the clock; the cluster membership travels in
//! `myraft_wire::raft::SnapshotMeta` beside them.

mod command;
mod mvcc;
pub(crate) mod session;

#[cfg(test)]
pub(crate) mod tests;

pub use command::{
    ApplyError, ApplyResult, ClientCommand, Command, DecodeError, LogCommand, Reply,
};
pub(crate) use mvcc::readable_at;
pub use mvcc::{DeleteOutcome, History, KeyValue, KeyVersion, KvError, Mvcc, MvccStats};

use serde::{Deserialize, Serialize};
pub(crate) use session::{Session, SessionCheck, Sessions};

/// How long a client session survives without requests unless configured otherwise.
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// Version of the snapshot encoding; bumped whenever its layout changes.
const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Must be the same on every node: replicas that expire sessions at different times
    /// diverge. A snapshot carries the value it was taken with, and restoring adopts it.
    pub session_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
        }
    }
}

/// Sizes for node detail output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub applied_index: u64,
    pub revision: u64,
    pub compacted_before: u64,
    /// Keys whose latest version is a value.
    pub live_keys: usize,
    /// Keys with any retained version, tombstones included.
    pub tracked_keys: usize,
    /// Retained versions over all keys, tombstones included.
    pub versions: usize,
    pub sessions: usize,
}

/// The client id of commands the cluster proposes itself; clients may not use it.
pub const SYSTEM_CLIENT: u64 = 0;

/// What [`apply_with_session`] did.
pub(crate) struct SessionApplied {
    pub reply: ApplyResult,
    /// Clients whose sessions expired at this entry.
    pub expired: Vec<u64>,
    /// Whether the request's own session was opened, touched or recorded.
    pub touched: bool,
}

/// The session rules around one client command (dissertation §6.3), shared by the in-memory
/// model and the state store: advance replicated time, expire idle sessions, then execute the
/// command unless it is a retry (answered from the session) or cannot be trusted.
pub(crate) fn apply_with_session<E>(
    sessions: &mut Sessions,
    clock_ms: &mut u64,
    session_timeout_ms: u64,
    entry_time_ms: u64,
    req: &ClientCommand,
    execute: impl FnOnce(&Command) -> Result<ApplyResult, E>,
) -> Result<SessionApplied, E> {
    *clock_ms = (*clock_ms).max(entry_time_ms);
    let now = *clock_ms;
    let expired = sessions.expire(now, session_timeout_ms);
    if req.client_id == SYSTEM_CLIENT {
        // The cluster's own upkeep (automatic compaction): proposed by a leader, not retried
        // by any client, so there is no session to keep.
        return Ok(SessionApplied {
            reply: execute(&req.cmd)?,
            expired,
            touched: false,
        });
    }
    let (reply, touched) = match sessions.check(req.client_id, req.seq) {
        SessionCheck::Duplicate(reply) => {
            let reply = reply.clone();
            sessions.touch(req.client_id, now);
            (reply, true)
        }
        SessionCheck::Stale { last_seq } => (
            Err(ApplyError::StaleSequence {
                client_id: req.client_id,
                seq: req.seq,
                last_seq,
            }),
            false,
        ),
        SessionCheck::Expired => (
            Err(ApplyError::SessionExpired {
                client_id: req.client_id,
            }),
            false,
        ),
        SessionCheck::Apply => {
            let reply = execute(&req.cmd)?;
            sessions.record(req.client_id, req.seq, now, reply.clone());
            (reply, true)
        }
    };
    Ok(SessionApplied {
        reply,
        expired,
        touched,
    })
}

fn execute(kv: &mut Mvcc, cmd: &Command) -> ApplyResult {
    Ok(match cmd {
        Command::Put { key, value } => Reply::Put {
            revision: kv.put(key, value.clone()),
        },
        Command::Delete { key } => {
            let DeleteOutcome { revision, deleted } = kv.delete(key);
            Reply::Delete { revision, deleted }
        }
        Command::Compact { revision } => {
            kv.compact(*revision)?;
            Reply::Compact {
                compacted_before: kv.compacted_before(),
            }
        }
        Command::Noop => Reply::Noop {
            revision: kv.revision(),
        },
    })
}

/// A snapshot that cannot be restored. The node should keep its current state and fetch the
/// snapshot again.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is damaged or not a state machine snapshot: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error(
        "snapshot format {found} is not supported by this build, which reads format \
         {SNAPSHOT_FORMAT}; run the same MyRaft version on every node"
    )]
    UnsupportedFormat { found: u32 },
    #[error("snapshot has {extra} bytes after its end; it is damaged")]
    TrailingBytes { extra: u64 },
    #[error("snapshot decodes but is inconsistent: {0}")]
    Inconsistent(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    applied_index: u64,
    /// The latest entry time seen. A new leader's clock may lag the old one's; time must not
    /// run backwards here, or a session could expire and then seem alive again.
    clock_ms: u64,
    session_timeout_ms: u64,
    kv: Mvcc,
    sessions: Sessions,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl StateMachine {
    pub fn new(config: Config) -> Self {
        Self {
            applied_index: 0,
            clock_ms: 0,
            session_timeout_ms: config.session_timeout_ms,
            kv: Mvcc::new(),
            sessions: Sessions::default(),
        }
    }

    /// Applies the client command committed at log `index`, stamped by the leader with
    /// `entry_time_ms`. A retry of the client's last request gets the reply it got the first
    /// time without being applied again (dissertation §6.3).
    pub fn apply(&mut self, index: u64, entry_time_ms: u64, req: &ClientCommand) -> ApplyResult {
        self.advance(index)?;
        let kv = &mut self.kv;
        let outcome: Result<_, std::convert::Infallible> = apply_with_session(
            &mut self.sessions,
            &mut self.clock_ms,
            self.session_timeout_ms,
            entry_time_ms,
            req,
            |cmd| Ok(execute(kv, cmd)),
        );
        match outcome {
            Ok(applied) => applied.reply,
            Err(never) => match never {},
        }
    }

    /// Applies the payload of an `EntryPayload::Command` entry: a [`LogCommand`] encoded with
    /// [`LogCommand::encode`]. Undecodable bytes still consume the index.
    pub fn apply_entry(&mut self, index: u64, payload: &[u8]) -> ApplyResult {
        match LogCommand::decode(payload) {
            Ok(c) => self.apply(index, c.entry_time_ms, &c.req),
            Err(e) => {
                self.advance(index)?;
                Err(ApplyError::BadEntry {
                    index,
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Records an entry with nothing for the state machine (a Raft no-op or a configuration
    /// change) as applied, so that the applied index, and a snapshot's, stays exact.
    pub fn skip(&mut self, index: u64) -> Result<(), ApplyError> {
        self.advance(index)
    }

    fn advance(&mut self, index: u64) -> Result<(), ApplyError> {
        if index <= self.applied_index {
            return Err(ApplyError::AlreadyApplied {
                index,
                applied_index: self.applied_index,
            });
        }
        self.applied_index = index;
        Ok(())
    }

    /// Reads `key` as of `at_revision`, or the latest revision if `None`.
    pub fn get(&self, key: &[u8], at_revision: Option<u64>) -> Result<Option<KeyValue>, KvError> {
        self.kv.get(key, at_revision)
    }

    /// The retained versions of `key`, oldest first.
    pub fn history(&self, key: &[u8]) -> History {
        self.kv.history(key)
    }

    pub fn kv(&self) -> &Mvcc {
        &self.kv
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn session_timeout_ms(&self) -> u64 {
        self.session_timeout_ms
    }

    /// The latest entry time applied: where replicated time stands.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn revision(&self) -> u64 {
        self.kv.revision()
    }

    pub fn compacted_before(&self) -> u64 {
        self.kv.compacted_before()
    }

    pub fn stats(&self) -> Stats {
        let kv = self.kv.stats();
        Stats {
            applied_index: self.applied_index,
            revision: kv.revision,
            compacted_before: kv.compacted_before,
            live_keys: kv.live_keys,
            tracked_keys: kv.tracked_keys,
            versions: kv.versions,
            sessions: self.sessions.len(),
        }
    }

    /// The whole state as MessagePack. Replicas that applied the same entries produce the
    /// same bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        // Into a Vec, rmp-serde fails only on I/O errors of the writer, which a Vec has none of.
        rmp_serde::to_vec(&(SNAPSHOT_FORMAT, self))
            .expect("encoding the state machine into memory cannot fail")
    }

    /// Rebuilds a state machine from [`StateMachine::snapshot`] bytes. Bytes that do not
    /// decode, or decode to a state no sequence of commands could produce, are refused.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
        let (format, mut model): (u32, StateMachine) = match Deserialize::deserialize(&mut de) {
            Ok(decoded) => decoded,
            Err(e) => {
                // A newer layout would fail to decode; say that rather than "damaged".
                return Err(
                    match rmp_serde::from_slice::<(u32, serde::de::IgnoredAny)>(bytes) {
                        Ok((found, _)) if found != SNAPSHOT_FORMAT => {
                            SnapshotError::UnsupportedFormat { found }
                        }
                        _ => SnapshotError::Decode(e),
                    },
                );
            }
        };
        if format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::UnsupportedFormat { found: format });
        }
        let extra = (bytes.len() as u64).saturating_sub(de.position());
        if extra > 0 {
            return Err(SnapshotError::TrailingBytes { extra });
        }
        model
            .kv
            .validate_and_count()
            .map_err(SnapshotError::Inconsistent)?;
        model
            .sessions
            .validate_and_index(model.clock_ms)
            .map_err(|e| SnapshotError::Inconsistent(e.to_string()))?;
        Ok(model)
    }
}
