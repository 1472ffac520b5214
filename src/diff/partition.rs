//! Grace partitioning for keyed diffs larger than memory. DataFusion 55's hash join cannot spill,
//! and its sort-merge join proved fragile at 2 × 50M rows under 512 MiB (the external sorts'
//! merges ran the pool dry). So when the inputs dwarf the memory limit, each side's normalised
//! columns are hash-partitioned by key into spill files (DataFusion's own `BatchPartitioner`,
//! `SpillManager` and disk manager), and each bucket pair is then diffed by the ordinary plan
//! with an in-memory hash join. A key value lives in exactly one bucket, so counts add up and
//! duplicated keys pair by occurrence as before; memory is bounded by one bucket at a time.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use std::io::BufWriter;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryViewArray, ByteView, LargeBinaryArray,
};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::utils::memory::get_record_batch_memory_size;
use datafusion::common::{Statistics, stats::Precision};
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit};
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SpillFile, SpillWriter, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_plan::execution_plan::ReplaceChildrenOptions;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, SpillMetrics, Time};
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::{
    RecordBatchReceiverStreamBuilder, RecordBatchStreamAdapter,
};
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, PlanProperties};
use datafusion::physical_plan::{
    ExecutionPlan, Partitioning, PhysicalExpr, SendableRecordBatchStream, SpillManager,
    execute_stream_partitioned,
};
use futures::StreamExt;

use super::mapped::MappedBatches;

/// The most input (file bytes) one bucket holds; see `bucket_count`.
const MAX_BUCKET_FILE_BYTES: u64 = 32 << 20;

/// Rows gathered per bucket before they are written, so buckets read back in full batches.
const TARGET_ROWS: usize = 8192;

/// How many buckets a keyed diff of `input_bytes` of files needs within `budget`, or `None`
/// when it fits as one plan. Decoded Arrow data takes a few times its compressed file size,
/// and a hash join holds one side plus the probe's batches: a bucket gets about a quarter of
/// the pool (a third ran a 256MiB pool dry now and then on one bucket of 2 × 50M rows). The
/// count is odd, so the bucket (hash mod n) says nothing about the hash join's own partition
/// (the same hash mod the partition count).
///
/// Under a `limit` the pool enforces, a plan in memory needs the pool's margin (4× the files).
/// A budget taken from the machine's memory only needs to hold the diff, which peaks at about
/// 1.75× its files (2 × 20M rows: 2.8 GB for 1.6 GB): buckets write and read every column
/// once more (the same 20M diff took 14.0 s in buckets, 6.8 s in memory).
///
/// Buckets hold at most `MAX_BUCKET_FILE_BYTES` of the input files however large the budget:
/// a bucket's hash table then stays small enough for the caches. 2 × 50M rows took 26.6 s in
/// 11 buckets (a 6 GiB budget), 27.2 s in 17, 24.1 s in 33 and 23.0 s in 127. That is for
/// speed only, so it asks for no more than `max_buckets` (what the open-file limit allows);
/// the memory budget's count does not yield to it.
pub fn bucket_count(
    forced: Option<usize>,
    budget: Option<usize>,
    limit: bool,
    input_bytes: u64,
    max_buckets: usize,
) -> Option<usize> {
    if let Some(n) = forced {
        return (n > 1).then_some(n);
    }
    let budget = budget? as u64;
    let in_memory = input_bytes.saturating_mul(if limit { 4 } else { 2 });
    if in_memory < budget {
        return None;
    }
    let decoded = input_bytes.saturating_mul(4);
    let for_memory = decoded.div_ceil((budget / 4).max(1));
    let for_speed = input_bytes
        .div_ceil(MAX_BUCKET_FILE_BYTES)
        .min(max_buckets as u64);
    Some(for_memory.max(for_speed) as usize | 1)
}

