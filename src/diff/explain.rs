//! Explains divergences: statistics gathered while the diff output streams past (no second
//! scan), turned into findings that name a cause: late data, at-least-once duplicates, a
//! timezone or unit shift, float precision or rounding, text normalisation, NULL vs a default,
//! schema drift. A finding is only reported when its pattern explains every divergence it
//! speaks about, so unrelated divergences never produce false findings.
//!
//! Only divergent rows feed the per-column statistics, so their cost follows the number of
//! divergences, not the size of the tables. The late-data window needs the time column of every
//! batch row: that is the one per-row pass, and only when a `time_column` is configured.
//!
//! The per-column statistics live in `stats`, the rules that read them in `rules`; this file
//! drives both and keeps what spans the whole output: late data (with the histogram per
//! window), duplicates and schema drift.

use std::collections::BTreeMap;

use anyhow::Result;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::{cast, filter};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use serde_json::{Value, json};

use super::align::{AlignedColumn, is_numeric, is_temporal};
use super::result::{Bucket, DiffStats, Finding, FindingKind, Histogram, SchemaDiff, ValuePair};
use super::rules::{column_findings, format_duration_nanos, format_instant};
use super::stats::*;

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

fn display(array: &ArrayRef, index: usize) -> String {
    super::cell::cell_text(array, index)
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
        if column.number_text {
            // Numbers written as text to compare them exactly; their differences as doubles,
            // leaving out those no double shows (2^53 + 1 against 2^53): "below 0, precision"
            // would say a tolerance accepts what only exact comparison sees.
            let (bf, sf) = (cast(&b, &DataType::Float64)?, cast(&s, &DataType::Float64)?);
            let visible = datafusion::arrow::compute::kernels::cmp::neq(&bf, &sf)?;
            observe_numeric(
                &mut acc.numeric,
                &filter(bf.as_ref(), &visible)?,
                &filter(sf.as_ref(), &visible)?,
            );
        } else if is_numeric(&column.common) {
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
            // Hive and Spark write names in lower case where Flink keeps `userId`.
            for batch in &schema.only_in_batch {
                if let Some(stream) = schema
                    .only_in_stream
                    .iter()
                    .find(|s| s.eq_ignore_ascii_case(batch))
                {
                    parts.push(format!(
                        "{batch} and {stream} differ only in case (a view of one side can rename it: stream_view / --stream-view with SELECT \"{stream}\" AS \"{batch}\", …)"
                    ));
                }
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
