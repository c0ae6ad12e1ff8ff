//! The receive-side checks of a node on a sequence of datagrams: `decode`, then
//! `ReplayFilter::accept` (and `ReplayGuard::accept`, freshness and the filter, with a
//! clock that moves both ways); the cases and checks are those of the stable property
//! test, `crates/wire/tests/datagram_arbitrary/cases.rs` (`receive`).

#![no_main]

#[path = "../../crates/wire/tests/datagram_arbitrary/cases.rs"]
#[allow(dead_code)]
mod cases;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|steps: Vec<cases::Step>| cases::receive(steps));
