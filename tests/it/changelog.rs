//! Stream tables written as change logs: compacted to the latest version per key as of the batch
//! cut-off, deletes removed, replays counted once, ties and unknown markers refused by name.

use crate::common::*;

const BATCH: &str = "SELECT * FROM (VALUES
    (1, 'paid', 30.0), (3, 'new', 7.5), (4, 'new', 40.0), (5, 'paid', 5.0)
) AS t(order_id, status, amount)";

/// A Flink changelog (+I, -U, +U, -D) with every case of the rules, cut off at 2026-11-25 24:00.
const FLINK: &str = "SELECT order_id, status, amount, op, CAST(ts AS TIMESTAMP) AS ts FROM (VALUES
    (1, 'new', 30.0, '+I', '2026-11-24 10:00:00'),
    (1, 'new', 30.0, '-U', '2026-11-24 11:00:00'),
    (1, 'paid', 30.0, '+U', '2026-11-24 11:00:00'),
    (2, 'new', 12.0, '+I', '2026-11-24 10:00:00'),
    (2, 'new', 12.0, '-D', '2026-11-25 09:00:00'),
    (3, 'new', 9.0, '+I', '2026-11-23 10:00:00'),
    (3, 'new', 9.0, '-D', '2026-11-24 10:00:00'),
    (3, 'new', 7.5, '+I', '2026-11-25 10:00:00'),
    (4, 'new', 40.0, '+I', '2026-11-24 10:00:00'),
    (4, 'paid', 40.0, '+U', '2026-11-26 08:00:00'),
    (5, 'paid', 5.0, '+I', '2026-11-25 23:59:59'),
    (5, 'paid', 5.0, '+I', '2026-11-25 23:59:59'),
    (6, 'new', 1.0, '+I', '2026-11-26 00:00:01')
) AS t(order_id, status, amount, op, ts)";

fn config(ws: &Workspace, changelog: &str) {
    config_at(ws, "s/orders/", changelog);
}

/// The orders check with the stream's change log at `stream`.
fn config_at(ws: &Workspace, stream: &str, changelog: &str) {
    ws.write(
        "dualrun.toml",
        &format!(
            r#"
[params]
run_date = "2026-11-25"

[tables.orders]
batch = "b/orders/"
stream = "{stream}"
stream_changelog = {changelog}

[[checks]]
name = "orders"
sql = "SELECT order_id, status, amount FROM orders"
key = ["order_id"]
"#
        ),
    );
}

/// Runs the orders check and requires a match.
fn matching(ws: &Workspace) -> Run {
    let run = run_orders(ws);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.check()["status"], "match", "{}", run.stdout);
    run
}

fn run_orders(ws: &Workspace) -> Run {
    ws.run(&["run", "--no-history", "--format", "json"])
}

#[test]
fn flink_changelog_compacts_to_the_snapshot_as_of_the_cut_off() {
    let ws = Workspace::new();
    ws.table("b/orders", Fmt::Parquet, BATCH);
    ws.table("s/orders", Fmt::Parquet, FLINK);
    config(
        &ws,
        r#"{ shape = "flink", key = ["order_id"], order_by = ["ts"] }"#,
    );
    let check = matching(&ws).check();
    assert_eq!(
        check["changelog"],
        serde_json::json!([{
            "table": "orders", "side": "stream", "change_rows": 13, "replayed_rows": 1,
            "ignored_after_as_of": 2, "keys": 5, "deletes_applied": 1, "rows": 4
        }])
    );

    // Without the bound, key 4's later update and key 6 count: a divergence, as it should be.
    config(
        &ws,
        r#"{ shape = "flink", key = ["order_id"], order_by = ["ts"], as_of = "none" }"#,
    );
    let run = run_orders(&ws);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts()[..4], [3, 1, 0, 1]);

    // The raw changes are a table of the stream side only.
    ws.write(
        "raw.toml",
        r#"
[params]
run_date = "2026-11-25"
[tables.orders]
batch = "b/orders/"
stream = "s/orders/"
stream_changelog = { shape = "flink", key = ["order_id"], order_by = ["ts"] }
[[checks]]
name = "raw"
sql = "SELECT count(*) AS n FROM orders__changes"
"#,
    );
    let run = ws.run(&["run", "--config", "raw.toml", "--no-history"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.contains("orders__changes"), "{}", run.stderr);
}

