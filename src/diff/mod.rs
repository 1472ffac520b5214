//! The diff of two query results: align the schemas, build one DataFusion plan that pairs the
//! rows, and consume it once into counts, per-column statistics and samples.

pub mod align;
mod cell;
pub mod collect;
pub mod columns;
pub mod duplicates;
pub mod explain;
mod keyed;
mod keyless;
mod mapped;
mod number_text;
mod occurrence;
pub mod pack;
pub mod partition;
pub mod plan;
mod read_as;
mod result;
mod rules;
pub mod scan;
mod stats;
mod uuid_text;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use futures::{StreamExt, TryStreamExt};

pub use cell::{cell_json, cell_text};
pub use result::*;

use crate::config::{CheckSpec, Side, Tolerance};
use crate::engine::{Engine, scanned_tables};
use crate::sources::Catalog;

async fn execute(state: &SessionState, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
    Ok(execute_physical(state, plan).await?.0)
}

/// Plans and starts the diff plan, keeping the physical plan so its metrics can be read while it
/// runs (progress) and after (what was scanned).
async fn execute_physical(
    state: &SessionState,
    plan: LogicalPlan,
) -> Result<(SendableRecordBatchStream, Arc<dyn ExecutionPlan>)> {
    let physical = state
        .create_physical_plan(&plan)
        .await
        .map_err(anyhow::Error::from)?;
    let physical = occurrence::number_occurrences(physical)?;
    let stream = execute_stream(physical.clone(), Arc::new(TaskContext::from(state)))
        .map_err(anyhow::Error::from)?;
    Ok((stream, physical))
}

/// Where a running diff says how far it got. The CLI draws it as a progress bar on a terminal;
/// diff/ itself knows no terminal.
pub trait Progress: Send + Sync {
    /// Bytes read so far of the bytes of the files to read.
    fn advance(&self, done: u64, total: u64);
    /// What the diff is doing now ("bucket 3/17").
    fn stage(&self, text: String);
}

