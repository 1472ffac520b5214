//! Packing the exactly-compared values of a row into one binary value before the keyed join.
//! A hash join gathers the build side's columns for every output row; one packed column costs
//! one random access per row where ten columns cost ten, and one comparison tells whether any
//! packed column differs. Only divergent rows are unpacked again, to name the differing columns.
//!
//! The encoding is built for equality, nothing else, so it is compact and cheap to write: per
//! row, a validity bitmap of the packed columns, then each non-NULL value: fixed-width values as
//! their little-endian bytes (floats canonical: every NaN one NaN, −0.0 as 0.0), booleans as one
//! byte, strings and binaries as a 4-byte length and their bytes. Given the column types, the
//! encoding is injective, so two rows pack to equal bytes exactly when every value is equal
//! under dualrun's rules. (arrow's row format, used before, encodes for ordering: strings in
//! padded blocks, a third larger and slower to write.)
//!
//! Columns with a tolerance (compared numerically), the time and window columns (needed as
//! values by the findings) and types without a flat encoding stay as they are. Packing runs
//! in-process only: the stock Ballista executors do not know the function.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use datafusion::arrow::array::ArrayData;
use datafusion::arrow::array::builder::{
    BinaryBuilder, BinaryViewBuilder, BooleanBuilder, FixedSizeBinaryBuilder, LargeBinaryBuilder,
    LargeStringBuilder, StringBuilder, StringViewBuilder, make_view,
};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryViewArray, BooleanBufferBuilder, RecordBatch, make_array,
};
use datafusion::arrow::buffer::{Buffer, MutableBuffer};
use datafusion::arrow::compute::kernels::cmp::distinct;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::align::AlignedColumn;
use super::plan::{batch_value_name, differs_name, stream_value_name};

/// Output columns of a packed diff: both sides' packed values, and whether they differ.
pub const BATCH_PACKED: &str = "__dr_bpk";
pub const STREAM_PACKED: &str = "__dr_spk";
pub const PACKED_DIFFERS: &str = "__dr_pkd";
/// The packed column on each side before the join.
pub const PACKED: &str = "__dr_pk";

/// The largest data buffer a binary view can address (offsets are 32-bit).
const MAX_BLOCK: u64 = u32::MAX as u64;

/// Which value columns (indexes into the alignment's values) are packed, and their types.
#[derive(Debug, Clone, PartialEq)]
pub struct Packing {
    pub columns: Vec<usize>,
    types: Vec<DataType>,
}

