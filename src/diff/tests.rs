//! The comparison rules, each with exact counts, on results planned from SQL literals. The
//! integration tests repeat the important ones through the binary on real files.

use std::time::Duration;

use super::*;
use crate::config::{CheckSpec, EngineSpec, JoinChoice, Tolerance};

fn check(key: &[&str], tolerances: &[(&str, Tolerance)], ignore: &[&str]) -> CheckSpec {
    CheckSpec {
        name: "t".into(),
        sql: String::new(),
        sql_origin: "test".into(),
        key: key.iter().map(|s| s.to_string()).collect(),
        tolerances: tolerances
            .iter()
            .map(|(c, t)| (c.to_string(), t.clone()))
            .collect(),
        ignore: ignore.iter().map(|s| s.to_string()).collect(),
        sample: 5,
        gate: Default::default(),
        window_end: None,
        lateness: None,
    }
}

async fn diff_with(
    engine_spec: EngineSpec,
    batch: &str,
    stream: &str,
    spec: &CheckSpec,
) -> Result<DiffResult> {
    let engine = Engine::new(&engine_spec)?;
    let state = engine.ctx.state();
    let b = state.create_logical_plan(batch).await?;
    let s = state.create_logical_plan(stream).await?;
    run(
        &engine,
        &crate::catalog::Catalog::default(),
        spec,
        b,
        s,
        None,
    )
    .await
}

async fn diff(batch: &str, stream: &str, spec: &CheckSpec) -> DiffResult {
    let hash = diff_with(EngineSpec::default(), batch, stream, spec)
        .await
        .expect("diff runs");
    // Every rule must hold whichever join pairs the rows.
    let sort_merge = EngineSpec {
        join: JoinChoice::SortMerge,
        ..Default::default()
    };
    let merged = diff_with(sort_merge, batch, stream, spec)
        .await
        .expect("diff runs");
    assert_eq!(
        hash.counts, merged.counts,
        "hash and sort-merge joins disagree"
    );
    assert_eq!(hash.rows, merged.rows);
    hash
}

fn counts(
    matched: u64,
    mismatched: u64,
    missing: u64,
    extra: u64,
    dup_b: u64,
    dup_s: u64,
) -> Counts {
    Counts {
        matched,
        mismatched,
        missing_in_stream: missing,
        extra_in_stream: extra,
        duplicate_keys_batch: dup_b,
        duplicate_keys_stream: dup_s,
    }
}

#[tokio::test]
async fn identical_results_match() {
    let sql =
        "SELECT * FROM (VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, NULL, 2.5)) AS t(id, name, x)";
    let d = diff(sql, sql, &check(&["id"], &[], &[])).await;
    assert_eq!(d.counts, counts(3, 0, 0, 0, 0, 0));
    assert_eq!(
        d.rows,
        RowCounts {
            batch: 3,
            stream: 3
        }
    );
    assert_eq!(
        d.columns
            .iter()
            .map(|c| (c.name.as_str(), c.mismatched))
            .collect::<Vec<_>>(),
        [("name", 0), ("x", 0)]
    );
}

#[tokio::test]
async fn null_nan_and_negative_zero_semantics() {
    let b = "SELECT * FROM (VALUES (1, CAST(NULL AS DOUBLE)), (2, CAST('NaN' AS DOUBLE)), (3, -0.0), (4, 1.0), (5, CAST(NULL AS DOUBLE)), (6, CAST('NaN' AS DOUBLE))) AS t(id, x)";
    let s = "SELECT * FROM (VALUES (1, CAST(NULL AS DOUBLE)), (2, -CAST('NaN' AS DOUBLE)), (3, 0.0), (4, CAST(NULL AS DOUBLE)), (5, 0.0), (6, 1.0)) AS t(id, x)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    // NULL = NULL, NaN = −NaN, −0.0 = 0.0; value vs NULL and NaN vs number differ.
    assert_eq!(d.counts, counts(3, 3, 0, 0, 0, 0));
}

