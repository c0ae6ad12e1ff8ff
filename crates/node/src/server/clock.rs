//! The time a leader stamps on the entries it proposes, which session expiry runs on.
//!
//! It must not come from the wall clock: a leader whose clock runs ahead (or that NTP steps
//! forward) would expire sessions early, and a client retrying a write whose reply was lost
//! would be told its session expired although the write was applied. So replicated time
//! continues from the latest time already in the log and advances only with the leader's
//! monotonic clock: it can never run ahead of the real time that passed while someone led.
//! Time that passed with no leader is not counted, which only makes sessions live longer.

use myraft_wire::raft::Term;
use std::time::Instant;

#[derive(Debug, Default)]
pub(super) struct ReplicatedClock {
    /// The term the base was taken in, the replicated time then, and when that was.
    base: Option<(Term, u64, Instant)>,
}

impl ReplicatedClock {
    /// The stamp for an entry proposed at `now` in `term`. `floor` is the latest time in the
    /// log (applied or not); it is read once per term, when the term's first stamp is taken,
    /// because another leader may have stamped later times since our last term.
    pub fn stamp(&mut self, term: Term, now: Instant, floor: impl FnOnce() -> u64) -> u64 {
        let (base_ms, since) = match self.base {
            Some((t, ms, at)) if t == term => (ms, at),
            _ => {
                let ms = floor();
                self.base = Some((term, ms, now));
                (ms, now)
            }
        };
        let elapsed = now.saturating_duration_since(since).as_millis();
        base_ms.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps_continue_the_log_and_advance_with_the_monotonic_clock() {
        let t0 = Instant::now();
        let mut c = ReplicatedClock::default();
        assert_eq!(c.stamp(3, t0, || 5_000), 5_000);
        assert_eq!(c.stamp(3, t0 + Duration::from_millis(250), || 0), 5_250);
        // A later term starts again from what the log holds, never from a wall clock.
        assert_eq!(c.stamp(4, t0 + Duration::from_secs(1), || 9_000), 9_000);
        assert_eq!(c.stamp(4, t0 + Duration::from_secs(2), || 0), 10_000);
    }
}
