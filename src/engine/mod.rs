//! The DataFusion session and the rule that makes dualrun trustworthy: one check's SQL is parsed
//! once and planned twice, against the `batch` schema and against the `stream` schema, read-only.
//! Memory is bounded by a spilling pool so large diffs slow down instead of failing.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::catalog::view::ViewTable;
use datafusion::common::ParamValues;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

/// What a wrapper of a built-in aggregate (reached through its `inner()`) passes through as it
/// is: the function's name, aliases, signature, return type, documentation and monotonicity, so
/// that SQL names and plans it as the built-in while the wrapper changes how it computes.
macro_rules! same_function_as_inner {
    () => {
        fn name(&self) -> &str {
            self.inner().name()
        }

        fn aliases(&self) -> &[String] {
            self.inner().aliases()
        }

        fn signature(&self) -> &Signature {
            self.inner().signature()
        }

        fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
            self.inner().return_type(arg_types)
        }

        fn documentation(&self) -> Option<&Documentation> {
            self.inner().documentation()
        }

        fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
            self.inner().set_monotonicity(data_type)
        }
    };
}

/// After DataFusion's coercion, a float aggregate sees Float64 in every argument and returns
/// Float64 (a SUM of integers returns Int64, and stays the built-in's).
fn is_float(input: &[FieldRef], output: &DataType) -> bool {
    !input.is_empty()
        && input.iter().all(|f| f.data_type() == &DataType::Float64)
        && output == &DataType::Float64
}

/// What a wrapper that computes float input its own way (through its `float_groups()`) and
/// leaves every other input to the built-in (its `inner()`) shares: which accumulators take
/// which input, and that the order of the rows does not matter to them.
macro_rules! float_path_else_inner {
    () => {
        fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
            if super::is_float(args.expr_fields, args.return_type()) {
                !args.is_distinct
            } else {
                self.inner().groups_accumulator_supported(args)
            }
        }

        fn create_groups_accumulator(
            &self,
            args: AccumulatorArgs,
        ) -> Result<Box<dyn GroupsAccumulator>> {
            if !super::is_float(args.expr_fields, args.return_type()) {
                return self.inner().create_groups_accumulator(args);
            }
            Ok(self.float_groups())
        }

        fn create_sliding_accumulator(
            &self,
            args: AccumulatorArgs,
        ) -> Result<Box<dyn Accumulator>> {
            if !super::is_float(args.expr_fields, args.return_type()) || args.is_distinct {
                return self.inner().create_sliding_accumulator(args);
            }
            self.accumulator(args)
        }

        fn reverse_expr(&self) -> ReversedUDAF {
            ReversedUDAF::Identical
        }

        fn order_sensitivity(&self) -> AggregateOrderSensitivity {
            AggregateOrderSensitivity::Insensitive
        }
    };
}

pub mod ballista;
mod connect_decimal;
mod exact;
pub use exact::ExactSum;
pub mod lint;
mod moments;
mod total_order;

use crate::config::{CheckSpec, EngineSpec, JoinChoice, Side, TableSpec};
use crate::error::clean_df_error;
use crate::sources::guard::GuardReads;
use crate::sources::{CATALOG, Catalog};

pub struct Engine {
    /// The local session: catalog, planning, readiness probes and history.
    pub ctx: SessionContext,
    /// With a Ballista engine URL, the session whose plans run on the cluster; the diffs
    /// execute there.
    pub remote: Option<SessionState>,
    pub spec: EngineSpec,
    /// The pool under a memory limit, which remembers the request that did not fit.
    pool: Option<Arc<MeasuredPool>>,
}

/// A memory request the pool refused: who asked, for how much, and the least limit that would
/// have granted it in the same state of the pool (a lower bound for the whole check: later
/// requests may need more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub consumer: String,
    pub requested: usize,
    pub limit: usize,
    pub at_least: usize,
}

