//! The commands, wired from the pieces: plan → catalog → engine → diff → verdict → report.
//! Checks are isolated: one that fails becomes an error entry and the others still run.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::catalog::{self, Catalog};
use crate::cli::{OutputFormat, ReportArgs};
use crate::config::{CheckSpec, Plan, Side};
use crate::diff;
use crate::engine::{Engine, Shortfall, lint, scanned_tables};
use crate::gate;
use crate::history::{self, History, RunRecord};
use crate::readiness::{self, NotReady};
use crate::report::{CheckReport, Compared, RunReport, TextStyle};
use crate::trouble::{Cause, Trouble};
use crate::verdict::{self, CheckStatus, ControlReport, Exit};
use datafusion::logical_expr::LogicalPlan;

/// Runs every check of the plan and gathers the report; with a history, appends one record per
/// check and evaluates the migration gate afterwards.
pub async fn run_plan(plan: &Plan) -> Result<RunReport> {
    let engine = Engine::new(&plan.engine).await?;
    let catalog = catalog::register_tables(&engine.ctx, &plan.tables, &plan.engine.store).await?;
    let history = plan
        .history
        .as_deref()
        .map(|location| History::open(&engine.ctx, location, &plan.engine.store))
        .transpose()?;
    let run_id = history::new_run_id();
    let mut problems = Vec::new();
    let mut reports = Vec::with_capacity(plan.checks.len());
    for check in &plan.checks {
        let started = Instant::now();
        let started_at = chrono::Utc::now();
        let spinner = spinner(&check.name);
        let progress = spinner
            .clone()
            .map(|bar| Arc::new(TerminalProgress(bar)) as Arc<dyn diff::Progress>);
        let running = run_check(&engine, &catalog, check, plan, progress.as_ref());
        // A cluster job that stops making progress must still end: on Ballista a check without
        // a timeout of its own gets the default one.
        let on_cluster = engine.remote.is_some() && !check.embedded;
        let timeout = check
            .timeout
            .map(|limit| (limit, "timeout of the check"))
            .or(on_cluster.then_some((
                DEFAULT_CLUSTER_TIMEOUT,
                "default timeout of a check on Ballista; set timeout on the check to change it",
            )));
        let outcome = match timeout {
            // Dropping the running future cancels its DataFusion streams.
            Some((limit, which)) => {
                tokio::time::timeout(limit, running)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Trouble::error(
                            Cause::Timeout,
                            format!(
                                "timed out after {} ({which}); the query was cancelled",
                                humantime::format_duration(limit)
                            ),
                        ))
                    })
            }
            None => running.await,
        };
        if let Some(bar) = &spinner {
            bar.finish_and_clear();
        }
        let seconds = started.elapsed().as_secs_f64();
        let (name, query, key) = (&check.name, &check.sql_origin, &check.key);
        let report = match outcome {
            Ok(Outcome::Compared(compared)) => {
                CheckReport::from_diff(name, query, key, *compared, check.evidence, seconds)
            }
            Ok(Outcome::NotReady(why)) => {
                eprintln!("dualrun: check '{name}': {}", why.message());
                CheckReport::not_ready(name, query, key, why, seconds)
            }
            Err(error) => {
                let trouble = Trouble::of(&error);
                let mut message = trouble.message;
                if let (Cause::Memory, Some(shortfall)) = (trouble.cause, engine.take_shortfall()) {
                    message = memory_message(&shortfall);
                }
                eprintln!("dualrun: check '{name}': {message}");
                CheckReport::from_error(name, query, key, message, seconds)
            }
        };
        tracing::info!(check = %check.name, status = report.status.name(), seconds, "check done");
        if let Some(history) = &history {
            let record = RunRecord::new(
                &run_id,
                check,
                &report,
                &plan.params,
                started_at,
                chrono::Utc::now(),
            );
            if let Err(error) = history.append(&engine.ctx, &record).await {
                problems.push(Trouble::of(&error).message);
            }
        }
        reports.push(report);
    }
    let mut report = RunReport::new(plan.params.clone(), reports);
    if let Some(history) = &history {
        match history.read(&engine.ctx, None).await {
            Ok(records) => report.gate = Some(gate::evaluate(&plan.all_checks, &records)),
            Err(error) => problems.push(Trouble::of(&error).message),
        }
    }
    report.problems = problems;
    Ok(report)
}

