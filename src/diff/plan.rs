//! The diff as one DataFusion logical plan over the two query plans, so the join, the
//! aggregation and any spilling happen inside DataFusion (and the same plan can later run on a
//! distributed engine). The comparison rules live here as expressions:
//! - floats are canonicalised first (every NaN is one NaN, −0.0 is 0.0), so hashing, grouping,
//!   ordering and equality all agree with the promised semantics;
//! - keyed: FULL OUTER JOIN on the keys with NULL = NULL, plus an occurrence index when a key
//!   repeats, so duplicates pair positionally in value order;
//! - keyless: each side grouped to (row, count), then joined on every column.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use datafusion::arrow::array::UInt64Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, JoinType, NullEquality};
use datafusion::functions::expr_fn::{abs, coalesce, greatest, isnan, least};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, Operator,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, cast, lit, when,
};

use super::align::{AlignedColumn, Alignment, is_float};
use super::columns::*;
use super::pack::Packing;
use crate::config::Tolerance;

fn qualified(side: &str, name: &str) -> Expr {
    Expr::Column(Column::new(Some(side), name))
}

/// One side ready for the diff: each compared column cast to the common type under its own
/// name (floats canonical: every NaN one NaN, −0.0 as 0.0, so hashing, grouping, ordering and
/// equality agree with the promised semantics), the user's other columns dropped, and the
/// values `packing` names packed into one column (`PACKED`; the encoding canonicalises floats
/// itself). Partitioned diffs hash and spill this form, so equal keys of both sides land in
/// the same bucket.
///
/// `side` names the side in the errors of text that does not read as the other side's type;
/// `None` where the plans run elsewhere (Ballista), which know DataFusion's own cast only.
pub fn prepared(
    plan: LogicalPlan,
    alignment: &Alignment,
    packing: Option<&Packing>,
    side: Option<&str>,
) -> Result<LogicalPlan> {
    let schema = plan.schema().clone();
    let column = |column: &AlignedColumn, canonical: bool| -> Result<Expr> {
        let (qualifier, field) = schema
            .iter()
            .find(|(_, f)| f.name() == &column.name)
            .ok_or_else(|| anyhow::anyhow!("internal: column {} vanished", column.name))?;
        let mut expr = Expr::Column(Column::from((qualifier, field)));
        if column.number_text {
            return Ok(super::number_text::call(expr));
        }
        if field.data_type() == &super::uuid_text::UUID_BYTES && column.common == DataType::Utf8 {
            return Ok(super::uuid_text::call(expr));
        }
        if field.data_type() != &column.common {
            expr = match side {
                Some(side) if super::read_as::parses(field.data_type(), &column.common) => {
                    super::read_as::call(expr, &column.common, &column.name, side)
                }
                _ => cast(expr, column.common.clone()),
            };
        }
        if canonical && is_float(&column.common) {
            expr = canonical_float(expr, &column.common);
        }
        Ok(expr)
    };
    let mut exprs = Vec::new();
    for key in &alignment.keys {
        exprs.push(column(key, true)?.alias(&key.name));
    }
    for (i, value) in alignment.values.iter().enumerate() {
        if !packing.is_some_and(|p| p.packs(i)) {
            exprs.push(column(value, true)?.alias(&value.name));
        }
    }
    if let Some(packing) = packing {
        let args = packing
            .columns
            .iter()
            .map(|&i| column(&alignment.values[i], false))
            .collect::<Result<_>>()?;
        exprs.push(packing.call(args).alias(PACKED));
    }
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
}

/// The columns of a prepared side that hold its compared values: the packed column (if any),
/// then the values left unpacked.
fn value_columns(alignment: &Alignment, packing: Option<&Packing>) -> Vec<String> {
    let mut names: Vec<String> = packing.map(|_| PACKED.to_string()).into_iter().collect();
    names.extend(
        alignment
            .values
            .iter()
            .enumerate()
            .filter(|(i, _)| !packing.is_some_and(|p| p.packs(*i)))
            .map(|(_, v)| v.name.clone()),
    );
    names
}

