//! `myraft-entrance`: the cluster's front door. Admission with operator approval, failure
//! detection by probing, and routing of client requests to the leader.
//!
//! Not built yet: this crate only reserves its place in the workspace.
