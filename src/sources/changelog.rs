//! Stream tables in stream shapes: a side whose files are a change log (upserts, Flink row
//! kinds, flattened Debezium events) or at-least-once appends is read as the table the batch
//! side holds: the latest version of each key as of the batch cut-off, deletes removed. The
//! compaction is one DataFusion aggregate by key ([`latest`](super::latest)), run once at the
//! first use and pinned in the spill directory, registered under the table's name; the raw
//! changes stay under `<table>__changes` on that side only. Replayed events (identical rows) count once; two different latest versions of a key tied
//! on the ordering, or a version without an ordering value, are an error naming keys, never a
//! coin toss.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::{Array, AsArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigNonZeroUsize;
use datafusion::common::hash_utils::{RandomState, combine_hashes, create_hashes};
use datafusion::common::{Column, DataFusionError};
use datafusion::datasource::provider_as_source;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, TableType, Volatility, cast,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionContext, lit};
use serde::Serialize;
use tokio::sync::OnceCell;

use super::latest::{self, Latest};
use super::pinned::{Packed, Pinned, pin};
use crate::config::{ChangelogShape, ChangelogSpec, Side};

/// Where the raw change rows of `table` are registered (on their side only).
pub fn raw_name(table: &str) -> String {
    format!("{table}__changes")
}

/// What compacting one side's change log did, for the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChangelogStats {
    pub table: String,
    pub side: &'static str,
    /// Change rows in the files.
    pub change_rows: u64,
    /// Extra copies of a key's latest change (replayed events), which count once.
    pub replayed_rows: u64,
    /// Change rows after the as-of bound, ignored.
    pub ignored_after_as_of: u64,
    /// Keys with a latest version at or before the bound.
    pub keys: u64,
    /// Keys whose latest version is a delete: not in the logical table.
    pub deletes_applied: u64,
    /// Rows of the logical table.
    pub rows: u64,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| quote(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQL pieces of one change log over the raw table's schema.
struct Pieces {
    raw: String,
    /// Rows that are changes at all (Flink's -U before-images are not).
    changes: String,
    /// At or before the as-of bound.
    in_bound: String,
    /// The latest version of a key is a delete.
    is_delete: String,
    /// Columns of the logical table.
    output: Vec<String>,
    /// Every column of the change rows.
    columns: Vec<String>,
    /// Values the marker column must hold, and the column (Flink and Debezium).
    markers: Option<(String, &'static [&'static str])>,
}

