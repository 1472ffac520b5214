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

impl ReadAs {
    fn explain(&self, error: impl std::fmt::Display) -> DataFusionError {
        let error = error.to_string();
        let mut message = format!(
            "column '{}' ({} side): its text is read as {} to compare with the other side: {error}",
            self.column, self.side, self.data_type
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
        DataFusionError::External(message.into())
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
