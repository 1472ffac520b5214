//! `dualrun run` (the nightly job over a config) and the heart of `compare` too: every check
//! of a plan through catalog → engine → diff → verdict, isolated so one failing check becomes
//! an error entry while the others still run; then the history record and the gate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use datafusion::logical_expr::LogicalPlan;

use crate::cli::{ReportArgs, RunArgs};
use crate::config::{CheckSpec, MetricsSpec, Plan, RunFlags, Side};
use crate::diff;
use crate::engine::{Engine, Shortfall, lint, scanned_tables};
use crate::error::{Cause, Trouble};
use crate::gate;
use crate::history::{self, History, RunRecord};
use crate::report::RunReport;
use crate::sources::{self, Catalog};
use crate::terminal::{TerminalProgress, spinner};
use crate::verdict::readiness::{self, NotReady};
use crate::verdict::{self, CheckReport, Compared, ControlReport, Exit};

use super::{emit, publish_metrics, report_failure};

pub async fn run(args: RunArgs) -> Exit {
    let plan = Plan::from_config_file(
        &args.config,
        &RunFlags {
            checks: &args.checks,
            params: &args.report.params,
            memory_limit: args.report.memory_limit,
            engine: args.report.engine.as_deref(),
            metrics_textfile: args.metrics.metrics_textfile.as_deref(),
            pushgateway: args.metrics.pushgateway.as_deref(),
        },
    )
    .map(|mut plan| {
        if args.no_history {
            plan.history = None;
        }
        plan
    });
    run_and_emit(plan, &args.report, &args.checks).await
}

/// Runs a plan, writes its report, then publishes its metrics: the report is out before
/// metrics are pushed, so a failed push never hides it.
pub(super) async fn run_and_emit(plan: Result<Plan>, args: &ReportArgs, names: &[String]) -> Exit {
    let mut metrics = MetricsSpec::default();
    let outcome = match plan {
        Ok(plan) => {
            metrics = plan.metrics.clone();
            run_plan(&plan).await
        }
        Err(e) => Err(e),
    };
    let emitted = match outcome {
        Ok(report) => emit(&report, args).map(|exit| (report, exit)),
        Err(e) => Err(e),
    };
    match emitted {
        Ok((report, exit)) => match publish_metrics(&report, &metrics).await {
            Ok(()) => exit,
            Err(error) => {
                eprintln!("dualrun: error: {}", Trouble::of(&error).message);
                if exit == Exit::Match {
                    Exit::Trouble
                } else {
                    exit
                }
            }
        },
        Err(error) => report_failure(args.format, args.output.as_deref(), names, &error),
    }
}

/// Runs every check of the plan and gathers the report; with a history, appends one record per
/// check and evaluates the migration gate afterwards.
pub async fn run_plan(plan: &Plan) -> Result<RunReport> {
    let (engine, catalog) = super::open(plan).await?;
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
            Ok(Outcome::Compared(compared)) => CheckReport::from_diff(check, *compared, seconds),
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
                || scanned.contains(&sources::changelog::raw_name(&table.name));
            if let (true, Some(spec)) = (read, table.side(side).changelog.as_ref()) {
                if engine.remote.is_some() {
                    bail!(
                        "table '{}' ({} side) is a change log, which dualrun compacts in-process: set engine = \"embedded\" on check '{}'",
                        table.name,
                        side.name(),
                        check.name
                    );
                }
                let started = std::time::Instant::now();
                changelog
                    .push(sources::changelog::stats(&engine.ctx, side, &table.name, spec).await?);
                tracing::debug!(
                    "check '{}': change log statistics of '{}' ({} side) in {:.2?}",
                    check.name,
                    table.name,
                    side.name(),
                    started.elapsed()
                );
            }
        }
    }
    let mut diff = diff::run(engine, catalog, check, batch.clone(), stream, progress).await?;
    if let Some(finding) = missed_deletes(engine, check, plan, &changelog, &diff).await? {
        diff.findings.push(finding);
    }
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
        let started = std::time::Instant::now();
        let (control, _file) = layout_engine
            .materialize(batch.clone())
            .await
            .with_context(|| format!("control run {run} ({layout})"))?;
        let materialized = started.elapsed();
        let diff = diff::run(&reference, catalog, check, batch.clone(), control, None)
            .await
            .with_context(|| format!("control run {run} ({layout})"))?;
        tracing::debug!(
            "check '{}': control run {run} ({layout}) ran in {materialized:.2?}, its diff in {:.2?}",
            check.name,
            started.elapsed() - materialized
        );
        runs.push((layout, diff));
    }
    Ok(verdict::control_report(runs))
}

/// How long a check may run on a Ballista cluster when it sets no timeout of its own.
pub const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// The finding for rows extra in a stream that is a change log: when the check pairs rows by the
/// change log's own key and none of the extra keys (those in the samples: every one when there
/// are no more than the sample size) has a delete anywhere in the log, while the batch snapshot
/// no longer has them, the stream pipeline missed their deletes.
async fn missed_deletes(
    engine: &Engine,
    check: &CheckSpec,
    plan: &Plan,
    changelog: &[sources::changelog::ChangelogStats],
    diff: &diff::DiffResult,
) -> Result<Option<diff::Finding>> {
    let extra = diff.counts.extra_in_stream;
    if extra == 0 || diff.paired_by_occurrence {
        return Ok(None);
    }
    for stats in changelog.iter().filter(|s| s.side == Side::Stream.name()) {
        let Some(spec) = plan
            .tables
            .iter()
            .find(|t| t.name == stats.table)
            .and_then(|t| t.stream.changelog.as_ref())
        else {
            continue;
        };
        if spec.key != check.key {
            continue;
        }
        let literal = |value: &serde_json::Value| match value {
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::String(s) => Some(format!("'{}'", s.replace('\'', "''"))),
            _ => None,
        };
        let keys: Option<Vec<Vec<String>>> = diff
            .samples
            .extra_in_stream
            .iter()
            .map(|row| {
                spec.key
                    .iter()
                    .map(|k| row.key.get(k).and_then(literal))
                    .collect()
            })
            .collect();
        let Some(keys) = keys.filter(|k| !k.is_empty()) else {
            continue;
        };
        let deleted = sources::changelog::keys_with_deletes(
            &engine.ctx,
            Side::Stream,
            &stats.table,
            spec,
            &keys,
        )
        .await?;
        if deleted > 0 {
            continue;
        }
        let which = if keys.len() as u64 == extra {
            format!("all {extra} rows extra in stream are")
        } else {
            format!(
                "the {} sampled of {extra} rows extra in stream are",
                keys.len()
            )
        };
        return Ok(Some(diff::Finding {
            kind: diff::FindingKind::MissedDeletes,
            columns: spec.key.clone(),
            rows: extra,
            evidence: format!(
                "{which} keys the change log of '{}' never deletes, while the batch snapshot no longer has them: deletes the stream pipeline missed (dropped tombstones, or deletes not captured)",
                stats.table
            ),
            details: serde_json::json!({"table": stats.table, "keys_checked": keys.len()}),
        }));
    }
    Ok(None)
}
