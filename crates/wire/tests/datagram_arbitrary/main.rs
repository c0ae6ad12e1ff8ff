//! Datagrams from arbitrary bytes, through `decode` and the replay checks: the stable
//! counterpart of the `decode` and `envelope` fuzz targets, with the same cases and checks
//! (`cases.rs`). The codec's own tests (`src/codec.rs`) hold every encoding to a round
//! trip, every truncation and flipped bit to an error; these add bytes that pass the tag
//! without being an envelope, and sequences of datagrams through the replay window.
//!
//! Each case is built from random bytes, as the fuzz targets build theirs, so a case here
//! and an input there are the same thing: `PROPTEST_CASES=N` runs more; a failure prints
//! the bytes (shrunk), and proptest keeps its seed in
//! `tests/proptest-regressions/datagram_arbitrary.txt`, which later runs try first.
//! `MYRAFT_FUZZ_INPUT=FILE MYRAFT_FUZZ_TARGET=decode|envelope cargo test -p myraft-wire
//! --test datagram_arbitrary replay` runs one input of a fuzz target here.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

mod cases;

use arbitrary::{Arbitrary, Unstructured};
use cases::{decode_input, receive, Step};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn receive_bytes(bytes: &[u8]) {
    if let Ok(steps) = Vec::<Step>::arbitrary_take_rest(Unstructured::new(bytes)) {
        receive(steps);
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/datagram_arbitrary.txt"
        )))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn arbitrary_bytes_tagged_or_not_decode_only_to_envelopes_that_round_trip(
        bytes in prop::collection::vec(any::<u8>(), 0..1024)
    ) {
        decode_input(&bytes);
    }

    #[test]
    fn the_receive_checks_accept_a_message_once_whatever_arrives(
        bytes in prop::collection::vec(any::<u8>(), 0..4096)
    ) {
        receive_bytes(&bytes);
    }
}

#[test]
fn replay_a_fuzz_input() {
    if let Ok(path) = std::env::var("MYRAFT_FUZZ_INPUT") {
        let bytes = std::fs::read(&path).unwrap();
        match std::env::var("MYRAFT_FUZZ_TARGET").as_deref() {
            Ok("decode") => decode_input(&bytes),
            Ok("envelope") => receive_bytes(&bytes),
            other => panic!("MYRAFT_FUZZ_TARGET must be decode or envelope, not {other:?}"),
        }
    }
}

/// Found by the envelope fuzz target: `ReplayGuard::prune` forgot a sender whose newest
/// id was stale by the receiver's clock, which is the wall clock; set back after that (an
/// NTP step, an operator) by more than the time since, the clock found the sender's old
/// ids fresh again, and with the window gone the guard accepted a recorded datagram a
/// second time.
#[test]
fn a_clock_set_back_after_a_prune_does_not_readmit_a_message() {
    use myraft_wire::replay::{ReplayGuard, MAX_AGE_MS, SEQ_BITS};
    let start_ms = 1_796_000_000_000;
    let mut guard = ReplayGuard::new(start_ms);
    let id = start_ms << SEQ_BITS;
    assert!(guard.accept(1, id, start_ms).is_ok());
    let later = start_ms + MAX_AGE_MS + 1_000;
    guard.prune(later);
    // The clock is set back to where it was when the message arrived.
    assert!(
        guard.accept(1, id, start_ms).is_err(),
        "message {id} of sender 1 accepted twice"
    );
}
