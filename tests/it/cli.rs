//! The binary on real files: every format, the comparison rules end to end, the config-driven
//! nightly job, and bad input (exit 2 with a message that names the culprit, never a panic).

use crate::common::{Fmt, Workspace, assert_trouble};

const BASE: &str = "SELECT * FROM (VALUES \
    (1, 'alpha', 10.5, 1), (2, 'beta', 20.25, 2), (3, 'gamma', 30.0, 3), \
    (4, 'delta', 40.75, 4), (5, 'epsilon', 50.5, 5), (6, 'zeta', 60.0, 6)) AS t(id, name, amount, qty)";

/// BASE with id 2 changed, id 5 missing and id 7 extra.
const PLANTED: &str = "SELECT * FROM (VALUES \
    (1, 'alpha', 10.5, 1), (2, 'beta', 21.25, 2), (3, 'gamma', 30.0, 3), \
    (4, 'delta', 40.75, 4), (6, 'zeta', 60.0, 6), (7, 'eta', 70.0, 7)) AS t(id, name, amount, qty)";

#[test]
fn every_format_against_parquet_with_exact_counts() {
    let ws = Workspace::new();
    let batch = ws.table("batch/t", Fmt::Parquet, BASE);
    for format in Fmt::ALL {
        let stream = ws.table(&format!("stream_{}/t", format.extension()), format, PLANTED);
        let run = ws.compare(&batch, &stream, "SELECT * FROM t", &["--key", "id"]);
        assert_eq!(run.code, 1, "{format:?}: {}", run.stderr);
        assert_eq!(run.counts(), [4, 1, 1, 1, 0, 0], "{format:?}");
        let check = run.check();
        assert_eq!(check["status"], "diverged");
        assert_eq!(check["rows"]["batch"], 6);
        assert_eq!(check["rows"]["stream"], 6);
        let amount = check["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "amount")
            .unwrap()
            .clone();
        assert_eq!(amount["mismatched"], 1, "{format:?}");
        // Parquet strings are Utf8View, CSV ones Utf8: an encoding, not a type change.
        assert_eq!(
            check["schema"]["type_changes"],
            serde_json::json!([]),
            "{format:?}"
        );

        // The same format on both sides, identical: a match, exit 0.
        let same = ws.table(&format!("same_{}/t", format.extension()), format, BASE);
        let run = ws.compare(&same, &same, "SELECT * FROM t", &["--key", "id"]);
        assert_eq!(run.code, 0, "{format:?}: {}", run.stderr);
        assert_eq!(run.counts(), [6, 0, 0, 0, 0, 0], "{format:?}");
    }
}

#[test]
fn mismatched_sample_names_the_column_and_both_values() {
    let ws = Workspace::new();
    let batch = ws.table("b/t", Fmt::Parquet, BASE);
    let stream = ws.table("s/t", Fmt::Parquet, PLANTED);
    let run = ws.compare(&batch, &stream, "SELECT * FROM t", &["--key", "id"]);
    let samples = &run.check()["samples"];
    assert_eq!(
        samples["mismatched"],
        serde_json::json!([{"key": {"id": 2}, "differences": [{"column": "amount", "batch": 20.25, "stream": 21.25}]}])
    );
    assert_eq!(samples["missing_in_stream"][0]["key"]["id"], 5);
    assert_eq!(samples["extra_in_stream"][0]["key"]["id"], 7);
    assert_eq!(samples["extra_in_stream"][0]["values"]["name"], "eta");
}

#[test]
fn keyless_multiset_and_duplicates_through_the_binary() {
    let ws = Workspace::new();
    let batch = ws.table(
        "b/t",
        Fmt::Parquet,
        "SELECT * FROM (VALUES ('a', 1), ('a', 1), ('b', 2)) AS t(x, y)",
    );
    let stream = ws.table(
        "s/t",
        Fmt::Csv,
        "SELECT * FROM (VALUES ('a', 1), ('b', 2), ('b', 2), ('c', 3)) AS t(x, y)",
    );
    let run = ws.compare(&batch, &stream, "SELECT x, y FROM t", &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.counts(), [2, 0, 1, 2, 1, 1]);

    let batch = ws.table(
        "b2/t",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 10), (1, 20), (2, 5)) AS t(id, v)",
    );
    let stream = ws.table(
        "s2/t",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 30), (1, 20), (1, 10), (2, 5)) AS t(id, v)",
    );
    let run = ws.compare(&batch, &stream, "SELECT * FROM t", &["--key", "id"]);
    assert_eq!(run.counts(), [3, 0, 0, 1, 1, 1]);
    assert_eq!(run.check()["paired_by_occurrence"], true);
}