/// How many buckets a keyed diff paired entirely by occurrence runs in, with no memory limit
/// asking for more: its sorts stay in the caches and spill nothing when each bucket holds at
/// most `MAX_BUCKET_FILE_BYTES` of the input. `None` when the input is one bucket's worth.
pub fn occurrence_buckets(input_bytes: u64, max_buckets: usize) -> Option<usize> {
    let buckets = input_bytes
        .div_ceil(MAX_BUCKET_FILE_BYTES)
        .min(max_buckets as u64);
    (buckets > 1).then_some(buckets as usize | 1)
}

/// The most buckets a diff whose sides are read in `partitions` partitions can write without
/// nearing the process's limit of open files: each writer keeps one file open per bucket, and
/// half the limit stays for the inputs and everything else.
pub fn max_buckets(partitions: usize) -> usize {
    let open_files = open_file_limits().map_or(1024, |limit| limit.rlim_cur);
    let open_files = usize::try_from(open_files).unwrap_or(usize::MAX);
    (open_files / 2 / partitions.max(1)).max(1)
}

/// Raises the process's soft limit of open files to the hard one. Many systems start processes
/// with a soft limit of 1,024 under a far higher hard limit, which any process may raise itself
/// to; splitting a large diff needs hundreds of files open. Nothing changes if the call fails.
pub fn raise_open_file_limit() {
    let Some(mut limit) = open_file_limits() else {
        return;
    };
    let raised = limit.rlim_max.min(1 << 20);
    if raised > limit.rlim_cur {
        limit.rlim_cur = raised;
        // SAFETY: setrlimit only reads the struct it is given.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The soft and hard limits of open files (dualrun runs on Unix only).
fn open_file_limits() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// One side split into buckets: per bucket, one spill file per input partition that had rows.
pub struct SideBuckets {
    schema: SchemaRef,
    manager: Arc<SpillManager>,
    files: Vec<Vec<Arc<dyn SpillFile>>>,
    /// Rows written per bucket.
    pub rows: Vec<u64>,
    /// The plan that was read, for its scan metrics.
    pub physical: Arc<dyn ExecutionPlan>,
}

impl SideBuckets {
    /// A plan reading bucket `index`; its files go with it and are deleted once it is dropped.
    pub fn take(&mut self, index: usize) -> Result<LogicalPlan> {
        let mut partitions: Vec<Arc<dyn PartitionStream>> = std::mem::take(&mut self.files[index])
            .into_iter()
            .map(|file| {
                Arc::new(BucketFile {
                    schema: self.schema.clone(),
                    manager: self.manager.clone(),
                    file,
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        if partitions.is_empty() {
            partitions.push(Arc::new(NoRows(self.schema.clone())));
        }
        let table = BucketTable {
            table: StreamingTable::try_new(self.schema.clone(), partitions)?,
            rows: usize::try_from(self.rows[index]).unwrap_or(usize::MAX),
        };
        let source = datafusion::datasource::provider_as_source(Arc::new(table));
        Ok(LogicalPlanBuilder::scan(format!("bucket_{index}"), source, None)?.build()?)
    }
}

/// One side of a bucket, as a table that knows its row count. Bucket files carry no
/// statistics of their own, and without them DataFusion repartitions both sides of the join
/// by key (copying every row once more) rather than building one hash table from one side.
#[derive(Debug)]
struct BucketTable {
    table: StreamingTable,
    rows: usize,
}

#[async_trait::async_trait]
impl TableProvider for BucketTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        self.table.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let input = self.table.scan(state, projection, filters, limit).await?;
        let mut statistics = Statistics::new_unknown(&input.schema());
        statistics.num_rows = Precision::Inexact(self.rows);
        Ok(Arc::new(BucketScan {
            input,
            statistics: Arc::new(statistics),
        }))
    }
}

/// Reads a bucket's files (the scan it wraps), saying how many rows they hold.
#[derive(Debug)]
struct BucketScan {
    input: Arc<dyn ExecutionPlan>,
    statistics: Arc<Statistics>,
}

impl DisplayAs for BucketScan {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "BucketScan: rows={:?}", self.statistics.num_rows)
    }
}

#[allow(deprecated)]
impl ExecutionPlan for BucketScan {
    fn name(&self) -> &'static str {
        "BucketScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    // The scan it wraps is not a child: no optimizer rule is to rewrite it.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn partition_statistics(
        &self,
        partition: Option<usize>,
    ) -> datafusion::error::Result<Arc<Statistics>> {
        Ok(match partition {
            None => self.statistics.clone(),
            Some(_) => Arc::new(Statistics::new_unknown(&self.schema())),
        })
    }
}

/// The one partition of a bucket side without rows. A scan of no partitions fails
/// DataFusion's check that a join's build side is one partition (it did, in the
/// duplicate-safe plan of a bucket with no batch rows).
struct NoRows(SchemaRef);

impl std::fmt::Debug for NoRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoRows")
    }
}