/// Reports bytes read against the size of the files to read, until dropped.
fn track_progress(
    physical: &Arc<dyn ExecutionPlan>,
    progress: Option<&Arc<dyn Progress>>,
) -> Option<tokio::task::JoinHandle<()>> {
    let progress = progress?.clone();
    // Weak: a finished plan's join holds its hash table until the plan is dropped, and what
    // comes after it (resolving repeated keys, a fallback plan) needs that memory.
    let physical = Arc::downgrade(physical);
    Some(tokio::spawn(async move {
        while let Some(physical) = physical.upgrade() {
            let (done, total) = scan::progress(&physical);
            drop(physical);
            if total > 0 && done > 0 {
                progress.advance(done.min(total), total);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }))
}

/// (rows, duplicated key values) of one side, from the `plan::duplicate_keys` plan.
async fn side_counts(state: &SessionState, plan: LogicalPlan) -> Result<(u64, u64)> {
    use datafusion::arrow::array::{Array, AsArray};
    let batches: Vec<_> = execute(state, plan).await?.try_collect().await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok((0, 0));
    };
    let value = |i: usize| -> Result<u64> {
        let column = datafusion::arrow::compute::cast(
            batch.column(i),
            &datafusion::arrow::datatypes::DataType::Int64,
        )?;
        let column = column.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        Ok(if column.is_valid(0) {
            column.value(0) as u64
        } else {
            0
        })
    };
    Ok((value(0)?, value(1)?))
}

fn describe_tolerance(tolerance: &Tolerance) -> String {
    match tolerance {
        Tolerance::Numeric { abs, rel } if *rel == 0.0 => format!("abs:{abs}"),
        Tolerance::Numeric { abs, rel } if *abs == 0.0 => format!("rel:{rel}"),
        Tolerance::Numeric { abs, rel } => format!("abs:{abs},rel:{rel}"),
        Tolerance::Temporal { abs } => format!("abs:{}", humantime::format_duration(*abs)),
    }
}

/// Diffs the two planned results of one check. Text of one side that does not read as the
/// other side's type is an error naming the file that holds it, when a file does.
pub async fn run(
    engine: &Engine,
    catalog: &Catalog,
    check: &CheckSpec,
    batch: LogicalPlan,
    stream: LogicalPlan,
    progress: Option<&Arc<dyn Progress>>,
) -> Result<DiffResult> {
    let sides = [("batch", batch.clone()), ("stream", stream.clone())];
    let error = match diff(engine, catalog, check, batch, stream, progress).await {
        Ok(result) => return Ok(result),
        Err(error) => error,
    };
    let Some(unreadable) = crate::error::Unreadable::behind(&error) else {
        return Err(error);
    };
    let side = sides.iter().find(|(name, _)| *name == unreadable.side);
    let file = match (side, &unreadable.text) {
        (Some((_, plan)), Some(text)) => {
            read_as::locate(&engine.ctx, plan, &unreadable.column, text).await
        }
        _ => None,
    }
    .or_else(|| unreadable.file.clone());
    Err(crate::error::Trouble::error(
        crate::error::Cause::Source,
        unreadable.message(file.as_deref()),
    ))
}

async fn diff(
    engine: &Engine,
    catalog: &Catalog,
    check: &CheckSpec,
    batch: LogicalPlan,
    stream: LogicalPlan,
    progress: Option<&Arc<dyn Progress>>,
) -> Result<DiffResult> {
    let alignment = align::align(
        check,
        batch.schema(),
        stream.schema(),
        engine.spec.unpacked_values,
    )?;
    let batch_tables = scanned_tables(&batch);
    let stream_tables = scanned_tables(&stream);
    let input_bytes = catalog.bytes_of(Side::Batch, batch_tables.iter().map(String::as_str))
        + catalog.bytes_of(Side::Stream, stream_tables.iter().map(String::as_str));
    let row_bytes = crate::engine::decoded_row_bytes(batch.schema().as_arrow())
        .max(crate::engine::decoded_row_bytes(stream.schema().as_arrow()));
    let state = engine.diff_state(input_bytes, row_bytes);
    if engine.remote.is_some() {
        crate::engine::ballista::ensure_distributable(&check.name, &batch, &stream)?;
    }
    for (what, column) in [
        ("time_column", &check.time_column),
        ("window_column", &check.window_column),
    ] {
        if let Some(column) = column {
            let compared = alignment
                .keys
                .iter()
                .chain(&alignment.values)
                .any(|c| &c.name == column);
            if !compared {
                anyhow::bail!(
                    "{what} '{column}' is not a column both results have (and not ignored)"
                );
            }
            if alignment.keys.is_empty() {
                anyhow::bail!(
                    "{what} needs a key: keyless rows carry no time of their own to compare"
                );
            }
        }
    }
    let dimension = |column: &Option<String>, output: &str| {
        column.as_ref().map(|c| (output.to_string(), c.clone()))
    };
    let mut explainer = explain::Explainer::new(
        &alignment.values,
        explain::Dimensions {
            time: dimension(&check.time_column, columns::TIME),
            window: dimension(&check.window_column, columns::WINDOW),
        },
    );
    let packing = choose_packing(engine, &alignment, check);
    let local = engine.remote.is_none();
    let batch = plan::prepared(
        batch,
        &alignment,
        packing.as_ref(),
        local.then_some("batch"),
    )?;
    let stream = plan::prepared(
        stream,
        &alignment,
        packing.as_ref(),
        local.then_some("stream"),
    )?;
    let one_pass = !engine.spec.pair_all_by_occurrence;
    // (On Ballista the cluster spreads the work over its executors instead of buckets.)
    let buckets = partition::bucket_count(
        engine.spec.buckets,
        engine.memory_budget(),
        engine.spec.memory_limit.is_some(),
        input_bytes,
        partition::max_buckets(state.config().target_partitions()),
    )
    .filter(|_| engine.remote.is_none());
    let diff = DiffRun {
        engine,
        state: &state,
        catalog,
        check,
        alignment: &alignment,
        packing: packing.as_ref(),
        progress,
        input_bytes,
        row_bytes,
    };
    let sides = (batch, stream);
    let (collected, paired_by_occurrence, mut scan) = match buckets {
        Some(buckets) => {
            diff.in_buckets(sides, buckets, one_pass, &mut explainer)
                .await?
        }
        None if alignment.keys.is_empty() => diff.keyless(sides, &mut explainer).await?,
        None => diff.keyed(sides, one_pass, &mut explainer).await?,
    };
    let stats = explainer.column_stats();
    let columns = alignment
        .values
        .iter()
        .zip(&collected.column_mismatches)
        .zip(stats)
        .map(|((column, mismatched), stats)| ColumnDiff {
            name: column.name.clone(),
            mismatched: *mismatched,
            data_type: if column.number_text {
                format!(
                    "{} vs {}, as numbers",
                    column.batch_type, column.stream_type
                )
            } else {
                column.common.to_string()
            },
            tolerance: column.tolerance.as_ref().map(describe_tolerance),
            stats,
        })
        .collect();
    let findings = explainer.findings(
        &alignment.schema,
        collected.counts.missing_in_stream,
        collected.counts.duplicate_keys_stream,
        !alignment.keys.is_empty(),
    );
    let histogram = explainer.histogram();
    scan.batch.files_listed =
        catalog.files_of(Side::Batch, batch_tables.iter().map(String::as_str));
    scan.stream.files_listed =
        catalog.files_of(Side::Stream, stream_tables.iter().map(String::as_str));
    let result = DiffResult {
        findings,
        histogram,
        scan,
        rows: collected.rows,
        counts: collected.counts,
        columns,
        schema: alignment.schema,
        samples: collected.samples,
        paired_by_occurrence,
    };
    Ok(result)
}

/// Which value columns travel through the diff packed into one: in-process only (Ballista
/// executors do not know the function), never the time and window columns (the findings
/// need them as values).
fn choose_packing(
    engine: &Engine,
    alignment: &align::Alignment,
    check: &CheckSpec,
) -> Option<pack::Packing> {
    let dimensions: Vec<&str> = [&check.time_column, &check.window_column]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    (!engine.spec.unpacked_values)
        .then(|| pack::Packing::choose(&alignment.values, &dimensions))
        .flatten()
}

fn keyed_collector<'a>(
    alignment: &'a align::Alignment,
    check: &CheckSpec,
    packing: Option<pack::Packing>,
) -> keyed::KeyedCollector<'a> {
    keyed::KeyedCollector::new(
        alignment,
        check.sample,
        check.time_column.is_some(),
        packing,
    )
}

