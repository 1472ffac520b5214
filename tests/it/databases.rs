//! Tables in real database servers (Debian's PostgreSQL and MariaDB, started once per
//! `make test` run by scripts/servers.sh, which exports DUALRUN_TEST_PG_ADMIN and
//! DUALRUN_TEST_MYSQL_*) and SQLite files: the database on one side, the same SQL on both.

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
    outcome(command.output().expect("psql is installed with postgresql"))
}

/// Whether a client succeeded, and what it printed (stdout, then stderr).
fn outcome(output: std::process::Output) -> (bool, String) {
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

/// `validate` on the orders check with its stream side at `stream` (a `scheme://` database
/// table): planned from the schema alone, the amount a DECIMAL(10, 2), the password hidden.
fn validates_from_the_schema(ws: &Workspace, stream: &str, scheme: &str) {
    ws.write(
        "dualrun.toml",
        &format!(
            "[tables.orders]\nbatch = \"batch/orders/\"\nstream = \"{stream}\"\n\
             [[checks]]\nname = \"orders\"\nsql = \"SELECT order_id, amount FROM orders\"\nkey = [\"order_id\"]\n"
        ),
    );
    let validated = ws.run(&["validate", "--config", "dualrun.toml"]);
    assert_eq!(
        validated.code, 0,
        "{}\n{}",
        validated.stdout, validated.stderr
    );
    let side = format!("orders (stream): database table at {scheme}://***@");
    assert!(
        validated.stdout.contains(&side) && validated.stdout.contains("amount Decimal128(10, 2)"),
        "{}",
        validated.stdout
    );
    assert!(!validated.stdout.contains("reader-secret"));
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
    validates_from_the_schema(
        &ws,
        &format!("{url}?table=shop.orders&sslmode=disable"),
        "postgres",
    );

    // A planted difference is found, and the password is never shown.
    batch(&ws, "7.26");
    let run = compare("SELECT order_id, amount FROM orders", "order_id");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts(), [4, 1, 0, 0, 0, 0]);
    assert!(!run.stdout.contains("reader-secret") && !run.stderr.contains("reader-secret"));
}

/// `SELECT order_id FROM orders` compared between `batch/orders/` and `stream`, keyed, as JSON,
/// with a timeout: the probe of every fault case.
fn compare_order_ids(ws: &Workspace, stream: &str, timeout: &str) -> Run {
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
        timeout,
    ])
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
    let run = |stream: &str| compare_order_ids(&ws, stream, "30s");
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
            "CREATE TABLE shop.odd (order_id integer, span tstzrange)",
            "INSERT INTO shop.odd VALUES (1, '[2026-11-24, 2026-11-25)')",
            "CREATE TABLE shop.docs (order_id integer, doc jsonb, raw json)",
            "INSERT INTO shop.docs VALUES (1, '{\"b\": 1, \"a\": [1, 2]}', '{\"b\":1}')",
        ],
    );
    assert!(ok, "{out}");
    let odd = run(&format!("orders={owner}?table=shop.odd&sslmode=disable"));
    assert_trouble(
        &odd,
        "The field 'span' has an unsupported data type: tstzrange",
    );
    // json and jsonb read as their text, as PostgreSQL renders it (jsonb normalised).
    ws.table(
        "batch/docs",
        Fmt::Parquet,
        "SELECT 1 AS order_id, '{\"a\": [1, 2], \"b\": 1}' AS doc, '{\"b\":1}' AS raw",
    );
    let docs = ws.run(&[
        "compare",
        "--batch",
        "docs=batch/docs/",
        "--stream",
        &format!("docs={owner}?table=shop.docs&sslmode=disable"),
        "--sql",
        "SELECT order_id, doc, raw FROM docs",
        "--key",
        "order_id",
        "--format",
        "json",
    ]);
    assert_eq!(docs.code, 0, "{}\n{}", docs.stdout, docs.stderr);
    assert_eq!(docs.counts(), [1, 0, 0, 0, 0, 0]);
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
    let slow = compare_order_ids(
        &ws,
        &format!("orders={owner}?table=shop.slow&sslmode=disable"),
        "2s",
    );
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
    // The connection dropped mid-scan (the server ends the session while rows are coming):
    // one line, exit 2, in bounded time.
    let killer = {
        let owner = owner.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            while started.elapsed() < std::time::Duration::from_secs(20) {
                let (_, killed) = psql(
                    &owner,
                    &[
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                       WHERE state = 'active' AND query LIKE '%shop\".\"slow%' \
                       AND pid <> pg_backend_pid()",
                    ],
                );
                if killed.trim() != "0" {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            false
        })
    };
    let dropped = compare_order_ids(
        &ws,
        &format!("orders={owner}?table=shop.slow&sslmode=disable"),
        "60s",
    );
    assert!(
        killer.join().unwrap(),
        "the scan never showed in pg_stat_activity"
    );
    assert_trouble(&dropped, "table 'orders' (stream side");
    assert!(
        !dropped.stderr.contains("admin-secret"),
        "{}",
        dropped.stderr
    );
    for failed in [&missing, &denied, &down, &no_table, &odd, &dropped] {
        assert_eq!(failed.json()["status"], "error");
        assert_eq!(failed.stderr.lines().count(), 1, "{}", failed.stderr);
    }
}