impl PartitionStream for NoRows {
    fn schema(&self) -> &SchemaRef {
        &self.0
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        Box::pin(RecordBatchStreamAdapter::new(
            self.0.clone(),
            futures::stream::empty(),
        ))
    }
}

/// Reads one spill file back as a stream of batches.
struct BucketFile {
    schema: SchemaRef,
    manager: Arc<SpillManager>,
    file: Arc<dyn SpillFile>,
}

impl std::fmt::Debug for BucketFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketFile").finish_non_exhaustive()
    }
}

impl PartitionStream for BucketFile {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        let read = match self.file.path() {
            Some(path) => Ok(read_bucket_file(
                self.file.clone(),
                path.to_owned(),
                file_schema(&schema),
            )),
            None => self.manager.read_spill_as_stream(self.file.clone(), None),
        };
        match read {
            // Back to view types: the views point into the values as read, nothing is copied.
            Ok(stream) => Box::pin(RecordBatchStreamAdapter::new(
                schema.clone(),
                stream.map(move |batch| {
                    relayout(&batch?, &schema)
                        .map_err(|error| DataFusionError::External(error.into()))
                }),
            )),
            Err(error) => Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::once(async move { Err(error) }),
            )),
        }
    }
}

/// Reads a bucket file on a thread of its own, a batch or two ahead of the join, each batch
/// straight from a mapping of its message (`mapped`). DataFusion's own spill reader hands 128 KiB
/// chunks from an async file to an incremental decoder, which copies every byte twice and hops
/// threads per chunk: arrow's blocking reader took 1.5 s of user CPU off a 2 × 50M-row diff
/// (37.6 s to 36.0 s, 3 runs each), and the mappings took off its copy out of the page cache.
fn read_bucket_file(
    file: Arc<dyn SpillFile>,
    path: std::path::PathBuf,
    schema: SchemaRef,
) -> SendableRecordBatchStream {
    let mut builder = RecordBatchReceiverStreamBuilder::new(schema, 2);
    let sender = builder.tx();
    builder.spawn_blocking(move || {
        // The file is deleted once the last handle to it is dropped: keep it until read.
        let _file = file;
        let reader = MappedBatches::open(&path).map_err(DataFusionError::IoError)?;
        for batch in reader {
            if sender
                .blocking_send(batch.map_err(DataFusionError::from))
                .is_err()
            {
                break;
            }
        }
        Ok(())
    });
    builder.build()
}