/// What one keyed diff plan saw, besides the rows the collector took: each side's row count
/// and duplicated key values from the first pass.
#[derive(Default)]
struct KeyedPass {
    batch_rows: u64,
    stream_rows: u64,
    batch_dups: u64,
    stream_dups: u64,
    with_occurrence: bool,
    /// What the plan that gave the result read (plans over bucket files read no tables).
    scan: Option<ScanStats>,
}

impl KeyedPass {
    fn add(&mut self, other: &KeyedPass) {
        self.batch_rows += other.batch_rows;
        self.stream_rows += other.stream_rows;
        self.batch_dups += other.batch_dups;
        self.stream_dups += other.stream_dups;
        self.with_occurrence |= other.with_occurrence;
    }

    /// The outcome of the one plan that ran this pass.
    fn outcome(&self, collector: keyed::KeyedCollector) -> Outcome {
        let scan = self.scan.clone().unwrap_or_default();
        (self.finish(collector), self.with_occurrence, scan)
    }

    fn finish(&self, collector: keyed::KeyedCollector) -> collect::Collected {
        let mut collected = collector.finish();
        collected.counts.duplicate_keys_batch = self.batch_dups;
        collected.counts.duplicate_keys_stream = self.stream_dups;
        // Equal pairs were not shipped out: the sides' row counts come from the first pass.
        collected.rows = RowCounts {
            batch: self.batch_rows,
            stream: self.stream_rows,
        };
        collected.counts.matched = self
            .batch_rows
            .saturating_sub(collected.counts.missing_in_stream)
            .saturating_sub(collected.counts.mismatched);
        collected
    }
}

