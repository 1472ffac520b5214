//! A query's result pinned down in the spill directory, as an Arrow IPC file read back as a
//! table: a control run's answer, to be diffed; a change log's compacted rows, read once for
//! their figures and once as the table. On disk, not in memory, so a memory limit still holds.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SpillFile;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use futures::StreamExt;

/// Rows per batch of a pinned result: the query's own small batches are what it ran in, not
/// what it should be read back in (thousands of tiny IPC batches cost more than the query).
const PINNED_BATCH_ROWS: usize = 32 * 1024;

/// A pinned result: the table that reads it, and the file (deleted when the last holder drops
/// it).
pub struct Pinned {
    pub table: Arc<dyn TableProvider>,
    pub file: Arc<dyn SpillFile>,
}

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned").finish_non_exhaustive()
    }
}

/// Whether a pinned file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packed {
    /// LZ4: half the disk for a result that may be large and is read once.
    Lz4,
    /// Plain IPC: for a result read back at once, more than once (a compacted change log: its
    /// figures, then each check). LZ4 both ways cost 5-8% of a 10M-change compaction + diff.
    Plain,
}

/// Runs `plan` in `state` to a file in the spill directory; `what` names the file's purpose.
pub async fn pin(
    state: &SessionState,
    plan: &LogicalPlan,
    what: &str,
    packed: Packed,
) -> Result<Pinned> {
    let physical = state.create_physical_plan(plan).await?;
    let schema = physical.schema();
    let file = state.runtime_env().disk_manager.create_tmp_file(what)?;
    let options = IpcWriteOptions::default()
        .try_with_compression((packed == Packed::Lz4).then_some(CompressionType::LZ4_FRAME))?;
    let mut writer = FileWriter::try_new_with_options(
        std::io::BufWriter::new(file.open_writer()?),
        &schema,
        options,
    )?;
    let mut coalescer = BatchCoalescer::new(schema.clone(), PINNED_BATCH_ROWS);
    let mut batches =
        datafusion::physical_plan::execute_stream(physical.clone(), state.task_ctx())?;
    while let Some(batch) = batches.next().await {
        coalescer.push_batch(batch?)?;
        while let Some(batch) = coalescer.next_completed_batch() {
            writer.write(&batch)?;
        }
    }
    coalescer.finish_buffered_batch()?;
    while let Some(batch) = coalescer.next_completed_batch() {
        writer.write(&batch)?;
    }
    writer.finish()?;
    // Where a compaction's time went (`RUST_LOG=dualrun=trace`): each operator's rows and time.
    tracing::trace!(
        "{what}, as run:\n{}",
        datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
            physical.as_ref()
        )
        .indent(true)
    );
    let path = file
        .path()
        .and_then(|p| p.to_str())
        .ok_or_else(|| anyhow!("{what}: the spill directory needs a local UTF-8 path"))?;
    let options = ListingOptions::new(Arc::new(ArrowFormat)).with_file_extension("");
    let config = ListingTableConfig::new(ListingTableUrl::parse(path)?)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Pinned {
        table: Arc::new(ListingTable::try_new(config)?),
        file,
    })
}