/// Writers that keep Arrow's schema (pyarrow, Polars, DataFusion) may store strings as
/// dictionaries: the row kind, a value and the ordering read back as such must compact alike.
#[test]
fn dictionary_encoded_change_rows_compact_like_plain_ones() {
    let ws = Workspace::new();
    ws.table("b/orders", Fmt::Parquet, BATCH);
    let dictionary =
        |column: &str| format!("arrow_cast({column}, 'Dictionary(Int32, Utf8)') AS {column}");
    ws.table(
        "s/orders",
        Fmt::Parquet,
        &format!(
            "SELECT order_id, {}, amount, {}, ts, {} FROM ({FLINK}) AS f",
            dictionary("status"),
            dictionary("op"),
            "arrow_cast(CAST(ts AS VARCHAR), 'Dictionary(Int32, Utf8)') AS version"
        ),
    );
    config(
        &ws,
        r#"{ shape = "flink", key = ["order_id"], order_by = ["version"], as_of_column = "ts" }"#,
    );
    let check = matching(&ws).check();
    assert_eq!(check["changelog"][0]["rows"], 4, "{check}");
    assert_eq!(check["changelog"][0]["replayed_rows"], 1, "{check}");
}

#[test]
fn ties_missing_order_and_unknown_markers_are_refused_by_name() {
    let ws = Workspace::new();
    ws.table("b/orders", Fmt::Parquet, BATCH);
    let with = |extra: &str| format!("{FLINK} UNION ALL {extra}");
    let cases = [
        (
            with(
                "SELECT 7, 'a', 1.0, '+I', CAST('2026-11-24 10:00:00' AS TIMESTAMP) UNION ALL SELECT 7, 'b', 1.0, '+U', CAST('2026-11-24 10:00:00' AS TIMESTAMP)",
            ),
            "1 key with two different latest changes tied on order_by (ts): 7",
        ),
        (
            with("SELECT 8, 'a', 1.0, '+I', CAST(NULL AS TIMESTAMP)"),
            "change rows without a value in order_by (ts) cannot be ordered, e.g. keys 8",
        ),
        (
            with("SELECT 9, 'a', 1.0, 'U', CAST('2026-11-24 10:00:00' AS TIMESTAMP)"),
            "column 'op' holds values other than +I, -U, +U, -D (e.g. U)",
        ),
    ];
    for (i, (stream, expected)) in cases.iter().enumerate() {
        ws.table(&format!("s{i}/orders"), Fmt::Parquet, stream);
        config_at(
            &ws,
            &format!("s{i}/orders/"),
            r#"{ shape = "flink", key = ["order_id"], order_by = ["ts"] }"#,
        );
        let run = run_orders(&ws);
        assert_eq!(run.code, 2, "{}", run.stdout);
        let error = run.check()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("table 'orders' (stream side) changelog"),
            "{error}"
        );
        assert!(error.contains(expected), "{error}");
    }
    // A tie that a later change decides is no coin toss: the log is read, key 7 is 'c'.
    ws.table(
        "tied-then-decided/orders",
        Fmt::Parquet,
        &with(
            "SELECT 7, 'a', 1.0, '+I', CAST('2026-11-24 10:00:00' AS TIMESTAMP) UNION ALL \
             SELECT 7, 'b', 1.0, '+U', CAST('2026-11-24 10:00:00' AS TIMESTAMP) UNION ALL \
             SELECT 7, 'c', 1.0, '+U', CAST('2026-11-24 12:00:00' AS TIMESTAMP)",
        ),
    );
    config_at(
        &ws,
        "tied-then-decided/orders/",
        r#"{ shape = "flink", key = ["order_id"], order_by = ["ts"] }"#,
    );
    let run = run_orders(&ws);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts()[..4], [4, 0, 0, 1], "{}", run.stdout);
    assert!(run.stdout.contains("\"c\""), "{}", run.stdout);

    // Several ordering columns: the source time ties, the log offset decides (key 1 ends
    // 'paid', key 3 '7.5' although its offset-2 change came with an earlier time). Replays:
    // key 5's latest change twice counts; key 3's older change twice does not (it never
    // reaches the table).
    ws.table(
        "two-orders/orders",
        Fmt::Parquet,
        "SELECT order_id, status, amount, CAST(ts AS TIMESTAMP) AS ts, log_offset FROM (VALUES
            (1, 'new', 30.0, '2026-11-24 10:00:00', 1), (1, 'paid', 30.0, '2026-11-24 10:00:00', 2),
            (3, 'new', 9.0, '2026-11-24 09:00:00', 2), (3, 'new', 9.0, '2026-11-24 09:00:00', 2),
            (3, 'new', 7.5, '2026-11-24 10:00:00', 1),
            (4, 'new', 40.0, '2026-11-24 10:00:00', 1), (5, 'paid', 5.0, '2026-11-24 10:00:00', 1),
            (5, 'paid', 5.0, '2026-11-24 10:00:00', 1)) AS t(order_id, status, amount, ts, log_offset)",
    );
    config_at(
        &ws,
        "two-orders/orders/",
        r#"{ shape = "upsert", key = ["order_id"], order_by = ["ts", "log_offset"] }"#,
    );
    let run = matching(&ws);
    assert_eq!(run.check()["changelog"][0]["replayed_rows"], 1);

    // A spec naming a column the changes do not have: exit 2 naming table, side and column.
    ws.table("s/orders", Fmt::Parquet, FLINK);
    config(
        &ws,
        r#"{ shape = "flink", key = ["id"], order_by = ["ts"] }"#,
    );
    let run = run_orders(&ws);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("table 'orders' (stream side")
            && run.stderr.contains("key column 'id'"),
        "{}",
        run.stderr
    );
}

