//! Command-line surface: clap definitions only. Everything here is parsed into plain values and
//! handed to `commands`, so the flags stay a contract that is easy to read in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ByteSize, ColumnTolerance, HumanDuration};

#[derive(Debug, Parser)]
#[command(
    name = "dualrun",
    version,
    about = "Run identical SQL on batch and stream tables and prove they give the same answers",
    long_about = "dualrun runs the same analytic SQL against the tables your batch pipeline writes and \
the tables your streaming pipeline writes, diffs the two results inside DataFusion, and says \
precisely where and why they diverge.",
    after_help = RUN_EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; boxing the larger variants would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One-off comparison of one query over tables given on the command line.
    #[command(after_help = COMPARE_EXAMPLE)]
    Compare(CompareArgs),
    /// Run every check of a config file (the nightly job).
    #[command(after_help = RUN_EXAMPLE)]
    Run(RunArgs),
    /// Plan every check on both sides without running it; report schema differences.
    #[command(after_help = VALIDATE_EXAMPLE)]
    Validate(ValidateArgs),
    /// Serve /metrics and /healthz, and run the checks on a cron schedule or on POST /run.
    #[command(after_help = SERVE_EXAMPLE)]
    Serve(ServeArgs),
    /// Show the run history (one record per check run).
    #[command(after_help = HISTORY_EXAMPLE)]
    History(HistoryArgs),
    /// The migration gate: which analyses are proven, and whether batch may be switched off.
    #[command(after_help = GATE_EXAMPLE)]
    Gate(GateArgs),
    /// Write the migration board (the gate, per analysis, over the nights) as a static site.
    #[command(after_help = BOARD_EXAMPLE)]
    Board(BoardArgs),
    /// Write a commented starter config.
    #[command(after_help = INIT_EXAMPLE)]
    Init(InitArgs),
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    #[command(after_help = COMPLETIONS_EXAMPLE)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

// Examples are one command per line, short enough that a wrapped help never splits a line
// continuation from its command: copy-paste works at any terminal width.

/// Exit codes of the commands that reach verdicts (compare, run).
const RUN_EXIT_CODES: &str = "Exit codes (like diff(1)):
  0    every check matches
  1    a check diverged, or is unstable (its control runs disagree)
  2    trouble: bad input or config, a check that could not run (one line on stderr says why)
  3    not ready: a stream's watermark has not passed the window yet; run again later
  4    empty: a result had no rows (or fewer than min_rows): no evidence either way
  130  interrupted (SIGINT/SIGTERM)";

const COMPARE_EXAMPLE: &str = "Example:
  dualrun compare --batch orders=warehouse/orders/ --stream orders=s3://lake/orders/ --key dt,region --sql 'SELECT dt, region, sum(amount) AS revenue FROM orders GROUP BY 1, 2'

Exit codes: 0 match, 1 diverged or unstable, 2 trouble, 4 empty (no rows to compare), 130 interrupted.";

const BOARD_EXAMPLE: &str = "Example:
  dualrun run --config dualrun.toml --format html --output report.html
  dualrun board --config dualrun.toml --output site/ --report report.html
  aws s3 sync site/ s3://team-bucket/dualrun/

Exit codes: 0 written, 2 trouble.";

const RUN_EXAMPLE: &str = "Example:
  dualrun run --config dualrun.toml --param run_date=2026-11-25 --format json --output report.json

Exit codes: 0 match, 1 diverged or unstable, 2 trouble, 3 not ready, 4 empty (no rows to compare), 130 interrupted.";

const VALIDATE_EXAMPLE: &str = "Example:
  dualrun validate --config dualrun.toml

Exit codes: 0 every check plans and both sides agree, 1 a column on one side only, 2 trouble.";

const SERVE_EXAMPLE: &str = "Example:
  dualrun serve --config dualrun.toml --listen 127.0.0.1:9898 --schedule '0 2 * * *'
  curl -X POST 'http://127.0.0.1:9898/run?wait=true'
  curl http://127.0.0.1:9898/metrics

Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 2 trouble (bad config, address in use).";

const HISTORY_EXAMPLE: &str = "Example:
  dualrun history --config dualrun.toml --check daily_revenue --format json

Exit codes: 0 records shown (possibly none), 2 trouble (unknown check, unreadable history).";

const GATE_EXAMPLE: &str = "Example:
  dualrun gate --config dualrun.toml
  dualrun gate --config dualrun.toml --format markdown --output gate.md

Exit codes: 0 batch removal is ready (every required check proven), 1 not yet, 2 trouble.";