/// What the plans of one check's diff share: the result of each way to run it is the rows'
/// accounting, whether rows were paired by occurrence, and what was read of the tables.
struct DiffRun<'a> {
    engine: &'a Engine,
    state: &'a SessionState,
    catalog: &'a Catalog,
    check: &'a CheckSpec,
    alignment: &'a align::Alignment,
    packing: Option<&'a pack::Packing>,
    progress: Option<&'a Arc<dyn Progress>>,
    input_bytes: u64,
    row_bytes: usize,
}

type Outcome = (collect::Collected, bool, ScanStats);

impl DiffRun<'_> {
    /// The keyless diff in one plan.
    async fn keyless(
        &self,
        (batch, stream): (LogicalPlan, LogicalPlan),
        explainer: &mut explain::Explainer,
    ) -> Result<Outcome> {
        let plan = plan::keyless(batch, stream, self.alignment, self.packing)?;
        let (output, physical) = execute_physical(self.state, plan).await?;
        let ticker = track_progress(&physical, self.progress);
        let mut collector = keyless::KeylessCollector::new(
            self.alignment,
            self.check.sample,
            self.packing.cloned(),
        );
        let consumed = collector.consume(output, explainer).await;
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        consumed?;
        Ok((
            collector.finish(),
            false,
            scan::stats(&physical, self.catalog),
        ))
    }

    /// The keyed diff in one plan: in-process (`one_pass`), one pass over a join on the key
    /// finds and pairs repeated keys itself (see `duplicates`); on Ballista, or when keys
    /// repeat too often for that, each side's duplicated keys are counted first and, if any,
    /// every row is paired by (key, occurrence in value order).
    async fn keyed(
        &self,
        sides: (LogicalPlan, LogicalPlan),
        one_pass: bool,
        explainer: &mut explain::Explainer,
    ) -> Result<Outcome> {
        let (state, check) = (self.state, self.check);
        let mut collector = keyed_collector(self.alignment, check, self.packing.cloned());
        let sides = if one_pass {
            let started = OnePass::start(state, sides, self.alignment, check, self.packing).await?;
            let finished = started
                .finish(
                    state,
                    self.alignment,
                    check,
                    &mut collector,
                    explainer,
                    self.progress,
                    self.catalog,
                )
                .await?;
            match finished {
                Finished::Paired(pass) => return Ok(pass.outcome(collector)),
                Finished::GaveUp(sides) => *sides,
            }
        } else {
            sides
        };
        // Pairing every row by occurrence sorts every row by key and value order: in buckets,
        // each sort stays in the caches and none spills. In one plan, the stream delivered
        // twice over (2 × 5M rows against 5M) took 15.6 s and 3.6 GiB.
        let buckets = partition::occurrence_buckets(
            self.input_bytes,
            partition::max_buckets(state.config().target_partitions()),
        );
        if let Some(buckets) = buckets.filter(|_| one_pass) {
            return self.in_buckets(sides, buckets, false, explainer).await;
        }
        let pass = occurrence_pass(
            state,
            sides,
            self.alignment,
            check,
            &mut collector,
            explainer,
            self.progress,
            self.catalog,
        )
        .await?;
        Ok(pass.outcome(collector))
    }

    /// The diff in `buckets` buckets: both sides hash-partitioned by key (or by every compared
    /// column, keyless) into files on disk, then diffed one bucket pair at a time. Keyed, each
    /// bucket tries the one pass first (when `one_pass`) until a bucket's keys repeat too often
    /// for it.
    async fn in_buckets(
        &self,
        (batch, stream): (LogicalPlan, LogicalPlan),
        buckets: usize,
        one_pass: bool,
        explainer: &mut explain::Explainer,
    ) -> Result<Outcome> {
        let (check, alignment, packing) = (self.check, self.alignment, self.packing);
        tracing::info!(check = %check.name, buckets, "diff split into buckets on disk");
        let columns = match alignment.keys.is_empty() {
            true => plan::keyless_columns(alignment, packing),
            false => alignment.keys.iter().map(|k| k.name.clone()).collect(),
        };
        let split = |plan: LogicalPlan, name: &'static str| {
            if let Some(progress) = self.progress {
                progress.stage(format!("splitting {name} into {buckets} buckets"));
            }
            partition::split(self.state, plan, &columns, buckets)
        };
        let started = std::time::Instant::now();
        let mut batch_buckets = split(batch, "batch").await?;
        let mut stream_buckets = split(stream, "stream").await?;
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "both sides split"
        );
        let (batch_scan, stream_scan) = (
            scan::stats(&batch_buckets.physical, self.catalog),
            scan::stats(&stream_buckets.physical, self.catalog),
        );
        let scan = ScanStats {
            batch: batch_scan.batch,
            stream: stream_scan.stream,
            database_queries: [batch_scan.database_queries, stream_scan.database_queries].concat(),
        };
        let bucket_state = self
            .engine
            .diff_state(self.input_bytes / buckets as u64, self.row_bytes);
        let stage = |index: usize| {
            if let Some(progress) = self.progress {
                progress.stage(format!("bucket {}/{buckets}", index + 1));
            }
        };
        let mut next = |index: usize| -> Result<(LogicalPlan, LogicalPlan)> {
            Ok((batch_buckets.take(index)?, stream_buckets.take(index)?))
        };
        let memory_limit = self.engine.spec.memory_limit;
        if alignment.keys.is_empty() {
            let mut collector =
                keyless::KeylessCollector::new(alignment, check.sample, packing.cloned());
            for index in 0..buckets {
                stage(index);
                let (b, s) = next(index)?;
                let plan = plan::keyless(b, s, alignment, packing)?;
                let (output, _) = execute_physical(&bucket_state, plan).await?;
                collector.consume(output, explainer).await?;
                partition::return_freed_memory(memory_limit);
            }
            return Ok((collector.finish(), false, scan));
        }
        let mut collector = keyed_collector(alignment, check, packing.cloned());
        let mut totals = KeyedPass::default();
        // With room for two buckets at once, the next bucket's join builds its hash table
        // while this one's rows are compared: a join builds on one thread. Half the pool is
        // enough for two buckets by the decoded estimate, which runs high: at 2 × 50M rows
        // under 512MiB, building ahead added 55 MiB of peak memory for an estimated 130 MB a
        // bucket (and took a fifth off the time).
        let overlap = one_pass
            && self.engine.memory_budget().is_some_and(|budget| {
                self.input_bytes.saturating_mul(4) / buckets as u64 * 2 <= budget as u64 / 2
            });
        let start = |sides| OnePass::start(&bucket_state, sides, alignment, check, packing);
        let mut ahead: Option<OnePass> = None;
        // Once a bucket's keys repeated too often for the one pass, the next buckets (the
        // same data, split by key hash) go straight to the duplicate-safe plan.
        let mut one_pass = one_pass;
        for index in 0..buckets {
            stage(index);
            // A bucket started ahead holds its files: it runs as started.
            let by_occurrence = if one_pass || ahead.is_some() {
                let this = match ahead.take() {
                    Some(this) => this,
                    None => start(next(index)?).await?,
                };
                if one_pass && overlap && index + 1 < buckets {
                    ahead = Some(start(next(index + 1)?).await?.ahead());
                }
                let finished = this
                    .finish(
                        &bucket_state,
                        alignment,
                        check,
                        &mut collector,
                        explainer,
                        None,
                        self.catalog,
                    )
                    .await?;
                match finished {
                    Finished::Paired(pass) => {
                        totals.add(&pass);
                        None
                    }
                    Finished::GaveUp(sides) => {
                        one_pass = false;
                        Some(*sides)
                    }
                }
            } else {
                Some(next(index)?)
            };
            if let Some(sides) = by_occurrence {
                let pass = occurrence_pass(
                    &bucket_state,
                    sides,
                    alignment,
                    check,
                    &mut collector,
                    explainer,
                    None,
                    self.catalog,
                )
                .await?;
                totals.add(&pass);
            }
            partition::return_freed_memory(memory_limit);
            tracing::debug!(
                bucket = index,
                seconds = started.elapsed().as_secs_f64(),
                "bucket diffed"
            );
        }
        Ok((totals.finish(collector), totals.with_occurrence, scan))
    }
}