/// Every type the provider maps, 3,000 rows of each, against the same values in Parquet: date,
/// time, timestamp, timestamptz (UTC), boolean, text, bytea, uuid, int[], jsonb (text) and
/// numeric; one planted difference found exactly.
#[test]
fn every_postgresql_type_compares_with_parquet() {
    let url = database("dr_kinds");
    let port = std::env::var("DUALRUN_TEST_PG_PORT").unwrap();
    let owner = format!("postgres://admin:admin-secret@127.0.0.1:{port}/dr_kinds");
    let (ok, out) = psql(
        &owner,
        &[
            "CREATE TABLE shop.kinds AS SELECT i AS id, DATE '2026-01-01' + i AS d, \
             TIME '00:00' + i * INTERVAL '1 second' AS t, \
             TIMESTAMP '2026-01-01' + i * INTERVAL '1 minute' AS ts, \
             TIMESTAMPTZ '2026-01-01 00:00+02' + i * INTERVAL '1 minute' AS tz, \
             i % 2 = 0 AS b, 'row ' || i AS txt, convert_to('row ' || i, 'UTF8') AS bin, \
             md5(i::text)::uuid AS u, ARRAY[i, i + 1] AS arr, jsonb_build_object('n', i) AS j, \
             (i * 1.125)::numeric(12, 3) AS n FROM generate_series(1, 3000) AS i",
            "GRANT SELECT ON shop.kinds TO reader_dr_kinds",
        ],
    );
    assert!(ok, "{out}");
    let ws = Workspace::new();
    let parquet = |txt: &str| {
        ws.table(
            "batch/kinds",
            Fmt::Parquet,
            &format!(
                "SELECT CAST(value AS INT) AS id, \
                   CAST(to_timestamp_seconds(1767225600 + value * 86400) AS DATE) AS d, \
                   arrow_cast(value * 1000000000, 'Time64(Nanosecond)') AS t, \
                   CAST(to_timestamp_seconds(1767225600 + value * 60) AS TIMESTAMP) AS ts, \
                   arrow_cast(to_timestamp_seconds(1767225600 - 7200 + value * 60), \
                     'Timestamp(Nanosecond, Some(\"UTC\"))') AS tz, \
                   value % 2 = 0 AS b, {txt} AS txt, \
                   arrow_cast(concat('row ', value), 'Binary') AS bin, \
                   concat(substr(md5(CAST(value AS VARCHAR)), 1, 8), '-', \
                     substr(md5(CAST(value AS VARCHAR)), 9, 4), '-', \
                     substr(md5(CAST(value AS VARCHAR)), 13, 4), '-', \
                     substr(md5(CAST(value AS VARCHAR)), 17, 4), '-', \
                     substr(md5(CAST(value AS VARCHAR)), 21, 12)) AS u, \
                   make_array(CAST(value AS INT), CAST(value + 1 AS INT)) AS arr, \
                   concat('{{\"n\": ', value, '}}') AS j, \
                   CAST(value * 1.125 AS DECIMAL(12, 3)) AS n \
                 FROM generate_series(1, 3000)"
            ),
        )
    };
    let compare = || {
        ws.run(&[
            "compare",
            "--batch",
            "kinds=batch/kinds/",
            "--stream",
            &format!("kinds={url}?table=shop.kinds&sslmode=disable"),
            "--sql",
            "SELECT * FROM kinds",
            "--key",
            "id",
            "--format",
            "json",
        ])
    };
    parquet("concat('row ', value)");
    let run = compare();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.counts(), [3000, 0, 0, 0, 0, 0]);
    parquet("CASE WHEN value = 77 THEN 'row 77!' ELSE concat('row ', value) END");
    let run = compare();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.counts(), [2999, 1, 0, 0, 0, 0]);
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

