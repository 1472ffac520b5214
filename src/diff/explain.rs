//! Explains divergences: statistics gathered while the diff output streams past (no second
//! scan), turned into findings that name a cause: late data, at-least-once duplicates, a
//! timezone or unit shift, float precision or rounding, text normalisation, NULL vs a default,
//! schema drift. A finding is only reported when its pattern explains every divergence it
//! speaks about, so unrelated divergences never produce false findings.
//!
//! Only divergent rows feed the per-column statistics, so their cost follows the number of
//! divergences, not the size of the tables. The late-data window needs the time column of every
//! batch row: that is the one per-row pass, and only when a `time_column` is configured.

use crate::engine::ExactSum;
use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::{cast, filter};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use serde_json::{Value, json};

use super::align::{AlignedColumn, is_numeric, is_temporal};
use super::result::{Bucket, DiffStats, Finding, FindingKind, Histogram, SchemaDiff, ValuePair};

/// Distinct (batch → stream) pairs remembered per column; beyond it new pairs are not tracked.
const MAX_PAIRS: usize = 1000;
/// Pairs shown per column.
const TOP_PAIRS: usize = 5;
/// Windows (values of the window column) tracked for late data and the histogram.
const MAX_WINDOWS: usize = 10_000;

/// Where the time and window columns are found in the diff output.
#[derive(Debug, Clone)]
pub struct Dimensions {
    /// Output column holding the batch side's time value, and its name for reports.
    pub time: Option<(String, String)>,
    /// Output column holding the window value (e.g. `dt`), and its name.
    pub window: Option<(String, String)>,
}

#[derive(Default, Clone)]
struct NumericStats {
    count: u64,
    /// Exact sums: the means in the report must not change with the order batches arrive in.
    sum_abs: ExactSum,
    max_abs: f64,
    sum_rel: ExactSum,
    max_rel: f64,
    /// Smallest and largest stream/batch ratio (both non-zero).
    ratio: Option<(f64, f64)>,
    ratio_rows: u64,
    /// Rows where one side equals the other rounded to k decimals, k = 0..=6.
    rounding: [u64; 7],
}

#[derive(Default, Clone)]
struct TemporalStats {
    count: u64,
    /// Differences (stream − batch) that are whole non-zero hours, by hours.
    whole_hours: BTreeMap<i64, u64>,
}

#[derive(Default, Clone)]
struct TextStats {
    count: u64,
    trim: u64,
    case: u64,
    unicode: u64,
}

#[derive(Default, Clone)]
struct ColumnAccumulator {
    numeric: NumericStats,
    temporal: TemporalStats,
    text: TextStats,
    /// Mismatched rows where exactly one side is NULL, and the other side's values.
    null_in_batch: BTreeMap<String, u64>,
    null_in_stream: BTreeMap<String, u64>,
    pairs: HashMap<(Option<String>, Option<String>), u64>,
    rows: u64,
}

#[derive(Default, Clone, Copy)]
struct Window {
    batch_min: Option<i64>,
    batch_max: Option<i64>,
    missing_min: Option<i64>,
    missing: u64,
}

/// Cloneable, so an optimistic pass can be rolled back.
#[derive(Clone)]
pub struct Explainer {
    columns: Vec<AlignedColumn>,
    accumulators: Vec<ColumnAccumulator>,
    dimensions: Dimensions,
    windows: BTreeMap<String, Window>,
    histogram: BTreeMap<String, Bucket>,
    histogram_truncated: bool,
    /// Extra stream rows whose key the stream already has (occurrence > 1), and how many of
    /// them the batch side has none of.
    duplicate_extra: u64,
    extra: u64,
}

fn as_f64(array: &ArrayRef) -> Option<ArrayRef> {
    cast(array, &DataType::Float64).ok()
}