/// NaN of any sign or payload becomes the one positive NaN, −0.0 becomes 0.0, NULL stays NULL.
fn canonical_float(expr: Expr, data_type: &DataType) -> Expr {
    let (nan, zero) = match data_type {
        DataType::Float32 => (lit(f32::NAN), lit(0.0f32)),
        DataType::Float16 => (
            cast(lit(f32::NAN), DataType::Float16),
            cast(lit(0.0f32), DataType::Float16),
        ),
        _ => (lit(f64::NAN), lit(0.0f64)),
    };
    when(isnan(expr.clone()), nan)
        .when(expr.clone().eq(zero.clone()), zero)
        .otherwise(expr)
        .expect("CASE with WHEN branches always builds")
}

/// Whether a compared pair of values differs, as a non-NULL boolean. Only meaningful where both
/// sides have the row. Equality is exact unless the column has a tolerance.
fn differs(column: &AlignedColumn) -> Expr {
    let b = qualified("b", &column.name);
    let s = qualified("s", &column.name);
    let exact = Expr::BinaryExpr(BinaryExpr::new(
        Box::new(b.clone()),
        Operator::IsDistinctFrom,
        Box::new(s.clone()),
    ));
    let Some(tolerance) = &column.tolerance else {
        return exact;
    };
    let within = match tolerance {
        Tolerance::Numeric { abs: a, rel } => {
            let difference = exact_difference(b.clone(), s.clone(), &column.common);
            let bf = cast(b, DataType::Float64);
            let sf = cast(s, DataType::Float64);
            // Infinities and NaN never fall "within" a tolerance (inf − inf is NaN, 0 · inf is
            // NaN); equal ones were already equal above.
            let finite = |e: Expr| abs(e).lt(lit(f64::INFINITY));
            let bound = lit(*a) + lit(*rel) * greatest(vec![abs(bf.clone()), abs(sf.clone())]);
            finite(bf).and(finite(sf)).and(abs(difference).lt_eq(bound))
        }
        Tolerance::Temporal { abs: duration } => {
            let units = duration_in_units(*duration, &column.common);
            let as_number = |e: Expr| cast(e, DataType::Int64);
            let difference = exact_difference(as_number(b), as_number(s), &DataType::Int64);
            abs(difference).lt_eq(lit(units))
        }
    };
    exact.and(!coalesce(vec![within, lit(false)]))
}

/// `b − s` as a Float64, subtracted before rounding: integers and decimals in a decimal type
/// wide enough that the difference is exact, floats as they are (two floats within a factor of
/// two of each other subtract exactly). Rounding each side to a float first loses the
/// difference between large integers (2^62 and 2^62 + 100 are one float, so a tolerance of 0.5
/// accepted them) and between nanosecond timestamps (256 ns apart, one float).
fn exact_difference(b: Expr, s: Expr, data_type: &DataType) -> Expr {
    let wide = match data_type {
        t if t.is_integer() => Some(DataType::Decimal128(20, 0)),
        DataType::Decimal32(_, scale)
        | DataType::Decimal64(_, scale)
        | DataType::Decimal128(_, scale) => Some(DataType::Decimal256(76, *scale)),
        _ => None,
    };
    match wide {
        Some(wide) => cast(cast(b, wide.clone()) - cast(s, wide), DataType::Float64),
        None => cast(b, DataType::Float64) - cast(s, DataType::Float64),
    }
}

/// A duration expressed in the storage unit of a temporal type, for comparing raw values.
fn duration_in_units(duration: std::time::Duration, data_type: &DataType) -> f64 {
    use datafusion::arrow::datatypes::TimeUnit;
    let nanos = duration.as_nanos() as f64;
    let per_unit = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 1e9,
        TimeUnit::Millisecond => 1e6,
        TimeUnit::Microsecond => 1e3,
        TimeUnit::Nanosecond => 1.0,
    };
    match data_type {
        DataType::Timestamp(unit, _)
        | DataType::Duration(unit)
        | DataType::Time32(unit)
        | DataType::Time64(unit) => nanos / per_unit(unit),
        DataType::Date32 => nanos / 86_400e9,
        DataType::Date64 => nanos / 1e6,
        _ => nanos,
    }
}

