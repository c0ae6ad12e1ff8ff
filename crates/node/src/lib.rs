//! `myraft-node`: one server of a MyRaft cluster.
//!
//! Data flows through a node in this order: socket → decode → [`raft`] core (pure) →
//! [`storage`] (fsync) → send → apply to the [`state_machine`] → reply.
//!
//! - [`raft`]: the consensus core. No I/O: messages, ticks and proposals in; messages to
//!   send, state to persist and entries to apply out.
//! - [`storage`]: the durable log, hard state and snapshot (a checksummed, segmented
//!   write-ahead log on disk), synced before anything is promised; and the data-dir lock.
//! - [`server`]: the tokio UDP server that drives all of the above: `myraft-node`.
//! - [`state_machine`]: the replicated state: a versioned key/value map in the style of
//!   etcd's MVCC, and exactly-once client sessions. Deterministic; no I/O.

pub mod raft;
pub mod server;
pub mod state_machine;
pub mod storage;
pub mod store;
