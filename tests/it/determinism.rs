//! Verdicts that do not flap: float aggregates give the same bits in any file layout and
//! parallelism, the control runs catch a query that answers differently on identical input,
//! and they never turn a real divergence into a match.

use datafusion::arrow::compute::concat_batches;

use crate::common::*;

/// 1.05M rows whose float amounts span 12 orders of magnitude and both signs: summed in two
/// orders they give two answers. Batch: one file in id order; stream: 60 files, shuffled.
fn float_tables(ws: &Workspace) {
    let rows = 1_050_000;
    let select = format!(
        "SELECT value AS id, 'r' || CAST(value % 8 AS VARCHAR) AS region,
                CAST((value * 2654435761) % 1000003 AS DOUBLE) / 7.0
                  * power(10.0, CAST(value % 13 AS DOUBLE) - 6.0)
                  * CASE WHEN value % 3 = 0 THEN -1.0 ELSE 1.0 END AS amount,
                CAST((value * 40503) % 997 AS DOUBLE) / 3.0 AS weight
         FROM generate_series(0, {}) AS t(value)",
        rows - 1
    );
    write_batches(
        &sql_batches(&format!("{select} ORDER BY id")),
        Fmt::Parquet,
        &ws.path("b/events/part-0.parquet"),
    );
    let shuffled = sql_batches(&format!("{select} ORDER BY (id * 48271) % 1050011"));
    let all = concat_batches(&shuffled[0].schema(), &shuffled).unwrap();
    let files = 60;
    let per_file = rows / files;
    for file in 0..files {
        let slice = all.slice(file * per_file, per_file);
        write_batches(
            &[slice],
            Fmt::Parquet,
            &ws.path(&format!("s/events/part-{file:02}.parquet")),
        );
    }
}

fn float_config(ws: &Workspace, target_partitions: usize, aggregates: &str) {
    ws.write(
        "dualrun.toml",
        &format!(
            r#"
[engine]
target_partitions = {target_partitions}
float_aggregates = "{aggregates}"

[tables.events]
batch = "b/events/"
stream = "s/events/"

[[checks]]
name = "by_region"
sql = "SELECT region, SUM(amount) AS s, AVG(amount) AS a, COUNT(*) AS n FROM events GROUP BY region"
key = ["region"]

[[checks]]
name = "spread"
sql = "SELECT region, STDDEV(amount) AS sd, VAR_POP(amount) AS vp, STDDEV_POP(amount) AS sdp, VAR(amount) AS v FROM events GROUP BY region"
key = ["region"]

[[checks]]
name = "co_spread"
sql = "SELECT region, COVAR_SAMP(amount, weight) AS c, COVAR_POP(weight, amount) AS cp, CORR(amount, weight) AS r, REGR_SLOPE(amount, weight) AS s FROM events GROUP BY region"
key = ["region"]

[[checks]]
name = "by_bucket"
sql = "SELECT id % 5000 AS bucket, SUM(amount) AS s, AVG(amount) AS a, VAR(amount) AS v FROM events GROUP BY id % 5000"
key = ["bucket"]

[[checks]]
name = "whole_table"
sql = "SELECT SUM(amount) AS s, AVG(amount) AS a, SUM(DISTINCT amount) AS d, STDDEV(amount) AS sd, CORR(amount, weight) AS r FROM events"

[[checks]]
name = "sliding_window"
sql = "SELECT id, SUM(amount) OVER (PARTITION BY region ORDER BY id ROWS BETWEEN 50 PRECEDING AND CURRENT ROW) AS w, STDDEV(amount) OVER (PARTITION BY region ORDER BY id ROWS BETWEEN 50 PRECEDING AND CURRENT ROW) AS sw, COVAR_POP(amount, weight) OVER (PARTITION BY region ORDER BY id ROWS BETWEEN 50 PRECEDING AND CURRENT ROW) AS cw FROM events WHERE id < 20000"
key = ["id"]
"#
        ),
    );
}

/// The checks of a few groups, where DataFusion's float aggregates flap on this data.
const GROUPED_CHECKS: [&str; 6] = [
    "--check",
    "by_region",
    "--check",
    "spread",
    "--check",
    "co_spread",
];

