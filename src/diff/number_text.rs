//! Numbers of different types compared as they read. A float column against an integer or
//! decimal one (the stream's JSON doubles against the batch's BIGINT or DECIMAL) has no numeric
//! type both sides convert to exactly: as doubles, Int64 9007199254740993 equals the double
//! 9007199254740992 (a snowflake id that lost its last digits matched); as DataFusion's common
//! decimal, the double 144272.509 became 144272.508999999995904 and differed from the DECIMAL
//! 144272.509 (887 of 1,000 equal amounts diverged). Written as the shortest text that reads
//! back as each value (Rust's float formatting; a decimal without trailing zeros), two values
//! are equal exactly when they read as the same number.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{
    DataType, Decimal32Type, Decimal64Type, Decimal128Type, Decimal256Type, Float32Type,
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Whether two column types compare as number text: a float against an integer or a decimal.
/// Float32 against Float64 keeps DataFusion's coercion: the widened float is the same number.
pub fn applies(batch: &DataType, stream: &DataType) -> bool {
    let exact = |t: &DataType| t.is_integer() || t.is_decimal();
    (batch.is_floating() && exact(stream)) || (exact(batch) && stream.is_floating())
}

/// `expr` (a numeric column) as its number text.
pub fn call(expr: Expr) -> Expr {
    ScalarUDF::new_from_impl(NumberText {
        signature: Signature::any(1, Volatility::Immutable),
    })
    .call(vec![expr])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct NumberText {
    signature: Signature,
}

impl ScalarUDFImpl for NumberText {
    fn name(&self) -> &str {
        "dualrun_number_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array(number_text(&arrays[0])?))
    }
}

/// Each value of a numeric array as the shortest text that reads back as it: integers as they
/// are, floats in Rust's shortest round-trip form without an exponent (5.0 as "5", −0.0 as "0",
/// "NaN", "inf"), decimals without trailing zeros.
pub fn number_text(array: &ArrayRef) -> Result<ArrayRef> {
    let mut out = StringBuilder::with_capacity(array.len(), array.len() * 8);
    // Written into the builder's current value (no String per value), which `append_value("")`
    // then closes.
    macro_rules! each {
        ($type:ty, $write:expr) => {{
            let values = array.as_primitive::<$type>();
            for i in 0..values.len() {
                if values.is_null(i) {
                    out.append_null();
                } else {
                    ($write)(&mut out, values.value(i))?;
                    out.append_value("");
                }
            }
        }};
    }
    macro_rules! decimal {
        ($type:ty) => {{
            let values = array.as_primitive::<$type>();
            for i in 0..values.len() {
                if values.is_null(i) {
                    out.append_null();
                } else {
                    out.append_value(trimmed_decimal(values.value_as_string(i)));
                }
            }
        }};
    }
    let int = |out: &mut StringBuilder, v: &dyn std::fmt::Display| write!(out, "{v}");
    match array.data_type() {
        DataType::Int8 => each!(Int8Type, |o: &mut StringBuilder, v: i8| int(o, &v)),
        DataType::Int16 => each!(Int16Type, |o: &mut StringBuilder, v: i16| int(o, &v)),
        DataType::Int32 => each!(Int32Type, |o: &mut StringBuilder, v: i32| int(o, &v)),
        DataType::Int64 => each!(Int64Type, |o: &mut StringBuilder, v: i64| int(o, &v)),
        DataType::UInt8 => each!(UInt8Type, |o: &mut StringBuilder, v: u8| int(o, &v)),
        DataType::UInt16 => each!(UInt16Type, |o: &mut StringBuilder, v: u16| int(o, &v)),
        DataType::UInt32 => each!(UInt32Type, |o: &mut StringBuilder, v: u32| int(o, &v)),
        DataType::UInt64 => each!(UInt64Type, |o: &mut StringBuilder, v: u64| int(o, &v)),
        // Rare enough to read as the Float32 that holds it.
        DataType::Float16 => {
            return number_text(&datafusion::arrow::compute::cast(
                array,
                &DataType::Float32,
            )?);
        }
        DataType::Float32 => each!(Float32Type, |o: &mut StringBuilder, v: f32| {
            write_float(o, f64::from(v), &v)
        }),
        DataType::Float64 => each!(Float64Type, |o: &mut StringBuilder, v: f64| {
            write_float(o, v, &v)
        }),
        DataType::Decimal32(..) => decimal!(Decimal32Type),
        DataType::Decimal64(..) => decimal!(Decimal64Type),
        DataType::Decimal128(..) => decimal!(Decimal128Type),
        DataType::Decimal256(..) => decimal!(Decimal256Type),
        other => return exec_err!("dualrun_number_text: {other} is not a number type"),
    }
    Ok(Arc::new(out.finish()))
}

/// An integral float by its exact value (the double 2^62 is 4611686018427387904, though its
/// shortest form reads 4611686018427388000), any other by its shortest form (`shortest`, the
/// value in its own float type).
fn write_float(
    out: &mut StringBuilder,
    value: f64,
    shortest: &dyn std::fmt::Display,
) -> std::fmt::Result {
    if value == 0.0 {
        out.write_str("0")
    } else if value.is_finite() && value.fract() == 0.0 {
        // Exact as an i64 below 2^63, and far quicker to write than `{:.0}`.
        if value.abs() < 9.223372036854776e18 {
            write!(out, "{}", value as i64)
        } else {
            write!(out, "{value:.0}")
        }
    } else {
        write!(out, "{shortest}")
    }
}

fn trimmed_decimal(text: String) -> String {
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    if text == "-0" { "0".to_string() } else { text }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        Decimal128Array, Float32Array, Float64Array, Int64Array, StringArray,
    };

    use super::*;

    fn texts(array: ArrayRef) -> Vec<Option<String>> {
        let out = number_text(&array).unwrap();
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        out.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn numbers_read_as_the_same_text_exactly_when_they_are_the_same_number() {
        let ints = texts(Arc::new(Int64Array::from(vec![
            Some(9007199254740993),
            Some(5),
            Some(0),
            None,
            Some(1 << 62),
        ])));
        let doubles = texts(Arc::new(Float64Array::from(vec![
            Some(9007199254740992.0),
            Some(5.0),
            Some(-0.0),
            None,
            Some(2f64.powi(62)),
        ])));
        assert_eq!(ints[0].as_deref(), Some("9007199254740993"));
        assert_eq!(doubles[0].as_deref(), Some("9007199254740992"));
        assert_eq!(ints[1..], doubles[1..]);

        let decimals = texts(Arc::new(
            Decimal128Array::from(vec![Some(144272509), Some(1500), Some(-0), Some(100)])
                .with_precision_and_scale(12, 3)
                .unwrap(),
        ));
        let doubles = texts(Arc::new(Float64Array::from(vec![
            144272.509, 1.5, 0.0, 0.1,
        ])));
        assert_eq!(decimals[..3], doubles[..3]);
        assert_eq!(decimals[3].as_deref(), Some("0.1"));
        assert_eq!(doubles[3].as_deref(), Some("0.1"));

        let floats = texts(Arc::new(Float32Array::from(vec![0.1f32, 1e20, f32::NAN])));
        assert_eq!(
            floats,
            ["0.1", "100000002004087734272", "NaN"].map(|s| Some(s.to_string()))
        );
    }
}
