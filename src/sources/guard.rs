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
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
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

fn in_file(
    config: Option<&FileScanConfig>,
    file: &PartitionedFile,
    error: &DataFusionError,
) -> DataFusionError {
    let mut message = clean_df_error(&error.to_string());
    // The CSV reader names a column by its position in the file: name it.
    const POSITION: &str = "for column ";
    if let (Some(config), Some(at)) = (config, message.find(POSITION)) {
        let start = at + POSITION.len();
        let digits: String = message[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Some(field) = digits
            .parse::<usize>()
            .ok()
            .and_then(|i| config.file_schema().fields().get(i))
        {
            let end = start + digits.len();
            message.insert_str(end, &format!(" ('{}')", field.name()));
            if message.contains("Error while parsing value") {
                message.push_str(
                    " (a CSV column's type is inferred from the first 1,000 records of the table)",
                );
            }
        }
    }
    DataFusionError::External(format!("file {}: {message}", location(config, file)).into())
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
    if files.len() == 1 {
        return in_file(config, &files[0], &error);
    }
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
                    return in_file(Some(config), file, &alone_error);
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
