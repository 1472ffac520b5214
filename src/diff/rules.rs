//! The findings rules: from one column's statistics to the cause they point to (a unit or
//! timezone shift, precision, text normalisation, NULL vs a default). A rule fires only when its
//! pattern explains every difference of the column, so unrelated divergences never produce one.

use serde_json::{Value, json};

use super::align::AlignedColumn;
use super::result::{Finding, FindingKind};

use super::stats::*;

pub(super) fn column_findings(
    column: &AlignedColumn,
    acc: &ColumnAccumulator,
    out: &mut Vec<Finding>,
) {
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

pub(super) fn trim_float(value: f64) -> String {
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

/// Rounds a tolerance up to one significant digit, so the suggestion reads well and still accepts.
pub(super) fn suggest(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return value;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    (value / magnitude).ceil() * magnitude
}

pub(super) fn format_duration_nanos(nanos: i64) -> String {
    humantime::format_duration(std::time::Duration::from_nanos(nanos.unsigned_abs())).to_string()
}

pub(super) fn format_instant(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}
