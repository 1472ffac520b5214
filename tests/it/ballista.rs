//! The demo's checks run through Ballista (its in-process standalone cluster: a real scheduler
//! and executor talking gRPC and Flight on loopback) give the same verdicts, counts, per-column
//! counts and samples as embedded DataFusion.

use std::process::Command;

use crate::common::{Fmt, Run, Workspace, assert_trouble};
use serde_json::Value;

/// `dualrun run` on the repository's demo config, JSON report.
fn demo(extra: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_dualrun"))
        .args(["run", "--config", "dualrun.toml", "--format", "json"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("dualrun starts");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The same `compare` in process, then through the standalone Ballista cluster.
fn embedded_and_distributed(
    ws: &Workspace,
    batch: &str,
    stream: &str,
    sql: &str,
    extra: &[&str],
) -> (Run, Run) {
    let embedded = ws.compare(batch, stream, sql, extra);
    let mut distributed_args = extra.to_vec();
    distributed_args.extend(["--engine", "ballista://standalone"]);
    let distributed = ws.compare(batch, stream, sql, &distributed_args);
    (embedded, distributed)
}

/// What must not depend on where the plans ran.
fn verdicts(report: &Value) -> Vec<Value> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|check| {
            let columns: Vec<Value> = check["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| serde_json::json!([c["name"], c["mismatched"]]))
                .collect();
            let findings: Vec<Value> = check["findings"]
                .as_array()
                .map(|f| f.iter().map(|f| f["kind"].clone()).collect())
                .unwrap_or_default();
            // Sampled rows by key and differing columns: a float SUM of the query itself may
            // differ in its last digits between any two plans (summation order), which is what
            // tolerances are for.
            let samples: Vec<Value> = ["missing_in_stream", "extra_in_stream", "mismatched"]
                .iter()
                .flat_map(|kind| {
                    check["samples"][kind]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .map(|sample| {
                    let columns: Vec<Value> = sample["differences"]
                        .as_array()
                        .map(|d| d.iter().map(|d| d["column"].clone()).collect())
                        .unwrap_or_default();
                    serde_json::json!([sample["key"], columns])
                })
                .collect();
            serde_json::json!({
                "name": check["name"], "status": check["status"], "rows": check["rows"],
                "counts": check["counts"], "columns": columns, "schema": check["schema"],
                "samples": samples, "findings": findings, "error": check["error"],
            })
        })
        .collect()
}

#[test]
fn demo_checks_give_the_same_verdicts_on_ballista() {
    let embedded = demo(&[]);
    let distributed = demo(&["--engine", "ballista://standalone"]);
    assert_eq!(embedded.code, 1, "the demo diverges: {}", embedded.stderr);
    assert_eq!(distributed.code, 1, "{}", distributed.stderr);
    let (embedded, distributed) = (verdicts(&embedded.json()), verdicts(&distributed.json()));
    assert_eq!(embedded.len(), 9);
    assert!(
        embedded.iter().all(|c| c["error"].is_null()),
        "{embedded:#?}"
    );
    let statuses: Vec<&str> = embedded
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"match") && statuses.contains(&"diverged"));
    for (e, d) in embedded.iter().zip(&distributed) {
        assert_eq!(e, d, "check {} differs on Ballista", e["name"]);
    }
}

#[test]
fn a_keyed_diff_with_duplicates_on_ballista() {
    let ws = Workspace::new();
    let batch = ws.table(
        "b",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 'a', 1.0), (2, 'b', 2.0), (2, 'b', 2.5), (3, 'c', 3.0)) AS t(id, name, x)",
    );
    let stream = ws.table(
        "s",
        Fmt::NdJson,
        "SELECT * FROM (VALUES (1, 'a', 1.0), (2, 'b', 2.5), (3, 'C', 3.0), (4, 'd', 4.0)) AS t(id, name, x)",
    );
    let sql = "SELECT id, name, x FROM t";
    let (embedded, distributed) =
        embedded_and_distributed(&ws, &batch, &stream, sql, &["--key", "id"]);
    assert_eq!(distributed.code, 1, "{}", distributed.stderr);
    // Batch's two rows of key 2 pair by value order: 2.0 with the stream's 2.5, 2.5 unpaired.
    // matched, mismatched, missing, extra, duplicated keys batch, stream
    assert_eq!(distributed.counts(), [1, 2, 1, 1, 1, 0]);
    assert_eq!(distributed.counts(), embedded.counts());
    assert_eq!(distributed.check()["samples"], embedded.check()["samples"]);
}

