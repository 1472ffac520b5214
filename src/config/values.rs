//! The value types of the config and the flags, each parsed once from its text: a file format,
//! a tolerance, a size, a duration, a join choice. Both serde (the TOML) and clap (the flags)
//! parse into these, so a value means the same wherever it was written.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

/// How a change log marks what happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangelogShape {
    Upsert,
    Flink,
    Debezium,
    Dedup,
}

/// A file format dualrun can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Format {
    Parquet,
    Csv,
    NdJson,
    Avro,
    Arrow,
    /// A Delta Lake table (its `_delta_log/` decides which Parquet files are live).
    Delta,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "parquet" => Format::Parquet,
            "csv" => Format::Csv,
            "ndjson" | "json" | "jsonl" => Format::NdJson,
            "avro" => Format::Avro,
            "arrow" | "ipc" | "feather" => Format::Arrow,
            "delta" => Format::Delta,
            other => {
                bail!(
                    "unknown format '{other}' (expected parquet, csv, ndjson, avro, arrow or delta)"
                )
            }
        })
    }

    /// The format a file name's extension says, if any.
    pub fn from_file_name(name: &str) -> Option<(Format, &'static str)> {
        const KNOWN: [(&str, Format); 9] = [
            (".parquet", Format::Parquet),
            (".csv", Format::Csv),
            (".ndjson", Format::NdJson),
            (".jsonl", Format::NdJson),
            (".json", Format::NdJson),
            (".avro", Format::Avro),
            (".arrow", Format::Arrow),
            (".ipc", Format::Arrow),
            (".feather", Format::Arrow),
        ];
        let lower = name.to_ascii_lowercase();
        KNOWN
            .iter()
            .find(|(ext, _)| lower.ends_with(ext))
            .map(|(ext, format)| (*format, *ext))
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::NdJson => "ndjson",
            Format::Avro => "avro",
            Format::Arrow => "arrow",
            Format::Delta => "delta",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Batch,
    Stream,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Batch, Side::Stream];

    pub fn name(self) -> &'static str {
        match self {
            Side::Batch => "batch",
            Side::Stream => "stream",
        }
    }
}

/// The accepted difference of one column. Numbers for numeric columns, durations for temporal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub enum Tolerance {
    Numeric { abs: f64, rel: f64 },
    Temporal { abs: Duration },
}

impl Tolerance {
    /// Parses `abs:X`, `rel:X`, `abs:X,rel:Y`; X may be a duration (`abs:500ms`, `abs:2h`).
    pub fn parse(spec: &str) -> Result<Tolerance> {
        let mut abs_number = None;
        let mut abs_duration = None;
        let mut rel = None;
        for part in spec.split(',').map(str::trim) {
            let (kind, value) = part.split_once(':').ok_or_else(|| {
                anyhow!("tolerance '{spec}' does not parse: expected abs:X, rel:X or abs:X,rel:Y")
            })?;
            match kind.trim() {
                "abs" if abs_number.is_none() && abs_duration.is_none() => {
                    let value = value.trim();
                    match value.parse::<f64>() {
                        Ok(n) if n.is_finite() && n >= 0.0 => abs_number = Some(n),
                        Ok(_) => bail!("tolerance '{spec}': abs must be a finite number ≥ 0"),
                        Err(_) => {
                            let duration = humantime::parse_duration(value).map_err(|_| {
                                anyhow!(
                                    "tolerance '{spec}': abs:{value} is neither a number nor a duration (like 500ms, 1s, 2h)"
                                )
                            })?;
                            abs_duration = Some(duration);
                        }
                    }
                }
                "rel" if rel.is_none() => {
                    let n: f64 = value
                        .trim()
                        .parse()
                        .map_err(|_| anyhow!("tolerance '{spec}': rel:{value} is not a number"))?;
                    if !(n.is_finite() && n >= 0.0) {
                        bail!("tolerance '{spec}': rel must be a finite number ≥ 0");
                    }
                    rel = Some(n);
                }
                "abs" | "rel" => bail!("tolerance '{spec}' gives {kind} twice"),
                other => bail!(
                    "tolerance '{spec}': unknown part '{other}' (expected abs:X, rel:X or abs:X,rel:Y)"
                ),
            }
        }
        match (abs_number, abs_duration, rel) {
            (None, Some(abs), None) => Ok(Tolerance::Temporal { abs }),
            (None, Some(_), Some(_)) => {
                bail!("tolerance '{spec}': a duration cannot be combined with rel")
            }
            (abs, None, rel) if abs.is_some() || rel.is_some() => Ok(Tolerance::Numeric {
                abs: abs.unwrap_or(0.0),
                rel: rel.unwrap_or(0.0),
            }),
            _ => bail!("tolerance '{spec}' is empty: expected abs:X, rel:X or abs:X,rel:Y"),
        }
    }
}

/// Which join pairs keyed rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum JoinChoice {
    /// Hash join unless a memory limit is set and the inputs are large against it.
    #[default]
    Auto,
    Hash,
    SortMerge,
}

impl JoinChoice {
    pub fn parse(text: &str) -> Result<JoinChoice> {
        Ok(match text {
            "auto" => JoinChoice::Auto,
            "hash" => JoinChoice::Hash,
            "sort_merge" | "sort-merge" => JoinChoice::SortMerge,
            other => bail!("join '{other}': expected auto, hash or sort_merge"),
        })
    }
}

/// A kind of construct that can make a query answer differently on identical input.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Nondeterminism {
    /// LIMIT/OFFSET without an ORDER BY that fixes every row.
    Limit,
    /// row_number(), lag(), first_value(), … over an ordering with ties.
    WindowOrder,
    /// array_agg, string_agg, first_value, any_value, … without an ORDER BY that fixes the
    /// order; approx_median and approx_percentile_cont whatever the order.
    AggregateOrder,
    /// random(), uuid(), now(), current_date(), …
    VolatileFunction,
}

