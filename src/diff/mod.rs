//! The diff of two query results: align the schemas, build one DataFusion plan that pairs the
//! rows, and consume it once into counts, per-column statistics and samples.

pub mod align;
pub mod collect;
pub mod plan;

use anyhow::{Result, anyhow};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;

pub use align::SchemaDiff;
pub use collect::{ColumnDiff, Counts, RowCounts, Samples};

use crate::config::{CheckSpec, Tolerance};
use crate::engine::{Engine, clean_df_error};

#[derive(Debug, Clone)]
pub struct DiffResult {
    pub rows: RowCounts,
    pub counts: Counts,
    pub columns: Vec<ColumnDiff>,
    pub schema: SchemaDiff,
    pub samples: Samples,
    /// Whether duplicate keys made the diff pair rows by occurrence.
    pub paired_by_occurrence: bool,
}

async fn execute(state: &SessionState, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
    DataFrame::new(state.clone(), plan)
        .execute_stream()
        .await
        .map_err(|e| anyhow!("{}", clean_df_error(&e.to_string())))
}

async fn single_count(state: &SessionState, plan: LogicalPlan) -> Result<u64> {
    let batches: Vec<_> = execute(state, plan).await?.try_collect().await?;
    let value = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| {
            use datafusion::arrow::array::AsArray;
            b.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0)
        })
        .unwrap_or(0);
    Ok(value as u64)
}

fn describe_tolerance(tolerance: &Tolerance) -> String {
    match tolerance {
        Tolerance::Numeric { abs, rel } if *rel == 0.0 => format!("abs:{abs}"),
        Tolerance::Numeric { abs, rel } if *abs == 0.0 => format!("rel:{rel}"),
        Tolerance::Numeric { abs, rel } => format!("abs:{abs},rel:{rel}"),
        Tolerance::Temporal { abs } => format!("abs:{}", humantime::format_duration(*abs)),
    }
}

/// Diffs the two planned results of one check.
pub async fn run(
    engine: &Engine,
    check: &CheckSpec,
    batch: LogicalPlan,
    stream: LogicalPlan,
    input_bytes: u64,
) -> Result<DiffResult> {
    let alignment = align::align(check, batch.schema(), stream.schema())?;
    let state = engine.diff_state(input_bytes);
    let (collected, paired_by_occurrence) = if alignment.keys.is_empty() {
        let plan = plan::keyless(batch, stream, &alignment)?;
        let output = execute(&state, plan).await?;
        (
            collect::keyless(output, &alignment, check.sample).await?,
            false,
        )
    } else {
        // Most results have unique keys; then a plain join on the key suffices. Only when a key
        // repeats does each side need an occurrence index (a sort per key group).
        let (batch_dups, stream_dups) = futures::try_join!(
            single_count(
                &state,
                plan::duplicate_keys(batch.clone(), &alignment, true)?
            ),
            single_count(
                &state,
                plan::duplicate_keys(stream.clone(), &alignment, false)?
            ),
        )?;
        let with_occurrence = batch_dups > 0 || stream_dups > 0;
        let plan = plan::keyed(batch, stream, &alignment, with_occurrence)?;
        tracing::debug!(check = %check.name, with_occurrence, "diff plan:\n{}", plan.display_indent());
        let output = execute(&state, plan).await?;
        let mut collected =
            collect::keyed(output, &alignment, with_occurrence, check.sample).await?;
        collected.counts.duplicate_keys_batch = batch_dups;
        collected.counts.duplicate_keys_stream = stream_dups;
        (collected, with_occurrence)
    };
    let columns = alignment
        .values
        .iter()
        .zip(&collected.column_mismatches)
        .map(|(column, mismatched)| ColumnDiff {
            name: column.name.clone(),
            mismatched: *mismatched,
            data_type: column.common.to_string(),
            tolerance: column.tolerance.as_ref().map(describe_tolerance),
        })
        .collect();
    Ok(DiffResult {
        rows: collected.rows,
        counts: collected.counts,
        columns,
        schema: alignment.schema,
        samples: collected.samples,
        paired_by_occurrence,
    })
}

#[cfg(test)]
mod tests;