/// An NDJSON field of numbers and numbers written as text (see `hardening`) is read as numbers
/// by Ballista's executors too: the table's schema says so, and arrow's number readers take text.
#[test]
fn numbers_written_as_text_in_ndjson_on_ballista() {
    let ws = Workspace::new();
    let batch = ws.table(
        "b",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 1.5), (2, 2.5), (3, 3.25)) AS t(id, v)",
    );
    ws.write(
        "s/a.ndjson",
        "{\"id\":1,\"v\":1.5}\n{\"id\":2,\"v\":\"2.50\"}\n{\"id\":3,\"v\":\"3.5\"}\n",
    );
    let stream = format!("{}/", ws.path("s").display());
    let sql = "SELECT id, v FROM t";
    let (embedded, distributed) =
        embedded_and_distributed(&ws, &batch, &stream, sql, &["--key", "id"]);
    assert_eq!(distributed.code, 1, "{}", distributed.stderr);
    assert_eq!(distributed.counts(), [2, 1, 0, 0, 0, 0]);
    assert_eq!(distributed.counts(), embedded.counts());
}

/// Parquet's statistics leave NaN out (see the embedded case in `hardening`): on Ballista too, a
/// row group of NaN and 1.0 is read as it is, and `WHERE x > 5` keeps the NaN row.
#[test]
fn nan_in_parquet_is_read_as_nan_on_ballista() {
    let ws = Workspace::new();
    let batch = ws.table("parquet", Fmt::Parquet, crate::common::NAN_AND_ONE);
    let same = ws.table("arrow", Fmt::Arrow, crate::common::NAN_AND_ONE);
    let ballista = ["--engine", "ballista://standalone"];
    crate::common::assert_nan_read_as_nan(&ws, &batch, &same, &ballista);
}