/// What DataFusion's fair pool decides by, mirrored: operators that can spill share what the
/// ones that cannot have left, in equal parts.
#[derive(Debug, Default)]
struct PoolCounts {
    spillers: usize,
    spillable: usize,
    unspillable: usize,
}

/// DataFusion's spilling pool (with the largest consumers named in its errors) that also keeps
/// the refused request in numbers, so the one-line error can say how much memory was missing
/// without parsing DataFusion's message.
#[derive(Debug)]
struct MeasuredPool {
    inner: TrackConsumersPool<FairSpillPool>,
    limit: usize,
    counts: std::sync::Mutex<PoolCounts>,
    refused: std::sync::Mutex<Option<Shortfall>>,
}

impl MeasuredPool {
    fn count(&self, consumer: &datafusion::execution::memory_pool::MemoryConsumer, delta: isize) {
        if let Ok(mut counts) = self.counts.lock() {
            let slot = if consumer.can_spill() {
                &mut counts.spillable
            } else {
                &mut counts.unspillable
            };
            *slot = slot.saturating_add_signed(delta);
        }
    }
}

impl std::fmt::Display for MeasuredPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl datafusion::execution::memory_pool::MemoryPool for MeasuredPool {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &datafusion::execution::memory_pool::MemoryConsumer) {
        if consumer.can_spill()
            && let Ok(mut counts) = self.counts.lock()
        {
            counts.spillers += 1;
        }
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &datafusion::execution::memory_pool::MemoryConsumer) {
        if consumer.can_spill()
            && let Ok(mut counts) = self.counts.lock()
        {
            counts.spillers = counts.spillers.saturating_sub(1);
        }
        self.inner.unregister(consumer)
    }

    fn grow(
        &self,
        reservation: &datafusion::execution::memory_pool::MemoryReservation,
        additional: usize,
    ) {
        self.count(reservation.consumer(), additional as isize);
        self.inner.grow(reservation, additional)
    }

    fn shrink(
        &self,
        reservation: &datafusion::execution::memory_pool::MemoryReservation,
        shrink: usize,
    ) {
        self.count(reservation.consumer(), -(shrink as isize));
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(
        &self,
        reservation: &datafusion::execution::memory_pool::MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        match self.inner.try_grow(reservation, additional) {
            Ok(()) => {
                self.count(reservation.consumer(), additional as isize);
                Ok(())
            }
            Err(error) => {
                if let (Ok(counts), Ok(mut refused)) = (self.counts.lock(), self.refused.lock()) {
                    // The pool size at which the fair pool would have said yes.
                    let at_least = if reservation.consumer().can_spill() {
                        counts.spillers.max(1) * (reservation.size() + additional)
                            + counts.unspillable
                    } else {
                        counts.unspillable + counts.spillable + additional
                    };
                    *refused = Some(Shortfall {
                        consumer: reservation.consumer().name().to_string(),
                        requested: additional,
                        limit: self.limit,
                        at_least,
                    });
                }
                Err(error)
            }
        }
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> datafusion::execution::memory_pool::MemoryLimit {
        self.inner.memory_limit()
    }
}

impl Engine {
    pub async fn new(spec: &EngineSpec) -> Result<Engine> {
        let partitions = spec
            .target_partitions
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        // DATAFUSION_* environment variables tune the engine (an escape hatch for operators,
        // e.g. DATAFUSION_EXECUTION_SORT_SPILL_RESERVATION_BYTES); dualrun's own settings win,
        // except the batch size and hash join read-ahead, which defer to theirs.
        let mut config =
            SessionConfig::from_env().map_err(|e| anyhow!("DATAFUSION_* environment: {e}"))?;
        if let Some(rows) = spec.batch_size {
            config = config.with_batch_size(rows);
        } else if !batch_size_given(spec) {
            // 4x DataFusion's default, for the plans that are not diffs; a diff sizes its own
            // batches by the width of its rows (`diff_batch_rows`).
            config = config.with_batch_size(32 * 1024);
        }
        if let Some(limit) = spec.memory_limit
            && std::env::var_os("DATAFUSION_EXECUTION_SORT_SPILL_RESERVATION_BYTES").is_none()
        {
            // Every sort holds this much back, unspillable, for merging its spill files (10 MiB
            // by default): under a small limit a few sorts take the whole pool and the
            // aggregates beside them fail. A sixteenth of the limit each leaves room.
            let options = config.options_mut();
            options.execution.sort_spill_reservation_bytes =
                (limit / 16).min(options.execution.sort_spill_reservation_bytes);
        }
        // Dynamic filters (bounds learnt while a query runs, pushed into the scans) dropped rows
        // they had to keep, in DataFusion 55 (neither traced further):
        // - a hash join's (the build side's keys): reading again the rows of 35 repeated keys
        //   (`side LEFT SEMI JOIN keys`), the batch scan skipped 504 of its 1,774 rows, the
        //   keys' rows among them, and the counts added up to more rows than the stream had;
        // - a TopK's (`ORDER BY x DESC, id LIMIT 10`): over 3 files it lost 4 of the 10 NaN rows
        //   on top, answering with +inf rows instead, every run.
        // The aggregate's (MIN/MAX without GROUP BY) works the same way and goes too. A lost
        // row on one side only is a wrong verdict. Without them, scans read what the query asks.
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.enable_dynamic_filter_pushdown = false;
        optimizer.enable_join_dynamic_filter_pushdown = false;
        optimizer.enable_topk_dynamic_filter_pushdown = false;
        optimizer.enable_aggregate_dynamic_filter_pushdown = false;
        let config = config
            .with_target_partitions(partitions)
            .with_default_catalog_and_schema(CATALOG, Side::Batch.name())
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(false);
        let mut runtime = RuntimeEnvBuilder::new();
        let pool = spec.memory_limit.map(|limit| {
            // The tracking wrapper names the largest consumers when the pool runs dry, so a
            // "resources exhausted" error says which operator held the memory.
            Arc::new(MeasuredPool {
                inner: TrackConsumersPool::new(
                    FairSpillPool::new(limit),
                    std::num::NonZeroUsize::new(5).expect("5 is not zero"),
                ),
                limit,
                counts: std::sync::Mutex::default(),
                refused: std::sync::Mutex::new(None),
            })
        });
        if let Some(pool) = &pool {
            runtime = runtime.with_memory_pool(pool.clone());
        }
        if let Some(dir) = &spec.spill_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow!("spill directory {}: {e}", dir.display()))?;
            runtime = runtime.with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
            );
        }
        let runtime = runtime.build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(GuardReads))
            .build();
        let ctx = SessionContext::new_with_state(state);
        if !spec.builtin_float_aggregates {
            exact::register(&ctx);
            moments::register(&ctx);
        }
        total_order::register(&ctx);
        connect_decimal::register(&ctx);
        let remote = match &spec.url {
            Some(url) => Some(crate::engine::ballista::connect(ctx.state(), url).await?),
            None => None,
        };
        Ok(Engine {
            ctx,
            remote,
            spec: spec.clone(),
            pool,
        })
    }

    /// The last memory request the pool refused since the last call (a check that ran out of
    /// memory under the limit), if any.
    pub fn take_shortfall(&self) -> Option<Shortfall> {
        self.pool
            .as_ref()
            .and_then(|pool| pool.refused.lock().ok()?.take())
    }

    /// The same catalog and settings, running in-process (a check that asks for it).
    pub fn embedded(&self) -> Engine {
        Engine {
            ctx: self.ctx.clone(),
            remote: None,
            pool: self.pool.clone(),
            spec: EngineSpec {
                url: None,
                unpacked_values: false,
                pair_all_by_occurrence: false,
                ..self.spec.clone()
            },
        }
    }

    /// The same catalog in another physical layout, for control run number `run` (1, 2, …):
    /// other parallelism, other batch sizes, files grouped differently. A deterministic query
    /// gives the same answer in every layout. Always in-process (its output is a local file).
    pub fn control_layout(&self, run: u32) -> (Engine, String) {
        let mut state = self.ctx.state();
        let options = state.config().options();
        let cores = options.execution.target_partitions;
        let (partitions, batch_size, repartition_files) = match run % 3 {
            1 => (1, 1000, false),
            2 => (cores * 2 + 1, 4093, true),
            _ => (
                cores + 1,
                777 + run as usize,
                !options.optimizer.repartition_file_scans,
            ),
        };
        *state.config_mut() = state
            .config()
            .clone()
            .with_target_partitions(partitions)
            .with_batch_size(batch_size)
            .with_repartition_file_scans(repartition_files);
        let layout = format!(
            "target_partitions={partitions}, batch_size={batch_size}, file ranges {}",
            if repartition_files { "split" } else { "whole" }
        );
        let engine = Engine {
            ctx: SessionContext::new_with_state(state),
            remote: None,
            pool: self.pool.clone(),
            spec: EngineSpec {
                url: None,
                target_partitions: Some(partitions),
                batch_size: Some(batch_size),
                unpacked_values: false,
                pair_all_by_occurrence: false,
                ..self.spec.clone()
            },
        };
        (engine, layout)
    }

    /// Runs `plan` to a compressed Arrow file in the spill directory and returns a plan that
    /// reads it back (and the file, deleted when dropped): a result pinned down, to be diffed.
    pub async fn materialize(
        &self,
        plan: LogicalPlan,
    ) -> Result<(LogicalPlan, Arc<dyn datafusion::execution::SpillFile>)> {
        let pinned = crate::sources::pinned::pin(
            &self.ctx.state(),
            &plan,
            "dualrun control run",
            crate::sources::pinned::Packed::Lz4,
        )
        .await?;
        let read = self.ctx.read_table(pinned.table)?;
        Ok((read.into_unoptimized_plan(), pinned.file))
    }

    /// A copy of the session state whose unqualified table names resolve on `side`.
    fn state_for(&self, side: Side) -> SessionState {
        let mut state = self.ctx.state();
        state.config_mut().options_mut().catalog.default_schema = side.name().to_string();
        state
    }

    /// Plans the check's SQL on one side. The statement must be one query; DDL, DML and
    /// statements such as SET are refused by DataFusion's own verifier as well.
    pub async fn plan_side(
        &self,
        check: &CheckSpec,
        side: Side,
        params: &BTreeMap<String, String>,
        catalog: &Catalog,
    ) -> Result<LogicalPlan> {
        self.plan_query(&check.sql, &check.sql_origin, side, params, catalog, true)
            .await
    }

    /// Plans any read-only query of dualrun's own (readiness probes, views) under the same
    /// rules; it may read the side's raw tables.
    pub async fn plan_sql(
        &self,
        sql: &str,
        origin: &str,
        side: Side,
        params: &BTreeMap<String, String>,
        catalog: &Catalog,
    ) -> Result<LogicalPlan> {
        self.plan_query(sql, origin, side, params, catalog, false)
            .await
    }

    /// Registers the sides that are views (`batch_view`, `stream_view`): each SELECT is planned
    /// under the rules of a check's SQL, against its own side's tables (raw ones included), and
    /// registered on that side as the logical table. A view that does not plan is recorded like
    /// a table that does not register: only the checks that read it fail.
    pub async fn register_views(
        &self,
        tables: &[TableSpec],
        params: &BTreeMap<String, String>,
        catalog: &mut Catalog,
    ) -> Result<()> {
        let mut pending: Vec<(Side, &str, &str)> = tables
            .iter()
            .flat_map(|t| {
                Side::BOTH.into_iter().filter_map(move |side| {
                    t.side(side)
                        .view
                        .as_deref()
                        .map(|sql| (side, t.name.as_str(), sql))
                })
            })
            .collect();
        // Views may read views: plan what can be planned until nothing more can.
        loop {
            let before = pending.len();
            let mut failed = Vec::new();
            for (side, name, sql) in pending {
                let origin = format!("[tables.{name}] {}_view", side.name());
                match self.plan_sql(sql, &origin, side, params, catalog).await {
                    Ok(plan) => {
                        let view = ViewTable::new(plan, Some(sql.to_string()));
                        self.ctx
                            .catalog(CATALOG)
                            .and_then(|c| c.schema(side.name()))
                            .ok_or_else(|| anyhow!("internal: schema {} missing", side.name()))?
                            .register_table(name.to_string(), Arc::new(view))?;
                    }
                    Err(error) => failed.push(((side, name, sql), error)),
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            if failed.len() == before {
                for ((side, name, _), error) in failed {
                    let message = format!("table '{name}' ({} side, view): {error:#}", side.name());
                    catalog.record_failure(side, name, message);
                }
                return Ok(());
            }
            pending = failed.into_iter().map(|(view, _)| view).collect();
        }
    }

    async fn plan_query(
        &self,
        sql: &str,
        origin: &str,
        side: Side,
        params: &BTreeMap<String, String>,
        catalog: &Catalog,
        checks_only: bool,
    ) -> Result<LogicalPlan> {
        let state = self.state_for(side);
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(|e| anyhow!("query {origin}: {}", clean_df_error(&e.to_string())))?;
        let is_query = matches!(&statement, DfStatement::Statement(s) if matches!(**s, SqlStatement::Query(_)));
        if !is_query {
            bail!(
                "query {origin} is not a SELECT: dualrun runs exactly one read-only query (WITH … SELECT included), never DDL, DML, COPY or SET"
            );
        }
        let references = state
            .resolve_table_references(&statement)
            .map_err(|e| anyhow!("query {origin}: {e}"))?;
        let ctes = cte_names(&statement);
        for reference in &references {
            if let Some(failure) = catalog.failure(side, reference.table()) {
                bail!("{failure}");
            }
            if let (Some(raw), true) = (catalog.raw_side(reference.table()), checks_only) {
                let other = match raw {
                    Side::Batch => Side::Stream,
                    Side::Stream => Side::Batch,
                };
                bail!(
                    "query {origin}: table '{}' exists on the {} side only (a raw table, for that side's views): a check reads logical tables; give its {} side too, or define a logical table over it with {}_view",
                    reference.table(),
                    raw.name(),
                    other.name(),
                    raw.name()
                );
            }
            let unqualified = reference.schema().is_none() && reference.catalog().is_none();
            if unqualified
                && !ctes.contains(&reference.table().to_string())
                && !state.table_functions().contains_key(reference.table())
                && !self
                    .table_names(side)
                    .iter()
                    .any(|t| t == reference.table())
            {
                let elsewhere = match catalog.raw_side(reference.table()) {
                    Some(raw) if raw != side => format!(
                        "; '{}' is a raw table of the {} side, and each side reads only its own tables",
                        reference.table(),
                        raw.name()
                    ),
                    _ => String::new(),
                };
                bail!(
                    "query {origin}: table '{}' is not defined (tables: {}){elsewhere}",
                    reference.table(),
                    self.table_names(side).join(", ")
                );
            }
        }
        let plan = state.statement_to_plan(statement).await.map_err(|e| {
            anyhow!(
                "query {origin} ({} side): {}",
                side.name(),
                clean_df_error(&e.to_string())
            )
        })?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| anyhow!("query {origin}: {e}"))?;
        bind_params(plan, params, origin)
    }

    fn table_names(&self, side: Side) -> Vec<String> {
        let mut names = self
            .ctx
            .catalog(CATALOG)
            .and_then(|c| c.schema(side.name()))
            .map(|s| s.table_names())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The memory a diff plans for (how many buckets it splits into): the memory limit when
    /// one is set, else a quarter of the memory available to the process (its cgroup's limit,
    /// else the machine's), so a diff too large for the machine goes to disk instead of
    /// failing halfway.
    pub fn memory_budget(&self) -> Option<usize> {
        self.spec
            .memory_limit
            .or_else(|| available_memory().map(|bytes| (bytes / 4) as usize))
    }

    /// Session state for running a diff plan, with the join chosen for its size and batches
    /// sized for rows of `row_bytes` (see `diff_batch_rows`).
    pub fn diff_state(&self, input_bytes: u64, row_bytes: usize) -> SessionState {
        let mut state = match &self.remote {
            Some(remote) => remote.clone(),
            None => self.ctx.state(),
        };
        if !batch_size_given(&self.spec) {
            *state.config_mut() = state
                .config()
                .clone()
                .with_batch_size(diff_batch_rows(row_bytes));
        }
        let prefer_hash = match self.spec.join {
            JoinChoice::Hash => true,
            JoinChoice::SortMerge => false,
            // A hash join cannot spill in DataFusion 55: with a memory limit that the inputs do
            // not fit comfortably into, the sort-merge join (which spills) is the safe choice.
            JoinChoice::Auto => match self.spec.memory_limit {
                Some(limit) => input_bytes.saturating_mul(4) < limit as u64,
                None => true,
            },
        };
        let options = state.config_mut().options_mut();
        options.optimizer.prefer_hash_join = prefer_hash;
        if prefer_hash && self.remote.is_none() {
            // One hash table built once from one side, probed by every partition of the other
            // as it is read: no hash repartitioning of both sides first (12% faster on the
            // 5M-row benchmark, and less memory). Full outer joins support this in DataFusion.
            options.optimizer.hash_join_single_partition_threshold = usize::MAX;
            options.optimizer.hash_join_single_partition_threshold_rows = usize::MAX;
            if std::env::var_os("DATAFUSION_EXECUTION_HASH_JOIN_BUFFERING_CAPACITY").is_none() {
                // The probe side starts reading while the table is built (4% faster on the
                // 5M-row benchmark for 50 MiB more peak memory).
                options.execution.hash_join_buffering_capacity = 32 * 1024 * 1024;
            }
        }
        state
    }
}

/// Whether the batch size was set: by the engine spec (tests, control runs) or through
/// DataFusion's environment variable (an operator's).
fn batch_size_given(spec: &EngineSpec) -> bool {
    spec.batch_size.is_some() || std::env::var_os("DATAFUSION_EXECUTION_BATCH_SIZE").is_some()
}

/// Rows per batch for a diff whose rows take about `row_bytes` once decoded: about 4 MiB a
/// batch, between 1,024 and 32,768 rows. A batch is decoded, packed and probed while it is in
/// the core's caches; 32,768 rows of 10 columns (the 5M benchmark) are 4 MB, and cost 6% less
/// CPU than DataFusion's 8,192. The same 32,768 rows of a 301-column table are 77 MB: 200K rows
/// of it took 3.05–3.71 s and 1,255 MiB in such batches, 1.90–2.32 s and 1,048 MiB in batches of
/// 1,024 rows, 1.93–2.02 s in 2,048 and 2.14–2.27 s in 4,096.
pub fn diff_batch_rows(row_bytes: usize) -> usize {
    const BATCH_BYTES: usize = 4 << 20;
    (BATCH_BYTES / row_bytes.max(1)).clamp(1024, 32 * 1024)
}

/// About how many bytes a row of `schema` takes decoded: fixed-width columns their width,
/// others (strings, binaries, nested) 32 bytes.
pub fn decoded_row_bytes(schema: &datafusion::arrow::datatypes::Schema) -> usize {
    schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            datafusion::arrow::datatypes::DataType::Boolean => 1,
            other => other.primitive_width().unwrap_or(32),
        })
        .sum()
}

