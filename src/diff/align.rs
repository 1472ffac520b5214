//! Lines up the two results by column name before anything is compared: which columns exist on
//! one side only, which changed type, to which common type each pair is coerced, and which
//! tolerance applies. Every naming mistake of the user (key, tolerance or ignore of a column that
//! is not there) is caught here, before any data moves.

use anyhow::{Result, anyhow, bail};
use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;

use super::result::{SchemaDiff, TypeChange};
use super::{number_text, uuid_text};
use crate::config::{CheckSpec, Tolerance};

/// One compared column: its type on each side and the type both are compared in.
#[derive(Debug, Clone)]
pub struct AlignedColumn {
    pub name: String,
    pub batch_type: DataType,
    pub stream_type: DataType,
    pub common: DataType,
    pub tolerance: Option<Tolerance>,
    /// Compared as number text (see `number_text`): the common type is Utf8 and a numeric side
    /// is written as the shortest text that reads back as its value, not cast.
    pub number_text: bool,
}

#[derive(Debug, Clone)]
pub struct Alignment {
    pub keys: Vec<AlignedColumn>,
    pub values: Vec<AlignedColumn>,
    pub schema: SchemaDiff,
}

/// Encodings of one logical type are not type changes: Utf8 / Utf8View / LargeUtf8,
/// dictionary vs plain, Binary / BinaryView / LargeBinary, UTC as "UTC" or "+00:00".
pub fn logical_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Dictionary(_, value) => logical_type(value),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Timestamp(unit, zone) if crate::sources::is_utc(zone) => {
            DataType::Timestamp(*unit, Some("UTC".into()))
        }
        other => other.clone(),
    }
}

fn names(schema: &DFSchema, side: &str) -> Result<Vec<(String, DataType)>> {
    let mut out: Vec<(String, DataType)> = Vec::new();
    for field in schema.fields() {
        if out.iter().any(|(n, _)| n == field.name()) {
            bail!(
                "the {side} result has two columns named '{}': give them distinct aliases",
                field.name()
            );
        }
        out.push((field.name().clone(), field.data_type().clone()));
    }
    Ok(out)
}

