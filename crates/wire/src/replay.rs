//! Replay protection: each sender numbers its datagrams (`msg_id`), and a receiver keeps a
//! sliding window per sender over the highest ids it has seen, as IPsec does (RFC 4303
//! §3.4.3): an id inside the window is accepted once, an id below it is dropped as too old.
//!
//! Check only datagrams that [`crate::codec::decode`] authenticated, so that forged ids
//! cannot push the window forward and a forger cannot fill [`ReplayFilter`] with senders.
//!
//! A sender must never reuse an id, across restarts too, and a receiver never forgets a
//! sender, so a restarted sender must start above everything it sent before. Starting the
//! counter at the wall clock in microseconds, adding one per datagram, does that unless
//! the clock was set back by more than the downtime; a node therefore also starts above the
//! block of ids it last reserved in its data dir (myraft-node's `server::msg_ids`). Raft
//! and the client sessions tolerate the loss of the rare datagram that arrives more than
//! [`WINDOW`] ids late.

use crate::envelope::SenderId;
use std::collections::HashMap;

const WORDS: usize = 4;
/// How far behind the newest id a datagram may arrive and still be accepted. Wider than
/// IPsec's customary 64 because one leader sends bursts of log entries and heartbeats whose
/// order the network may shuffle.
pub const WINDOW: u64 = (WORDS * 64) as u64;

/// Why a datagram's id was refused; the datagram is to be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The id is inside the window and was accepted before: a duplicate or a replay.
    #[error("message id {msg_id} was already received")]
    Replayed {
        /// The id refused.
        msg_id: u64,
    },
    /// The id is [`WINDOW`] or more below the newest accepted, where the window no longer
    /// remembers whether it was seen.
    #[error("message id {msg_id} is older than the replay window (newest {newest})")]
    TooOld {
        /// The id refused.
        msg_id: u64,
        /// The highest id accepted from this sender.
        newest: u64,
    },
}

/// The window for one sender. Bit `id % WINDOW` of the ring says whether `id` was seen, for
/// the ids in `newest - WINDOW + 1 ..= newest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    newest: Option<u64>,
    seen: [u64; WORDS],
}

impl ReplayWindow {
    /// A window that has seen nothing: it accepts any first id.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest id accepted so far.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// Whether `msg_id` would be accepted, without recording it.
    pub fn check(&self, msg_id: u64) -> Result<(), ReplayError> {
        let Some(newest) = self.newest else {
            return Ok(());
        };
        if msg_id > newest {
            return Ok(());
        }
        if newest - msg_id >= WINDOW {
            return Err(ReplayError::TooOld { msg_id, newest });
        }
        if self.is_set(msg_id) {
            return Err(ReplayError::Replayed { msg_id });
        }
        Ok(())
    }

    /// Accepts `msg_id` once: records it, sliding the window forward if it is the newest.
    pub fn accept(&mut self, msg_id: u64) -> Result<(), ReplayError> {
        self.check(msg_id)?;
        match self.newest {
            Some(newest) if msg_id <= newest => {}
            Some(newest) if msg_id - newest < WINDOW => {
                // Ids skipped on the way forward were never seen; clear their stale bits.
                for id in newest + 1..msg_id {
                    self.clear(id);
                }
                self.newest = Some(msg_id);
            }
            _ => {
                self.seen = [0; WORDS];
                self.newest = Some(msg_id);
            }
        }
        self.set(msg_id);
        Ok(())
    }

    fn slot(id: u64) -> (usize, u64) {
        let bit = id % WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn is_set(&self, id: u64) -> bool {
        let (word, mask) = Self::slot(id);
        self.seen[word] & mask != 0
    }

    fn set(&mut self, id: u64) {
        let (word, mask) = Self::slot(id);
        self.seen[word] |= mask;
    }

    fn clear(&mut self, id: u64) {
        let (word, mask) = Self::slot(id);
        self.seen[word] &= !mask;
    }
}

/// One [`ReplayWindow`] per sender.
#[derive(Clone, Debug, Default)]
pub struct ReplayFilter {
    windows: HashMap<SenderId, ReplayWindow>,
}

impl ReplayFilter {
    /// A filter that knows no sender yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`ReplayWindow::accept`] in the window of `from`, which is created on its first
    /// datagram.
    pub fn accept(&mut self, from: SenderId, msg_id: u64) -> Result<(), ReplayError> {
        self.windows.entry(from).or_default().accept(msg_id)
    }

