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
    Array, ArrayRef, AsArray, BinaryViewArray, BooleanArray, BooleanBufferBuilder, ByteView,
    RecordBatch, make_array,
};
use datafusion::arrow::buffer::{Buffer, MutableBuffer, ScalarBuffer};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::compute::kernels::cmp::distinct;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::align::AlignedColumn;
use super::columns::{
    BATCH_PACKED, PACKED_DIFFERS, STREAM_PACKED, batch_value_name, differs_name, stream_value_name,
};

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

    /// `b IS DISTINCT FROM s` on two packed columns (see `PackedDiffersUdf`).
    pub fn differs(b: Expr, s: Expr) -> Expr {
        ScalarUDF::from(PackedDiffersUdf {
            signature: Signature::any(2, Volatility::Immutable),
        })
        .call(vec![b, s])
    }

    /// `dualrun_pack(columns...)` as an expression.
    pub fn call(&self, args: Vec<Expr>) -> Expr {
        ScalarUDF::from(PackUdf {
            signature: Signature::any(self.columns.len(), Volatility::Immutable),
            types: self.types.clone(),
        })
        .call(args)
    }

    /// One expression whose ascending byte order is the value order the duplicate-safe plan
    /// pairs a key's rows in: each of `values` ascending, NULLs last, in turn (arrow's row
    /// format, which orders as DataFusion's sort does), with `packed` decoded once for it.
    /// Ordering by each decoded column instead decoded every packed column once per column,
    /// in the sort and again in the window.
    pub fn value_order(&self, values: &[AlignedColumn], packed: Expr) -> Expr {
        let layout: Vec<Option<usize>> = (0..values.len())
            .map(|i| self.columns.iter().position(|&c| c == i))
            .collect();
        let mut args = vec![packed];
        args.extend(
            values
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.packs(*i))
                .map(|(_, v)| Expr::Column(datafusion::common::Column::from_name(&v.name))),
        );
        ScalarUDF::from(OrderUdf {
            signature: Signature::any(args.len(), Volatility::Immutable),
            types: self.types.clone(),
            layout,
        })
        .call(args)
    }

    /// The packed values of one side decoded into one array per packed column; a NULL packed
    /// value (the side without the row) reads as NULL in every column.
    pub fn decode(&self, packed: &ArrayRef) -> Result<Vec<ArrayRef>> {
        decode(packed, &self.types)
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

/// How one packed column's values are written: typed once, so the per-row loop is tight.
/// Integers (and what is stored as one: dates, times, timestamps, durations, decimals up to
/// 128 bits) as zigzag LEB128 varints, so small numbers take a byte or two; floats as their
/// canonical bits; the rest as raw little-endian bytes; strings and binaries as a varint
/// length and their bytes.
enum Column<'a> {
    I16(ScalarBuffer<i16>),
    I32(ScalarBuffer<i32>),
    I64(ScalarBuffer<i64>),
    U16(ScalarBuffer<u16>),
    U32(ScalarBuffer<u32>),
    U64(ScalarBuffer<u64>),
    I128(ScalarBuffer<i128>),
    F32(ScalarBuffer<f32>),
    F64(ScalarBuffer<f64>),
    /// Raw bytes of `width` per value (8-bit integers, day-time and month-day-nano intervals,
    /// 256-bit decimals).
    Raw {
        bytes: Buffer,
        width: usize,
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

/// How a fixed-width type is stored: varint kinds, or raw bytes.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Storage {
    I16,
    I32,
    I64,
    U16,
    U32,
    U64,
    I128,
    F32,
    F64,
    Raw(usize),
}

fn storage(data_type: &DataType) -> Option<Storage> {
    use DataType::*;
    use datafusion::arrow::datatypes::IntervalUnit;
    Some(match data_type {
        Int8 | UInt8 => Storage::Raw(1),
        Int16 => Storage::I16,
        UInt16 => Storage::U16,
        Int32 | Date32 | Time32(_) | Decimal32(_, _) | Interval(IntervalUnit::YearMonth) => {
            Storage::I32
        }
        UInt32 => Storage::U32,
        Int64 | Date64 | Time64(_) | Timestamp(_, _) | Duration(_) | Decimal64(_, _) => {
            Storage::I64
        }
        UInt64 => Storage::U64,
        Decimal128(_, _) => Storage::I128,
        Float32 => Storage::F32,
        Float64 => Storage::F64,
        other => Storage::Raw(other.primitive_width()?),
    })
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef) -> Result<Column<'a>> {
        use DataType::*;
        Ok(match array.data_type() {
            Boolean => Column::Boolean(array.as_boolean()),
            Utf8 => Column::Utf8(array.as_string::<i32>()),
            LargeUtf8 => Column::LargeUtf8(array.as_string::<i64>()),
            Utf8View => Column::Utf8View(array.as_string_view()),
            Binary => Column::Binary(array.as_binary::<i32>()),
            LargeBinary => Column::LargeBinary(array.as_binary::<i64>()),
            BinaryView => Column::BinaryView(array.as_binary_view()),
            FixedSizeBinary(_) => Column::FixedSizeBinary(array.as_fixed_size_binary()),
            other => {
                let kind =
                    storage(other).ok_or_else(|| anyhow!("internal: cannot pack {other}"))?;
                let data = array.to_data();
                let buffer = data.buffers()[0].clone();
                let (offset, len) = (data.offset(), data.len());
                match kind {
                    Storage::I16 => Column::I16(ScalarBuffer::new(buffer, offset, len)),
                    Storage::I32 => Column::I32(ScalarBuffer::new(buffer, offset, len)),
                    Storage::I64 => Column::I64(ScalarBuffer::new(buffer, offset, len)),
                    Storage::U16 => Column::U16(ScalarBuffer::new(buffer, offset, len)),
                    Storage::U32 => Column::U32(ScalarBuffer::new(buffer, offset, len)),
                    Storage::U64 => Column::U64(ScalarBuffer::new(buffer, offset, len)),
                    Storage::I128 => Column::I128(ScalarBuffer::new(buffer, offset, len)),
                    Storage::F32 => Column::F32(ScalarBuffer::new(buffer, offset, len)),
                    Storage::F64 => Column::F64(ScalarBuffer::new(buffer, offset, len)),
                    Storage::Raw(width) => Column::Raw {
                        bytes: buffer.slice_with_length(offset * width, len * width),
                        width,
                    },
                }
            }
        })
    }

    /// Row `i`'s string or binary value.
    #[inline]
    fn bytes(&self, i: usize) -> &[u8] {
        match self {
            Column::Utf8(a) => a.value(i).as_bytes(),
            Column::LargeUtf8(a) => a.value(i).as_bytes(),
            Column::Utf8View(a) => a.value(i).as_bytes(),
            Column::Binary(a) => a.value(i),
            Column::LargeBinary(a) => a.value(i),
            Column::BinaryView(a) => a.value(i),
            Column::FixedSizeBinary(a) => a.value(i),
            _ => &[],
        }
    }

    /// Adds to `lengths` what each valid row's value packs to.
    fn add_lengths(&self, valid: &Valid, lengths: &mut [u32]) {
        fn each<T: Copy>(
            valid: &Valid,
            lengths: &mut [u32],
            values: &[T],
            len: impl Fn(T) -> usize,
        ) {
            valid.for_each(values.len(), |i| lengths[i] += len(values[i]) as u32);
        }
        match self {
            Column::I16(v) => each(valid, lengths, v, |x| varint_len(zigzag(i64::from(x)))),
            Column::I32(v) => each(valid, lengths, v, |x| varint_len(zigzag(i64::from(x)))),
            Column::I64(v) => each(valid, lengths, v, |x| varint_len(zigzag(x))),
            Column::U16(v) => each(valid, lengths, v, |x| varint_len(u64::from(x))),
            Column::U32(v) => each(valid, lengths, v, |x| varint_len(u64::from(x))),
            Column::U64(v) => each(valid, lengths, v, varint_len),
            Column::I128(v) => each(valid, lengths, v, varint128_len),
            Column::F32(v) => each(valid, lengths, v, |_| 4),
            Column::F64(v) => each(valid, lengths, v, |_| 8),
            Column::Raw { width, .. } => {
                valid.for_each(lengths.len(), |i| lengths[i] += *width as u32)
            }
            Column::Boolean(_) => valid.for_each(lengths.len(), |i| lengths[i] += 1),
            _ => valid.for_each(lengths.len(), |i| {
                let len = self.bytes(i).len();
                lengths[i] += (varint_len(len as u64) + len) as u32;
            }),
        }
    }

    /// Writes each valid row's value at its cursor in `out`, moving the cursor past it.
    fn write_all(&self, valid: &Valid, out: &mut [u8], cursor: &mut [u32]) {
        fn each<T: Copy>(
            valid: &Valid,
            out: &mut [u8],
            cursor: &mut [u32],
            values: &[T],
            put: impl Fn(T, &mut [u8]) -> usize,
        ) {
            valid.for_each(values.len(), |i| {
                let at = cursor[i] as usize;
                cursor[i] += put(values[i], &mut out[at..]) as u32;
            });
        }
        fn raw<const N: usize>(bytes: [u8; N], out: &mut [u8]) -> usize {
            out[..N].copy_from_slice(&bytes);
            N
        }
        match self {
            Column::I16(v) => each(valid, out, cursor, v, |x, o| {
                put_varint(o, zigzag(i64::from(x)))
            }),
            Column::I32(v) => each(valid, out, cursor, v, |x, o| {
                put_varint(o, zigzag(i64::from(x)))
            }),
            Column::I64(v) => each(valid, out, cursor, v, |x, o| put_varint(o, zigzag(x))),
            Column::U16(v) => each(valid, out, cursor, v, |x, o| put_varint(o, u64::from(x))),
            Column::U32(v) => each(valid, out, cursor, v, |x, o| put_varint(o, u64::from(x))),
            Column::U64(v) => each(valid, out, cursor, v, |x, o| put_varint(o, x)),
            Column::I128(v) => each(valid, out, cursor, v, put_varint128),
            Column::F32(v) => each(valid, out, cursor, v, |x, o| {
                raw(canonical_f32(x).to_le_bytes(), o)
            }),
            Column::F64(v) => each(valid, out, cursor, v, |x, o| {
                raw(canonical_f64(x).to_le_bytes(), o)
            }),
            Column::Raw { bytes, width } => valid.for_each(cursor.len(), |i| {
                let at = cursor[i] as usize;
                out[at..at + width].copy_from_slice(&bytes[i * width..(i + 1) * width]);
                cursor[i] += *width as u32;
            }),
            Column::Boolean(a) => valid.for_each(cursor.len(), |i| {
                out[cursor[i] as usize] = u8::from(a.value(i));
                cursor[i] += 1;
            }),
            _ => valid.for_each(cursor.len(), |i| {
                let value = self.bytes(i);
                let at = cursor[i] as usize;
                let n = put_varint(&mut out[at..], value.len() as u64);
                out[at + n..at + n + value.len()].copy_from_slice(value);
                cursor[i] += (n + value.len()) as u32;
            }),
        }
    }
}

