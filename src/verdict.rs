//! Turns a diff into a verdict. Kept apart from the diff so policy (thresholds, readiness) can
//! grow without touching how rows are compared.

use serde::Serialize;

use crate::diff::DiffResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Match,
    Diverged,
    NotReady,
    Error,
}

impl CheckStatus {
    pub fn name(self) -> &'static str {
        match self {
            CheckStatus::Match => "match",
            CheckStatus::Diverged => "diverged",
            CheckStatus::NotReady => "not_ready",
            CheckStatus::Error => "error",
        }
    }
}

/// A check matches only when every row pairs with an equal row and no compared column is
/// missing on one side. Duplicates that pair cleanly and type changes alone do not diverge.
pub fn check_status(diff: &DiffResult) -> CheckStatus {
    if diff.counts.divergent() == 0 && !diff.schema.diverges() {
        CheckStatus::Match
    } else {
        CheckStatus::Diverged
    }
}

/// Divergent rows over the larger side, 0 for two empty results.
pub fn divergence_ratio(diff: &DiffResult) -> f64 {
    let larger = diff.rows.batch.max(diff.rows.stream);
    if larger == 0 {
        0.0
    } else {
        diff.counts.divergent() as f64 / larger as f64
    }
}

/// The whole run: trouble outranks divergence, which outranks readiness, which outranks match.
pub fn run_status(checks: impl IntoIterator<Item = CheckStatus>) -> CheckStatus {
    let mut status = CheckStatus::Match;
    for check in checks {
        let rank = |s: CheckStatus| match s {
            CheckStatus::Match => 0,
            CheckStatus::NotReady => 1,
            CheckStatus::Diverged => 2,
            CheckStatus::Error => 3,
        };
        if rank(check) > rank(status) {
            status = check;
        }
    }
    status
}

/// Exit codes like diff(1): 0 match, 1 diverged, 2 trouble; and 3 when a stream was not ready
/// (nothing diverged, nothing failed: run again later).
pub fn exit_code(status: CheckStatus) -> i32 {
    match status {
        CheckStatus::Match => 0,
        CheckStatus::Diverged => 1,
        CheckStatus::Error => 2,
        CheckStatus::NotReady => 3,
    }
}
