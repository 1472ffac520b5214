//! Run history: one immutable record per check run, written as one small NDJSON object on any
//! object store (a local directory included), and read back as a table through DataFusion.
//!
//! Why one object per record: nothing is ever rewritten, two runs at once cannot corrupt each
//! other (unique names, create-only puts), and a put is atomic on every object store (the local
//! one stages and renames), so a crash never leaves a partial record where readers look.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::json::ArrayWriter;
use datafusion::arrow::json::reader::infer_json_schema_from_iterator;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionContext, col, lit};
use object_store::{PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::config::CheckSpec;
use crate::diff::FindingKind;
use crate::redact::redact_url;
use crate::sources::store;
use crate::verdict::CheckReport;
use crate::verdict::CheckStatus;

/// One check run. Field names are the history table's columns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub check_name: String,
    /// The run's params as canonical JSON (sorted keys): the gate counts distinct params.
    pub params: String,
    pub run_date: Option<String>,
    /// RFC 3339 UTC with microseconds: sorts as text.
    pub started_at: String,
    pub ended_at: String,
    pub status: CheckStatus,
    pub rows_batch: u64,
    pub rows_stream: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub missing_in_stream: u64,
    pub extra_in_stream: u64,
    pub duplicate_keys_batch: u64,
    pub duplicate_keys_stream: u64,
    pub divergence_ratio: f64,
    /// A column exists on one side only: never clean, whatever the ratio.
    pub schema_diverged: bool,
    pub dualrun_version: String,
    /// The check's fingerprint (SQL, key, tolerances, ignore): a change restarts its streak.
    pub config_hash: String,
    pub error: Option<String>,
    /// The columns that disagreed most (by mismatched rows), at most three.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// The kinds of the findings of the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<FindingKind>,
    /// Set on the record the team writes when a check moves on in its lifecycle (`dualrun gate
    /// --mark`): not a run, and no verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
}

/// A step of a check's lifecycle after it is proven, recorded by the team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// Consumers read the stream tables now; batch stays as a secondary producer.
    Migrated,
    /// The batch job of the analysis is switched off.
    Retired,
}

impl Mark {
    pub fn name(self) -> &'static str {
        match self {
            Mark::Migrated => "migrated",
            Mark::Retired => "retired",
        }
    }
}

/// The Arrow schema the records are read back with, inferred from one record as serde writes
/// it: [`RunRecord`] is the only definition of the columns, so a field added there is a column
/// here. The sample has every optional field set and a fractional ratio, so each column infers
/// to its widest type.
fn schema() -> Arc<Schema> {
    let sample = RunRecord {
        run_date: Some(String::new()),
        divergence_ratio: 0.5,
        error: Some(String::new()),
        columns: vec![String::new()],
        findings: vec![FindingKind::Precision],
        mark: Some(Mark::Migrated),
        ..RunRecord::blank(String::new(), String::new(), String::new())
    };
    let value = serde_json::to_value(&sample).unwrap_or_default();
    let schema = infer_json_schema_from_iterator(std::iter::once(Ok(value)))
        .unwrap_or_else(|_| Schema::empty());
    Arc::new(schema)
}

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn canonical_params(params: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::to_string(params).unwrap_or_default()
}

/// A run id unique enough for concurrent writers: time, process and a counter.
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}-{:x}-{:x}",
        nanos,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl RunRecord {
    pub fn new(
        run_id: &str,
        check: &CheckSpec,
        report: &CheckReport,
        params: &std::collections::BTreeMap<String, String>,
        started: chrono::DateTime<chrono::Utc>,
        ended: chrono::DateTime<chrono::Utc>,
    ) -> RunRecord {
        let c = &report.counts;
        RunRecord {
            run_id: run_id.to_string(),
            check_name: check.name.clone(),
            params: canonical_params(params),
            run_date: params.get("run_date").cloned(),
            started_at: timestamp(started),
            ended_at: timestamp(ended),
            status: report.status,
            rows_batch: report.rows.batch,
            rows_stream: report.rows.stream,
            matched: c.matched,
            mismatched: c.mismatched,
            missing_in_stream: c.missing_in_stream,
            extra_in_stream: c.extra_in_stream,
            duplicate_keys_batch: c.duplicate_keys_batch,
            duplicate_keys_stream: c.duplicate_keys_stream,
            divergence_ratio: report.divergence_ratio,
            schema_diverged: report.schema.diverges(),
            dualrun_version: env!("CARGO_PKG_VERSION").to_string(),
            config_hash: check.fingerprint(),
            error: report.error.clone(),
            columns: top_columns(report),
            findings: report.findings.iter().map(|f| f.kind).collect(),
            mark: None,
        }
    }

    /// The record of a lifecycle step of `check`, written by `dualrun gate --mark`.
    pub fn mark(check: &CheckSpec, mark: Mark, at: chrono::DateTime<chrono::Utc>) -> RunRecord {
        RunRecord {
            mark: Some(mark),
            ..RunRecord::blank(check.name.clone(), timestamp(at), check.fingerprint())
        }
    }

    /// A record of `check` with no figures: the base of the lifecycle marks (and of the sample
    /// the Arrow schema is inferred from).
    fn blank(check_name: String, at: String, config_hash: String) -> RunRecord {
        RunRecord {
            run_id: new_run_id(),
            check_name,
            params: String::new(),
            run_date: None,
            started_at: at.clone(),
            ended_at: at,
            status: CheckStatus::Match,
            rows_batch: 0,
            rows_stream: 0,
            matched: 0,
            mismatched: 0,
            missing_in_stream: 0,
            extra_in_stream: 0,
            duplicate_keys_batch: 0,
            duplicate_keys_stream: 0,
            divergence_ratio: 0.0,
            schema_diverged: false,
            dualrun_version: env!("CARGO_PKG_VERSION").to_string(),
            config_hash,
            error: None,
            columns: Vec::new(),
            findings: Vec::new(),
            mark: None,
        }
    }
}