/// What a keyed diff plan carries besides the keys and values.
#[derive(Default, Clone, Copy)]
pub struct KeyedShape<'a> {
    /// Number each key's rows on each side in value order, and pair by (key, number): the
    /// duplicate-safe plan.
    pub with_occurrence: bool,
    /// The time and window columns, coalesced from both sides for the findings.
    pub dimensions: [Option<&'a str>; 2],
    /// Drop equal pairs inside DataFusion (the caller knows each side's row count).
    pub only_divergent: bool,
    pub packing: Option<&'a Packing>,
    /// Number every row of each side, so the consumer can tell a row paired twice.
    pub row_ids: Option<&'a RowIds>,
}

/// The keyed diff: one row per paired or unpaired row, with presence flags, per-column
/// "differs" flags, the coalesced keys and both sides' values.
pub fn keyed(
    batch: LogicalPlan,
    stream: LogicalPlan,
    alignment: &Alignment,
    shape: KeyedShape,
) -> Result<LogicalPlan> {
    let KeyedShape {
        with_occurrence,
        dimensions,
        only_divergent,
        packing,
        row_ids,
    } = shape;
    let packed = |i: usize| packing.is_some_and(|p| p.packs(i));
    let side = |plan: LogicalPlan, alias: &str| -> Result<LogicalPlan> {
        let mut exprs: Vec<Expr> = plan
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        // The presence flag tells joined rows from the NULL padding of an outer join.
        exprs.push(lit(true).alias(PRESENT));
        if let Some(ids) = row_ids {
            exprs.push(ids.call(alias == "b").alias(ROW_ID));
        }
        let mut builder = LogicalPlanBuilder::from(plan).project(exprs)?;
        if with_occurrence {
            let partition: Vec<Expr> = alignment
                .keys
                .iter()
                .map(|k| Expr::Column(Column::from_name(&k.name)))
                .collect();
            // Value order, packed values decoded once for it. Without value columns the rows of
            // a key are all alike, and any order pairs them; DataFusion wants one, so the key's.
            let ordered = if alignment.values.is_empty() {
                &alignment.keys
            } else {
                &alignment.values
            };
            let order: Vec<_> = match packing {
                Some(p) if !alignment.values.is_empty() => vec![
                    p.value_order(&alignment.values, Expr::Column(Column::from_name(PACKED)))
                        .sort(true, false),
                ],
                _ => ordered
                    .iter()
                    .map(|v| Expr::Column(Column::from_name(&v.name)).sort(true, false))
                    .collect(),
            };
            let occurrence = row_number()
                .partition_by(partition)
                .order_by(order)
                .build()?
                .alias(OCCURRENCE);
            builder = builder.window(vec![occurrence])?;
        }
        Ok(builder.alias(alias)?.build()?)
    };
    let b = side(batch, "b")?;
    let s = side(stream, "s")?;
    let mut join_names: Vec<&str> = alignment.keys.iter().map(|k| k.name.as_str()).collect();
    if with_occurrence {
        join_names.push(OCCURRENCE);
    }
    let left: Vec<Column> = join_names
        .iter()
        .map(|n| Column::new(Some("b"), *n))
        .collect();
    let right: Vec<Column> = join_names
        .iter()
        .map(|n| Column::new(Some("s"), *n))
        .collect();
    let joined = LogicalPlanBuilder::from(b).join_detailed(
        s,
        JoinType::Full,
        (left, right),
        None,
        NullEquality::NullEqualsNull,
    )?;

    // Paired, equal rows are most of a healthy diff: when the caller knows each side's row
    // count already, they are dropped inside DataFusion instead of being shipped out and counted.
    let joined = if only_divergent {
        let paired = qualified("b", PRESENT)
            .is_not_null()
            .and(qualified("s", PRESENT).is_not_null());
        let any_differs = alignment
            .values
            .iter()
            .enumerate()
            .filter(|(i, _)| !packed(*i))
            .map(|(_, v)| differs(v))
            .chain(packing.map(|_| packed_differs()))
            .reduce(Expr::or)
            .unwrap_or(lit(false));
        joined.filter((!paired).or(any_differs))?
    } else {
        joined
    };
    let mut out = vec![
        qualified("b", PRESENT).is_not_null().alias(BATCH_PRESENT),
        qualified("s", PRESENT).is_not_null().alias(STREAM_PRESENT),
    ];
    if with_occurrence {
        out.push(qualified("b", OCCURRENCE).alias(BATCH_OCCURRENCE));
        out.push(qualified("s", OCCURRENCE).alias(STREAM_OCCURRENCE));
    }
    if row_ids.is_some() {
        out.push(qualified("b", ROW_ID).alias(BATCH_ROW_ID));
        out.push(qualified("s", ROW_ID).alias(STREAM_ROW_ID));
    }
    for key in &alignment.keys {
        out.push(
            coalesce(vec![qualified("b", &key.name), qualified("s", &key.name)]).alias(&key.name),
        );
    }
    for (column, alias) in dimensions.iter().zip([TIME, WINDOW]) {
        if let Some(column) = column {
            out.push(coalesce(vec![qualified("b", column), qualified("s", column)]).alias(alias));
        }
    }
    if packing.is_some() {
        // NULL on the side without the row; only divergent rows are unpacked, and that is
        // where a NULL becomes a row of NULLs.
        out.push(qualified("b", PACKED).alias(BATCH_PACKED));
        out.push(qualified("s", PACKED).alias(STREAM_PACKED));
        out.push(packed_differs().alias(PACKED_DIFFERS));
    }
    for (i, value) in alignment.values.iter().enumerate() {
        if packed(i) {
            continue;
        }
        out.push(differs(value).alias(differs_name(i)));
        out.push(qualified("b", &value.name).alias(batch_value_name(i)));
        out.push(qualified("s", &value.name).alias(stream_value_name(i)));
    }
    Ok(joined.project(out)?.build()?)
}

