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
use crate::history::{Mark, RunRecord};
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
    /// Its consumers read the stream tables now (recorded by the team); the check keeps running
    /// as a reconciliation, and a divergence is a stream-pipeline incident.
    Migrated,
    /// Its batch job is switched off (recorded by the team).
    Retired,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::NoRuns,
        Stage::Diverging,
        Stage::Proving,
        Stage::Proven,
        Stage::Migrated,
        Stage::Retired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::NoRuns => "no_runs",
            Stage::Diverging => "diverging",
            Stage::Proving => "proving",
            Stage::Proven => "proven",
            Stage::Migrated => "migrated",
            Stage::Retired => "retired",
        }
    }
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
    /// Divergence ratio of the newest run with a verdict.
    pub latest_ratio: Option<f64>,
    /// The columns that disagreed most in the newest run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latest_columns: Vec<String>,
    /// When the current streak reached the required runs (the run that proved the check).
    pub proven_at: Option<String>,
    pub migrated_at: Option<String>,
    pub retired_at: Option<String>,
    /// Migrated, and the newest verdict diverges: an incident of the stream pipeline.
    pub incident: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateReport {
    /// Batch removal may go ahead: every required check is proven.
    pub ready: bool,
    pub proven: usize,
    pub required: usize,
    /// Required checks migrated (or retired) already.
    pub migrated: usize,
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

/// The runs of a check under its current definition, the latest per params (a re-run night
/// replaces its verdict), ordered by params; lifecycle marks are no runs.
fn latest_per_params<'a>(
    check: &CheckSpec,
    records: &'a [RunRecord],
) -> BTreeMap<&'a str, &'a RunRecord> {
    let fingerprint = check.fingerprint();
    let mut by_params: BTreeMap<&str, &RunRecord> = BTreeMap::new();
    // `records` are oldest first, so later ones replace.
    for record in records
        .iter()
        .filter(|r| r.check_name == check.name && r.config_hash == fingerprint && r.mark.is_none())
    {
        let slot = by_params.entry(record.params.as_str()).or_insert(record);
        if record.started_at >= slot.started_at {
            *slot = record;
        }
    }
    by_params
}

pub fn evaluate(checks: &[CheckSpec], records: &[RunRecord]) -> GateReport {
    let mut out = Vec::with_capacity(checks.len());
    for check in checks {
        let by_params = latest_per_params(check, records);
        let mut streak = 0;
        let mut empty_nights = 0;
        let mut last_divergence = None;
        let mut proven_at = None;
        let clean: Vec<&RunRecord> = by_params
            .values()
            .rev()
            .take_while(|r| !matches!(verdict(r, check), Verdict::Dirty))
            .filter(|r| matches!(verdict(r, check), Verdict::Clean))
            .copied()
            .collect();
        // The streak's clean runs, newest first: the one that made it long enough proved it.
        if clean.len() >= check.gate.clean_runs as usize {
            proven_at = Some(
                clean[clean.len() - check.gate.clean_runs as usize]
                    .started_at
                    .clone(),
            );
        }
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
        let marked = |mark: Mark| {
            records
                .iter()
                .filter(|r| r.check_name == check.name && r.mark == Some(mark))
                .map(|r| r.started_at.clone())
                .max()
        };
        let (migrated_at, retired_at) = (marked(Mark::Migrated), marked(Mark::Retired));
        let proven = newest_clean && streak >= check.gate.clean_runs;
        let open = proven || migrated_at.is_some();
        let stage = if retired_at.is_some() {
            Stage::Retired
        } else if migrated_at.is_some() {
            Stage::Migrated
        } else if newest.is_none() {
            Stage::NoRuns
        } else if proven {
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
            latest_ratio: by_params
                .values()
                .rev()
                .find(|r| !matches!(verdict(r, check), Verdict::None))
                .map(|r| r.divergence_ratio),
            latest_columns: newest.map(|r| r.columns.clone()).unwrap_or_default(),
            proven_at: proven_at.filter(|_| proven || migrated_at.is_some()),
            incident: migrated_at.is_some() && newest_dirty,
            migrated_at,
            retired_at,
        });
    }
    let required = out.iter().filter(|c| c.required).count();
    let proven = out.iter().filter(|c| c.required && c.open).count();
    let migrated = out
        .iter()
        .filter(|c| c.required && matches!(c.stage, Stage::Migrated | Stage::Retired))
        .count();
    // A migrated analysis whose stream diverges tonight is an open incident: retiring batch,
    // its reconciliation, is not ready until the stream agrees again.
    let incidents = out.iter().any(|c| c.required && c.incident);
    GateReport {
        ready: required > 0 && proven == required && !incidents,
        proven,
        required,
        migrated,
        checks: out,
    }
}

