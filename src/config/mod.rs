//! The configuration model: the TOML file of the nightly job and the flags of a one-off compare
//! both end up as the same validated [`Plan`] of tables and checks, through one resolver.
//! `file` is the schema as written, `values` the typed values both serde and clap parse into,
//! `plan` the resolved plan, `resolve` the only way from the first to the last.

mod file;
mod plan;
mod resolve;
mod values;

pub use file::*;
pub use plan::*;
pub use resolve::*;
pub use values::*;

#[cfg(test)]
mod tests;
