//! The keyed collector: consumes a keyed diff plan's output once, batch by batch, into counts,
//! per-column mismatches and key-ordered samples of missing, extra and mismatched rows.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::boolean::{and, not, or};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use super::align::Alignment;
use super::cell::cell_json;
use super::collect::*;
use super::columns::*;
use super::explain::Explainer;
use super::result::{RowSample, Samples, ValueDiff};

/// Keyed: the divergent rows (and, with a time column, all rows) of one or more diff outputs
/// (a partitioned diff runs one plan per bucket). Row counts and `matched` are the caller's: it
/// knows each side's row count from the first pass.
#[derive(Clone)]
pub struct KeyedCollector<'a> {
    alignment: &'a Alignment,
    /// Whether every row of the output is observed (the late-data finding needs the time of
    /// every batch row) or only divergent ones.
    keep_all_rows: bool,
    /// The value columns packed into one for the join, if any.
    packing: Option<super::pack::Packing>,
    /// The output's "differs" flags (unpacked values, and the packed ones as a whole).
    differs_columns: Vec<String>,
    /// Samples order by key, then occurrence, so duplicates sample stably too. The occurrence
    /// columns are NULL in outputs without them, so every output's rows order alike.
    order_names: Vec<String>,
    out: Collected,
    missing: SampleKeeper,
    extra: SampleKeeper,
    mismatched: SampleKeeper,
}

impl<'a> KeyedCollector<'a> {
    pub fn new(
        alignment: &'a Alignment,
        sample_limit: usize,
        keep_all_rows: bool,
        packing: Option<super::pack::Packing>,
    ) -> Self {
        let mut differs_columns: Vec<String> = (0..alignment.values.len())
            .filter(|&i| packing.as_ref().is_none_or(|p| !p.packs(i)))
            .map(differs_name)
            .collect();
        if packing.is_some() {
            differs_columns.push(PACKED_DIFFERS.to_string());
        }
        let mut order_names: Vec<String> = alignment.keys.iter().map(|k| k.name.clone()).collect();
        order_names.push(BATCH_OCCURRENCE.to_string());
        order_names.push(STREAM_OCCURRENCE.to_string());
        KeyedCollector {
            alignment,
            keep_all_rows,
            packing,
            differs_columns,
            order_names,
            out: Collected {
                column_mismatches: vec![0; alignment.values.len()],
                ..Default::default()
            },
            missing: SampleKeeper::new(sample_limit),
            extra: SampleKeeper::new(sample_limit),
            mismatched: SampleKeeper::new(sample_limit),
        }
    }