#[test]
fn a_limit_is_refused_on_ballista_and_runs_in_process_when_the_check_asks() {
    let ws = Workspace::new();
    let table = ws.table(
        "t",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 5.0), (2, 9.0), (3, 7.0), (4, 1.0)) AS t(id, x)",
    );
    let top = "SELECT id, x FROM t ORDER BY x DESC LIMIT 2";
    let run = ws.compare(&table, &table, top, &["--engine", "ballista://standalone"]);
    assert_trouble(&run, "check 'compare': its query has a LIMIT");
    assert_eq!(run.json()["status"], "error", "no verdict is claimed");
    // In a subquery too.
    let nested = "SELECT count(*) AS n FROM (SELECT id FROM t ORDER BY x LIMIT 3)";
    let run = ws.compare(
        &table,
        &table,
        nested,
        &["--engine", "ballista://standalone"],
    );
    assert_trouble(&run, "has a LIMIT");

    let config = format!(
        "[tables.t]\nbatch = \"{table}\"\nstream = \"{table}\"\n\
         [[checks]]\nname = \"top\"\nsql = \"{top}\"\nkey = [\"id\"]\nengine = \"embedded\"\n\
         [[checks]]\nname = \"all\"\nsql = \"SELECT id, x FROM t\"\nkey = [\"id\"]\n"
    );
    ws.write("two.toml", &config);
    // validate says so before the night, and accepts the in-process check.
    ws.write(
        "validate.toml",
        &format!("{config}[engine]\nurl = \"ballista://standalone\"\n"),
    );
    assert_eq!(ws.run(&["validate", "--config", "validate.toml"]).code, 0);
    ws.write(
        "limited.toml",
        &(config.replace("engine = \"embedded\"\n", "")
            + "[engine]\nurl = \"ballista://standalone\"\n"),
    );
    let validated = ws.run(&["validate", "--config", "limited.toml"]);
    assert_eq!(
        validated.code, 2,
        "{}\n{}",
        validated.stdout, validated.stderr
    );
    assert!(
        validated
            .stdout
            .contains("ERROR    top: check 'top': its query has a LIMIT"),
        "{}",
        validated.stdout
    );

    let run = ws.run(&[
        "run",
        "--config",
        "two.toml",
        "--format",
        "json",
        "--engine",
        "ballista://standalone",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    let rows: Vec<(String, u64)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["rows"]["batch"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [("top".to_string(), 2), ("all".to_string(), 4)]);
}

#[test]
fn an_unreachable_scheduler_is_a_clear_error() {
    let ws = Workspace::new();
    let table = ws.table("t", Fmt::Parquet, "SELECT 1 AS id");
    let run = ws.compare(
        &table,
        &table,
        "SELECT id FROM t",
        &["--engine", "ballista://127.0.0.1:9"],
    );
    assert_trouble(
        &run,
        "Ballista scheduler ballista://127.0.0.1:9 is not reachable",
    );
    let run = ws.compare(
        &table,
        &table,
        "SELECT id FROM t",
        &["--engine", "http://x"],
    );
    assert_trouble(&run, "expected ballista://HOST:PORT");
}

/// Empty inputs end on Ballista as they do embedded (they used to hang: the adaptive planner
/// replanned the exchange over an empty scan forever). `--timeout` bounds each run so a
/// regression fails here instead of hanging the suite.
#[test]
fn empty_tables_end_with_the_embedded_verdict_on_ballista() {
    let ws = Workspace::new();
    let rows = "SELECT CAST(v AS BIGINT) AS id, CAST(v AS DOUBLE) AS x FROM generate_series(1, 1000) AS g(v)";
    let full = ws.table_file("full/a.parquet", Fmt::Parquet, rows);
    // Same schema, 0 rows: one empty batch (a query for no rows yields no batch at all).
    let mut batches = crate::common::sql_batches(rows);
    batches.truncate(1);
    batches[0] = batches[0].slice(0, 0);
    let empty_path = ws.path("empty/a.parquet");
    crate::common::write_batches(&batches, Fmt::Parquet, &empty_path);
    let empty = empty_path.display().to_string();
    let cases = [
        (&full, &empty, "SELECT id, x FROM t", "diverged"),
        (&empty, &full, "SELECT id, x FROM t", "diverged"),
        (&empty, &empty, "SELECT id, x FROM t", "empty"),
        // Both files have rows; the filter keeps none.
        (&full, &full, "SELECT id, x FROM t WHERE id > 5000", "empty"),
    ];
    for (batch, stream, sql, status) in cases {
        for key in [&["--key", "id"][..], &[][..]] {
            let mut extra = vec!["--timeout", "60s"];
            extra.extend_from_slice(key);
            let (embedded, distributed) = embedded_and_distributed(&ws, batch, stream, sql, &extra);
            for run in [&embedded, &distributed] {
                assert_eq!(
                    run.json()["status"],
                    status,
                    "{batch} vs {stream} {key:?}: {}",
                    run.stderr
                );
            }
            assert_eq!(embedded.code, distributed.code);
            assert_eq!(embedded.counts(), distributed.counts(), "{sql} {key:?}");
        }
    }
}

#[test]
fn memory_limit_is_refused_on_ballista_in_one_line() {
    let ws = Workspace::new();
    let table = ws.table("t", Fmt::Parquet, "SELECT 1 AS id");
    let run = ws.compare(
        &table,
        &table,
        "SELECT id FROM t",
        &[
            "--engine",
            "ballista://standalone",
            "--memory-limit",
            "128MiB",
        ],
    );
    assert_trouble(&run, "a memory limit applies to embedded runs only");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(run.json()["status"], "error");
}

/// A check reading a change log is refused up front on a cluster, naming the fix.
#[test]
fn a_changelog_check_on_ballista_is_refused_up_front() {
    let ws = Workspace::new();
    let rows = "SELECT * FROM (VALUES (1, 'a', 1), (2, 'b', 1), (2, 'b', 1)) AS t(id, name, seq)";
    ws.table("b/t", Fmt::Parquet, rows);
    ws.table("s/t", Fmt::Parquet, rows);
    ws.write(
        "dualrun.toml",
        r#"
[tables.t]
batch = "b/t/"
stream = "s/t/"
stream_changelog = { shape = "dedup", key = ["id"], order_by = ["seq"], as_of = "none" }
[[checks]]
name = "t"
sql = "SELECT id, name FROM t"
key = ["id"]
"#,
    );
    let run = ws.run(&[
        "run",
        "--no-history",
        "--format",
        "json",
        "--engine",
        "ballista://standalone",
    ]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let error = run.check()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("table 't' (stream side) is a change log")
            && error.contains("engine = \"embedded\""),
        "{error}"
    );
}
