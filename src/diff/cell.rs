//! One cell of a result as the reports show it: JSON for machines, text for people. Samples,
//! findings and value pairs all go through here, so a value reads the same everywhere.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;

/// A cell as JSON: numbers and booleans as themselves, NULL as null, the rest as arrow prints it.
pub fn cell_json(array: &ArrayRef, index: usize) -> Value {
    if array.is_null(index) {
        return Value::Null;
    }
    let options = FormatOptions::default();
    let text = match ArrayFormatter::try_new(array.as_ref(), &options) {
        Ok(formatter) => formatter.value(index).to_string(),
        Err(_) => return Value::String(format!("<{}>", array.data_type())),
    };
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(index)),
        t if t.is_integer() => text
            .parse::<i128>()
            .ok()
            .and_then(serde_json::Number::from_i128)
            .map(Value::Number)
            .unwrap_or(Value::String(text)),
        t if t.is_floating() => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::String(text)),
        _ => Value::String(text),
    }
}

/// A cell as people read it: NULL spelled out, everything else as arrow prints it.
pub fn cell_text(array: &ArrayRef, index: usize) -> String {
    match cell_json(array, index) {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s,
        other => other.to_string(),
    }
}