/// Runs SQL as MariaDB's root over the test server's socket (`make test` starts it and exports
/// DUALRUN_TEST_MYSQL_SOCKET); returns whether it succeeded, and what it printed.
fn mariadb(database: &str, sql: &str) -> (bool, String) {
    let socket = std::env::var("DUALRUN_TEST_MYSQL_SOCKET").expect(
        "DUALRUN_TEST_MYSQL_SOCKET is not set: run the tests through `make test`, which starts MariaDB",
    );
    outcome(
        Command::new("mariadb")
            .args(["--no-defaults", "--socket", &socket, "-uroot", "-N", "-B"])
            .args(["-D", database, "-e", sql])
            .output()
            .expect("mariadb is installed with mariadb-server"),
    )
}

/// A MariaDB database of its own, with 3,000 orders and a reader that only has SELECT; returns
/// the reader's URL.
fn mariadb_database(name: &str) -> String {
    let (ok, out) = mariadb(
        "mysql",
        &format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}; \
             DROP USER IF EXISTS 'reader_{name}'@'%'; \
             CREATE USER 'reader_{name}'@'%' IDENTIFIED BY 'reader-secret'; \
             GRANT SELECT ON {name}.* TO 'reader_{name}'@'%';"
        ),
    );
    assert!(ok, "{out}");
    let (ok, out) = mariadb(
        name,
        "CREATE TABLE orders (order_id INT PRIMARY KEY, status VARCHAR(16), \
           amount DECIMAL(10, 2), created DATETIME, paid BOOLEAN, note JSON); \
         INSERT INTO orders SELECT seq, ELT(1 + seq % 3, 'new', 'paid', 'shipped'), seq * 1.25, \
           TIMESTAMP '2026-11-24 00:00:00' + INTERVAL seq MINUTE, seq % 2 = 0, \
           JSON_OBJECT('n', seq) FROM seq_1_to_3000;",
    );
    assert!(ok, "{out}");
    let admin = std::env::var("DUALRUN_TEST_MYSQL_ADMIN").unwrap();
    let port = admin.rsplit(':').next().unwrap().split('/').next().unwrap();
    format!("mysql://reader_{name}:reader-secret@127.0.0.1:{port}/{name}")
}

/// The same 3,000 orders in a SQLite file, with two amounts changed and one order missing.
fn sqlite_orders(ws: &Workspace) -> String {
    let file = ws.path("orders.db");
    let made = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             c.execute('CREATE TABLE orders (order_id INTEGER PRIMARY KEY, status TEXT, amount REAL, paid INTEGER)')\n\
             rows = [(i, ['new', 'paid', 'shipped'][i % 3], i * 1.25, int(i % 2 == 0)) for i in range(1, 3001)]\n\
             rows = [(i, s, a + (0.5 if i in (17, 2024) else 0), p) for (i, s, a, p) in rows if i != 999]\n\
             c.executemany('INSERT INTO orders VALUES (?, ?, ?, ?)', rows)\n\
             c.commit()",
        )
        .arg(&file)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    format!("sqlite://{}?table=orders", file.display())
}

