//! The state store applying arbitrary committed entries, against the in-memory model: the
//! stable counterpart of the `store_apply` fuzz target, with the same cases and checks
//! (`cases.rs`).
//!
//! Each case is built by `arbitrary` from random bytes, so a case here and an input of the
//! fuzz target are the same thing: `PROPTEST_CASES=N` runs more; a failure prints the
//! bytes (shrunk) and the batches, and proptest keeps its seed in
//! `tests/proptest-regressions/store_arbitrary.txt`, which later runs try first.
//! `MYRAFT_FUZZ_INPUT=FILE cargo test -p myraft-node --test store_arbitrary replay` runs
//! one input of the fuzz target (an artifact or a corpus file) here.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

mod cases;

use arbitrary::{Arbitrary, Unstructured};
use cases::{run, Batch};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn run_bytes(bytes: &[u8]) {
    if let Ok(batches) = Vec::<Batch>::arbitrary_take_rest(Unstructured::new(bytes)) {
        eprintln!("batches: {batches:?}");
        run(batches);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proptest-regressions/store_arbitrary.txt"),
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_applies_arbitrary_entries_as_the_model_does(
        bytes in prop::collection::vec(any::<u8>(), 0..2048)
    ) {
        run_bytes(&bytes);
    }
}

#[test]
fn replay_a_fuzz_input() {
    if let Ok(path) = std::env::var("MYRAFT_FUZZ_INPUT") {
        run_bytes(&std::fs::read(&path).unwrap());
    }
}