/// Dense row numbers for the two sides of one plan: each batch of a side takes the next block
/// of numbers, so a side's rows are numbered 0..n whatever its partitioning. The keyed consumer
/// marks each number it sees in a bitmap: a row that comes out of the join twice has a key that
/// repeats on the other side, and the numbers seen are the side's rows. (Not the numbers handed
/// out: DataFusion may number rows below a filter that then drops them.)
/// (A volatile function of DataFusion's, evaluated once per row like `random()`; in-process
/// only, as Ballista executors do not know it.)
#[derive(Debug, Default)]
pub struct RowIds {
    batch: Arc<AtomicU64>,
    stream: Arc<AtomicU64>,
}

impl RowIds {
    fn call(&self, batch: bool) -> Expr {
        let next = if batch { &self.batch } else { &self.stream };
        ScalarUDF::from(RowIdUdf {
            signature: Signature::nullary(Volatility::Volatile),
            next: next.clone(),
        })
        .call(vec![])
    }
}

#[derive(Debug)]
struct RowIdUdf {
    signature: Signature,
    next: Arc<AtomicU64>,
}

impl PartialEq for RowIdUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.next, &other.next)
    }
}

impl Eq for RowIdUdf {}

impl std::hash::Hash for RowIdUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.next).hash(state);
    }
}

impl ScalarUDFImpl for RowIdUdf {
    fn name(&self) -> &str {
        "dualrun_row_id"
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
        let rows = args.number_rows as u64;
        let first = self.next.fetch_add(rows, Ordering::Relaxed);
        Ok(ColumnarValue::Array(Arc::new(
            UInt64Array::from_iter_values(first..first + rows),
        )))
    }
}

fn packed_differs() -> Expr {
    Packing::differs(qualified("b", PACKED), qualified("s", PACKED))
}

