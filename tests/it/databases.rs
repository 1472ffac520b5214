//! Tables in a real PostgreSQL server (Debian's package, started once per `make test` run by
//! scripts/servers.sh, which exports DUALRUN_TEST_PG_ADMIN): the stream side in the database,
//! the batch side in Parquet, the same SQL on both.

use std::process::Command;

use crate::common::*;

/// The admin URL of the test server; `make test` starts it.
fn admin() -> String {
    std::env::var("DUALRUN_TEST_PG_ADMIN").expect(
        "DUALRUN_TEST_PG_ADMIN is not set: run the tests through `make test`, which starts PostgreSQL \
         (or: eval \"$(scripts/servers.sh start)\" before cargo test)",
    )
}

/// Runs each statement on its own (DROP/CREATE DATABASE cannot share a transaction).
fn psql(url: &str, statements: &[&str]) -> (bool, String) {
    let mut command = Command::new("psql");
    command.args([url, "-v", "ON_ERROR_STOP=1", "-At"]);
    for statement in statements {
        command.args(["-c", statement]);
    }
    let output = command.output().expect("psql is installed with postgresql");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// A database of its own per test, with a reader role that only has SELECT.
fn database(name: &str) -> String {
    let admin = admin();
    let port = std::env::var("DUALRUN_TEST_PG_PORT").unwrap();
    let (ok, out) = psql(
        &admin,
        &[
            &format!("DROP DATABASE IF EXISTS {name}"),
            &format!("DROP ROLE IF EXISTS reader_{name}"),
            &format!("CREATE DATABASE {name}"),
            &format!("CREATE ROLE reader_{name} LOGIN PASSWORD 'reader-secret'"),
        ],
    );
    assert!(ok, "{out}");
    let url = format!("postgres://admin:admin-secret@127.0.0.1:{port}/{name}");
    let grant = format!(
        "GRANT USAGE ON SCHEMA shop TO reader_{name}; GRANT SELECT ON ALL TABLES IN SCHEMA shop TO reader_{name};"
    );
    let (ok, out) = psql(
        &url,
        &[
            "CREATE SCHEMA shop; \
         CREATE TABLE shop.orders (order_id integer PRIMARY KEY, status text, amount numeric(10, 2), \
                                   created timestamptz, paid boolean); \
         INSERT INTO shop.orders VALUES \
           (1, 'paid', 30.00, '2026-11-24 10:00:00+00', true), \
           (2, 'new', 12.50, '2026-11-24 11:30:00+00', false), \
           (3, 'paid', 7.25, '2026-11-24 12:00:00+01', true), \
           (4, 'New', 40.00, '2026-11-25 08:00:00+00', false), \
           (5, NULL, 1.00, '2026-11-25 09:00:00+00', NULL);",
            &grant,
        ],
    );
    assert!(ok, "{out}");
    format!("postgres://reader_{name}:reader-secret@127.0.0.1:{port}/{name}")
}

fn batch(ws: &Workspace, third_amount: &str) {
    ws.table(
        "batch/orders",
        Fmt::Parquet,
        &format!(
            "SELECT * FROM (VALUES \
             (1, 'paid', CAST(30.00 AS DECIMAL(10, 2)), TIMESTAMP '2026-11-24 10:00:00', true), \
             (2, 'new', CAST(12.50 AS DECIMAL(10, 2)), TIMESTAMP '2026-11-24 11:30:00', false), \
             (3, 'paid', CAST({third_amount} AS DECIMAL(10, 2)), TIMESTAMP '2026-11-24 11:00:00', true), \
             (4, 'New', CAST(40.00 AS DECIMAL(10, 2)), TIMESTAMP '2026-11-25 08:00:00', false), \
             (5, CAST(NULL AS VARCHAR), CAST(1.00 AS DECIMAL(10, 2)), TIMESTAMP '2026-11-25 09:00:00', CAST(NULL AS BOOLEAN))) \
             AS t(order_id, status, amount, created, paid)"
        ),
    );
}

#[test]
fn a_stream_table_in_postgresql_compares_with_parquet() {
    let url = database("dr_compare");
    let ws = Workspace::new();
    batch(&ws, "7.25");
    let stream = format!("orders={url}?table=shop.orders&sslmode=disable");
    let compare = |sql: &str, key: &str| {
        ws.run(&[
            "compare",
            "--batch",
            "orders=batch/orders/",
            "--stream",
            &stream,
            "--sql",
            sql,
            "--key",
            key,
            "--format",
            "json",
        ])
    };
    // Every column, numeric, timestamptz (UTC) and boolean included: the same rows match.
    let run = compare(
        "SELECT order_id, status, amount, CAST(created AS TIMESTAMP) AS created, paid FROM orders",
        "order_id",
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.counts(), [5, 0, 0, 0, 0, 0]);
    // What PostgreSQL would answer differently if the query ran there (integer division, string
    // order under its collation, NULL order, LIMIT after ORDER BY): one engine, the same answer.
    let run = compare(
        "SELECT order_id, order_id / 2 AS half, status FROM orders \
         ORDER BY status NULLS FIRST, order_id LIMIT 4",
        "order_id",
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.counts(), [4, 0, 0, 0, 0, 0]);
    // An aggregate with a filter: DataFusion evaluates it on both sides.
    let run = compare(
        "SELECT status, count(*) AS n, sum(amount) AS total, avg(order_id) AS mean_id \
         FROM orders WHERE created < TIMESTAMP '2026-11-25 00:00:00' GROUP BY status",
        "status",
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.counts(), [2, 0, 0, 0, 0, 0]);

    // Projections and filters reach the database: the query it receives says so.
    let run = compare(
        "SELECT order_id, amount FROM orders WHERE order_id = 3",
        "order_id",
    );
    assert_eq!(run.counts(), [1, 0, 0, 0, 0, 0]);
    let query = &run.check()["scan"]["database_queries"][0];
    // One row of five came over the wire.
    assert_eq!(query["rows"], 1, "{query}");
    let sent = query["sql"].as_str().unwrap_or_default().to_string();
    assert!(
        sent.contains("WHERE") && sent.contains("order_id") && sent.contains('3'),
        "{sent}"
    );
    assert!(
        !sent.contains("status") && !sent.contains("created"),
        "only the columns used: {sent}"
    );

    // validate plans a database-backed check from the table's schema alone.
    ws.write(
        "dualrun.toml",
        &format!(
            "[tables.orders]\nbatch = \"batch/orders/\"\nstream = \"{url}?table=shop.orders&sslmode=disable\"\n\
             [[checks]]\nname = \"orders\"\nsql = \"SELECT order_id, amount FROM orders\"\nkey = [\"order_id\"]\n"
        ),
    );
    let validated = ws.run(&["validate", "--config", "dualrun.toml"]);
    assert_eq!(
        validated.code, 0,
        "{}\n{}",
        validated.stdout, validated.stderr
    );
    assert!(
        validated
            .stdout
            .contains("orders (stream): database table at postgres://***@"),
        "{}",
        validated.stdout
    );
    assert!(
        validated.stdout.contains("amount Decimal128(10, 2)"),
        "{}",
        validated.stdout
    );
    assert!(!validated.stdout.contains("reader-secret"));

    // A planted difference is found, and the password is never shown.
    batch(&ws, "7.26");
    let run = compare("SELECT order_id, amount FROM orders", "order_id");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts(), [4, 1, 0, 0, 0, 0]);
    assert!(!run.stdout.contains("reader-secret") && !run.stderr.contains("reader-secret"));
}