impl Nondeterminism {
    pub fn name(self) -> &'static str {
        match self {
            Nondeterminism::Limit => "limit",
            Nondeterminism::WindowOrder => "window_order",
            Nondeterminism::AggregateOrder => "aggregate_order",
            Nondeterminism::VolatileFunction => "volatile_function",
        }
    }
}

/// Parses a size like `512MiB`, `2GiB`, `256M` or `1024B`. K/M/G/T are binary with or without
/// `iB`, so `512M` and `512MiB` are the same number. A bare number is refused: `512` meaning
/// 512 bytes is never what was meant.
pub fn parse_size(text: &str) -> Result<usize> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| anyhow!("size '{text}' does not parse: expected e.g. 512MiB, 2GiB, 256M"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" => bail!(
            "size '{text}' has no unit: {number} bytes? use e.g. {number}MiB (units: B, K, M, G, T, with or without iB)"
        ),
        "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => bail!("size '{text}': unknown unit '{unit}' (use K, M, G or T, with or without iB)"),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0) {
        bail!("size '{text}' must be at least one byte");
    }
    Ok(bytes as usize)
}

/// Splits `NAME=VALUE`, naming the flag in the error.
pub fn split_assignment<'a>(text: &'a str, flag: &str, shape: &str) -> Result<(&'a str, &'a str)> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
            Ok((name.trim(), value.trim()))
        }
        _ => bail!("{flag} '{text}' does not parse: expected {shape}"),
    }
}

/// Parses `--param NAME=VALUE` flags; names must be SQL identifiers so `$NAME` can bind them.
pub fn parse_params(flags: &[String]) -> Result<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    for flag in flags {
        let (name, value) = flag
            .split_once('=')
            .ok_or_else(|| anyhow!("--param '{flag}' does not parse: expected NAME=VALUE"))?;
        check_param_name(name).with_context(|| format!("--param '{flag}'"))?;
        params.insert(name.to_string(), value.to_string());
    }
    Ok(params)
}

/// The param every run may carry: it names the night in the history, used by SQL or not.
pub const RUN_DATE: &str = "run_date";

pub(super) fn check_param_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        bail!("parameter name '{name}' must be letters, digits and _ (bound as ${name} in SQL)");
    }
    Ok(())
}

/// The engine URL that starts an in-process scheduler and executor (tests, trying it out).
pub const STANDALONE: &str = "ballista://standalone";

/// Checks an `--engine` / `[engine] url` value: `ballista://HOST[:PORT]` or
/// `ballista://standalone`.
pub fn parse_engine_url(url: &str) -> Result<String> {
    let Some(rest) = url.strip_prefix("ballista://") else {
        bail!("engine URL '{url}': expected ballista://HOST:PORT or {STANDALONE}");
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        bail!("engine URL '{url}': expected ballista://HOST:PORT or {STANDALONE}");
    }
    Ok(format!("ballista://{host}"))
}

/// Implements `FromStr` (clap) and `TryFrom<String>` (serde) with a type's own parser, so a
/// flag and a config key holding the same kind of value fail with the same words.
macro_rules! parsed_from_text {
    ($type:ty, $parse:expr) => {
        impl std::str::FromStr for $type {
            type Err = anyhow::Error;
            fn from_str(text: &str) -> Result<Self> {
                $parse(text)
            }
        }
        impl TryFrom<String> for $type {
            type Error = String;
            fn try_from(text: String) -> std::result::Result<Self, String> {
                $parse(&text).map_err(|e| format!("{e:#}"))
            }
        }
    };
}

parsed_from_text!(Format, Format::parse);
parsed_from_text!(Tolerance, Tolerance::parse);
parsed_from_text!(JoinChoice, JoinChoice::parse);
parsed_from_text!(ByteSize, |text: &str| parse_size(text).map(ByteSize));
parsed_from_text!(HumanDuration, |text: &str| {
    humantime::parse_duration(text.trim())
        .map(HumanDuration)
        .map_err(|_| anyhow!("'{text}' is not a duration (like 30m, 2h, 1d)"))
});
parsed_from_text!(ColumnTolerance, |text: &str| {
    let (column, spec) = split_assignment(text, "--tolerance", "COL=SPEC")?;
    let tolerance =
        Tolerance::parse(spec).with_context(|| format!("tolerance of column '{column}'"))?;
    Ok::<_, anyhow::Error>(ColumnTolerance(column.to_string(), tolerance))
});

/// A number of bytes, written with a unit (`512MiB`, `2GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ByteSize(pub usize);

impl std::fmt::Display for ByteSize {
    /// The largest binary unit that divides the size: `1KiB`, `512MiB`, `1536B`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let units = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        match units
            .iter()
            .find(|(shift, _)| self.0 > 0 && self.0.is_multiple_of(1 << shift))
        {
            Some((shift, unit)) => write!(f, "{}{unit}", self.0 >> shift),
            None => write!(f, "{}B", self.0),
        }
    }
}

/// A duration as people write it (`30m`, `2h`, `1d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HumanDuration(pub Duration);

/// `--tolerance COL=SPEC`: a column and its tolerance.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnTolerance(pub String, pub Tolerance);

/// Which float SUM/AVG/VAR/STDDEV/COVAR/CORR/REGR the analysis SQL runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloatAggregates {
    /// Correctly rounded exact sums: the same rows give the same bits in any layout.
    #[default]
    Exact,
    /// DataFusion's own, order-dependent in the last bits (for comparison).
    Builtin,
}