/// The columns with the most mismatched rows, most first (ties by name), at most three.
fn top_columns(report: &CheckReport) -> Vec<String> {
    let mut columns: Vec<(u64, &str)> = report
        .columns
        .iter()
        .filter(|c| c.mismatched > 0)
        .map(|c| (c.mismatched, c.name.as_str()))
        .collect();
    columns.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    columns
        .into_iter()
        .take(3)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// The history location: a local directory (created when missing) or an object store URL.
pub struct History {
    url: ListingTableUrl,
    shown: String,
}

impl History {
    pub fn open(
        ctx: &SessionContext,
        location: &str,
        store: &crate::config::StoreOptions,
    ) -> Result<History> {
        let shown = redact_url(location);
        if !location.contains("://") || location.starts_with("file://") {
            let path = location.strip_prefix("file://").unwrap_or(location);
            std::fs::create_dir_all(path)
                .with_context(|| format!("cannot create the history directory {path}"))?;
        }
        let mut location = location.to_string();
        if !location.ends_with('/') {
            location.push('/');
        }
        let url =
            store::table_url(&location).with_context(|| format!("history location {shown}"))?;
        store::register_object_store(ctx, &url, store)
            .with_context(|| format!("history location {shown}"))?;
        Ok(History { url, shown })
    }

    /// Appends one record as its own object; never overwrites anything.
    pub async fn append(&self, ctx: &SessionContext, record: &RunRecord) -> Result<()> {
        let store = ctx.runtime_env().object_store(&self.url)?;
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        let compact: String = record
            .started_at
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let name = format!("{compact}-{}.json", record.run_id);
        let path = object_store::path::Path::from(format!("{}/{name}", self.url.prefix().as_ref()));
        store
            .put_opts(
                &path,
                PutPayload::from(line),
                PutOptions::from(PutMode::Create),
            )
            .await
            .map_err(|e| anyhow!("cannot write a history record to {}: {e}", self.shown))?;
        Ok(())
    }

    /// Registers the history as table `history` (in the default schema) and returns the records,
    /// optionally of one check, oldest first.
    pub async fn read(&self, ctx: &SessionContext, check: Option<&str>) -> Result<Vec<RunRecord>> {
        let options =
            ListingOptions::new(Arc::new(JsonFormat::default())).with_file_extension(".json");
        let config = ListingTableConfig::new(self.url.clone())
            .with_listing_options(options)
            .with_schema(schema());
        let table = ListingTable::try_new(config)?;
        let mut frame = ctx.read_table(Arc::new(table))?;
        if let Some(check) = check {
            frame = frame.filter(col("check_name").eq(lit(check)))?;
        }
        let batches = frame
            .sort(vec![
                col("started_at").sort(true, false),
                col("run_id").sort(true, false),
            ])?
            .collect()
            .await
            .map_err(|e| anyhow!("cannot read the history at {}: {e}", self.shown))?;
        let mut writer = ArrayWriter::new(Vec::new());
        for batch in &batches {
            writer.write(batch)?;
        }
        writer.finish()?;
        let bytes = writer.into_inner();
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&bytes)?;
        rows.into_iter()
            .map(|row| {
                serde_json::from_value(row)
                    .map_err(|e| anyhow!("a history record does not parse: {e}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a record is a column of the schema it is read back with, with a type
    /// that holds it (strings as text, counts as integers, the ratio as a float).
    #[test]
    fn the_schema_is_the_record() {
        use datafusion::arrow::datatypes::DataType;
        let schema = schema();
        let names: std::collections::BTreeSet<&str> =
            schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names.len(), 23, "{names:?}");
        let type_of = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
        assert_eq!(type_of("run_date"), DataType::Utf8);
        assert_eq!(type_of("status"), DataType::Utf8);
        assert_eq!(type_of("rows_batch"), DataType::Int64);
        assert_eq!(type_of("divergence_ratio"), DataType::Float64);
        assert_eq!(type_of("schema_diverged"), DataType::Boolean);
        assert_eq!(type_of("error"), DataType::Utf8);
        assert!(matches!(type_of("columns"), DataType::List(_)));
        assert_eq!(type_of("mark"), DataType::Utf8);
    }
}
