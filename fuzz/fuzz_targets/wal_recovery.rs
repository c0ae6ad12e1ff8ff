//! `DiskStorage::open` on arbitrary files in a data dir; the cases and checks are those of
//! the stable property test, `crates/node/tests/wal_arbitrary/cases.rs`.

#![no_main]

#[path = "../../crates/node/tests/wal_arbitrary/cases.rs"]
mod cases;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: cases::Case| cases::run(case));
