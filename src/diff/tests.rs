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
        time_column: None,
        window_column: None,
        timeout: None,
        redact: Vec::new(),
        embedded: false,
        evidence: Default::default(),
        allow_nondeterministic: Vec::new(),
        control: 0,
    }
}

async fn diff_with(
    engine_spec: EngineSpec,
    batch: &str,
    stream: &str,
    spec: &CheckSpec,
) -> Result<DiffResult> {
    let engine = Engine::new(&engine_spec).await?;
    let state = engine.ctx.state();
    let b = state.create_logical_plan(batch).await?;
    let s = state.create_logical_plan(stream).await?;
    run(
        &engine,
        &crate::sources::Catalog::default(),
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
    // And with every value column carried through the join on its own (as on Ballista).
    let unpacked = EngineSpec {
        unpacked_values: true,
        ..Default::default()
    };
    let plain = diff_with(unpacked, batch, stream, spec)
        .await
        .expect("unpacked diff runs");
    assert_agrees(&hash, &plain, "the unpacked diff");
    assert_eq!(
        serde_json::to_value(&hash.columns).unwrap(),
        serde_json::to_value(&plain.columns).unwrap(),
        "unpacked diff counts per column differently"
    );
    // And when duplicated keys are counted first and every row paired by occurrence (what
    // Ballista runs, and the fallback when keys repeat too often to pair them apart).
    let occurrence = EngineSpec {
        pair_all_by_occurrence: true,
        ..Default::default()
    };
    let safe = diff_with(occurrence, batch, stream, spec)
        .await
        .expect("duplicate-safe diff runs");
    assert_agrees(&hash, &safe, "the duplicate-safe plan");
    assert_eq!(hash.paired_by_occurrence, safe.paired_by_occurrence);
    assert_eq!(
        serde_json::to_value(&hash.columns).unwrap(),
        serde_json::to_value(&safe.columns).unwrap(),
        "duplicate-safe plan counts per column differently"
    );
    assert_eq!(
        serde_json::to_value(&hash.findings).unwrap(),
        serde_json::to_value(&safe.findings).unwrap(),
        "duplicate-safe plan explains differently"
    );
    // And with tiny batches, so that every array of the join's output arrives as a slice at some
    // odd offset (the class of the arrow `and_not` bug behind the 2 × 50M crash).
    let tiny = EngineSpec {
        batch_size: Some(3),
        ..Default::default()
    };
    let sliced = diff_with(tiny, batch, stream, spec)
        .await
        .expect("diff with tiny batches runs");
    assert_agrees(&hash, &sliced, "the diff in tiny batches");
    // And when the diff is split into buckets on disk (three here: small tables would not be).
    let bucketed = EngineSpec {
        buckets: Some(3),
        ..Default::default()
    };
    let split = diff_with(bucketed, batch, stream, spec)
        .await
        .expect("bucketed diff runs");
    assert_agrees(&hash, &split, "the bucketed diff");
    assert_eq!(
        serde_json::to_value(&hash.findings).unwrap(),
        serde_json::to_value(&split.findings).unwrap(),
        "bucketed diff explains differently"
    );
    // And in buckets with every row paired by occurrence (what the buckets after one that gave
    // up on its repeated keys run), where small tables leave some buckets empty.
    let bucketed_safe = EngineSpec {
        buckets: Some(5),
        pair_all_by_occurrence: true,
        ..Default::default()
    };
    let split_safe = diff_with(bucketed_safe, batch, stream, spec)
        .await
        .expect("bucketed duplicate-safe diff runs");
    assert_agrees(&hash, &split_safe, "the bucketed duplicate-safe diff");
    hash
}

/// Asserts that `other`, the same diff run another way (`what`), counts and samples as `hash`.
fn assert_agrees(hash: &DiffResult, other: &DiffResult, what: &str) {
    assert_eq!(hash.counts, other.counts, "{what} counts differently");
    assert_eq!(hash.rows, other.rows, "{what} counts other rows");
    assert_eq!(hash.samples, other.samples, "{what} samples differently");
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

/// Large integers, wide decimals and nanosecond timestamps are subtracted before any rounding to
/// a float: as floats each pair below is one value, and a tolerance once accepted all of them.
#[tokio::test]
async fn tolerances_subtract_before_rounding() {
    let b = "SELECT * FROM (VALUES
        (1, CAST(4611686018427387904 AS BIGINT), CAST('123456789012345678.01' AS DECIMAL(38, 2)), CAST('2026-11-25T10:00:00' AS TIMESTAMP)),
        (2, CAST(9007199254740993 AS BIGINT), CAST(1.00 AS DECIMAL(38, 2)), CAST('2026-11-25T10:00:00' AS TIMESTAMP))
    ) AS t(id, n, d, ts)";
    let s = "SELECT * FROM (VALUES
        (1, CAST(4611686018427388005 AS BIGINT), CAST('123456789012345678.00' AS DECIMAL(38, 2)), CAST('2026-11-25T10:00:00.001000100' AS TIMESTAMP)),
        (2, CAST(9007199254740992 AS BIGINT), CAST(1.01 AS DECIMAL(38, 2)), CAST('2026-11-25T10:00:00.001' AS TIMESTAMP))
    ) AS t(id, n, d, ts)";
    let spec = check(
        &["id"],
        &[
            ("n", Tolerance::Numeric { abs: 0.5, rel: 0.0 }),
            (
                "d",
                Tolerance::Numeric {
                    abs: 0.005,
                    rel: 0.0,
                },
            ),
            (
                "ts",
                Tolerance::Temporal {
                    abs: Duration::from_millis(1),
                },
            ),
        ],
        &[],
    );
    let d = diff(b, s, &spec).await;
    // Row 1: n 101 apart, d 0.01 apart, ts 1 ms + 100 ns apart: all outside. Row 2: n 1
    // apart, d 0.01 apart (outside); ts exactly 1 ms apart (inside, inclusive).
    assert_eq!(d.counts, counts(0, 2, 0, 0, 0, 0));
    assert_eq!(
        d.columns.iter().map(|c| c.mismatched).collect::<Vec<_>>(),
        [2, 2, 1]
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
async fn keys_repeated_on_one_side_only_are_counted() {
    // Key 5 twice in batch and never in stream; key 9 twice in stream only. Nothing pairs
    // them, so only the count of duplicated keys tells they repeat.
    let b = "SELECT * FROM (VALUES (1, 10), (5, 1), (5, 2)) AS t(id, v)";
    let s = "SELECT * FROM (VALUES (1, 10), (9, 1), (9, 1)) AS t(id, v)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    assert_eq!(d.counts, counts(1, 0, 2, 2, 1, 1));
    assert_eq!(
        d.rows,
        RowCounts {
            batch: 3,
            stream: 3
        }
    );
}

/// Under a tolerance, a repeated key's rows are read again from both sides for the
/// duplicate-safe plan: composite keys with a NULL part among them, and keys that do not
/// repeat accounted by the one pass beside them.
#[tokio::test]
async fn repeated_keys_under_a_tolerance_pair_by_occurrence() {
    let b = "SELECT * FROM (VALUES (1, NULL, 10.0), (1, NULL, 20.0), (1, 'a', 10.0), (2, 'a', 5.0), (3, 'a', 7.0), (4, NULL, 1.0)) AS t(id, part, v)";
    let s = "SELECT * FROM (VALUES (1, NULL, 20.5), (1, NULL, 10.5), (1, NULL, 30.0), (1, 'a', 10.0), (2, 'a', 5.2), (2, 'a', 9.0), (3, 'a', 8.0), (4, NULL, 1.4)) AS t(id, part, v)";
    let tolerance = [("v", Tolerance::Numeric { abs: 0.5, rel: 0.0 })];
    let d = diff(b, s, &check(&["id", "part"], &tolerance, &[])).await;
    // (1, NULL): 10.0~10.5 and 20.0~20.5 pair in value order, 30.0 is extra; (2, 'a'): 5.0~5.2
    // pairs, 9.0 is extra; (3, 'a') is beyond the tolerance; (1, 'a') and (4, NULL) match.
    assert_eq!(d.counts, counts(5, 1, 0, 2, 1, 2));
    assert!(d.paired_by_occurrence);
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

/// Hive and Spark write column names in lower case where Flink keeps `userId`.
#[tokio::test]
async fn names_differing_only_in_case_are_pointed_out() {
    let b = "SELECT 1 AS id, 2 AS userid";
    let s = "SELECT 1 AS id, 2 AS \"userId\"";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    let drift = d
        .findings
        .iter()
        .find(|f| f.kind.name() == "schema_drift")
        .expect("a schema drift finding");
    assert!(
        drift
            .evidence
            .contains("userid and userId differ only in case (a view of one side can rename it: stream_view / --stream-view with SELECT \"userId\" AS \"userid\""),
        "{}",
        drift.evidence
    );
    let err = diff_with(EngineSpec::default(), b, s, &check(&["userid"], &[], &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("key column 'userid' is missing from the stream result (its columns: id, userId); 'userId' differs only in case: rename it in a view of that side"),
        "{err}"
    );
}

/// A type 2 slowly changing dimension closes its current rows at 9999-12-31, past 2262 where
/// nanoseconds end: text compared with a µs timestamp is read in µs (it was read in ns, and
/// the check failed on "exceeds the representable i64 range"), and text finer than that is an
/// error, never a truncation that would match.
#[tokio::test]
async fn text_against_a_timestamp_is_read_in_the_timestamps_unit() {
    let micros = |value: i64| {
        format!(
            "SELECT 1 AS id, arrow_cast({value}, 'Timestamp(Microsecond, Some(\"UTC\"))') AS valid_to"
        )
    };
    // In process only: Ballista's plans read text with DataFusion's cast, in nanoseconds.
    let in_process = |stream: &'static str| {
        let batch = micros(253_402_300_799_000_000);
        async move {
            diff_with(
                EngineSpec::default(),
                &batch,
                stream,
                &check(&["id"], &[], &[]),
            )
            .await
            .expect("diff runs")
            .counts
        }
    };
    assert_eq!(
        in_process("SELECT 1 AS id, '9999-12-31T23:59:59Z' AS valid_to").await,
        counts(1, 0, 0, 0, 0, 0)
    );
    assert_eq!(
        in_process("SELECT 1 AS id, '9999-12-31T23:59:58Z' AS valid_to").await,
        counts(0, 1, 0, 0, 0, 0)
    );
    let err = diff_with(
        EngineSpec::default(),
        &micros(1_796_119_200_000_000),
        "SELECT 1 AS id, '2026-12-01T10:00:00.000000001Z' AS valid_to",
        &check(&["id"], &[], &[]),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("column 'valid_to' (stream side)")
            && err.contains(
                "'2026-12-01T10:00:00.000000001Z' is finer than the other side's microseconds"
            ),
        "{err}"
    );
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

fn kinds(d: &DiffResult) -> Vec<&str> {
    d.findings.iter().map(|f| f.kind.name()).collect()
}

fn finding<'a>(d: &'a DiffResult, kind: &str) -> &'a Finding {
    d.findings
        .iter()
        .find(|f| f.kind.name() == kind)
        .unwrap_or_else(|| panic!("no {kind} finding in {:?}", d.findings))
}

#[tokio::test]
async fn finding_precision_with_the_tolerance_that_accepts_it() {
    let b = "SELECT * FROM (VALUES (1, 265.86), (2, 20.26), (3, 5.0)) AS t(id, amount)";
    let s = "SELECT id, CAST(CAST(amount AS FLOAT) AS DOUBLE) AS amount FROM (VALUES (1, 265.86), (2, 20.26), (3, 5.0)) AS t(id, amount)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    assert_eq!(d.counts.mismatched, 2, "5.0 is exact in float32");
    assert_eq!(kinds(&d), ["precision"]);
    let f = finding(&d, "precision");
    assert_eq!(f.columns, ["amount"]);
    assert_eq!(f.rows, 2);
    let suggested = f.details["suggested_tolerance"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(suggested.starts_with("rel:"), "{suggested}");
    // The suggestion really accepts them.
    let tolerance = Tolerance::parse(&suggested).unwrap();
    let d = diff(b, s, &check(&["id"], &[("amount", tolerance)], &[])).await;
    assert_eq!(d.counts.mismatched, 0);
    assert!(d.findings.is_empty());
}

#[tokio::test]
async fn finding_rounding_at_a_fixed_scale() {
    let b = "SELECT * FROM (VALUES (1, 1.2345), (2, 7.891), (3, 2.5)) AS t(id, x)";
    let s = "SELECT * FROM (VALUES (1, 1.23), (2, 7.89), (3, 2.5)) AS t(id, x)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    let f = finding(&d, "precision");
    assert_eq!(f.details["rounding_decimals"], 2);
    assert_eq!(f.rows, 2);
    assert_eq!(f.details["suggested_tolerance"], "abs:0.005");
}

#[tokio::test]
async fn finding_unit_shift() {
    let b = "SELECT * FROM (VALUES (1, 1.5), (2, 20.0), (3, 0.25)) AS t(id, seconds)";
    let s = "SELECT * FROM (VALUES (1, 1500.0), (2, 20000.0), (3, 250.0)) AS t(id, seconds)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    assert_eq!(kinds(&d), ["unit_shift"]);
    assert_eq!(finding(&d, "unit_shift").details["factor"], 1000.0);
}

#[tokio::test]
async fn finding_timezone_shift() {
    let b = "SELECT * FROM (VALUES (1, TIMESTAMP '2026-11-21 10:00:00'), (2, TIMESTAMP '2026-11-21 23:30:00'), (3, TIMESTAMP '2026-11-21 05:00:00')) AS t(id, ts)";
    let s = "SELECT * FROM (VALUES (1, TIMESTAMP '2026-11-21 11:00:00'), (2, TIMESTAMP '2026-11-22 00:30:00'), (3, TIMESTAMP '2026-11-21 05:00:00')) AS t(id, ts)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    assert_eq!(kinds(&d), ["timezone_shift"]);
    let f = finding(&d, "timezone_shift");
    assert_eq!(f.rows, 2);
    assert_eq!(f.details["hours"], serde_json::json!({"1": 2}));
}

#[tokio::test]
async fn finding_text_normalisation() {
    let cases = [
        ("'abc'", "'abc  '", "trimming whitespace"),
        ("'Berlin'", "'BERLIN'", "case folding"),
        // é precomposed (NFC) vs e + combining acute (NFD): different strings, one text.
        (
            "'caf\u{e9}'",
            "'cafe\u{301}'",
            "Unicode normalisation (NFC)",
        ),
    ];
    for (b, s, what) in cases {
        let b = format!("SELECT * FROM (VALUES (1, {b}), (2, 'same')) AS t(id, name)");
        let s = format!("SELECT * FROM (VALUES (1, {s}), (2, 'same')) AS t(id, name)");
        let d = diff(&b, &s, &check(&["id"], &[], &[])).await;
        assert_eq!(
            d.counts.mismatched, 1,
            "{what}: NFC vs NFD and the like are differences"
        );
        assert_eq!(kinds(&d), ["text_normalisation"], "{what}");
        assert_eq!(
            finding(&d, "text_normalisation").details["normalisation"],
            what
        );
    }
}

#[tokio::test]
async fn finding_null_vs_default() {
    let b = "SELECT * FROM (VALUES (1, CAST(NULL AS BIGINT)), (2, CAST(NULL AS BIGINT)), (3, 7)) AS t(id, n)";
    let s = "SELECT * FROM (VALUES (1, 0), (2, 0), (3, 7)) AS t(id, n)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    assert_eq!(kinds(&d), ["null_vs_default"]);
    let f = finding(&d, "null_vs_default");
    assert_eq!(
        (
            f.rows,
            f.details["null_side"].as_str(),
            f.details["value"].as_str()
        ),
        (2, Some("batch"), Some("0"))
    );
}

#[tokio::test]
async fn finding_at_least_once_duplicates() {
    let b = "SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) AS t(id, v)";
    let s = "SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (2, 'b'), (3, 'c'), (3, 'c')) AS t(id, v)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    assert_eq!(d.counts, counts(3, 0, 0, 2, 0, 2));
    assert_eq!(kinds(&d), ["duplicates"]);
    assert_eq!(finding(&d, "duplicates").rows, 2);

    // Keyless: the extra copies of rows the batch has are duplicates too; a new row is not.
    let s = "SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (2, 'b'), (3, 'c'), (4, 'd')) AS t(id, v)";
    let d = diff(b, s, &check(&[], &[], &[])).await;
    assert_eq!(finding(&d, "duplicates").rows, 1);
}

#[tokio::test]
async fn finding_late_data_per_window() {
    let times = |day: &str, hours: &[&str]| {
        hours
            .iter()
            .enumerate()
            .map(|(i, h)| format!("('{day}-{i}', '{day}', TIMESTAMP '{day} {h}')"))
            .collect::<Vec<_>>()
    };
    let mut rows = times(
        "2026-11-22",
        &["00:10:00", "08:00:00", "16:00:00", "23:50:00"],
    );
    rows.extend(times(
        "2026-11-23",
        &["00:05:00", "09:00:00", "17:00:00", "23:25:00", "23:45:00"],
    ));
    let b = format!(
        "SELECT * FROM (VALUES {}) AS t(id, dt, ts)",
        rows.join(", ")
    );
    // The stream has not landed the last two events of the 23rd.
    let s = format!("SELECT * FROM ({b}) WHERE id NOT IN ('2026-11-23-3', '2026-11-23-4')");
    let mut spec = check(&["id"], &[], &[]);
    spec.time_column = Some("ts".into());
    spec.window_column = Some("dt".into());
    let d = diff(&b, &s, &spec).await;
    assert_eq!(d.counts.missing_in_stream, 2);
    assert_eq!(kinds(&d), ["late_data"]);
    let f = finding(&d, "late_data");
    assert_eq!(f.rows, 2);
    assert!(f.evidence.contains("last 20m"), "{}", f.evidence);
    let histogram = d.histogram.as_ref().unwrap();
    assert_eq!(histogram.dimension, "dt");
    assert_eq!(histogram.buckets.len(), 1);
    assert_eq!(
        (
            histogram.buckets[0].value.as_str(),
            histogram.buckets[0].missing_in_stream
        ),
        ("2026-11-23", 2)
    );

    // A row missing in the middle of the day is not late data: no finding at all.
    let s = format!("SELECT * FROM ({b}) WHERE id NOT IN ('2026-11-23-3', '2026-11-23-1')");
    let d = diff(&b, &s, &spec).await;
    assert_eq!(d.counts.missing_in_stream, 2);
    assert!(d.findings.is_empty(), "{:?}", d.findings);
}

#[tokio::test]
async fn finding_schema_drift() {
    let b = "SELECT 1 AS id, CAST(5 AS INT) AS n";
    let s = "SELECT 1 AS id, CAST(5 AS BIGINT) AS n, 'x' AS added";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    assert_eq!(kinds(&d), ["schema_drift"]);
    assert_eq!(finding(&d, "schema_drift").columns, ["added", "n"]);
}

#[tokio::test]
async fn no_findings_on_clean_data_or_unrelated_divergences() {
    let sql = "SELECT * FROM (VALUES (1, 'a', 1.5, TIMESTAMP '2026-11-21 10:00:00'), (2, 'b', 2.5, TIMESTAMP '2026-11-21 11:00:00')) AS t(id, s, x, ts)";
    let d = diff(sql, sql, &check(&["id"], &[], &[])).await;
    assert!(d.findings.is_empty());
    assert!(d.columns.iter().all(|c| c.stats.is_none()));

    // Differences with no common cause: values of every size, a text edit, a 37-minute shift.
    let b = "SELECT * FROM (VALUES (1, 'alpha', 1.5, TIMESTAMP '2026-11-21 10:00:00'), (2, 'beta', 2.5, TIMESTAMP '2026-11-21 11:00:00'), (3, 'gamma', 100.0, TIMESTAMP '2026-11-21 12:00:00')) AS t(id, s, x, ts)";
    let s = "SELECT * FROM (VALUES (1, 'alpha', 1.7, TIMESTAMP '2026-11-21 10:37:00'), (2, 'bet', 2.5, TIMESTAMP '2026-11-21 11:00:00'), (3, 'gamma', 250.0, TIMESTAMP '2026-11-21 13:00:00')) AS t(id, s, x, ts)";
    let d = diff(b, s, &check(&["id"], &[], &[])).await;
    assert_eq!(d.counts.mismatched, 3);
    assert!(d.findings.is_empty(), "{:?}", d.findings);
    let x = d
        .columns
        .iter()
        .find(|c| c.name == "x")
        .unwrap()
        .stats
        .clone()
        .unwrap();
    assert_eq!(x.max_abs_diff, Some(150.0));
    assert!((x.mean_abs_diff.unwrap() - 75.1).abs() < 1e-9);
    assert_eq!(x.top_pairs.len(), 2);
}

#[tokio::test]
async fn values_of_every_kind_compare_exactly() {
    // (label, batch literal, stream literal, equal?)
    let cases = [
        (
            "+inf",
            "CAST('Infinity' AS DOUBLE)",
            "CAST('Infinity' AS DOUBLE)",
            true,
        ),
        (
            "-inf vs +inf",
            "CAST('-Infinity' AS DOUBLE)",
            "CAST('Infinity' AS DOUBLE)",
            false,
        ),
        (
            "subnormal",
            "CAST(5e-324 AS DOUBLE)",
            "CAST(5e-324 AS DOUBLE)",
            true,
        ),
        (
            "subnormal vs 0",
            "CAST(5e-324 AS DOUBLE)",
            "CAST(0 AS DOUBLE)",
            false,
        ),
        (
            "decimal 38",
            "CAST('1234567890123456789012345678.1234567890' AS DECIMAL(38,10))",
            "CAST('1234567890123456789012345678.1234567890' AS DECIMAL(38,10))",
            true,
        ),
        (
            "decimal 38 last digit",
            "CAST('1234567890123456789012345678.1234567890' AS DECIMAL(38,10))",
            "CAST('1234567890123456789012345678.1234567891' AS DECIMAL(38,10))",
            false,
        ),
        ("date", "DATE '2026-11-25'", "DATE '2026-11-25'", true),
        (
            "date differs",
            "DATE '2026-11-25'",
            "DATE '2026-11-26'",
            false,
        ),
        (
            "timestamp units",
            "arrow_cast(TIMESTAMP '2026-11-25 10:00:00', 'Timestamp(Microsecond, Some(\"UTC\"))')",
            "arrow_cast(TIMESTAMP '2026-11-25 10:00:00', 'Timestamp(Nanosecond, Some(\"UTC\"))')",
            true,
        ),
        (
            "timestamp 1us apart",
            "TIMESTAMP '2026-11-25 10:00:00'",
            "TIMESTAMP '2026-11-25 10:00:00.000001'",
            false,
        ),
        ("unicode NFC vs NFD", "'caf\u{e9}'", "'cafe\u{301}'", false),
        ("binary", "X'0102ff'", "X'0102ff'", true),
        ("binary differs", "X'0102ff'", "X'0102fe'", false),
        (
            "struct",
            "named_struct('a', 1, 'b', 'x')",
            "named_struct('a', 1, 'b', 'x')",
            true,
        ),
        (
            "struct field differs",
            "named_struct('a', 1, 'b', 'x')",
            "named_struct('a', 1, 'b', 'y')",
            false,
        ),
        ("list", "make_array(1, 2, 3)", "make_array(1, 2, 3)", true),
        (
            "list order",
            "make_array(1, 2, 3)",
            "make_array(3, 2, 1)",
            false,
        ),
        (
            "list with null",
            "make_array(1, NULL)",
            "make_array(1, NULL)",
            true,
        ),
    ];
    for (label, b, s, equal) in cases {
        let b = format!("SELECT 1 AS id, {b} AS v");
        let s = format!("SELECT 1 AS id, {s} AS v");
        let d = diff_with(EngineSpec::default(), &b, &s, &check(&["id"], &[], &[]))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e:#}"));
        let expected = if equal {
            counts(1, 0, 0, 0, 0, 0)
        } else {
            counts(0, 1, 0, 0, 0, 0)
        };
        assert_eq!(d.counts, expected, "{label}");
        // Keyless, the same values pair (or not) as whole rows.
        let d = diff_with(EngineSpec::default(), &b, &s, &check(&[], &[], &[]))
            .await
            .unwrap_or_else(|e| panic!("{label} keyless: {e:#}"));
        let expected = if equal {
            counts(1, 0, 0, 0, 0, 0)
        } else {
            counts(0, 0, 1, 1, 0, 0)
        };
        assert_eq!(d.counts, expected, "{label} keyless");
    }
}

mod properties {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use proptest::prelude::*;

    use super::*;

    type Row = (Option<f64>, Option<String>);

    fn value() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            Just(Some(f64::NAN)),
            Just(Some(-0.0)),
            Just(Some(f64::INFINITY)),
            any::<i32>().prop_map(|n| Some(f64::from(n) / 8.0)),
        ]
    }

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        proptest::collection::vec((value(), proptest::option::of("[a-c]{0,3}")), 0..40)
    }

    fn plan(engine: &Engine, rows: &[(i64, Row)]) -> datafusion::logical_expr::LogicalPlan {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|(k, _)| *k))),
                Arc::new(rows.iter().map(|(_, (x, _))| *x).collect::<Float64Array>()),
                Arc::new(
                    rows.iter()
                        .map(|(_, (_, s))| s.clone())
                        .collect::<StringArray>(),
                ),
            ],
        )
        .unwrap();
        engine
            .ctx
            .read_batch(batch)
            .unwrap()
            .into_unoptimized_plan()
    }

    fn run_diff(batch: &[(i64, Row)], stream: &[(i64, Row)], key: &[&str]) -> Counts {
        run_diff_with(EngineSpec::default(), batch, stream, key, &[]).counts
    }

    fn run_diff_with(
        spec: EngineSpec,
        batch: &[(i64, Row)],
        stream: &[(i64, Row)],
        key: &[&str],
        tolerances: &[(&str, Tolerance)],
    ) -> DiffResult {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let engine = Engine::new(&spec).await.unwrap();
            let (b, s) = (plan(&engine, batch), plan(&engine, stream));
            let spec = check(key, tolerances, &[]);
            run(
                &engine,
                &crate::sources::Catalog::default(),
                &spec,
                b,
                s,
                None,
            )
            .await
            .unwrap()
        })
    }

    /// Rows over a handful of keys and values, so keys repeat on either side or both and
    /// repeated rows are often equal: what at-least-once delivery and replays look like.
    fn repeating() -> impl Strategy<Value = Vec<(i64, Row)>> {
        let small_value = prop_oneof![
            Just(None),
            Just(Some(1.0)),
            Just(Some(2.0)),
            Just(Some(f64::NAN))
        ];
        let small_text = proptest::option::of("[ab]");
        proptest::collection::vec((0..6i64, (small_value, small_text)), 0..30)
    }

    fn keyed(rows: Vec<Row>) -> Vec<(i64, Row)> {
        rows.into_iter()
            .enumerate()
            .map(|(i, r)| (i as i64, r))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn a_table_matches_itself(rows in rows()) {
            let table = keyed(rows);
            let n = table.len() as u64;
            prop_assert_eq!(run_diff(&table, &table, &["id"]), counts(n, 0, 0, 0, 0, 0));
            let keyless = run_diff(&table, &table, &[]);
            prop_assert_eq!(keyless.matched, n);
            prop_assert_eq!(keyless.divergent(), 0);
        }

        /// With a tolerance too (1.0 and 2.0 are within `abs:1`): equal pairs are then not
        /// copies of each other, and must still pair where the duplicate-safe plan pairs them.
        #[test]
        fn repeated_keys_pair_as_the_duplicate_safe_plan_pairs_them(
            batch in repeating(),
            stream in repeating(),
            batch_size in 1..5usize,
            tolerant in any::<bool>(),
        ) {
            let tolerance = [("x", Tolerance::Numeric { abs: 1.0, rel: 0.0 })];
            let tolerances: &[(&str, Tolerance)] = if tolerant { &tolerance } else { &[] };
            let one_pass = EngineSpec { batch_size: Some(batch_size), ..Default::default() };
            let safe = EngineSpec { pair_all_by_occurrence: true, ..Default::default() };
            // In buckets too: once a bucket gives up on its repeated keys (with a tolerance),
            // the buckets after it go straight to the duplicate-safe plan.
            let bucketed = EngineSpec { buckets: Some(3), ..one_pass.clone() };
            let a = run_diff_with(one_pass, &batch, &stream, &["id"], tolerances);
            let b = run_diff_with(safe, &batch, &stream, &["id"], tolerances);
            let c = run_diff_with(bucketed, &batch, &stream, &["id"], tolerances);
            for a in [&a, &c] {
                prop_assert_eq!(&a.counts, &b.counts);
                prop_assert_eq!(&a.rows, &b.rows);
                prop_assert_eq!(a.paired_by_occurrence, b.paired_by_occurrence);
                prop_assert_eq!(&a.samples, &b.samples);
                prop_assert_eq!(
                    serde_json::to_value(&a.columns).unwrap(),
                    serde_json::to_value(&b.columns).unwrap()
                );
            }
        }

        #[test]
        fn one_planted_change_is_counted_once(rows in rows(), pick in any::<prop::sample::Index>(), kind in 0..3u8) {
            let batch = keyed(rows);
            prop_assume!(!batch.is_empty());
            let n = batch.len() as u64;
            let i = pick.index(batch.len());
            let mut stream = batch.clone();
            let expected = match kind {
                0 => {
                    // A value no generated row has, so the change is always a real difference.
                    stream[i].1.0 = Some(0.123);
                    counts(n - 1, 1, 0, 0, 0, 0)
                }
                1 => {
                    stream.remove(i);
                    counts(n - 1, 0, 1, 0, 0, 0)
                }
                _ => {
                    stream.push((1_000_000, (Some(1.0), None)));
                    counts(n, 0, 0, 1, 0, 0)
                }
            };
            prop_assert_eq!(run_diff(&batch, &stream, &["id"]), expected);
        }
    }
}