/// One line for a check that ran out of memory: the limit, what needed more, and the least
/// limit that would have granted that request (rounded up to a size one can type).
fn memory_message(shortfall: &Shortfall) -> String {
    let mib = |bytes: usize| bytes.div_ceil(1 << 20);
    let suggested = mib(shortfall.at_least.max(shortfall.limit + 1)).next_power_of_two();
    format!(
        "out of memory under the {} MiB memory limit: {} could not get {} MiB more; \
         that needed a limit of at least {} MiB: try --memory-limit {suggested}MiB",
        mib(shortfall.limit),
        shortfall.consumer,
        mib(shortfall.requested),
        mib(shortfall.at_least),
    )
}

enum Outcome {
    Compared(Box<Compared>),
    NotReady(NotReady),
}

async fn run_check(
    engine: &Engine,
    catalog: &Catalog,
    check: &CheckSpec,
    plan: &Plan,
    progress: Option<&Arc<dyn diff::Progress>>,
) -> Result<Outcome> {
    let in_process;
    let engine = if check.embedded && engine.remote.is_some() {
        in_process = engine.embedded();
        &in_process
    } else {
        engine
    };
    let batch = engine
        .plan_side(check, Side::Batch, &plan.params, catalog)
        .await?;
    let stream = engine
        .plan_side(check, Side::Stream, &plan.params, catalog)
        .await?;
    let stream_tables = scanned_tables(&stream);
    if let Some(why) = readiness::check(
        engine,
        catalog,
        check,
        &plan.tables,
        &stream_tables,
        &plan.params,
    )
    .await?
    {
        return Ok(Outcome::NotReady(why));
    }
    let nondeterministic = lint::nondeterminism(&batch, &check.key, &check.allow_nondeterministic);
    let mut changelog = Vec::new();
    for (side, side_plan) in [(Side::Batch, &batch), (Side::Stream, &stream)] {
        // A view may already be inlined: its raw changes name it then.
        let scanned = scanned_tables(side_plan);
        for table in &plan.tables {
            let read = scanned.contains(&table.name)
                || scanned.contains(&crate::changelog::raw_name(&table.name));
            if let (true, Some(spec)) = (read, table.side(side).changelog.as_ref()) {
                if engine.remote.is_some() {
                    bail!(
                        "table '{}' ({} side) is a change log, which dualrun compacts in-process: set engine = \"embedded\" on check '{}'",
                        table.name,
                        side.name(),
                        check.name
                    );
                }
                changelog
                    .push(crate::changelog::stats(&engine.ctx, side, &table.name, spec).await?);
            }
        }
    }
    let diff = diff::run(engine, catalog, check, batch.clone(), stream, progress).await?;
    let control = if check.control > 0 {
        Some(control_runs(engine, catalog, check, &batch).await?)
    } else {
        None
    };
    Ok(Outcome::Compared(Box::new(Compared {
        diff,
        nondeterministic,
        control,
        changelog,
    })))
}

/// Runs the batch side's query again in `check.control` other physical layouts and diffs each
/// answer against the query's own in the usual layout: the same input, so any difference is
/// the query's nondeterminism, not the stream's.
async fn control_runs(
    engine: &Engine,
    catalog: &Catalog,
    check: &CheckSpec,
    batch: &LogicalPlan,
) -> Result<ControlReport> {
    let reference = engine.embedded();
    let mut runs = Vec::new();
    for run in 1..=check.control {
        let (layout_engine, layout) = reference.control_layout(run);
        let (control, _file) = layout_engine
            .materialize(batch.clone())
            .await
            .with_context(|| format!("control run {run} ({layout})"))?;
        let diff = diff::run(&reference, catalog, check, batch.clone(), control, None)
            .await
            .with_context(|| format!("control run {run} ({layout})"))?;
        runs.push((layout, diff));
    }
    Ok(verdict::control_report(runs))
}

/// A diff's progress drawn on the terminal.
struct TerminalProgress(indicatif::ProgressBar);

impl diff::Progress for TerminalProgress {
    fn advance(&self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }

    fn stage(&self, text: String) {
        self.0.set_message(text);
    }
}

/// Progress on stderr while a check runs: bytes read of the files to read, with an ETA. Only on
/// a terminal, so cron logs stay clean.
fn spinner(check: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {elapsed} {bytes}/{total_bytes} [{wide_bar}] eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("check {check}"));
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// Width for text reports: the terminal's own (asked of stdout, else stderr, so `| less`
/// keeps it), else COLUMNS, else 100.
fn terminal_width() -> usize {
    let asked = terminal_size::terminal_size()
        .or_else(|| terminal_size::terminal_size_of(std::io::stderr()))
        .map(|(terminal_size::Width(w), _)| usize::from(w))
        .filter(|w| *w > 0);
    asked
        .or_else(|| std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()))
        .unwrap_or(100)
}