fn pieces(table: &str, side: Side, spec: &ChangelogSpec, schema: &Schema) -> Result<Pieces> {
    let what = format!("table '{table}' ({} side) changelog", side.name());
    let has = |c: &str| schema.column_with_name(c).is_some();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut required: Vec<(&str, &String)> = spec.key.iter().map(|k| ("key", k)).collect();
    required.extend(spec.order_by.iter().map(|o| ("order_by", o)));
    required.push(("as_of_column", &spec.as_of_column));
    if let Some(deleted) = &spec.deleted {
        required.push(("deleted", deleted));
    }
    if spec.shape == ChangelogShape::Flink {
        required.push(("op", &spec.op));
    }
    for (role, column) in required {
        if !has(column) {
            bail!(
                "{what}: {role} column '{column}' is not in the change rows (columns: {})",
                names.join(", ")
            );
        }
    }
    for column in &spec.order_by {
        let data_type = schema.field_with_name(column)?.data_type();
        let values = match data_type {
            DataType::Dictionary(_, values) => values.as_ref(),
            other => other,
        };
        if !(values.is_primitive()
            || matches!(
                values,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ))
        {
            bail!("{what}: order_by column '{column}' is {data_type}, which has no order");
        }
    }
    if let Some(deleted) = &spec.deleted {
        let data_type = schema.field_with_name(deleted)?.data_type();
        if data_type != &DataType::Boolean {
            bail!("{what}: deleted column '{deleted}' is {data_type}, not a boolean");
        }
    }
    let as_of_type = schema.field_with_name(&spec.as_of_column)?.data_type();
    let bound_column = if as_of_type.is_integer() {
        // Epoch milliseconds, as Debezium and Kafka write them.
        format!("to_timestamp_millis({})", quote(&spec.as_of_column))
    } else {
        quote(&spec.as_of_column)
    };
    let in_bound = match &spec.as_of {
        Some(bound) => format!("{bound_column} <= ({bound})"),
        None => "TRUE".to_string(),
    };
    let raw = quote(&raw_name(table));
    let (changes, is_delete, output, markers) = match spec.shape {
        ChangelogShape::Dedup => ("TRUE".to_string(), "FALSE".to_string(), names.clone(), None),
        ChangelogShape::Upsert => {
            let is_delete = match &spec.deleted {
                Some(deleted) => format!("{} IS TRUE", quote(deleted)),
                None => {
                    let values: Vec<String> = names
                        .iter()
                        .filter(|n| !spec.key.contains(n) && !spec.order_by.contains(n))
                        .map(|n| format!("{} IS NULL", quote(n)))
                        .collect();
                    if values.is_empty() {
                        "FALSE".to_string()
                    } else {
                        values.join(" AND ")
                    }
                }
            };
            let output = names
                .iter()
                .filter(|n| Some(*n) != spec.deleted.as_ref())
                .cloned()
                .collect();
            ("TRUE".to_string(), is_delete, output, None)
        }
        ChangelogShape::Flink => {
            let op = quote(&spec.op);
            let output = names.iter().filter(|n| **n != spec.op).cloned().collect();
            (
                format!("{op} <> '-U'"),
                format!("{op} = '-D'"),
                output,
                Some((spec.op.clone(), &["+I", "-U", "+U", "-D"][..])),
            )
        }
        ChangelogShape::Debezium => {
            if !has("__op") {
                bail!(
                    "{what}: shape = \"debezium\" reads the flattened form (ExtractNewRecordState with add.fields=op,source.ts_ms) or the envelope: no __op column (columns: {})",
                    names.join(", ")
                );
            }
            let mut is_delete = "\"__op\" = 'd'".to_string();
            if has("__deleted") {
                is_delete.push_str(" OR CAST(\"__deleted\" AS VARCHAR) = 'true'");
            }
            let output = names
                .iter()
                .filter(|n| !n.starts_with("__"))
                .cloned()
                .collect();
            (
                "TRUE".to_string(),
                is_delete,
                output,
                Some(("__op".to_string(), &["c", "u", "d", "r"][..])),
            )
        }
    };
    Ok(Pieces {
        raw,
        changes,
        in_bound,
        is_delete,
        output,
        columns: names,
        markers,
    })
}

/// Each key's latest change at or before the bound, in one hash aggregate ([`Latest`]): the
/// logical table's columns, then the copies of that change, whether another change ties with
/// it and whether it is a delete.
fn compaction_sql(p: &Pieces, spec: &ChangelogSpec) -> String {
    let field = |name: &str| {
        format!(
            "\"__dr_latest\"['{}'] AS {}",
            name.replace('\'', "''"),
            quote(name)
        )
    };
    let fields: Vec<String> = p
        .output
        .iter()
        .map(String::as_str)
        .chain([latest::COPIES, latest::TIE, latest::DELETED])
        .map(field)
        .collect();
    format!(
        "SELECT {fields} FROM (SELECT {keys}, {latest}({ROW_HASH}({columns}), ({is_delete}) IS TRUE, \
           {order_by}, {output}) AS \"__dr_latest\" \
         FROM {raw} WHERE ({changes}) AND ({in_bound}) GROUP BY {keys}) AS l",
        fields = fields.join(", "),
        latest = latest::NAME,
        keys = list(&spec.key),
        columns = list(&p.columns),
        is_delete = p.is_delete,
        order_by = list(&spec.order_by),
        output = list(&p.output),
        raw = p.raw,
        changes = p.changes,
        in_bound = p.in_bound,
    )
}

