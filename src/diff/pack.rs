//! Packing the compared values of a row into one binary value (arrow's row format) before the
//! keyed join. A hash join gathers the build side's columns for every output row; one packed
//! column costs one random access per row where ten columns cost ten, and equal values pack to
//! equal bytes, so one comparison tells whether any exactly-compared column differs. Only the
//! divergent rows are unpacked again, in the collector, to name the differing columns.
//!
//! Columns with a tolerance (compared numerically), the time and window columns (needed as
//! values by the findings) and types the row format cannot encode stay as they are. Packing
//! runs in-process only: the stock Ballista executors do not know the function.

use std::sync::Arc;

use anyhow::Result;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryViewArray, RecordBatch,
};
use datafusion::arrow::compute::kernels::cmp::distinct;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::row::{RowConverter, SortField};
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

/// Which value columns (indexes into the alignment's values) are packed, and how.
#[derive(Debug, Clone)]
pub struct Packing {
    pub columns: Vec<usize>,
    fields: Vec<SortField>,
    types: Vec<DataType>,
}

impl Packing {
    /// The packable value columns, when there are at least two (one column gains nothing).
    pub fn choose(values: &[AlignedColumn], keep: &[&str]) -> Option<Packing> {
        let columns: Vec<usize> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| {
                v.tolerance.is_none() && !keep.contains(&v.name.as_str()) && flat(&v.common)
            })
            .map(|(i, _)| i)
            .collect();
        if columns.len() < 2 {
            return None;
        }
        let types: Vec<DataType> = columns.iter().map(|&i| values[i].common.clone()).collect();
        let fields = types.iter().map(|t| SortField::new(t.clone())).collect();
        Some(Packing {
            columns,
            fields,
            types,
        })
    }

    pub fn packs(&self, value_index: usize) -> bool {
        self.columns.contains(&value_index)
    }

    fn converter(&self) -> datafusion::common::Result<RowConverter> {
        Ok(RowConverter::new(self.fields.clone())?)
    }

    /// `pack(columns...)` as an expression.
    pub fn call(&self, args: Vec<Expr>) -> Expr {
        ScalarUDF::from(PackUdf {
            signature: Signature::any(self.columns.len(), Volatility::Immutable),
            types: self.types.clone(),
        })
        .call(args)
    }

    /// The packed form of a row of NULLs: what the side without the row (NULL after the outer
    /// join) unpacks from, so that its values read as NULLs, as unpacked columns do.
    fn null_row(&self, converter: &RowConverter) -> Result<Vec<u8>> {
        let arrays: Vec<ArrayRef> = self
            .types
            .iter()
            .map(|t| datafusion::arrow::array::new_null_array(t, 1))
            .collect();
        let rows = converter.convert_columns(&arrays)?;
        Ok(rows.row(0).as_ref().to_vec())
    }

    /// The diff output with the packed columns replaced by the unpacked values and their
    /// per-column "differs" flags, as an unpacked plan would have produced them.
    pub fn unpack(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let converter = self.converter()?;
        let null_row = self.null_row(&converter)?;
        let decode = |name: &str| -> Result<Vec<ArrayRef>> {
            let packed = batch
                .column_by_name(name)
                .ok_or_else(|| anyhow::anyhow!("internal: diff output lacks {name}"))?
                .as_binary_view();
            let packed: BinaryArray = packed
                .iter()
                .map(|row| Some(row.unwrap_or(&null_row)))
                .collect();
            Ok(converter.convert_rows(&converter.from_binary(packed))?)
        };
        let (batch_values, stream_values) = (decode(BATCH_PACKED)?, decode(STREAM_PACKED)?);
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

/// Types whose row format and arrow's `distinct` kernel agree on equality with DataFusion's
/// IS DISTINCT FROM: scalars, not nested or dictionary-encoded values.
fn flat(data_type: &DataType) -> bool {
    use DataType::*;
    data_type.is_primitive() && RowConverter::supports_fields(&[SortField::new(data_type.clone())])
        || matches!(
            data_type,
            Boolean | Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView
        )
}

/// The row format of the arguments, as one binary value per row.
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
        let fields = arrays
            .iter()
            .map(|a| SortField::new(a.data_type().clone()))
            .collect();
        let rows = RowConverter::new(fields)?.convert_columns(&arrays)?;
        let packed: BinaryArray = rows.try_into_binary()?;
        debug_assert_eq!(packed.null_count(), 0);
        // Views over the same bytes: the hash join gathers and concatenates 16-byte views
        // instead of copying every packed row (a quarter less peak memory on the benchmark).
        Ok(ColumnarValue::Array(Arc::new(BinaryViewArray::from(
            &packed,
        ))))
    }
}
