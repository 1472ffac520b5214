//! dualrun as a library: the same pieces the binary wires together (see `main.rs`), public so
//! fuzz targets and tools can drive the parsers and the diff directly.

pub mod app;
pub mod catalog;
pub mod changelog;
pub mod cli;
pub mod config;
#[cfg(feature = "delta")]
pub mod delta;
pub mod diff;
pub mod distributed;
pub mod engine;
pub mod gate;
pub mod history;
pub mod metrics;
pub mod readiness;
pub mod redact;
pub mod report;
pub mod serve;
pub mod trouble;
pub mod verdict;
pub mod words;