/// MariaDB (batch) against SQLite (stream), 3,000 rows with planted divergences; MariaDB against
/// Parquet in every type; the filter goes to the server; the password is never shown.
#[test]
fn a_table_in_mariadb_compares_with_sqlite_and_parquet() {
    let url = mariadb_database("dr_my_compare");
    let ws = Workspace::new();
    let batch_side = format!("orders={url}?table=orders&sslmode=disabled");
    let compare = |batch: &str, stream: &str, sql: &str| {
        ws.run(&[
            "compare", "--batch", batch, "--stream", stream, "--sql", sql, "--key", "order_id",
            "--format", "json",
        ])
    };
    let run = compare(
        &batch_side,
        &format!("orders={}", sqlite_orders(&ws)),
        "SELECT order_id, status, CAST(amount AS DOUBLE) AS amount, CAST(paid AS BOOLEAN) AS paid \
         FROM orders",
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.counts(), [2997, 2, 1, 0, 0, 0], "{}", run.stdout);
    assert!(!run.stdout.contains("reader-secret") && !run.stderr.contains("reader-secret"));

    // Every type against Parquet: DECIMAL, DATETIME, BOOLEAN, JSON (text), VARCHAR.
    ws.table(
        "batch/orders",
        Fmt::Parquet,
        "SELECT CAST(value AS INT) AS order_id, \
           CASE value % 3 WHEN 0 THEN 'new' WHEN 1 THEN 'paid' ELSE 'shipped' END AS status, \
           CAST(value * 1.25 AS DECIMAL(10, 2)) AS amount, \
           CAST(to_timestamp_seconds(1795478400 + value * 60) AS TIMESTAMP) AS created, \
           value % 2 = 0 AS paid, concat('{\"n\": ', value, '}') AS note \
         FROM generate_series(1, 3000)",
    );
    let run = compare(
        "orders=batch/orders/",
        &batch_side,
        "SELECT order_id, status, amount, created, CAST(paid AS BOOLEAN) AS paid, note FROM orders",
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.counts(), [3000, 0, 0, 0, 0, 0]);

    // A run-date filter reaches the server: 60 of 3,000 rows come over the wire.
    let run = compare(
        "orders=batch/orders/",
        &batch_side,
        "SELECT order_id, amount FROM orders \
         WHERE created > TIMESTAMP '2026-11-25 00:00:00' AND created <= TIMESTAMP '2026-11-25 01:00:00'",
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.counts(), [60, 0, 0, 0, 0, 0]);
    let query = &run.check()["scan"]["database_queries"][0];
    assert_eq!(query["rows"], 60, "{query}");
    let sent = query["sql"].as_str().unwrap_or_default();
    assert!(sent.contains("WHERE") && sent.contains("created"), "{sent}");
    assert!(!sent.contains("status"), "only the columns used: {sent}");

    // validate plans it from the table's schema alone, the password hidden.
    validates_from_the_schema(
        &ws,
        &format!("{url}?table=orders&sslmode=disabled"),
        "mysql",
    );
}

