//! What one check concluded: its status with the diff, the lint, the control runs and the
//! change-log statistics behind it. The run history stores it, the metrics count it and every
//! report renders it, so it sits with the verdict rather than with any one output.

use serde::Serialize;

use serde_json::Value;

use crate::config::CheckSpec;
use crate::diff::{ColumnDiff, Counts, DiffResult, FindingKind, RowCounts, Samples, SchemaDiff};
use crate::engine::lint::Hazard;
use crate::sources::changelog::ChangelogStats;

use super::{CheckStatus, ControlReport};

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
    pub findings: Vec<crate::diff::Finding>,
    /// Where divergent rows fall along the time or window column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<crate::diff::Histogram>,
    /// What the diff read per side: files (after partition pruning) and bytes.
    pub scan: crate::diff::ScanStats,
    /// Why the check is not_ready: the stream's watermark has not passed the window yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<crate::verdict::readiness::NotReady>,
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
    pub fn from_diff(check: &CheckSpec, compared: Compared, seconds: f64) -> Self {
        let Compared {
            mut diff,
            nondeterministic,
            mut control,
            changelog,
        } = compared;
        mask(&mut diff, &check.redact);
        if let Some(control) = &mut control {
            mask_samples(&mut control.samples, &check.redact);
        }
        let (name, query, key, evidence) =
            (&check.name, &check.sql_origin, &check.key, check.evidence);
        let stable = control.as_ref().is_none_or(|c| c.stable);
        CheckReport {
            name: name.to_string(),
            status: super::check_status(&diff, evidence, stable),
            nondeterministic,
            control,
            changelog,
            query: query.to_string(),
            key: key.to_vec(),
            divergence_ratio: super::divergence_ratio(&diff),
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
        why: crate::verdict::readiness::NotReady,
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

/// Hides the values of the check's `redact` columns (personal data) wherever a report could
/// show them: samples, the most frequent value pairs, and findings that quote a value. Done here,
/// where a diff becomes the outcome every output reads, so no output can forget it.
fn mask(result: &mut DiffResult, columns: &[String]) {
    if columns.is_empty() {
        return;
    }
    mask_samples(&mut result.samples, columns);
    for column in result
        .columns
        .iter_mut()
        .filter(|c| columns.contains(&c.name))
    {
        if let Some(stats) = &mut column.stats {
            stats.top_pairs.clear();
        }
    }
    for finding in result
        .findings
        .iter_mut()
        .filter(|f| f.columns.iter().any(|c| columns.contains(c)))
    {
        if finding.kind == FindingKind::NullVsDefault {
            finding.evidence = format!(
                "all {} differences in {} are NULL on one side where the other has one constant (value redacted)",
                finding.rows,
                finding.columns.join(", ")
            );
            finding.details = serde_json::json!({"value": "***"});
        }
    }
}

fn mask_samples(samples: &mut Samples, columns: &[String]) {
    let hidden = || Value::String("***".into());
    for sample in samples
        .missing_in_stream
        .iter_mut()
        .chain(samples.extra_in_stream.iter_mut())
        .chain(samples.mismatched.iter_mut())
    {
        for column in columns {
            if let Some(value) = sample.key.get_mut(column) {
                *value = hidden();
            }
            if let Some(value) = sample.values.get_mut(column) {
                *value = hidden();
            }
        }
        for difference in sample
            .differences
            .iter_mut()
            .filter(|d| columns.contains(&d.column))
        {
            difference.batch = hidden();
            difference.stream = hidden();
        }
    }
}