#[test]
fn upsert_debezium_and_dedup_shapes() {
    let ws = Workspace::new();
    ws.table("b/orders", Fmt::Parquet, BATCH);
    // Upsert with tombstones (every value NULL) and, separately, with a delete flag.
    ws.table(
        "s/orders",
        Fmt::Parquet,
        "SELECT order_id, status, amount, CAST(ts AS TIMESTAMP) AS ts FROM (VALUES
            (1, 'paid', 30.0, '2026-11-24 10:00:00'), (2, 'new', 12.0, '2026-11-24 10:00:00'),
            (2, NULL, NULL, '2026-11-24 12:00:00'), (3, 'new', 7.5, '2026-11-24 10:00:00'),
            (4, 'new', 40.0, '2026-11-24 10:00:00'), (5, 'paid', 5.0, '2026-11-24 10:00:00'),
            (5, 'paid', 5.0, '2026-11-24 10:00:00')) AS t(order_id, status, amount, ts)",
    );
    config(
        &ws,
        r#"{ shape = "upsert", key = ["order_id"], order_by = ["ts"] }"#,
    );
    let run = matching(&ws);
    assert_eq!(run.check()["changelog"][0]["deletes_applied"], 1);

    ws.table(
        "s2/orders",
        Fmt::Parquet,
        "SELECT order_id, status, amount, gone, CAST(ts AS TIMESTAMP) AS ts FROM (VALUES
            (1, 'paid', 30.0, false, '2026-11-24 10:00:00'), (2, 'new', 12.0, true, '2026-11-24 10:00:00'),
            (3, 'new', 7.5, false, '2026-11-24 10:00:00'), (4, 'new', 40.0, false, '2026-11-24 10:00:00'),
            (5, 'paid', 5.0, false, '2026-11-24 10:00:00')) AS t(order_id, status, amount, gone, ts)",
    );
    config_at(
        &ws,
        "s2/orders/",
        r#"{ shape = "upsert", key = ["order_id"], order_by = ["ts"], deleted = "gone" }"#,
    );
    matching(&ws);

    // Debezium's flattened events: __op c/u/d/r, __deleted, __source_ts_ms in epoch millis.
    ws.table(
        "s3/orders",
        Fmt::Parquet,
        "SELECT * FROM (VALUES
            (1, 'new', 30.0, 'c', 'false', 1795514400000), (1, 'paid', 30.0, 'u', 'false', 1795514460000),
            (2, 'new', 12.0, 'r', 'false', 1795514400000), (2, 'new', 12.0, 'd', 'true', 1795514460000),
            (3, 'new', 7.5, 'c', 'false', 1795514400000), (4, 'new', 40.0, 'c', 'false', 1795514400000),
            (4, 'paid', 40.0, 'u', 'false', 1795680000000), (5, 'paid', 5.0, 'c', 'false', 1795514400000)
        ) AS t(order_id, status, amount, __op, __deleted, __source_ts_ms)",
    );
    config_at(
        &ws,
        "s3/orders/",
        r#"{ shape = "debezium", key = ["order_id"] }"#,
    );
    let run = matching(&ws);
    assert_eq!(run.check()["changelog"][0]["ignored_after_as_of"], 1);

    // The same events in Debezium's own envelope (before/after/op/source.ts_ms), as Kafka
    // Connect's JSON converter writes them, without and with the schema/payload wrapper.
    let events = [
        (None, Some((1, "new", 30.0)), "c", 1795514400000u64),
        (
            Some((1, "new", 30.0)),
            Some((1, "paid", 30.0)),
            "u",
            1795514460000,
        ),
        (None, Some((2, "new", 12.0)), "r", 1795514400000),
        (Some((2, "new", 12.0)), None, "d", 1795514460000),
        (None, Some((3, "new", 7.5)), "c", 1795514400000),
        (None, Some((4, "new", 40.0)), "c", 1795514400000),
        (
            Some((4, "new", 40.0)),
            Some((4, "paid", 40.0)),
            "u",
            1795680000000,
        ),
        (None, Some((5, "paid", 5.0)), "c", 1795514400000),
    ];
    let row = |r: Option<(i32, &str, f64)>| match r {
        Some((id, status, amount)) => {
            format!("{{\"order_id\": {id}, \"status\": \"{status}\", \"amount\": {amount:.1}}}")
        }
        None => "null".to_string(),
    };
    let (mut plain, mut wrapped) = (String::new(), String::new());
    for (before, after, op, ts) in events {
        let payload = format!(
            "{{\"before\": {}, \"after\": {}, \"op\": \"{op}\", \"ts_ms\": {}, \"source\": {{\"db\": \"shop\", \"ts_ms\": {ts}}}}}",
            row(before),
            row(after),
            ts + 7
        );
        plain.push_str(&payload);
        plain.push('\n');
        wrapped.push_str(&format!(
            "{{\"schema\": {{\"type\": \"struct\", \"name\": \"shop.orders.Envelope\"}}, \"payload\": {payload}}}\n"
        ));
    }
    for (dir, text) in [("s5/orders", &plain), ("s6/orders", &wrapped)] {
        ws.write(&format!("{dir}/events.json"), text);
        config_at(
            &ws,
            &format!("{dir}/"),
            r#"{ shape = "debezium", key = ["order_id"] }"#,
        );
        let run = matching(&ws);
        let stats = &run.check()["changelog"][0];
        assert_eq!(stats["ignored_after_as_of"], 1, "{dir}: {stats}");
        assert_eq!(stats["deletes_applied"], 1, "{dir}: {stats}");
        assert_eq!(stats["change_rows"], 8, "{dir}: {stats}");
    }

    // The same envelope as Kafka Connect's Avro converter writes it: `before`/`after` are
    // unions of null and the row record, `source` a record, `ts_ms` an optional long.
    let avro_row = |r: Option<(i32, &str, f64)>| {
        let ((id, status, amount), present) = (r.unwrap_or((0, "", 0.0)), r.is_some());
        format!(
            "CASE WHEN {present} THEN named_struct('order_id', CAST({id} AS INT), 'status', \
             '{status}', 'amount', CAST({amount:.1} AS DOUBLE)) END"
        )
    };
    let selects: Vec<String> = events
        .iter()
        .map(|&(before, after, op, ts)| {
            format!(
                "SELECT {} AS before, {} AS after, '{op}' AS op, CAST({} AS BIGINT) AS ts_ms, \
                 named_struct('db', 'shop', 'ts_ms', CAST({ts} AS BIGINT)) AS source",
                avro_row(before),
                avro_row(after),
                ts + 7
            )
        })
        .collect();
    ws.table("s7/orders", Fmt::Avro, &selects.join(" UNION ALL "));
    config_at(
        &ws,
        "s7/orders/",
        r#"{ shape = "debezium", key = ["order_id"] }"#,
    );
    let run = matching(&ws);
    let stats = &run.check()["changelog"][0];
    assert_eq!(stats["ignored_after_as_of"], 1, "avro: {stats}");
    assert_eq!(stats["deletes_applied"], 1, "avro: {stats}");
    assert_eq!(stats["change_rows"], 8, "avro: {stats}");

    // At-least-once appends: one row per event id.
    ws.table(
        "s4/orders",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 'paid', 30.0, 1), (3, 'new', 7.5, 1), (3, 'new', 7.5, 1),
            (4, 'new', 40.0, 1), (5, 'paid', 5.0, 1), (5, 'paid', 5.0, 1)) AS t(order_id, status, amount, seq)",
    );
    config_at(
        &ws,
        "s4/orders/",
        r#"{ shape = "dedup", key = ["order_id"], order_by = ["seq"], as_of = "none" }"#,
    );
    let run = matching(&ws);
    assert_eq!(run.check()["changelog"][0]["replayed_rows"], 2);
}

