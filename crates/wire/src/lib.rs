//! `myraft-wire`: everything that crosses a process boundary in MyRaft.
//!
//! Data flows through the modules in this order:
//!
//! - [`key`]: the cluster secret that authenticates every datagram, and its key file.
//! - [`raft`]: the Raft messages, log entries and membership, as plain serde types. The
//!   consensus core in `myraft-node` speaks these directly.
//!
//! Nothing in this crate knows how Raft works; it only knows how its messages look.

pub mod key;
pub mod raft;

pub use key::ClusterKey;
