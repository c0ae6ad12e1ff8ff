//! Operator tools for MyRaft: the `myraft-tui` console and the scriptable `myraft` command.
//!
//! - [`chaos`]: a UDP relay that drops, duplicates, reorders, delays and partitions
//!   traffic between real processes, for fault tests.
//! - [`cli`]: the `myraft` command: flags, input checks, one request through
//!   `myraft_wire::client::Client`, output as JSON or text; `bench` lives here too.
//! - [`console`]: the `myraft-tui` console: cluster health on one screen, keys to act on it.
//! - [`members`]: the member table both show, one column list and one cell format.
//! - [`local`]: a whole cluster as child processes on this machine (`myraft local`,
//!   `bench --local`, `myraft-tui --local`).
//! - [`verify`]: the linearizability checker behind `myraft verify`, the history formats
//!   it reads, and the workload that records one from a live cluster (`verify::live`).

pub mod chaos;
pub mod cli;
pub mod console;
pub mod local;
pub mod members;
pub mod verify;