/// Runs `plan` (one side's normalised columns) and writes its rows into `buckets` spill files
/// by the hash of the `keys` columns, every input partition in parallel.
pub async fn split(
    state: &SessionState,
    plan: LogicalPlan,
    keys: &[String],
    buckets: usize,
) -> Result<SideBuckets> {
    let physical = state
        .create_physical_plan(&plan)
        .await
        .map_err(anyhow::Error::from)?;
    let schema = physical.schema();
    let key_exprs: Vec<Arc<dyn PhysicalExpr>> = keys
        .iter()
        .map(|k| -> Result<Arc<dyn PhysicalExpr>> {
            Ok(Arc::new(ColumnExpr::new_with_schema(k, &schema)?))
        })
        .collect::<Result<_>>()?;
    let task = Arc::new(TaskContext::from(state));
    let metrics = ExecutionPlanMetricsSet::new();
    let manager = Arc::new(SpillManager::new(
        state.runtime_env().clone(),
        SpillMetrics::new(&metrics, 0),
        file_schema(&schema),
    ));
    let streams =
        execute_stream_partitioned(physical.clone(), task).map_err(anyhow::Error::from)?;
    let inputs = streams.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, stream) in streams.into_iter().enumerate() {
        let partitioner = BatchPartitioner::try_new(
            Partitioning::Hash(key_exprs.clone(), buckets),
            Time::new(),
            index,
            inputs,
        )?;
        let writer = BucketWriter::new(state, schema.clone(), buckets, index, inputs);
        tasks.spawn(async move { writer.write_all(stream, partitioner).await });
    }
    let mut files = vec![Vec::new(); buckets];
    let mut rows = vec![0; buckets];
    while let Some(done) = tasks.join_next().await {
        let written = done.map_err(|e| anyhow!("partitioning task failed: {e}"))??;
        for (bucket, (file, count)) in written.into_iter().enumerate() {
            files[bucket].extend(file);
            rows[bucket] += count;
        }
    }
    Ok(SideBuckets {
        schema,
        manager,
        files,
        rows,
        physical,
    })
}

/// Writes one input partition's rows into one spill file per bucket (Arrow IPC streams, what
/// DataFusion's own spill reader reads), gathering small pieces into full batches first. What
/// it gathers is reserved from the memory pool; when the pool says no, or the writer holds its
/// share, everything gathered is written out at once.
struct BucketWriter {
    state_runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    file_schema: SchemaRef,
    reservation: datafusion::execution::memory_pool::MemoryReservation,
    /// The most this writer gathers: an eighth of a memory limit, shared by the writers of
    /// all input partitions. Gathering up to the whole pool (which the pool would grant) left
    /// no room for what runs outside it (decoding, compression, the allocator's slack): at
    /// 2 × 50M rows under 256MiB the process peaked at 2.2× the limit.
    share: usize,
    /// DataFusion's own `spill_compression`, uncompressed unless set. The packed values
    /// compress poorly: LZ4 took a third of the CPU time of splitting 2 × 50M rows, which ran
    /// 23.5 s uncompressed against 29.5 s with LZ4 (8.0 GB of files against 5.3 GB).
    compression: Option<CompressionType>,
    files: Vec<Option<OpenFile>>,
    pending: Vec<Pending>,
    written: Vec<u64>,
}

struct OpenFile {
    file: Arc<dyn SpillFile>,
    writer: StreamWriter<BufWriter<Box<dyn SpillWriter>>>,
}

#[derive(Default)]
struct Pending {
    batches: Vec<RecordBatch>,
    rows: usize,
    reserved: usize,
}

impl BucketWriter {
    fn new(
        state: &SessionState,
        schema: SchemaRef,
        buckets: usize,
        partition: usize,
        partitions: usize,
    ) -> Self {
        let pool = &state.runtime_env().memory_pool;
        let reservation = MemoryConsumer::new(format!("dualrun bucket writer[{partition}]"))
            .with_can_spill(true)
            .register(pool);
        let share = match pool.memory_limit() {
            MemoryLimit::Finite(limit) => limit / 8 / partitions.max(1),
            _ => usize::MAX,
        };
        BucketWriter {
            state_runtime: state.runtime_env().clone(),
            file_schema: file_schema(&schema),
            reservation,
            share,
            compression: state.config().options().execution.spill_compression.into(),
            files: (0..buckets).map(|_| None).collect(),
            pending: (0..buckets).map(|_| Pending::default()).collect(),
            written: vec![0; buckets],
        }
    }

