//! The resolved plan: every table and check of one invocation, validated, params bound, defaults
//! filled in. What the rest of dualrun reads; nothing downstream sees the raw config or flags.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::values::*;

/// Default number of sample rows kept per kind of divergence.
pub const DEFAULT_SAMPLE: usize = 10;

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
    /// CSV: the byte between fields, when the table sets one (else `,`, and a header that
    /// reads as names joined by another common delimiter is an error saying so).
    pub csv_delimiter: Option<u8>,
    /// CSV and NDJSON: column types from every record, not the first 1,000.
    pub infer_all_records: bool,
    /// The files are a change log, compacted into the logical table.
    pub changelog: Option<ChangelogSpec>,
    /// The side is a view (this SELECT, params bound) over the side's tables, not files; `url`
    /// is empty then.
    pub view: Option<String>,
}

/// A table that exists on one side only, for that side's views to read; no check reads it.
#[derive(Debug, Clone)]
pub struct RawTable {
    pub name: String,
    pub side: Side,
    pub source: SourceSpec,
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
    /// DataFusion's own float SUM/AVG/VAR/STDDEV/COVAR/CORR/REGR instead of the exact,
    /// order-independent ones.
    pub builtin_float_aggregates: bool,
}

/// How hard object store requests try before a check fails: bounded, so an unreachable or
/// failing store ends in a clear error instead of a hang.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreOptions {
    pub retries: usize,
    pub request_timeout: Duration,
    /// Databases stop a query of dualrun's by themselves after this (`statement_timeout`):
    /// the longest `timeout` of the checks, when every check has one, so a check that times out
    /// leaves no query running on the server.
    pub query_timeout: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retries: 3,
            request_timeout: Duration::from_secs(30),
            query_timeout: None,
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

/// More control runs than this cost more than they tell.
pub const MAX_CONTROL_RUNS: u32 = 8;

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
    /// Tables of one side only, read by that side's views.
    pub raw_tables: Vec<RawTable>,
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
