//! `connect_decimal(value, scale)`: a Kafka Connect decimal read as a DECIMAL. Debezium writes
//! DECIMAL and NUMERIC columns this way unless `decimal.handling.mode` is `string` or `double`:
//! the unscaled value's big-endian two's-complement bytes, which the JSON converter writes as
//! base64 text ("AfQ=" is 5.00 at scale 2). DataFusion has no function that reads such bytes as a
//! number, so without this a stream view could not give that side its decimals back, and the
//! check could only fail on the text.

use std::sync::Arc;

use base64::Engine as _;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Builder};
use datafusion::arrow::datatypes::{DECIMAL128_MAX_PRECISION, DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;

pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(ConnectDecimal {
        signature: Signature::any(2, Volatility::Immutable),
    }));
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ConnectDecimal {
    signature: Signature,
}

const NAME: &str = "connect_decimal";

/// The scale argument: an integer literal from 0 to 38.
fn scale(argument: Option<&ScalarValue>) -> Result<i8> {
    let value = match argument {
        Some(ScalarValue::Int8(Some(v))) => *v as i64,
        Some(ScalarValue::Int16(Some(v))) => *v as i64,
        Some(ScalarValue::Int32(Some(v))) => *v as i64,
        Some(ScalarValue::Int64(Some(v))) => *v,
        Some(ScalarValue::UInt8(Some(v))) => *v as i64,
        Some(ScalarValue::UInt16(Some(v))) => *v as i64,
        Some(ScalarValue::UInt32(Some(v))) => *v as i64,
        Some(ScalarValue::UInt64(Some(v))) => *v as i64,
        _ => return plan_err!("{NAME}(value, scale): the scale must be an integer literal"),
    };
    if !(0..=DECIMAL128_MAX_PRECISION as i64).contains(&value) {
        return plan_err!("{NAME}(value, scale): the scale must be from 0 to 38, not {value}");
    }
    Ok(value as i8)
}

/// The unscaled value of big-endian two's-complement `bytes`, if it fits 38 digits.
fn unscaled(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut wide = [fill; 16];
    wide[16 - bytes.len()..].copy_from_slice(bytes);
    let value = i128::from_be_bytes(wide);
    let limit = 10i128.pow(DECIMAL128_MAX_PRECISION as u32);
    (value.abs() < limit).then_some(value)
}

fn decode(values: &ArrayRef, scale: i8) -> Result<ArrayRef> {
    let mut out = Decimal128Builder::with_capacity(values.len());
    let mut put = |bytes: Option<&[u8]>, shown: &dyn Fn() -> String| -> Result<()> {
        match bytes {
            None => out.append_null(),
            Some(bytes) => match unscaled(bytes) {
                Some(v) => out.append_value(v),
                None => {
                    return exec_err!(
                        "{NAME}: {} is not a decimal of at most 38 digits (big-endian two's-complement bytes)",
                        shown()
                    );
                }
            },
        }
        Ok(())
    };
    let base64 = base64::engine::general_purpose::STANDARD;
    let mut from_text = |text: Option<&str>| -> Result<()> {
        match text {
            None => put(None, &|| String::new()),
            Some(text) => {
                let bytes = base64.decode(text.trim()).map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!(
                        "{NAME}: '{text}' is not base64 ({e})"
                    ))
                })?;
                put(Some(&bytes), &|| format!("'{text}'"))
            }
        }
    };
    match values.data_type() {
        DataType::Utf8 => values
            .as_string::<i32>()
            .iter()
            .try_for_each(&mut from_text)?,
        DataType::LargeUtf8 => values
            .as_string::<i64>()
            .iter()
            .try_for_each(&mut from_text)?,
        DataType::Utf8View => values
            .as_string_view()
            .iter()
            .try_for_each(&mut from_text)?,
        DataType::Binary => values
            .as_binary::<i32>()
            .iter()
            .try_for_each(|b| put(b, &|| format!("{b:02x?}")))?,
        DataType::LargeBinary => values
            .as_binary::<i64>()
            .iter()
            .try_for_each(|b| put(b, &|| format!("{b:02x?}")))?,
        DataType::BinaryView => values
            .as_binary_view()
            .iter()
            .try_for_each(|b| put(b, &|| format!("{b:02x?}")))?,
        other => {
            return exec_err!(
                "{NAME}(value, scale): value must be base64 text or binary, not {other}"
            );
        }
    }
    Ok(Arc::new(out.finish().with_precision_and_scale(
        DECIMAL128_MAX_PRECISION,
        scale,
    )?))
}

impl ScalarUDFImpl for ConnectDecimal {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!("{NAME}: the type comes from the scale argument")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let scale = scale(args.scalar_arguments.get(1).copied().flatten())?;
        match args.arg_fields[0].data_type() {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::Null => {}
            other => {
                return plan_err!(
                    "{NAME}(value, scale): value must be base64 text or binary, not {other}"
                );
            }
        }
        Ok(Arc::new(Field::new(
            NAME,
            DataType::Decimal128(DECIMAL128_MAX_PRECISION, scale),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Decimal128(_, scale) = args.return_field.data_type() else {
            return exec_err!("{NAME}: unexpected return type");
        };
        let values = args.args[0].to_array(args.number_rows)?;
        if values.data_type() == &DataType::Null {
            return Ok(ColumnarValue::Scalar(ScalarValue::Decimal128(
                None,
                DECIMAL128_MAX_PRECISION,
                *scale,
            )));
        }
        Ok(ColumnarValue::Array(decode(&values, *scale)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    #[test]
    fn debezium_base64_decimals_read_as_their_values() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("AfQ="),
            Some("+y4="),
            Some("B1vNFQ=="),
            None,
            Some("AA=="),
        ]));
        let decoded = decode(&text, 2).unwrap();
        let decoded = decoded.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        let shown: Vec<String> = (0..decoded.len())
            .map(|i| {
                if decoded.is_null(i) {
                    "NULL".into()
                } else {
                    decoded.value_as_string(i)
                }
            })
            .collect();
        assert_eq!(shown, ["5.00", "-12.34", "1234567.89", "NULL", "0.00"]);
        let bad: ArrayRef = Arc::new(StringArray::from(vec!["12.5"]));
        let error = decode(&bad, 2).unwrap_err().to_string();
        assert!(error.contains("'12.5' is not base64"), "{error}");
        assert_eq!(unscaled(&[0x80; 17]), None);
        assert_eq!(unscaled(&[0xff]), Some(-1));
    }
}
