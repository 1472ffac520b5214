//! Per-column statistics of the mismatched values, gathered while the diff output streams past:
//! differences and ratios for numbers, whole-hour shifts for times, normalisations for texts,
//! NULL-vs-value counts and the most frequent value pairs. Exact sums, so the figures do not
//! move with the order batches arrive in.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};

use crate::engine::ExactSum;

#[derive(Default, Clone)]
pub(super) struct NumericStats {
    pub(super) count: u64,
    /// Exact sums: the means in the report must not change with the order batches arrive in.
    pub(super) sum_abs: ExactSum,
    pub(super) max_abs: f64,
    pub(super) sum_rel: ExactSum,
    pub(super) max_rel: f64,
    /// Smallest and largest stream/batch ratio (both non-zero).
    pub(super) ratio: Option<(f64, f64)>,
    pub(super) ratio_rows: u64,
    /// Rows where one side equals the other rounded to k decimals, k = 0..=6.
    pub(super) rounding: [u64; 7],
}

#[derive(Default, Clone)]
pub(super) struct TemporalStats {
    pub(super) count: u64,
    /// Differences (stream − batch) that are whole non-zero hours, by hours.
    pub(super) whole_hours: BTreeMap<i64, u64>,
}

#[derive(Default, Clone)]
pub(super) struct TextStats {
    pub(super) count: u64,
    pub(super) trim: u64,
    pub(super) case: u64,
    pub(super) unicode: u64,
}

#[derive(Default, Clone)]
pub(super) struct ColumnAccumulator {
    pub(super) numeric: NumericStats,
    pub(super) temporal: TemporalStats,
    pub(super) text: TextStats,
    /// Mismatched rows where exactly one side is NULL, and the other side's values.
    pub(super) null_in_batch: BTreeMap<String, u64>,
    pub(super) null_in_stream: BTreeMap<String, u64>,
    pub(super) pairs: HashMap<(Option<String>, Option<String>), u64>,
    pub(super) rows: u64,
}

pub(super) fn as_f64(array: &ArrayRef) -> Option<ArrayRef> {
    cast(array, &DataType::Float64).ok()
}

/// Nanoseconds since the epoch of a temporal array (dates at midnight).
pub(super) fn as_nanos(array: &ArrayRef) -> Option<Vec<Option<i64>>> {
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

pub(super) fn text_of(array: &ArrayRef) -> Option<Vec<Option<String>>> {
    let strings = cast(array, &DataType::Utf8).ok()?;
    Some(
        strings
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
    )
}

pub(super) fn round_to(value: f64, decimals: usize) -> f64 {
    let scale = 10f64.powi(decimals as i32);
    (value * scale).round() / scale
}

pub(super) fn observe_numeric(n: &mut NumericStats, b: &ArrayRef, s: &ArrayRef) {
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

pub(super) fn observe_temporal(t: &mut TemporalStats, b: &ArrayRef, s: &ArrayRef) {
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

pub(super) fn observe_text(t: &mut TextStats, b: &ArrayRef, s: &ArrayRef) {
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
