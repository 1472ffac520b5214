//! What a run says, in three forms: text for people at a terminal, JSON (a versioned contract
//! for machines) and Markdown for pull requests and chat. All three render the same
//! [`RunReport`], so they cannot disagree.

mod markdown;
mod text;

use serde::Serialize;

use crate::changelog::ChangelogStats;
use crate::cli::OutputFormat;
use crate::diff::{ColumnDiff, Counts, DiffResult, RowCounts, Samples, SchemaDiff};
use crate::engine::lint::Hazard;
use crate::verdict::{self, CheckStatus, ControlReport};

pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub version: u32,
    pub status: CheckStatus,
    pub dualrun_version: &'static str,
    pub params: std::collections::BTreeMap<String, String>,
    pub checks: Vec<CheckReport>,
    /// Set when the run failed before its checks could run (bad config or flags).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The migration gate after this run, when the run keeps a history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::gate::GateReport>,
    /// Trouble after the verdicts (history not written, …): the run exits 2 if it would exit 0.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub status: CheckStatus,
    pub query: String,
    pub key: Vec<String>,
    pub rows: RowCounts,
    pub counts: Counts,
    pub divergence_ratio: f64,
    pub columns: Vec<ColumnDiff>,
    pub schema: SchemaDiff,
    pub samples: Samples,
    pub duration_seconds: f64,
    /// Duplicate keys made the diff pair rows by occurrence (in value order).
    pub paired_by_occurrence: bool,
    /// Likely causes of the divergences, from statistics of the same pass.
    pub findings: Vec<crate::diff::explain::Finding>,
    /// Where divergent rows fall along the time or window column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<crate::diff::explain::Histogram>,
    /// What the diff read per side: files (after partition pruning) and bytes.
    pub scan: crate::diff::scan::ScanStats,
    /// Why the check is not_ready: the stream's watermark has not passed the window yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<crate::readiness::NotReady>,
    /// Constructs of the query that can answer differently on identical input (not the ones
    /// the check acknowledges with allow_nondeterministic).
    pub nondeterministic: Vec<Hazard>,
    /// The control runs, when the check asks for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlReport>,
    /// What compacting each change log the check reads did, per side.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changelog: Vec<ChangelogStats>,
    pub error: Option<String>,
}

/// A check that ran to a diff, with what the query lint and the control runs found.
pub struct Compared {
    pub diff: DiffResult,
    pub nondeterministic: Vec<Hazard>,
    pub control: Option<ControlReport>,
    pub changelog: Vec<ChangelogStats>,
}

impl CheckReport {
    pub fn from_diff(
        name: &str,
        query: &str,
        key: &[String],
        compared: Compared,
        evidence: crate::config::Evidence,
        seconds: f64,
    ) -> Self {
        let Compared {
            diff,
            nondeterministic,
            control,
            changelog,
        } = compared;
        let stable = control.as_ref().is_none_or(|c| c.stable);
        CheckReport {
            name: name.to_string(),
            status: verdict::check_status(&diff, evidence, stable),
            nondeterministic,
            control,
            changelog,
            query: query.to_string(),
            key: key.to_vec(),
            divergence_ratio: verdict::divergence_ratio(&diff),
            rows: diff.rows,
            counts: diff.counts,
            columns: diff.columns,
            schema: diff.schema,
            samples: diff.samples,
            paired_by_occurrence: diff.paired_by_occurrence,
            readiness: None,
            scan: diff.scan,
            findings: diff.findings,
            histogram: diff.histogram,
            duration_seconds: seconds,
            error: None,
        }
    }

    pub fn not_ready(
        name: &str,
        query: &str,
        key: &[String],
        why: crate::readiness::NotReady,
        seconds: f64,
    ) -> Self {
        let mut report = CheckReport::from_error(name, query, key, String::new(), seconds);
        report.status = CheckStatus::NotReady;
        report.error = None;
        report.readiness = Some(why);
        report
    }

    pub fn from_error(
        name: &str,
        query: &str,
        key: &[String],
        error: String,
        seconds: f64,
    ) -> Self {
        CheckReport {
            name: name.to_string(),
            status: CheckStatus::Error,
            query: query.to_string(),
            key: key.to_vec(),
            rows: RowCounts::default(),
            counts: Counts::default(),
            divergence_ratio: 0.0,
            columns: Vec::new(),
            schema: SchemaDiff::default(),
            samples: Samples::default(),
            paired_by_occurrence: false,
            readiness: None,
            scan: Default::default(),
            findings: Vec::new(),
            histogram: None,
            nondeterministic: Vec::new(),
            control: None,
            changelog: Vec::new(),
            duration_seconds: seconds,
            error: Some(crate::redact::scrub(&error)),
        }
    }
}

impl RunReport {
    pub fn new(
        params: std::collections::BTreeMap<String, String>,
        checks: Vec<CheckReport>,
    ) -> Self {
        RunReport {
            version: REPORT_VERSION,
            status: verdict::run_status(checks.iter().map(|c| c.status)),
            dualrun_version: env!("CARGO_PKG_VERSION"),
            params,
            checks,
            error: None,
            gate: None,
            problems: Vec::new(),
        }
    }

    pub fn render(&self, format: OutputFormat, style: TextStyle) -> String {
        match format {
            OutputFormat::Json => {
                let mut text = serde_json::to_string_pretty(self).unwrap_or_else(|e| {
                    format!(
                        "{{\"version\":1,\"status\":\"error\",\"checks\":[],\"error\":\"{e}\"}}"
                    )
                });
                text.push('\n');
                text
            }
            OutputFormat::Markdown => markdown::render(self),
            OutputFormat::Text => text::render(self, style),
        }
    }
}

/// What an `empty` status means, in every output that shows one.
pub const EMPTY_EXPLANATION: &str = "no rows to compare: nothing diverged, but an empty result proves nothing (a wrong run_date? set allow_empty = true on a check whose result may legitimately be empty, or min_rows to ask for more)";

/// How the text report looks: colour (a terminal without NO_COLOR), width, and whether to show
/// what each check scanned.
#[derive(Debug, Clone, Copy)]
pub struct TextStyle {
    pub color: bool,
    pub width: usize,
    pub verbose: bool,
}

impl TextStyle {
    pub const PLAIN: TextStyle = TextStyle {
        color: false,
        width: 120,
        verbose: false,
    };
}

/// A sample value as people read it: strings without JSON quotes, NULL spelled out, and the
/// two strings that would read like something else quoted: `''` (empty) and `'NULL'`.
pub(crate) fn show(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::String(s) => show_text(Some(s)),
        other => other.to_string(),
    }
}

/// A value already in text form (None: NULL), by the rules of [`show`].
pub(crate) fn show_text(value: Option<&str>) -> String {
    match value {
        None => "NULL".to_string(),
        Some("") => "''".to_string(),
        Some(s) if s.eq_ignore_ascii_case("null") => format!("'{s}'"),
        Some(s) => s.to_string(),
    }
}

pub(crate) fn show_key(
    key: &std::collections::BTreeMap<String, serde_json::Value>,
    order: &[String],
) -> String {
    let mut parts: Vec<String> = order
        .iter()
        .filter_map(|k| key.get(k).map(|v| format!("{k}={}", show(v))))
        .collect();
    for (k, v) in key {
        if !order.contains(k) {
            parts.push(format!("{k}={}", show(v)));
        }
    }
    parts.join(", ")
}