#[test]
fn float_sums_averages_and_deviations_match_in_any_layout_without_tolerance() {
    let ws = Workspace::new();
    float_tables(&ws);
    // DataFusion's own aggregates flap on this data: the test would catch a silent fallback.
    float_config(&ws, 4, "builtin");
    let run = ws.run(
        &[
            &["run", "--no-history", "--format", "json"][..],
            &GROUPED_CHECKS,
        ]
        .concat(),
    );
    for check in run.json()["checks"].as_array().unwrap() {
        assert_eq!(
            check["status"], "diverged",
            "the built-in float SUM, STDDEV, COVAR, CORR and REGR should differ in the last bits here: {check}"
        );
        if check["name"] == "co_spread" {
            for column in check["columns"].as_array().unwrap() {
                assert!(column["mismatched"].as_u64().unwrap() > 0, "{column}");
            }
        }
    }
    // Exact aggregates: 20 runs of the GROUP BYs over 1, 2, 4 and 8 partitions, and every
    // other shape (many groups, no GROUP BY, DISTINCT, a sliding window) on 1 and 8, all match.
    for round in 0..22 {
        let partitions = if round < 20 {
            [1, 2, 4, 8][round % 4]
        } else {
            [1, 8][round - 20]
        };
        float_config(&ws, partitions, "exact");
        let mut args = vec!["run", "--no-history", "--format", "json"];
        if round < 20 {
            args.extend(GROUPED_CHECKS);
        } else {
            args.extend([
                "--check",
                "by_bucket",
                "--check",
                "whole_table",
                "--check",
                "sliding_window",
            ]);
        }
        let run = ws.run(&args);
        assert_eq!(
            run.code, 0,
            "round {round}, {partitions} partitions:\n{}\n{}",
            run.stdout, run.stderr
        );
        for check in run.json()["checks"].as_array().unwrap() {
            assert_eq!(check["status"], "match", "{check}");
            assert!(check["findings"].as_array().unwrap().is_empty(), "{check}");
        }
    }
}

/// 20 files of 500 rows in 100 groups: a GROUP BY's output order depends on the parallelism.
fn grouped_table(ws: &Workspace) -> String {
    for file in 0..20 {
        ws.table_file(
            &format!("t/part-{file:02}.parquet"),
            Fmt::Parquet,
            &format!(
                "SELECT value AS id, (value * 37) % 100 AS g, value * 2 AS v
                 FROM generate_series({}, {}) AS t(value)",
                file * 500,
                file * 500 + 499
            ),
        );
    }
    format!("{}/", ws.path("t").display())
}