    async fn write_all(
        mut self,
        mut input: SendableRecordBatchStream,
        mut partitioner: BatchPartitioner,
    ) -> Result<Vec<(Option<Arc<dyn SpillFile>>, u64)>> {
        while let Some(batch) = input.next().await {
            let batch = batch.map_err(anyhow::Error::from)?;
            let rows = batch.num_rows();
            if rows == 0 {
                continue;
            }
            // Into the files' layout before the batch is cut into buckets, while its values
            // are in the caches: the partitioner's take then copies them. Laid out when a
            // bucket's pieces were written (its views pointing into a million rows of older
            // batches), every value was a cache miss. With the packed values laid out without
            // a copy (`back_to_back`), 2 × 50M rows split in 13.1 s, against 15.4–15.9 s.
            let batch = relayout(&batch, &self.file_schema)?;
            // The pieces are slices of one batch the partitioner reorders the rows into, so
            // they share its buffers: each is charged its share of the whole. (Charged the
            // whole, the writers flushed at every batch under a limit and wrote batches of a
            // few hundred rows, whose buckets took 2.4× as long to diff.)
            let per_row = get_record_batch_memory_size(&batch).div_ceil(rows);
            let mut pieces = Vec::new();
            partitioner.partition(batch, |bucket, piece| {
                pieces.push((bucket, piece));
                Ok(())
            })?;
            for (bucket, piece) in pieces {
                self.add(bucket, piece, per_row)?;
            }
        }
        for bucket in 0..self.pending.len() {
            self.flush(bucket)?;
        }
        self.files
            .into_iter()
            .zip(self.written)
            .map(|(open, rows)| {
                let file = open
                    .map(|mut open| -> Result<_> {
                        open.writer.finish()?;
                        open.writer
                            .into_inner()?
                            .into_inner()
                            .map_err(|e| anyhow!("spill file: {}", e.error()))?
                            .finish()?;
                        Ok(open.file)
                    })
                    .transpose()?;
                Ok((file, rows))
            })
            .collect()
    }

    fn add(&mut self, bucket: usize, piece: RecordBatch, per_row: usize) -> Result<()> {
        let bytes = piece.num_rows() * per_row;
        if self.reservation.size() + bytes > self.share || self.reservation.try_grow(bytes).is_err()
        {
            for other in 0..self.pending.len() {
                self.flush(other)?;
            }
            self.reservation.grow(bytes);
        }
        let pending = &mut self.pending[bucket];
        pending.rows += piece.num_rows();
        pending.reserved += bytes;
        pending.batches.push(piece);
        if pending.rows >= TARGET_ROWS {
            self.flush(bucket)?;
        }
        Ok(())
    }

    /// A new bucket file, open for writing.
    fn open(&self) -> Result<OpenFile> {
        let file = self
            .state_runtime
            .disk_manager
            .create_tmp_file("dualrun diff bucket")?;
        let options = IpcWriteOptions::default().try_with_compression(self.compression)?;
        let writer = StreamWriter::try_new_with_options(
            BufWriter::new(file.open_writer()?),
            &self.file_schema,
            options,
        )?;
        Ok(OpenFile { file, writer })
    }

    fn flush(&mut self, bucket: usize) -> Result<()> {
        let pending = std::mem::take(&mut self.pending[bucket]);
        if pending.batches.is_empty() {
            return Ok(());
        }
        let batch = concat_batches(&self.file_schema, &pending.batches)?;
        drop(pending.batches);
        if self.files[bucket].is_none() {
            let buckets = self.files.len();
            let open = self
                .open()
                .map_err(|error| explain_open_files(error, buckets))?;
            self.files[bucket] = Some(open);
        }
        let Some(open) = self.files[bucket].as_mut() else {
            return Err(anyhow!("internal: bucket file {bucket} is not open"));
        };
        open.writer.write(&batch)?;
        self.written[bucket] += batch.num_rows() as u64;
        self.reservation
            .shrink(pending.reserved.min(self.reservation.size()));
        Ok(())
    }
}

