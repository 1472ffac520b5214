//! `dualrun serve`: for teams that deploy dualrun as a service rather than a CronJob. It serves
//! `/metrics` (the last run's metrics, last-success times kept in memory) and `/healthz`, and
//! runs the checks on a cron schedule or on `POST /run`. One run at a time; no endpoint takes
//! SQL or any other input that could widen what runs.

use crate::verdict::Exit;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::cli::ServeArgs;
use crate::config::{Plan, RunFlags};
use crate::metrics::{Families, LastSuccess};
use crate::report::RunReport;

struct Shared {
    args: ServeArgs,
    state: Mutex<ServeState>,
    /// Held for the duration of a run, so runs never overlap.
    running: Arc<Mutex<()>>,
}

#[derive(Default)]
struct ServeState {
    last_report: Option<RunReport>,
    last_success: LastSuccess,
    runs: u64,
}

pub async fn serve(args: ServeArgs) -> Result<Exit> {
    // Fail fast on a config that cannot work, rather than at 2 a.m.
    plan(&args).context("the config does not load")?;
    let schedule = match &args.schedule {
        Some(text) => Some(
            croner::Cron::from_str(text)
                .map_err(|e| anyhow!("--schedule '{text}' is not a cron expression: {e}"))?,
        ),
        None => None,
    };
    let address: SocketAddr = args.listen.parse().map_err(|_| {
        anyhow!(
            "--listen '{}' is not an address like 127.0.0.1:9898",
            args.listen
        )
    })?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    eprintln!("dualrun: serving http://{bound}/metrics (POST /run to run now)");
    let shared = Arc::new(Shared {
        args,
        state: Mutex::default(),
        running: Arc::new(Mutex::new(())),
    });

    if let Some(schedule) = schedule {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let now = chrono::Utc::now();
                let Ok(next) = schedule.find_next_occurrence(&now, false) else {
                    tracing::error!("the schedule has no next occurrence; scheduled runs stop");
                    return;
                };
                let wait = (next - now).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                let _guard = shared.running.lock().await;
                run_once(&shared).await;
            }
        });
    }

    let app = Router::new()
        .route("/", get(board_index))
        .route("/index.html", get(board_index))
        .route("/checks/{page}", get(board_check))
        .route("/report.html", get(report_html))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/report", get(report))
        .route("/run", post(run))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the HTTP server stopped")?;
    Ok(Exit::Match)
}

fn plan(args: &ServeArgs) -> Result<Plan> {
    Plan::from_config_file(
        &args.config,
        &RunFlags {
            params: &args.params,
            memory_limit: args.memory_limit,
            ..Default::default()
        },
    )
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or(());
}

/// One run of every check: the config is re-read, the report kept, metrics published.
async fn run_once(shared: &Shared) -> Option<RunReport> {
    let report = match plan(&shared.args) {
        Ok(plan) => match super::run_plan(&plan).await {
            Ok(report) => {
                if let Err(e) = super::publish_metrics(&report, &plan.metrics).await {
                    tracing::error!(
                        "publishing metrics: {}",
                        crate::error::Trouble::of(&e).message
                    );
                }
                report
            }
            Err(e) => super::error_report(&[], &crate::error::Trouble::of(&e).message),
        },
        Err(e) => super::error_report(&[], &crate::error::Trouble::of(&e).message),
    };
    if let Some(error) = &report.error {
        tracing::error!("run failed: {error}");
    }
    let mut state = shared.state.lock().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    state.last_success.advance(&report, now);
    state.runs += 1;
    state.last_report = Some(report.clone());
    Some(report)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.state.lock().await;
    let empty = RunReport::new(Default::default(), Vec::new());
    let report = state.last_report.as_ref().unwrap_or(&empty);
    match crate::metrics::registry(report, &state.last_success, Families::All)
        .and_then(|r| crate::metrics::encode(&r))
    {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}\n", crate::error::Trouble::of(&e).message),
        )
            .into_response(),
    }
}

async fn report(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.state.lock().await;
    match &state.last_report {
        Some(report) => axum::Json(report.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no run yet\n").into_response(),
    }
}

/// The migration board, from the history as it is now.
async fn board_index(State(shared): State<Arc<Shared>>) -> Response {
    board_page(&shared, "index.html").await
}

async fn board_check(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(page): axum::extract::Path<String>,
) -> Response {
    board_page(&shared, &format!("checks/{page}")).await
}

async fn board_page(shared: &Shared, path: &str) -> Response {
    let pages = async {
        let plan = plan(&shared.args)?;
        let records = super::read_history(&plan, None).await?;
        Ok::<_, anyhow::Error>(super::board::pages(&plan, &records, Some("/report.html")))
    }
    .await;
    match pages {
        Ok(pages) => match pages.into_iter().find(|(p, _)| p == path) {
            Some((_, html)) => axum::response::Html(html).into_response(),
            None => (StatusCode::NOT_FOUND, "no such page\n").into_response(),
        },
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}\n", crate::error::Trouble::of(&e).message),
        )
            .into_response(),
    }
}

/// The last run's report as a page.
async fn report_html(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.state.lock().await;
    match &state.last_report {
        Some(report) => axum::response::Html(crate::report::html::report(report)).into_response(),
        None => (StatusCode::NOT_FOUND, "no run yet\n").into_response(),
    }
}

#[derive(Deserialize)]
struct RunQuery {
    #[serde(default)]
    wait: bool,
}

/// `POST /run`: 202 and a background run, or with `?wait=true` the run's JSON report.
/// 409 while another run is going on.
async fn run(State(shared): State<Arc<Shared>>, Query(query): Query<RunQuery>) -> Response {
    let Ok(guard) = shared.running.clone().try_lock_owned() else {
        return (StatusCode::CONFLICT, "a run is already in progress\n").into_response();
    };
    if query.wait {
        let report = run_once(&shared).await;
        drop(guard);
        return match report {
            Some(report) => axum::Json(report).into_response(),
            None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    }
    tokio::spawn(async move {
        run_once(&shared).await;
        drop(guard);
    });
    (StatusCode::ACCEPTED, "run started\n").into_response()
}
