//! A side's text read as the type the other side's column is compared in (a string against a
//! decimal, a date, a number). DataFusion's cast fails on the first text that does not read
//! ("Cannot cast string '+y4=' to value of Decimal128(38, 10) type") without naming the column or
//! the side; this cast says both, and what a Debezium decimal looks like, so the line is enough
//! to act on. Text that does not read is an error, never NULL: a NULL could match a NULL.

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// `expr` (text) cast to `data_type`, failing with an error about `column` of `side`.
pub fn call(expr: Expr, data_type: &DataType, column: &str, side: &str) -> Expr {
    ScalarUDF::new_from_impl(ReadAs {
        signature: Signature::any(1, Volatility::Immutable),
        data_type: data_type.clone(),
        column: column.to_string(),
        side: side.to_string(),
    })
    .call(vec![expr])
}

/// Whether reading `from` as `to` parses text.
pub fn parses(from: &DataType, to: &DataType) -> bool {
    let text = |t: &DataType| match t {
        DataType::Dictionary(_, values) => values.is_string(),
        other => other.is_string(),
    };
    text(from) && !text(to)
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ReadAs {
    signature: Signature,
    data_type: DataType,
    column: String,
    side: String,
}

/// Files of one table searched for the text that did not read, at most.
const MAX_FILES_SEARCHED: usize = 1_000;

/// The first file, of the tables `side` scans, whose column `column` holds `text`, with the
/// line that holds it in a text file: read on the error path only, one file at a time, as the
/// side's table reads it. Tables that are not files, or have no column of that name (the query
/// renamed it), are passed over; `None` when no file is found.
pub async fn locate(
    ctx: &datafusion::prelude::SessionContext,
    side: &datafusion::logical_expr::LogicalPlan,
    column: &str,
    text: &str,
) -> Option<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
    use datafusion::datasource::source_as_provider;
    use datafusion::prelude::{col, lit};
    use futures::TryStreamExt;

    let mut sources = Vec::new();
    let _ = side.apply_with_subqueries(|node| {
        if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node {
            sources.push(scan.source.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let state = ctx.state();
    for source in sources {
        let Ok(provider) = source_as_provider(&source) else {
            continue;
        };
        let Some(listing) =
            (provider.as_ref() as &dyn std::any::Any).downcast_ref::<ListingTable>()
        else {
            continue;
        };
        let options = listing.options();
        let partition_columns: Vec<&str> = options
            .table_partition_cols
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        if partition_columns.contains(&column) {
            continue;
        }
        // Each file alone, without the partition columns its own path cannot give.
        let schema = datafusion::datasource::TableProvider::schema(listing);
        let file_schema = std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| !partition_columns.contains(&f.name().as_str()))
                .cloned()
                .collect::<Vec<_>>(),
        ));
        if file_schema.field_with_name(column).is_err() {
            continue;
        }
        let options = options.clone().with_table_partition_cols(vec![]);
        for url in listing.table_paths() {
            let Ok(store) = state.runtime_env().object_store(url) else {
                continue;
            };
            let Ok(listed) = url
                .list_all_files(&state, store.as_ref(), &options.file_extension)
                .await
            else {
                continue;
            };
            let Ok(files) = listed.try_collect::<Vec<_>>().await else {
                continue;
            };
            for file in files.iter().take(MAX_FILES_SEARCHED) {
                let shown =
                    crate::sources::file_location(url.object_store().as_str(), &file.location);
                let Ok(file_url) = ListingTableUrl::parse(&shown) else {
                    continue;
                };
                let config = ListingTableConfig::new(file_url)
                    .with_listing_options(options.clone())
                    .with_schema(file_schema.clone());
                let Ok(table) = ListingTable::try_new(config) else {
                    continue;
                };
                let found = async {
                    ctx.read_table(std::sync::Arc::new(table))?
                        .filter(col(format!("\"{column}\"")).eq(lit(text)))?
                        .limit(0, Some(1))?
                        .count()
                        .await
                };
                if found.await.is_ok_and(|rows| rows > 0) {
                    let line = crate::sources::line_of_text(
                        store.as_ref(),
                        &file.location,
                        options.format.as_ref(),
                        &file_schema,
                        column,
                        text,
                    )
                    .await;
                    return Some(match line {
                        Some(line) => format!("{shown}, line {line}"),
                        None => shown,
                    });
                }
            }
        }
    }
    None
}

impl ReadAs {
    fn explain(&self, error: impl std::fmt::Display) -> DataFusionError {
        let error = error.to_string();
        let mut message = format!(
            "its text is read as {} to compare with the other side: {error}",
            self.data_type
        );
        if matches!(
            self.data_type,
            DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        ) && quoted(&error).is_some_and(looks_like_base64)
        {
            message.push_str(
                " (a Kafka Connect / Debezium decimal in JSON is base64 unless decimal.handling.mode is string or double: decode it in a stream view with connect_decimal(column, scale))",
            );
        }
        if let Some(marker) = quoted(&error).filter(|text| is_null_marker(text)) {
            message.push_str(&format!(
                " ('{marker}' looks like a NULL written as text, as MySQL and Hive dumps write \\N: read it as NULL in a view over the raw files, e.g. NULLIF({}, '{marker}'))",
                self.column
            ));
        }
        DataFusionError::External(Box::new(crate::error::Unreadable {
            column: self.column.clone(),
            side: self.side.clone(),
            text: quoted(&error).map(str::to_string),
            detail: message,
            file: None,
        }))
    }
}

/// Text that exporters write for NULL, which a CSV reader takes for a value.
fn is_null_marker(text: &str) -> bool {
    ["\\N", "NULL", "null", "NA", "N/A", "None", "nil"].contains(&text)
}

/// The first '…'-quoted part of arrow's cast error: the text that did not read.
fn quoted(error: &str) -> Option<&str> {
    let start = error.find('\'')? + 1;
    let end = start + error[start..].find('\'')?;
    Some(&error[start..end])
}

fn looks_like_base64(text: &str) -> bool {
    !text.is_empty()
        && text.len().is_multiple_of(4)
        && text
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

impl ScalarUDFImpl for ReadAs {
    fn name(&self) -> &str {
        "dualrun_read_as"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        let read = |array: &ArrayRef| -> Result<ArrayRef> {
            let cast =
                cast_with_options(array, &self.data_type, &options).map_err(|e| self.explain(e))?;
            if let DataType::Timestamp(unit, _) = &self.data_type {
                self.check_precision(array, *unit)?;
            }
            Ok(cast)
        };
        match &args.args[0] {
            ColumnarValue::Array(array) => read(array).map(ColumnarValue::Array),
            ColumnarValue::Scalar(scalar) => Ok(ColumnarValue::Scalar(
                ScalarValue::try_from_array(&read(&scalar.to_array()?)?, 0)?,
            )),
        }
    }
}

impl ReadAs {
    /// Text read as a timestamp of seconds, milliseconds or microseconds (the other side's
    /// unit, as one that reaches past 2262 where nanoseconds end) must not hold a finer
    /// fraction: the cast drops it, and `10:00:00.000000001` would equal `10:00:00`.
    fn check_precision(&self, text: &ArrayRef, unit: TimeUnit) -> Result<()> {
        let step = match unit {
            TimeUnit::Second => 1_000_000_000,
            TimeUnit::Millisecond => 1_000_000,
            TimeUnit::Microsecond => 1_000,
            TimeUnit::Nanosecond => return Ok(()),
        };
        let text = cast(text, &DataType::Utf8)?;
        for value in text.as_string::<i32>().iter().flatten() {
            let Ok(instant) = string_to_datetime(&chrono::Utc, value) else {
                continue;
            };
            if instant.timestamp_subsec_nanos() % step != 0 {
                let unit = match unit {
                    TimeUnit::Second => "second",
                    TimeUnit::Millisecond => "millisecond",
                    _ => "microsecond",
                };
                return Err(self.explain(format!(
                    "'{value}' is finer than the other side's {unit}s, so the two cannot be compared exactly: round it in a view of this side, e.g. date_trunc('{unit}', CAST({} AS TIMESTAMP)) AS {}",
                    self.column, self.column
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_told_from_numbers_that_did_not_read() {
        assert!(looks_like_base64("AfQ="));
        assert!(looks_like_base64("B1vNFQ=="));
        assert!(!looks_like_base64("12.5x"));
        assert!(!looks_like_base64("abc"));
        assert!(is_null_marker("\\N") && is_null_marker("NULL"));
        assert!(!is_null_marker("") && !is_null_marker("N"));
        assert_eq!(
            quoted("Cast error: Cannot cast string '+y4=' to value of Decimal128(38, 10) type"),
            Some("+y4=")
        );
    }
}
