//! WAL recovery from arbitrary and damaged files: the stable counterpart of the
//! `wal_recovery` fuzz target, with the same cases and checks (`cases.rs`).
//!
//! Each case is built by `arbitrary` from random bytes, so a case here and an input of the
//! fuzz target are the same thing: `PROPTEST_CASES=N` runs more; a failure prints the
//! bytes (shrunk) and the case, and proptest keeps its seed in
//! `tests/proptest-regressions/wal_arbitrary.txt`, which later runs try first.
//! `MYRAFT_FUZZ_INPUT=FILE cargo test -p myraft-node --test wal_arbitrary replay` runs one
//! input of the fuzz target (an artifact or a corpus file) here.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

mod cases;

use arbitrary::{Arbitrary, Unstructured};
use cases::{run, Case, HsSpec, Num, PayloadSpec, RecordSpec, SnapSpec};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn run_bytes(bytes: &[u8]) {
    if let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(bytes)) {
        eprintln!("case: {case:?}");
        run(case);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1024),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proptest-regressions/wal_arbitrary.txt"),
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn recovery_from_arbitrary_files_returns_a_log_that_keeps_its_rules(
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

// Found by the fuzz target: a snapshot file (checksum intact) at the last u64 index made
// `open` overflow `index + 1`.
#[test]
fn a_snapshot_at_the_last_index_is_refused_not_a_panic() {
    run(Case::Records {
        segments: vec![],
        first_seq: 0,
        snapshot: Some(SnapSpec {
            last_index: Num::Max,
            last_term: Num::Small(0),
        }),
    });
}

// Found by the fuzz target (a written log, damaged and its checksums fixed): recovery
// returned a log whose terms went back, entry 2 of term 2 after entry 1 of term 5, which
// no leader writes.
#[test]
fn a_log_whose_terms_go_back_is_refused() {
    let hs = HsSpec {
        term: Num::Small(5),
        vote: None,
        commit: Num::Small(0),
    };
    let zero = Num::Small(0);
    run(Case::Records {
        segments: vec![vec![
            RecordSpec::Checkpoint {
                base: zero,
                base_term: zero,
                last: zero,
                last_term: zero,
                hs,
            },
            RecordSpec::Entry {
                term: Num::Small(5),
                index: Num::Small(1),
                payload: PayloadSpec::Noop,
            },
            RecordSpec::Entry {
                term: Num::Small(2),
                index: Num::Small(2),
                payload: PayloadSpec::Noop,
            },
        ]],
        first_seq: 0,
        snapshot: None,
    });
}
