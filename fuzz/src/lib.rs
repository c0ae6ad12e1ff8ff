//! What the fuzz targets share beyond the case files they include from the crates' tests.

use arbitrary::Arbitrary;

/// A number near where a small cluster is (terms, indexes), or any at all.
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
