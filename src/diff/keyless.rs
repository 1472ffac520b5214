//! The keyless (multiset) collector: consumes the (row, count per side) output of a keyless
//! diff plan into counts and samples of rows missing or extra, with how many times.

use std::collections::BTreeMap;

use anyhow::Result;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::array::{Int64Array, Scalar};
use datafusion::arrow::compute::kernels::boolean::or;
use datafusion::arrow::compute::kernels::cmp::gt;
use datafusion::arrow::compute::sum;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use super::align::Alignment;
use super::cell::cell_json;
use super::collect::*;
use super::columns::*;
use super::explain::Explainer;
use super::result::{RowSample, Samples};

/// Keyless: the (row, count per side) output of one or more keyless diff plans (a partitioned
/// diff runs one per bucket).
pub struct KeylessCollector<'a> {
    alignment: &'a Alignment,
    /// The values packed into one column, decoded for samples.
    packing: Option<super::pack::Packing>,
    names: Vec<String>,
    out: Collected,
    missing: SampleKeeper,
    extra: SampleKeeper,
}

impl<'a> KeylessCollector<'a> {
    pub fn new(
        alignment: &'a Alignment,
        sample_limit: usize,
        packing: Option<super::pack::Packing>,
    ) -> Self {
        KeylessCollector {
            alignment,
            packing,
            names: alignment.values.iter().map(|c| c.name.clone()).collect(),
            out: Collected {
                column_mismatches: vec![0; alignment.values.len()],
                ..Default::default()
            },
            missing: SampleKeeper::new(sample_limit),
            extra: SampleKeeper::new(sample_limit),
        }
    }

    pub async fn consume(
        &mut self,
        mut stream: SendableRecordBatchStream,
        explainer: &mut Explainer,
    ) -> Result<()> {
        let one = Scalar::new(Int64Array::from(vec![1i64]));
        let zero = Scalar::new(Int64Array::from(vec![0i64]));
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let out = &mut self.out;
            let counts = |name: &str| -> Result<&Int64Array> {
                Ok(column(&batch, name)?.as_primitive::<Int64Type>())
            };
            let total = |a: &Int64Array| sum(a).unwrap_or(0) as u64;
            let (bn, sn) = (counts(BATCH_COUNT)?, counts(STREAM_COUNT)?);
            let (missing_n, extra_n) = (counts(MISSING_COUNT)?, counts(EXTRA_COUNT)?);
            out.rows.batch += total(bn);
            out.rows.stream += total(sn);
            out.counts.matched += total(counts(MATCHED_COUNT)?);
            out.counts.missing_in_stream += total(missing_n);
            out.counts.extra_in_stream += total(extra_n);
            out.counts.duplicate_keys_batch += true_count(&gt(bn, &one)?);
            out.counts.duplicate_keys_stream += true_count(&gt(sn, &one)?);
            // Extra copies of a row the batch has too: the stream wrote it more often.
            let copies = datafusion::arrow::compute::filter(extra_n, &gt(bn, &zero)?)?;
            explainer.add_duplicate_extra(total(copies.as_primitive::<Int64Type>()));
            let surplus = or(&gt(missing_n, &zero)?, &gt(extra_n, &zero)?)?;
            if self.missing.limit == 0 || surplus.true_count() == 0 {
                continue;
            }
            // Only the rows with a surplus can become samples: unpack just those.
            let batch = datafusion::arrow::compute::filter_record_batch(&batch, &surplus)?;
            let batch = self.unpacked(batch)?;
            let (missing_n, extra_n) = (
                column(&batch, MISSING_COUNT)?
                    .as_primitive::<Int64Type>()
                    .clone(),
                column(&batch, EXTRA_COUNT)?
                    .as_primitive::<Int64Type>()
                    .clone(),
            );
            let (converter, arrays) = row_converter(&batch, &self.names)?;
            let rows = converter.convert_columns(&arrays)?;
            for (surplus, keeper) in [(&missing_n, &mut self.missing), (&extra_n, &mut self.extra)]
            {
                for index in (0..batch.num_rows()).filter(|&i| surplus.value(i) > 0) {
                    keeper.offer(rows.row(index).owned(), || {
                        let mut key = BTreeMap::new();
                        for name in &self.names {
                            if let Some(array) = batch.column_by_name(name) {
                                key.insert(name.clone(), cell_json(array, index));
                            }
                        }
                        RowSample {
                            key,
                            values: BTreeMap::new(),
                            differences: Vec::new(),
                            count: Some(surplus.value(index) as u64),
                        }
                    });
                }
            }
        }
        Ok(())
    }

    /// The output with the packed column replaced by the values it holds.
    fn unpacked(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some(packing) = &self.packing else {
            return Ok(batch);
        };
        let packed = column(&batch, PACKED)?.clone();
        let values = packing.decode(&packed)?;
        let mut fields: Vec<datafusion::arrow::datatypes::FieldRef> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            if field.name() != PACKED {
                fields.push(field.clone());
                columns.push(array.clone());
            }
        }
        for (&index, array) in packing.columns.iter().zip(values) {
            let name = &self.alignment.values[index].name;
            fields.push(std::sync::Arc::new(
                datafusion::arrow::datatypes::Field::new(name, array.data_type().clone(), true),
            ));
            columns.push(array);
        }
        Ok(RecordBatch::try_new(
            std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
            columns,
        )?)
    }

    pub fn finish(self) -> Collected {
        let mut out = self.out;
        out.samples = Samples {
            missing_in_stream: self.missing.into_samples(),
            extra_in_stream: self.extra.into_samples(),
            mismatched: Vec::new(),
        };
        out
    }
}