/// Writes the report where the flags say and returns how the run ends.
pub fn emit(report: &RunReport, args: &ReportArgs) -> Result<Exit> {
    let to_terminal = args.output.is_none() && std::io::stdout().is_terminal();
    let color = to_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let width = terminal_width();
    let style = TextStyle {
        color,
        width,
        verbose: args.verbose,
    };
    let text = report.render(args.format, style);
    write_output(&text, args.output.as_deref())?;
    for problem in &report.problems {
        eprintln!("dualrun: error: {problem}");
    }
    let exit = Exit::of(report.status);
    Ok(if exit == Exit::Match && !report.problems.is_empty() {
        Exit::Trouble
    } else {
        exit
    })
}

pub fn write_output(text: &str, path: Option<&Path>) -> Result<()> {
    match path {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            match stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush())
            {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.map_err(|e| anyhow!("cannot write the report: {e}")),
            }
        }
    }
}

/// Sends the run's metrics to the textfile and the Pushgateway the plan names. Both are tried;
/// the first failure is returned after the other was attempted.
pub async fn publish_metrics(
    report: &RunReport,
    metrics: &crate::config::MetricsSpec,
) -> Result<()> {
    let textfile = match &metrics.textfile {
        Some(path) => crate::metrics::write_textfile(path, report),
        None => Ok(()),
    };
    let pushed = match &metrics.pushgateway {
        Some(gateway) => gateway.push(report).await,
        None => Ok(()),
    };
    textfile.and(pushed)
}

/// A report for a run that failed before any check could run (bad config, bad flags), so
/// `--format json` consumers still get a document with status "error".
pub fn error_report(check_names: &[String], message: &str) -> RunReport {
    let checks = check_names
        .iter()
        .map(|name| CheckReport::from_error(name, "", &[], message.to_string(), 0.0))
        .collect();
    let mut report = RunReport::new(Default::default(), checks);
    report.status = CheckStatus::Error;
    report.error = Some(message.to_string());
    report
}

/// `dualrun validate`: plan each check on both sides and compare the result schemas.
pub async fn validate(plan: &Plan) -> Result<Exit> {
    let engine = Engine::new(&plan.engine).await?;
    let catalog = catalog::register_tables(&engine.ctx, &plan.tables, &plan.engine.store).await?;
    let mut out = String::new();
    let mut worst = CheckStatus::Match;
    for check in &plan.checks {
        let planned = async {
            let batch = engine
                .plan_side(check, Side::Batch, &plan.params, &catalog)
                .await?;
            let stream = engine
                .plan_side(check, Side::Stream, &plan.params, &catalog)
                .await?;
            if engine.remote.is_some() && !check.embedded {
                crate::distributed::ensure_distributable(&check.name, &batch, &stream)?;
            }
            let hazards = lint::nondeterminism(&batch, &check.key, &check.allow_nondeterministic);
            Ok::<_, anyhow::Error>((
                diff::align::align(check, batch.schema(), stream.schema())?,
                hazards,
            ))
        }
        .await;
        let status = match planned {
            Err(error) => {
                let _ = writeln!(
                    out,
                    "ERROR    {}: {}",
                    check.name,
                    Trouble::of(&error).message
                );
                CheckStatus::Error
            }
            Ok((alignment, hazards)) => {
                let schema = &alignment.schema;
                let status = if schema.diverges() {
                    CheckStatus::Diverged
                } else {
                    CheckStatus::Match
                };
                let _ = writeln!(
                    out,
                    "{}  {}: {} key + {} value columns",
                    if schema.diverges() {
                        "SCHEMA "
                    } else {
                        "OK     "
                    },
                    check.name,
                    alignment.keys.len(),
                    alignment.values.len()
                );
                for c in &schema.only_in_batch {
                    let _ = writeln!(out, "         only in batch: {c}");
                }
                for c in &schema.only_in_stream {
                    let _ = writeln!(out, "         only in stream: {c}");
                }
                for t in &schema.type_changes {
                    let _ = writeln!(
                        out,
                        "         {} changed type: {} → {}",
                        t.column, t.batch, t.stream
                    );
                }
                for hazard in &hazards {
                    let _ = writeln!(
                        out,
                        "         warning: nondeterministic ({}): {}: {}",
                        hazard.kind.name(),
                        hazard.expression,
                        hazard.why
                    );
                }
                status
            }
        };
        worst = verdict::run_status([worst, status]);
    }
    write_output(&out, None)?;
    Ok(Exit::of(worst))
}

