//! The migration board and the HTML report, looked at by a real browser: Debian's Chromium,
//! headless, loads the static board, the board served by `dualrun serve` and the report; the
//! tests read the DOM it built (`--dump-dom`) and keep a screenshot of every page in
//! `target/tmp/screenshots/` (a CI artifact, not compared pixel by pixel). `make test` installs
//! chromium and, in .venv, html5lib for the parser-based validity check.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use dualrun::config::Plan;
use dualrun::history::RunRecord;
use dualrun::verdict::CheckStatus;

use crate::common::{Fmt, Process, Workspace, free_port, http, wait_until_up};

fn chromium(args: &[&str]) -> String {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            // Containers give /dev/shm 64 MiB: Chromium writes to /tmp instead.
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1280,1000",
        ])
        .args(args)
        .output()
        .expect("chromium is installed (make test installs the Debian package)");
    assert!(output.status.success(), "chromium {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The DOM Chromium built from the page, after parsing and layout.
fn dom(url: &str) -> String {
    chromium(&["--dump-dom", url])
}

fn screenshot(url: &str, name: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.png"));
    chromium(&[&format!("--screenshot={}", file.display()), url]);
    assert!(
        std::fs::metadata(&file)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "no screenshot of {url}"
    );
}

/// Elements of the DOM text that carry `attribute="value"`.
fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

/// The `<tr class="analysis" data-check="NAME" …>` row of a check, up to its end.
fn row<'a>(dom: &'a str, check: &str) -> &'a str {
    let start = dom
        .find(&format!("data-check=\"{check}\""))
        .unwrap_or_else(|| panic!("no row for {check}"));
    let end = dom[start..].find("</tr>").unwrap() + start;
    &dom[start..end]
}

const CONFIG: &str = r#"
[gate]
clean_runs = 7

[tables.orders]
batch = "batch/orders/"
stream = "stream/orders/"

[[checks]]
name = "revenue"
sql = "SELECT id, amount FROM orders"
key = ["id"]

[[checks]]
name = "users"
sql = "SELECT id FROM orders"
key = ["id"]

[[checks]]
name = "funnel"
sql = "SELECT count(*) AS n FROM orders"
"#;

/// A history of 14 nights written as the history records of real runs would be: `revenue`
/// clean every night, `users` diverging on night 9 then clean, `funnel` with two nights not
/// ready and one empty.
fn fourteen_nights(ws: &Workspace) -> Plan {
    ws.write("dualrun.toml", CONFIG);
    let plan = Plan::from_config_file(&ws.path("dualrun.toml"), &Default::default()).unwrap();
    let history = ws.path(".dualrun/history");
    std::fs::create_dir_all(&history).unwrap();
    for night in 1..=14u32 {
        for check in &plan.all_checks {
            let status = match (check.name.as_str(), night) {
                ("users", 9) => CheckStatus::Diverged,
                ("funnel", 4 | 5) => CheckStatus::NotReady,
                ("funnel", 6) => CheckStatus::Empty,
                ("users", 2) => CheckStatus::Unstable,
                _ => CheckStatus::Match,
            };
            let diverged = status == CheckStatus::Diverged;
            let date = format!("2026-11-{night:02}");
            let record = RunRecord {
                run_id: format!("sim-{night}"),
                check_name: check.name.clone(),
                params: format!("{{\"run_date\":\"{date}\"}}"),
                run_date: Some(date.clone()),
                started_at: format!("{date}T02:00:00.000000Z"),
                ended_at: format!("{date}T02:01:00.000000Z"),
                status,
                rows_batch: if status == CheckStatus::Empty {
                    0
                } else {
                    1000
                },
                rows_stream: if status == CheckStatus::Empty {
                    0
                } else {
                    1000
                },
                matched: 1000 - 30 * u64::from(diverged),
                mismatched: 30 * u64::from(diverged),
                missing_in_stream: 0,
                extra_in_stream: 0,
                duplicate_keys_batch: 0,
                duplicate_keys_stream: 0,
                divergence_ratio: if diverged { 0.03 } else { 0.0 },
                schema_diverged: false,
                dualrun_version: "0.1.0".into(),
                config_hash: check.fingerprint(),
                error: None,
                columns: if diverged {
                    vec!["amount".into()]
                } else {
                    vec![]
                },
                findings: vec![],
                mark: None,
            };
            let line = serde_json::to_string(&record).unwrap();
            std::fs::write(
                history.join(format!("{night:02}-{}.json", check.name)),
                line + "\n",
            )
            .unwrap();
        }
    }
    plan
}