const INIT_EXAMPLE: &str = "Example:
  dualrun init
  dualrun init --output configs/nightly.toml
  dualrun init --output -

Exit codes: 0 written, 2 trouble (the file exists: never overwritten).";

const COMPLETIONS_EXAMPLE: &str = "Example:
  dualrun completions bash > /etc/bash_completion.d/dualrun
  dualrun completions zsh > \"${fpath[1]}/_dualrun\"

Exit codes: 0 printed, 2 unknown shell.";

pub use crate::report::OutputFormat;

/// Flags shared by every command that produces a report.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Bind `$NAME` in the SQL to VALUE (overrides [params] of the config).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Upper bound of the memory pool (e.g. 512MiB, 2GiB); operators spill to disk beyond it.
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<ByteSize>,
    /// Where the plans run: embedded DataFusion when absent, or a Ballista scheduler
    /// (ballista://HOST:PORT; ballista://standalone starts one in-process). Needs a build with
    /// the `ballista` feature.
    #[arg(long, value_name = "URL")]
    pub engine: Option<String>,
    /// Also show what each check scanned: files read of files listed (partition pruning), bytes.
    #[arg(long, short)]
    pub verbose: bool,
}

/// Where metrics go, on top of the config's [metrics].
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write metrics to FILE for node_exporter's textfile collector (atomically).
    #[arg(long, value_name = "FILE")]
    pub metrics_textfile: Option<PathBuf>,
    /// Push metrics to the Pushgateway at URL (e.g. http://pushgateway:9091).
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// A table of the batch side: NAME=URL (local path, file://, s3://, gs://, az://, http(s)://).
    #[arg(
        long = "batch",
        value_name = "NAME=URL",
        required_unless_present = "batch_views"
    )]
    pub batch: Vec<String>,
    /// A table of the stream side: NAME=URL.
    #[arg(
        long = "stream",
        value_name = "NAME=URL",
        required_unless_present = "stream_views"
    )]
    pub stream: Vec<String>,
    /// The batch side of a table as a view: NAME=SELECT over the batch side's tables (tables
    /// given with --batch only are raw tables of that side, for its views to read).
    #[arg(long = "batch-view", value_name = "NAME=SQL")]
    pub batch_views: Vec<String>,
    /// The stream side of a table as a view: NAME=SELECT over the stream side's tables, e.g.
    /// --stream raw=events.ndjson --stream-view 'events=SELECT id, to_timestamp_millis(ts) AS at FROM raw'.
    #[arg(long = "stream-view", value_name = "NAME=SQL")]
    pub stream_views: Vec<String>,
    /// Input format of a table when its file extensions do not tell: NAME=FORMAT for both sides,
    /// or batch.NAME=FORMAT / stream.NAME=FORMAT for one (parquet, csv, ndjson, avro, arrow).
    #[arg(long = "input-format", value_name = "[SIDE.]NAME=FORMAT")]
    pub input_formats: Vec<String>,
    /// CSV tables: whether the first line of each file is a header (default true): NAME=false
    /// for both sides, or batch.NAME=false / stream.NAME=false for one.
    #[arg(long = "csv-header", value_name = "[SIDE.]NAME=BOOL")]
    pub csv_headers: Vec<String>,
    /// CSV tables: the character between fields (default ','): NAME=';' for both sides, or
    /// batch.NAME=tab / stream.NAME='|' for one.
    #[arg(long = "csv-delimiter", value_name = "[SIDE.]NAME=CHAR")]
    pub csv_delimiters: Vec<String>,
    /// CSV and NDJSON tables: infer column types from every record, not the first 1,000 (when
    /// later values do not read as the type the first ones suggest); reads the files once more.
    #[arg(long)]
    pub infer_all_records: bool,
    /// The query, inline.
    #[arg(long, conflicts_with = "query", required_unless_present = "query")]
    pub sql: Option<String>,
    /// The query, from a file.
    #[arg(long, value_name = "FILE")]
    pub query: Option<PathBuf>,
    /// Key column(s) pairing rows of the two results; none means a keyless (multiset) comparison.
    #[arg(long, value_delimiter = ',', value_name = "COL[,COL...]")]
    pub key: Vec<String>,
    /// Accepted difference for a column: COL=abs:X, COL=rel:X or COL=abs:X,rel:Y (temporal: abs:1s).
    #[arg(long = "tolerance", value_name = "COL=SPEC")]
    pub tolerances: Vec<ColumnTolerance>,
    /// Leave a column out of the comparison.
    #[arg(long = "ignore", value_name = "COL")]
    pub ignore: Vec<String>,
    /// Sample rows kept per kind of divergence.
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Event-time column of the result: enables the late-data finding and an hourly histogram.
    #[arg(long, value_name = "COL")]
    pub time_column: Option<String>,
    /// Column splitting the result into windows (e.g. dt) for findings and the histogram.
    #[arg(long, value_name = "COL")]
    pub window_column: Option<String>,
    /// Cancel the comparison when it runs longer than this (e.g. 30m).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<HumanDuration>,
    /// Never show this column's values in samples or findings (personal data).
    #[arg(long = "redact", value_name = "COL")]
    pub redact: Vec<String>,
    /// A clean result with fewer batch rows than N is `empty` (exit 4), not a match.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        conflicts_with = "allow_empty"
    )]
    pub min_rows: u64,
    /// An empty result is a legitimate answer: two empty results match.
    #[arg(long)]
    pub allow_empty: bool,
    /// Also run the batch side N more times in other physical layouts: answers that differ on
    /// identical input make the check `unstable` (exit 1).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub control: u32,
    /// A nondeterministic construct the query uses knowingly: no warning for it.
    #[arg(long = "allow-nondeterministic", value_enum, value_name = "KIND")]
    pub allow_nondeterministic: Vec<crate::config::Nondeterminism>,
    /// Name of the check in reports.
    #[arg(long, default_value = "compare")]
    pub name: String,
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(long, short, value_name = "FILE", default_value = "dualrun.toml")]
    pub config: PathBuf,
    /// Run only these checks (repeatable).
    #[arg(long = "check", value_name = "NAME")]
    pub checks: Vec<String>,
    /// Write no history record (trying things out): the gate does not see this run.
    #[arg(long)]
    pub no_history: bool,
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file (re-read before every run, so edits apply without a restart).
    #[arg(long, short, value_name = "FILE", default_value = "dualrun.toml")]
    pub config: PathBuf,
    /// Address to listen on. Loopback by default: expose it deliberately.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9898")]
    pub listen: String,
    /// Run the checks on this cron schedule (5 fields, UTC), e.g. '0 2 * * *'.
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
    /// Bind `$NAME` in the SQL to VALUE (overrides [params] of the config).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Upper bound of the memory pool (e.g. 512MiB, 2GiB).
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<ByteSize>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The config file.
    #[arg(long, short, value_name = "FILE", default_value = "dualrun.toml")]
    pub config: PathBuf,
    /// Bind `$NAME` in the SQL to VALUE (overrides [params] of the config).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The config file (its [history] url says where the records are).
    #[arg(long, short, value_name = "FILE", default_value = "dualrun.toml")]
    pub config: PathBuf,
    /// Only the records of this check.
    #[arg(long, value_name = "NAME")]
    pub check: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct GateArgs {
    /// The config file (checks, [gate] policy and [history] url).
    #[arg(long, short, value_name = "FILE", default_value = "dualrun.toml")]
    pub config: PathBuf,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Write to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Record a step of a check's lifecycle in the history: `migrated` once its consumers read
    /// the stream tables (the check must be proven), `retired` once its batch job is off (the
    /// check must be migrated).
    #[arg(long, num_args = 2, value_names = ["STEP", "CHECK"])]
    pub mark: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct BoardArgs {
    /// The config file (checks, [gate] policy and [history] url).
    #[arg(long, short, value_name = "FILE", default_value = "dualrun.toml")]
    pub config: PathBuf,
    /// The directory to write the site to (index.html and checks/*.html).
    #[arg(long, value_name = "DIR", default_value = "site")]
    pub output: PathBuf,
    /// The last run's HTML report (`run --format html --output FILE`), copied into the site
    /// and linked from each analysis.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Write the starter config to FILE (never overwrites an existing file); `-` for stdout.
    #[arg(long, value_name = "FILE", default_value = "dualrun.toml")]
    pub output: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Exit;

    /// `--help` documents every exit code the commands can end with.
    #[test]
    fn help_lists_every_exit_code() {
        for exit in [
            Exit::Match,
            Exit::Diverged,
            Exit::Trouble,
            Exit::NotReady,
            Exit::Empty,
            Exit::Interrupted,
        ] {
            let line = format!("\n  {:<4} ", exit.code());
            assert!(
                RUN_EXIT_CODES.contains(&line),
                "{exit:?} missing from --help"
            );
        }
    }
}
