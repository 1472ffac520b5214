//! The configuration model: the TOML file of the nightly job and the flags of a one-off compare
//! both end up as the same validated [`Plan`] of tables and checks. Everything a user can get
//! wrong here is rejected up front, with the key or flag named, before any data is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

/// Default number of sample rows kept per kind of divergence.
pub const DEFAULT_SAMPLE: usize = 10;

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
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub batch: String,
    pub stream: String,
    /// Input format of both sides; inferred from file extensions when absent.
    pub format: Option<String>,
    pub batch_format: Option<String>,
    pub stream_format: Option<String>,
    /// Hive partition columns (`dt=…/` directories); inferred when absent.
    pub partition_cols: Option<Vec<String>>,
    /// How far the stream has got: an aggregate SQL expression over the stream table, e.g.
    /// `max(event_time)`. Checks reading the table are not_ready until it passes their window.
    pub watermark: Option<String>,
    /// How late data may still arrive after the watermark passed the window end, e.g. "30m".
    pub lateness: Option<String>,
    /// Delta tables: read this version (time travel).
    pub version: Option<u64>,
    /// Delta tables: read the table as of this time (RFC 3339; `$params` are substituted).
    pub as_of: Option<String>,
    /// CSV files start with a header row (default true); per side: batch_/stream_csv_header.
    pub csv_header: Option<bool>,
    pub batch_csv_header: Option<bool>,
    pub stream_csv_header: Option<bool>,
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

/// How a change log marks what happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangelogShape {
    Upsert,
    Flink,
    Debezium,
    Dedup,
}

/// A change log resolved: params bound, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangelogSpec {
    pub shape: ChangelogShape,
    pub key: Vec<String>,
    pub order_by: Vec<String>,
    /// SQL expression of the cut-off, params substituted; None: every change counts.
    pub as_of: Option<String>,
    pub as_of_column: String,
    pub deleted: Option<String>,
    pub op: String,
}

impl ChangelogConfig {
    fn resolve(&self, what: &str, params: &BTreeMap<String, String>) -> Result<ChangelogSpec> {
        if self.key.is_empty() {
            bail!("{what}: key is empty: name the columns that identify a row");
        }
        let order_by = if self.order_by.is_empty() && self.shape == ChangelogShape::Debezium {
            vec!["__source_ts_ms".to_string()]
        } else {
            self.order_by.clone()
        };
        if order_by.is_empty() {
            bail!("{what}: order_by is empty: name the columns that order the versions of a key");
        }
        if self.deleted.is_some() && self.shape != ChangelogShape::Upsert {
            bail!("{what}: deleted applies to shape = \"upsert\" only");
        }
        if self.op.is_some() && self.shape != ChangelogShape::Flink {
            bail!("{what}: op applies to shape = \"flink\" only");
        }
        let as_of = match self.as_of.as_deref() {
            Some("none") => None,
            Some(text) => Some(substitute_params(text, params)),
            None => params
                .get("run_date")
                .map(|date| format!("CAST('{date}' AS TIMESTAMP) + INTERVAL '1 day'")),
        };
        Ok(ChangelogSpec {
            shape: self.shape,
            key: self.key.clone(),
            as_of_column: self
                .as_of_column
                .clone()
                .unwrap_or_else(|| order_by[0].clone()),
            order_by,
            as_of,
            deleted: self.deleted.clone(),
            op: self.op.clone().unwrap_or_else(|| "op".to_string()),
        })
    }
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
    #[serde(default)]
    pub tolerance: BTreeMap<String, String>,
    #[serde(default)]
    pub ignore: Vec<String>,
    pub sample: Option<usize>,
    /// Per-check gate policy overrides.
    pub gate: Option<CheckGateConfig>,
    /// SQL expression (params bound) for the end of the compared window; default
    /// `CAST($run_date AS TIMESTAMP) + INTERVAL '1 day'` when the check reads a watermarked table.
    pub window_end: Option<String>,
    /// Overrides the tables' allowed lateness for this check.
    pub lateness: Option<String>,
    /// Event-time column of the result: enables the late-data finding and the hourly histogram.
    pub time_column: Option<String>,
    /// Column that splits the result into windows (e.g. dt): late data is judged per window and
    /// the histogram buckets by it.
    pub window_column: Option<String>,
    /// Cancel the check when it runs longer than this (e.g. "30m").
    pub timeout: Option<String>,
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
    pub memory_limit: Option<String>,
    /// Directory for spill files; the OS temp dir when absent.
    pub spill_dir: Option<PathBuf>,
    /// Parallelism of the plans; the number of cores when absent.
    pub target_partitions: Option<usize>,
    /// Keyed diffs split into this many hash buckets on disk, diffed one at a time; automatic
    /// (when the inputs dwarf memory_limit) when absent.
    pub buckets: Option<usize>,
    /// Join used by keyed diffs: "auto", "hash" or "sort_merge".
    pub join: Option<String>,
    /// Object store requests: retries after a failure (with exponential backoff); default 3.
    pub retries: Option<usize>,
    /// Object store requests: timeout of one request; default 30s.
    pub request_timeout: Option<String>,
    /// Float SUM/AVG: "exact" (default: the same rows give the same bits in any layout) or
    /// "builtin" (DataFusion's own, order-dependent in the last bits; for comparison).
    pub float_aggregates: Option<String>,
}