/// Every session dualrun opens is read-only in the server; faults are one line, exit 2.
#[test]
fn mariadb_sessions_are_read_only_and_faults_end_in_one_line() {
    let url = mariadb_database("dr_my_faults");
    // The statement dualrun runs on each new session makes a write fail in the server itself,
    // even for a user allowed to write (root here).
    let (ok, out) = mariadb(
        "dr_my_faults",
        "SET SESSION TRANSACTION READ ONLY; INSERT INTO orders (order_id) VALUES (9999);",
    );
    assert!(!ok && out.contains("READ ONLY"), "{out}");
    let (_, count) = mariadb("dr_my_faults", "SELECT count(*) FROM orders");
    assert_eq!(count.trim(), "3000");

    let ws = Workspace::new();
    ws.table(
        "batch/orders",
        Fmt::Parquet,
        "SELECT CAST(value AS INT) AS order_id FROM generate_series(1, 3000)",
    );
    let run = |stream: &str, timeout: &str| compare_order_ids(&ws, stream, timeout);
    let missing = run(
        &format!("orders={url}?table=nosuch&sslmode=disabled"),
        "30s",
    );
    assert_trouble(&missing, "table 'orders' (stream side");
    assert!(missing.stderr.contains("nosuch"), "{}", missing.stderr);
    let wrong = url.replace("reader-secret", "wrong-secret");
    let denied = run(
        &format!("orders={wrong}?table=orders&sslmode=disabled"),
        "30s",
    );
    assert_trouble(&denied, "table 'orders' (stream side");
    assert!(!denied.stderr.contains("wrong-secret"), "{}", denied.stderr);
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    let down = run(
        &format!(
            "orders={}?table=orders&sslmode=disabled",
            url.replace(&format!(":{port}/"), ":1/")
        ),
        "30s",
    );
    assert_trouble(&down, "cannot connect");
    assert!(!down.stderr.contains("reader-secret"), "{}", down.stderr);
    let no_table = run(&format!("orders={url}?sslmode=disabled"), "30s");
    assert_trouble(&no_table, "?table=NAME");
    // Credentials from the environment instead of the URL: read, and never printed.
    let bare = url.replace("reader_dr_my_faults:reader-secret@", "");
    let from_env = |password: &str| {
        ws.run_with_env(
            &[
                "compare",
                "--batch",
                "orders=batch/orders/",
                "--stream",
                &format!("orders={bare}?table=orders&sslmode=disabled"),
                "--sql",
                "SELECT order_id FROM orders",
                "--key",
                "order_id",
                "--format",
                "json",
            ],
            &[
                ("MYSQL_USER", "reader_dr_my_faults".to_string()),
                ("MYSQL_PWD", password.to_string()),
            ],
        )
    };
    let good = from_env("reader-secret");
    assert_eq!(good.code, 0, "{}\n{}", good.stdout, good.stderr);
    let bad = from_env("wrong-secret-from-env");
    assert_trouble(&bad, "table 'orders' (stream side");
    assert!(!bad.stdout.contains("wrong-secret") && !bad.stderr.contains("wrong-secret"));

    // A check's timeout stops the statement in the server too: a view that sleeps a second a
    // row, 20 rows, a 2-second timeout; then the server runs nothing of it.
    let (ok, out) = mariadb(
        "dr_my_faults",
        "CREATE VIEW slow AS SELECT seq AS order_id FROM seq_1_to_20 WHERE SLEEP(1) = 0; \
         GRANT SELECT ON dr_my_faults.slow TO 'reader_dr_my_faults'@'%';",
    );
    assert!(ok, "{out}");
    let slow = run(&format!("orders={url}?table=slow&sslmode=disabled"), "2s");
    assert_trouble(&slow, "timed out after 2s");
    let started = std::time::Instant::now();
    loop {
        let (_, running) = mariadb(
            "mysql",
            "SELECT count(*) FROM information_schema.processlist WHERE info LIKE '%slow%' \
             AND id <> CONNECTION_ID()",
        );
        if running.trim() == "0" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the server still runs the timed-out query"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The connection dropped mid-scan (the server kills the session): one line, exit 2.
    let killer = std::thread::spawn(|| {
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(20) {
            let (_, ids) = mariadb(
                "mysql",
                "SELECT id FROM information_schema.processlist WHERE info LIKE '%slow%' \
                 AND id <> CONNECTION_ID()",
            );
            if let Some(id) = ids.split_whitespace().next() {
                return mariadb("mysql", &format!("KILL CONNECTION {id}")).0;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    });
    let dropped = run(&format!("orders={url}?table=slow&sslmode=disabled"), "60s");
    assert!(
        killer.join().unwrap(),
        "the scan never showed in the process list"
    );
    assert_trouble(&dropped, "table 'orders' (stream side");
    for failed in [&missing, &denied, &down, &no_table, &dropped] {
        assert_eq!(failed.json()["status"], "error");
        assert_eq!(failed.stderr.lines().count(), 1, "{}", failed.stderr);
    }
}