/// `portable`: the plans run elsewhere (Ballista), where dualrun's own functions do not exist;
/// numbers of different types are then compared after DataFusion's coercion.
pub fn align(
    check: &CheckSpec,
    batch: &DFSchema,
    stream: &DFSchema,
    portable: bool,
) -> Result<Alignment> {
    let batch_cols = names(batch, "batch")?;
    let stream_cols = names(stream, "stream")?;
    let stream_type = |name: &str| stream_cols.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    let batch_type = |name: &str| batch_cols.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    let listing = |cols: &[(String, DataType)]| {
        cols.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };

    for key in &check.key {
        for (side, present, cols) in [
            ("batch", batch_type(key).is_some(), &batch_cols),
            ("stream", stream_type(key).is_some(), &stream_cols),
        ] {
            if !present {
                // Hive and Spark write names in lower case where Flink keeps `userId`.
                let in_other_case = cols
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(key))
                    .map_or(String::new(), |(n, _)| {
                        format!("; '{n}' differs only in case: rename it in a view of that side (batch_view / stream_view, --batch-view / --stream-view), e.g. SELECT \"{n}\" AS \"{key}\", …")
                    });
                bail!(
                    "key column '{key}' is missing from the {side} result (its columns: {}){in_other_case}",
                    listing(cols)
                );
            }
        }
    }
    for ignored in &check.ignore {
        if batch_type(ignored).is_none() && stream_type(ignored).is_none() {
            bail!(
                "--ignore '{ignored}': no such column in either result (columns: {})",
                listing(&batch_cols)
            );
        }
        if check.key.contains(ignored) {
            bail!("column '{ignored}' is both a key and ignored");
        }
    }
    for (column, _) in &check.tolerances {
        if check.key.is_empty() {
            bail!(
                "tolerance on '{column}' needs a key: keyless rows cannot be paired, so give --key (or key = [...])"
            );
        }
        if check.key.contains(column) {
            bail!("tolerance on key column '{column}': keys are always compared exactly");
        }
        if batch_type(column).is_none() || stream_type(column).is_none() {
            bail!(
                "tolerance on '{column}': the column is not in both results (batch: {}; stream: {})",
                listing(&batch_cols),
                listing(&stream_cols)
            );
        }
    }

    let mut schema = SchemaDiff::default();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for (name, b_type) in &batch_cols {
        if check.ignore.contains(name) {
            continue;
        }
        let Some(s_type) = stream_type(name) else {
            schema.only_in_batch.push(name.clone());
            continue;
        };
        let changed = logical_type(b_type) != logical_type(s_type);
        if changed {
            schema.type_changes.push(TypeChange {
                column: name.clone(),
                batch: b_type.to_string(),
                stream: s_type.to_string(),
            });
        }
        let tolerance = check
            .tolerances
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, t)| t.clone());
        // With a tolerance the difference is numeric, so the types stay numbers.
        let number_text = !portable
            && tolerance.is_none()
            && number_text::applies(&logical_type(b_type), &logical_type(s_type));
        let common = if number_text {
            DataType::Utf8
        } else if b_type == s_type {
            b_type.clone()
        } else if !changed {
            logical_type(b_type)
        } else if !portable && uuid_text::applies(b_type, s_type) {
            DataType::Utf8
        } else {
            comparison_coercion(&logical_type(b_type), &logical_type(s_type))
                // (Not on Ballista, whose plain cast would drop a finer fraction unchecked.)
                .map(|common| match portable {
                    true => common,
                    false => timestamp_unit_kept(common, b_type, s_type),
                })
                .or_else(|| {
                    // As text, when both sides have one (a number against its string).
                    (can_cast_types(b_type, &DataType::Utf8)
                        && can_cast_types(s_type, &DataType::Utf8))
                    .then_some(DataType::Utf8)
                })
                .ok_or_else(|| {
                    anyhow!(
                        "column '{name}' is {b_type} in batch but {s_type} in stream, which cannot be compared (nor read as text): select comparable parts of it in the query, or leave it out with `ignore`"
                    )
                })?
        };
        if let Some(tolerance) = &tolerance {
            check_tolerance_type(name, tolerance, &common)?;
        }
        let column = AlignedColumn {
            name: name.clone(),
            batch_type: b_type.clone(),
            stream_type: s_type.clone(),
            common,
            tolerance,
            number_text,
        };
        if check.key.contains(name) {
            keys.push(column);
        } else {
            values.push(column);
        }
    }
    for (name, _) in &stream_cols {
        if batch_type(name).is_none() && !check.ignore.contains(name) {
            schema.only_in_stream.push(name.clone());
        }
    }
    // Keys in the order the user gave them, so reports and samples read naturally.
    keys.sort_by_key(|c| check.key.iter().position(|k| k == &c.name));
    if keys.is_empty() && values.is_empty() {
        bail!("no column is compared: the two results share no column that is not ignored");
    }
    Ok(Alignment {
        keys,
        values,
        schema,
    })
}

/// A timestamp compared with text (or a date) keeps its own unit. DataFusion's coercion reads
/// both as nanoseconds, which end in 2262: the `9999-12-31` that closes the rows of a type 2
/// slowly changing dimension failed the whole check as "exceeds the representable i64 range".
fn timestamp_unit_kept(common: DataType, b_type: &DataType, s_type: &DataType) -> DataType {
    use datafusion::arrow::datatypes::TimeUnit;
    let DataType::Timestamp(TimeUnit::Nanosecond, zone) = &common else {
        return common;
    };
    match (b_type, s_type) {
        (DataType::Timestamp(_, _), DataType::Timestamp(_, _)) => common,
        (DataType::Timestamp(unit, _), _) | (_, DataType::Timestamp(unit, _)) => {
            DataType::Timestamp(*unit, zone.clone())
        }
        _ => common,
    }
}

pub fn is_numeric(data_type: &DataType) -> bool {
    data_type.is_numeric()
}

pub fn is_temporal(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(_, _)
            | DataType::Date32
            | DataType::Date64
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Duration(_)
    )
}

pub fn is_float(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}

fn check_tolerance_type(column: &str, tolerance: &Tolerance, data_type: &DataType) -> Result<()> {
    match tolerance {
        Tolerance::Numeric { .. } if is_numeric(data_type) => Ok(()),
        Tolerance::Numeric { .. } if is_temporal(data_type) => bail!(
            "tolerance on '{column}' ({data_type}) must be a duration, like abs:1s or abs:500ms"
        ),
        Tolerance::Temporal { .. } if is_temporal(data_type) => Ok(()),
        Tolerance::Temporal { .. } if is_numeric(data_type) => bail!(
            "tolerance on '{column}' ({data_type}) must be a number (abs:X, rel:X), not a duration"
        ),
        _ => bail!(
            "tolerance on '{column}': its type {data_type} is neither numeric nor temporal, so it can only be compared exactly"
        ),
    }
}