/// The table that compacts the raw changes of `table` on `side` (registered under
/// [`raw_name`]), to register under the table's name. Planned now, so that a wrong spec fails
/// at registration; run at its first use.
pub async fn view(
    ctx: &SessionContext,
    side: Side,
    table: &str,
    spec: &ChangelogSpec,
) -> Result<Arc<dyn TableProvider>> {
    register_row_hash(ctx);
    let what = format!("table '{table}' ({} side) changelog", side.name());
    let (mut state, p) = raw_pieces(ctx, side, table, spec).await?;
    // DataFusion's default batch, not the diff's 4x: at equal speed, the compaction of 10M
    // changes peaked 50 MiB lower under a 512MiB limit and 170 MiB lower under 256MiB.
    let execution = &mut state.config_mut().options_mut().execution;
    if usize::from(execution.batch_size) > 8192 {
        execution.batch_size = ConfigNonZeroUsize::try_new(8192)?;
    }
    state.register_udaf(Arc::new(AggregateUDF::new_from_impl(Latest::new(
        spec.order_by.len(),
        p.output.clone(),
    ))))?;
    let plan = state
        .create_logical_plan(&compaction_sql(&p, spec))
        .await
        .with_context(|| what.clone())?;
    let fields: Vec<FieldRef> = p
        .output
        .iter()
        .map(|name| {
            Ok(Arc::new(
                plan.schema()
                    .field_with_unqualified_name(name)?
                    .as_ref()
                    .clone(),
            ))
        })
        .collect::<Result<_>>()?;
    Ok(Arc::new(Compacted {
        what,
        state,
        plan,
        schema: Arc::new(Schema::new(fields)),
        pinned: OnceCell::new(),
    }))
}

/// A change log's logical table: its compacted rows, computed once at the first use (a scan or
/// the figures) and pinned in the spill directory, so that the figures and every check read the
/// same rows without compacting again.
pub struct Compacted {
    what: String,
    state: SessionState,
    /// The latest changes, deletes included, with [`latest::COPIES`], [`latest::TIE`] and
    /// [`latest::DELETED`].
    plan: LogicalPlan,
    /// The logical table's.
    schema: SchemaRef,
    pinned: OnceCell<Pinned>,
}

impl std::fmt::Debug for Compacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compacted")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl Compacted {
    async fn pinned(&self) -> Result<&Pinned> {
        self.pinned
            .get_or_try_init(|| async {
                let started = std::time::Instant::now();
                let pinned = pin(
                    &self.state,
                    &self.plan,
                    "dualrun compacted change log",
                    Packed::Plain,
                )
                .await
                .with_context(|| self.what.clone())?;
                tracing::debug!("{}: compacted in {:.2?}", self.what, started.elapsed());
                Ok(pinned)
            })
            .await
    }
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::from_name(name))
}

#[async_trait::async_trait]
impl TableProvider for Compacted {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let pinned = self
            .pinned()
            .await
            .map_err(|error| DataFusionError::External(error.into()))?;
        let indices = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let columns = indices.iter().map(|&i| column(self.schema.field(i).name()));
        let plan =
            LogicalPlanBuilder::scan("compacted", provider_as_source(pinned.table.clone()), None)?
                .filter(column(latest::DELETED).is_not_true())?
                .project(columns)?
                .build()?;
        state.create_physical_plan(&plan).await
    }
}

/// The side's session and the SQL pieces over the raw changes of `table`.
async fn raw_pieces(
    ctx: &SessionContext,
    side: Side,
    table: &str,
    spec: &ChangelogSpec,
) -> Result<(datafusion::execution::session_state::SessionState, Pieces)> {
    let state = side_state(ctx, side);
    let raw = state
        .schema_for_ref(raw_name(table).as_str())?
        .table(&raw_name(table))
        .await?
        .with_context(|| format!("internal: {} not registered", raw_name(table)))?;
    let schema = raw.schema();
    if spec.shape != ChangelogShape::Debezium || schema.column_with_name("__op").is_some() {
        let p = pieces(table, side, spec, &schema)?;
        return Ok((state, p));
    }
    // Debezium's own envelope: the change rows are what its flattened form would be.
    let flat = envelope(table, side, &schema)?;
    let plan = state.create_logical_plan(&flat).await.with_context(|| {
        format!(
            "table '{table}' ({} side) changelog: the Debezium envelope",
            side.name()
        )
    })?;
    let flat_schema: Schema = plan.schema().as_arrow().clone();
    let mut p = pieces(table, side, spec, &flat_schema)?;
    p.raw = format!("({flat}) AS envelope");
    Ok((state, p))
}