#[test]
fn tolerance_flags_and_ignore() {
    let ws = Workspace::new();
    let batch = ws.table("b/t", Fmt::Parquet, BASE);
    let stream = ws.table("s/t", Fmt::Parquet, PLANTED);
    let run = ws.compare(
        &batch,
        &stream,
        "SELECT id, name, amount FROM t WHERE id <> 5 AND id <> 7",
        &["--key", "id", "--tolerance", "amount=abs:1"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.counts(), [5, 0, 0, 0, 0, 0]);
    let run = ws.compare(
        &batch,
        &stream,
        "SELECT id, name, amount FROM t WHERE id <> 5 AND id <> 7",
        &["--key", "id", "--tolerance", "amount=abs:0.5"],
    );
    assert_eq!(run.counts(), [4, 1, 0, 0, 0, 0]);
    let run = ws.compare(
        &batch,
        &stream,
        "SELECT id, name, amount FROM t WHERE id <> 5 AND id <> 7",
        &["--key", "id", "--ignore", "amount"],
    );
    assert_eq!(run.code, 0);
    let columns: Vec<_> = run.check()["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(columns, ["name"]);
}

#[test]
fn schema_drift_one_sided_column_diverges_type_change_alone_does_not() {
    let ws = Workspace::new();
    let batch = ws.table(
        "b/t",
        Fmt::Parquet,
        "SELECT CAST(id AS INT) AS id, v FROM (VALUES (1, 'a'), (2, 'b')) AS t(id, v)",
    );
    let stream = ws.table(
        "s/t",
        Fmt::Parquet,
        "SELECT v, CAST(id AS BIGINT) AS id FROM (VALUES (1, 'a'), (2, 'b')) AS t(id, v)",
    );
    let run = ws.compare(&batch, &stream, "SELECT * FROM t", &["--key", "id"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.check()["schema"]["type_changes"],
        serde_json::json!([{"column": "id", "batch": "Int32", "stream": "Int64"}])
    );

    let stream = ws.table("s2/t", Fmt::Parquet, "SELECT CAST(id AS INT) AS id, v, 'x' AS added FROM (VALUES (1, 'a'), (2, 'b')) AS t(id, v)");
    let run = ws.compare(&batch, &stream, "SELECT * FROM t", &["--key", "id"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.counts(), [2, 0, 0, 0, 0, 0]);
    assert_eq!(
        run.check()["schema"]["only_in_stream"],
        serde_json::json!(["added"])
    );

    let run = ws.compare(&batch, &stream, "SELECT * FROM t", &["--key", "added"]);
    assert_trouble(&run, "key column 'added' is missing from the batch result");
}

#[test]
fn hive_partitions_become_columns_and_params_bind() {
    let ws = Workspace::new();
    for day in ["2026-11-24", "2026-11-25"] {
        ws.table(
            &format!("b/orders/dt={day}"),
            Fmt::Parquet,
            "SELECT * FROM (VALUES (1, 5.0), (2, 7.0)) AS t(id, amount)",
        );
        let stream_sql = if day == "2026-11-25" {
            "SELECT * FROM (VALUES (1, 5.0), (2, 8.0)) AS t(id, amount)"
        } else {
            "SELECT * FROM (VALUES (1, 5.0), (2, 7.0)) AS t(id, amount)"
        };
        ws.table_file(
            &format!("s/orders/dt={day}/mb-1.ndjson"),
            Fmt::NdJson,
            stream_sql,
        );
    }
    ws.write("s/orders/dt=2026-11-25/_SUCCESS", "");
    ws.write("s/orders/dt=2026-11-25/.mb-2.ndjson.crc", "garbage");
    let sql = "SELECT dt, sum(amount) AS revenue FROM orders WHERE dt = $run_date GROUP BY dt";
    let args = |date: &str| {
        vec![
            "compare".to_string(),
            "--batch".into(),
            "orders=b/orders".into(),
            "--stream".into(),
            "orders=s/orders/".into(),
            "--sql".into(),
            sql.into(),
            "--key".into(),
            "dt".into(),
            "--param".into(),
            format!("run_date={date}"),
            "--format".into(),
            "json".into(),
        ]
    };
    let run = ws.run(
        &args("2026-11-24")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.counts(), [1, 0, 0, 0, 0, 0]);
    let run = ws.run(
        &args("2026-11-25")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts(), [0, 1, 0, 0, 0, 0]);
    assert_eq!(
        run.check()["samples"]["mismatched"][0]["key"]["dt"],
        "2026-11-25"
    );
}

#[test]
fn sql_runs_read_only() {
    let ws = Workspace::new();
    let table = ws.table("b/t", Fmt::Parquet, BASE);
    let out = ws.path("written.csv");
    let statements = [
        "CREATE TABLE x AS SELECT 1".to_string(),
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION 'x.csv'".to_string(),
        "INSERT INTO t VALUES (9, 'x', 1.0, 1)".to_string(),
        format!(
            "COPY (SELECT * FROM t) TO '{}' STORED AS CSV",
            out.display()
        ),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "DROP TABLE t".to_string(),
        "SELECT 1; SELECT 2".to_string(),
        "EXPLAIN SELECT * FROM t".to_string(),
    ];
    for sql in &statements {
        let run = ws.compare(&table, &table, sql, &[]);
        assert_eq!(run.code, 2, "{sql} should be refused: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert_eq!(run.json()["status"], "error", "{sql}");
    }
    assert!(!out.exists(), "COPY wrote a file");
    assert!(ws.path("b/t/part-0.parquet").exists());
}

#[test]
fn bad_input_exits_2_naming_the_culprit() {
    let ws = Workspace::new();
    let table = ws.table("b/t", Fmt::Parquet, BASE);
    let t = format!("t={table}");
    let u = format!("u={table}");
    let text = |args: &[&str]| ws.run(args);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "compare",
                "--batch",
                "t=nowhere/",
                "--stream",
                "t=nowhere/",
                "--sql",
                "SELECT * FROM t",
            ],
            "nowhere",
        ),
        (
            vec![
                "compare",
                "--batch",
                &t,
                "--stream",
                &t,
                "--sql",
                "SELEC * FROM t",
            ],
            "SELEC",
        ),
        (
            vec![
                "compare",
                "--batch",
                &t,
                "--stream",
                &t,
                "--sql",
                "SELECT nope FROM t",
            ],
            "nope",
        ),
        (
            vec![
                "compare",
                "--batch",
                &t,
                "--stream",
                &t,
                "--sql",
                "SELECT * FROM missing_table",
            ],
            "missing_table",
        ),
        (
            vec![
                "compare",
                "--batch",
                &t,
                "--stream",
                &t,
                "--sql",
                "SELECT * FROM t",
                "--key",
                "id",
                "--tolerance",
                "amount=abs:lots",
            ],
            "amount",
        ),
        (
            vec![
                "compare",
                "--batch",
                &t,
                "--stream",
                &t,
                "--sql",
                "SELECT * FROM t",
                "--key",
                "id",
                "--tolerance",
                "name=abs:1",
            ],
            "tolerance on 'name'",
        ),
        (
            vec![
                "compare",
                "--batch",
                "t=ftp://host/x/",
                "--stream",
                &t,
                "--sql",
                "SELECT * FROM t",
            ],
            "unsupported URL scheme 'ftp://'",
        ),
        (
            vec![
                "compare",
                "--batch",
                &t,
                "--stream",
                &t,
                "--sql",
                "SELECT * FROM t WHERE id = $day",
            ],
            "$day",
        ),
        (
            vec![
                "compare",
                "--batch",
                &t,
                "--stream",
                &t,
                "--sql",
                "SELECT * FROM t",
                "--param",
                "bad-name=1",
            ],
            "bad-name",
        ),
        (
            vec![
                "compare",
                "--batch",
                &t,
                "--stream",
                &t,
                "--sql",
                "SELECT * FROM t",
                "--memory-limit",
                "lots",
            ],
            "lots",
        ),
        (
            vec![
                "compare",
                "--batch",
                &t,
                "--stream",
                &u,
                "--sql",
                "SELECT * FROM t",
            ],
            "table 't' exists on the batch side only",
        ),
        (
            vec![
                "compare",
                "--batch",
                &t,
                "--stream",
                &t,
                "--input-format",
                "t=xlsx",
                "--sql",
                "SELECT * FROM t",
            ],
            "xlsx",
        ),
    ];
    for (args, expected) in cases {
        let run = text(&args);
        assert_trouble(&run, expected);
    }
}

#[test]
fn json_error_report_is_still_printed() {
    let ws = Workspace::new();
    let run = ws.run(&[
        "compare",
        "--batch",
        "t=nowhere/",
        "--stream",
        "t=nowhere/",
        "--sql",
        "SELECT * FROM t",
        "--format",
        "json",
        "--name",
        "nightly",
    ]);
    assert_eq!(run.code, 2);
    let json = run.json();
    assert_eq!(json["version"], 1);
    assert_eq!(json["status"], "error");
    assert_eq!(json["checks"][0]["name"], "nightly");
    assert_eq!(json["checks"][0]["status"], "error");
    assert!(
        json["checks"][0]["error"]
            .as_str()
            .unwrap()
            .contains("nowhere")
    );
    assert!(run.stderr.contains("nowhere"));
}

fn nightly_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.table("batch/orders", Fmt::Parquet, BASE);
    ws.table("stream/orders", Fmt::Parquet, PLANTED);
    ws.table(
        "batch/users",
        Fmt::Csv,
        "SELECT * FROM (VALUES (1, 'ann'), (2, 'bob')) AS t(id, name)",
    );
    ws.table(
        "stream/users",
        Fmt::NdJson,
        "SELECT * FROM (VALUES (1, 'ann'), (2, 'bob')) AS t(id, name)",
    );
    ws.write("queries/users.sql", "SELECT id, name FROM users");
    ws.write(
        "dualrun.toml",
        r#"
[params]
min_id = "0"

[tables.orders]
batch = "batch/orders/"
stream = "stream/orders/"

[tables.users]
batch = "batch/users/"
stream = "stream/users/"

[tables.ghost]
batch = "batch/ghost/"
stream = "stream/ghost/"

[[checks]]
name = "orders"
sql = "SELECT id, amount FROM orders WHERE id > CAST($min_id AS BIGINT)"
key = ["id"]

[[checks]]
name = "users"
query = "queries/users.sql"
key = ["id"]

[[checks]]
name = "ghosts"
sql = "SELECT * FROM ghost"

[engine]
join = "sort_merge"
memory_limit = "64MiB"
"#,
    );
    ws
}

#[test]
fn run_isolates_failing_checks() {
    let ws = nightly_workspace();
    let run = ws.run(&["run", "--config", "dualrun.toml", "--format", "json"]);
    assert_eq!(run.code, 2, "error outranks divergence: {}", run.stderr);
    let json = run.json();
    let status = |i: usize| json["checks"][i]["status"].as_str().unwrap().to_string();
    assert_eq!(
        [status(0), status(1), status(2)],
        ["diverged", "match", "error"]
    );
    assert_eq!(json["checks"][0]["counts"]["mismatched"], 1);
    let error = json["checks"][2]["error"].as_str().unwrap();
    assert!(
        error.contains("table 'ghost'") && error.contains("batch/ghost"),
        "{error}"
    );
    assert!(run.stderr.contains("ghost"));

    let run = ws.run(&[
        "run",
        "--config",
        "dualrun.toml",
        "--check",
        "users",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["checks"].as_array().unwrap().len(), 1);

    let run = ws.run(&[
        "run",
        "--config",
        "dualrun.toml",
        "--check",
        "orders",
        "--param",
        "min_id=3",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 1);
    assert_eq!(run.counts(), [2, 0, 1, 1, 0, 0]);

    let run = ws.run(&["run", "--config", "dualrun.toml", "--check", "nope"]);
    assert_trouble(&run, "--check 'nope'");
}

#[test]
fn config_mistakes_name_the_key() {
    let ws = nightly_workspace();
    ws.write("unknown.toml", "[tables.orders]\nbatch = 'batch/orders/'\nstream = 'stream/orders/'\nbtach = 'x'\n[[checks]]\nname = 'a'\nsql = 'SELECT 1'\n");
    assert_trouble(&ws.run(&["run", "--config", "unknown.toml"]), "btach");
    ws.write("malformed.toml", "[tables.orders\n");
    assert_trouble(
        &ws.run(&["run", "--config", "malformed.toml"]),
        "malformed.toml",
    );
    ws.write(
        "both.toml",
        "[[checks]]\nname = 'a'\nsql = 'SELECT 1'\nquery = 'x.sql'\n",
    );
    assert_trouble(
        &ws.run(&["run", "--config", "both.toml"]),
        "exactly one of query",
    );
    assert_trouble(&ws.run(&["run", "--config", "absent.toml"]), "absent.toml");
    ws.write(
        "badtol.toml",
        "[[checks]]\nname = 'a'\nsql = 'SELECT 1'\nkey=['x']\ntolerance = { v = 'abs' }\n",
    );
    assert_trouble(&ws.run(&["run", "--config", "badtol.toml"]), "column 'v'");
}

#[test]
fn validate_plans_without_running() {
    let ws = nightly_workspace();
    let run = ws.run(&["validate", "--config", "dualrun.toml"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("OK       orders") || run.stdout.contains("OK     orders"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("ERROR    ghosts"), "{}", run.stdout);
}

#[test]
fn text_markdown_and_output_file() {
    let ws = nightly_workspace();
    let run = ws.run(&["run", "--config", "dualrun.toml", "--check", "orders"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("DIVERGED orders"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("matched 4 · mismatched 1 · missing in stream 1 · extra in stream 1"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );

    let run = ws.run(&[
        "run",
        "--config",
        "dualrun.toml",
        "--check",
        "orders",
        "--format",
        "markdown",
        "--output",
        "report.md",
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.is_empty());
    let markdown = std::fs::read_to_string(ws.path("report.md")).unwrap();
    assert!(
        markdown.contains("| orders | ❌ diverged | 6 | 6 | 4 | 1 | 1 | 1 |"),
        "{markdown}"
    );
    assert!(markdown.contains("| `amount` | 1 | exact |"), "{markdown}");
}

#[test]
fn init_writes_a_config_that_parses() {
    let ws = Workspace::new();
    let run = ws.run(&["init"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "init writes dualrun.toml, not stdout"
    );
    assert!(ws.path("dualrun.toml").is_file());
    let run = ws.run(&["init"]);
    assert_trouble(&run, "exists already");
    let run = ws.run(&["init", "--output", "-"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("[[checks]]"), "- is stdout");
    // The starter's tables do not exist here: the check errors on the table, not on the config.
    let run = ws.run(&["run", "--config", "dualrun.toml", "--format", "json"]);
    assert_eq!(run.code, 2);
    assert!(
        run.json()["checks"][0]["error"]
            .as_str()
            .unwrap()
            .contains("warehouse/orders")
    );
}

/// The first hour: mistakes that used to pass silently are refused in one line, exit 2.
#[test]
fn params_sizes_and_history_checks_name_the_mistake() {
    let ws = nightly_workspace();
    let run = ws.run(&["run", "--config", "dualrun.toml", "--param", "minid=3"]);
    assert_trouble(
        &run,
        "--param 'minid': no query uses $minid (the queries use $min_id)",
    );
    let run = ws.run(&[
        "compare",
        "--batch",
        "o=batch/orders/",
        "--stream",
        "o=stream/orders/",
        "--sql",
        "SELECT id FROM o WHERE CAST($start_date AS DATE) > DATE '2000-01-01'",
        "--param",
        "start_date=2026-02-30",
    ]);
    assert_trouble(&run, "'start_date' = '2026-02-30' is not a date");
    // run_date names the night in the history: accepted whether or not a query uses it.
    let run = ws.run(&[
        "run",
        "--config",
        "dualrun.toml",
        "--check",
        "orders",
        "--param",
        "run_date=2026-11-25",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);

    let run = ws.run(&["run", "--config", "dualrun.toml", "--memory-limit", "512"]);
    assert_trouble(&run, "size '512' has no unit: 512 bytes? use e.g. 512MiB");
    let run = ws.run(&["run", "--config", "dualrun.toml", "--memory-limit", "1KiB"]);
    assert_trouble(&run, "memory limit '1KiB' is too small");

    let run = ws.run(&["history", "--config", "dualrun.toml", "--check", "nosuch"]);
    assert_trouble(&run, "--check 'nosuch' is not in the config");
    assert!(
        run.stderr.contains("orders, users, ghosts"),
        "{}",
        run.stderr
    );

    // An error record shows dashes, not zeros that read like figures.
    let run = ws.run(&["run", "--config", "dualrun.toml", "--check", "ghosts"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = ws.run(&["history", "--config", "dualrun.toml", "--check", "ghosts"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let ghost_line = run.stdout.lines().find(|l| l.contains("ghosts")).unwrap();
    assert!(
        ghost_line.contains("error") && ghost_line.contains('—'),
        "{ghost_line}"
    );
    assert!(!ghost_line.contains("0.000000"), "{ghost_line}");
}

#[test]
fn run_without_history_leaves_no_record() {
    let ws = nightly_workspace();
    let run = ws.run(&[
        "run",
        "--config",
        "dualrun.toml",
        "--check",
        "orders",
        "--no-history",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let history = ws.run(&["history", "--config", "dualrun.toml", "--format", "json"]);
    assert_eq!(history.json(), serde_json::json!([]), "{}", history.stdout);
    let run = ws.run(&["run", "--config", "dualrun.toml", "--check", "orders"]);
    assert_eq!(run.code, 1);
    let history = ws.run(&["history", "--config", "dualrun.toml", "--format", "json"]);
    assert_eq!(history.json().as_array().unwrap().len(), 1);
}

/// A panic is a dualrun bug, but `--format json` consumers still get a JSON error document.
#[test]
fn a_panic_still_prints_the_json_error_report() {
    let ws = nightly_workspace();
    let run = ws.run_with_env(
        &[
            "run",
            "--config",
            "dualrun.toml",
            "--format",
            "json",
            "--check",
            "orders",
        ],
        &[("DUALRUN_TEST_PANIC", "1".to_string())],
    );
    assert_eq!(run.code, 2);
    let json = run.json();
    assert_eq!(json["status"], "error");
    assert!(
        json["error"].as_str().unwrap().contains("internal error"),
        "{json}"
    );
    assert_eq!(json["checks"][0]["name"], "orders");
}

/// Every subcommand's help states its exit codes and shows an example whose lines survive an
/// 80-column wrap (no command split from its continuation).
#[test]
fn help_states_exit_codes_and_examples() {
    let ws = Workspace::new();
    for command in [
        "compare",
        "run",
        "validate",
        "serve",
        "history",
        "gate",
        "init",
        "completions",
    ] {
        let run = ws.run_with_env(&[command, "--help"], &[("COLUMNS", "80".to_string())]);
        assert_eq!(run.code, 0, "{command}: {}", run.stderr);
        assert!(
            run.stdout.contains("Exit codes"),
            "{command} --help:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("Example:"),
            "{command} --help:\n{}",
            run.stdout
        );
        for line in run.stdout.lines() {
            assert_ne!(
                line.trim(),
                "\\",
                "{command}: a lone continuation:\n{}",
                run.stdout
            );
        }
    }
    let run = ws.run(&["--help"]);
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "130"] {
        assert!(
            run.stdout.contains(&format!("  {code}")),
            "exit code {code}:\n{}",
            run.stdout
        );
    }
}

/// dualrun's stdout under a real pseudo-terminal of `columns` columns (script(1) gives the
/// command a pty; stty sizes it before dualrun asks), COLUMNS unset, stderr (progress) dropped.
fn in_terminal(ws: &Workspace, columns: u16, env: &str, args: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_dualrun");
    let command =
        format!("stty cols {columns} rows 40; unset COLUMNS; {env} {bin} {args} 2>/dev/null");
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(ws.dir.path())
        .env_remove("COLUMNS")
        .env_remove("NO_COLOR")
        .output()
        .expect("script(1) runs (bsdutils)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Under a real 80-column pseudo-terminal with COLUMNS unset, tables fit in 80 columns.
#[test]
fn text_report_fits_the_terminal_it_runs_in() {
    let ws = nightly_workspace();
    let text = in_terminal(
        &ws,
        80,
        "NO_COLOR=1",
        "run --config dualrun.toml --check orders",
    );
    assert!(text.contains("DIVERGED orders"), "{text}");
    let widest = text
        .lines()
        .map(|l| l.trim_end_matches('\r').chars().count())
        .max()
        .unwrap();
    assert!(widest <= 80, "a line is {widest} wide:\n{text}");
    assert!(text.contains("mismatched rows"), "{text}");
}

/// With colour on, the escape codes are not counted as text: every row of the mismatched-rows
/// table has the same visible width as its borders.
#[test]
fn coloured_tables_stay_aligned() {
    let ws = Workspace::new();
    ws.table(
        "b",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 'alpha beta'), (2, 'x')) AS t(id, s)",
    );
    ws.table(
        "s",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 'alpha bete'), (2, 'x')) AS t(id, s)",
    );
    let text = in_terminal(
        &ws,
        100,
        "unset NO_COLOR;",
        "compare --batch t=b/ --stream t=s/ --key id --sql 'SELECT id, s FROM t'",
    );
    assert!(text.contains('\x1b'), "colour on a terminal:\n{text}");
    let visible = |line: &str| {
        let mut out = String::new();
        let mut chars = line.trim_end_matches('\r').chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let table: Vec<String> = text
        .lines()
        .map(visible)
        .skip_while(|l| !l.contains("mismatched rows ("))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with(['┌', '│', '╞', '├', '└']))
        .collect();
    assert!(table.len() >= 4, "the table:\n{text}");
    let width = table[0].chars().count();
    for line in &table {
        assert_eq!(
            line.chars().count(),
            width,
            "misaligned:\n{}",
            table.join("\n")
        );
    }
}
