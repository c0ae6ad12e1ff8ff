//! What the fuzz targets share beyond the case files they include from the crates' tests.


#[path = "../../crates/wire/tests/common/num.rs"]
mod num;
pub use num::Num;
