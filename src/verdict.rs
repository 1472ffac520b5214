//! Turns a diff into a verdict. Kept apart from the diff so policy (thresholds, readiness) can
//! grow without touching how rows are compared.

use serde::{Deserialize, Serialize};

use crate::config::Evidence;
use crate::diff::DiffResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Match,
    Diverged,
    NotReady,
    /// Nothing diverged, but there was nothing to compare: no rows (or fewer than the check's
    /// `min_rows` on the batch side). No evidence either way, so not a verdict the gate counts.
    Empty,
    Error,
}

impl CheckStatus {
    pub fn name(self) -> &'static str {
        match self {
            CheckStatus::Match => "match",
            CheckStatus::Diverged => "diverged",
            CheckStatus::NotReady => "not_ready",
            CheckStatus::Empty => "empty",
            CheckStatus::Error => "error",
        }
    }

    pub const ALL: [CheckStatus; 5] = [
        CheckStatus::Match,
        CheckStatus::Diverged,
        CheckStatus::NotReady,
        CheckStatus::Empty,
        CheckStatus::Error,
    ];
}

/// A check matches only when every row pairs with an equal row and no compared column is
/// missing on one side, and there was something to compare. Duplicates that pair cleanly and
/// type changes alone do not diverge; a divergence is evidence however few the rows.
pub fn check_status(diff: &DiffResult, evidence: Evidence) -> CheckStatus {
    if diff.counts.divergent() > 0 || diff.schema.diverges() {
        CheckStatus::Diverged
    } else if !evidence.is_met(diff.rows.batch, diff.rows.stream) {
        CheckStatus::Empty
    } else {
        CheckStatus::Match
    }
}

/// The share of rows, over both sides, that have no equal partner on the other side: a
/// mismatched pair counts its two rows, a missing or extra row itself. 0 when the results are
/// equal (or both empty), 1 when no row pairs with an equal row; never outside 0..=1.
pub fn divergence_ratio(diff: &DiffResult) -> f64 {
    let counts = &diff.counts;
    let rows = diff.rows.batch + diff.rows.stream;
    let unpaired = 2 * counts.mismatched + counts.missing_in_stream + counts.extra_in_stream;
    if rows == 0 {
        0.0
    } else {
        (unpaired as f64 / rows as f64).min(1.0)
    }
}

/// The whole run: trouble outranks divergence, which outranks readiness, which outranks an
/// empty result, which outranks match.
pub fn run_status(checks: impl IntoIterator<Item = CheckStatus>) -> CheckStatus {
    let mut status = CheckStatus::Match;
    for check in checks {
        let rank = |s: CheckStatus| match s {
            CheckStatus::Match => 0,
            CheckStatus::Empty => 1,
            CheckStatus::NotReady => 2,
            CheckStatus::Diverged => 3,
            CheckStatus::Error => 4,
        };
        if rank(check) > rank(status) {
            status = check;
        }
    }
    status
}

/// Exit codes like diff(1): 0 match, 1 diverged, 2 trouble; 3 when a stream was not ready
/// (nothing diverged, nothing failed: run again later); 4 when a result was empty (nothing
/// diverged, but nothing was compared either: no evidence).
pub fn exit_code(status: CheckStatus) -> i32 {
    match status {
        CheckStatus::Match => 0,
        CheckStatus::Diverged => 1,
        CheckStatus::Error => 2,
        CheckStatus::NotReady => 3,
        CheckStatus::Empty => 4,
    }
}