/// A file format dualrun can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Where one side of a logical table lives.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub url: String,
    pub format: Option<Format>,
    pub partition_cols: Option<Vec<String>>,
    /// Delta time travel: a table version, or a point in time (RFC 3339).
    pub delta_version: Option<u64>,
    pub delta_as_of: Option<String>,
    /// CSV: the first line of each file names the columns (default); false reads it as data.
    pub csv_header: bool,
    /// The files are a change log, compacted into the logical table.
    pub changelog: Option<ChangelogSpec>,
}

#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: String,
    pub batch: SourceSpec,
    pub stream: SourceSpec,
    pub watermark: Option<Watermark>,
}

/// A stream table's progress marker and the lateness allowed after it.
#[derive(Debug, Clone)]
pub struct Watermark {
    pub expression: String,
    pub lateness: Duration,
}

impl TableSpec {
    pub fn side(&self, side: Side) -> &SourceSpec {
        match side {
            Side::Batch => &self.batch,
            Side::Stream => &self.stream,
        }
    }
}

/// The accepted difference of one column. Numbers for numeric columns, durations for temporal.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
            other => bail!("[engine] join = '{other}': expected auto, hash or sort_merge"),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct EngineSpec {
    pub memory_limit: Option<usize>,
    pub spill_dir: Option<PathBuf>,
    pub target_partitions: Option<usize>,
    /// Rows per batch inside DataFusion; 32K when absent (tests use tiny batches so that
    /// arrays arrive sliced at odd offsets).
    pub batch_size: Option<usize>,
    pub buckets: Option<usize>,
    /// A Ballista scheduler that runs the plans; embedded DataFusion when absent.
    pub url: Option<String>,
    /// Carry every value column through the keyed join on its own instead of packed into one
    /// (what a Ballista run does; tests compare both).
    pub unpacked_values: bool,
    /// Count duplicated keys first and pair every row by occurrence, instead of finding and
    /// pairing repeated keys in one pass: what a Ballista run does, and what dualrun falls
    /// back to when keys repeat too often; tests compare both.
    pub pair_all_by_occurrence: bool,
    pub join: JoinChoice,
    pub store: StoreOptions,
    /// DataFusion's own float SUM/AVG instead of the exact, order-independent ones.
    pub builtin_float_aggregates: bool,
}

/// How hard object store requests try before a check fails: bounded, so an unreachable or
/// failing store ends in a clear error instead of a hang.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreOptions {
    pub retries: usize,
    pub request_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retries: 3,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// One comparison: a query, how rows pair up, and what counts as equal.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    pub name: String,
    pub sql: String,
    /// Where the SQL came from, for error messages ("queries/x.sql", "--sql").
    pub sql_origin: String,
    pub key: Vec<String>,
    pub tolerances: Vec<(String, Tolerance)>,
    pub ignore: Vec<String>,
    pub sample: usize,
    pub gate: CheckGate,
    /// End of the compared window, as an SQL expression with params bound.
    pub window_end: Option<String>,
    pub lateness: Option<Duration>,
    pub time_column: Option<String>,
    pub window_column: Option<String>,
    pub timeout: Option<Duration>,
    pub redact: Vec<String>,
    /// Runs in-process even when the engine is a Ballista cluster.
    pub embedded: bool,
    /// What a clean result needs to be a match rather than `empty`.
    pub evidence: Evidence,
    /// Kinds of nondeterminism the check acknowledges (no warning for them).
    pub allow_nondeterministic: Vec<Nondeterminism>,
    /// Extra runs of the batch side in other layouts, diffed against the first (0: none).
    pub control: u32,
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
    /// array_agg, string_agg, first_value, … without an ORDER BY that fixes the order.
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

/// More control runs than this cost more than they tell.
pub const MAX_CONTROL_RUNS: u32 = 8;

fn check_control(control: u32, what: &str) -> Result<u32> {
    if control > MAX_CONTROL_RUNS {
        bail!("{what} = {control}: at most {MAX_CONTROL_RUNS} control runs");
    }
    Ok(control)
}

/// How much data a check needs before "nothing diverged" counts as a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    /// Fewer batch rows than this make a clean result `empty`.
    pub min_rows: u64,
    /// An empty result is a legitimate answer for this check (e.g. "rows with errors").
    pub allow_empty: bool,
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence {
            min_rows: 1,
            allow_empty: false,
        }
    }
}

impl Evidence {
    /// Whether a result with these row counts is evidence at all.
    pub fn is_met(&self, batch_rows: u64, stream_rows: u64) -> bool {
        self.allow_empty || (batch_rows >= self.min_rows && batch_rows.max(stream_rows) > 0)
    }
}

/// The gate policy of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckGate {
    pub clean_runs: u32,
    pub max_divergence_ratio: f64,
    pub required: bool,
}

