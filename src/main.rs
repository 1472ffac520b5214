//! dualrun: run identical SQL on the batch and the stream tables of a migration and prove the
//! answers are the same. This file only sets up logging and the runtime, runs the command and
//! prints a failure once; `commands` does the work and `verdict::Exit` decides the exit code.

use std::process::ExitCode;

use clap::Parser;

use dualrun::cli::{Cli, Command};
use dualrun::commands;
use dualrun::report::OutputFormat;
use dualrun::verdict::Exit;

/// Without RUST_LOG: dualrun's own warnings, and only errors from the libraries (a database
/// driver's chatter is not the user's business; `RUST_LOG=debug` shows everything).
const DEFAULT_LOG: &str = "error,dualrun=warn";

/// What the panic hook saw, for the JSON error report printed after the unwind.
static PANIC_MESSAGE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .init();
    // A panic is a dualrun bug, never a verdict: say so plainly and exit 2.
    std::panic::set_hook(Box::new(|info| {
        // A reader's panic on a damaged file is caught and reported as an error naming it.
        if dualrun::sources::guard::panic_is_guarded() {
            return;
        }
        eprintln!("dualrun: internal error (please report it): {info}");
        if let Ok(mut slot) = PANIC_MESSAGE.lock() {
            slot.get_or_insert_with(|| format!("internal error (please report it): {info}"));
        }
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
    // Bucketed diffs keep hundreds of spill files open at once.
    dualrun::diff::partition::raise_open_file_limit();
    dualrun::diff::partition::limit_malloc_arenas();
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
            && *format == OutputFormat::Json
        {
            commands::print_error_report(*format, output.as_deref(), names, &message);
        }
        Exit::Trouble
    });
    ExitCode::from(code.code())
}

/// A flag clap could not parse: its own message and exit code 2, and, when the command line asked
/// for JSON, the JSON error report too, so a consumer of `--format json` always gets a document.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let args: Vec<String> = std::env::args().collect();
    let wants_json = args
        .windows(2)
        .any(|pair| pair[0] == "--format" && pair[1] == "json")
        || args.iter().any(|a| a == "--format=json");
    let reports = args.iter().any(|a| a == "compare" || a == "run");
    let _ = error.print();
    if wants_json && reports {
        let text = error.to_string();
        let message = text
            .lines()
            .next()
            .unwrap_or("bad command line")
            .trim_start_matches("error: ");
        commands::print_error_report(OutputFormat::Json, None, &[], message);
    }
    ExitCode::from(Exit::Trouble.code())
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
    commands::execute(cli.command).await
}