/// Nanoseconds since the epoch of a temporal array (dates at midnight).
fn as_nanos(array: &ArrayRef) -> Option<Vec<Option<i64>>> {
    let per_unit = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 1_000_000_000i64,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    let factor = match array.data_type() {
        DataType::Timestamp(unit, _)
        | DataType::Duration(unit)
        | DataType::Time32(unit)
        | DataType::Time64(unit) => per_unit(unit),
        DataType::Date32 => 86_400_000_000_000,
        DataType::Date64 => 1_000_000,
        _ => return None,
    };
    let ints = cast(array, &DataType::Int64).ok()?;
    let ints = ints.as_primitive::<Int64Type>();
    Some(
        ints.iter()
            .map(|v| v.map(|v| v.saturating_mul(factor)))
            .collect(),
    )
}

fn text_of(array: &ArrayRef) -> Option<Vec<Option<String>>> {
    let strings = cast(array, &DataType::Utf8).ok()?;
    Some(
        strings
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
    )
}

fn display(array: &ArrayRef, index: usize) -> String {
    super::cell::cell_text(array, index)
}

fn round_to(value: f64, decimals: usize) -> f64 {
    let scale = 10f64.powi(decimals as i32);
    (value * scale).round() / scale
}

fn format_duration_nanos(nanos: i64) -> String {
    humantime::format_duration(std::time::Duration::from_nanos(nanos.unsigned_abs())).to_string()
}

