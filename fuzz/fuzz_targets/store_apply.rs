//! The state store applying arbitrary batches of committed entries, held to the in-memory
//! model; the cases and checks are those of the stable property test,
//! `crates/node/tests/store_arbitrary/cases.rs`.

#![no_main]

#[path = "../../crates/node/tests/store_arbitrary/cases.rs"]
mod cases;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|batches: Vec<cases::Batch>| cases::run(batches));