#[tokio::test]
async fn tolerances_are_inclusive_and_never_accept_nan_or_infinity() {
    let b = "SELECT * FROM (VALUES (1, 1.0), (2, 1.0), (3, 100.0), (4, 100.0), (5, CAST('NaN' AS DOUBLE)), (6, CAST('Infinity' AS DOUBLE)), (7, CAST('Infinity' AS DOUBLE)), (8, 5.0)) AS t(id, x)";
    let s = "SELECT * FROM (VALUES (1, 1.5), (2, 1.5000001), (3, 101.0), (4, 102.5), (5, 1.0), (6, CAST('Infinity' AS DOUBLE)), (7, 1e308), (8, CAST(NULL AS DOUBLE))) AS t(id, x)";
    let tolerance = Tolerance::Numeric {
        abs: 0.5,
        rel: 0.01,
    };
    let d = diff(b, s, &check(&["id"], &[("x", tolerance)], &[])).await;
    // within: 1 (|0.5| ≤ 0.5 + 0.015), 3 (1 ≤ 0.5 + 1.01), 6 (inf = inf)
    // outside: 2? |0.5000001| ≤ 0.5 + 0.015000001 → within; 4 (2.5 > 1.525), 5 NaN, 7 inf vs finite, 8 NULL
    assert_eq!(d.counts, counts(4, 4, 0, 0, 0, 0));

    let exact_abs = Tolerance::Numeric { abs: 0.5, rel: 0.0 };
    let b = "SELECT * FROM (VALUES (1, 1.0), (2, 1.0), (3, 10)) AS t(id, x)";
    let s = "SELECT * FROM (VALUES (1, 1.5), (2, 1.5000001), (3, 11)) AS t(id, x)";
    let d = diff(b, s, &check(&["id"], &[("x", exact_abs)], &[])).await;
    assert_eq!(d.counts, counts(1, 2, 0, 0, 0, 0));
}

#[tokio::test]
async fn integer_and_decimal_tolerances() {
    let b = "SELECT * FROM (VALUES (1, 100, CAST(10.00 AS DECIMAL(10,2))), (2, 100, CAST(10.00 AS DECIMAL(10,2)))) AS t(id, n, d)";
    let s = "SELECT * FROM (VALUES (1, 101, CAST(10.01 AS DECIMAL(10,2))), (2, 103, CAST(10.02 AS DECIMAL(10,2)))) AS t(id, n, d)";
    let spec = check(
        &["id"],
        &[
            ("n", Tolerance::Numeric { abs: 1.0, rel: 0.0 }),
            (
                "d",
                Tolerance::Numeric {
                    abs: 0.01,
                    rel: 0.0,
                },
            ),
        ],
        &[],
    );
    let d = diff(b, s, &spec).await;
    assert_eq!(d.counts, counts(1, 1, 0, 0, 0, 0));
    assert_eq!(
        d.columns.iter().map(|c| c.mismatched).collect::<Vec<_>>(),
        [1, 1]
    );
}

#[tokio::test]
async fn temporal_tolerance_is_a_duration() {
    let b = "SELECT * FROM (VALUES (1, TIMESTAMP '2026-11-25 10:00:00'), (2, TIMESTAMP '2026-11-25 10:00:00'), (3, TIMESTAMP '2026-11-25 10:00:00')) AS t(id, ts)";
    let s = "SELECT * FROM (VALUES (1, TIMESTAMP '2026-11-25 10:00:01'), (2, TIMESTAMP '2026-11-25 09:59:59.500'), (3, TIMESTAMP '2026-11-25 10:00:01.001')) AS t(id, ts)";
    let spec = check(
        &["id"],
        &[(
            "ts",
            Tolerance::Temporal {
                abs: Duration::from_secs(1),
            },
        )],
        &[],
    );
    let d = diff(b, s, &spec).await;
    assert_eq!(d.counts, counts(2, 1, 0, 0, 0, 0));
}

