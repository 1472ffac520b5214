//! Turns a diff into a verdict. Kept apart from the diff so policy (thresholds, readiness) can
//! grow without touching how rows are compared.

use serde::{Deserialize, Serialize};

mod check;
pub mod readiness;

pub use check::{CheckReport, Compared};

use crate::config::Evidence;
use crate::diff::{DiffResult, Samples};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Match,
    Diverged,
    NotReady,
    /// Nothing diverged, but there was nothing to compare: no rows (or fewer than the check's
    /// `min_rows` on the batch side). No evidence either way, so not a verdict the gate counts.
    Empty,
    /// The query answered differently on identical input (the control runs of the batch side
    /// disagree): its result cannot prove or disprove anything until it is made deterministic.
    Unstable,
    Error,
}

impl CheckStatus {
    pub fn name(self) -> &'static str {
        match self {
            CheckStatus::Match => "match",
            CheckStatus::Diverged => "diverged",
            CheckStatus::NotReady => "not_ready",
            CheckStatus::Empty => "empty",
            CheckStatus::Unstable => "unstable",
            CheckStatus::Error => "error",
        }
    }

    pub const ALL: [CheckStatus; 6] = [
        CheckStatus::Match,
        CheckStatus::Diverged,
        CheckStatus::NotReady,
        CheckStatus::Empty,
        CheckStatus::Unstable,
        CheckStatus::Error,
    ];
}

/// A check matches only when every row pairs with an equal row and no compared column is
/// missing on one side, and there was something to compare. Duplicates that pair cleanly and
/// type changes alone do not diverge; a divergence is evidence however few the rows. A query
/// whose control runs disagree is `unstable` whatever its diff says: neither a match nor a
/// divergence of such a query means anything.
pub fn check_status(diff: &DiffResult, evidence: Evidence, stable: bool) -> CheckStatus {
    if !stable {
        CheckStatus::Unstable
    } else if diff.counts.divergent() > 0 || diff.schema.diverges() {
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

/// The whole run: trouble outranks divergence, which outranks instability, then readiness,
/// then an empty result, then match.
pub fn run_status(checks: impl IntoIterator<Item = CheckStatus>) -> CheckStatus {
    let mut status = CheckStatus::Match;
    for check in checks {
        let rank = |s: CheckStatus| match s {
            CheckStatus::Match => 0,
            CheckStatus::Empty => 1,
            CheckStatus::NotReady => 2,
            CheckStatus::Unstable => 3,
            CheckStatus::Diverged => 4,
            CheckStatus::Error => 5,
        };
        if rank(check) > rank(status) {
            status = check;
        }
    }
    status
}

pub use crate::error::Exit;

impl Exit {
    /// The exit of a run whose (worst) status is `status`. Unstable is 1: the check fails and
    /// someone must act, as for a divergence.
    pub fn of(status: CheckStatus) -> Exit {
        match status {
            CheckStatus::Match => Exit::Match,
            CheckStatus::Diverged | CheckStatus::Unstable => Exit::Diverged,
            CheckStatus::Error => Exit::Trouble,
            CheckStatus::NotReady => Exit::NotReady,
            CheckStatus::Empty => Exit::Empty,
        }
    }
}

/// What the control runs found: the batch side's query run again in other physical layouts
/// and diffed against its own first answer. Differences can only come from the query itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ControlReport {
    pub runs: u32,
    pub layouts: Vec<String>,
    /// Every layout gave the same answer.
    pub stable: bool,
    /// Runs whose answer differed from the first.
    pub differing_runs: u32,
    /// Columns whose values moved between layouts, most moved first.
    pub moved_columns: Vec<String>,
    /// Rows that moved in the worst run (changed, or present in one answer only).
    pub moved_rows: u64,
    /// Rows that moved, from the first run that differed.
    pub samples: Samples,
}

/// Sums up the diffs of the control runs, one per layout.
pub fn control_report(runs: Vec<(String, DiffResult)>) -> ControlReport {
    let mut report = ControlReport {
        runs: runs.len() as u32,
        layouts: Vec::new(),
        stable: true,
        differing_runs: 0,
        moved_columns: Vec::new(),
        moved_rows: 0,
        samples: Samples::default(),
    };
    let mut moved: Vec<(String, u64)> = Vec::new();
    for (layout, diff) in runs {
        report.layouts.push(layout);
        if diff.counts.divergent() == 0 && !diff.schema.diverges() {
            continue;
        }
        if report.stable {
            report.samples = diff.samples;
        }
        report.stable = false;
        report.differing_runs += 1;
        report.moved_rows = report.moved_rows.max(diff.counts.divergent());
        for column in diff.columns.iter().filter(|c| c.mismatched > 0) {
            match moved.iter_mut().find(|(name, _)| name == &column.name) {
                Some((_, n)) => *n += column.mismatched,
                None => moved.push((column.name.clone(), column.mismatched)),
            }
        }
    }
    moved.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    report.moved_columns = moved.into_iter().map(|(name, _)| name).collect();
    report
}