/// Debezium's envelope: an update that sets a column to NULL has it NULL in `after` and set in
/// `before`; the row is `after`, so the column is NULL (not the old value).
#[test]
fn a_debezium_update_to_null_reads_null() {
    let ws = Workspace::new();
    ws.table(
        "b/orders",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, CAST(NULL AS VARCHAR), 30.0), (2, 'new', 12.0)) AS t(order_id, status, amount)",
    );
    ws.write(
        "s/orders/events.json",
        concat!(
            r#"{"before": null, "after": {"order_id": 1, "status": "new", "amount": 30.0}, "op": "c", "ts_ms": 1795514400000}"#,
            "\n",
            r#"{"before": {"order_id": 1, "status": "new", "amount": 30.0}, "after": {"order_id": 1, "status": null, "amount": 30.0}, "op": "u", "ts_ms": 1795514460000}"#,
            "\n",
            r#"{"before": null, "after": {"order_id": 2, "status": "new", "amount": 12.0}, "op": "c", "ts_ms": 1795514400000}"#,
            "\n",
        ),
    );
    config(&ws, r#"{ shape = "debezium", key = ["order_id"] }"#);
    let run = matching(&ws);
    assert_eq!(run.check()["changelog"][0]["rows"], 2, "{}", run.stdout);
}