#[test]
fn sessions_are_read_only_and_faults_end_in_one_line() {
    let url = database("dr_faults");
    // The session options dualrun connects with make any write fail in the server itself.
    let read_only = Command::new("psql")
        .env("PGOPTIONS", "-c default_transaction_read_only=on")
        .args([
            &url,
            "-Atc",
            "INSERT INTO shop.orders VALUES (9, 'x', 1, now(), true)",
        ])
        .output()
        .unwrap();
    assert!(!read_only.status.success());
    assert!(
        String::from_utf8_lossy(&read_only.stderr).contains("read-only transaction"),
        "{read_only:?}"
    );

    let ws = Workspace::new();
    batch(&ws, "7.25");
    let run = |stream: &str| {
        ws.run(&[
            "compare",
            "--batch",
            "orders=batch/orders/",
            "--stream",
            stream,
            "--sql",
            "SELECT order_id FROM orders",
            "--key",
            "order_id",
            "--format",
            "json",
            "--timeout",
            "30s",
        ])
    };
    let missing = run(&format!("orders={url}?table=shop.nosuch&sslmode=disable"));
    assert_trouble(&missing, "table 'orders' (stream side");
    assert!(missing.stderr.contains("shop.nosuch"), "{}", missing.stderr);
    let wrong = url.replace("reader-secret", "wrong-secret");
    let denied = run(&format!("orders={wrong}?table=shop.orders&sslmode=disable"));
    assert_trouble(&denied, "table 'orders' (stream side");
    assert!(!denied.stderr.contains("wrong-secret"), "{}", denied.stderr);
    let down = run(&format!(
        "orders={}?table=shop.orders&sslmode=disable",
        url.replace(
            &format!(":{}/", std::env::var("DUALRUN_TEST_PG_PORT").unwrap()),
            ":1/"
        )
    ));
    assert_trouble(&down, "cannot connect");
    assert!(!down.stderr.contains("reader-secret"), "{}", down.stderr);
    let no_table = run(&format!("orders={url}?sslmode=disable"));
    assert_trouble(&no_table, "?table=SCHEMA.NAME");
    // A column type dualrun cannot map is refused by name, never read as NULL.
    let port = std::env::var("DUALRUN_TEST_PG_PORT").unwrap();
    let owner = format!("postgres://admin:admin-secret@127.0.0.1:{port}/dr_faults");
    let (ok, out) = psql(
        &owner,
        &[
            "CREATE TABLE shop.odd (order_id integer, doc jsonb)",
            "INSERT INTO shop.odd VALUES (1, '{}')",
        ],
    );
    assert!(ok, "{out}");
    let odd = run(&format!("orders={owner}?table=shop.odd&sslmode=disable"));
    assert_trouble(&odd, "The field 'doc' has an unsupported data type: jsonb");
    assert!(!odd.stderr.contains("admin-secret"), "{}", odd.stderr);
    // A check's timeout ends the query on the server too (statement_timeout), not only in
    // dualrun: a view that takes a second per row, 20 rows, a 2-second timeout.
    let (ok, out) = psql(
        &owner,
        &[
            "CREATE VIEW shop.slow AS SELECT order_id, pg_sleep(1)::text AS s \
           FROM generate_series(1, 20) AS order_id",
        ],
    );
    assert!(ok, "{out}");
    let slow = ws.run(&[
        "compare",
        "--batch",
        "orders=batch/orders/",
        "--stream",
        &format!("orders={owner}?table=shop.slow&sslmode=disable"),
        "--sql",
        "SELECT order_id FROM orders",
        "--key",
        "order_id",
        "--timeout",
        "2s",
    ]);
    assert_trouble(&slow, "timed out after 2s");
    let running = || {
        psql(
            &owner,
            &[
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
               AND query LIKE '%shop\".\"slow%' AND pid <> pg_backend_pid()",
            ],
        )
        .1
        .trim()
        .to_string()
    };
    let started = std::time::Instant::now();
    while running() != "0" {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the server still runs the timed-out query"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for failed in [&missing, &denied, &down, &no_table, &odd] {
        assert_eq!(failed.json()["status"], "error");
        assert_eq!(failed.stderr.lines().count(), 1, "{}", failed.stderr);
    }
}