#[tokio::test]
async fn composite_keys_never_collide_and_null_keys_pair() {
    let b =
        "SELECT * FROM (VALUES ('1', '23', 1), (CAST(NULL AS VARCHAR), 'x', 2)) AS t(k1, k2, v)";
    let s =
        "SELECT * FROM (VALUES ('12', '3', 1), (CAST(NULL AS VARCHAR), 'x', 2)) AS t(k1, k2, v)";
    let d = diff(b, s, &check(&["k1", "k2"], &[], &[])).await;
    assert_eq!(d.counts, counts(1, 0, 1, 1, 0, 0));
}

#[tokio::test]
async fn nan_and_negative_zero_keys_pair() {
    let b = "SELECT * FROM (VALUES (CAST('NaN' AS DOUBLE), 1), (-0.0, 2)) AS t(k, v)";
    let s = "SELECT * FROM (VALUES (-CAST('NaN' AS DOUBLE), 1), (0.0, 2)) AS t(k, v)";
    let d = diff(b, s, &check(&["k"], &[], &[])).await;
    assert_eq!(d.counts, counts(2, 0, 0, 0, 0, 0));
}

#[tokio::test]
async fn duplicate_keys_pair_by_occurrence_in_value_order() {
    let b = "SELECT * FROM (VALUES (1, 10), (1, 20), (2, 5)) AS t(id, v)";
    let s = "SELECT * FROM (VALUES (1, 30), (1, 20), (1, 10), (2, 5)) AS t(id, v)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    // (10,10) and (20,20) pair, 30 is extra; key 1 is duplicated on both sides.
    assert_eq!(d.counts, counts(3, 0, 0, 1, 1, 1));
    assert!(d.paired_by_occurrence);

    let b = "SELECT * FROM (VALUES (1, 10), (1, 20), (2, 5), (2, 6), (3, 1)) AS t(id, v)";
    let s = "SELECT * FROM (VALUES (1, 20), (1, 10), (2, 5), (2, 7), (3, 1)) AS t(id, v)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    // Key 2: (5,5) pairs, (6,7) mismatches; clean duplicates of key 1 do not diverge.
    assert_eq!(d.counts, counts(4, 1, 0, 0, 2, 2));
}

#[tokio::test]
async fn keyless_is_a_multiset_comparison() {
    let b = "SELECT * FROM (VALUES ('a', 1), ('a', 1), ('b', 2)) AS t(x, y)";
    let s = "SELECT * FROM (VALUES ('a', 1), ('b', 2), ('b', 2), ('c', 3)) AS t(x, y)";
    let d = diff(b, s, &check(&[], &[], &[])).await;
    assert_eq!(d.counts, counts(2, 0, 1, 2, 1, 1));
    assert_eq!(
        d.rows,
        RowCounts {
            batch: 3,
            stream: 4
        }
    );
    assert_eq!(d.samples.missing_in_stream.len(), 1);
    assert_eq!(
        d.samples
            .extra_in_stream
            .iter()
            .map(|s| s.count)
            .collect::<Vec<_>>(),
        [Some(1), Some(1)]
    );
}

#[tokio::test]
async fn keyless_rows_with_null_and_nan_pair() {
    let b = "SELECT * FROM (VALUES (CAST(NULL AS VARCHAR), CAST('NaN' AS DOUBLE)), ('x', -0.0)) AS t(a, b)";
    let s = "SELECT * FROM (VALUES (CAST(NULL AS VARCHAR), -CAST('NaN' AS DOUBLE)), ('x', 0.0)) AS t(a, b)";
    let d = diff(b, s, &check(&[], &[], &[])).await;
    assert_eq!(d.counts, counts(2, 0, 0, 0, 0, 0));
}