/// Debezium's change event as Kafka Connect's JSON converter writes it, with or without the
/// `schema`/`payload` wrapper: `before` and `after` (the row's state, structs), `op` (c, u, d,
/// r), `ts_ms` and `source.ts_ms`. Read as its flattened form (what `ExtractNewRecordState`
/// would write): the row's columns from `after` (from `before` for a delete, whose `after` is
/// null), `__op`, and `__source_ts_ms` (the database's commit time, else the event's `ts_ms`).
fn envelope(table: &str, side: Side, schema: &Schema) -> Result<String> {
    let what = format!("table '{table}' ({} side) changelog", side.name());
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let (prefix, fields) = match schema.field_with_name("payload").map(|f| f.data_type()) {
        Ok(DataType::Struct(fields)) => ("\"payload\"".to_string(), fields.clone()),
        _ => (String::new(), schema.fields().clone()),
    };
    let path = |name: &str| {
        if prefix.is_empty() {
            quote(name)
        } else {
            format!("{prefix}['{name}']")
        }
    };
    let field = |name: &str| fields.iter().find(|f| f.name() == name);
    let row_fields = match (field("after"), field("before")) {
        (Some(f), _) | (None, Some(f)) => match f.data_type() {
            DataType::Struct(row) => row.clone(),
            other => bail!("{what}: Debezium's '{}' is {other}, not a row", f.name()),
        },
        (None, None) => bail!(
            "{what}: shape = \"debezium\" needs its flattened form (__op, __source_ts_ms) or its envelope (before, after, op, ts_ms), optionally inside payload; the change rows have {}",
            names.join(", ")
        ),
    };
    if field("op").is_none() {
        bail!("{what}: the Debezium envelope has no op field");
    }
    // The row is `after`, or `before` when there is no `after` (a delete): whole rows, never
    // column by column, or an update that sets a column to NULL would read the old value.
    let value = |column: &str| {
        let column = column.replace('\'', "''");
        match (field("after"), field("before")) {
            (Some(_), Some(_)) => format!(
                "CASE WHEN {after} IS NOT NULL THEN {after}['{column}'] ELSE {before}['{column}'] END",
                after = path("after"),
                before = path("before")
            ),
            (Some(_), None) => format!("{}['{column}']", path("after")),
            _ => format!("{}['{column}']", path("before")),
        }
    };
    let mut columns: Vec<String> = row_fields
        .iter()
        .map(|f| format!("{} AS {}", value(f.name()), quote(f.name())))
        .collect();
    columns.push(format!("{} AS \"__op\"", path("op")));
    let source_ts = match field("source").map(|f| f.data_type()) {
        Some(DataType::Struct(source)) if source.iter().any(|f| f.name() == "ts_ms") => {
            Some(format!("{}['ts_ms']", path("source")))
        }
        _ => None,
    };
    let ts = match (source_ts, field("ts_ms")) {
        (Some(source), Some(_)) => format!("coalesce({source}, {})", path("ts_ms")),
        (Some(source), None) => source,
        (None, Some(_)) => path("ts_ms"),
        (None, None) => bail!("{what}: the Debezium envelope has neither source.ts_ms nor ts_ms"),
    };
    columns.push(format!("{ts} AS \"__source_ts_ms\""));
    Ok(format!(
        "SELECT {} FROM {}",
        columns.join(", "),
        quote(&raw_name(table))
    ))
}

fn side_state(
    ctx: &SessionContext,
    side: Side,
) -> datafusion::execution::session_state::SessionState {
    let mut state = ctx.state();
    state.config_mut().options_mut().catalog.default_schema = side.name().to_string();
    state
}

/// One of the change log's own queries on its side.
async fn query(ctx: &SessionContext, side: Side, sql: &str) -> Result<DataFrame> {
    let state = side_state(ctx, side);
    let plan = state.create_logical_plan(sql).await?;
    Ok(DataFrame::new(state, plan))
}

/// The first row of a query's answer, as counts.
async fn numbers(query: DataFrame) -> Result<Vec<u64>> {
    let batches = query.collect().await?;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .context("internal: changelog statistics returned no row")?;
    (0..batch.num_columns())
        .map(|i| {
            let column = datafusion::arrow::compute::cast(batch.column(i), &DataType::Int64)?;
            let column = column.as_primitive::<Int64Type>();
            Ok(if column.is_null(0) {
                0
            } else {
                column.value(0) as u64
            })
        })
        .collect()
}

