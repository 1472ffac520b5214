//! One module per subcommand: typed arguments in, an [`Exit`] out. What several share (where a
//! report goes, the JSON error report, publishing metrics, reading the history) is here.

use std::path::Path;

use anyhow::{Result, anyhow};
use clap::CommandFactory;

use crate::cli::{Cli, Command, ReportArgs};
use crate::config::{Plan, RunFlags};
use crate::engine::Engine;
use crate::error::Trouble;
use crate::history::{History, RunRecord};
use crate::report::{OutputFormat, RunReport, TextStyle};
use crate::terminal::{text_style, write_output};
use crate::verdict::{CheckReport, CheckStatus, Exit};

pub(crate) mod board;
mod compare;
mod gate;
mod history;
mod init;
mod run;
pub mod serve;
mod validate;

pub use init::STARTER_CONFIG;
pub use run::{DEFAULT_CLUSTER_TIMEOUT, run_plan};

/// Runs one command to its end; a failure is printed once, here, as one line.
pub async fn execute(command: Command) -> Exit {
    let outcome = match command {
        Command::Compare(args) => return compare::compare(args).await,
        Command::Run(args) => return run::run(args).await,
        Command::Validate(args) => validate::validate(args).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::History(args) => history::history(args).await,
        Command::Gate(args) => gate::gate(args).await,
        Command::Board(args) => board::board(args).await,
        Command::Init(args) => init::init(&args.output).map(|()| Exit::Match),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "dualrun",
                &mut std::io::stdout(),
            );
            Ok(Exit::Match)
        }
    };
    outcome.unwrap_or_else(|error| {
        let trouble = Trouble::of(&error);
        eprintln!("dualrun: error: {}", trouble.message);
        trouble.cause.exit()
    })
}

/// The engine of a plan with its tables registered on both sides, views included.
async fn open(plan: &Plan) -> Result<(Engine, crate::sources::Catalog)> {
    let engine = Engine::new(&plan.engine).await?;
    let mut catalog = crate::sources::register_tables(
        &engine.ctx,
        &plan.tables,
        &plan.raw_tables,
        &plan.engine.store,
        engine.remote.is_some(),
    )
    .await?;
    engine
        .register_views(&plan.tables, &plan.params, &mut catalog)
        .await?;
    Ok((engine, catalog))
}

/// The plan of the config-driven commands that take no flags beyond the config file.
fn plan_of(config: &Path) -> Result<Plan> {
    Plan::from_config_file(config, &RunFlags::default())
}

/// Writes the report where the flags say and returns how the run ends.
pub fn emit(report: &RunReport, args: &ReportArgs) -> Result<Exit> {
    let text = report.render(
        args.format,
        text_style(args.output.as_deref(), args.verbose),
    );
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
        Some(gateway) => crate::metrics::push(gateway, report).await,
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
