//! `myraft-wire`: everything that crosses a process boundary in MyRaft.
//!
//! Data flows through the modules in this order:
//!
//! - [`key`]: the cluster secret that authenticates every datagram, and its key file.
//! - the bodies, grouped as in the design:
//!   - [`raft`]: Raft messages, log entries and membership, as plain serde types. The
//!     consensus core in `myraft-node` speaks these directly.
//!   - [`snapshot`]: snapshots too large for one datagram, split into chunks and joined.
//!   - [`admission`]: joining a cluster through the entrance.
//!   - [`health`]: the entrance's probes and the nodes' replies.
//!   - [`client`]: client requests and the one reply type they all get.
//!
//! Nothing in this crate knows how Raft works; it only knows how its messages look.

pub mod admission;
pub mod client;
pub mod health;
pub mod key;
pub mod raft;
pub mod snapshot;

pub use key::ClusterKey;