    pub fn alignment(&self) -> &'a Alignment {
        self.alignment
    }

    pub fn packing(&self) -> Option<&super::pack::Packing> {
        self.packing.as_ref()
    }

    /// The output's columns that flag a differing pair.
    pub fn differs_columns(&self) -> &[String] {
        &self.differs_columns
    }

    /// Consumes a whole diff output (of a plan that pairs duplicates by occurrence itself).
    pub async fn consume(
        &mut self,
        mut stream: SendableRecordBatchStream,
        explainer: &mut Explainer,
    ) -> Result<()> {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let batch = if self.keep_all_rows {
                batch
            } else {
                divergent_rows(batch, &self.differs_columns)?
            };
            self.account(batch, explainer)?;
        }
        Ok(())
    }

    /// Accounts rows of a (possibly packed) diff output.
    pub fn account(&mut self, batch: RecordBatch, explainer: &mut Explainer) -> Result<()> {
        let batch = match &self.packing {
            Some(packing) => packing.unpack(batch)?,
            None => batch,
        };
        self.observe(&batch, explainer)
    }

    /// Accounts rows of a diff output whose values are not packed.
    pub fn account_unpacked(
        &mut self,
        batch: RecordBatch,
        explainer: &mut Explainer,
    ) -> Result<()> {
        self.observe(&batch, explainer)
    }

    fn observe(&mut self, batch: &RecordBatch, explainer: &mut Explainer) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let alignment = self.alignment;
        let out = &mut self.out;
        let bp = boolean(batch, BATCH_PRESENT)?;
        let sp = boolean(batch, STREAM_PRESENT)?;
        let both = and(bp, sp)?;
        let missing_mask = and_not(bp, sp)?;
        let extra_mask = and_not(sp, bp)?;
        out.counts.missing_in_stream += true_count(&missing_mask);
        out.counts.extra_in_stream += true_count(&extra_mask);

        let mut any_differs = BooleanArray::from(vec![false; batch.num_rows()]);
        let mut column_masks = Vec::with_capacity(alignment.values.len());
        for i in 0..alignment.values.len() {
            let differs = and(boolean(batch, &differs_name(i))?, &both)?;
            out.column_mismatches[i] += true_count(&differs);
            any_differs = or(&any_differs, &differs)?;
            explainer.observe_column(
                i,
                column(batch, &batch_value_name(i))?,
                column(batch, &stream_value_name(i))?,
                &differs,
            )?;
            column_masks.push(differs);
        }
        out.counts.mismatched += true_count(&any_differs);
        let stream_occurrence = batch.column_by_name(STREAM_OCCURRENCE);
        explainer.observe_rows(
            batch,
            bp,
            &missing_mask,
            &extra_mask,
            &any_differs,
            stream_occurrence,
        )?;

        let kinds = [
            (&missing_mask, &mut self.missing, Kind::Missing),
            (&extra_mask, &mut self.extra, Kind::Extra),
            (&any_differs, &mut self.mismatched, Kind::Mismatched),
        ];
        let mut rows: Option<datafusion::arrow::row::Rows> = None;
        for (mask, keeper, kind) in kinds {
            if mask.true_count() == 0 || keeper.limit == 0 {
                continue;
            }
            if rows.is_none() {
                rows = Some(order_rows(batch, &self.order_names)?);
            }
            let rows = rows.as_ref().expect("converted above");
            for index in (0..batch.num_rows()).filter(|&i| mask.value(i) && mask.is_valid(i)) {
                keeper.offer(rows.row(index).owned(), || {
                    keyed_sample(batch, alignment, index, kind, &column_masks)
                });
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Collected {
        let mut out = self.out;
        out.samples = Samples {
            missing_in_stream: self.missing.into_samples(),
            extra_in_stream: self.extra.into_samples(),
            mismatched: self.mismatched.into_samples(),
        };
        out
    }
}

/// The sample order of every row of a keyed diff output: keys, then occurrences (NULL where the
/// output has none, as a unique-key output), in arrow's comparable row format.
fn order_rows(batch: &RecordBatch, names: &[String]) -> Result<datafusion::arrow::row::Rows> {
    use datafusion::arrow::array::new_null_array;
    let arrays: Vec<ArrayRef> = names
        .iter()
        .map(|n| match batch.column_by_name(n) {
            Some(array) => Ok(array.clone()),
            None if n == BATCH_OCCURRENCE || n == STREAM_OCCURRENCE => {
                Ok(new_null_array(&DataType::UInt64, batch.num_rows()))
            }
            None => Err(anyhow!("internal: diff output lacks column {n}")),
        })
        .collect::<Result<_>>()?;
    let fields = arrays
        .iter()
        .map(|a| SortField::new(a.data_type().clone()))
        .collect();
    Ok(RowConverter::new(fields)?.convert_columns(&arrays)?)
}

/// Only the rows that diverge: unpaired, or paired with a differing compared column.
fn divergent_rows(batch: RecordBatch, differs_columns: &[String]) -> Result<RecordBatch> {
    let bp = boolean(&batch, BATCH_PRESENT)?;
    let sp = boolean(&batch, STREAM_PRESENT)?;
    let mut keep = not(&and(bp, sp)?)?;
    for name in differs_columns {
        keep = or(&keep, boolean(&batch, name)?)?;
    }
    if keep.true_count() == batch.num_rows() {
        return Ok(batch);
    }
    Ok(datafusion::arrow::compute::filter_record_batch(
        &batch, &keep,
    )?)
}

#[derive(Clone, Copy)]
enum Kind {
    Missing,
    Extra,
    Mismatched,
}

fn keyed_sample(
    batch: &RecordBatch,
    alignment: &Alignment,
    index: usize,
    kind: Kind,
    column_masks: &[BooleanArray],
) -> RowSample {
    let mut key = BTreeMap::new();
    for k in &alignment.keys {
        if let Some(array) = batch.column_by_name(&k.name) {
            key.insert(k.name.clone(), cell_json(array, index));
        }
    }
    let mut values = BTreeMap::new();
    let mut differences = Vec::new();
    for (i, v) in alignment.values.iter().enumerate() {
        let (Some(b), Some(s)) = (
            batch.column_by_name(&batch_value_name(i)),
            batch.column_by_name(&stream_value_name(i)),
        ) else {
            continue;
        };
        match kind {
            Kind::Missing => {
                values.insert(v.name.clone(), cell_json(b, index));
            }
            Kind::Extra => {
                values.insert(v.name.clone(), cell_json(s, index));
            }
            Kind::Mismatched => {
                if column_masks[i].value(index) {
                    differences.push(ValueDiff {
                        column: v.name.clone(),
                        batch: cell_json(b, index),
                        stream: cell_json(s, index),
                    });
                }
            }
        }
    }
    RowSample {
        key,
        values,
        differences,
        count: None,
    }
}
