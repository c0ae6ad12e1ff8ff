//! The member table of `myraft status` and of the console's peer pane: one list of columns
//! and one way to write each cell, so that the two never disagree.

use crate::console::format;
use myraft_wire::api::MemberStatus;
use myraft_wire::health::Role;

/// One column of the member table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its heading.
    pub header: &'static str,
    /// A number, aligned on the right.
    pub numeric: bool,
}

const fn col(header: &'static str, numeric: bool) -> Column {
    Column { header, numeric }
}

/// The columns, in order.
pub const COLUMNS: [Column; 10] = [
    col("NAME", false),
    col("ADDRESS", false),
    col("ROLE", false),
    col("VOTER", false),
    col("HEALTH", false),
    col("TERM", true),
    col("COMMIT", true),
    col("APPLIED", true),
    col("TRAILS", true),
    col("LAST CONTACT", false),
];

/// Where each column is in [`COLUMNS`], for the cells a view styles itself.
pub mod at {
    /// The member's health.
    pub const HEALTH: usize = 4;
    /// Entries its commit index is behind the cluster's.
    pub const TRAILS: usize = 8;
}

/// How far a member's commit index is behind `commit`, the cluster's; the leader sets it.
pub fn trails(m: &MemberStatus, commit: u64) -> String {
    match m.role {
        Role::Leader => "—".to_owned(),
        _ => format::count(commit.saturating_sub(m.commit_index)),
    }
}

/// The text of one member's row, in [`COLUMNS`] order; `commit` is the cluster's commit
/// index.
pub fn cells(m: &MemberStatus, commit: u64) -> [String; 10] {
    [
        m.name.clone(),
        m.addr.clone(),
        m.role.as_str().to_owned(),
        if m.voter { "yes" } else { "no" }.to_owned(),
        m.health.as_str().to_owned(),
        m.term.to_string(),
        format::count(m.commit_index),
        format::count(m.applied_index),
        trails(m, commit),
        m.last_contact_ms
            .map_or_else(|| "never".to_owned(), format::millis),
    ]
}