/// Says what to do when the bucket files ran out of file handles (the hard limit was too low
/// to raise the soft one far enough); other errors as they are.
fn explain_open_files(error: anyhow::Error, buckets: usize) -> anyhow::Error {
    // DataFusion's disk manager reports it only as text ("IO error: Too many open files (os
    // error 24) at path …"), with no io::Error in the chain; other paths keep the io::Error.
    let emfile = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(24)
    }) || error.to_string().contains("os error 24");
    if !emfile {
        return error;
    }
    anyhow!(
        "too many open files for {buckets} buckets on disk (each bucket keeps a file open per input partition): raise the limit (`ulimit -n`) or set [engine] buckets lower"
    )
}

/// Gives the memory a finished bucket freed back to the system when the process holds more
/// than seven eighths of `budget`. glibc keeps freed memory in per-thread arenas, and bucket
/// after bucket (each one's batches allocated on some threads and freed on others) the process
/// grew to 1.8× a 256MiB limit at 2 × 50M rows. Trimming after every bucket kept it under the
/// limit but cost a fifth more time (the next bucket faults the pages back in), so only when
/// the budget is at stake.
pub fn return_freed_memory(budget: Option<usize>) {
    let (Some(budget), Some(resident)) = (budget, resident_bytes()) else {
        return;
    };
    if resident <= budget / 8 * 7 {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heaps; it takes no pointer of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc arenas at one per core (glibc's default is eight per core), unless the
/// environment sets them. Batches are allocated on one thread and freed on another, and each
/// arena keeps what was freed into it: under 256MiB, a diff whose every key repeats peaked at
/// 315–321 MiB with the default, 261 MiB with two arenas on this 2-core VM (and 5M unsorted
/// keys at 228 against 251 MiB), as fast or faster; without a limit, the 5M diff took as long.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if tuned {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: mallopt only sets a glibc tunable; called before the runtime's threads start.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, i32::try_from(cores).unwrap_or(i32::MAX));
        }
    }
}

/// The process's resident memory, from /proc (Linux).
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * usize::try_from(page).ok()?)
}

