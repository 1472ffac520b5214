//! Prometheus metrics of a run, from one `prometheus` registry, and the three ways out: a
//! node_exporter textfile (`textfile`), a Pushgateway (`pushgateway`), and the `/metrics`
//! endpoint of `dualrun serve` (which encodes [`registry`] itself).
//!
//! The one subtle rule: last-success timestamps only move forward when a check (or the whole
//! run) reached a verdict, so a failed night never erases the evidence of the last good one.
//! Each way out carries them over its own way: the textfile re-reads the previous file, the
//! Pushgateway keeps them in groups that only successful runs replace, `serve` keeps them in memory.

use std::collections::BTreeMap;

use anyhow::Result;
use prometheus::{Encoder, Gauge, GaugeVec, Opts, Registry, TextEncoder};

use crate::report::RunReport;
use crate::verdict::CheckStatus;

mod pushgateway;
mod textfile;

pub use pushgateway::push;
pub use textfile::write_textfile;

pub const CHECK_LAST_SUCCESS: &str = "dualrun_check_last_success_timestamp_seconds";
pub const RUN_LAST_SUCCESS: &str = "dualrun_last_success_timestamp_seconds";

/// Last-success timestamps of earlier runs, carried into the next exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastSuccess {
    pub checks: BTreeMap<String, f64>,
    pub run: Option<f64>,
}

impl LastSuccess {
    /// Moves the timestamps forward for what this run proved: every check with a verdict, and
    /// the run itself when all of its checks reached one.
    pub fn advance(&mut self, report: &RunReport, now: f64) {
        for check in &report.checks {
            // An empty result is no verdict: nights of them must end in DualrunCheckStale.
            if !matches!(check.status, CheckStatus::Error | CheckStatus::Empty) {
                self.checks.insert(check.name.clone(), now);
            }
        }
        if run_completed(report) {
            self.run = Some(now);
        }
    }

    /// Reads the timestamps from a previous exposition (the textfile), ignoring anything else.
    pub fn parse_exposition(text: &str) -> LastSuccess {
        let mut found = LastSuccess::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if series == RUN_LAST_SUCCESS {
                found.run = Some(value);
            } else if let Some(check) = series
                .strip_prefix(CHECK_LAST_SUCCESS)
                .and_then(|labels| label_value(labels, "check"))
            {
                found.checks.insert(check, value);
            }
        }
        found
    }
}

/// The value of one label in `{a="x",b="y"}`, unescaped.
fn label_value(labels: &str, name: &str) -> Option<String> {
    let inner = labels.strip_prefix('{')?.strip_suffix('}')?;
    let start = inner.find(&format!("{name}=\""))? + name.len() + 2;
    let mut value = String::new();
    let mut chars = inner[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            '"' => return Some(value),
            other => value.push(other),
        }
    }
    None
}