/// A query's rows, for a message.
async fn sample_keys(query: DataFrame) -> Result<String> {
    let batches = query.collect().await?;
    let mut rows = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|c| datafusion::arrow::util::display::array_value_to_string(c, row))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            rows.push(values.join(", "));
        }
    }
    Ok(rows.join("; "))
}

/// The change log's figures that need no grouping, in one row and one pass over the changes:
/// change rows, rows after the bound, rows with unknown markers, rows without an ordering value.
fn change_figures(p: &Pieces, unordered: &str) -> String {
    format!(
        "SELECT count(*), count(*) FILTER (WHERE ({changes}) AND ({in_bound}) IS NOT TRUE), \
           count(*) FILTER (WHERE ({unknown}) IS TRUE), count(*) FILTER (WHERE ({unordered}) IS TRUE) \
         FROM {raw}",
        changes = p.changes,
        in_bound = p.in_bound,
        unknown = unknown_markers(p),
        raw = p.raw,
    )
}

/// The condition of a change row whose marker column (Flink's op, Debezium's `__op`) holds a
/// value the shape does not know; FALSE for shapes without markers.
fn unknown_markers(p: &Pieces) -> String {
    match &p.markers {
        Some((column, allowed)) => {
            let values: Vec<String> = allowed.iter().map(|v| format!("'{v}'")).collect();
            format!(
                "{col} IS NULL OR {col} NOT IN ({})",
                values.join(", "),
                col = quote(column)
            )
        }
        None => "FALSE".to_string(),
    }
}

/// The name under which [`RowHash`] is registered.
const ROW_HASH: &str = "dualrun_row_hash";

/// A 64-bit hash of a whole change row (every column, NULLs told apart from values), with a
/// fixed seed: replayed events hash alike, so the statistics count them and a tie between two
/// different latest versions shows without comparing whole rows.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RowHash {
    signature: Signature,
}