impl Default for CheckGate {
    fn default() -> Self {
        CheckGate {
            clean_runs: 7,
            max_divergence_ratio: 0.0,
            required: true,
        }
    }
}

impl CheckSpec {
    /// The text the fingerprint hashes, spelled out field by field so that renaming a field or
    /// a variant in the code cannot change it (and silently reset every streak). It keeps the
    /// form the first histories were written with: lists and strings quoted as Rust quotes
    /// them, tolerances as `Numeric { abs: A, rel: R }` or `Temporal { abs: D }`.
    pub fn canonical(&self) -> String {
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let mut text = format!(
            "sql={}\nkey={}\nignore={}\n",
            self.sql.trim(),
            list(&self.key),
            list(&self.ignore)
        );
        for (column, tolerance) in &self.tolerances {
            let tolerance = match tolerance {
                Tolerance::Numeric { abs, rel } => {
                    format!("Numeric {{ abs: {abs:?}, rel: {rel:?} }}")
                }
                Tolerance::Temporal { abs } => format!("Temporal {{ abs: {abs:?} }}"),
            };
            text.push_str(&format!("tolerance={column}:{tolerance}\n"));
        }
        text
    }

    /// Identifies what the check compares: its SQL, key, tolerances and ignored columns. A new
    /// fingerprint restarts the check's clean streak. FNV-1a over [`CheckSpec::canonical`]:
    /// stable across builds and platforms.
    pub fn fingerprint(&self) -> String {
        let text = self.canonical();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

/// Everything one invocation needs, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tables: Vec<TableSpec>,
    pub checks: Vec<CheckSpec>,
    pub params: BTreeMap<String, String>,
    pub engine: EngineSpec,
    pub metrics: MetricsSpec,
    /// Where run records go; none for a one-off compare.
    pub history: Option<String>,
    /// Every check of the config, even when `--check` runs only some: the gate judges them all.
    pub all_checks: Vec<CheckSpec>,
}

/// Where and how to push a run's metrics.
#[derive(Debug, Clone)]
pub struct PushgatewaySpec {
    pub url: String,
    pub job: String,
    pub grouping: BTreeMap<String, String>,
    pub timeout: Duration,
}

/// Where a run's metrics go; empty means nowhere.
#[derive(Debug, Clone, Default)]
pub struct MetricsSpec {
    pub textfile: Option<PathBuf>,
    pub pushgateway: Option<PushgatewaySpec>,
}

impl MetricsSpec {
    /// The config's [metrics], with the command-line flags on top.
    pub fn resolve(
        config: &MetricsConfig,
        textfile_flag: Option<&Path>,
        pushgateway_flag: Option<&str>,
    ) -> Result<MetricsSpec> {
        let timeout = match &config.timeout {
            Some(text) => humantime::parse_duration(text).map_err(|_| {
                anyhow!("[metrics] timeout = '{text}' is not a duration (like 10s)")
            })?,
            None => Duration::from_secs(10),
        };
        let pushgateway = match pushgateway_flag.or(config.pushgateway.as_deref()) {
            Some(url) => {
                let parsed = url::Url::parse(url).map_err(|e| {
                    anyhow!("pushgateway URL '{}': {e}", crate::redact::redact_url(url))
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    bail!(
                        "pushgateway URL '{}' must be http:// or https://",
                        crate::redact::redact_url(url)
                    );
                }
                for name in config.grouping.keys() {
                    if name == "job" || name == "check" || !is_label_name(name) {
                        bail!(
                            "[metrics] grouping label '{name}' is not allowed (a Prometheus label name other than job and check)"
                        );
                    }
                }
                Some(PushgatewaySpec {
                    url: url.to_string(),
                    job: config.job.clone().unwrap_or_else(|| "dualrun".to_string()),
                    grouping: config.grouping.clone(),
                    timeout,
                })
            }
            None => None,
        };
        Ok(MetricsSpec {
            textfile: textfile_flag
                .map(Path::to_path_buf)
                .or_else(|| config.textfile.clone()),
            pushgateway,
        })
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
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

/// Parses `[SIDE.]NAME=VALUE` flags of compare (`--input-format`, `--csv-header`): per table
/// and optionally per side, naming the flag and the table in every error.
fn per_table_flags<T, U>(
    flags: &[String],
    flag: &str,
    value_shape: &str,
    tables: &BTreeMap<String, U>,
    parse: impl Fn(&str) -> Result<T>,
) -> Result<BTreeMap<(String, Option<Side>), T>> {
    let mut out = BTreeMap::new();
    for text in flags {
        let (target, value) = split_assignment(text, flag, &format!("[SIDE.]NAME={value_shape}"))?;
        let value = parse(value).with_context(|| format!("{flag} '{text}'"))?;
        let (side, name) = match target.split_once('.') {
            Some(("batch", name)) => (Some(Side::Batch), name),
            Some(("stream", name)) => (Some(Side::Stream), name),
            _ => (None, target),
        };
        if !tables.contains_key(name) {
            bail!("{flag} '{text}' names table '{name}', which no --batch/--stream gives");
        }
        out.insert((name.to_string(), side), value);
    }
    Ok(out)
}

/// The param every run may carry: it names the night in the history, used by SQL or not.
pub const RUN_DATE: &str = "run_date";

/// Names bound as `$name` or `${name}` in a text (SQL, a window end, an as_of).
fn referenced_params(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        if end > 0 {
            names.insert(body[..end].to_string());
        }
    }
    names
}

/// Fails on a param no text uses (a typo such as `rundate` would otherwise be ignored and the
/// SQL run without it), naming the ones that are used; and on a date param that is no date.
fn check_params(params: &BTreeMap<String, String>, origin: &str, texts: &[&str]) -> Result<()> {
    let used: std::collections::BTreeSet<String> =
        texts.iter().flat_map(|t| referenced_params(t)).collect();
    for name in params.keys() {
        if name != RUN_DATE && !used.contains(name) {
            let used: Vec<String> = used.iter().map(|n| format!("${n}")).collect();
            bail!(
                "{origin} '{name}': no query uses ${name} ({}); check the spelling",
                if used.is_empty() {
                    "the queries use no params".to_string()
                } else {
                    format!("the queries use {}", used.join(", "))
                }
            );
        }
    }
    for (name, value) in params {
        if (name == RUN_DATE || name.ends_with("_date"))
            && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_err()
        {
            bail!(
                "{origin} '{name}' = '{value}' is not a date (expected YYYY-MM-DD, e.g. 2026-11-25)"
            );
        }
    }
    Ok(())
}

fn check_param_name(name: &str) -> Result<()> {
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

fn parse_tolerances<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<(String, Tolerance)>> {
    let mut out: Vec<(String, Tolerance)> = Vec::new();
    for (column, spec) in entries {
        if out.iter().any(|(c, _)| c == column) {
            bail!("tolerance for column '{column}' is given twice");
        }
        let tolerance =
            Tolerance::parse(spec).with_context(|| format!("tolerance of column '{column}'"))?;
        out.push((column.to_string(), tolerance));
    }
    Ok(out)
}

impl EngineSpec {
    fn from_config(
        config: &EngineConfig,
        memory_flag: Option<&str>,
        engine_flag: Option<&str>,
    ) -> Result<EngineSpec> {
        let url = engine_flag
            .or(config.url.as_deref())
            .map(parse_engine_url)
            .transpose()?;
        let memory_limit = match memory_flag.or(config.memory_limit.as_deref()) {
            Some(text) => {
                let bytes = parse_size(text).context("memory limit")?;
                // Below this DataFusion cannot hold one batch per operator and fails with pages
                // of operator names instead of a verdict.
                const SMALLEST: usize = 16 << 20;
                if bytes < SMALLEST {
                    bail!("memory limit '{text}' is too small: give at least 16MiB");
                }
                Some(bytes)
            }
            None => None,
        };
        if let (Some(url), Some(_)) = (&url, memory_limit) {
            bail!(
                "a memory limit applies to embedded runs only; on {url} each executor sizes its own memory: drop --memory-limit / [engine] memory_limit, or run without --engine"
            );
        }
        if config.target_partitions == Some(0) {
            bail!("[engine] target_partitions must be at least 1");
        }
        let defaults = StoreOptions::default();
        let store = StoreOptions {
            retries: config.retries.unwrap_or(defaults.retries),
            request_timeout: match &config.request_timeout {
                Some(text) => parse_duration(text, "[engine] request_timeout")?,
                None => defaults.request_timeout,
            },
        };
        let builtin_float_aggregates = match config.float_aggregates.as_deref() {
            None | Some("exact") => false,
            Some("builtin") => true,
            Some(other) => {
                bail!("[engine] float_aggregates = '{other}': expected exact or builtin")
            }
        };
        Ok(EngineSpec {
            store,
            builtin_float_aggregates,
            memory_limit,
            spill_dir: config.spill_dir.clone(),
            target_partitions: config.target_partitions,
            batch_size: None,
            buckets: config.buckets,
            unpacked_values: url.is_some(),
            pair_all_by_occurrence: url.is_some(),
            url,
            join: config
                .join
                .as_deref()
                .map(JoinChoice::parse)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// Arguments of `dualrun compare`, already split out of clap.
pub struct CompareInput<'a> {
    pub batch: &'a [String],
    pub stream: &'a [String],
    pub input_formats: &'a [String],
    pub csv_headers: &'a [String],
    pub sql: Option<&'a str>,
    pub query: Option<&'a Path>,
    pub key: &'a [String],
    pub tolerances: &'a [String],
    pub ignore: &'a [String],
    pub sample: Option<usize>,
    pub name: &'a str,
    pub params: &'a [String],
    pub memory_limit: Option<&'a str>,
    pub engine: Option<&'a str>,
    pub metrics_textfile: Option<&'a Path>,
    pub pushgateway: Option<&'a str>,
    pub time_column: Option<&'a str>,
    pub window_column: Option<&'a str>,
    pub timeout: Option<&'a str>,
    pub redact: &'a [String],
    pub min_rows: Option<u64>,
    pub allow_empty: bool,
    pub allow_nondeterministic: &'a [Nondeterminism],
    pub control: u32,
}

/// Flags of the config-driven commands that override or narrow the config file.
#[derive(Debug, Default)]
pub struct RunFlags<'a> {
    pub checks: &'a [String],
    pub params: &'a [String],
    pub memory_limit: Option<&'a str>,
    pub engine: Option<&'a str>,
    pub metrics_textfile: Option<&'a Path>,
    pub pushgateway: Option<&'a str>,
}

impl Plan {
    /// The plan of a one-off `dualrun compare`.
    pub fn from_compare(input: CompareInput<'_>) -> Result<Plan> {
        let mut tables: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
        for (side, flags) in [(Side::Batch, input.batch), (Side::Stream, input.stream)] {
            let flag = format!("--{}", side.name());
            for text in flags {
                let (name, url) = split_assignment(text, &flag, "NAME=URL")?;
                let entry = tables.entry(name.to_string()).or_default();
                let slot = match side {
                    Side::Batch => &mut entry.0,
                    Side::Stream => &mut entry.1,
                };
                if slot.replace(url.to_string()).is_some() {
                    bail!("{flag} names table '{name}' twice");
                }
            }
        }
        let formats = per_table_flags(
            input.input_formats,
            "--input-format",
            "FORMAT",
            &tables,
            Format::parse,
        )?;
        let headers = per_table_flags(
            input.csv_headers,
            "--csv-header",
            "true|false",
            &tables,
            |v| {
                v.parse::<bool>()
                    .map_err(|_| anyhow!("expected true or false after the ="))
            },
        )?;
        let mut table_specs = Vec::new();
        for (name, (batch, stream)) in tables {
            let (Some(batch), Some(stream)) = (batch, stream) else {
                bail!(
                    "table '{name}' needs both --batch {name}=URL and --stream {name}=URL (the same SQL runs on each side)"
                );
            };
            let format_of = |side: Side| {
                formats
                    .get(&(name.clone(), Some(side)))
                    .or_else(|| formats.get(&(name.clone(), None)))
                    .copied()
            };
            let header_of = |side: Side| {
                headers
                    .get(&(name.clone(), Some(side)))
                    .or_else(|| headers.get(&(name.clone(), None)))
                    .copied()
                    .unwrap_or(true)
            };
            table_specs.push(TableSpec {
                batch: SourceSpec {
                    url: batch,
                    format: format_of(Side::Batch),
                    partition_cols: None,
                    delta_version: None,
                    delta_as_of: None,
                    csv_header: header_of(Side::Batch),
                    changelog: None,
                },
                stream: SourceSpec {
                    url: stream,
                    format: format_of(Side::Stream),
                    partition_cols: None,
                    delta_version: None,
                    delta_as_of: None,
                    csv_header: header_of(Side::Stream),
                    changelog: None,
                },
                name,
                watermark: None,
            });
        }
        let (sql, sql_origin) = match (input.sql, input.query) {
            (Some(sql), None) => (sql.to_string(), "--sql".to_string()),
            (None, Some(path)) => (read_query(path)?, path.display().to_string()),
            _ => bail!("give the query with exactly one of --sql or --query"),
        };
        let tolerance_pairs = input
            .tolerances
            .iter()
            .map(|t| split_assignment(t, "--tolerance", "COL=SPEC"))
            .collect::<Result<Vec<_>>>()?;
        let check = CheckSpec {
            name: input.name.to_string(),
            sql,
            sql_origin,
            key: clean_columns(input.key, "--key")?,
            tolerances: parse_tolerances(tolerance_pairs)?,
            ignore: clean_columns(input.ignore, "--ignore")?,
            sample: input.sample.unwrap_or(DEFAULT_SAMPLE),
            gate: CheckGate::default(),
            window_end: None,
            lateness: None,
            time_column: input.time_column.map(str::to_string),
            window_column: input.window_column.map(str::to_string),
            timeout: input
                .timeout
                .map(|t| parse_duration(t, "--timeout"))
                .transpose()?,
            redact: clean_columns(input.redact, "--redact")?,
            embedded: false,
            evidence: Evidence {
                min_rows: input.min_rows.unwrap_or(1),
                allow_empty: input.allow_empty,
            },
            allow_nondeterministic: input.allow_nondeterministic.to_vec(),
            control: check_control(input.control, "--control")?,
        };
        let params = parse_params(input.params)?;
        check_params(&params, "--param", &[&check.sql])?;
        Ok(Plan {
            tables: table_specs,
            checks: vec![check.clone()],
            params,
            engine: EngineSpec::from_config(
                &EngineConfig::default(),
                input.memory_limit,
                input.engine,
            )?,
            metrics: MetricsSpec::resolve(
                &MetricsConfig::default(),
                input.metrics_textfile,
                input.pushgateway,
            )?,
            history: None,
            all_checks: vec![check],
        })
    }

    /// The plan of `dualrun run` / `validate`: the config file, then flags on top.
    pub fn from_config_file(path: &Path, flags: &RunFlags<'_>) -> Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let config: ConfigFile = toml::from_str(&text).map_err(|e| {
            anyhow!(
                "config file {}: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        Plan::from_config(config, base, flags)
            .with_context(|| format!("config file {}", path.display()))
    }

    /// The plan of a config given as text, with no flags (queries relative to `base`).
    pub fn from_config_text(text: &str, base: &Path) -> Result<Plan> {
        let config: ConfigFile =
            toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
        Plan::from_config(config, base, &RunFlags::default())
    }

    fn from_config(config: ConfigFile, base: &Path, flags: &RunFlags<'_>) -> Result<Plan> {
        let only_checks = flags.checks;
        let mut params = BTreeMap::new();
        for (name, value) in &config.params {
            check_param_name(name).with_context(|| format!("[params] {name}"))?;
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    value.to_string()
                }
                toml::Value::Datetime(d) => d.to_string(),
                _ => bail!("[params] {name}: expected a string, number, boolean or date"),
            };
            params.insert(name.clone(), text);
        }
        let config_params = params.clone();
        let flag_params = parse_params(flags.params)?;
        params.extend(flag_params.clone());

        let mut tables = Vec::new();
        let as_of_texts: Vec<String> = config
            .tables
            .values()
            .filter_map(|t| t.as_of.clone())
            .collect();
        for (name, table) in config.tables {
            let context = || format!("[tables.{name}]");
            let both = table
                .format
                .as_deref()
                .map(Format::parse)
                .transpose()
                .with_context(context)?;
            let batch_format = table
                .batch_format
                .as_deref()
                .map(Format::parse)
                .transpose()
                .with_context(context)?;
            let stream_format = table
                .stream_format
                .as_deref()
                .map(Format::parse)
                .transpose()
                .with_context(context)?;
            for (key, url) in [("batch", &table.batch), ("stream", &table.stream)] {
                if url.trim().is_empty() {
                    bail!(
                        "[tables.{name}] {key} is empty: give the table's location (path or URL)"
                    );
                }
            }
            let watermark = match (&table.watermark, &table.lateness) {
                (Some(expression), lateness) => Some(Watermark {
                    expression: expression.clone(),
                    lateness: lateness
                        .as_deref()
                        .map(|l| parse_duration(l, &format!("[tables.{name}] lateness")))
                        .transpose()?
                        .unwrap_or_default(),
                }),
                (None, Some(_)) => {
                    bail!("[tables.{name}] lateness needs a watermark expression too")
                }
                (None, None) => None,
            };
            if table.version.is_some() && table.as_of.is_some() {
                bail!("[tables.{name}] give version or as_of, not both");
            }
            let as_of = table
                .as_of
                .as_deref()
                .map(|t| substitute_params(t, &params));
            tables.push(TableSpec {
                batch: SourceSpec {
                    url: resolve_location(base, &table.batch),
                    format: batch_format.or(both),
                    partition_cols: table.partition_cols.clone(),
                    delta_version: table.version,
                    delta_as_of: as_of.clone(),
                    csv_header: table.batch_csv_header.or(table.csv_header).unwrap_or(true),
                    changelog: table
                        .batch_changelog
                        .as_ref()
                        .map(|c| c.resolve(&format!("[tables.{name}] batch_changelog"), &params))
                        .transpose()?,
                },
                stream: SourceSpec {
                    url: resolve_location(base, &table.stream),
                    format: stream_format.or(both),
                    partition_cols: table.partition_cols,
                    delta_version: table.version,
                    delta_as_of: as_of,
                    csv_header: table.stream_csv_header.or(table.csv_header).unwrap_or(true),
                    changelog: table
                        .stream_changelog
                        .as_ref()
                        .map(|c| c.resolve(&format!("[tables.{name}] stream_changelog"), &params))
                        .transpose()?,
                },
                name,
                watermark,
            });
        }

        if config.checks.is_empty() {
            bail!("no [[checks]]: add at least one check (see `dualrun init`)");
        }
        let gate_defaults = CheckGate {
            clean_runs: config.gate.clean_runs.unwrap_or(7),
            max_divergence_ratio: config.gate.max_divergence_ratio.unwrap_or(0.0),
            required: true,
        };
        check_gate_numbers(
            gate_defaults.clean_runs,
            gate_defaults.max_divergence_ratio,
            "[gate]",
        )?;
        if let Some(required) = &config.gate.required {
            for name in required {
                if !config.checks.iter().any(|c| &c.name == name) {
                    bail!("[gate] required names check '{name}', which is not in the config");
                }
            }
        }
        let mut checks = Vec::new();
        for check in config.checks {
            if checks.iter().any(|c: &CheckSpec| c.name == check.name) {
                bail!("two checks are named '{}'", check.name);
            }
            let context = format!("check '{}'", check.name);
            let (sql, sql_origin) = match (check.sql, check.query) {
                (Some(sql), None) => (sql, format!("{context} sql")),
                (None, Some(query)) => {
                    let path = base.join(&query);
                    (
                        read_query(&path).context(context.clone())?,
                        path.display().to_string(),
                    )
                }
                _ => bail!("{context}: give exactly one of query = \"file.sql\" or sql = \"…\""),
            };
            checks.push(CheckSpec {
                key: clean_columns(&check.key, "key").context(context.clone())?,
                tolerances: parse_tolerances(
                    check
                        .tolerance
                        .iter()
                        .map(|(c, s)| (c.as_str(), s.as_str())),
                )
                .context(context.clone())?,
                ignore: clean_columns(&check.ignore, "ignore").context(context.clone())?,
                sample: check.sample.unwrap_or(DEFAULT_SAMPLE),
                gate: {
                    let own = check.gate.clone().unwrap_or_default();
                    let gate = CheckGate {
                        clean_runs: own.clean_runs.unwrap_or(gate_defaults.clean_runs),
                        max_divergence_ratio: own
                            .max_divergence_ratio
                            .unwrap_or(gate_defaults.max_divergence_ratio),
                        required: config
                            .gate
                            .required
                            .as_ref()
                            .is_none_or(|r| r.contains(&check.name)),
                    };
                    check_gate_numbers(gate.clean_runs, gate.max_divergence_ratio, &context)?;
                    gate
                },
                window_end: check.window_end.clone(),
                time_column: check.time_column.clone(),
                window_column: check.window_column.clone(),
                timeout: check
                    .timeout
                    .as_deref()
                    .map(|t| parse_duration(t, &format!("{context} timeout")))
                    .transpose()?,
                redact: clean_columns(&check.redact, "redact").context(context.clone())?,
                embedded: match check.engine.as_deref() {
                    None => false,
                    Some("embedded") => true,
                    Some(other) => bail!(
                        "{context}: engine = \"{other}\": a check can only ask for \"embedded\" (the cluster itself is [engine] url or --engine)"
                    ),
                },
                lateness: check
                    .lateness
                    .as_deref()
                    .map(|l| parse_duration(l, &format!("{context} lateness")))
                    .transpose()?,
                evidence: {
                    if check.allow_empty && check.min_rows.is_some() {
                        bail!("{context}: give min_rows or allow_empty = true, not both");
                    }
                    Evidence {
                        min_rows: check.min_rows.unwrap_or(1),
                        allow_empty: check.allow_empty,
                    }
                },
                allow_nondeterministic: check.allow_nondeterministic,
                control: check_control(check.control.unwrap_or(0), &format!("{context} control"))?,
                name: check.name,
                sql,
                sql_origin,
            });
        }
        for wanted in only_checks {
            if !checks.iter().any(|c| &c.name == wanted) {
                let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
                bail!(
                    "--check '{wanted}' is not in the config (checks: {})",
                    names.join(", ")
                );
            }
        }
        let all_checks = checks.clone();
        if !only_checks.is_empty() {
            checks.retain(|c| only_checks.contains(&c.name));
        }
        // [params] may serve any check of the config; --param must serve a selected one.
        fn texts<'a>(checks: &'a [CheckSpec], as_of: &'a [String]) -> Vec<&'a str> {
            checks
                .iter()
                .flat_map(|c| [Some(c.sql.as_str()), c.window_end.as_deref()])
                .flatten()
                .chain(as_of.iter().map(String::as_str))
                .collect()
        }
        check_params(
            &config_params,
            "[params]",
            &texts(&all_checks, &as_of_texts),
        )?;
        check_params(&flag_params, "--param", &texts(&checks, &as_of_texts))?;
        Ok(Plan {
            tables,
            checks,
            params,
            engine: EngineSpec::from_config(&config.engine, flags.memory_limit, flags.engine)?,
            metrics: MetricsSpec::resolve(
                &config.metrics,
                flags.metrics_textfile,
                flags.pushgateway,
            )?,
            history: Some(resolve_location(
                base,
                config.history.url.as_deref().unwrap_or(".dualrun/history/"),
            )),
            all_checks,
        })
    }
}

/// `${name}` and `$name` → the param's value; longest names first so `$run_date_end` is not cut
/// at `$run_date`.
fn substitute_params(text: &str, params: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = params.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = text.to_string();
    for name in names {
        out = out.replace(&format!("${{{name}}}"), &params[name]);
        out = out.replace(&format!("${name}"), &params[name]);
    }
    out
}

fn parse_duration(text: &str, what: &str) -> Result<Duration> {
    humantime::parse_duration(text.trim())
        .map_err(|_| anyhow!("{what} = '{text}' is not a duration (like 30m, 2h, 1d)"))
}

fn check_gate_numbers(clean_runs: u32, ratio: f64, what: &str) -> Result<()> {
    if clean_runs == 0 {
        bail!("{what}: clean_runs must be at least 1");
    }
    if !(0.0..=1.0).contains(&ratio) {
        bail!("{what}: max_divergence_ratio must be between 0 and 1");
    }
    Ok(())
}

fn read_query(path: &Path) -> Result<String> {
    let sql = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read query file {}", path.display()))?;
    if sql.trim().is_empty() {
        bail!("query file {} is empty", path.display());
    }
    Ok(sql)
}

fn clean_columns(columns: &[String], what: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for column in columns.iter().map(|c| c.trim()) {
        if column.is_empty() {
            bail!("{what}: empty column name");
        }
        if out.iter().any(|c| c == column) {
            bail!("{what}: column '{column}' is given twice");
        }
        out.push(column.to_string());
    }
    Ok(out)
}

/// Relative local paths in a config file are relative to the file, so `dualrun run --config
/// some/dir/dualrun.toml` works from any directory. URLs are kept as they are.
fn resolve_location(base: &Path, location: &str) -> String {
    if location.contains("://") || Path::new(location).is_absolute() {
        return location.to_string();
    }
    let joined = base.join(location);
    let mut text = joined.display().to_string();
    if location.ends_with('/') && !text.ends_with('/') {
        text.push('/');
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint decides which history records count for a check's streak: these values
    /// were written by released builds, so a refactor that changes them would silently reset
    /// every streak. They must never change.
    #[test]
    fn fingerprints_of_known_checks_are_pinned() {
        let plan = Plan::from_config_text(
            r#"
            [tables.orders]
            batch = "b/"
            stream = "s/"

            [[checks]]
            name = "pinned"
            sql = "SELECT order_id, amount, status FROM orders"
            key = ["order_id"]
            ignore = ["status"]
            tolerance = { amount = "abs:0.01,rel:0.001" }

            [[checks]]
            name = "pinned_time"
            sql = "SELECT order_id, status FROM orders"
            key = ["order_id"]
            tolerance = { status = "abs:2s" }
            "#,
            Path::new(""),
        )
        .unwrap();
        assert_eq!(plan.checks[0].fingerprint(), "581b7a622d8c2256");
        assert_eq!(plan.checks[1].fingerprint(), "86ffc743ca2b41b9");
        assert_eq!(
            plan.checks[0].canonical(),
            "sql=SELECT order_id, amount, status FROM orders\nkey=[\"order_id\"]\nignore=[\"status\"]\ntolerance=amount:Numeric { abs: 0.01, rel: 0.001 }\n"
        );
    }

    /// The fingerprint is stored in every history record: if it changed between versions, every
    /// check's clean streak would silently restart. Pinned; change it only on purpose.
    #[test]
    fn fingerprint_is_pinned() {
        let plan = Plan::from_config_text(
            r#"
[tables.t]
batch = "b/"
stream = "s/"

[[checks]]
name = "c"
sql = "SELECT dt, sum(x) AS s FROM t WHERE dt = $run_date GROUP BY dt"
key = ["dt"]
tolerance = { s = "abs:0.01,rel:1e-6" }
ignore = ["loaded_at"]
"#,
            Path::new("."),
        )
        .unwrap();
        assert_eq!(plan.checks[0].fingerprint(), "82cb1ba1be80aa44");
    }

    #[test]
    fn sizes_are_binary_with_or_without_ib() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("1024B").unwrap(), 1024);
        let bare = parse_size("512").unwrap_err().to_string();
        assert!(bare.contains("512 bytes? use e.g. 512MiB"), "{bare}");
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn tolerance_specs() {
        assert_eq!(
            Tolerance::parse("abs:0.01").unwrap(),
            Tolerance::Numeric {
                abs: 0.01,
                rel: 0.0
            }
        );
        assert_eq!(
            Tolerance::parse("rel:1e-6").unwrap(),
            Tolerance::Numeric {
                abs: 0.0,
                rel: 1e-6
            }
        );
        assert_eq!(
            Tolerance::parse("abs:0.5, rel:0.1").unwrap(),
            Tolerance::Numeric { abs: 0.5, rel: 0.1 }
        );
        assert_eq!(
            Tolerance::parse("abs:500ms").unwrap(),
            Tolerance::Temporal {
                abs: Duration::from_millis(500)
            }
        );
        assert_eq!(
            Tolerance::parse("abs:2h").unwrap(),
            Tolerance::Temporal {
                abs: Duration::from_secs(7200)
            }
        );
        for bad in [
            "",
            "abs",
            "abs:",
            "abs:x",
            "abs:-1",
            "rel:nan",
            "abs:1,abs:2",
            "foo:1",
            "abs:1s,rel:0.1",
        ] {
            assert!(Tolerance::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn formats_from_names() {
        assert_eq!(
            Format::from_file_name("part-0.PARQUET").unwrap().0,
            Format::Parquet
        );
        assert_eq!(Format::from_file_name("a.jsonl").unwrap().0, Format::NdJson);
        assert!(Format::from_file_name("_SUCCESS").is_none());
        assert!(Format::parse("xlsx").is_err());
    }

    #[test]
    fn unknown_config_keys_are_errors() {
        let err =
            toml::from_str::<ConfigFile>("[[checks]]\nname='a'\nsql='select 1'\nkeys=['x']\n")
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `keys`"), "{err}");
    }

    #[test]
    fn params_need_identifier_names() {
        assert!(parse_params(&["run_date=2026-11-25".into()]).is_ok());
        assert!(parse_params(&["run-date=1".into()]).is_err());
        assert!(parse_params(&["nodelimiter".into()]).is_err());
    }
}
