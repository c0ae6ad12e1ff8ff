//! Raft core tests on the deterministic simulation harness: the classic Raft lab scenarios,
//! one per property, and a sweep of random fault schedules over thousands of seeds.
//!
//! Every test prints its seed on failure; `MYRAFT_SEED=N` replays one sweep schedule and
//! `MYRAFT_SEEDS=N` sweeps N seeds.

mod arbitrary;
mod handlers;
mod harness;
mod invariants;
mod scenarios;
mod sweep;
