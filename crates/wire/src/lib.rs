//! `myraft-wire`: everything that crosses a process boundary in MyRaft.
//!
//! A received datagram passes through the modules in this order; a sent one goes back up:
//!
//! - [`key`]: the cluster secret that authenticates every datagram, and its key file.
//! - [`codec`]: bytes ⇄ [`Envelope`]: size limits, protocol version, cluster id and the
//!   HMAC tag, checked before anything is parsed. Nothing above it sees raw bytes.
//! - [`replay`]: drops datagrams that are stale, from before the receiver started, or
//!   already received from their sender.
//! - [`envelope`]: the [`Envelope`] header and the [`Body`] enum of every message.
//! - the bodies, grouped as in the design:
//!   - [`raft`]: Raft messages, log entries and membership, as plain serde types. The
//!     consensus core in `myraft-node` speaks these directly.
//!   - [`snapshot`]: snapshots too large for one datagram, split into chunks and joined.
//!   - [`admission`]: joining a cluster through the entrance.
//!   - [`health`]: the entrance's probes and the nodes' replies.
//!   - [`api`]: what clients ask (`ClientOp`) and the one reply type they all get.
//! - [`client`]: the UDP request client on top of all that: routing to the leader,
//!   retries that keep writes exactly-once, timeouts. `myraft`, the console and `bench`
//!   use it.
//!
//! [`util`] holds the few pieces every process shares: the data-dir lock, the wall clock,
//! jittered intervals, the log file.
//!
//! `strategies` (in tests, or with the `proptest` feature) generates every message for
//! property tests, here and in the crates that use this one. `test_util` (with the
//! `test-util` feature) is a bare UDP client for the servers' tests.
//!
//! Nothing in this crate knows how Raft works; it only knows how its messages look.

#![warn(missing_docs)]

pub mod admission;
pub mod api;
pub mod client;
pub mod codec;
pub mod envelope;
pub mod health;
pub mod key;
pub mod raft;
pub mod replay;
pub mod snapshot;
#[cfg(any(test, feature = "proptest"))]
pub mod strategies;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod util;

pub use client::{Client, ClientOptions, RequestError};
pub use codec::{
    decode, encode, encode_body, DecodeError, EncodeError, MAX_DATAGRAM, PROTOCOL_VERSION,
};
pub use envelope::{Body, Envelope};
pub use key::ClusterKey;
pub use replay::{ReplayFilter, ReplayGuard, ReplayWindow};