/// `dualrun gate --mark STEP CHECK` on the workspace's config.
fn mark(ws: &Workspace, step: &str, check: &str) -> crate::common::Run {
    ws.run(&["gate", "--config", "dualrun.toml", "--mark", step, check])
}

fn gate_json(ws: &Workspace) -> serde_json::Value {
    let run = ws.run(&["gate", "--config", "dualrun.toml", "--format", "json"]);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn assert_board(dom: &str, gate: &serde_json::Value) {
    // The headline's numbers are the gate's.
    for (attribute, field) in [
        ("data-proven", "proven"),
        ("data-required", "required"),
        ("data-migrated", "migrated"),
    ] {
        assert!(
            dom.contains(&format!("{attribute}=\"{}\"", gate[field])),
            "{attribute} should be {}",
            gate[field]
        );
    }
    assert!(dom.contains("2 of 3 analyses proven, 1 migrated"), "{dom}");
    // One streak cell per night, coloured by how the gate counted it.
    let revenue = row(dom, "revenue");
    assert!(revenue.contains("data-stage=\"migrated\""), "{revenue}");
    assert_eq!(count(revenue, "data-kind=\"clean\""), 14);
    let users = row(dom, "users");
    assert!(users.contains("data-stage=\"proving\""), "{users}");
    assert!(users.contains("data-streak=\"5\""), "{users}");
    assert_eq!(count(users, "data-kind=\"dirty\""), 1);
    // Night 2 was unstable: grey, like the nights without a verdict.
    assert_eq!(count(users, "data-kind=\"none\""), 1);
    assert_eq!(count(users, "data-kind=\"clean\""), 12);
    let funnel = row(dom, "funnel");
    assert!(funnel.contains("data-stage=\"proven\""), "{funnel}");
    assert_eq!(count(funnel, "data-kind=\"none\""), 3);
    assert_eq!(count(funnel, "data-kind=\"clean\""), 11);
}

#[test]
fn the_board_shows_the_gate_in_a_browser_static_and_served() {
    let ws = Workspace::new();
    fourteen_nights(&ws);
    // The lifecycle step is the team's: refused before proven, recorded once proven.
    let refused = mark(&ws, "migrated", "users");
    crate::common::assert_trouble(&refused, "the check is proving (5 of 7), not proven");
    let marked = mark(&ws, "migrated", "revenue");
    assert_eq!(marked.code, 1, "{}", marked.stderr);
    let gate = gate_json(&ws);
    assert_eq!(gate["checks"][0]["stage"], "migrated", "{gate}");
    assert_eq!(
        (gate["proven"].as_u64(), gate["migrated"].as_u64()),
        (Some(2), Some(1))
    );

    // The static site.
    let built = ws.run(&["board", "--config", "dualrun.toml", "--output", "site"]);
    assert_eq!(built.code, 0, "{}", built.stderr);
    let index = format!("file://{}", ws.path("site/index.html").display());
    // A migrated check was proven first: it counts among the proven, and as migrated.
    assert_board(&dom(&index), &gate);
    screenshot(&index, "board-static");
    let users_page = format!("file://{}", ws.path("site/checks/users.html").display());
    let users = dom(&users_page);
    assert!(users.contains("data-stage=\"proving\""));
    assert_eq!(count(&users, "<tr data-kind="), 14, "one line per night");
    assert!(users.contains("<svg"), "the ratio chart");
    screenshot(&users_page, "board-static-users");
    for check in ["revenue", "funnel"] {
        let page = format!(
            "file://{}",
            ws.path(&format!("site/checks/{check}.html")).display()
        );
        assert!(dom(&page).contains(&format!("<h1>{check} ")));
        screenshot(&page, &format!("board-static-{check}"));
    }

    // The same board from `dualrun serve`, read from the history on each request.
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_dualrun"))
        .args([
            "serve",
            "--config",
            "dualrun.toml",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(ws.path(""))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Process(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{base}/healthz"));
    let served = dom(&format!("{base}/"));
    assert_board(&served, &gate);
    screenshot(&format!("{base}/"), "board-served");
    // Readable on a phone too: the narrow layout keeps the stage and the nights.
    chromium(&[
        "--window-size=390,844",
        &format!(
            "--screenshot={}",
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("screenshots/board-phone.png")
                .display()
        ),
        &format!("{base}/"),
    ]);
    assert!(
        served.contains("href=\"/report.html#check-revenue\""),
        "link to the last report"
    );
    let (status, _) = http("GET", &format!("{base}/checks/funnel.html"));
    assert_eq!(status, 200);
    assert_eq!(http("GET", &format!("{base}/checks/nosuch.html")).0, 404);
    let funnel = dom(&format!("{base}/checks/funnel.html"));
    assert!(funnel.contains("data-stage=\"proven\""), "{funnel}");
    screenshot(&format!("{base}/checks/funnel.html"), "board-served-funnel");
}

fn html5_errors(file: &Path) -> String {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let output = Command::new(python)
        .args([
            "-c",
            "import sys, html5lib\n\
             p = html5lib.HTMLParser(strict=True)\n\
             try:\n    p.parse(open(sys.argv[1], 'rb'))\n\
             except Exception as e:\n    print(e, p.errors[:3])",
        ])
        .arg(file)
        .output()
        .expect("html5lib is installed in .venv (make test installs it)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn html_report_is_valid_shows_every_divergence_and_keeps_masked_values_out() {
    let ws = Workspace::new();
    ws.table(
        "batch/people",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 'alice@example.com', 10.0), (2, 'bob@example.com', 20.0), \
         (3, 'carol@example.com', 30.0), (4, 'dan@example.com', 40.0)) AS t(id, email, amount)",
    );
    ws.table(
        "stream/people",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 'alice@example.com', 10.0), (2, 'robert@example.com', 25.0), \
         (3, 'carol@example.com', 30.0), (5, 'eve@example.com', 50.0)) AS t(id, email, amount)",
    );
    let run = ws.run(&[
        "compare",
        "--batch",
        "people=batch/people/",
        "--stream",
        "people=stream/people/",
        "--sql",
        "SELECT id, email, amount FROM people",
        "--key",
        "id",
        "--redact",
        "email",
        "--format",
        "html",
        "--output",
        "report.html",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let file = ws.path("report.html");
    assert_eq!(
        html5_errors(&file),
        "",
        "the report parses as HTML without errors"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    for email in ["alice", "bob", "robert", "dan", "eve"] {
        assert!(!text.contains(email), "masked value {email} in the report");
    }
    assert!(!text.contains("<script"), "no script");
    assert!(
        !text.contains("http://") && !text.contains("https://"),
        "no external resource"
    );
    let url = format!("file://{}", file.display());
    let page = dom(&url);
    assert!(page.contains("data-status=\"diverged\""));
    // The planted divergences: id 2 mismatched in amount, 4 missing, 5 extra.
    assert!(page.contains("data-column=\"amount\""), "{page}");
    assert!(page.contains("id=2"), "{page}");
    assert!(page.contains("data-kind=\"missing_in_stream\""));
    assert!(page.contains("data-kind=\"extra_in_stream\""));
    screenshot(&url, "report-compare");

    // The demo's report: every check the run diverged is in the page with its status.
    let demo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = ws.path("demo.html");
    let json = Command::new(env!("CARGO_BIN_EXE_dualrun"))
        .args([
            "run",
            "--config",
            "dualrun.toml",
            "--no-history",
            "--format",
            "json",
        ])
        .current_dir(demo)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let html = Command::new(env!("CARGO_BIN_EXE_dualrun"))
        .args([
            "run",
            "--config",
            "dualrun.toml",
            "--no-history",
            "--format",
            "html",
            "--output",
        ])
        .arg(&out)
        .current_dir(demo)
        .output()
        .unwrap();
    assert_eq!(html.status.code(), Some(1));
    assert_eq!(html5_errors(&out), "");
    let page = dom(&format!("file://{}", out.display()));
    let checks = report["checks"].as_array().unwrap();
    let mut diverged = 0;
    for check in checks {
        let row = format!(
            "data-check=\"{}\" data-status=\"{}\"",
            check["name"].as_str().unwrap(),
            check["status"].as_str().unwrap()
        );
        assert!(page.contains(&row), "{row} missing");
        if check["status"] == "diverged" {
            diverged += 1;
            for column in check["columns"].as_array().unwrap() {
                if column["mismatched"].as_u64().unwrap() > 0 {
                    let name = column["name"].as_str().unwrap();
                    assert!(page.contains(&format!("data-column=\"{name}\"")), "{name}");
                }
            }
        }
    }
    assert!(diverged >= 5, "the demo plants divergences in most checks");
    screenshot(&format!("file://{}", out.display()), "report-demo");
}

/// Series of a textfile exposition as promtool input series, each held for ten minutes.
fn promtool_series(exposition: &str) -> String {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        // Timestamps would only feed the staleness alerts, which this test does not look at.
        .filter(|l| !l.contains("_timestamp_seconds"))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, value)| {
            format!("      - series: '{series}'\n        values: '{value}x10'\n")
        })
        .collect()
}

/// Runs the shipped alert rules on the series of a textfile and returns promtool's verdict on
/// the expected alerts (`name → [checks]`).
fn alerts_fire(
    dir: &Path,
    exposition: &str,
    expected: &BTreeMap<&str, Vec<&str>>,
) -> (i32, String) {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/dualrun-alerts.yml");
    let mut tests = String::new();
    for (alert, checks) in expected {
        tests.push_str(&format!(
            "      - eval_time: 5m\n        alertname: {alert}\n        exp_alerts:"
        ));
        if checks.is_empty() {
            tests.push_str(" []\n");
        } else {
            tests.push('\n');
            for check in checks {
                let severity = if *alert == "DualrunStreamIncident" {
                    "critical"
                } else {
                    "warning"
                };
                let (summary, description) = if *alert == "DualrunStreamIncident" {
                    (
                        format!(
                            "dualrun: the stream tables of migrated {check} disagree with batch"
                        ),
                        format!(
                            "{check} is migrated: its consumers read the stream tables, and the batch reconciliation now finds divergent rows. Treat it as a stream-pipeline incident; the report names the columns and rows."
                        ),
                    )
                } else {
                    (
                        format!("dualrun: batch and stream disagree on {check}"),
                        format!(
                            "The last run of check {check} found divergent rows. Run `dualrun run --check {check}` or read its report for samples."
                        ),
                    )
                };
                tests.push_str(&format!(
                    "          - exp_labels: {{severity: {severity}, check: {check}}}\n            exp_annotations:\n              summary: \"{summary}\"\n              description: \"{description}\"\n"
                ));
            }
        }
    }
    let file = dir.join("lifecycle.test.yml");
    std::fs::write(
        &file,
        format!(
            "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n{tests}",
            rules.display(),
            promtool_series(exposition),
        ),
    )
    .unwrap();
    let output = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool is installed");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn a_migration_from_the_first_night_to_batch_retired() {
    let ws = Workspace::new();
    let rows = "SELECT * FROM (VALUES (1, 10.0), (2, 20.0), (3, 30.0)) AS t(id, amount)";
    ws.table("batch/orders", Fmt::Parquet, rows);
    ws.table("stream/orders", Fmt::Parquet, rows);
    ws.write(
        "dualrun.toml",
        "[gate]\nclean_runs = 3\n[tables.orders]\nbatch = \"batch/orders/\"\nstream = \"stream/orders/\"\n\
         [[checks]]\nname = \"orders\"\nsql = \"SELECT * FROM orders\"\nkey = [\"id\"]\n",
    );
    let night = |date: &str| {
        let run = ws.run(&[
            "run",
            "--config",
            "dualrun.toml",
            "--param",
            &format!("run_date={date}"),
            "--metrics-textfile",
            "dualrun.prom",
        ]);
        (
            run.code,
            std::fs::read_to_string(ws.path("dualrun.prom")).unwrap(),
        )
    };
    let stage = |text: &str, stage: &str| {
        metric(
            text,
            &format!("dualrun_check_stage{{check=\"orders\",stage=\"{stage}\"}}"),
        )
    };
    let no_alerts = BTreeMap::from([
        ("DualrunCheckDiverged", vec![]),
        ("DualrunStreamIncident", vec![]),
    ]);

    // Dual-run: proving, then proven after three clean nights.
    let (code, text) = night("2026-11-01");
    assert_eq!(code, 0);
    assert_eq!(stage(&text, "proving"), Some(1.0), "{text}");
    night("2026-11-02");
    let (_, text) = night("2026-11-03");
    assert_eq!(stage(&text, "proven"), Some(1.0), "{text}");
    assert_eq!(stage(&text, "proving"), Some(0.0));
    let (code, out) = alerts_fire(&ws.path(""), &text, &no_alerts);
    assert_eq!(code, 0, "{out}");

    // Retiring batch before migrating is refused; migrating a proven check is recorded.
    crate::common::assert_trouble(&mark(&ws, "retired", "orders"), "not migrated");
    let marked = mark(&ws, "migrated", "orders");
    assert_eq!(marked.code, 0, "{}", marked.stderr);
    let (_, text) = night("2026-11-04");
    assert_eq!(stage(&text, "migrated"), Some(1.0), "{text}");

    // After migration the stream breaks: the same divergence is now a stream incident
    // (critical), not a gate failure.
    ws.table(
        "stream/orders",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 10.0), (2, 99.0), (3, 30.0)) AS t(id, amount)",
    );
    let (code, text) = night("2026-11-05");
    assert_eq!(code, 1);
    assert_eq!(stage(&text, "migrated"), Some(1.0), "{text}");
    let incident = BTreeMap::from([
        ("DualrunCheckDiverged", vec![]),
        ("DualrunStreamIncident", vec!["orders"]),
    ]);
    let (code, out) = alerts_fire(&ws.path(""), &text, &incident);
    assert_eq!(code, 0, "{out}");
    let gate = gate_json(&ws);
    assert_eq!(gate["checks"][0]["incident"], true, "{gate}");
    assert_eq!(
        gate["ready"], false,
        "no retiring batch during a stream incident: {gate}"
    );
    crate::common::assert_trouble(&mark(&ws, "retired", "orders"), "stream incident");
    // The stream is fixed: the next night agrees again, and batch may go.
    ws.table("stream/orders", Fmt::Parquet, rows);
    let (code, _) = night("2026-11-06");
    assert_eq!(code, 0);
    assert_eq!(gate_json(&ws)["ready"], true);

    // Batch retired: the last stage, on the board too.
    let marked = mark(&ws, "retired", "orders");
    assert_eq!(marked.code, 0, "{}", marked.stderr);
    assert_eq!(gate_json(&ws)["checks"][0]["stage"], "retired");
    assert_eq!(
        ws.run(&["board", "--config", "dualrun.toml", "--output", "site"])
            .code,
        0
    );
    let page = dom(&format!("file://{}", ws.path("site/index.html").display()));
    assert!(page.contains("data-stage=\"retired\""), "{page}");
}