    /// Drops a sender's window, e.g. when a node is removed from the cluster.
    pub fn forget(&mut self, from: SenderId) {
        self.windows.remove(&from);
    }

    /// How many senders have a window. Windows are never dropped but by
    /// [`ReplayFilter::forget`], so this grows with every sender ever accepted.
    pub fn senders(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_ids_are_accepted_once() {
        let mut w = ReplayWindow::new();
        for id in 1..1000 {
            assert_eq!(w.accept(id), Ok(()));
            assert_eq!(w.accept(id), Err(ReplayError::Replayed { msg_id: id }));
        }
        assert_eq!(w.newest(), Some(999));
    }

    #[test]
    fn reordered_ids_inside_the_window_are_accepted() {
        let mut w = ReplayWindow::new();
        w.accept(1000).unwrap();
        w.accept(998).unwrap();
        w.accept(999).unwrap();
        w.accept(1000 - WINDOW + 1).unwrap();
        assert_eq!(w.accept(999), Err(ReplayError::Replayed { msg_id: 999 }));
    }

    #[test]
    fn ids_below_the_window_are_too_old() {
        let mut w = ReplayWindow::new();
        w.accept(1000).unwrap();
        assert_eq!(
            w.accept(1000 - WINDOW),
            Err(ReplayError::TooOld {
                msg_id: 1000 - WINDOW,
                newest: 1000
            })
        );
        assert!(w.accept(0).is_err());
    }

    #[test]
    fn sliding_forward_clears_slots_of_ids_never_received() {
        let mut w = ReplayWindow::new();
        for id in 0..WINDOW {
            w.accept(id).unwrap();
        }
        // Every ring slot is now set. Ids WINDOW..WINDOW+49 reuse the slots of 0..49 but
        // were never received, so after this step they must still be accepted.
        w.accept(WINDOW + 49).unwrap();
        for id in WINDOW..WINDOW + 49 {
            assert_eq!(w.accept(id), Ok(()), "id {id}");
        }
    }

    #[test]
    fn a_jump_past_the_window_starts_afresh() {
        let mut w = ReplayWindow::new();
        w.accept(5).unwrap();
        w.accept(5 + WINDOW).unwrap();
        assert!(matches!(w.accept(5), Err(ReplayError::TooOld { .. })));
        w.accept(6).unwrap();
        w.accept(10 * WINDOW).unwrap();
        w.accept(9 * WINDOW + 1).unwrap();
        assert!(matches!(
            w.accept(9 * WINDOW),
            Err(ReplayError::TooOld { .. })
        ));
    }

    #[test]
    fn extreme_ids_do_not_overflow() {
        let mut w = ReplayWindow::new();
        w.accept(0).unwrap();
        w.accept(u64::MAX).unwrap();
        assert!(w.accept(u64::MAX).is_err());
        w.accept(u64::MAX - 1).unwrap();
        assert!(w.accept(0).is_err());
    }

    #[test]
    fn filter_keeps_senders_apart() {
        let mut f = ReplayFilter::new();
        f.accept(1, 10).unwrap();
        f.accept(2, 10).unwrap();
        assert!(f.accept(1, 10).is_err());
        f.forget(1);
        assert_eq!(f.senders(), 1);
        f.accept(1, 10).unwrap();
    }

    proptest! {
        #![proptest_config(crate::strategies::config(256))]

        // Against a model that remembers every id: accepted exactly when never seen and
        // within WINDOW of the newest id accepted before it.
        #[test]
        fn matches_a_model(ids in prop::collection::vec(
            prop_oneof![0u64..600, (0u64..600).prop_map(|i| i * 97)], 1..300)
        ) {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut newest: Option<u64> = None;
            for id in ids {
                let fresh = !seen.contains(&id)
                    && newest.is_none_or(|n| id > n || n - id < WINDOW);
                prop_assert_eq!(w.accept(id).is_ok(), fresh, "id {}", id);
                if fresh {
                    seen.insert(id);
                    newest = Some(newest.map_or(id, |n| n.max(id)));
                }
            }
        }
    }
}
