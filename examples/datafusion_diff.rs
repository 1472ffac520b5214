//! A benchmark peer: the keyed diff `bench/duckdb_diff.py` writes for DuckDB, written the same way
//! for plain DataFusion (the version dualrun is built on, default settings). It answers how fast
//! the engine itself finds divergent rows without dualrun's exact comparison: the `rowhash`
//! method joins (key, one 64-bit hash of the row's values), so a hash collision would hide a
//! difference; `columns` compares every column with `IS DISTINCT FROM`.
//!
//! Prints one JSON object in `duckdb_diff.py`'s shape, so `bench/run.py` checks its counts
//! against the planted data like every other case.
//!
//!     cargo run --release --example datafusion_diff -- --batch DIR --stream DIR --key id --method rowhash

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{AsArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

/// `row_hash(a, b, ...)`: the hash DataFusion's own hash join and aggregates use, over all
/// arguments of a row, with a fixed seed so both sides agree.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RowHash {
    signature: Signature,
}

impl ScalarUDFImpl for RowHash {
    fn name(&self) -> &str {
        "row_hash"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut hashes = vec![0u64; args.number_rows];
        create_hashes(&arrays, &RandomState::with_seed(0), &mut hashes)?;
        Ok(ColumnarValue::Array(Arc::new(UInt64Array::from(hashes))))
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The counts `duckdb_diff.py` computes, over the FULL OUTER JOIN of `b` and `s` on `on`: a
/// paired row differs when `any` holds, and each of `per_column` is counted too.
fn counts_query(
    keys: &[String],
    on: &str,
    any: &str,
    per_column: &[String],
    b: &str,
    s: &str,
) -> String {
    let b_present = format!("b.{} IS NOT NULL", quote(&keys[0]));
    let s_present = format!("s.{} IS NOT NULL", quote(&keys[0]));
    let both = format!("{b_present} AND {s_present}");
    let mut select = vec![
        format!("count(*) FILTER (WHERE {b_present}) AS rows_batch"),
        format!("count(*) FILTER (WHERE {s_present}) AS rows_stream"),
        format!("count(*) FILTER (WHERE NOT ({s_present})) AS missing_in_stream"),
        format!("count(*) FILTER (WHERE NOT ({b_present})) AS extra_in_stream"),
        format!("count(*) FILTER (WHERE {both} AND ({any})) AS mismatched"),
        format!("count(*) FILTER (WHERE {both} AND NOT ({any})) AS matched"),
    ];
    for (i, d) in per_column.iter().enumerate() {
        select.push(format!("count(*) FILTER (WHERE {both} AND {d}) AS col_{i}"));
    }
    format!(
        "SELECT {} FROM {b} AS b FULL OUTER JOIN {s} AS s ON {on}",
        select.join(", ")
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut batch, mut stream, mut key, mut method) = (
        String::new(),
        String::new(),
        "id".to_string(),
        "columns".to_string(),
    );
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--batch" => batch = value,
            "--stream" => stream = value,
            "--key" => key = value,
            "--method" => method = value,
            other => {
                eprintln!("datafusion_diff: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if method != "rowhash" && method != "columns" {
        eprintln!("datafusion_diff: --method must be rowhash or columns, not {method}");
        std::process::exit(2);
    }
    let keys: Vec<String> = key.split(',').map(|k| k.trim().to_string()).collect();
    let ctx = SessionContext::new();
    ctx.register_udf(ScalarUDF::new_from_impl(RowHash {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
    let options = ParquetReadOptions::default();
    ctx.register_parquet("batch_side", &batch, options.clone())
        .await?;
    ctx.register_parquet("stream_side", &stream, options)
        .await?;
    let schema = ctx.table("batch_side").await?.schema().clone();
    let values: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| !keys.contains(name))
        .collect();

    let on = keys
        .iter()
        .map(|k| format!("b.{0} = s.{0}", quote(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let query = if method == "rowhash" {
        let key_list = keys.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let hash = format!(
            "row_hash({})",
            values
                .iter()
                .map(|v| quote(v))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let side = |t: &str| format!("(SELECT {key_list}, {hash} AS h FROM {t})");
        counts_query(
            &keys,
            &on,
            "b.h <> s.h",
            &[],
            &side("batch_side"),
            &side("stream_side"),
        )
    } else {
        let differs: Vec<String> = values
            .iter()
            .map(|v| format!("(b.{0} IS DISTINCT FROM s.{0})", quote(v)))
            .collect();
        let any = if differs.is_empty() {
            "false".to_string()
        } else {
            differs.join(" OR ")
        };
        counts_query(&keys, &on, &any, &differs, "batch_side", "stream_side")
    };

    let started = Instant::now();
    let batches = ctx.sql(&query).await?.collect().await?;
    let seconds = started.elapsed().as_secs_f64();
    let row = &batches[0];
    let count = |i: usize| row.column(i).as_primitive::<Int64Type>().value(0);
    let columns = (method != "rowhash").then(|| {
        let per_column = values
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), count(6 + i).into()));
        serde_json::Value::Object(per_column.collect())
    });
    let result = serde_json::json!({
        "rows": {"batch": count(0), "stream": count(1)},
        "counts": {
            "matched": count(5),
            "missing_in_stream": count(2),
            "extra_in_stream": count(3),
            "mismatched": count(4),
        },
        "columns": columns,
        "query_seconds": seconds,
    });
    println!("{result}");
    Ok(())
}