#[test]
fn control_runs_make_a_limit_without_order_by_unstable() {
    let ws = Workspace::new();
    let table = grouped_table(&ws);
    let unordered = "SELECT g, COUNT(*) AS n FROM t GROUP BY g LIMIT 3";
    let run = ws.compare(&table, &table, unordered, &["--key", "g", "--control", "2"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let check = run.check();
    assert_eq!(check["status"], "unstable", "{check}");
    let control = &check["control"];
    assert_eq!(control["runs"], 2);
    assert_eq!(control["stable"], false);
    assert!(control["moved_rows"].as_u64().unwrap() > 0, "{control}");
    let samples = &control["samples"];
    let moved = samples["missing_in_stream"].as_array().unwrap().len()
        + samples["extra_in_stream"].as_array().unwrap().len();
    assert!(moved > 0, "sample keys that moved: {control}");
    assert_eq!(check["nondeterministic"][0]["kind"], "limit", "{check}");

    // The text report says so, with the construct to fix.
    let b = format!("t={table}");
    let text = ws.run(&[
        "compare",
        "--batch",
        &b,
        "--stream",
        &b,
        "--sql",
        unordered,
        "--key",
        "g",
        "--control",
        "2",
    ]);
    assert_eq!(text.code, 1);
    assert!(text.stdout.contains("UNSTABLE"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("warning: nondeterministic (limit): LIMIT 3"),
        "{}",
        text.stdout
    );

    // Ordered by the group key, the same query is deterministic: no warning, stable controls.
    let ordered = "SELECT g, COUNT(*) AS n FROM t GROUP BY g ORDER BY g LIMIT 3";
    let run = ws.compare(&table, &table, ordered, &["--key", "g", "--control", "2"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let check = run.check();
    assert_eq!(check["status"], "match");
    assert_eq!(check["control"]["stable"], true);
    assert_eq!(check["nondeterministic"], serde_json::json!([]));

    // Acknowledged, the warning goes; the control runs still judge the query.
    let run = ws.compare(
        &table,
        &table,
        unordered,
        &["--key", "g", "--allow-nondeterministic", "limit"],
    );
    assert_eq!(run.check()["nondeterministic"], serde_json::json!([]));
}

#[test]
fn control_runs_leave_a_planted_divergence_diverged() {
    let ws = Workspace::new();
    let batch = grouped_table(&ws);
    let stream = ws.table(
        "s/t",
        Fmt::Parquet,
        "SELECT value AS id, (value * 37) % 100 AS g,
                CASE WHEN value = 4321 THEN value * 2 + 1 ELSE value * 2 END AS v
         FROM generate_series(0, 9999) AS t(value)",
    );
    let sql = "SELECT g, SUM(v) AS total, COUNT(*) AS n FROM t GROUP BY g";
    let run = ws.compare(&batch, &stream, sql, &["--key", "g", "--control", "3"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let check = run.check();
    assert_eq!(check["status"], "diverged");
    assert_eq!(check["counts"]["mismatched"], 1);
    assert_eq!(check["control"]["stable"], true);
    assert_eq!(check["control"]["runs"], 3);
}

/// The demo's whole JSON report (statistics of the differences included) is the same bytes on
/// every run, apart from the timings.
#[test]
fn the_demo_report_is_the_same_on_every_run() {
    let ws = Workspace::new();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/dualrun.toml");
    let masked = || {
        let run = ws.run(&[
            "run",
            "--config",
            config,
            "--no-history",
            "--format",
            "json",
        ]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        let mut report = run.json();
        for check in report["checks"].as_array_mut().unwrap() {
            check["duration_seconds"] = serde_json::Value::Null;
        }
        report.to_string()
    };
    let first = masked();
    for _ in 0..3 {
        assert!(masked() == first, "the demo report changed between runs");
    }
}

/// Float MIN and MAX in IEEE total order whatever order the rows come in. DataFusion 55's
/// grouped version gave MAX([1, NaN]) = NaN but MAX([NaN, 1]) = 1 (so the same rows in other
/// files diverged), and MIN of a group holding only +inf 1.797e308, a value not in the data.
/// Without GROUP BY it was right, and must stay so.
#[test]
fn float_min_and_max_do_not_depend_on_row_order() {
    let ws = Workspace::new();
    let nan = "CAST('NaN' AS DOUBLE)";
    let inf = "CAST('inf' AS DOUBLE)";
    // Groups 1 and 2 hold the same values in opposite orders.
    let raw = ws.table(
        "raw",
        Fmt::Parquet,
        &format!(
            "SELECT column1 AS g, column2 AS x FROM (VALUES (1, 1.0), (1, {nan}), (2, {nan}), \
             (2, 1.0), (3, {inf}), (4, -{inf}), (5, CAST(NULL AS DOUBLE)), (6, -2.5), (6, 7.0))"
        ),
    );
    let grouped = ws.table(
        "grouped",
        Fmt::Parquet,
        &format!(
            "SELECT column1 AS g, column2 AS lo, column3 AS hi FROM (VALUES (1, 1.0, {nan}), \
             (2, 1.0, {nan}), (3, {inf}, {inf}), (4, -{inf}, -{inf}), \
             (5, CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE)), (6, -2.5, 7.0))"
        ),
    );
    let whole = ws.table(
        "whole",
        Fmt::Parquet,
        &format!("SELECT -{inf} AS lo, {nan} AS hi"),
    );
    for (expected, query, key) in [
        (
            &grouped,
            "SELECT g, MIN(x) AS lo, MAX(x) AS hi FROM raw GROUP BY g",
            &["--key", "g"][..],
        ),
        (&whole, "SELECT MIN(x) AS lo, MAX(x) AS hi FROM raw", &[]),
    ] {
        let (batch, stream) = (format!("e={expected}"), format!("raw={raw}"));
        let view = format!("q={query}");
        let mut args = vec![
            "compare",
            "--batch",
            &batch,
            "--batch-view",
            "q=SELECT * FROM e",
            "--stream",
            &stream,
            "--stream-view",
            &view,
            "--sql",
            "SELECT * FROM q",
            "--format",
            "json",
        ];
        args.extend(key);
        let run = ws.run(&args);
        assert_eq!(run.code, 0, "{query}:\n{}\n{}", run.stdout, run.stderr);
        assert_eq!(run.check()["status"], "match", "{query}: {}", run.stdout);
    }
}