#[tokio::test]
async fn schema_drift_is_reported_and_types_are_coerced() {
    // Column order differs, `id` and `n` change integer width, `extra` exists in stream only.
    let b = "SELECT CAST(id AS INT) AS id, CAST(n AS INT) AS n, name FROM (VALUES (1, 5, 'a'), (2, 6, 'b')) AS t(id, n, name)";
    let s = "SELECT name, CAST(n AS BIGINT) AS n, CAST(id AS BIGINT) AS id, 1 AS extra FROM (VALUES (1, 5, 'a'), (2, 6, 'b')) AS t(id, n, name)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    assert_eq!(d.counts, counts(2, 0, 0, 0, 0, 0));
    assert_eq!(d.schema.only_in_stream, ["extra"]);
    assert!(d.schema.only_in_batch.is_empty());
    let changes: Vec<_> = d
        .schema
        .type_changes
        .iter()
        .map(|t| (t.column.as_str(), t.batch.as_str(), t.stream.as_str()))
        .collect();
    assert_eq!(changes, [("id", "Int32", "Int64"), ("n", "Int32", "Int64")]);
    assert!(d.schema.diverges());

    // Ignoring the extra column makes the schemas agree.
    let d = diff(b, s, &check(&["id"], &[], &["extra"])).await;
    assert!(!d.schema.diverges());
}

#[tokio::test]
async fn string_encodings_are_not_type_changes() {
    let b = "SELECT 1 AS id, arrow_cast('a', 'Utf8View') AS s, arrow_cast('x', 'Dictionary(Int32, Utf8)') AS d";
    let s = "SELECT 1 AS id, arrow_cast('a', 'LargeUtf8') AS s, 'x' AS d";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    assert!(
        d.schema.type_changes.is_empty(),
        "{:?}",
        d.schema.type_changes
    );
    assert_eq!(d.counts, counts(1, 0, 0, 0, 0, 0));
}

#[tokio::test]
async fn user_mistakes_are_errors_naming_the_column() {
    let sql = "SELECT * FROM (VALUES (1, 'a')) AS t(id, name)";
    let engine = EngineSpec::default();
    let cases: Vec<(CheckSpec, &str)> = vec![
        (
            check(&["nope"], &[], &[]),
            "key column 'nope' is missing from the batch result",
        ),
        (
            check(
                &["id"],
                &[("name", Tolerance::Numeric { abs: 1.0, rel: 0.0 })],
                &[],
            ),
            "tolerance on 'name'",
        ),
        (
            check(
                &[],
                &[("name", Tolerance::Numeric { abs: 1.0, rel: 0.0 })],
                &[],
            ),
            "needs a key",
        ),
        (
            check(
                &["id"],
                &[("zzz", Tolerance::Numeric { abs: 1.0, rel: 0.0 })],
                &[],
            ),
            "tolerance on 'zzz'",
        ),
        (check(&["id"], &[], &["zzz"]), "--ignore 'zzz'"),
    ];
    for (spec, expected) in cases {
        let err = diff_with(engine.clone(), sql, sql, &spec)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected),
            "{err:?} should contain {expected:?}"
        );
    }
}

#[tokio::test]
async fn samples_are_the_smallest_keys() {
    let b = "SELECT * FROM generate_series(1, 1000) AS t(id)";
    let s = "SELECT * FROM generate_series(11, 1000) AS t(id)";
    let d = diff(
        &format!("SELECT id, id * 2 AS v FROM ({b})"),
        &format!("SELECT id, id * 2 AS v FROM ({s})"),
        &check(&["id"], &[], &[]),
    )
    .await;
    assert_eq!(d.counts, counts(990, 0, 10, 0, 0, 0));
    let keys: Vec<String> = d
        .samples
        .missing_in_stream
        .iter()
        .map(|s| s.key["id"].to_string())
        .collect();
    assert_eq!(keys, ["1", "2", "3", "4", "5"]);
}
