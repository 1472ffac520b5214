//! Metrics against the real Prometheus tools: promtool lints the exposition and unit-tests the
//! alert rules, a real Pushgateway receives pushes, and `dualrun serve` is scraped over HTTP.
//! `make test` installs promtool and prometheus-pushgateway (Debian packages) when missing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Fmt, Process, Workspace, free_port, http, wait_until_up};

/// `name{labels} value` lines of an exposition, keyed by the series text.
fn series(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(s, v)| (s.to_string(), v.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

/// The value of the series whose name matches and whose labels include all of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series(text).into_iter().find_map(|(s, v)| {
        let (metric, rest) = s.split_once('{').unwrap_or((s.as_str(), ""));
        let matches = metric == name
            && labels
                .iter()
                .all(|(k, val)| rest.contains(&format!("{k}=\"{val}\"")));
        matches.then_some(v)
    })
}

/// After a run in which `users` failed: no figures for it, its last success and the run's
/// unchanged, while `orders` (which reached a verdict) moved on.
fn assert_kept_through_failure(text: &str, users_success: f64, run_success: f64) {
    let last = |labels: &[(&str, &str)]| {
        value(text, "dualrun_check_last_success_timestamp_seconds", labels)
    };
    assert_eq!(
        value(text, "dualrun_check_rows", &[("check", "users")]),
        None,
        "no stale figures for a failed check"
    );
    assert_eq!(last(&[("check", "users")]), Some(users_success));
    assert_eq!(
        value(text, "dualrun_last_success_timestamp_seconds", &[]),
        Some(run_success)
    );
    assert!(
        last(&[("check", "orders")]).unwrap() > users_success,
        "a check with a verdict moves on"
    );
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.table(
        "batch/orders",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 10.0), (2, 20.0), (3, 30.0)) AS t(id, amount)",
    );
    ws.table(
        "stream/orders",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 10.0), (2, 21.0), (4, 40.0)) AS t(id, amount)",
    );
    ws.table(
        "batch/users",
        Fmt::Csv,
        "SELECT * FROM (VALUES (1, 'ann')) AS t(id, name)",
    );
    ws.table(
        "stream/users",
        Fmt::Csv,
        "SELECT * FROM (VALUES (1, 'ann')) AS t(id, name)",
    );
    ws.write(
        "dualrun.toml",
        r#"
[tables.orders]
batch = "batch/orders/"
stream = "stream/orders/"

[tables.users]
batch = "batch/users/"
stream = "stream/users/"

[[checks]]
name = "orders"
sql = "SELECT * FROM orders"
key = ["id"]

[[checks]]
name = "users"
sql = "SELECT * FROM users"
key = ["id"]
"#,
    );
    ws
}

/// Breaks the `users` check by moving its stream table away.
fn break_users(ws: &Workspace) {
    std::fs::rename(ws.path("stream/users"), ws.path("stream/users.gone")).unwrap();
}

