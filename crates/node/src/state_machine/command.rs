//! What the log carries for the state machine, and what applying it answers.
//!
//! A client write becomes a [`LogCommand`]: the client's request plus the time the leader
//! stamped on it. Its MessagePack bytes are the payload of
//! `myraft_wire::raft::EntryPayload::Command`; Raft never looks inside.

use super::mvcc::KvError;
use serde::{Deserialize, Serialize};

/// A write to the state machine. Reads (`get`, `history`) are not commands: they are served
/// from the applied state without going through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Drops versions below `revision` (see [`super::Mvcc::compact`]).
    Compact { revision: u64 },
    /// Changes no data. Opens or keeps alive the client's session, so an idle client can
    /// avoid having it expire.
    Noop,
}

/// A command together with the client session it belongs to (dissertation §6.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCommand {
    pub client_id: u64,
    /// Starts at 1 and grows with each new request; a retry reuses the number.
    pub seq: u64,
    pub cmd: Command,
}

/// The payload of one log entry: a client command and the replicated time the leader stamped
/// on it (see `server/clock.rs`). Session expiry runs on this time so every replica agrees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCommand {
    pub entry_time_ms: u64,
    pub req: ClientCommand,
}

/// A log payload that is not a [`LogCommand`].
#[derive(Debug, thiserror::Error)]
#[error("log entry does not hold a state machine command: {0}")]
pub struct DecodeError(#[from] rmp_serde::decode::Error);

impl LogCommand {
    pub fn encode(&self) -> Vec<u8> {
        // Writing derived serde types without borrowed-length sequences into a Vec cannot
        // fail: rmp-serde's only errors there are I/O errors of the writer.
        rmp_serde::to_vec(self).expect("encoding a LogCommand into memory cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }
}

/// A successful outcome of applying a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Put {
        revision: u64,
    },
    /// `revision` is the tombstone's, or the unchanged current one if nothing was deleted.
    Delete {
        revision: u64,
        deleted: bool,
    },
    Compact {
        compacted_before: u64,
    },
    /// The current revision.
    Noop {
        revision: u64,
    },
}

/// Why a command had no effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    /// A `Compact` below the compaction point or above the current revision.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The client has no session and this is not its first request; the request may be a
    /// retry of one applied before the session expired, so it is not applied.
    #[error(
        "session of client {client_id:#x} expired or never opened; start a new session with a \
         new client id and sequence number 1"
    )]
    SessionExpired { client_id: u64 },
    /// The client already received the reply to a later request.
    #[error(
        "request {seq} of client {client_id:#x} is older than its last request {last_seq}; \
         the reply to it is no longer kept"
    )]
    StaleSequence {
        client_id: u64,
        seq: u64,
        last_seq: u64,
    },
    /// The entry was applied before: the caller fed the log out of order.
    #[error("log index {index} is not after the last applied index {applied_index}")]
    AlreadyApplied { index: u64, applied_index: u64 },
    /// The entry's payload could not be decoded. Every replica decodes the same bytes the
    /// same way, so this is deterministic too.
    #[error("log entry {index} does not hold a command: {reason}")]
    BadEntry { index: u64, reason: String },
}

pub type ApplyResult = Result<Reply, ApplyError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_command_round_trips() {
        let c = LogCommand {
            entry_time_ms: 1_700_000_000_000,
            req: ClientCommand {
                client_id: u64::MAX,
                seq: 3,
                cmd: Command::Put {
                    key: b"k".to_vec(),
                    value: vec![0, 255, 7],
                },
            },
        };
        let bytes = c.encode();
        assert_eq!(LogCommand::decode(&bytes).expect("decodes"), c);
        assert!(LogCommand::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(LogCommand::decode(b"").is_err());
    }

    #[test]
    fn keys_and_values_are_encoded_as_binary() {
        let put = Command::Put {
            key: vec![200; 100],
            value: vec![201; 100],
        };
        let bytes = rmp_serde::to_vec(&put).expect("encodes");
        // As `bin` each is 2 bytes of header plus the data; as an array of integers each
        // byte above 127 would take two.
        assert!(bytes.len() < 220, "{} bytes", bytes.len());
    }
}
