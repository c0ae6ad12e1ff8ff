//! Client sessions: what makes a retried request take effect exactly once (Raft
//! dissertation §6.3).
//!
//! Each client picks a random `client_id` and numbers its requests 1, 2, 3… with at most one
//! outstanding at a time. The table remembers, per client, the last sequence number applied
//! and its reply. A retry of that request gets the cached reply without being applied again;
//! anything older is a stale duplicate the client already has an answer for.
//!
//! Sessions expire after a period without requests, measured in the time the leader stamped
//! on each log entry, never a local clock, so every replica expires the same sessions at the
//! same entry. A client whose session expired is told so ([`SessionCheck::Expired`]) instead
//! of having its request applied: the request might be a retry of one applied before the
//! expiry. There is no separate registration entry (§6.3 allocates ids through the log); a
//! session opens on a client's request number 1. The one gap this leaves — a retry of
//! request 1 arriving after its session expired — needs a retry window longer than the
//! expiry timeout, which defaults to ten minutes.

use super::command::ApplyResult;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    pub last_seq: u64,
    pub last_active_ms: u64,
    pub reply: ApplyResult,
}

/// What to do with a request, according to its client's session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionCheck<'a> {
    /// A request not seen before: apply it, then [`Sessions::record`] the reply.
    Apply,
    /// The last request again: answer with its reply, do not apply.
    Duplicate(&'a ApplyResult),
    /// Older than the last request: the client already has a newer answer.
    Stale { last_seq: u64 },
    /// No session, and the request is not one that opens a session.
    Expired,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sessions {
    by_client: BTreeMap<u64, Session>,
    /// (last_active_ms, client_id), so expiry takes the oldest first without a full scan.
    /// Derived from `by_client`; rebuilt on restore.
    #[serde(skip)]
    by_activity: BTreeSet<(u64, u64)>,
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// Drops every session idle for longer than `timeout_ms` as of `now_ms`, and returns the
    /// clients whose sessions went.
    pub fn expire(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<u64> {
        let mut gone = Vec::new();
        while let Some(&(last_active, client)) = self.by_activity.first() {
            if now_ms.saturating_sub(last_active) <= timeout_ms {
                break;
            }
            self.by_activity.pop_first();
            self.by_client.remove(&client);
            gone.push(client);
        }
        gone
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Session)> {
        self.by_client.iter().map(|(&c, s)| (c, s))
    }

    pub fn get(&self, client_id: u64) -> Option<&Session> {
        self.by_client.get(&client_id)
    }

    /// Adds a session read back from storage; [`Sessions::validate_and_index`] must follow.
    pub fn insert_loaded(&mut self, client_id: u64, session: Session) {
        self.by_client.insert(client_id, session);
    }

    pub fn check(&self, client_id: u64, seq: u64) -> SessionCheck<'_> {
        match self.by_client.get(&client_id) {
            None if seq == 1 => SessionCheck::Apply,
            None => SessionCheck::Expired,
            Some(s) if seq == s.last_seq => SessionCheck::Duplicate(&s.reply),
            Some(s) if seq < s.last_seq => SessionCheck::Stale {
                last_seq: s.last_seq,
            },
            Some(_) => SessionCheck::Apply,
        }
    }

    /// Marks the client active at `now_ms`, so that retrying keeps a session alive.
    pub fn touch(&mut self, client_id: u64, now_ms: u64) {
        if let Some(s) = self.by_client.get_mut(&client_id) {
            self.by_activity.remove(&(s.last_active_ms, client_id));
            s.last_active_ms = now_ms;
            self.by_activity.insert((now_ms, client_id));
        }
    }

    pub fn record(&mut self, client_id: u64, seq: u64, now_ms: u64, reply: ApplyResult) {
        let previous = self.by_client.insert(
            client_id,
            Session {
                last_seq: seq,
                last_active_ms: now_ms,
                reply,
            },
        );
        if let Some(p) = previous {
            self.by_activity.remove(&(p.last_active_ms, client_id));
        }
        self.by_activity.insert((now_ms, client_id));
    }

    /// Checks a restored table against the restored clock and rebuilds the expiry index.
    pub fn validate_and_index(&mut self, clock_ms: u64) -> Result<(), SessionError> {
        let mut index = BTreeSet::new();
        for (&client, s) in &self.by_client {
            if s.last_active_ms > clock_ms {
                return Err(SessionError::ActiveAfterClock {
                    client,
                    active_ms: s.last_active_ms,
                    clock_ms,
                });
            }
            if s.last_seq == 0 {
                return Err(SessionError::ZeroSeq { client });
            }
            index.insert((s.last_active_ms, client));
        }
        self.by_activity = index;
        Ok(())
    }
}

/// A restored session table that cannot be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A session was active after the clock of the state it was restored with.
    #[error(
        "session of client {client} active at {active_ms} ms, after the state machine's clock \
         {clock_ms} ms"
    )]
    ActiveAfterClock {
        /// The client.
        client: u64,
        /// When its session was last active.
        active_ms: u64,
        /// The restored replicated clock.
        clock_ms: u64,
    },
    /// A session with no request applied is never written.
    #[error("session of client {client} has sequence number 0")]
    ZeroSeq {
        /// The client.
        client: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::command::Reply;

    fn reply(n: u64) -> ApplyResult {
        Ok(Reply::Put { revision: n })
    }

    #[test]
    fn sequence_numbers_decide_apply_duplicate_or_stale() {
        let mut s = Sessions::default();
        assert_eq!(s.check(7, 1), SessionCheck::Apply);
        assert_eq!(s.check(7, 2), SessionCheck::Expired);
        s.record(7, 1, 0, reply(1));
        assert_eq!(s.check(7, 1), SessionCheck::Duplicate(&reply(1)));
        assert_eq!(s.check(7, 3), SessionCheck::Apply, "gaps are allowed");
        s.record(7, 3, 0, reply(2));
        assert_eq!(s.check(7, 1), SessionCheck::Stale { last_seq: 3 });
        assert_eq!(
            s.check(8, 1),
            SessionCheck::Apply,
            "sessions are per client"
        );
    }

    #[test]
    fn idle_sessions_expire_oldest_first() {
        let mut s = Sessions::default();
        s.record(1, 1, 100, reply(1));
        s.record(2, 1, 200, reply(2));
        s.record(3, 1, 300, reply(3));
        s.touch(1, 350);
        s.expire(1200, 1000);
        assert_eq!(
            s.len(),
            3,
            "idle for exactly the timeout is not yet expired"
        );
        s.expire(1201, 1000);
        assert_eq!(s.len(), 2);
        assert_eq!(s.check(2, 2), SessionCheck::Expired);
        // Client 1 was active at 100, but the touch at 350 kept it.
        assert_eq!(s.check(1, 1), SessionCheck::Duplicate(&reply(1)));
        s.expire(u64::MAX, 1000);
        assert_eq!(s.len(), 0);
        assert!(s.by_activity.is_empty());
    }
}
