//! Every file scan runs under a guard, so that a bad file is an error naming it rather than an
//! anonymous one or a crash. DataFusion's readers report a bad value ("Error while parsing value
//! '1200.5' as type 'Int64' … at line 1201") without saying which file holds it, and the Parquet
//! decoder panics on some damaged pages. The guard turns such a panic into an error about the
//! input and, when a scan over several files fails, reads them one by one to name the one that
//! fails.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    CsvSource, FileGroup, FileScanConfig, FileScanConfigBuilder, JsonSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties, RecordBatchStream,
    SendableRecordBatchStream,
};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};

use super::locate::{self, CsvLayout};
use crate::error::clean_df_error;

/// The rule's name, by which a session that ships its plans elsewhere (Ballista) leaves it out:
/// the guard is not a node other processes can deserialize.
pub const RULE: &str = "dualrun_guard_reads";

thread_local! {
    /// Set while a guard polls its scan: a panic there is caught and reported by the guard, so
    /// the process-wide panic hook stays quiet.
    static GUARDING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the panic being raised on this thread will be caught by a guard.
pub fn panic_is_guarded() -> bool {
    GUARDING.with(Cell::get)
}

/// The physical optimizer rule that puts each file scan of a plan under a guard; last, so that
/// no other rule has to see through the guard.
#[derive(Debug, Default)]
pub struct GuardReads;

impl PhysicalOptimizerRule for GuardReads {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            if node.downcast_ref::<GuardedScan>().is_some() {
                return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
            }
            if scan_config(&node).is_none() {
                return Ok(Transformed::no(node));
            }
            let guarded: Arc<dyn ExecutionPlan> = Arc::new(GuardedScan { input: node });
            Ok(Transformed::new(guarded, true, TreeNodeRecursion::Jump))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        RULE
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn scan_config(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// A file scan, passed through; see the module's comment.
#[derive(Debug)]
pub struct GuardedScan {
    input: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for GuardedScan {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "GuardedScan")
    }
}

impl ExecutionPlan for GuardedScan {
    fn name(&self) -> &'static str {
        "GuardedScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => Ok(Arc::new(GuardedScan { input })),
            _ => Err(DataFusionError::Internal(
                "GuardedScan takes one input".to_string(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let inner = self.input.execute(partition, context.clone())?;
        Ok(Box::pin(Guarded {
            schema: inner.schema(),
            inner: Some(inner),
            scan: self.input.clone(),
            partition,
            context,
            diagnosis: None,
        }))
    }
}

struct Guarded {
    schema: SchemaRef,
    inner: Option<SendableRecordBatchStream>,
    scan: Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
    /// Once the scan failed: the search for the file that fails, ending in the error to report.
    diagnosis: Option<BoxFuture<'static, DataFusionError>>,
}

/// Polls `stream` with a reader's panic caught and turned into an error.
fn poll_guarded(
    stream: &mut SendableRecordBatchStream,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<RecordBatch>>> {
    GUARDING.with(|g| g.set(true));
    let polled = catch_unwind(AssertUnwindSafe(|| stream.poll_next_unpin(cx)));
    GUARDING.with(|g| g.set(false));
    polled.unwrap_or_else(|payload| Poll::Ready(Some(Err(panicked(payload)))))
}

fn panicked(payload: Box<dyn Any + Send>) -> DataFusionError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string());
    DataFusionError::External(format!("the reader failed on damaged data ({message})").into())
}

/// Errors that say something is wrong with a file's contents, worth naming the file for. Memory,
/// cancellation and storage errors pass as they are (a storage error names its path already).
fn is_about_contents(error: &DataFusionError) -> bool {
    match error {
        DataFusionError::ArrowError(..)
        | DataFusionError::ParquetError(..)
        | DataFusionError::External(..) => !matches!(
            error.find_root(),
            DataFusionError::ResourcesExhausted(_) | DataFusionError::ObjectStore(_)
        ),
        DataFusionError::Context(_, inner) => is_about_contents(inner),
        _ => false,
    }
}

/// Where a file is, as a user would write it.
fn location(config: Option<&FileScanConfig>, file: &PartitionedFile) -> String {
    let store = config.map_or(String::new(), |c| c.object_store_url.as_str().to_string());
    super::file_location(&store, &file.object_meta.location)
}

async fn in_file(
    config: Option<&FileScanConfig>,
    file: &PartitionedFile,
    error: &DataFusionError,
    context: &TaskContext,
) -> DataFusionError {
    // Text that does not read as the other side's type stays what it is, for the diff to find
    // its line: with the file, which the diff cannot always find (the query renamed the column).
    if let Some(unreadable) = crate::error::Unreadable::of(error) {
        return DataFusionError::External(Box::new(crate::error::Unreadable {
            file: Some(location(config, file)),
            ..unreadable.clone()
        }));
    }
    let mut message = clean_df_error(&error.to_string());
    let mut line = None;
    if let Some(config) = config {
        match locate_line(config, file, &mut message, context).await {
            Ok(found) => line = found,
            Err(e) => tracing::debug!(
                "locating the bad line of {}: {e}",
                location(Some(config), file)
            ),
        }
    }
    // The CSV reader names a column by its position in the file: name it.
    const POSITION: &str = "for column ";
    if let (Some(config), Some((index, end))) = (config, arrow_number(&message, POSITION))
        && let Some(field) = config.file_schema().fields().get(index as usize)
    {
        message.insert_str(end, &format!(" ('{}')", field.name()));
        if message.contains("Error while parsing value") {
            message.push_str(
                " (a CSV column's type is inferred from the first 1,000 records of the table; `infer_all_records = true` on the table, or --infer-all-records, infers it from every record)",
            );
        }
    }
    if message.contains("whilst decoding field") && message.contains("expected string got") {
        // A number past the records the field was inferred from as text.
        message.push_str(
            " (an NDJSON field's type is inferred from the first 1,000 records of the table; with `infer_all_records = true` on the table, or --infer-all-records, a field of numbers and numbers written as text is read as numbers)",
        );
    }
    let line = line.map_or(String::new(), |line| format!(", line {line}"));
    DataFusionError::External(format!("file {}{line}: {message}", location(config, file)).into())
}

/// Puts the line an editor shows into `message` about a text file: arrow's CSV reader counts
/// records from where its byte range started, so its number is replaced in the message; its
/// JSON reader names none, so the line is returned to be named beside the file.
async fn locate_line(
    config: &FileScanConfig,
    file: &PartitionedFile,
    message: &mut String,
    context: &TaskContext,
) -> anyhow::Result<Option<u64>> {
    let source = config.file_source();
    let store = context
        .runtime_env()
        .object_store(&config.object_store_url)?;
    let path = &file.object_meta.location;
    let text = source.downcast_ref::<CsvSource>().is_some()
        || source.downcast_ref::<JsonSource>().is_some();
    if text
        && !config.file_compression_type.is_compressed()
        && let Some(compression) =
            locate::compression_of_file(store.as_ref(), path, file.object_meta.size).await
    {
        *message = locate::compressed_bytes(compression);
        return Ok(None);
    }
    if let Some(csv) = source.downcast_ref::<CsvSource>() {
        // A value's parse error counts records from 0 with the header; a record of the wrong
        // width is counted from 1.
        let (number, record) = match arrow_number(message, " at line ") {
            Some((n, _)) => (n, n),
            None => match arrow_number(message, "for line ") {
                Some((n, _)) if n > 0 => (n, n - 1),
                _ => return Ok(None),
            },
        };
        let layout = CsvLayout {
            delimiter: csv.delimiter(),
            quote: csv.quote(),
            escape: csv.escape(),
            terminator: csv.terminator(),
            comment: csv.comment(),
        };
        let reader = locate::open(store.as_ref(), path, config.file_compression_type).await?;
        let line =
            tokio::task::spawn_blocking(move || locate::csv_record_line(reader, &layout, record))
                .await?;
        if let Some(line) = line {
            *message = message.replacen(&format!("line {number}"), &format!("line {line}"), 1);
        }
        return Ok(None);
    }
    if source.downcast_ref::<JsonSource>().is_some() {
        // The columns the scan decoded: a bad value in another one did not fail it.
        let file_schema = config.file_schema();
        let schema = match source.projection() {
            Some(projection) => {
                let mut indices: Vec<usize> = projection
                    .column_indices()
                    .into_iter()
                    .filter(|&i| i < file_schema.fields().len())
                    .collect();
                indices.sort_unstable();
                indices.dedup();
                Arc::new(file_schema.project(&indices)?)
            }
            None => file_schema.clone(),
        };
        let reader = locate::open(store.as_ref(), path, config.file_compression_type).await?;
        let found = tokio::task::spawn_blocking(move || {
            locate::first_undecodable_json_line(reader, &schema)
        })
        .await??;
        return Ok(found.map(|(line, _)| line));
    }
    Ok(None)
}

/// The number after `marker` in `message`, and where it ends.
fn arrow_number(message: &str, marker: &str) -> Option<(u64, usize)> {
    let start = message.find(marker)? + marker.len();
    let digits = message[start..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    Some((message[start..start + digits].parse().ok()?, start + digits))
}

/// The error to report for `error`, raised by `partition` of `scan`: naming the file, found by
/// reading each alone when there are several.
async fn diagnose(
    error: DataFusionError,
    scan: Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
) -> DataFusionError {
    let config = scan_config(&scan);
    // A partition may also read files of other partitions' groups (idle partitions take over
    // queued files): its own come first, then the others.
    let files: Vec<PartitionedFile> = config.map_or_else(Vec::new, |config| {
        let groups = &config.file_groups;
        let others = groups
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != partition)
            .map(|(_, g)| g);
        let own = groups.get(partition).into_iter();
        own.chain(others).flat_map(|g| g.iter().cloned()).collect()
    });
    tracing::debug!("a scan of {} files failed: {error}", files.len());
    if let [file] = files.as_slice()
        && file.range.is_none()
    {
        return in_file(config, file, &error, &context).await;
    }
    // A large file may have been split between partitions: read it whole, once, so that its
    // errors count from its start.
    let mut whole: Vec<PartitionedFile> = Vec::new();
    for mut file in files {
        if whole
            .iter()
            .all(|w| w.object_meta.location != file.object_meta.location)
        {
            file.range = None;
            whole.push(file);
        }
    }
    let files = whole;
    let Some(config) = config else {
        return error;
    };
    for file in &files {
        let alone = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(vec![FileGroup::new(vec![file.clone()])])
            .build();
        let alone: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(alone);
        let mut stream = match alone.execute(0, context.clone()) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!("reading {} alone: {e}", location(Some(config), file));
                continue;
            }
        };
        loop {
            match futures::future::poll_fn(|cx| poll_guarded(&mut stream, cx)).await {
                Some(Ok(_)) => continue,
                Some(Err(alone_error)) if is_about_contents(&alone_error) => {
                    return in_file(Some(config), file, &alone_error, &context).await;
                }
                Some(Err(alone_error)) => {
                    tracing::debug!(
                        "reading {} alone: {alone_error}",
                        location(Some(config), file)
                    );
                    break;
                }
                None => break,
            }
        }
    }
    error
}

impl Stream for Guarded {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(diagnosis) = self.diagnosis.as_mut() {
            let error = std::task::ready!(diagnosis.poll_unpin(cx));
            self.diagnosis = None;
            return Poll::Ready(Some(Err(error)));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match poll_guarded(inner, cx) {
            Poll::Ready(Some(Err(error))) if is_about_contents(&error) => {
                self.inner = None;
                let diagnosis = diagnose(
                    error,
                    self.scan.clone(),
                    self.partition,
                    self.context.clone(),
                );
                self.diagnosis = Some(diagnosis.boxed());
                self.poll_next(cx)
            }
            Poll::Ready(Some(Err(error))) => {
                self.inner = None;
                Poll::Ready(Some(Err(error)))
            }
            other => other,
        }
    }
}

impl RecordBatchStream for Guarded {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