/// Memory this process may use: the smallest cgroup limit on its way to the root (v2, or the
/// v1 memory controller), else the machine's memory.
pub fn available_memory() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let physical = read("/proc/meminfo").and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    let mut limits: Vec<u64> = physical.into_iter().collect();
    for line in read("/proc/self/cgroup").unwrap_or_default().lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        let files: Vec<String> = if controllers.is_empty() {
            // cgroup v2: the limit of the group and of each of its ancestors applies.
            let mut path = std::path::PathBuf::from(path);
            let mut files = Vec::new();
            loop {
                files.push(format!("/sys/fs/cgroup{}/memory.max", path.display()));
                if !path.pop() {
                    break;
                }
            }
            files
        } else if controllers.split(',').any(|c| c == "memory") {
            vec![
                format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"),
                "/sys/fs/cgroup/memory/memory.limit_in_bytes".to_string(),
            ]
        } else {
            continue;
        };
        for file in files {
            if let Some(limit) = read(&file).and_then(|t| t.trim().parse::<u64>().ok()) {
                // v1 reports "no limit" as a huge number.
                if limit < 1 << 60 {
                    limits.push(limit);
                }
            }
        }
    }
    limits.into_iter().min()
}

/// Names of the tables a plan scans.
pub fn scanned_tables(plan: &LogicalPlan) -> std::collections::BTreeSet<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut names = std::collections::BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            names.insert(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    names
}