/// A one-pass keyed diff plan, started. Started ahead (see `ahead`), a bucket's join builds
/// its hash table while the previous bucket's rows are still being compared.
struct OnePass {
    sides: (LogicalPlan, LogicalPlan),
    output: SendableRecordBatchStream,
    physical: Arc<dyn ExecutionPlan>,
}

impl OnePass {
    async fn start(
        state: &SessionState,
        (batch, stream): (LogicalPlan, LogicalPlan),
        alignment: &align::Alignment,
        check: &CheckSpec,
        packing: Option<&pack::Packing>,
    ) -> Result<OnePass> {
        let ids = plan::RowIds::default();
        let shape = plan::KeyedShape {
            dimensions: [check.time_column.as_deref(), check.window_column.as_deref()],
            packing,
            row_ids: Some(&ids),
            ..Default::default()
        };
        let plan = plan::keyed(batch.clone(), stream.clone(), alignment, shape)?;
        let (output, physical) = execute_physical(state, plan).await?;
        tracing::trace!(
            "diff plan:\n{}",
            datafusion::physical_plan::displayable(physical.as_ref()).indent(true)
        );
        Ok(OnePass {
            sides: (batch, stream),
            output,
            physical,
        })
    }

    /// Runs the plan now, a couple of batches ahead of whoever reads its rows.
    fn ahead(self) -> OnePass {
        let mut builder = RecordBatchReceiverStream::builder(self.output.schema(), 2);
        let sender = builder.tx();
        let mut output = self.output;
        builder.spawn(async move {
            while let Some(batch) = output.next().await {
                if sender.send(batch).await.is_err() {
                    break;
                }
            }
            Ok(())
        });
        OnePass {
            output: builder.build(),
            ..self
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        self,
        state: &SessionState,
        alignment: &align::Alignment,
        check: &CheckSpec,
        collector: &mut keyed::KeyedCollector<'_>,
        explainer: &mut explain::Explainer,
        progress: Option<&Arc<dyn Progress>>,
        catalog: &Catalog,
    ) -> Result<Finished> {
        let dimensions = [check.time_column.as_deref(), check.window_column.as_deref()];
        let OnePass {
            sides,
            output,
            physical,
        } = self;
        let ticker = track_progress(&physical, progress);
        // The plan is let go as soon as its rows are read: its join holds the hash table until
        // then, and resolving the repeated keys (or the fallback plan) needs the memory.
        let mut plan = Some(physical);
        let mut scan = None;
        let release = |plan: &mut Option<Arc<dyn ExecutionPlan>>, scan: &mut Option<ScanStats>| {
            if let Some(physical) = plan.take() {
                trace_metrics(&physical);
                *scan = Some(scan::stats(&physical, catalog));
            }
        };
        let consumed = duplicates::consume(state, output, collector, explainer, dimensions, || {
            release(&mut plan, &mut scan)
        })
        .await;
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        release(&mut plan, &mut scan);
        let stats = match consumed? {
            duplicates::Consumed::Done(stats) => stats,
            duplicates::Consumed::Reread(stats, keys) => {
                tracing::debug!(check = %check.name, keys = keys.num_rows(), "repeated keys under a tolerance: their rows read again");
                let (batch, stream) = sides;
                let only = |side| plan::only_keys(side, keys.clone(), alignment);
                let repeated = occurrence_pass(
                    state,
                    (only(batch)?, only(stream)?),
                    alignment,
                    check,
                    collector,
                    explainer,
                    None,
                    catalog,
                )
                .await?;
                return Ok(Finished::Paired(KeyedPass {
                    batch_rows: stats.batch_rows,
                    stream_rows: stats.stream_rows,
                    scan,
                    ..repeated
                }));
            }
            duplicates::Consumed::GaveUp => {
                tracing::info!(check = %check.name, "keys repeat too often to pair them apart: pairing every row by occurrence");
                return Ok(Finished::GaveUp(Box::new(sides)));
            }
        };
        Ok(Finished::Paired(KeyedPass {
            batch_rows: stats.batch_rows,
            stream_rows: stats.stream_rows,
            batch_dups: stats.batch_dups,
            stream_dups: stats.stream_dups,
            with_occurrence: stats.batch_dups + stats.stream_dups > 0,
            scan,
        }))
    }
}

/// How a one pass ended.
enum Finished {
    /// Every row paired, repeated keys included.
    Paired(KeyedPass),
    /// Keys repeat too often to pair them apart: nothing was accounted, and these sides want
    /// the duplicate-safe plan.
    GaveUp(Box<(LogicalPlan, LogicalPlan)>),
}

/// Where a diff plan's time and memory went, per operator (`RUST_LOG=dualrun::diff=trace`).
fn trace_metrics(physical: &Arc<dyn ExecutionPlan>) {
    tracing::trace!(
        "diff plan, run:\n{}",
        datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
            physical.as_ref()
        )
        .indent(true)
    );
}

