//! `myraft_wire::codec::decode` on arbitrary bytes, with and without an expected cluster id,
//! tagged or not; the cases and checks are those of the stable property test,
//! `crates/wire/tests/datagram_arbitrary/cases.rs` (`decode_input`).

#![no_main]

#[path = "../../crates/wire/tests/datagram_arbitrary/cases.rs"]
#[allow(dead_code)]
mod cases;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cases::decode_input(data));