/// The plan's run history (optionally of one check), oldest first.
async fn read_history(plan: &Plan, check: Option<&str>) -> Result<Vec<RunRecord>> {
    let engine = Engine::new(&plan.engine).await?;
    let location = plan
        .history
        .as_deref()
        .ok_or_else(|| anyhow!("no history location"))?;
    History::open(&engine.ctx, location, &plan.engine.store)?
        .read(&engine.ctx, check)
        .await
}

/// `dualrun history`: the run records, oldest first.
pub async fn show_history(plan: &Plan, check: Option<&str>, format: OutputFormat) -> Result<Exit> {
    let records = read_history(plan, check).await?;
    if let Some(wanted) = check
        && records.is_empty()
        && !plan.all_checks.iter().any(|c| c.name == wanted)
    {
        let names: Vec<&str> = plan.all_checks.iter().map(|c| c.name.as_str()).collect();
        bail!(
            "--check '{wanted}' is not in the config and has no history records (checks: {})",
            names.join(", ")
        );
    }
    let text = match format {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&records)?),
        OutputFormat::Text | OutputFormat::Markdown => {
            let mut table = comfy_table::Table::new();
            let preset = if format == OutputFormat::Markdown {
                comfy_table::presets::ASCII_MARKDOWN
            } else {
                comfy_table::presets::UTF8_FULL_CONDENSED
            };
            table.load_preset(preset).set_header(vec![
                "started_at",
                "check",
                "params",
                "status",
                "batch rows",
                "stream rows",
                "divergent",
                "ratio",
            ]);
            for r in &records {
                // A run without a verdict has no figures: a dash, never zeros that read as some.
                let figures = matches!(
                    r.status,
                    CheckStatus::Match
                        | CheckStatus::Diverged
                        | CheckStatus::Empty
                        | CheckStatus::Unstable
                );
                let figure = |text: String| if figures { text } else { "—".to_string() };
                table.add_row(vec![
                    r.started_at.clone(),
                    r.check_name.clone(),
                    r.params.clone(),
                    r.status.name().to_string(),
                    figure(r.rows_batch.to_string()),
                    figure(r.rows_stream.to_string()),
                    figure((r.missing_in_stream + r.extra_in_stream + r.mismatched).to_string()),
                    figure(format!("{:.6}", r.divergence_ratio)),
                ]);
            }
            format!(
                "{table}\n{}\n",
                crate::words::plural(records.len() as u64, "record", "records")
            )
        }
    };
    write_output(&text, None)?;
    Ok(Exit::Match)
}

/// `dualrun gate`: exit 0 when batch removal is ready, 1 when not.
pub async fn show_gate(plan: &Plan, format: OutputFormat, output: Option<&Path>) -> Result<Exit> {
    let records = read_history(plan, None).await?;
    let gate = gate::evaluate(&plan.all_checks, &records);
    let width = terminal_width();
    let text = match format {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&gate)?),
        OutputFormat::Markdown => gate::render_markdown(&gate),
        OutputFormat::Text => gate::render_text(&gate, width),
    };
    write_output(&text, output)?;
    Ok(if gate.ready {
        Exit::Match
    } else {
        Exit::Diverged
    })
}

/// How long a check may run on a Ballista cluster when it sets no timeout of its own.
pub const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

pub const STARTER_CONFIG: &str = include_str!("starter.toml");

/// `dualrun init`: the starter config, to a new file (`-`: stdout).
pub fn init(output: &Path) -> Result<()> {
    match output {
        path if path == Path::new("-") => write_output(STARTER_CONFIG, None),
        path => {
            if path.exists() {
                bail!(
                    "{} exists already; dualrun init does not overwrite",
                    path.display()
                );
            }
            std::fs::write(path, STARTER_CONFIG)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote {}; edit the tables and checks, then run: dualrun validate --config {}",
                path.display(),
                path.display()
            );
            Ok(())
        }
    }
}

/// The format flag decides whether a failure before the checks still yields a JSON document.
pub fn report_failure(
    format: OutputFormat,
    output: Option<&Path>,
    check_names: &[String],
    error: &anyhow::Error,
) -> Exit {
    let message = Trouble::of(error).message;
    eprintln!("dualrun: error: {message}");
    print_error_report(format, output, check_names, &message);
    Exit::Trouble
}

/// The JSON error report, when JSON was asked for: consumers get a document with status
/// "error" whatever went wrong (a panic included).
pub fn print_error_report(
    format: OutputFormat,
    output: Option<&Path>,
    check_names: &[String],
    message: &str,
) {
    if format == OutputFormat::Json {
        let report = error_report(check_names, &crate::redact::scrub(message));
        let _ = write_output(&report.render(format, TextStyle::PLAIN), output);
    }
}
