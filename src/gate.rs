//! The migration gate: from the run history, per check, how many clean runs in a row it has on
//! distinct params (run dates), whether that proves it, and whether every required check is
//! proven so the batch pipeline may be switched off.
//!
//! Rules (documented in the README, exercised by the multi-night simulation test):
//! - only records with the check's current fingerprint count: a change of SQL, key, tolerance or
//!   ignored columns restarts the streak;
//! - per params, only the latest record counts: re-running a night replaces its verdict;
//! - verdicts are ordered by params (ISO dates sort by time); the streak counts clean verdicts
//!   back from the newest until a dirty one;
//! - clean: match, or diverged within `max_divergence_ratio` with no one-sided column;
//!   dirty: any other diverged run, which resets the streak;
//! - error and not_ready are no verdict: they neither count nor reset, but the gate is open only
//!   when the newest params has a clean verdict, so a check failing tonight is never "proven";
//! - a night without evidence (status empty, or a match on fewer batch rows than the check's
//!   min_rows as configured now) is no verdict either: an empty night proves nothing. The gate
//!   counts those nights so a streak that skipped many of them shows it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::CheckSpec;
use crate::history::RunRecord;
use crate::verdict::CheckStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// No run with the current definition of the check yet.
    NoRuns,
    /// The newest verdict diverges.
    Diverging,
    /// Clean so far, not yet for long enough (or the newest night has no verdict yet).
    Proving,
    /// Enough clean runs in a row: this analysis may move to the stream.
    Proven,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastDivergence {
    pub params: String,
    pub at: String,
    pub divergence_ratio: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateCheck {
    pub name: String,
    pub required: bool,
    pub clean_streak: u32,
    pub required_runs: u32,
    pub open: bool,
    pub stage: Stage,
    pub last_divergence: Option<LastDivergence>,
    /// Nights without evidence (empty results) since the last divergence: skipped by the streak.
    pub empty_nights: u32,
    /// Status of the newest params' record.
    pub latest_status: Option<CheckStatus>,
    pub latest_params: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateReport {
    /// Batch removal may go ahead: every required check is proven.
    pub ready: bool,
    pub proven: usize,
    pub required: usize,
    pub checks: Vec<GateCheck>,
}

enum Verdict {
    Clean,
    Dirty,
    /// Nothing to compare: not a verdict.
    Empty,
    None,
}

fn verdict(record: &RunRecord, check: &CheckSpec) -> Verdict {
    let evidence = check.evidence.is_met(record.rows_batch, record.rows_stream);
    match record.status {
        CheckStatus::Empty => Verdict::Empty,
        // Records written before `empty` existed, or under a lower min_rows than today's.
        CheckStatus::Match if !evidence => Verdict::Empty,
        CheckStatus::Match => Verdict::Clean,
        CheckStatus::Diverged
            if !record.schema_diverged
                && record.divergence_ratio <= check.gate.max_divergence_ratio =>
        {
            if evidence {
                Verdict::Clean
            } else {
                Verdict::Empty
            }
        }
        // A query that answers differently on identical input proves nothing, and the night
        // must not extend a streak either.
        CheckStatus::Diverged | CheckStatus::Unstable => Verdict::Dirty,
        CheckStatus::Error | CheckStatus::NotReady => Verdict::None,
    }
}

pub fn evaluate(checks: &[CheckSpec], records: &[RunRecord]) -> GateReport {
    let mut out = Vec::with_capacity(checks.len());
    for check in checks {
        let fingerprint = check.fingerprint();
        // Latest record per params; `records` are oldest first, so later ones replace.
        let mut by_params: BTreeMap<&str, &RunRecord> = BTreeMap::new();
        for record in records
            .iter()
            .filter(|r| r.check_name == check.name && r.config_hash == fingerprint)
        {
            let slot = by_params.entry(record.params.as_str()).or_insert(record);
            if record.started_at >= slot.started_at {
                *slot = record;
            }
        }
        let mut streak = 0;
        let mut empty_nights = 0;
        let mut last_divergence = None;
        for record in by_params.values().rev() {
            match verdict(record, check) {
                Verdict::Clean => streak += 1,
                Verdict::Empty => empty_nights += 1,
                Verdict::None => continue,
                Verdict::Dirty => {
                    last_divergence = Some(LastDivergence {
                        params: record.params.clone(),
                        at: record.started_at.clone(),
                        divergence_ratio: record.divergence_ratio,
                    });
                    break;
                }
            }
        }
        let newest = by_params.values().next_back();
        let newest_clean = newest.is_some_and(|r| matches!(verdict(r, check), Verdict::Clean));
        let newest_dirty = newest.is_some_and(|r| matches!(verdict(r, check), Verdict::Dirty));
        let open = newest_clean && streak >= check.gate.clean_runs;
        let stage = if newest.is_none() {
            Stage::NoRuns
        } else if open {
            Stage::Proven
        } else if newest_dirty {
            Stage::Diverging
        } else {
            Stage::Proving
        };
        out.push(GateCheck {
            name: check.name.clone(),
            required: check.gate.required,
            clean_streak: streak,
            required_runs: check.gate.clean_runs,
            open,
            stage,
            last_divergence,
            empty_nights,
            latest_status: newest.map(|r| r.status),
            latest_params: newest.map(|r| r.params.clone()),
        });
    }
    let required = out.iter().filter(|c| c.required).count();
    let proven = out.iter().filter(|c| c.required && c.open).count();
    GateReport {
        ready: required > 0 && proven == required,
        proven,
        required,
        checks: out,
    }
}