impl ScalarUDFImpl for RowHash {
    fn name(&self) -> &str {
        ROW_HASH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        const SEED: RandomState = RandomState::with_seed(0x6368_616e_6765_6c6f);
        const NULL: u64 = 0x9e37_79b9_7f4a_7c15;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut row = vec![0u64; args.number_rows];
        let mut column = vec![0u64; args.number_rows];
        for array in &arrays {
            column.iter_mut().for_each(|h| *h = 0);
            create_hashes([array], &SEED, &mut column)?;
            match array.logical_nulls() {
                None => row
                    .iter_mut()
                    .zip(&column)
                    .for_each(|(row, value)| *row = combine_hashes(*row, *value)),
                Some(nulls) => {
                    for (i, (row, value)) in row.iter_mut().zip(&column).enumerate() {
                        let value = if nulls.is_null(i) { NULL } else { *value };
                        *row = combine_hashes(*row, value);
                    }
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(UInt64Array::from(row))))
    }
}

/// Makes [`RowHash`] known to the session (once is enough; again is harmless).
fn register_row_hash(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(RowHash {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
}

/// Reads what the compaction of `table` on `side` does, and refuses a change log whose latest
/// versions cannot be told apart (ties, missing ordering values) or whose markers are unknown.
pub async fn stats(
    ctx: &SessionContext,
    side: Side,
    table: &str,
    spec: &ChangelogSpec,
) -> Result<ChangelogStats> {
    let what = format!("table '{table}' ({} side) changelog", side.name());
    let (_, p) = raw_pieces(ctx, side, table, spec).await?;
    let null_order: Vec<String> = spec
        .order_by
        .iter()
        .map(|o| format!("{} IS NULL", quote(o)))
        .collect();
    let unordered = format!("({}) AND ({})", p.changes, null_order.join(" OR "));
    // One plain pass over the changes refuses what cannot be compacted; the compaction (which
    // spills, and is pinned for the checks to read) gives the rest.
    let n = numbers(query(ctx, side, &change_figures(&p, &unordered)).await?)
        .await
        .with_context(|| what.clone())?;
    let [change_rows, after, unknown, unordered_rows] = n[..] else {
        bail!("internal: {what}: {} figures", n.len());
    };
    if let (true, Some((column, allowed))) = (unknown > 0, &p.markers) {
        let sample = format!(
            "SELECT DISTINCT {col} FROM {raw} WHERE {unknown} LIMIT 5",
            raw = p.raw,
            col = quote(column),
            unknown = unknown_markers(&p),
        );
        bail!(
            "{what}: column '{column}' holds values other than {} (e.g. {})",
            allowed.join(", "),
            sample_keys(query(ctx, side, &sample).await?).await?
        );
    }
    if unordered_rows > 0 {
        let sample = format!(
            "SELECT DISTINCT {keys} FROM {raw} WHERE {unordered} ORDER BY {keys} LIMIT 5",
            keys = list(&spec.key),
            raw = p.raw,
        );
        bail!(
            "{what}: change rows without a value in order_by ({}) cannot be ordered, e.g. keys {}",
            spec.order_by.join(", "),
            sample_keys(query(ctx, side, &sample).await?).await?
        );
    }
    let provider = ctx
        .catalog(super::CATALOG)
        .and_then(|catalog| catalog.schema(side.name()))
        .with_context(|| format!("internal: {what}: no {} schema", side.name()))?
        .table(table)
        .await?
        .with_context(|| format!("internal: {what}: not registered"))?;
    let compacted = (provider.as_ref() as &dyn std::any::Any)
        .downcast_ref::<Compacted>()
        .with_context(|| format!("internal: {what}: not a compacted change log"))?;
    let latest = SessionContext::new_with_state(compacted.state.clone())
        .read_table(compacted.pinned().await?.table.clone())?;
    let counted = |name: &str| sum(cast(column(name), DataType::UInt64));
    let n = numbers(latest.clone().aggregate(
        vec![],
        vec![
            count(lit(1)),
            sum(column(latest::COPIES)),
            counted(latest::DELETED),
            counted(latest::TIE),
        ],
    )?)
    .await
    .with_context(|| what.clone())?;
    let [keys, copies, deletes, tied] = n[..] else {
        bail!("internal: {what}: {} figures", n.len());
    };
    if tied > 0 {
        let keys: Vec<Expr> = spec.key.iter().map(|k| column(k)).collect();
        let sample = latest
            .filter(column(latest::TIE))?
            .select(keys.clone())?
            .sort(keys.into_iter().map(|k| k.sort(true, true)).collect())?
            .limit(0, Some(5))?;
        bail!(
            "{what}: {tied} {} with two different latest changes tied on order_by ({}): {}; add a column that breaks the tie (e.g. the log offset) to order_by",
            crate::words::plural(tied, "key", "keys"),
            spec.order_by.join(", "),
            sample_keys(sample).await?
        );
    }
    let replayed = copies - keys;
    Ok(ChangelogStats {
        table: table.to_string(),
        side: side.name(),
        change_rows,
        replayed_rows: replayed,
        ignored_after_as_of: after,
        keys,
        deletes_applied: deletes,
        rows: keys - deletes,
    })
}

/// How many of `keys` (values of the change log's key columns, as SQL literals in its key
/// order) have at least one delete in the raw changes of `table`, at any time.
pub async fn keys_with_deletes(
    ctx: &SessionContext,
    side: Side,
    table: &str,
    spec: &ChangelogSpec,
    keys: &[Vec<String>],
) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let (_, p) = raw_pieces(ctx, side, table, spec).await?;
    let wanted: Vec<String> = keys
        .iter()
        .map(|values| {
            let terms: Vec<String> = spec
                .key
                .iter()
                .zip(values)
                .map(|(column, value)| format!("{} = {value}", quote(column)))
                .collect();
            format!("({})", terms.join(" AND "))
        })
        .collect();
    let sql = format!(
        "SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {raw} WHERE ({changes}) AND ({is_delete}) IS TRUE AND ({wanted})) AS d",
        keys = list(&spec.key),
        raw = p.raw,
        changes = p.changes,
        is_delete = p.is_delete,
        wanted = wanted.join(" OR "),
    );
    Ok(numbers(query(ctx, side, &sql).await?)
        .await?
        .first()
        .copied()
        .unwrap_or(0))
}