fn promtool(args: &[&str], stdin_file: Option<&Path>, dir: &Path) -> (i32, String) {
    let mut command = Command::new("promtool");
    command.args(args).current_dir(dir);
    if let Some(file) = stdin_file {
        command.stdin(std::fs::File::open(file).unwrap());
    }
    let output = command
        .output()
        .expect("promtool is installed (make test installs the Debian package prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn textfile_is_lint_free_and_carries_last_success_over_failures() {
    let ws = workspace();
    let run = ws.run(&[
        "run",
        "--config",
        "dualrun.toml",
        "--metrics-textfile",
        "dualrun.prom",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let file = ws.path("dualrun.prom");
    let (code, lint) = promtool(&["check", "metrics"], Some(&file), ws.dir.path());
    assert_eq!(
        (code, lint.as_str()),
        (0, ""),
        "promtool check metrics must find nothing"
    );

    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        value(
            &text,
            "dualrun_check_rows",
            &[("check", "orders"), ("side", "batch")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "dualrun_check_divergent_rows",
            &[("check", "orders"), ("kind", "mismatched")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "dualrun_check_divergent_rows",
            &[("check", "orders"), ("kind", "missing_in_stream")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "dualrun_check_divergent_rows",
            &[("check", "orders"), ("kind", "extra_in_stream")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "dualrun_check_divergence_ratio",
            &[("check", "orders")]
        ),
        // 1 mismatched pair (2 rows), 1 missing, 1 extra, of 3 + 3 rows.
        Some(4.0 / 6.0)
    );
    assert_eq!(
        value(
            &text,
            "dualrun_check_column_mismatched_rows",
            &[("check", "orders"), ("column", "amount")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "dualrun_check_passed", &[("check", "orders")]),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "dualrun_check_passed", &[("check", "users")]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "dualrun_check_up", &[("check", "users")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "dualrun_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    let users_success = value(
        &text,
        "dualrun_check_last_success_timestamp_seconds",
        &[("check", "users")],
    )
    .unwrap();
    let run_success = value(&text, "dualrun_last_success_timestamp_seconds", &[]).unwrap();
    assert!(
        users_success > 1.7e9 && run_success == users_success,
        "{users_success} {run_success}"
    );

    std::thread::sleep(Duration::from_millis(1100));
    break_users(&ws);
    let run = ws.run(&[
        "run",
        "--config",
        "dualrun.toml",
        "--metrics-textfile",
        "dualrun.prom",
    ]);
    assert_eq!(run.code, 2);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        value(&text, "dualrun_check_up", &[("check", "users")]),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "dualrun_check_passed", &[("check", "users")]),
        Some(0.0)
    );
    // No figures that could be read as a verdict for the failed check.
    assert_kept_through_failure(&text, users_success, run_success);
    // No temporary file is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(ws.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let (code, text) = promtool(&["check", "rules", "dualrun-alerts.yml"], None, &dir);
    assert_eq!(code, 0, "{text}");
    let (code, text) = promtool(&["test", "rules", "dualrun-alerts.test.yml"], None, &dir);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

fn start_pushgateway() -> (Process, String) {
    let port = free_port();
    let child = Command::new("prometheus-pushgateway")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-pushgateway is installed (make test installs the Debian package)");
    let url = format!("http://127.0.0.1:{port}");
    let process = Process(child);
    wait_until_up(&format!("{url}/-/ready"));
    (process, url)
}

#[test]
fn pushgateway_receives_runs_and_keeps_last_success_through_a_failure() {
    let (_gateway, url) = start_pushgateway();
    let ws = workspace();
    let run = ws.run(&["run", "--config", "dualrun.toml", "--pushgateway", &url]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let (_, text) = http("GET", &format!("{url}/metrics"));
    assert_eq!(
        value(
            &text,
            "dualrun_check_divergent_rows",
            &[
                ("check", "orders"),
                ("kind", "mismatched"),
                ("job", "dualrun")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "dualrun_check_up",
            &[("check", "users"), ("job", "dualrun")]
        ),
        Some(1.0)
    );
    let users_success = value(
        &text,
        "dualrun_check_last_success_timestamp_seconds",
        &[("check", "users")],
    )
    .unwrap();
    let run_success = value(
        &text,
        "dualrun_last_success_timestamp_seconds",
        &[("job", "dualrun")],
    )
    .unwrap();
    assert!(users_success > 1.7e9 && run_success > 1.7e9);

    std::thread::sleep(Duration::from_millis(1100));
    break_users(&ws);
    let run = ws.run(&["run", "--config", "dualrun.toml", "--pushgateway", &url]);
    assert_eq!(run.code, 2);
    let (_, text) = http("GET", &format!("{url}/metrics"));
    assert_eq!(
        value(&text, "dualrun_check_up", &[("check", "users")]),
        Some(0.0)
    );
    assert_kept_through_failure(&text, users_success, run_success);
}

#[test]
fn failed_push_is_reported_without_hiding_the_report() {
    let ws = workspace();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let run = ws.run(&[
        "run",
        "--config",
        "dualrun.toml",
        "--check",
        "users",
        "--pushgateway",
        &dead,
        "--format",
        "json",
    ]);
    assert_eq!(
        run.code, 2,
        "a failed push makes an otherwise clean run exit 2"
    );
    assert_eq!(run.json()["status"], "match", "the report is still printed");
    assert!(run.stderr.contains("Pushgateway"), "{}", run.stderr);
}

#[test]
fn serve_exposes_metrics_and_runs_on_demand() {
    let ws = workspace();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_dualrun"))
        .args([
            "serve",
            "--config",
            "dualrun.toml",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(ws.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Process(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{base}/healthz"));

    let (status, text) = http("GET", &format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert!(text.contains("dualrun_build_info"), "{text}");
    assert_eq!(value(&text, "dualrun_check_up", &[]), None, "no run yet");
    assert_eq!(http("GET", &format!("{base}/report")).0, 404);

    let (status, body) = http("POST", &format!("{base}/run?wait=true"));
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "diverged");

    let (_, text) = http("GET", &format!("{base}/metrics"));
    assert_eq!(
        value(
            &text,
            "dualrun_check_divergent_rows",
            &[("check", "orders"), ("kind", "extra_in_stream")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "dualrun_check_passed", &[("check", "users")]),
        Some(1.0)
    );
    let first = value(
        &text,
        "dualrun_check_last_success_timestamp_seconds",
        &[("check", "users")],
    )
    .unwrap();

    // A failing run in the background: up drops, last success stays.
    break_users(&ws);
    assert_eq!(http("POST", &format!("{base}/run")).0, 202);
    let started = Instant::now();
    loop {
        let (_, text) = http("GET", &format!("{base}/metrics"));
        if value(&text, "dualrun_check_up", &[("check", "users")]) == Some(0.0) {
            assert_eq!(
                value(
                    &text,
                    "dualrun_check_last_success_timestamp_seconds",
                    &[("check", "users")]
                ),
                Some(first)
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the background run did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing else is served: no endpoint takes SQL.
    assert_eq!(http("GET", &format!("{base}/sql?q=select")).0, 404);
}

#[test]
fn serve_binds_loopback_by_default() {
    let help = Command::new(env!("CARGO_BIN_EXE_dualrun"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("[default: 127.0.0.1:9898]"), "{text}");
}
