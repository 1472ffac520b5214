//! UUIDs stored as 16 bytes on one side (Avro's and Parquet's UUID types read as
//! FixedSizeBinary(16)) and as text on the other (Spark, a database, JSON) compare as the UUID's
//! canonical text: lowercase hex in 8-4-4-4-12 groups. Arrow casts no binary to text, so without
//! this the column could not be compared at all; text in another form (upper case, no dashes)
//! then differs and says so in the samples.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The type a UUID's bytes come in.
pub const UUID_BYTES: DataType = DataType::FixedSizeBinary(16);

/// Whether a column of `batch` and `stream` types is a UUID as bytes against text.
pub fn applies(batch: &DataType, stream: &DataType) -> bool {
    let text = |t: &DataType| t.is_string();
    (batch == &UUID_BYTES && text(stream)) || (text(batch) && stream == &UUID_BYTES)
}

/// `expr` (16 bytes) as the UUID's canonical text.
pub fn call(expr: Expr) -> Expr {
    ScalarUDF::new_from_impl(UuidText {
        signature: Signature::exact(vec![UUID_BYTES], Volatility::Immutable),
    })
    .call(vec![expr])
}

fn canonical(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct UuidText {
    signature: Signature,
}

impl ScalarUDFImpl for UuidText {
    fn name(&self) -> &str {
        "dualrun_uuid_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        if array.data_type() != &UUID_BYTES {
            return exec_err!(
                "dualrun_uuid_text takes 16 bytes, not {}",
                array.data_type()
            );
        }
        let bytes = array.as_fixed_size_binary();
        let mut out = StringBuilder::with_capacity(bytes.len(), bytes.len() * 36);
        for value in bytes.iter() {
            out.append_option(value.map(canonical));
        }
        let out: datafusion::arrow::array::ArrayRef = Arc::new(out.finish());
        Ok(match &args.args[0] {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(out),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_bytes_read_as_canonical_text() {
        let bytes: Vec<u8> = (0u8..16).map(|i| i * 17).collect();
        assert_eq!(canonical(&bytes), "00112233-4455-6677-8899-aabbccddeeff");
        assert!(applies(&UUID_BYTES, &DataType::Utf8View));
        assert!(!applies(&UUID_BYTES, &DataType::FixedSizeBinary(16)));
    }
}