/// The rows of a prepared side whose key is one of `keys` (a table of the key columns), NULL
/// keys equal as in the diff's join: the rows of the repeated keys, read again.
pub fn only_keys(
    side: LogicalPlan,
    keys: datafusion::arrow::array::RecordBatch,
    alignment: &Alignment,
) -> Result<LogicalPlan> {
    const KEYS: &str = "dualrun_repeated_keys";
    let table = datafusion::datasource::MemTable::try_new(keys.schema(), vec![vec![keys]])?;
    let source = datafusion::datasource::provider_as_source(Arc::new(table));
    let keys = LogicalPlanBuilder::scan(KEYS, source, None)?.build()?;
    let (left, right): (Vec<Column>, Vec<Column>) = alignment
        .keys
        .iter()
        .map(|k| (Column::from_name(&k.name), Column::new(Some(KEYS), &k.name)))
        .unzip();
    Ok(LogicalPlanBuilder::from(side)
        .join_detailed(
            keys,
            JoinType::LeftSemi,
            (left, right),
            None,
            NullEquality::NullEqualsNull,
        )?
        .build()?)
}

/// One (prepared) side's row count and the number of key values that occur more than once.
pub fn duplicate_keys(plan: LogicalPlan, alignment: &Alignment) -> Result<LogicalPlan> {
    let group: Vec<Expr> = alignment
        .keys
        .iter()
        .map(|k| Expr::Column(Column::from_name(&k.name)))
        .collect();
    let n = || Expr::Column(Column::from_name(COUNT));
    // One pass gives both the side's row count and its duplicated key values.
    Ok(LogicalPlanBuilder::from(plan)
        .aggregate(group, vec![count(lit(1)).alias(COUNT)])?
        .aggregate(
            Vec::<Expr>::new(),
            vec![
                sum(n()).alias("rows"),
                sum(when(n().gt(lit(1i64)), lit(1i64)).otherwise(lit(0i64))?).alias("duplicated"),
            ],
        )?
        .build()?)
}

/// The keyless diff over two prepared sides: each distinct row with its count on each side.
pub fn keyless(
    batch: LogicalPlan,
    stream: LogicalPlan,
    alignment: &Alignment,
    packing: Option<&Packing>,
) -> Result<LogicalPlan> {
    let columns = value_columns(alignment, packing);
    let group: Vec<Expr> = columns
        .iter()
        .map(|c| Expr::Column(Column::from_name(c)))
        .collect();
    let side = |plan: LogicalPlan, alias: &str| -> Result<LogicalPlan> {
        Ok(LogicalPlanBuilder::from(plan)
            .aggregate(group.clone(), vec![count(lit(1)).alias(COUNT)])?
            .alias(alias)?
            .build()?)
    };
    let b = side(batch, "b")?;
    let s = side(stream, "s")?;
    let left: Vec<Column> = columns.iter().map(|c| Column::new(Some("b"), c)).collect();
    let right: Vec<Column> = columns.iter().map(|c| Column::new(Some("s"), c)).collect();
    let joined = LogicalPlanBuilder::from(b).join_detailed(
        s,
        JoinType::Full,
        (left, right),
        None,
        NullEquality::NullEqualsNull,
    )?;
    let bn = coalesce(vec![qualified("b", COUNT), lit(0i64)]);
    let sn = coalesce(vec![qualified("s", COUNT), lit(0i64)]);
    let mut out = vec![
        bn.clone().alias(BATCH_COUNT),
        sn.clone().alias(STREAM_COUNT),
        least(vec![bn.clone(), sn.clone()]).alias(MATCHED_COUNT),
        greatest(vec![bn.clone() - sn.clone(), lit(0i64)]).alias(MISSING_COUNT),
        greatest(vec![sn - bn, lit(0i64)]).alias(EXTRA_COUNT),
    ];
    for column in &columns {
        out.push(coalesce(vec![qualified("b", column), qualified("s", column)]).alias(column));
    }
    Ok(joined.project(out)?.build()?)
}

/// The columns a keyless diff of prepared sides is split into buckets by: all of them.
pub fn keyless_columns(alignment: &Alignment, packing: Option<&Packing>) -> Vec<String> {
    value_columns(alignment, packing)
}