impl Packing {
    /// The packable value columns, when there are at least two (one column gains nothing).
    pub fn choose(values: &[AlignedColumn], keep: &[&str]) -> Option<Packing> {
        let columns: Vec<usize> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| {
                v.tolerance.is_none() && !keep.contains(&v.name.as_str()) && packable(&v.common)
            })
            .map(|(i, _)| i)
            .collect();
        if columns.len() < 2 {
            return None;
        }
        let types = columns.iter().map(|&i| values[i].common.clone()).collect();
        Some(Packing { columns, types })
    }

    pub fn packs(&self, value_index: usize) -> bool {
        self.columns.contains(&value_index)
    }

    /// `dualrun_pack(columns...)` as an expression.
    pub fn call(&self, args: Vec<Expr>) -> Expr {
        ScalarUDF::from(PackUdf {
            signature: Signature::any(self.columns.len(), Volatility::Immutable),
            types: self.types.clone(),
        })
        .call(args)
    }

    /// The packed values of one side decoded into one array per packed column; a NULL packed
    /// value (the side without the row) reads as NULL in every column.
    pub fn decode(&self, packed: &ArrayRef) -> Result<Vec<ArrayRef>> {
        decode(packed.as_binary_view(), &self.types)
    }

    /// The diff output with the packed columns replaced by the unpacked values and their
    /// per-column "differs" flags, as an unpacked plan would have produced them.
    pub fn unpack(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let packed = |name: &str| -> Result<Vec<ArrayRef>> {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| anyhow!("internal: diff output lacks {name}"))?;
            self.decode(column)
        };
        let (batch_values, stream_values) = (packed(BATCH_PACKED)?, packed(STREAM_PACKED)?);
        let schema = batch.schema();
        let mut fields: Vec<Arc<Field>> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            if [BATCH_PACKED, STREAM_PACKED, PACKED_DIFFERS].contains(&field.name().as_str()) {
                continue;
            }
            fields.push(field.clone());
            columns.push(column.clone());
        }
        for ((&index, b), s) in self.columns.iter().zip(batch_values).zip(stream_values) {
            let differs = distinct(&b, &s)?;
            let data_type = b.data_type().clone();
            fields.push(Arc::new(Field::new(
                differs_name(index),
                DataType::Boolean,
                false,
            )));
            columns.push(Arc::new(differs));
            fields.push(Arc::new(Field::new(
                batch_value_name(index),
                data_type.clone(),
                true,
            )));
            columns.push(b);
            fields.push(Arc::new(Field::new(
                stream_value_name(index),
                data_type,
                true,
            )));
            columns.push(s);
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

/// Types with an encoding whose byte equality is DataFusion's IS DISTINCT FROM after dualrun's
/// float canonicalisation: fixed-width scalars, booleans, strings and binaries; not nested,
/// dictionary-encoded or half-precision values.
fn packable(data_type: &DataType) -> bool {
    use DataType::*;
    (data_type.primitive_width().is_some() && *data_type != Float16)
        || matches!(
            data_type,
            Boolean
                | Utf8
                | LargeUtf8
                | Utf8View
                | Binary
                | LargeBinary
                | BinaryView
                | FixedSizeBinary(_)
        )
}

/// The values of one packed column, typed once so that the per-row loops are tight.
enum Values<'a> {
    Fixed {
        /// The little-endian native values, from the array's first value on.
        bytes: Buffer,
        width: usize,
        float: Option<FloatWidth>,
    },
    Boolean(&'a datafusion::arrow::array::BooleanArray),
    Utf8(&'a datafusion::arrow::array::StringArray),
    LargeUtf8(&'a datafusion::arrow::array::LargeStringArray),
    Utf8View(&'a datafusion::arrow::array::StringViewArray),
    Binary(&'a datafusion::arrow::array::BinaryArray),
    LargeBinary(&'a datafusion::arrow::array::LargeBinaryArray),
    BinaryView(&'a BinaryViewArray),
    FixedSizeBinary(&'a datafusion::arrow::array::FixedSizeBinaryArray),
}

#[derive(Clone, Copy)]
enum FloatWidth {
    F32,
    F64,
}

fn values(array: &ArrayRef) -> Result<Values<'_>> {
    use DataType::*;
    Ok(match array.data_type() {
        Boolean => Values::Boolean(array.as_boolean()),
        Utf8 => Values::Utf8(array.as_string::<i32>()),
        LargeUtf8 => Values::LargeUtf8(array.as_string::<i64>()),
        Utf8View => Values::Utf8View(array.as_string_view()),
        Binary => Values::Binary(array.as_binary::<i32>()),
        LargeBinary => Values::LargeBinary(array.as_binary::<i64>()),
        BinaryView => Values::BinaryView(array.as_binary_view()),
        FixedSizeBinary(_) => Values::FixedSizeBinary(array.as_fixed_size_binary()),
        other => {
            let width = other
                .primitive_width()
                .ok_or_else(|| anyhow!("internal: cannot pack {other}"))?;
            let data = array.to_data();
            let bytes =
                data.buffers()[0].slice_with_length(data.offset() * width, data.len() * width);
            Values::Fixed {
                bytes,
                width,
                float: match other {
                    Float32 => Some(FloatWidth::F32),
                    Float64 => Some(FloatWidth::F64),
                    _ => None,
                },
            }
        }
    })
}

/// One packed column, typed once, read row by row while a row is written.
enum Column<'a> {
    W1(&'a [[u8; 1]]),
    W2(&'a [[u8; 2]]),
    W4(&'a [[u8; 4]]),
    W8(&'a [[u8; 8]]),
    W16(&'a [[u8; 16]]),
    W32(&'a [[u8; 32]]),
    F32(&'a [[u8; 4]]),
    F64(&'a [[u8; 8]]),
    Boolean(&'a datafusion::arrow::array::BooleanArray),
    Bytes(Values<'a>),
}

impl<'a> Column<'a> {
    fn new(values: &'a Values<'a>) -> Column<'a> {
        match values {
            Values::Fixed {
                bytes,
                width,
                float,
            } => match (width, float) {
                (4, Some(FloatWidth::F32)) => Column::F32(bytes.as_chunks().0),
                (8, Some(FloatWidth::F64)) => Column::F64(bytes.as_chunks().0),
                (1, _) => Column::W1(bytes.as_chunks().0),
                (2, _) => Column::W2(bytes.as_chunks().0),
                (4, _) => Column::W4(bytes.as_chunks().0),
                (8, _) => Column::W8(bytes.as_chunks().0),
                (16, _) => Column::W16(bytes.as_chunks().0),
                _ => Column::W32(bytes.as_chunks().0),
            },
            Values::Boolean(a) => Column::Boolean(a),
            Values::Utf8(a) => Column::Bytes(Values::Utf8(a)),
            Values::LargeUtf8(a) => Column::Bytes(Values::LargeUtf8(a)),
            Values::Utf8View(a) => Column::Bytes(Values::Utf8View(a)),
            Values::Binary(a) => Column::Bytes(Values::Binary(a)),
            Values::LargeBinary(a) => Column::Bytes(Values::LargeBinary(a)),
            Values::BinaryView(a) => Column::Bytes(Values::BinaryView(a)),
            Values::FixedSizeBinary(a) => Column::Bytes(Values::FixedSizeBinary(a)),
        }
    }

    /// Appends row `i`'s value.
    #[inline]
    fn write(&self, i: usize, out: &mut Vec<u8>) {
        match self {
            Column::W1(v) => out.extend_from_slice(&v[i]),
            Column::W2(v) => out.extend_from_slice(&v[i]),
            Column::W4(v) => out.extend_from_slice(&v[i]),
            Column::W8(v) => out.extend_from_slice(&v[i]),
            Column::W16(v) => out.extend_from_slice(&v[i]),
            Column::W32(v) => out.extend_from_slice(&v[i]),
            Column::F32(v) => {
                let value = canonical_f32(f32::from_le_bytes(v[i]));
                out.extend_from_slice(&value.to_le_bytes());
            }
            Column::F64(v) => {
                let value = canonical_f64(f64::from_le_bytes(v[i]));
                out.extend_from_slice(&value.to_le_bytes());
            }
            Column::Boolean(a) => out.push(u8::from(a.value(i))),
            Column::Bytes(values) => {
                let value: &[u8] = match values {
                    Values::Utf8(a) => a.value(i).as_bytes(),
                    Values::LargeUtf8(a) => a.value(i).as_bytes(),
                    Values::Utf8View(a) => a.value(i).as_bytes(),
                    Values::Binary(a) => a.value(i),
                    Values::LargeBinary(a) => a.value(i),
                    Values::BinaryView(a) => a.value(i),
                    Values::FixedSizeBinary(a) => a.value(i),
                    Values::Fixed { .. } | Values::Boolean(_) => &[],
                };
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
        }
    }
}

/// Bytes the packed rows of `arrays` take, to allocate exactly once (the build side of the
/// join keeps these buffers: spare capacity would be held for the whole diff).
fn packed_bytes(arrays: &[ArrayRef]) -> usize {
    let rows = arrays.first().map_or(0, |a| a.len());
    let mut bytes = rows * arrays.len().div_ceil(8);
    for array in arrays {
        let valid = array.len() - array.logical_null_count();
        bytes += match array.data_type() {
            DataType::Boolean => valid,
            t if t.primitive_width().is_some() => valid * t.primitive_width().unwrap_or(0),
            _ => valid * 4 + value_bytes(array),
        };
    }
    bytes
}

/// Total length of the non-NULL values of a string or binary array.
fn value_bytes(array: &ArrayRef) -> usize {
    use DataType::*;
    let nulls = array.logical_nulls();
    let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
    let view_lengths = |views: &[u128]| -> usize {
        views
            .iter()
            .enumerate()
            .filter(|(i, _)| valid(*i))
            .map(|(_, v)| *v as u32 as usize)
            .sum()
    };
    match array.data_type() {
        Utf8View => view_lengths(array.as_string_view().views()),
        BinaryView => view_lengths(array.as_binary_view().views()),
        FixedSizeBinary(n) => (array.len() - array.logical_null_count()) * *n as usize,
        Utf8 | Binary => {
            let data = array.to_data();
            let offsets = data.buffers()[0].typed_data::<i32>();
            let offset = data.offset();
            (0..array.len())
                .filter(|&i| valid(i))
                .map(|i| (offsets[offset + i + 1] - offsets[offset + i]) as usize)
                .sum()
        }
        LargeUtf8 | LargeBinary => {
            let data = array.to_data();
            let offsets = data.buffers()[0].typed_data::<i64>();
            let offset = data.offset();
            (0..array.len())
                .filter(|&i| valid(i))
                .map(|i| (offsets[offset + i + 1] - offsets[offset + i]) as usize)
                .sum()
        }
        _ => 0,
    }
}

/// Packs the rows of `arrays` (all of one length) into one binary view per row.
fn encode(arrays: &[ArrayRef]) -> Result<BinaryViewArray> {
    encode_in_blocks(arrays, MAX_BLOCK)
}

/// `encode`, with data buffers of at most `max_block` bytes (a view addresses at most 4 GiB
/// of one buffer; in practice a batch packs to megabytes).
fn encode_in_blocks(arrays: &[ArrayRef], max_block: u64) -> Result<BinaryViewArray> {
    let rows = arrays.first().map_or(0, |a| a.len());
    let bitmap = arrays.len().div_ceil(8);
    let values: Vec<Values> = arrays.iter().map(values).collect::<Result<_>>()?;
    let columns: Vec<Column> = values.iter().map(Column::new).collect();
    let nulls: Vec<_> = arrays.iter().map(|a| a.logical_nulls()).collect();
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(packed_bytes(arrays).min(max_block as usize));
    // (block, start) of every row; a row's end is the next row's start or its block's end.
    let mut starts: Vec<(u32, u32)> = Vec::with_capacity(rows);
    for i in 0..rows {
        let start = out.len();
        out.resize(start + bitmap, 0);
        for (c, (column, nulls)) in columns.iter().zip(&nulls).enumerate() {
            if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                continue;
            }
            out[start + c / 8] |= 1 << (c % 8);
            column.write(i, &mut out);
        }
        if out.len() as u64 > max_block {
            // The row does not fit this buffer: it starts the next one.
            let row = out.split_off(start);
            if row.len() as u64 > max_block {
                bail!(
                    "a row of {} bytes is too large to compare (at most 4 GiB)",
                    row.len()
                );
            }
            blocks.push(std::mem::replace(&mut out, row));
            starts.push((blocks.len() as u32, 0));
        } else {
            starts.push((blocks.len() as u32, start as u32));
        }
    }
    blocks.push(out);
    let buffers: Vec<Buffer> = blocks.into_iter().map(Buffer::from_vec).collect();
    let mut views: Vec<u128> = Vec::with_capacity(rows);
    for (i, &(block, start)) in starts.iter().enumerate() {
        let end = match starts.get(i + 1) {
            Some(&(next_block, next)) if next_block == block => next as usize,
            _ => buffers[block as usize].len(),
        };
        views.push(make_view(
            &buffers[block as usize][start as usize..end],
            block,
            start,
        ));
    }
    // SAFETY: every view was made by `make_view` from its own bytes in the buffer it names.
    Ok(unsafe { BinaryViewArray::new_unchecked(views.into(), buffers, None) })
}

/// Every NaN the one positive quiet NaN, −0.0 as 0.0: the equality dualrun promises.
fn canonical_f64(v: f64) -> f64 {
    if v.is_nan() {
        f64::NAN
    } else if v == 0.0 {
        0.0
    } else {
        v
    }
}

fn canonical_f32(v: f32) -> f32 {
    if v.is_nan() {
        f32::NAN
    } else if v == 0.0 {
        0.0
    } else {
        v
    }
}

/// The inverse of `encode`, for the rows of `packed`, as arrays of `types`.
fn decode(packed: &BinaryViewArray, types: &[DataType]) -> Result<Vec<ArrayRef>> {
    let rows = packed.len();
    let bitmap = types.len().div_ceil(8);
    let mut columns: Vec<Decoder> = types.iter().map(|t| Decoder::new(t, rows)).collect();
    for i in 0..rows {
        if packed.is_null(i) {
            columns.iter_mut().for_each(Decoder::append_null);
            continue;
        }
        let row = packed.value(i);
        let mut at = bitmap;
        for (column, decoder) in columns.iter_mut().enumerate() {
            if row[column / 8] & (1 << (column % 8)) == 0 {
                decoder.append_null();
                continue;
            }
            at += decoder.append(&row[at..])?;
        }
    }
    columns.into_iter().map(Decoder::finish).collect()
}

/// Rebuilds one column from packed values.
enum Decoder {
    Fixed {
        data_type: DataType,
        width: usize,
        values: MutableBuffer,
        valid: BooleanBufferBuilder,
    },
    Boolean(BooleanBuilder),
    Utf8(StringBuilder),
    LargeUtf8(LargeStringBuilder),
    Utf8View(StringViewBuilder),
    Binary(BinaryBuilder),
    LargeBinary(LargeBinaryBuilder),
    BinaryView(BinaryViewBuilder),
    FixedSizeBinary(FixedSizeBinaryBuilder),
}

impl Decoder {
    fn new(data_type: &DataType, rows: usize) -> Decoder {
        use DataType::*;
        match data_type {
            Boolean => Decoder::Boolean(BooleanBuilder::with_capacity(rows)),
            Utf8 => Decoder::Utf8(StringBuilder::with_capacity(rows, 0)),
            LargeUtf8 => Decoder::LargeUtf8(LargeStringBuilder::with_capacity(rows, 0)),
            Utf8View => Decoder::Utf8View(StringViewBuilder::with_capacity(rows)),
            Binary => Decoder::Binary(BinaryBuilder::with_capacity(rows, 0)),
            LargeBinary => Decoder::LargeBinary(LargeBinaryBuilder::with_capacity(rows, 0)),
            BinaryView => Decoder::BinaryView(BinaryViewBuilder::with_capacity(rows)),
            FixedSizeBinary(n) => {
                Decoder::FixedSizeBinary(FixedSizeBinaryBuilder::with_capacity(rows, *n))
            }
            other => {
                let width = other.primitive_width().unwrap_or(0);
                Decoder::Fixed {
                    data_type: other.clone(),
                    width,
                    values: MutableBuffer::new(rows * width),
                    valid: BooleanBufferBuilder::new(rows),
                }
            }
        }
    }

    fn append_null(&mut self) {
        match self {
            Decoder::Fixed {
                width,
                values,
                valid,
                ..
            } => {
                values.extend_zeros(*width);
                valid.append(false);
            }
            Decoder::Boolean(b) => b.append_null(),
            Decoder::Utf8(b) => b.append_null(),
            Decoder::LargeUtf8(b) => b.append_null(),
            Decoder::Utf8View(b) => b.append_null(),
            Decoder::Binary(b) => b.append_null(),
            Decoder::LargeBinary(b) => b.append_null(),
            Decoder::BinaryView(b) => b.append_null(),
            Decoder::FixedSizeBinary(b) => b.append_null(),
        }
    }

    /// Appends the value at the start of `bytes`; returns how many bytes it took.
    fn append(&mut self, bytes: &[u8]) -> Result<usize> {
        let truncated = || anyhow!("internal: a packed row is truncated");
        if let Decoder::Fixed {
            width,
            values,
            valid,
            ..
        } = self
        {
            values.extend_from_slice(bytes.get(..*width).ok_or_else(truncated)?);
            valid.append(true);
            return Ok(*width);
        }
        if let Decoder::Boolean(b) = self {
            b.append_value(*bytes.first().ok_or_else(truncated)? != 0);
            return Ok(1);
        }
        let length = u32::from_le_bytes(
            bytes
                .get(..4)
                .ok_or_else(truncated)?
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        let value = bytes.get(4..4 + length).ok_or_else(truncated)?;
        let text = || std::str::from_utf8(value).map_err(|e| anyhow!("internal: packed text: {e}"));
        match self {
            Decoder::Utf8(b) => b.append_value(text()?),
            Decoder::LargeUtf8(b) => b.append_value(text()?),
            Decoder::Utf8View(b) => b.append_value(text()?),
            Decoder::Binary(b) => b.append_value(value),
            Decoder::LargeBinary(b) => b.append_value(value),
            Decoder::BinaryView(b) => b.append_value(value),
            Decoder::FixedSizeBinary(b) => b.append_value(value)?,
            Decoder::Fixed { .. } | Decoder::Boolean(_) => unreachable!("handled above"),
        }
        Ok(4 + length)
    }

    fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            Decoder::Fixed {
                data_type,
                values,
                mut valid,
                ..
            } => {
                let rows = valid.len();
                let data = ArrayData::builder(data_type)
                    .len(rows)
                    .add_buffer(values.into())
                    .null_bit_buffer(Some(valid.finish().into_inner()))
                    .build()?;
                make_array(data)
            }
            Decoder::Boolean(mut b) => Arc::new(b.finish()),
            Decoder::Utf8(mut b) => Arc::new(b.finish()),
            Decoder::LargeUtf8(mut b) => Arc::new(b.finish()),
            Decoder::Utf8View(mut b) => Arc::new(b.finish()),
            Decoder::Binary(mut b) => Arc::new(b.finish()),
            Decoder::LargeBinary(mut b) => Arc::new(b.finish()),
            Decoder::BinaryView(mut b) => Arc::new(b.finish()),
            Decoder::FixedSizeBinary(mut b) => Arc::new(b.finish()),
        })
    }
}

/// The packed values of the arguments, as one binary view per row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PackUdf {
    signature: Signature,
    types: Vec<DataType>,
}

impl ScalarUDFImpl for PackUdf {
    fn name(&self) -> &str {
        "dualrun_pack"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::BinaryView)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let packed = encode(&arrays)
            .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))?;
        Ok(ColumnarValue::Array(Arc::new(packed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BooleanArray, Decimal128Array, Float64Array, Int32Array, StringArray, StringViewArray,
        TimestampMicrosecondArray,
    };

    fn columns() -> Vec<ArrayRef> {
        vec![
            Arc::new(Int32Array::from(vec![
                Some(1),
                None,
                Some(-3),
                Some(1),
                Some(7),
            ])),
            Arc::new(Float64Array::from(vec![
                Some(f64::NAN),
                Some(-0.0),
                None,
                Some(-f64::NAN),
                Some(2.5),
            ])),
            Arc::new(StringViewArray::from(vec![
                Some("a"),
                Some(""),
                None,
                Some("a"),
                Some("a longer string than twelve bytes"),
            ])),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false),
                Some(true),
                Some(false),
            ])),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None, Some(-1), Some(12345), Some(0)])
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1), Some(2), None, Some(1), Some(3)])
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec![
                None,
                Some("x"),
                Some("y"),
                None,
                Some("z"),
            ])),
        ]
    }

    #[test]
    fn decode_inverts_encode_with_canonical_floats() {
        let arrays = columns();
        let types: Vec<DataType> = arrays.iter().map(|a| a.data_type().clone()).collect();
        let packed = encode(&arrays).unwrap();
        let decoded = decode(&packed, &types).unwrap();
        for (original, back) in arrays.iter().zip(&decoded) {
            assert_eq!(original.data_type(), back.data_type());
            let same = distinct(original, back).unwrap();
            // Only the floats change: -NaN and -0.0 come back canonical, which compare equal.
            if original.data_type() != &DataType::Float64 {
                assert_eq!(same.true_count(), 0, "{original:?} vs {back:?}");
            }
        }
        let floats = decoded[1].as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert!(floats.value(0).is_nan() && floats.value(3).is_nan());
        assert_eq!(floats.value(1).to_bits(), 0.0f64.to_bits());
        assert!(floats.is_null(2));
    }

    #[test]
    fn equal_rows_pack_equal_and_different_rows_differently() {
        let packed = encode(&columns()).unwrap();
        // Rows 0 and 3 differ only by the sign of NaN: equal under dualrun's rules.
        assert_eq!(packed.value(0), packed.value(3));
        for (a, b) in [(0, 1), (0, 2), (0, 4), (1, 2), (2, 4)] {
            assert_ne!(packed.value(a), packed.value(b), "rows {a} and {b}");
        }
        // A NULL and a value never collide, whatever the bytes: "" vs NULL, 0 vs NULL.
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some(""), None]));
        let b: ArrayRef = Arc::new(Int32Array::from(vec![None, Some(0)]));
        let packed = encode(&[a, b]).unwrap();
        assert_ne!(packed.value(0), packed.value(1));
    }

    #[test]
    fn rows_beyond_one_buffer_go_to_several() {
        let arrays = columns();
        let whole = encode(&arrays).unwrap();
        let split = encode_in_blocks(&arrays, 90).unwrap();
        assert!(split.data_buffers().len() > 1);
        for i in 0..whole.len() {
            assert_eq!(whole.value(i), split.value(i));
        }
        assert!(
            encode_in_blocks(&arrays, 10).is_err(),
            "a row larger than a buffer"
        );
    }

    #[test]
    fn sliced_inputs_pack_like_whole_ones() {
        let arrays = columns();
        let sliced: Vec<ArrayRef> = arrays.iter().map(|a| a.slice(2, 3)).collect();
        let whole = encode(&arrays).unwrap();
        let part = encode(&sliced).unwrap();
        // The buffer is allocated at its exact size, sliced or not.
        for (input, packed) in [(&arrays, &whole), (&sliced, &part)] {
            let written: usize = (0..packed.len()).map(|i| packed.value(i).len()).sum();
            assert_eq!(packed_bytes(input), written);
        }
        for i in 0..3 {
            assert_eq!(part.value(i), whole.value(i + 2));
        }
    }
}
