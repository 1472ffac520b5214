//! dualrun as a library: the same pieces the binary wires together (see `main.rs`), public so
//! fuzz targets and tools can drive the parsers and the diff directly.
//!
//! The modules follow the data, and an import only ever points down this list (checked by
//! `tests/it/layers.rs`):
//! config → sources → engine → diff → verdict → history → gate → report → metrics → terminal →
//! cli → commands; `error`, `redact` and `words` are leaves any of them may use.

pub mod cli;
pub mod commands;
pub mod config;
pub mod diff;
pub mod engine;
pub mod error;
pub mod gate;
pub mod history;
pub mod metrics;
pub mod redact;
pub mod report;
pub mod sources;
pub mod terminal;
pub mod verdict;
pub mod words;
