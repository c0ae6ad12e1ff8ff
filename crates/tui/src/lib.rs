//! Operator tools for MyRaft: the `myraft-tui` console and the scriptable `myraft` command.
//!
//! - [`console`]: the `myraft-tui` console: cluster health on one screen, keys to act on it.

pub mod console;
