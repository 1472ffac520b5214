//! The config file as written: the TOML schema, parsed by serde straight into typed values
//! (formats, tolerances, sizes, durations), with every unknown key refused. Nothing here is
//! resolved yet: params are unbound and paths relative to the file (see `resolve`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::values::*;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub tables: BTreeMap<String, TableConfig>,
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub history: HistoryConfig,
    #[serde(default)]
    pub gate: GateConfig,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Where run records go: a local directory or an object store URL; default `.dualrun/history/`
    /// next to the config file.
    pub url: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Consecutive clean runs, on distinct params, that prove a check; default 7.
    pub clean_runs: Option<u32>,
    /// A run is clean when its divergence ratio is at or below this; default 0.
    pub max_divergence_ratio: Option<f64>,
    /// The checks that must be proven before batch may go; default every check.
    pub required: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct CheckGateConfig {
    pub clean_runs: Option<u32>,
    pub max_divergence_ratio: Option<f64>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// node_exporter textfile collector file (e.g. /var/lib/node_exporter/textfile/dualrun.prom).
    pub textfile: Option<PathBuf>,
    /// Pushgateway base URL (e.g. http://pushgateway:9091).
    pub pushgateway: Option<String>,
    /// The `job` grouping label of pushes; default "dualrun".
    pub job: Option<String>,
    /// Extra grouping labels of pushes (e.g. { env = "prod" }).
    #[serde(default)]
    pub grouping: BTreeMap<String, String>,
    /// Timeout of one push, as a duration; default 10s.
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Where each side's files are (a path or URL). A table with a location on one side only,
    /// and no view on the other, is a raw table of that side: views of that side read it,
    /// checks never do.
    pub batch: Option<String>,
    pub stream: Option<String>,
    /// The side's logical table as one read-only SELECT over that side's tables (raw ones
    /// included), instead of a location: epoch millis to timestamps, cents to decimals,
    /// renamed or nested fields. `$params` are bound.
    pub batch_view: Option<String>,
    pub stream_view: Option<String>,
    /// Input format of both sides; inferred from file extensions when absent.
    pub format: Option<Format>,
    pub batch_format: Option<Format>,
    pub stream_format: Option<Format>,
    /// Hive partition columns (`dt=…/` directories); inferred when absent.
    pub partition_cols: Option<Vec<String>>,
    /// How far the stream has got: an aggregate SQL expression over the stream table, e.g.
    /// `max(event_time)`. Checks reading the table are not_ready until it passes their window.
    pub watermark: Option<String>,
    /// How late data may still arrive after the watermark passed the window end, e.g. "30m".
    pub lateness: Option<HumanDuration>,
    /// Delta tables: read this version (time travel).
    pub version: Option<u64>,
    /// Delta tables: read the table as of this time (RFC 3339; `$params` are substituted).
    pub as_of: Option<String>,
    /// CSV files start with a header row (default true); per side: batch_/stream_csv_header.
    pub csv_header: Option<bool>,
    pub batch_csv_header: Option<bool>,
    pub stream_csv_header: Option<bool>,
    /// CSV: the character between fields (default ","; "\t" or "tab", ";", "|", …); per side:
    /// batch_/stream_csv_delimiter.
    pub csv_delimiter: Option<String>,
    pub batch_csv_delimiter: Option<String>,
    pub stream_csv_delimiter: Option<String>,
    /// CSV and NDJSON: infer column types from every record rather than the first 1,000 (a
    /// column whose first values are integers and later ones are not); reads the files once more.
    pub infer_all_records: Option<bool>,
    /// The side's files are a change log (or at-least-once appends): the logical table is the
    /// latest version of each key as of the batch cut-off, deletes removed.
    pub batch_changelog: Option<ChangelogConfig>,
    pub stream_changelog: Option<ChangelogConfig>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ChangelogConfig {
    /// upsert | flink | debezium (the flattened ExtractNewRecordState form) | dedup.
    pub shape: ChangelogShape,
    /// Columns that identify a row of the logical table (an event id for dedup).
    pub key: Vec<String>,
    /// Columns that order the versions of a key, latest last (e.g. ["ts_ms", "offset"]);
    /// debezium: default ["__source_ts_ms"].
    #[serde(default)]
    pub order_by: Vec<String>,
    /// Changes after this SQL expression (params bound) do not count; default: the end of the
    /// run window, `CAST('$run_date' AS TIMESTAMP) + INTERVAL '1 day'`. "none": no bound.
    pub as_of: Option<String>,
    /// The column compared with as_of (a timestamp, or epoch milliseconds); default: the first
    /// order_by column (debezium: __source_ts_ms).
    pub as_of_column: Option<String>,
    /// upsert: a boolean column that marks deletes; without it a row whose other columns are all
    /// NULL (a tombstone) is a delete.
    pub deleted: Option<String>,
    /// flink: the row-kind column (+I, -U, +U, -D); default "op".
    pub op: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub name: String,
    /// Path of a .sql file, relative to the config file.
    pub query: Option<PathBuf>,
    pub sql: Option<String>,
    #[serde(default)]
    pub key: Vec<String>,
    #[serde(default, deserialize_with = "tolerances")]
    pub tolerance: BTreeMap<String, Tolerance>,
    #[serde(default)]
    pub ignore: Vec<String>,
    pub sample: Option<usize>,
    /// Per-check gate policy overrides.
    pub gate: Option<CheckGateConfig>,
    /// SQL expression (params bound) for the end of the compared window; default
    /// `CAST($run_date AS TIMESTAMP) + INTERVAL '1 day'` when the check reads a watermarked table.
    pub window_end: Option<String>,
    /// Overrides the tables' allowed lateness for this check.
    pub lateness: Option<HumanDuration>,
    /// Event-time column of the result: enables the late-data finding and the hourly histogram.
    pub time_column: Option<String>,
    /// Column that splits the result into windows (e.g. dt): late data is judged per window and
    /// the histogram buckets by it.
    pub window_column: Option<String>,
    /// Cancel the check when it runs longer than this (e.g. "30m").
    pub timeout: Option<HumanDuration>,
    /// Columns whose values never appear in samples or findings (personal data).
    #[serde(default)]
    pub redact: Vec<String>,
    /// "embedded": this check runs in-process even when [engine] url sends the others to
    /// Ballista (e.g. a query with LIMIT, which Ballista cannot run correctly).
    pub engine: Option<String>,
    /// A clean result with fewer batch rows than this is `empty`, not a match; default 1.
    pub min_rows: Option<u64>,
    /// An empty result is a legitimate answer (e.g. a query for rows in error): match, not empty.
    #[serde(default)]
    pub allow_empty: bool,
    /// Nondeterministic constructs the check knowingly uses (e.g. ["limit"]): no warning.
    #[serde(default)]
    pub allow_nondeterministic: Vec<Nondeterminism>,
    /// Run the batch side this many extra times in other physical layouts and diff them: a
    /// query that answers differently on identical input makes the check `unstable`.
    pub control: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Where the plans run: a Ballista scheduler (ballista://HOST:PORT, or
    /// ballista://standalone); embedded DataFusion when absent.
    pub url: Option<String>,
    pub memory_limit: Option<ByteSize>,
    /// Directory for spill files; the OS temp dir when absent.
    pub spill_dir: Option<PathBuf>,
    /// Parallelism of the plans; the number of cores when absent.
    pub target_partitions: Option<usize>,
    /// Keyed diffs split into this many hash buckets on disk, diffed one at a time; automatic
    /// (when the inputs dwarf memory_limit) when absent.
    pub buckets: Option<usize>,
    /// Join used by keyed diffs: "auto", "hash" or "sort_merge".
    pub join: Option<JoinChoice>,
    /// Object store requests: retries after a failure (with exponential backoff); default 3.
    pub retries: Option<usize>,
    /// Object store requests: timeout of one request; default 30s.
    pub request_timeout: Option<HumanDuration>,
    /// Float SUM/AVG/VAR/STDDEV/COVAR/CORR/REGR: "exact" (default: the same rows give the same
    /// bits in any layout) or "builtin" (DataFusion's own, order-dependent in the last bits; for
    /// comparison).
    pub float_aggregates: Option<FloatAggregates>,
}

/// `tolerance = { col = "abs:0.01" }`, each parsed into a [`Tolerance`]; a mistake names the
/// column as well as the spec.
fn tolerances<'de, D>(deserializer: D) -> Result<BTreeMap<String, Tolerance>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let texts = BTreeMap::<String, String>::deserialize(deserializer)?;
    texts
        .into_iter()
        .map(|(column, spec)| {
            Tolerance::parse(&spec)
                .map(|tolerance| (column.clone(), tolerance))
                .map_err(|e| {
                    serde::de::Error::custom(format!("tolerance of column '{column}': {e:#}"))
                })
        })
        .collect()
}