/// A SQLite file (as a stream sink might leave) compared with Parquet, opened read-only: the file
/// is byte for byte the same afterwards, journal mode included.
#[test]
fn a_stream_table_in_sqlite_is_read_without_touching_the_file() {
    let ws = Workspace::new();
    batch(&ws, "7.25");
    let file = ws.path("stream.db");
    let made = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             c.execute('CREATE TABLE orders (order_id INTEGER PRIMARY KEY, status TEXT, amount REAL)')\n\
             c.executemany('INSERT INTO orders VALUES (?, ?, ?)', [(1, 'paid', 30.0), (2, 'new', 12.5), (3, 'paid', 7.25), (4, 'New', 40.0), (5, None, 1.0)])\n\
             c.commit()",
        )
        .arg(&file)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let before = std::fs::read(&file).unwrap();
    let stream = format!("orders=sqlite://{}?table=orders", file.display());
    let run = ws.run(&[
        "compare",
        "--batch",
        "orders=batch/orders/",
        "--stream",
        &stream,
        "--sql",
        "SELECT order_id, status, CAST(amount AS DOUBLE) AS amount FROM orders",
        "--key",
        "order_id",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.counts(), [5, 0, 0, 0, 0, 0]);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the SQLite file changed"
    );
    assert!(
        !ws.path("stream.db-wal").exists(),
        "a write-ahead log appeared"
    );
    let missing = ws.run(&[
        "compare",
        "--batch",
        "orders=batch/orders/",
        "--stream",
        "orders=sqlite://nowhere.db?table=orders",
        "--sql",
        "SELECT * FROM orders",
    ]);
    assert_trouble(&missing, "SQLite file nowhere.db does not exist");
}