fn format_instant(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Rounds a tolerance up to one significant digit, so the suggestion reads well and still accepts.
fn suggest(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return value;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    (value / magnitude).ceil() * magnitude
}

impl Explainer {
    pub fn new(columns: &[AlignedColumn], dimensions: Dimensions) -> Explainer {
        Explainer {
            columns: columns.to_vec(),
            accumulators: columns
                .iter()
                .map(|_| ColumnAccumulator::default())
                .collect(),
            dimensions,
            windows: BTreeMap::new(),
            histogram: BTreeMap::new(),
            histogram_truncated: false,
            duplicate_extra: 0,
            extra: 0,
        }
    }

    /// Values of the mismatched rows of one column (both sides present, values differ).
    pub fn observe_column(
        &mut self,
        index: usize,
        batch: &ArrayRef,
        stream: &ArrayRef,
        mask: &BooleanArray,
    ) -> Result<()> {
        if mask.true_count() == 0 {
            return Ok(());
        }
        let b = filter(batch.as_ref(), mask)?;
        let s = filter(stream.as_ref(), mask)?;
        let column = &self.columns[index];
        let acc = &mut self.accumulators[index];
        acc.rows += b.len() as u64;
        for i in 0..b.len() {
            match (b.is_null(i), s.is_null(i)) {
                (true, false) => *acc.null_in_batch.entry(display(&s, i)).or_default() += 1,
                (false, true) => *acc.null_in_stream.entry(display(&b, i)).or_default() += 1,
                _ => {}
            }
            let value = |a: &ArrayRef| (!a.is_null(i)).then(|| display(a, i));
            let key = (value(&b), value(&s));
            if let Some(n) = acc.pairs.get_mut(&key) {
                *n += 1;
            } else if acc.pairs.len() < MAX_PAIRS {
                acc.pairs.insert(key, 1);
            }
        }
        if is_numeric(&column.common) {
            observe_numeric(&mut acc.numeric, &b, &s);
        } else if is_temporal(&column.common) {
            observe_temporal(&mut acc.temporal, &b, &s);
        } else if matches!(
            column.common,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        ) {
            observe_text(&mut acc.text, &b, &s);
        }
        Ok(())
    }

    /// One batch of the diff output: the late-data windows and the histogram.
    pub fn observe_rows(
        &mut self,
        batch: &datafusion::arrow::array::RecordBatch,
        batch_present: &BooleanArray,
        missing: &BooleanArray,
        extra: &BooleanArray,
        mismatched: &BooleanArray,
        stream_occurrence: Option<&ArrayRef>,
    ) -> Result<()> {
        self.extra += extra.true_count() as u64;
        if let Some(occurrence) = stream_occurrence
            && extra.true_count() > 0
        {
            let occurrence = cast(occurrence, &DataType::Int64)?;
            let occurrence = occurrence.as_primitive::<Int64Type>();
            self.duplicate_extra += (0..batch.num_rows())
                .filter(|&i| extra.value(i) && occurrence.is_valid(i) && occurrence.value(i) > 1)
                .count() as u64;
        }
        let time = match &self.dimensions.time {
            Some((column, _)) => batch.column_by_name(column).and_then(as_nanos),
            None => None,
        };
        let window_values = match &self.dimensions.window {
            Some((column, _)) => batch.column_by_name(column).cloned(),
            None => None,
        };
        let divergent = missing.true_count() + extra.true_count() + mismatched.true_count();
        if time.is_none() && (window_values.is_none() || divergent == 0) {
            return Ok(());
        }
        for i in 0..batch.num_rows() {
            let window = window_values
                .as_ref()
                .map(|w| display(w, i))
                .unwrap_or_default();
            let t = time.as_ref().and_then(|t| t[i]);
            if let Some(t) = t {
                let tracked =
                    self.windows.len() < MAX_WINDOWS || self.windows.contains_key(&window);
                if tracked {
                    let w = self.windows.entry(window.clone()).or_default();
                    if batch_present.value(i) {
                        w.batch_min = Some(w.batch_min.map_or(t, |m| m.min(t)));
                        w.batch_max = Some(w.batch_max.map_or(t, |m| m.max(t)));
                    }
                    if missing.value(i) {
                        w.missing += 1;
                        w.missing_min = Some(w.missing_min.map_or(t, |m| m.min(t)));
                    }
                }
            }
            let (m, e, x) = (missing.value(i), extra.value(i), mismatched.value(i));
            if !(m || e || x) {
                continue;
            }
            let bucket_name = match (&self.dimensions.window, t) {
                (Some(_), _) => window,
                (None, Some(t)) => chrono::DateTime::from_timestamp_nanos(t)
                    .format("%Y-%m-%d %H:00")
                    .to_string(),
                (None, None) => continue,
            };
            if !self.histogram.contains_key(&bucket_name) && self.histogram.len() >= MAX_WINDOWS {
                self.histogram_truncated = true;
                continue;
            }
            let bucket = self.histogram.entry(bucket_name.clone()).or_insert(Bucket {
                value: bucket_name,
                missing_in_stream: 0,
                extra_in_stream: 0,
                mismatched: 0,
            });
            bucket.missing_in_stream += u64::from(m);
            bucket.extra_in_stream += u64::from(e);
            bucket.mismatched += u64::from(x);
        }
        Ok(())
    }

    /// Keyless: extra copies of rows the batch side has as well.
    pub fn add_duplicate_extra(&mut self, rows: u64) {
        self.duplicate_extra += rows;
    }

    /// Per-column statistics, aligned with the compared columns.
    pub fn column_stats(&self) -> Vec<Option<DiffStats>> {
        self.accumulators
            .iter()
            .map(|acc| {
                if acc.rows == 0 {
                    return None;
                }
                let n = &acc.numeric;
                let mut pairs: Vec<_> = acc.pairs.iter().collect();
                pairs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let top_pairs = pairs
                    .into_iter()
                    .take(TOP_PAIRS)
                    .map(|((b, s), rows)| ValuePair {
                        batch: b.clone(),
                        stream: s.clone(),
                        rows: *rows,
                    })
                    .collect();
                let numeric = n.count > 0;
                Some(DiffStats {
                    max_abs_diff: numeric.then_some(n.max_abs),
                    mean_abs_diff: numeric.then(|| n.sum_abs.sum().unwrap_or(0.0) / n.count as f64),
                    max_rel_diff: numeric.then_some(n.max_rel),
                    mean_rel_diff: numeric.then(|| n.sum_rel.sum().unwrap_or(0.0) / n.count as f64),
                    top_pairs,
                })
            })
            .collect()
    }

    pub fn histogram(&self) -> Option<Histogram> {
        if self.histogram.is_empty() {
            return None;
        }
        let dimension = match (&self.dimensions.window, &self.dimensions.time) {
            (Some((_, name)), _) => name.clone(),
            (None, Some((_, name))) => format!("hour({name})"),
            (None, None) => return None,
        };
        Some(Histogram {
            dimension,
            buckets: self.histogram.values().cloned().collect(),
            truncated: self.histogram_truncated,
        })
    }

    pub fn findings(
        &self,
        schema: &SchemaDiff,
        missing_total: u64,
        duplicate_keys_stream: u64,
        keyed: bool,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        self.late_data(missing_total, &mut out);
        if self.duplicate_extra > 0 {
            out.push(Finding {
                kind: FindingKind::Duplicates,
                columns: Vec::new(),
                rows: self.duplicate_extra,
                evidence: if keyed {
                    format!(
                        "{} a key the stream already has ({} in the stream more than once): at-least-once delivery wrote them twice",
                        if self.duplicate_extra == 1 {
                            "1 extra stream row repeats".to_string()
                        } else {
                            format!("{} extra stream rows repeat", self.duplicate_extra)
                        },
                        crate::words::plural(duplicate_keys_stream, "key", "keys"),
                    )
                } else {
                    format!(
                        "{} of rows the batch has too ({} in the stream more than once): at-least-once delivery wrote them twice",
                        if self.duplicate_extra == 1 {
                            "1 extra stream row is a copy".to_string()
                        } else {
                            format!("{} extra stream rows are copies", self.duplicate_extra)
                        },
                        crate::words::plural(duplicate_keys_stream, "row", "distinct rows"),
                    )
                },
                details: json!({"extra_rows": self.duplicate_extra, "extra_in_stream": self.extra, "duplicated_keys": duplicate_keys_stream}),
            });
        }
        for (column, acc) in self.columns.iter().zip(&self.accumulators) {
            if acc.rows > 0 {
                column_findings(column, acc, &mut out);
            }
        }
        if schema.diverges() || !schema.type_changes.is_empty() {
            let mut columns = schema.only_in_batch.clone();
            columns.extend(schema.only_in_stream.iter().cloned());
            columns.extend(schema.type_changes.iter().map(|t| t.column.clone()));
            let mut parts = Vec::new();
            if !schema.only_in_batch.is_empty() {
                parts.push(format!(
                    "only in batch: {}",
                    schema.only_in_batch.join(", ")
                ));
            }
            if !schema.only_in_stream.is_empty() {
                parts.push(format!(
                    "only in stream: {}",
                    schema.only_in_stream.join(", ")
                ));
            }
            for t in &schema.type_changes {
                parts.push(format!(
                    "{} is {} in batch, {} in stream",
                    t.column, t.batch, t.stream
                ));
            }
            out.push(Finding {
                kind: FindingKind::SchemaDrift,
                columns,
                rows: 0,
                evidence: format!("the results' schemas differ: {}", parts.join("; ")),
                details: serde_json::to_value(schema).unwrap_or(Value::Null),
            });
        }
        out
    }

    /// Missing rows all in the last fifth of their window: the stream had not caught up.
    fn late_data(&self, missing_total: u64, out: &mut Vec<Finding>) {
        let Some((_, time_name)) = &self.dimensions.time else {
            return;
        };
        let tracked: u64 = self.windows.values().map(|w| w.missing).sum();
        if missing_total == 0 || tracked != missing_total {
            return;
        }
        let mut latest_lag = 0i64;
        let mut windows = Vec::new();
        for (name, w) in self.windows.iter().filter(|(_, w)| w.missing > 0) {
            let (Some(lo), Some(hi), Some(first)) = (w.batch_min, w.batch_max, w.missing_min)
            else {
                return;
            };
            let span = hi - lo;
            if span <= 0 || first < hi - span / 5 {
                return;
            }
            latest_lag = latest_lag.max(hi - first);
            windows.push(json!({"window": name, "missing": w.missing, "first_missing": format_instant(first), "window_last": format_instant(hi)}));
        }
        let first = self
            .windows
            .values()
            .filter_map(|w| w.missing_min)
            .min()
            .unwrap_or(0);
        let in_window = if self.dimensions.window.is_some() {
            " of their window"
        } else {
            " of the compared window"
        };
        out.push(Finding {
            kind: FindingKind::LateData,
            columns: vec![time_name.clone()],
            rows: missing_total,
            evidence: format!(
                "all {missing_total} rows missing in stream have {time_name} in the last {}{in_window} (from {}): late arrivals the stream has not landed yet",
                format_duration_nanos(latest_lag),
                format_instant(first)
            ),
            details: json!({"windows": windows}),
        });
    }
}

fn observe_numeric(n: &mut NumericStats, b: &ArrayRef, s: &ArrayRef) {
    let (Some(bf), Some(sf)) = (as_f64(b), as_f64(s)) else {
        return;
    };
    let (bf, sf) = (
        bf.as_primitive::<Float64Type>(),
        sf.as_primitive::<Float64Type>(),
    );
    for (x, y) in bf.iter().zip(sf.iter()) {
        let (Some(x), Some(y)) = (x, y) else { continue };
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        let abs = (y - x).abs();
        let rel = abs / x.abs().max(y.abs());
        n.count += 1;
        n.sum_abs.add_value(abs);
        n.max_abs = n.max_abs.max(abs);
        n.sum_rel.add_value(rel);
        n.max_rel = n.max_rel.max(rel);
        if x != 0.0 && y != 0.0 {
            let ratio = y / x;
            n.ratio = Some(
                n.ratio
                    .map_or((ratio, ratio), |(lo, hi)| (lo.min(ratio), hi.max(ratio))),
            );
            n.ratio_rows += 1;
        }
        for (k, slot) in n.rounding.iter_mut().enumerate() {
            let (rx, ry) = (round_to(x, k), round_to(y, k));
            if (rx - y).abs() <= 1e-9 * y.abs().max(1.0)
                || (ry - x).abs() <= 1e-9 * x.abs().max(1.0)
            {
                *slot += 1;
            }
        }
    }
}

fn observe_temporal(t: &mut TemporalStats, b: &ArrayRef, s: &ArrayRef) {
    const HOUR: i64 = 3_600_000_000_000;
    let (Some(bn), Some(sn)) = (as_nanos(b), as_nanos(s)) else {
        return;
    };
    for (x, y) in bn.iter().zip(&sn) {
        let (Some(x), Some(y)) = (x, y) else { continue };
        t.count += 1;
        let delta = y - x;
        if delta != 0 && delta % HOUR == 0 {
            *t.whole_hours.entry(delta / HOUR).or_default() += 1;
        }
    }
}

fn observe_text(t: &mut TextStats, b: &ArrayRef, s: &ArrayRef) {
    let (Some(bt), Some(st)) = (text_of(b), text_of(s)) else {
        return;
    };
    let nfc = icu_normalizer::ComposingNormalizerBorrowed::new_nfc();
    for (x, y) in bt.iter().zip(&st) {
        let (Some(x), Some(y)) = (x, y) else { continue };
        t.count += 1;
        t.trim += u64::from(x.trim() == y.trim());
        t.case += u64::from(x.to_lowercase() == y.to_lowercase());
        t.unicode += u64::from(nfc.normalize(x) == nfc.normalize(y));
    }
}

fn column_findings(column: &AlignedColumn, acc: &ColumnAccumulator, out: &mut Vec<Finding>) {
    let name = &column.name;
    let rows = acc.rows;
    let one = |kind: FindingKind, evidence: String, details: Value| Finding {
        kind,
        columns: vec![name.clone()],
        rows,
        evidence,
        details,
    };
    // NULL on one side where the other holds one constant.
    for (nulls, side, other) in [
        (&acc.null_in_batch, "batch", "stream"),
        (&acc.null_in_stream, "stream", "batch"),
    ] {
        let total: u64 = nulls.values().sum();
        if total == rows && nulls.len() == 1 {
            let (value, _) = nulls.iter().next().expect("one entry");
            out.push(one(
                FindingKind::NullVsDefault,
                format!("all {rows} differences in {name} are NULL in {side} where {other} has {value:?}: one side writes a default for a missing value"),
                json!({"null_side": side, "value": value}),
            ));
            return;
        }
    }
    let n = &acc.numeric;
    if n.count == rows && rows > 0 {
        if let Some((lo, hi)) = n.ratio.filter(|_| n.ratio_rows == rows) {
            for factor in [
                1000.0,
                0.001,
                100.0,
                0.01,
                1_000_000.0,
                0.000_001,
                60.0,
                1.0 / 60.0,
                3600.0,
                1.0 / 3600.0,
            ] {
                let close = |r: f64| (r / factor - 1.0).abs() < 1e-6;
                if close(lo) && close(hi) {
                    out.push(one(
                        FindingKind::UnitShift,
                        format!("every differing {name} in stream is {} × the batch value: a unit mix-up (e.g. ms vs s, cents vs units)", trim_float(factor)),
                        json!({"factor": factor}),
                    ));
                    return;
                }
            }
        }
        if n.max_rel <= 1e-6 {
            let tolerance = format!("rel:{}", trim_float(suggest(n.max_rel)));
            out.push(one(
                FindingKind::Precision,
                format!(
                    "all {rows} differences in {name} are below {} (relative {}): floating-point precision; tolerance {tolerance} would accept them",
                    trim_float(suggest(n.max_abs)),
                    trim_float(suggest(n.max_rel))
                ),
                json!({"max_abs_diff": n.max_abs, "max_rel_diff": n.max_rel, "suggested_tolerance": tolerance}),
            ));
            return;
        }
        if let Some(k) = (0..n.rounding.len()).find(|&k| n.rounding[k] == rows) {
            out.push(one(
                FindingKind::Precision,
                format!("all {rows} differences in {name} are rounding to {k} decimal places; tolerance abs:{} would accept them", trim_float(suggest(n.max_abs))),
                json!({"rounding_decimals": k, "max_abs_diff": n.max_abs, "suggested_tolerance": format!("abs:{}", trim_float(suggest(n.max_abs)))}),
            ));
            return;
        }
    }
    let t = &acc.temporal;
    let shifted: u64 = t.whole_hours.values().sum();
    if t.count == rows && shifted == rows && rows > 0 {
        let offsets: Vec<String> = t
            .whole_hours
            .iter()
            .map(|(h, n)| format!("{h:+}h: {n}"))
            .collect();
        out.push(one(
            FindingKind::TimezoneShift,
            format!("every difference in {name} is a whole number of hours ({}): a timezone or DST handling difference", offsets.join(", ")),
            json!({"hours": t.whole_hours}),
        ));
        return;
    }
    let x = &acc.text;
    if x.count == rows && rows > 0 {
        for (count, what) in [
            (x.trim, "trimming whitespace"),
            (x.case, "case folding"),
            (x.unicode, "Unicode normalisation (NFC)"),
        ] {
            if count == rows {
                out.push(one(
                    FindingKind::TextNormalisation,
                    format!("all {rows} differences in {name} vanish under {what}"),
                    json!({"normalisation": what}),
                ));
                return;
            }
        }
    }
}

fn trim_float(value: f64) -> String {
    if value != 0.0 && value.abs() < 1e-4 {
        // One significant digit is what suggest() produced; keep float noise out of it.
        return format!("{value:.1e}").replace(".0e", "e");
    }
    let text = format!("{value:.12}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-0" {
        "0".into()
    } else {
        text.to_string()
    }
}
