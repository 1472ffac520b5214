//! The integration tests: one binary (one link of DataFusion instead of one per file), the real
//! `dualrun` binary on real files, servers and tools.

mod common;

#[cfg(feature = "ballista")]
mod ballista;
mod board;
mod changelog;
mod cli;
mod databases;
mod determinism;
mod docs;
mod gate;
mod hardening;
mod layers;
mod monitoring;
mod storage;