/// The schema of the bucket files: view types (Utf8View, BinaryView) as their offset forms
/// (64-bit offsets: a batch's values may pass 2 GiB). A view takes 16 bytes per value, an
/// offset 8: on 2 × 50M rows whose values are packed into one binary, a tenth fewer bytes to
/// write and read back. (Views cut from a larger batch
/// would also point into its buffers, carrying every other bucket's strings.)
fn file_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            let data_type = match field.data_type() {
                DataType::Utf8View => DataType::LargeUtf8,
                DataType::BinaryView => DataType::LargeBinary,
                other => other.clone(),
            };
            field.as_ref().clone().with_data_type(data_type)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` cast column by column to `schema` (between a view type and its offset form).
fn relayout(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| -> Result<ArrayRef> {
            if column.data_type() == field.data_type() {
                return Ok(column.clone());
            }
            if field.data_type() == &DataType::LargeBinary
                && let Some(views) = column.as_binary_view_opt()
                && let Some(values) = back_to_back(views)
            {
                return Ok(Arc::new(values));
            }
            Ok(cast(column, field.data_type())?)
        })
        .collect::<Result<_>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `views` as a large binary array over its own data buffer, when its values lie there back
/// to back in row order (as `pack` writes them, short ones too): only the offsets are new. The
/// packed values of a 2 × 50M-row split were a seventh of its time when copied value by value
/// (`cast`). `None` for any other layout, or NULLs, which `cast` then copies.
fn back_to_back(views: &BinaryViewArray) -> Option<LargeBinaryArray> {
    let [buffer] = views.data_buffers() else {
        return None;
    };
    if views.null_count() > 0 {
        return None;
    }
    // Where the first row starts: known from the first value held in the buffer, not inline.
    let mut before = 0usize;
    let mut start = None;
    for view in views.views() {
        let view = ByteView::from(*view);
        if view.length > 12 {
            start = (view.offset as usize).checked_sub(before);
            break;
        }
        before += view.length as usize;
    }
    let start = start?;
    let mut offsets = Vec::with_capacity(views.len() + 1);
    let mut end = start;
    offsets.push(end as i64);
    for (row, &view) in views.views().iter().enumerate() {
        let length = view as u32 as usize;
        let at = buffer.get(end..end + length)?;
        let here = if length > 12 {
            let view = ByteView::from(view);
            view.buffer_index == 0 && view.offset as usize == end
        } else {
            at == views.value(row)
        };
        if !here {
            return None;
        }
        end += length;
        offsets.push(end as i64);
    }
    // SAFETY: the offsets rise from `start` to `end`, all within the buffer (checked above).
    let offsets = unsafe { OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets)) };
    Some(LargeBinaryArray::new(offsets, buffer.clone(), None))
}

#[cfg(test)]
mod tests {
    use super::{back_to_back, bucket_count, file_schema, relayout, split};
    use crate::diff::pack;
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, BinaryViewArray, Int64Array, RecordBatch, StringViewArray, make_view,
    };
    use datafusion::arrow::buffer::Buffer;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{SessionConfig, SessionContext};

    #[test]
    fn view_columns_travel_through_bucket_files_in_their_offset_form_and_come_back_equal() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8View, true),
            Field::new("packed", DataType::BinaryView, true),
        ]));
        let long = "a value longer than a view's twelve inline bytes";
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(StringViewArray::from(vec![
                    Some("short"),
                    None,
                    Some(long),
                    Some(""),
                ])),
                Arc::new(BinaryViewArray::from(vec![
                    Some(long.as_bytes()),
                    Some(b"x".as_slice()),
                    None,
                    Some(long.as_bytes()),
                ])),
            ],
        )
        .unwrap();
        // Cut from a larger batch, as the partitioner cuts it.
        let piece = batch.slice(1, 3);
        let files = file_schema(&schema);
        assert_eq!(files.field(1).data_type(), &DataType::LargeUtf8);
        assert_eq!(files.field(2).data_type(), &DataType::LargeBinary);
        let written = relayout(&piece, &files).unwrap();
        assert_eq!(written.schema(), files);
        let read = relayout(&written, &schema).unwrap();
        assert_eq!(read, piece);
    }

    #[test]
    fn packed_values_are_laid_out_for_bucket_files_without_being_copied() {
        let long = "a value longer than a view's twelve inline bytes";
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![
                Some(1),
                None,
                Some(3),
                None,
                Some(5),
            ])),
            Arc::new(StringViewArray::from(vec![
                None,
                None,
                Some(long),
                Some("x"),
                Some(long),
            ])),
        ];
        // Short rows first and last, as a slice of the batch the scan cut it from.
        let packed = pack::encode(&columns).unwrap();
        for (offset, length) in [(0, 5), (1, 3), (1, 4), (0, 3), (3, 2)] {
            let views = packed.slice(offset, length);
            let values = back_to_back(&views).expect("back to back");
            assert_eq!(values.values().as_ptr(), views.data_buffers()[0].as_ptr());
            let expected: Vec<&[u8]> = views.iter().map(Option::unwrap).collect();
            let got: Vec<&[u8]> = values.iter().map(Option::unwrap).collect();
            assert_eq!(got, expected);
        }
        // Only short rows: where they lie is unknown.
        assert!(back_to_back(&packed.slice(1, 1)).is_none());
        // A short value is taken from the buffer only where the buffer holds it.
        let buffer = Buffer::from(b"0123456789abcdefXXXXX0123456789abcdef".as_slice());
        let views_with = |short: &[u8]| {
            let views = vec![
                make_view(&buffer[..16], 0, 0),
                make_view(short, 0, 16),
                make_view(&buffer[21..], 0, 21),
            ];
            BinaryViewArray::new(views.into(), vec![buffer.clone()], None)
        };
        assert!(back_to_back(&views_with(b"XXXXX")).is_some());
        assert!(back_to_back(&views_with(b"YYYYY")).is_none());
        // Laid out otherwise (short values only inline), or with NULLs: copied by `cast`.
        let built =
            BinaryViewArray::from(vec![b"short".as_slice(), long.as_bytes(), long.as_bytes()]);
        assert!(back_to_back(&built).is_none());
        let nulls = BinaryViewArray::from(vec![Some(long.as_bytes()), None]);
        assert!(back_to_back(&nulls).is_none());
        let schema = Arc::new(Schema::new(vec![Field::new(
            "v",
            DataType::BinaryView,
            true,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(built)]).unwrap();
        let written = relayout(&batch, &file_schema(&schema)).unwrap();
        assert_eq!(relayout(&written, &schema).unwrap(), batch);
    }

    #[tokio::test]
    async fn under_a_limit_buckets_are_written_in_full_batches() {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(64 << 20, 1.0)
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(
            SessionConfig::new().with_target_partitions(1),
            runtime,
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("packed", DataType::BinaryView, false),
        ]));
        // 100 batches of 8,192 rows (about 60 MB), packed as the diff packs them.
        let batches: Vec<RecordBatch> = (0..100i64)
            .map(|b| {
                let ids: Vec<i64> = (b * 8192..(b + 1) * 8192).collect();
                let text: Vec<String> = ids.iter().map(|i| format!("{i:>50}")).collect();
                let values: Vec<ArrayRef> = vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(StringViewArray::from_iter_values(text)),
                ];
                let packed = pack::encode(&values).unwrap();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(Int64Array::from(ids)), Arc::new(packed)],
                )
                .unwrap()
            })
            .collect();
        let table = MemTable::try_new(schema, vec![batches]).unwrap();
        let plan = ctx
            .read_table(Arc::new(table))
            .unwrap()
            .into_unoptimized_plan();
        let mut buckets = split(&ctx.state(), plan, &["id".to_owned()], 7)
            .await
            .unwrap();
        let mut rows = 0;
        for index in 0..7 {
            let physical = ctx
                .state()
                .create_physical_plan(&buckets.take(index).unwrap())
                .await
                .unwrap();
            let read = collect(physical, ctx.task_ctx()).await.unwrap();
            let bucket_rows: usize = read.iter().map(RecordBatch::num_rows).sum();
            // Each writer may gather an eighth of the pool (8 MiB): about 13 input batches, or
            // 15,000 rows a bucket, before it writes; a bucket writes on its own at 8,192.
            assert!(
                bucket_rows / read.len() >= 6000,
                "bucket {index}: {bucket_rows} rows in {} batches",
                read.len()
            );
            rows += bucket_rows;
        }
        assert_eq!(rows, 819_200);
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_limit_keeps_a_wider_margin_than_a_budget_from_the_machine() {
        let budget = Some(6 * GIB as usize);
        // 2 × 20M rows of the benchmark: 1.6 GB of files.
        let files = 16 * GIB / 10;
        assert_eq!(bucket_count(None, budget, false, files, 1000), None);
        assert_eq!(bucket_count(None, budget, true, files, 1000), Some(53));
        // 2 × 50M rows: 4 GB of files bucket either way, into buckets of at most 32 MiB of
        // files (a quarter budget would hold 11 times that).
        assert_eq!(bucket_count(None, budget, false, 4 * GIB, 1000), Some(129));
        // A small limit asks for more, smaller buckets than that.
        assert_eq!(
            bucket_count(None, Some(256 << 20), true, 4 * GIB, 1000),
            Some(257)
        );
        assert_eq!(bucket_count(None, None, false, 4 * GIB, 1000), None);
        assert_eq!(bucket_count(Some(1), budget, true, 4 * GIB, 1000), None);
        assert_eq!(bucket_count(Some(8), None, false, 1, 1000), Some(8));
        // Few open files allowed: fewer, larger buckets for speed, never fewer for memory.
        assert_eq!(bucket_count(None, budget, false, 4 * GIB, 40), Some(41));
        assert_eq!(
            bucket_count(None, Some(256 << 20), true, 4 * GIB, 40),
            Some(257)
        );
    }
}