/// How a night shows on the board's streak bar: clean, diverged, or no verdict (not ready,
/// error, empty, and unstable, which resets the streak but is the query's fault, not the
/// stream's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NightKind {
    Clean,
    Dirty,
    /// No verdict: error, not ready, or no evidence (empty).
    NoVerdict,
}

/// One night of a check as the gate sees it: the latest run of those params.
#[derive(Debug, Clone, Serialize)]
pub struct Night {
    pub params: String,
    pub run_date: Option<String>,
    pub status: CheckStatus,
    pub kind: NightKind,
    pub divergence_ratio: f64,
    pub started_at: String,
    pub columns: Vec<String>,
    pub findings: Vec<crate::diff::FindingKind>,
}

/// The nights of a check under its current definition, oldest first: what its streak is made of.
pub fn nights(check: &CheckSpec, records: &[RunRecord]) -> Vec<Night> {
    latest_per_params(check, records)
        .values()
        .map(|r| Night {
            params: r.params.clone(),
            run_date: r.run_date.clone(),
            status: r.status,
            kind: match (verdict(r, check), r.status) {
                // Unstable resets the streak, but the stream is not what moved: grey, not red.
                (_, CheckStatus::Unstable) => NightKind::NoVerdict,
                (Verdict::Clean, _) => NightKind::Clean,
                (Verdict::Dirty, _) => NightKind::Dirty,
                (Verdict::Empty | Verdict::None, _) => NightKind::NoVerdict,
            },
            divergence_ratio: r.divergence_ratio,
            started_at: r.started_at.clone(),
            columns: r.columns.clone(),
            findings: r.findings.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The gate rules, one by one, on records built in memory.

    use super::*;
    use crate::config::Plan;

    fn checks(extra: &str) -> Vec<CheckSpec> {
        let text = format!(
            "[gate]\nclean_runs = 3\n{extra}\n[tables.t]\nbatch = \"b/\"\nstream = \"s/\"\n\
             [[checks]]\nname = \"c\"\nsql = \"SELECT id, v FROM t\"\nkey = [\"id\"]\n\
             [[checks]]\nname = \"other\"\nsql = \"SELECT id FROM t\"\n"
        );
        Plan::from_config_text(&text, std::path::Path::new(""))
            .unwrap()
            .all_checks
    }

    /// One night of check `c`: `status` on `day` (2026-11-DAY), run at `minute` past midnight.
    fn night(
        check: &CheckSpec,
        day: u32,
        status: CheckStatus,
        ratio: f64,
        minute: u32,
    ) -> RunRecord {
        let divergent = u64::from(status == CheckStatus::Diverged);
        RunRecord {
            run_id: format!("run-{day}-{minute}"),
            check_name: check.name.clone(),
            params: format!("{{\"run_date\":\"2026-11-{day:02}\"}}"),
            run_date: Some(format!("2026-11-{day:02}")),
            started_at: format!("2026-12-{day:02}T00:{minute:02}:00.000000Z"),
            ended_at: format!("2026-12-{day:02}T00:{minute:02}:30.000000Z"),
            status,
            rows_batch: if status == CheckStatus::Empty { 0 } else { 100 },
            rows_stream: if status == CheckStatus::Empty { 0 } else { 100 },
            matched: 100 - divergent,
            mismatched: divergent,
            missing_in_stream: 0,
            extra_in_stream: 0,
            duplicate_keys_batch: 0,
            duplicate_keys_stream: 0,
            divergence_ratio: ratio,
            schema_diverged: false,
            dualrun_version: "test".into(),
            config_hash: check.fingerprint(),
            error: None,
            columns: Vec::new(),
            findings: Vec::new(),
            mark: None,
        }
    }

    fn gate_of(checks: &[CheckSpec], records: &[RunRecord]) -> GateCheck {
        evaluate(checks, records).checks.remove(0)
    }

    use CheckStatus::*;

    #[test]
    fn clean_nights_in_a_row_prove_a_check() {
        let checks = checks("");
        let c = &checks[0];
        let two: Vec<_> = (1..=2).map(|d| night(c, d, Match, 0.0, 0)).collect();
        let gate = gate_of(&checks, &two);
        assert_eq!(
            (gate.clean_streak, gate.open, gate.stage),
            (2, false, Stage::Proving)
        );
        let three: Vec<_> = (1..=3).map(|d| night(c, d, Match, 0.0, 0)).collect();
        let gate = gate_of(&checks, &three);
        assert_eq!(
            (gate.clean_streak, gate.open, gate.stage),
            (3, true, Stage::Proven)
        );
        // The other check has no runs: batch removal waits for it.
        let report = evaluate(&checks, &three);
        assert_eq!(
            (report.ready, report.proven, report.required),
            (false, 1, 2)
        );
        assert_eq!(report.checks[1].stage, Stage::NoRuns);
    }

    #[test]
    fn a_divergence_resets_and_a_rerun_replaces_the_night() {
        let checks = checks("");
        let c = &checks[0];
        let mut records = vec![
            night(c, 1, Match, 0.0, 0),
            night(c, 2, Diverged, 0.01, 0),
            night(c, 3, Match, 0.0, 0),
        ];
        let gate = gate_of(&checks, &records);
        assert_eq!((gate.clean_streak, gate.stage), (1, Stage::Proving));
        assert_eq!(
            gate.last_divergence.as_ref().map(|d| d.divergence_ratio),
            Some(0.01)
        );
        // Night 2 run again after a fix: its latest record counts.
        records.push(night(c, 2, Match, 0.0, 30));
        let gate = gate_of(&checks, &records);
        assert_eq!((gate.clean_streak, gate.open), (3, true));
        assert!(gate.last_divergence.is_none());
        // The newest night diverging: diverging, closed.
        records.push(night(c, 4, Diverged, 0.5, 0));
        let gate = gate_of(&checks, &records);
        assert_eq!(
            (gate.clean_streak, gate.open, gate.stage),
            (0, false, Stage::Diverging)
        );
    }

    #[test]
    fn errors_not_ready_and_empty_nights_are_no_verdict() {
        let checks = checks("");
        let c = &checks[0];
        let mut records = vec![
            night(c, 1, Match, 0.0, 0),
            night(c, 2, Error, 0.0, 0),
            night(c, 3, Match, 0.0, 0),
            night(c, 4, Empty, 0.0, 0),
            night(c, 5, Match, 0.0, 0),
        ];
        let gate = gate_of(&checks, &records);
        assert_eq!(
            (gate.clean_streak, gate.empty_nights, gate.open),
            (3, 1, true)
        );
        // Failing tonight: never proven, whatever the streak.
        records.push(night(c, 6, NotReady, 0.0, 0));
        let gate = gate_of(&checks, &records);
        assert_eq!(
            (gate.clean_streak, gate.open, gate.stage),
            (3, false, Stage::Proving)
        );
        // An unstable night is dirty.
        records.push(night(c, 7, Unstable, 0.0, 0));
        assert_eq!(gate_of(&checks, &records).clean_streak, 0);
    }

    #[test]
    fn tolerated_ratio_is_clean_and_a_new_definition_restarts() {
        let tolerant = checks("max_divergence_ratio = 0.02");
        let c = &tolerant[0];
        let records: Vec<_> = (1..=3).map(|d| night(c, d, Diverged, 0.01, 0)).collect();
        assert!(gate_of(&tolerant, &records).open);
        // A column on one side only is never clean.
        let mut drifted = records.clone();
        drifted[2].schema_diverged = true;
        assert_eq!(gate_of(&tolerant, &drifted).stage, Stage::Diverging);
        // The policy of today judges old records: without the tolerance they diverge.
        let strict = checks("");
        assert_eq!(gate_of(&strict, &records).stage, Stage::Diverging);
        // Records of another definition of the check (other SQL, key, tolerance) do not count.
        let mut changed = records.clone();
        for record in &mut changed {
            record.config_hash = "0000000000000000".into();
        }
        assert_eq!(gate_of(&tolerant, &changed).stage, Stage::NoRuns);
    }
}