/// Debezium writes DECIMAL columns as base64 bytes in JSON unless told otherwise
/// (`decimal.handling.mode=precise`, its default). Compared as they are, the check fails naming
/// the column, the side and the way out; through `connect_decimal` in a stream view over the raw
/// change log they compare as the decimals they are, a planted cent included.
#[test]
fn debezium_base64_decimals_compare_through_connect_decimal() {
    use base64::Engine as _;
    let ws = Workspace::new();
    ws.table(
        "b/orders",
        Fmt::Parquet,
        "SELECT order_id, CAST(amount AS DECIMAL(10, 2)) AS amount FROM (VALUES \
         (1, 5.00), (2, -12.34), (3, 1234567.89), (4, 0.01)) AS t(order_id, amount)",
    );
    let base64 = |unscaled: i128| {
        let bytes = unscaled.to_be_bytes();
        // The shortest two's-complement form, as Kafka Connect writes it.
        let mut start = 0;
        while start < 15
            && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
                || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
        {
            start += 1;
        }
        base64::engine::general_purpose::STANDARD.encode(&bytes[start..])
    };
    // Order 4 arrives a cent off.
    let events: String = [(1, 500), (2, -1234), (3, 123456789), (4, 2)]
        .iter()
        .map(|(id, cents)| {
            format!(
                "{{\"before\": null, \"after\": {{\"order_id\": {id}, \"amount\": \"{}\"}}, \"op\": \"c\", \"ts_ms\": 1795514400000}}\n",
                base64(*cents)
            )
        })
        .collect();
    ws.write("s/orders/events.json", &events);
    let write_config = |tables: &str| {
        ws.write(
            "dualrun.toml",
            &format!(
                "[params]\nrun_date = \"2026-11-25\"\n\n{tables}\n\
                 [[checks]]\nname = \"orders\"\nsql = \"SELECT order_id, amount FROM orders\"\nkey = [\"order_id\"]\n"
            ),
        )
    };
    write_config(
        "[tables.orders]\nbatch = \"b/orders/\"\nstream = \"s/orders/\"\n\
         stream_changelog = { shape = \"debezium\", key = [\"order_id\"] }\n",
    );
    let run = run_orders(&ws);
    assert_trouble(
        &run,
        "column 'amount' (stream side): its text is read as Decimal128(10, 2)",
    );
    assert!(
        run.stderr.contains("connect_decimal(column, scale)"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["status"], "error", "{}", run.stdout);

    write_config(
        "[tables.orders_raw]\nstream = \"s/orders/\"\n\
         stream_changelog = { shape = \"debezium\", key = [\"order_id\"] }\n\n\
         [tables.orders]\nbatch = \"b/orders/\"\n\
         stream_view = \"SELECT order_id, CAST(connect_decimal(amount, 2) AS DECIMAL(10, 2)) AS amount FROM orders_raw\"\n",
    );
    let run = run_orders(&ws);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.counts(), [3, 1, 0, 0, 0, 0], "{}", run.stdout);
    let difference = &run.check()["samples"]["mismatched"][0]["differences"][0];
    assert_eq!(difference["batch"], "0.01", "{difference}");
    assert_eq!(difference["stream"], "0.02", "{difference}");
}