/// The keyed diff that counts each side's duplicated keys first and, if any, pairs every row
/// by (key, occurrence in value order).
#[allow(clippy::too_many_arguments)]
async fn occurrence_pass(
    state: &SessionState,
    (batch, stream): (LogicalPlan, LogicalPlan),
    alignment: &align::Alignment,
    check: &CheckSpec,
    collector: &mut keyed::KeyedCollector<'_>,
    explainer: &mut explain::Explainer,
    progress: Option<&Arc<dyn Progress>>,
    catalog: &Catalog,
) -> Result<KeyedPass> {
    let dimensions = [check.time_column.as_deref(), check.window_column.as_deref()];
    let ((batch_rows, batch_dups), (stream_rows, stream_dups)) = futures::try_join!(
        side_counts(state, plan::duplicate_keys(batch.clone(), alignment)?),
        side_counts(state, plan::duplicate_keys(stream.clone(), alignment)?),
    )?;
    let with_occurrence = batch_dups > 0 || stream_dups > 0;
    // The late-data finding needs the time of every batch row; otherwise only divergent rows
    // leave DataFusion.
    let shape = plan::KeyedShape {
        with_occurrence,
        dimensions,
        only_divergent: check.time_column.is_none(),
        packing: collector.packing(),
        row_ids: None,
    };
    let plan = plan::keyed(batch, stream, alignment, shape)?;
    tracing::debug!(check = %check.name, with_occurrence, "diff plan:\n{}", plan.display_indent());
    let (output, physical) = execute_physical(state, plan).await?;
    let ticker = track_progress(&physical, progress);
    let consumed = collector.consume(output, explainer).await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    consumed?;
    trace_metrics(&physical);
    Ok(KeyedPass {
        batch_rows,
        stream_rows,
        batch_dups,
        stream_dups,
        with_occurrence,
        scan: Some(scan::stats(&physical, catalog)),
    })
}

#[cfg(test)]
mod tests;
