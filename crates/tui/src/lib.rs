//! Operator tools for MyRaft: the `myraft-tui` console and the scriptable `myraft` command.
//!
//! Not built yet: this crate only reserves its place in the workspace.