/// Raw events on the stream side (epoch millis, cents, a nested attribute) become the logical
/// table through a view; the same SQL then compares them with the batch table. Raw tables stay
/// on their side and out of the checks.
#[test]
fn per_side_views_turn_raw_events_into_the_logical_table() {
    let ws = Workspace::new();
    ws.table(
        "batch/events",
        Fmt::Parquet,
        "SELECT * FROM (VALUES \
         (1, TIMESTAMP '2025-12-01 00:00:00', CAST(10.50 AS DECIMAL(10, 2)), 'EU'), \
         (2, TIMESTAMP '2025-12-01 01:00:00', CAST(2.99 AS DECIMAL(10, 2)), 'US'), \
         (3, TIMESTAMP '2025-12-01 02:00:00', CAST(100.00 AS DECIMAL(10, 2)), 'EU')) \
         AS t(id, event_time, amount, region)",
    );
    // Id 3 arrives one cent off: the view must carry real values through.
    ws.write(
        "stream/events.ndjson",
        "{\"id\": 1, \"ts_ms\": 1764547200000, \"amount_cents\": 1050, \"attrs\": {\"region\": \"EU\"}}\n\
         {\"id\": 2, \"ts_ms\": 1764550800000, \"amount_cents\": 299, \"attrs\": {\"region\": \"US\"}}\n\
         {\"id\": 3, \"ts_ms\": 1764554400000, \"amount_cents\": 10001, \"attrs\": {\"region\": \"EU\"}}\n",
    );
    let view = "SELECT id, to_timestamp_millis(ts_ms) AS event_time, \
                CAST(amount_cents AS DECIMAL(12, 2)) / 100 AS amount, \
                attrs['region'] AS region FROM events_raw";
    ws.write(
        "dualrun.toml",
        &format!(
            "[tables.events_raw]\nstream = \"stream/\"\n\n\
             [tables.events]\nbatch = \"batch/events/\"\nstream_view = \"{view}\"\n\n\
             [[checks]]\nname = \"events\"\nsql = \"SELECT id, event_time, amount, region FROM events\"\nkey = [\"id\"]\n"
        ),
    );
    let run = ws.run(&[
        "run",
        "--config",
        "dualrun.toml",
        "--no-history",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts(), [2, 1, 0, 0, 0, 0], "{}", run.stdout);
    let differences = &run.check()["samples"]["mismatched"][0]["differences"];
    assert_eq!(differences[0]["column"], "amount", "{differences}");

    // validate shows where each side of each table comes from, and its columns.
    let validated = ws.run(&["validate", "--config", "dualrun.toml"]);
    assert!(
        validated
            .stdout
            .contains("events (stream): view: SELECT id, to_timestamp_millis(ts_ms)"),
        "{}",
        validated.stdout
    );
    assert!(
        validated
            .stdout
            .contains("events_raw (stream, raw): files at"),
        "{}",
        validated.stdout
    );
    assert!(
        validated.stdout.contains("ts_ms Int64"),
        "{}",
        validated.stdout
    );

    // The same from the command line.
    let flags = ws.run(&[
        "compare",
        "--batch",
        "events=batch/events/",
        "--stream",
        "events_raw=stream/",
        "--stream-view",
        &format!("events={view}"),
        "--sql",
        "SELECT id, amount FROM events",
        "--key",
        "id",
        "--format",
        "json",
    ]);
    assert_eq!(flags.code, 1, "{}", flags.stderr);
    assert_eq!(flags.counts(), [2, 1, 0, 0, 0, 0]);

    // A check cannot read a raw table, and a side cannot read the other side's raw tables.
    assert_trouble(
        &ws.run(&[
            "compare",
            "--batch",
            "events=batch/events/",
            "--stream",
            "events_raw=stream/",
            "--stream-view",
            &format!("events={view}"),
            "--sql",
            "SELECT * FROM events_raw",
        ]),
        "table 'events_raw' exists on the stream side only",
    );
    assert_trouble(
        &ws.run(&[
            "compare",
            "--batch-view",
            "events=SELECT * FROM events_raw",
            "--stream",
            "events_raw=stream/",
            "--stream-view",
            &format!("events={view}"),
            "--sql",
            "SELECT * FROM events",
        ]),
        "'events_raw' is a raw table of the stream side, and each side reads only its own tables",
    );
    assert_trouble(
        &ws.run(&[
            "compare",
            "--batch",
            "events=batch/events/",
            "--stream-view",
            &format!("events={view}"),
            "--sql",
            "SELECT * FROM events",
        ]),
        "table 'events_raw' is not defined",
    );
    assert_trouble(
        &ws.run(&[
            "compare",
            "--batch",
            "events=batch/events/",
            "--stream-view",
            "events=DELETE FROM x",
            "--stream",
            "x=stream/",
            "--sql",
            "SELECT * FROM events",
        ]),
        "is not a SELECT",
    );
}

/// Rows extra in a change-log stream whose keys the log never deletes are named as missed
/// deletes; a key whose delete came after the cut-off is extra too, but not for that reason.
#[test]
fn extra_keys_the_log_never_deletes_are_missed_deletes() {
    let ws = Workspace::new();
    ws.table("b/orders", Fmt::Parquet, BATCH);
    let log = |late_delete: bool| {
        format!(
            "SELECT order_id, status, amount, gone, CAST(ts AS TIMESTAMP) AS ts FROM (VALUES
                (1, 'paid', 30.0, false, '2026-11-24 10:00:00'), (3, 'new', 7.5, false, '2026-11-24 10:00:00'),
                (4, 'new', 40.0, false, '2026-11-24 10:00:00'), (5, 'paid', 5.0, false, '2026-11-24 10:00:00'),
                (7, 'new', 1.0, false, '2026-11-24 10:00:00'), (8, 'new', 2.0, false, '2026-11-24 10:00:00')
                {}) AS t(order_id, status, amount, gone, ts)",
            if late_delete {
                ", (7, 'new', 1.0, true, '2026-11-27 10:00:00'), (8, 'new', 2.0, true, '2026-11-27 10:00:00')"
            } else {
                ""
            }
        )
    };
    let spec = r#"{ shape = "upsert", key = ["order_id"], order_by = ["ts"], deleted = "gone" }"#;
    ws.table("s/orders", Fmt::Parquet, &log(false));
    config(&ws, spec);
    let run = run_orders(&ws);
    assert_eq!(run.counts(), [4, 0, 0, 2, 0, 0], "{}", run.stdout);
    let findings = run.check()["findings"].clone();
    let missed = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "missed_deletes")
        .unwrap_or_else(|| panic!("no missed_deletes finding: {findings}"));
    assert_eq!(missed["rows"], 2);
    assert!(
        missed["evidence"]
            .as_str()
            .unwrap()
            .starts_with("all 2 rows extra in stream"),
        "{missed}"
    );

    // The deletes exist, after the cut-off: extra tonight, but not missed.
    ws.table("s2/orders", Fmt::Parquet, &log(true));
    config_at(&ws, "s2/orders/", spec);
    let run = run_orders(&ws);
    assert_eq!(run.counts(), [4, 0, 0, 2, 0, 0], "{}", run.stdout);
    assert!(
        !run.stdout.contains("missed_deletes"),
        "{}",
        run.check()["findings"]
    );
}

