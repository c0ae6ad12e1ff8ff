//! The number the arbitrary-input tests and the fuzz targets build their cases from; one
//! file, included by `#[path]` from each of them (`crates/*/tests/*_arbitrary/cases.rs`,
//! `fuzz/src/lib.rs`), since test crates cannot depend on one another.

use arbitrary::Arbitrary;

/// A number near where a small cluster or log is (terms, indexes), or any at all.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Num {
    Small(u8),
    Any(u64),
    Max,
}

impl Num {
    /// Below `small_below` for [`Num::Small`].
    pub fn get(self, small_below: u8) -> u64 {
        match self {
            Num::Small(n) => u64::from(n % small_below.max(1)),
            Num::Any(n) => n,
            Num::Max => u64::MAX,
        }
    }
}
