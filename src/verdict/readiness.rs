//! Stream readiness: a stream lags, and comparing a window before the stream has caught up turns
//! late data into false divergence. A stream table may declare a watermark (an aggregate SQL
//! expression over it, e.g. `max(event_time)`) and an allowed lateness; a check reading it is
//! not_ready until the watermark has passed the check's window end plus that lateness.
//!
//! The window end is an SQL expression with the run's params bound; by default the end of the
//! `run_date` day: `CAST($run_date AS TIMESTAMP) + INTERVAL '1 day'`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, anyhow, bail};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use datafusion::prelude::DataFrame;
use serde::Serialize;

use crate::config::{CheckSpec, Side, TableSpec};
use crate::engine::Engine;
use crate::sources::Catalog;

pub const DEFAULT_WINDOW_END: &str = "CAST($run_date AS TIMESTAMP) + INTERVAL '1 day'";

/// Why a check is not ready, for the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NotReady {
    pub table: String,
    /// The stream's watermark, or null when the table has no rows yet.
    pub watermark: Option<String>,
    pub window_end: String,
    pub lateness_seconds: f64,
}

impl NotReady {
    pub fn message(&self) -> String {
        format!(
            "stream table '{}' is not ready: watermark {} has not passed the window end {} + {} lateness",
            self.table,
            self.watermark.as_deref().unwrap_or("(no rows)"),
            self.window_end,
            humantime::format_duration(std::time::Duration::from_secs_f64(self.lateness_seconds))
        )
    }
}

fn nanos_to_text(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .format("%Y-%m-%dT%H:%M:%S%.fZ")
        .to_string()
}

/// Checks every watermarked stream table the check reads; the first one lagging makes the check
/// not ready.
pub async fn check(
    engine: &Engine,
    catalog: &Catalog,
    check: &CheckSpec,
    tables: &[TableSpec],
    scanned: &BTreeSet<String>,
    params: &BTreeMap<String, String>,
) -> Result<Option<NotReady>> {
    for table in tables.iter().filter(|t| scanned.contains(&t.name)) {
        let Some(watermark) = &table.watermark else {
            continue;
        };
        let window_end = match &check.window_end {
            Some(expression) => expression.as_str(),
            None if params.contains_key("run_date") => DEFAULT_WINDOW_END,
            None => bail!(
                "check '{}' reads watermarked table '{}': set window_end on the check or pass --param run_date=…",
                check.name,
                table.name
            ),
        };
        let lateness = check.lateness.unwrap_or(watermark.lateness);
        let sql = format!(
            "SELECT CAST((SELECT {} FROM \"{}\") AS TIMESTAMP) AS watermark, CAST({window_end} AS TIMESTAMP) AS window_end",
            watermark.expression, table.name
        );
        let origin = format!("watermark of table '{}'", table.name);
        let plan = engine
            .plan_sql(&sql, &origin, Side::Stream, params, catalog)
            .await?;
        let batches = DataFrame::new(engine.ctx.state(), plan)
            .collect()
            .await
            .map_err(|e| anyhow!("{origin}: {e}"))?;
        let batch = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| anyhow!("{origin}: no result"))?;
        let as_nanos = |i: usize| -> Result<Option<i64>> {
            let column = datafusion::arrow::compute::cast(
                batch.column(i),
                &DataType::Timestamp(TimeUnit::Nanosecond, None),
            )?;
            let column = column.as_primitive::<TimestampNanosecondType>();
            Ok(column.is_valid(0).then(|| column.value(0)))
        };
        let mark = as_nanos(0)?;
        let end = as_nanos(1)?
            .ok_or_else(|| anyhow!("{origin}: the window end '{window_end}' is NULL"))?;
        let needed = end.saturating_add(lateness.as_nanos().min(i64::MAX as u128) as i64);
        if mark.is_none_or(|m| m < needed) {
            return Ok(Some(NotReady {
                table: table.name.clone(),
                watermark: mark.map(nanos_to_text),
                window_end: nanos_to_text(end),
                lateness_seconds: lateness.as_secs_f64(),
            }));
        }
    }
    Ok(None)
}
