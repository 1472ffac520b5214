//! Prometheus metrics of a run, from one `prometheus` registry, and the three ways out: a
//! node_exporter textfile, a Pushgateway, and the `/metrics` endpoint of `dualrun serve`.
//!
//! The one subtle rule: last-success timestamps only move forward when a check (or the whole
//! run) reached a verdict, so a failed night never erases the evidence of the last good one.
//! Each way out carries them over its own way: the textfile re-reads the previous file, the
//! Pushgateway keeps them in groups that only successful runs replace, `serve` keeps them in memory.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use prometheus::{Encoder, Gauge, GaugeVec, Opts, Registry, TextEncoder};

use crate::report::RunReport;
use crate::verdict::CheckStatus;

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
        "Divergent rows divided by the larger side's row count (0 to 1).",
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
        for check in &gate.checks {
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

fn register_last_success(registry: &Registry, last_success: &LastSuccess) -> Result<()> {
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

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Writes the node_exporter textfile atomically: a temporary file in the same directory, then a
/// rename, so a scrape never sees half a file. Last-success timestamps of the previous file are
/// carried over for checks that did not reach a verdict this time.
pub fn write_textfile(path: &Path, report: &RunReport) -> Result<()> {
    let mut last_success = match std::fs::read_to_string(path) {
        Ok(text) => LastSuccess::parse_exposition(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => LastSuccess::default(),
        Err(e) => bail!(
            "cannot read the previous metrics textfile {}: {e}",
            path.display()
        ),
    };
    last_success.advance(report, unix_now());
    let text = encode(&registry(report, &last_success, Families::All)?)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if path.file_name().is_none() {
        bail!("metrics textfile {} has no file name", path.display());
    }
    // Written beside the target and renamed over it, so node_exporter never reads half a file;
    // its name starts with a dot and does not end in .prom, which node_exporter skips.
    let mut temporary = tempfile::Builder::new()
        .prefix(".dualrun-metrics-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write the metrics textfile in {}", dir.display()))?;
    temporary
        .write_all(text.as_bytes())
        .with_context(|| format!("cannot write the metrics textfile {}", path.display()))?;
    temporary.persist(path).map_err(|e| {
        anyhow!(
            "cannot move the metrics textfile into place at {}: {}",
            path.display(),
            e.error
        )
    })?;
    Ok(())
}

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct Pushgateway {
    pub url: String,
    pub job: String,
    pub grouping: BTreeMap<String, String>,
    pub timeout: Duration,
}

fn path_segment(name: &str, value: &str) -> String {
    // base64 keeps any label value (slashes included) a single path segment.
    let encoded = base64::engine::general_purpose::URL_SAFE.encode(value.as_bytes());
    format!(
        "/{name}@base64/{}",
        if encoded.is_empty() {
            "=".to_string()
        } else {
            encoded
        }
    )
}

impl Pushgateway {
    fn group_url(&self, check: Option<&str>) -> String {
        let mut url = self.url.trim_end_matches('/').to_string();
        url.push_str("/metrics");
        url.push_str(&path_segment("job", &self.job));
        for (name, value) in &self.grouping {
            url.push_str(&path_segment(name, value));
        }
        if let Some(check) = check {
            url.push_str(&path_segment("check", check));
        }
        url
    }

    /// Pushes a run with PUT into three kinds of groups:
    /// - `{job, …grouping}`: the run's results, replaced whole by every run (no stale series);
    /// - `{job, …grouping, check=NAME}`: that check's last-success time, replaced only when the
    ///   check reached a verdict;
    /// - `{job, …grouping, check=""}`: the run's last-success time, replaced only when the whole
    ///   run completed (an empty label is no label to Prometheus).
    ///
    /// So a failed run updates `up`/`passed` but leaves the last-success timestamps alone.
    pub async fn push(&self, report: &RunReport) -> Result<()> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| anyhow!("pushgateway client: {e}"))?;
        let now = unix_now();
        let results = encode(&registry(
            report,
            &LastSuccess::default(),
            Families::ResultsOnly,
        )?)?;
        self.put(&client, self.group_url(None), results).await?;
        for check in report
            .checks
            .iter()
            .filter(|c| c.status != CheckStatus::Error)
        {
            let only = LastSuccess {
                checks: [(check.name.clone(), now)].into(),
                run: None,
            };
            self.put(
                &client,
                self.group_url(Some(&check.name)),
                encode_last_success(&only)?,
            )
            .await?;
        }
        if run_completed(report) {
            let only = LastSuccess {
                checks: BTreeMap::new(),
                run: Some(now),
            };
            self.put(
                &client,
                self.group_url(Some("")),
                encode_last_success(&only)?,
            )
            .await?;
        }
        Ok(())
    }

    async fn put(&self, client: &reqwest::Client, url: String, body: String) -> Result<()> {
        let shown = crate::redact::redact_url(&self.url);
        let response = client
            .put(&url)
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "push to the Pushgateway at {shown} failed: {}",
                    describe_reqwest(e)
                )
            })?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            bail!(
                "the Pushgateway at {shown} answered {status}: {}",
                text.trim()
            );
        }
        Ok(())
    }
}

fn describe_reqwest(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "cannot connect".to_string()
    } else {
        error.without_url().to_string()
    }
}

/// Only the last-success families, for their own Pushgateway groups.
fn encode_last_success(last_success: &LastSuccess) -> Result<String> {
    let registry = Registry::new();
    register_last_success(&registry, last_success)?;
    encode(&registry)
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

    #[test]
    fn label_values_become_single_path_segments() {
        assert_eq!(path_segment("check", "a/b"), "/check@base64/YS9i");
        assert_eq!(path_segment("check", ""), "/check@base64/=");
    }
}