/// 306,000 changes over 60,000 keys (a long text, then a number, order them; every 50th change
/// replayed; deletes): the same compaction with and without a memory limit under which the
/// aggregate spills (32MiB: DataFusion's debug log shows the spilled streams merged; the plan
/// before the one-aggregate compaction needed 74 MiB), and the same rows a window function
/// picks for the batch side.
#[test]
fn a_change_log_larger_than_the_memory_limit_compacts_the_same() {
    let ws = Workspace::new();
    let changes = "SELECT (v * 7919) % 60000 AS order_id, 's' || CAST(v % 97 AS VARCHAR) AS status,
            CAST(v % 1000 AS DOUBLE) / 4.0 AS amount, v % 13 = 0 AS gone,
            'version-' || lpad(CAST((v * 48271) % 7 AS VARCHAR), 24, '0') AS version, v AS seq
        FROM generate_series(0, 299999) AS t(v)";
    ws.table(
        "s/orders",
        Fmt::Parquet,
        &format!("{changes} UNION ALL SELECT * FROM ({changes}) AS c WHERE seq % 50 = 0"),
    );
    ws.table(
        "b/orders",
        Fmt::Parquet,
        &format!(
            "SELECT order_id, status, amount FROM (SELECT *, row_number() OVER
                (PARTITION BY order_id ORDER BY version DESC, seq DESC) AS n FROM ({changes}) AS c) AS l
             WHERE n = 1 AND NOT gone"
        ),
    );
    let mut figures = Vec::new();
    for engine in ["", "[engine]\nmemory_limit = \"32MiB\"\n"] {
        ws.write(
            "dualrun.toml",
            &format!(
                r#"{engine}
[tables.orders]
batch = "b/orders/"
stream = "s/orders/"
stream_changelog = {{ shape = "upsert", key = ["order_id"], order_by = ["version", "seq"], deleted = "gone", as_of = "none" }}

[[checks]]
name = "orders"
sql = "SELECT order_id, status, amount FROM orders"
key = ["order_id"]
"#
            ),
        );
        let run = matching(&ws);
        let changelog = run.check()["changelog"][0].clone();
        assert_eq!(changelog["change_rows"], 306_000, "{changelog}");
        assert_eq!(changelog["keys"], 60_000, "{changelog}");
        assert!(
            changelog["deletes_applied"].as_u64().unwrap() > 0,
            "{changelog}"
        );
        assert!(
            changelog["replayed_rows"].as_u64().unwrap() > 0,
            "{changelog}"
        );
        figures.push(changelog);
    }
    assert_eq!(figures[0], figures[1]);
}