/// The whole run completed: every check reached a verdict.
pub fn run_completed(report: &RunReport) -> bool {
    report.error.is_none() && report.checks.iter().all(|c| c.status != CheckStatus::Error)
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec> {
    let vec = GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<Gauge> {
    let gauge = Gauge::with_opts(Opts::new(name, help))?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

/// Which metric families go where: the run's results, or the last-success timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Families {
    All,
    ResultsOnly,
}

/// Builds the registry of one run. Label values come from the config (check and column names),
/// never from row values, so the number of series stays bounded.
pub fn registry(
    report: &RunReport,
    last_success: &LastSuccess,
    families: Families,
) -> Result<Registry> {
    let registry = Registry::new();
    let rows = gauge_vec(
        &registry,
        "dualrun_check_rows",
        "Rows in each side's query result.",
        &["check", "side"],
    )?;
    let divergent = gauge_vec(
        &registry,
        "dualrun_check_divergent_rows",
        "Divergent rows by kind: missing_in_stream, extra_in_stream or mismatched.",
        &["check", "kind"],
    )?;
    let matched = gauge_vec(
        &registry,
        "dualrun_check_matched_rows",
        "Rows paired on both sides with equal values.",
        &["check"],
    )?;
    let ratio = gauge_vec(
        &registry,
        "dualrun_check_divergence_ratio",
        "Rows without an equal partner: (2 x mismatched + missing + extra) / (batch rows + stream rows), 0 to 1.",
        &["check"],
    )?;
    let columns = gauge_vec(
        &registry,
        "dualrun_check_column_mismatched_rows",
        "Rows present on both sides whose value of this column differs.",
        &["check", "column"],
    )?;
    let duplicates = gauge_vec(
        &registry,
        "dualrun_check_duplicate_keys",
        "Key values (keyless: distinct rows) occurring more than once on a side.",
        &["check", "side"],
    )?;
    let schema = gauge_vec(
        &registry,
        "dualrun_check_schema_changes",
        "Schema differences between the two results by kind: only_in_batch, only_in_stream, type_change.",
        &["check", "kind"],
    )?;
    let passed = gauge_vec(
        &registry,
        "dualrun_check_passed",
        "1 when the check's verdict is match, else 0.",
        &["check"],
    )?;
    let up = gauge_vec(
        &registry,
        "dualrun_check_up",
        "1 when the check reached a verdict, 0 when it failed.",
        &["check"],
    )?;
    let status = gauge_vec(
        &registry,
        "dualrun_check_status",
        "1 for the check's current status (match, diverged, not_ready, empty, unstable, error), 0 for the others.",
        &["check", "status"],
    )?;
    let duration = gauge_vec(
        &registry,
        "dualrun_check_duration_seconds",
        "Wall time of the check's last run.",
        &["check"],
    )?;
    let build = gauge_vec(
        &registry,
        "dualrun_build_info",
        "Always 1; the version of dualrun that ran.",
        &["version"],
    )?;
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1.0);

    for check in &report.checks {
        let name = check.name.as_str();
        let reached = check.status != CheckStatus::Error;
        up.with_label_values(&[name])
            .set(if reached { 1.0 } else { 0.0 });
        passed
            .with_label_values(&[name])
            .set(if check.status == CheckStatus::Match {
                1.0
            } else {
                0.0
            });
        duration
            .with_label_values(&[name])
            .set(check.duration_seconds);
        for s in CheckStatus::ALL {
            status
                .with_label_values(&[name, s.name()])
                .set(if s == check.status { 1.0 } else { 0.0 });
        }
        // A check without a verdict exports no figures that could be read as one.
        if !reached || check.status == CheckStatus::NotReady {
            continue;
        }
        rows.with_label_values(&[name, "batch"])
            .set(check.rows.batch as f64);
        rows.with_label_values(&[name, "stream"])
            .set(check.rows.stream as f64);
        let c = &check.counts;
        matched.with_label_values(&[name]).set(c.matched as f64);
        for (kind, value) in [
            ("missing_in_stream", c.missing_in_stream),
            ("extra_in_stream", c.extra_in_stream),
            ("mismatched", c.mismatched),
        ] {
            divergent.with_label_values(&[name, kind]).set(value as f64);
        }
        ratio.with_label_values(&[name]).set(check.divergence_ratio);
        duplicates
            .with_label_values(&[name, "batch"])
            .set(c.duplicate_keys_batch as f64);
        duplicates
            .with_label_values(&[name, "stream"])
            .set(c.duplicate_keys_stream as f64);
        for column in &check.columns {
            columns
                .with_label_values(&[name, &column.name])
                .set(column.mismatched as f64);
        }
        for (kind, value) in [
            ("only_in_batch", check.schema.only_in_batch.len()),
            ("only_in_stream", check.schema.only_in_stream.len()),
            ("type_change", check.schema.type_changes.len()),
        ] {
            schema.with_label_values(&[name, kind]).set(value as f64);
        }
    }

    if let Some(gate) = &report.gate {
        let streak = gauge_vec(
            &registry,
            "dualrun_gate_clean_streak",
            "Clean runs in a row on distinct params, per check.",
            &["check"],
        )?;
        let required = gauge_vec(
            &registry,
            "dualrun_gate_required_runs",
            "Clean runs in a row that prove a check.",
            &["check"],
        )?;
        let open = gauge_vec(
            &registry,
            "dualrun_gate_open",
            "1 when the check is proven (its gate is open), else 0.",
            &["check"],
        )?;
        let stage = gauge_vec(
            &registry,
            "dualrun_check_stage",
            "1 for the stage each check is in (no_runs, diverging, proving, proven, migrated, retired), 0 for the others.",
            &["check", "stage"],
        )?;
        for check in &gate.checks {
            for each in crate::gate::Stage::ALL {
                stage
                    .with_label_values(&[&check.name, each.name()])
                    .set(if each == check.stage { 1.0 } else { 0.0 });
            }
            streak
                .with_label_values(&[&check.name])
                .set(f64::from(check.clean_streak));
            required
                .with_label_values(&[&check.name])
                .set(f64::from(check.required_runs));
            open.with_label_values(&[&check.name])
                .set(if check.open { 1.0 } else { 0.0 });
        }
        gauge(
            &registry,
            "dualrun_gate_ready",
            "1 when every required check is proven: batch may be switched off.",
        )?
        .set(if gate.ready { 1.0 } else { 0.0 });
    }

    if families == Families::All {
        register_last_success(&registry, last_success)?;
    }
    Ok(registry)
}

pub(crate) fn register_last_success(registry: &Registry, last_success: &LastSuccess) -> Result<()> {
    if !last_success.checks.is_empty() {
        let vec = gauge_vec(
            registry,
            CHECK_LAST_SUCCESS,
            "Unix time of the check's last run that reached a verdict (match or diverged).",
            &["check"],
        )?;
        for (check, at) in &last_success.checks {
            vec.with_label_values(&[check]).set(*at);
        }
    }
    if let Some(at) = last_success.run {
        gauge(
            registry,
            RUN_LAST_SUCCESS,
            "Unix time of the last run whose every check reached a verdict.",
        )?
        .set(at);
    }
    Ok(())
}

pub fn encode(registry: &Registry) -> Result<String> {
    let mut buffer = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buffer)?;
    Ok(String::from_utf8(buffer)?)
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_success_round_trips_through_the_exposition() {
        let text = "# HELP x\n\
            dualrun_check_last_success_timestamp_seconds{check=\"a\\\"b\"} 1700000000\n\
            dualrun_check_last_success_timestamp_seconds{check=\"plain\"} 1.7e9\n\
            dualrun_last_success_timestamp_seconds 1600000000\n\
            dualrun_check_up{check=\"plain\"} 0\n";
        let parsed = LastSuccess::parse_exposition(text);
        assert_eq!(parsed.run, Some(1.6e9));
        assert_eq!(parsed.checks.get("a\"b"), Some(&1.7e9));
        assert_eq!(parsed.checks.get("plain"), Some(&1.7e9));
        assert_eq!(parsed.checks.len(), 2);
    }
}