/// The rows of one column that hold a value.
struct Valid(Option<datafusion::arrow::buffer::NullBuffer>);

impl Valid {
    #[inline]
    fn for_each(&self, rows: usize, mut f: impl FnMut(usize)) {
        match &self.0 {
            None => (0..rows).for_each(f),
            Some(nulls) => nulls.valid_indices().for_each(&mut f),
        }
    }
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A 128-bit value as zigzag varint; the same bytes as the 64-bit form when it fits 64 bits.
#[inline]
fn varint128_len(v: i128) -> usize {
    match i64::try_from(v) {
        Ok(small) => varint_len(zigzag(small)),
        Err(_) => {
            let z = ((v << 1) ^ (v >> 127)) as u128;
            (128 - (z | 1).leading_zeros() as usize).div_ceil(7)
        }
    }
}

#[inline]
fn put_varint(out: &mut [u8], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

#[inline]
fn put_varint128(v: i128, out: &mut [u8]) -> usize {
    if let Ok(small) = i64::try_from(v) {
        return put_varint(out, zigzag(small));
    }
    let mut z = ((v << 1) ^ (v >> 127)) as u128;
    let mut n = 0;
    while z >= 0x80 {
        out[n] = (z as u8) | 0x80;
        z >>= 7;
        n += 1;
    }
    out[n] = z as u8;
    n + 1
}

fn unzigzag(v: u128) -> i128 {
    ((v >> 1) as i128) ^ -((v & 1) as i128)
}

/// Reads a varint at the start of `bytes`: the value and the bytes it took.
fn get_varint(bytes: &[u8]) -> Result<(u128, usize)> {
    let mut value = 0u128;
    for (i, &byte) in bytes.iter().enumerate().take(19) {
        value |= u128::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok((value, i + 1));
        }
    }
    bail!("internal: a packed row is truncated")
}

/// Packs the rows of `arrays` (all of one length) into one binary view per row.
pub(super) fn encode(arrays: &[ArrayRef]) -> Result<BinaryViewArray> {
    encode_in_blocks(arrays, MAX_BLOCK)
}

/// `encode`, with data buffers of at most `max_block` bytes (a view addresses at most 4 GiB
/// of one buffer; in practice a batch packs to megabytes). Column by column: first every row's
/// length, then each column's values into every row, so each loop is over one typed array.
fn encode_in_blocks(arrays: &[ArrayRef], max_block: u64) -> Result<BinaryViewArray> {
    let rows = arrays.first().map_or(0, |a| a.len());
    let bitmap = arrays.len().div_ceil(8);
    let columns: Vec<Column> = arrays.iter().map(Column::new).collect::<Result<_>>()?;
    let valid: Vec<Valid> = arrays.iter().map(|a| Valid(a.logical_nulls())).collect();
    let mut lengths = vec![bitmap as u32; rows];
    for (column, valid) in columns.iter().zip(&valid) {
        column.add_lengths(valid, &mut lengths);
    }
    // Rows into buffers of at most `max_block` bytes: (first row, end row, bytes).
    let mut blocks: Vec<(usize, usize, u64)> = Vec::new();
    let (mut first, mut bytes) = (0usize, 0u64);
    for (i, &length) in lengths.iter().enumerate() {
        if u64::from(length) > max_block {
            bail!("a row of {length} bytes is too large to compare (at most 4 GiB)");
        }
        if bytes + u64::from(length) > max_block {
            blocks.push((first, i, bytes));
            (first, bytes) = (i, 0);
        }
        bytes += u64::from(length);
    }
    blocks.push((first, rows, bytes));
    if blocks.len() == 1 {
        let (views, buffer) = encode_block(&columns, &valid, &lengths, bitmap, 0);
        // SAFETY: every view was made by `make_view` from its own bytes in the buffer it names.
        return Ok(unsafe { BinaryViewArray::new_unchecked(views.into(), vec![buffer], None) });
    }
    // Rows beyond one buffer (rare: 4 GiB in one batch): each chunk packed as the slice it is.
    let mut views: Vec<u128> = Vec::with_capacity(rows);
    let mut buffers = Vec::with_capacity(blocks.len());
    for (block, &(from, to, _)) in blocks.iter().enumerate() {
        let part: Vec<ArrayRef> = arrays.iter().map(|a| a.slice(from, to - from)).collect();
        let columns: Vec<Column> = part.iter().map(Column::new).collect::<Result<_>>()?;
        let valid: Vec<Valid> = part.iter().map(|a| Valid(a.logical_nulls())).collect();
        let (part_views, buffer) =
            encode_block(&columns, &valid, &lengths[from..to], bitmap, block as u32);
        views.extend(part_views);
        buffers.push(buffer);
    }
    // SAFETY: as above; each chunk's views name its own buffer's index.
    Ok(unsafe { BinaryViewArray::new_unchecked(views.into(), buffers, None) })
}

/// Packs rows whose `lengths` fit one buffer, which the views name as buffer `block`.
fn encode_block(
    columns: &[Column],
    valid: &[Valid],
    lengths: &[u32],
    bitmap: usize,
    block: u32,
) -> (Vec<u128>, Buffer) {
    let mut starts = Vec::with_capacity(lengths.len());
    let mut total = 0u32;
    for &length in lengths {
        starts.push(total);
        total += length;
    }
    // The rows' bitmaps are gathered apart, in an array the column loops run through in
    // order, then stored once per row. Set in place, each column's pass read and wrote a
    // cache line of every row: half of this function's own time, and 6% of all packing on
    // 2 × 5M rows (perf samples in the packing functions, 2 runs each: 601–608 against 640–657).
    let mut bits = vec![0u8; lengths.len() * bitmap];
    for (c, valid) in valid.iter().enumerate() {
        let (byte, bit) = (c / 8, 1u8 << (c % 8));
        valid.for_each(lengths.len(), |i| bits[i * bitmap + byte] |= bit);
    }
    let mut out = vec![0u8; total as usize];
    if bitmap > 0 {
        for (&start, row_bits) in starts.iter().zip(bits.chunks_exact(bitmap)) {
            out[start as usize..start as usize + bitmap].copy_from_slice(row_bits);
        }
    }
    let mut cursor: Vec<u32> = starts.iter().map(|s| s + bitmap as u32).collect();
    for (column, valid) in columns.iter().zip(valid) {
        column.write_all(valid, &mut out, &mut cursor);
    }
    let buffer = Buffer::from_vec(out);
    let views = starts
        .iter()
        .zip(lengths)
        .map(|(&start, &length)| {
            make_view(
                &buffer[start as usize..(start + length) as usize],
                block,
                start,
            )
        })
        .collect();
    (views, buffer)
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

/// The inverse of `encode`: the packed rows (binary or binary view; NULL for the side without
/// the row) as arrays of `types`.
fn decode(packed: &ArrayRef, types: &[DataType]) -> Result<Vec<ArrayRef>> {
    let rows = packed.len();
    let value = |i: usize| -> &[u8] {
        match packed.data_type() {
            DataType::Binary => packed.as_binary::<i32>().value(i),
            DataType::LargeBinary => packed.as_binary::<i64>().value(i),
            _ => packed.as_binary_view().value(i),
        }
    };
    let bitmap = types.len().div_ceil(8);
    let mut columns: Vec<Decoder> = types.iter().map(|t| Decoder::new(t, rows)).collect();
    for i in 0..rows {
        if packed.is_null(i) {
            columns.iter_mut().for_each(Decoder::append_null);
            continue;
        }
        let row = value(i);
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
        storage: Storage,
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
                    storage: storage(other).unwrap_or(Storage::Raw(width)),
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
            storage,
            width,
            values,
            valid,
            ..
        } = self
        {
            valid.append(true);
            let (taken, value) = match storage {
                Storage::Raw(_) | Storage::F32 | Storage::F64 => {
                    let raw = bytes.get(..*width).ok_or_else(truncated)?;
                    values.extend_from_slice(raw);
                    return Ok(*width);
                }
                Storage::U16 | Storage::U32 | Storage::U64 => {
                    let (v, n) = get_varint(bytes)?;
                    (n, v as i128)
                }
                _ => {
                    let (v, n) = get_varint(bytes)?;
                    (n, unzigzag(v))
                }
            };
            // Little-endian two's complement, cut to the type's width.
            values.extend_from_slice(&value.to_le_bytes()[..*width]);
            return Ok(taken);
        }
        if let Decoder::Boolean(b) = self {
            b.append_value(*bytes.first().ok_or_else(truncated)? != 0);
            return Ok(1);
        }
        let (length, n) = get_varint(bytes)?;
        let length = length as usize;
        let value = bytes.get(n..n + length).ok_or_else(truncated)?;
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
        Ok(n + length)
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

/// `dualrun_packed_differs(b, s)`: `b IS DISTINCT FROM s` on two packed columns, with the
/// values a few rows ahead fetched into the caches while this row is compared. After the join,
/// the build side's packed values are in the order of the probe side's keys, so each one is a
/// cache miss; arrow's `distinct` waits for them one row at a time (a tenth of a 5M diff's CPU).
#[derive(Debug, PartialEq, Eq, Hash)]
struct PackedDiffersUdf {
    signature: Signature,
}

impl ScalarUDFImpl for PackedDiffersUdf {
    fn name(&self) -> &str {
        "dualrun_packed_differs"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (Some(b), Some(s)) = (
            arrays[0].as_binary_view_opt(),
            arrays[1].as_binary_view_opt(),
        ) else {
            return Err(datafusion::error::DataFusionError::Internal(
                "dualrun_packed_differs: arguments are not packed values".into(),
            ));
        };
        Ok(ColumnarValue::Array(Arc::new(packed_differ(b, s))))
    }
}

/// How many rows ahead the values are fetched: about a memory latency's worth of comparisons.
const FETCH_AHEAD: usize = 16;

/// Per row, whether the two packed values differ: NULL against NULL does not, NULL against a
/// value does (`IS DISTINCT FROM`).
fn packed_differ(b: &BinaryViewArray, s: &BinaryViewArray) -> BooleanArray {
    let rows = b.len().min(s.len());
    let mut differs = BooleanBufferBuilder::new(rows);
    for i in 0..rows {
        if i + FETCH_AHEAD < rows {
            fetch(b, i + FETCH_AHEAD);
            fetch(s, i + FETCH_AHEAD);
        }
        differs.append(match (b.is_valid(i), s.is_valid(i)) {
            (true, true) => b.value(i) != s.value(i),
            (false, false) => false,
            _ => true,
        });
    }
    BooleanArray::new(differs.finish(), None)
}

/// Asks the CPU to bring row `i`'s value into the caches (a hint: it reads nothing).
#[inline(always)]
fn fetch(array: &BinaryViewArray, i: usize) {
    let view = ByteView::from(array.views()[i]);
    if view.length <= 12 {
        return; // the value is in the view itself
    }
    let Some(data) = array.data_buffers().get(view.buffer_index as usize) else {
        return;
    };
    let first = data.as_ptr().wrapping_add(view.offset as usize);
    let last = first.wrapping_add(view.length as usize - 1);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint; it neither reads nor faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first.cast());
            _mm_prefetch::<_MM_HINT_T0>(last.cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (first, last);
}

/// Ascending, NULLs last: the order of a key's rows in the duplicate-safe plan.
const VALUE_ORDER: SortOptions = SortOptions {
    descending: false,
    nulls_first: false,
};

/// `dualrun_order(packed, unpacked values...)`: a row's compared values in the row format,
/// in the alignment's order (see `Packing::value_order`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct OrderUdf {
    signature: Signature,
    /// The packed columns' types.
    types: Vec<DataType>,
    /// Per compared value in order: its position among the packed columns, or `None` for the
    /// next unpacked argument.
    layout: Vec<Option<usize>>,
}

impl ScalarUDFImpl for OrderUdf {
    fn name(&self) -> &str {
        "dualrun_order"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Binary)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let decoded = decode(&arrays[0], &self.types)
            .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))?;
        let mut unpacked = arrays[1..].iter();
        let columns = self
            .layout
            .iter()
            .map(|slot| match slot {
                Some(position) => Ok(decoded[*position].clone()),
                None => unpacked.next().cloned().ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal(
                        "dualrun_order: fewer arguments than values".into(),
                    )
                }),
            })
            .collect::<datafusion::common::Result<Vec<ArrayRef>>>()?;
        let fields = columns
            .iter()
            .map(|c| SortField::new_with_options(c.data_type().clone(), VALUE_ORDER))
            .collect();
        let rows = RowConverter::new(fields)?.convert_columns(&columns)?;
        Ok(ColumnarValue::Array(Arc::new(rows.try_into_binary()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Decimal128Array, Float64Array, Int32Array, StringArray, StringViewArray,
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
        let packed: ArrayRef = Arc::new(encode(&arrays).unwrap());
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

    /// Every storage kind, with its extremes, comes back as it went in.
    #[test]
    fn every_type_round_trips_at_its_extremes() {
        use datafusion::arrow::array::*;
        use datafusion::arrow::datatypes::{IntervalDayTime, IntervalMonthDayNano, i256};
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(Int8Array::from(vec![
                Some(i8::MIN),
                Some(0),
                None,
                Some(i8::MAX),
            ])),
            Arc::new(UInt8Array::from(vec![
                Some(0),
                Some(1),
                None,
                Some(u8::MAX),
            ])),
            Arc::new(Int16Array::from(vec![
                Some(i16::MIN),
                Some(-1),
                None,
                Some(i16::MAX),
            ])),
            Arc::new(UInt16Array::from(vec![
                Some(0),
                Some(300),
                None,
                Some(u16::MAX),
            ])),
            Arc::new(Int32Array::from(vec![
                Some(i32::MIN),
                Some(-64),
                None,
                Some(i32::MAX),
            ])),
            Arc::new(UInt32Array::from(vec![
                Some(0),
                Some(128),
                None,
                Some(u32::MAX),
            ])),
            Arc::new(Int64Array::from(vec![
                Some(i64::MIN),
                Some(-1),
                None,
                Some(i64::MAX),
            ])),
            Arc::new(UInt64Array::from(vec![
                Some(0),
                Some(1 << 63),
                None,
                Some(u64::MAX),
            ])),
            Arc::new(
                Decimal128Array::from(vec![
                    Some(-(10i128.pow(38) - 1)),
                    Some(0),
                    None,
                    Some(10i128.pow(38) - 1),
                ])
                .with_precision_and_scale(38, 4)
                .unwrap(),
            ),
            Arc::new(
                Decimal256Array::from(vec![
                    Some(i256::MIN),
                    Some(i256::from(-5)),
                    None,
                    Some(i256::MAX),
                ])
                .with_precision_and_scale(76, 0)
                .unwrap(),
            ),
            Arc::new(Date32Array::from(vec![
                Some(-719_162),
                Some(0),
                None,
                Some(2_932_896),
            ])),
            Arc::new(Time64NanosecondArray::from(vec![
                Some(0),
                Some(86_399_999_999_999),
                None,
                Some(1),
            ])),
            Arc::new(DurationSecondArray::from(vec![
                Some(i64::MIN),
                Some(0),
                None,
                Some(i64::MAX),
            ])),
            Arc::new(IntervalDayTimeArray::from(vec![
                Some(IntervalDayTime::new(-1, 5)),
                Some(IntervalDayTime::new(0, 0)),
                None,
                Some(IntervalDayTime::new(i32::MAX, i32::MIN)),
            ])),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(IntervalMonthDayNano::new(1, -2, i64::MIN)),
                Some(IntervalMonthDayNano::new(0, 0, 0)),
                None,
                Some(IntervalMonthDayNano::new(i32::MAX, i32::MAX, i64::MAX)),
            ])),
            Arc::new(Float32Array::from(vec![
                Some(f32::NEG_INFINITY),
                Some(1.5),
                None,
                Some(f32::MIN_POSITIVE),
            ])),
            Arc::new(Float64Array::from(vec![
                Some(f64::INFINITY),
                Some(-2.5e300),
                None,
                Some(5e-324),
            ])),
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    vec![
                        Some(vec![1u8, 2]),
                        Some(vec![0, 0]),
                        None,
                        Some(vec![255, 255]),
                    ]
                    .into_iter(),
                    2,
                )
                .unwrap(),
            ),
            Arc::new(LargeStringArray::from(vec![
                Some("é"),
                Some(""),
                None,
                Some("x".repeat(300).as_str()),
            ])),
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00"[..]),
                Some(&b""[..]),
                None,
                Some(&[0xffu8; 200][..]),
            ])),
        ];
        let types: Vec<DataType> = arrays.iter().map(|a| a.data_type().clone()).collect();
        let packed: ArrayRef = Arc::new(encode(&arrays).unwrap());
        let decoded = decode(&packed, &types).unwrap();
        for (original, back) in arrays.iter().zip(&decoded) {
            assert_eq!(
                original.to_data(),
                back.to_data(),
                "{}",
                original.data_type()
            );
        }
        let packed = packed.as_binary_view();
        for a in 0..4 {
            for b in (a + 1)..4 {
                assert_ne!(packed.value(a), packed.value(b), "rows {a} and {b}");
            }
        }
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
    fn packed_values_differ_as_arrow_says_they_are_distinct() {
        // Long values in small blocks (many buffers, values at unrelated offsets), short ones
        // inline, NULLs on either side: every case, over more rows than are fetched ahead.
        let value = |i: usize, variant: u8| -> Option<Vec<u8>> {
            let mut bytes: Vec<u8> = (0..(i % 40) as u8).map(|b| b ^ (i as u8)).collect();
            match variant {
                0 => {}
                1 if !bytes.is_empty() => *bytes.last_mut().unwrap() ^= 1,
                2 if !bytes.is_empty() => bytes[0] ^= 1,
                3 => bytes.push(0),
                4 => return None,
                _ => {}
            }
            Some(bytes)
        };
        let (mut b, mut s) = (
            BinaryViewBuilder::new().with_fixed_block_size(64),
            BinaryViewBuilder::new().with_fixed_block_size(100),
        );
        for i in 0..400 {
            let (vb, vs) = match i % 7 {
                0 => (value(i, 0), value(i, 1)),
                1 => (value(i, 0), value(i, 2)),
                2 => (value(i, 0), value(i, 3)),
                3 => (value(i, 4), value(i, 0)),
                4 => (value(i, 4), value(i, 4)),
                5 => (value(i, 0), value(i, 4)),
                _ => (value(i, 0), value(i, 0)),
            };
            b.append_option(vb);
            s.append_option(vs);
        }
        let (b, s) = (b.finish(), s.finish());
        assert!(b.data_buffers().len() > 10 && s.data_buffers().len() > 10);
        let expected = distinct(&b, &s).unwrap();
        let got = packed_differ(&b, &s);
        assert_eq!(got, expected);
        assert!(got.true_count() > 100 && got.false_count() > 100);
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
        for packed in [&whole, &part] {
            let written: usize = (0..packed.len()).map(|i| packed.value(i).len()).sum();
            assert_eq!(
                packed.data_buffers().iter().map(|b| b.len()).sum::<usize>(),
                written
            );
        }
        for i in 0..3 {
            assert_eq!(part.value(i), whole.value(i + 2));
        }
    }
}