/// Replaces `$name` placeholders by the string values of the params; DataFusion coerces them to
/// the column types they are compared with. A placeholder without a value is an error.
fn bind_params(
    plan: LogicalPlan,
    params: &BTreeMap<String, String>,
    origin: &str,
) -> Result<LogicalPlan> {
    let wanted = plan
        .get_parameter_names()
        .map_err(|e| anyhow!("query {origin}: {e}"))?;
    if wanted.is_empty() {
        return Ok(plan);
    }
    let mut values = std::collections::HashMap::new();
    for name in &wanted {
        let bare = name.trim_start_matches('$');
        if bare.chars().all(|c| c.is_ascii_digit()) {
            bail!("query {origin} uses positional parameter {name}; use named ones like $run_date");
        }
        let value = params.get(bare).ok_or_else(|| {
            anyhow!(
                "query {origin} uses ${bare} but no value is given: pass --param {bare}=VALUE or set it under [params]"
            )
        })?;
        values.insert(
            bare.to_string(),
            ScalarValue::Utf8(Some(value.clone())).into(),
        );
    }
    plan.with_param_values(ParamValues::Map(values))
        .map_err(|e| anyhow!("query {origin}: binding parameters: {e}"))
}

/// Names the query's WITH clause defines, which are not tables.
fn cte_names(statement: &DfStatement) -> Vec<String> {
    let DfStatement::Statement(inner) = statement else {
        return Vec::new();
    };
    let SqlStatement::Query(query) = inner.as_ref() else {
        return Vec::new();
    };
    query
        .with
        .as_ref()
        .map(|with| {
            with.cte_tables
                .iter()
                .map(|cte| cte.alias.name.value.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{decoded_row_bytes, diff_batch_rows};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn diff_batches_shrink_as_rows_widen() {
        let integers = |n: usize| {
            Schema::new(
                (0..n)
                    .map(|i| Field::new(format!("c{i}"), DataType::Int64, true))
                    .collect::<Vec<_>>(),
            )
        };
        let narrow = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("comment", DataType::Utf8View, true),
            Field::new("flag", DataType::Boolean, true),
        ]);
        assert_eq!(decoded_row_bytes(&narrow), 8 + 32 + 1);
        assert_eq!(diff_batch_rows(decoded_row_bytes(&narrow)), 32 * 1024);
        // The benchmark's 10 mixed columns keep the batch they were tuned with.
        assert_eq!(diff_batch_rows(decoded_row_bytes(&integers(10))), 32 * 1024);
        let wide = diff_batch_rows(decoded_row_bytes(&integers(301)));
        assert!(
            (1024..=2048).contains(&wide),
            "301 columns: {wide} rows a batch"
        );
        assert_eq!(diff_batch_rows(decoded_row_bytes(&integers(5000))), 1024);
        assert_eq!(diff_batch_rows(0), 32 * 1024);
    }
}
