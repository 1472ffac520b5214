//! dualrun: run identical SQL on the batch and the stream tables of a migration and prove the
//! answers are the same. This file only sets up logging and the runtime, runs the command and
//! prints a failure once; `app` does the work and `verdict::Exit` decides the exit code.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use dualrun::cli::{Cli, Command};
use dualrun::config::{CompareInput, Plan, RunFlags};
use dualrun::trouble::Trouble;
use dualrun::verdict::Exit;
use dualrun::{app, cli, config, serve};

/// What the panic hook saw, for the JSON error report printed after the unwind.
static PANIC_MESSAGE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Where a report goes, kept aside so a panic still yields the report the flags asked for.
    let report_target = match &cli.command {
        Command::Compare(args) => Some((
            args.report.format,
            args.report.output.clone(),
            vec![args.name.clone()],
        )),
        Command::Run(args) => Some((
            args.report.format,
            args.report.output.clone(),
            args.checks.clone(),
        )),
        _ => None,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // A panic is a dualrun bug, never a verdict: say so plainly and exit 2.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("dualrun: internal error (please report it): {info}");
        if let Ok(mut slot) = PANIC_MESSAGE.lock() {
            slot.get_or_insert_with(|| format!("internal error (please report it): {info}"));
        }
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dualrun: error: cannot start the runtime: {e}");
            return ExitCode::from(Exit::Trouble.code());
        }
    };
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // `serve` shuts down gracefully on its own signals; every other command stops at once.
        if matches!(cli.command, Command::Serve(_)) {
            return runtime.block_on(dispatch(cli));
        }
        runtime.block_on(async {
            tokio::select! {
                code = dispatch(cli) => code,
                // Dropping the running command cancels its queries and removes spill files;
                // only checks that finished have history records.
                _ = interrupted() => {
                    eprintln!("dualrun: interrupted: stopped before a verdict; nothing was recorded for unfinished checks");
                    Exit::Interrupted
                }
            }
        })
    }))
    .unwrap_or_else(|_| {
        let message = PANIC_MESSAGE
            .lock()
            .ok()
            .and_then(|mut m| m.take())
            .unwrap_or_else(|| "internal error (please report it)".to_string());
        if let Some((format, output, names)) = &report_target
            && *format == cli::OutputFormat::Json
        {
            app::print_error_report(*format, output.as_deref(), names, &message);
        }
        Exit::Trouble
    });
    ExitCode::from(code.code())
}

async fn interrupted() {
    let interrupt = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {},
                _ = terminate.recv() => {},
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
}

async fn dispatch(cli: Cli) -> Exit {
    // Fault injection for the tests of the panic path (debug builds only).
    #[cfg(debug_assertions)]
    if std::env::var_os("DUALRUN_TEST_PANIC").is_some() {
        panic!("injected by DUALRUN_TEST_PANIC");
    }
    let outcome = match cli.command {
        Command::Compare(args) => {
            let plan = Plan::from_compare(CompareInput {
                batch: &args.batch,
                stream: &args.stream,
                input_formats: &args.input_formats,
                csv_headers: &args.csv_headers,
                sql: args.sql.as_deref(),
                query: args.query.as_deref(),
                key: &args.key,
                tolerances: &args.tolerances,
                ignore: &args.ignore,
                sample: args.sample,
                name: &args.name,
                params: &args.report.params,
                memory_limit: args.report.memory_limit.as_deref(),
                engine: args.report.engine.as_deref(),
                metrics_textfile: args.metrics.metrics_textfile.as_deref(),
                pushgateway: args.metrics.pushgateway.as_deref(),
                time_column: args.time_column.as_deref(),
                window_column: args.window_column.as_deref(),
                timeout: args.timeout.as_deref(),
                redact: &args.redact,
                min_rows: Some(args.min_rows),
                allow_empty: args.allow_empty,
                allow_nondeterministic: &args.allow_nondeterministic,
                control: args.control,
            });
            let names = [args.name.clone()];
            return run_and_emit(plan, &args.report, &names).await;
        }
        Command::Run(args) => {
            let plan = Plan::from_config_file(
                &args.config,
                &RunFlags {
                    checks: &args.checks,
                    params: &args.report.params,
                    memory_limit: args.report.memory_limit.as_deref(),
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
            return run_and_emit(plan, &args.report, &args.checks).await;
        }
        Command::Validate(args) => {
            let flags = RunFlags {
                params: &args.params,
                ..Default::default()
            };
            match Plan::from_config_file(&args.config, &flags) {
                Ok(plan) => app::validate(&plan).await,
                Err(e) => Err(e),
            }
        }
        Command::Serve(args) => serve::serve(args).await,
        Command::History(args) => {
            match Plan::from_config_file(&args.config, &RunFlags::default()) {
                Ok(plan) => app::show_history(&plan, args.check.as_deref(), args.format).await,
                Err(e) => Err(e),
            }
        }
        Command::Gate(args) => match Plan::from_config_file(&args.config, &RunFlags::default()) {
            Ok(plan) => app::show_gate(&plan, args.format, args.output.as_deref()).await,
            Err(e) => Err(e),
        },
        Command::Init(args) => app::init(&args.output).map(|()| Exit::Match),
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
        eprintln!("dualrun: error: {}", Trouble::of(&error).message);
        Exit::Trouble
    })
}

async fn run_and_emit(
    plan: anyhow::Result<Plan>,
    args: &cli::ReportArgs,
    names: &[String],
) -> Exit {
    let mut metrics = config::MetricsSpec::default();
    let outcome = match plan {
        Ok(plan) => {
            metrics = plan.metrics.clone();
            app::run_plan(&plan).await
        }
        Err(e) => Err(e),
    };
    let emitted = match outcome {
        Ok(report) => app::emit(&report, args).map(|exit| (report, exit)),
        Err(e) => Err(e),
    };
    match emitted {
        // The report is out before metrics are published: a failed push never hides it.
        Ok((report, exit)) => match app::publish_metrics(&report, &metrics).await {
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
        Err(error) => app::report_failure(args.format, args.output.as_deref(), names, &error),
    }
}
