//! What the keyed and keyless collectors share: the collected counts and samples, the sample
//! keeper that keeps them stable from run to run, and the arrow kernels they mask rows with.
//! A collector holds one batch plus the samples, whatever the size of the tables.

use anyhow::{Result, anyhow};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::boolean::{and, not};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};

use super::result::{Counts, RowCounts, RowSample, Samples};

#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub rows: RowCounts,
    pub counts: Counts,
    pub column_mismatches: Vec<u64>,
    pub samples: Samples,
}

/// Keeps the `limit` smallest rows by key, so samples are the same from run to run whatever
/// order the parallel plan produced rows in.
#[derive(Clone)]
pub(super) struct SampleKeeper {
    pub(super) limit: usize,
    kept: Vec<(OwnedRow, RowSample)>,
}

impl SampleKeeper {
    pub(super) fn new(limit: usize) -> Self {
        SampleKeeper {
            limit,
            kept: Vec::new(),
        }
    }

    pub(super) fn wants(&self, row: &OwnedRow) -> bool {
        self.limit > 0
            && (self.kept.len() < self.limit || self.kept.last().is_some_and(|(k, _)| row < k))
    }

    pub(super) fn offer(&mut self, row: OwnedRow, sample: impl FnOnce() -> RowSample) {
        if !self.wants(&row) {
            return;
        }
        let at = self.kept.partition_point(|(k, _)| k <= &row);
        self.kept.insert(at, (row, sample()));
        self.kept.truncate(self.limit);
    }

    pub(super) fn into_samples(self) -> Vec<RowSample> {
        self.kept.into_iter().map(|(_, s)| s).collect()
    }
}

/// `left AND NOT right`. Not arrow's `and_not`: in arrow-arith 59.3 it passes the two arrays'
/// bit offsets the wrong way round, so on sliced arrays (a hash join's output is sliced at any
/// row) it reads the wrong bits, or panics when the offsets differ in alignment (the 2 × 50M
/// crash). `and` and `not` handle offsets correctly.
pub(crate) fn and_not(left: &BooleanArray, right: &BooleanArray) -> Result<BooleanArray> {
    Ok(and(left, &not(right)?)?)
}

pub(super) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| anyhow!("internal: diff output lacks column {name}"))
}

pub(super) fn boolean<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a BooleanArray> {
    Ok(column(batch, name)?.as_boolean())
}

/// True and non-NULL.
pub(super) fn true_count(array: &BooleanArray) -> u64 {
    array.true_count() as u64
}

pub(super) fn row_converter(
    batch: &RecordBatch,
    names: &[String],
) -> Result<(RowConverter, Vec<ArrayRef>)> {
    let arrays: Vec<ArrayRef> = names
        .iter()
        .map(|n| column(batch, n).cloned())
        .collect::<Result<_>>()?;
    let fields = arrays
        .iter()
        .map(|a| SortField::new(a.data_type().clone()))
        .collect();
    Ok((RowConverter::new(fields)?, arrays))
}

#[cfg(test)]
mod kernel_tests {
    use super::*;

    /// The arrays of a hash join's output are slices at any offset; masks must read the bits
    /// of each at its own offset.
    #[test]
    fn and_not_respects_each_arrays_offset() {
        let pattern: Vec<bool> = (0..200).map(|i| i % 3 == 0 || i % 7 == 0).collect();
        let other: Vec<bool> = (0..200).map(|i| i % 5 == 0).collect();
        let left_all = BooleanArray::from(pattern.clone());
        let right_all = BooleanArray::from(other.clone());
        for (lo, ro, len) in [
            (0, 0, 100),
            (0, 3, 100),
            (5, 0, 97),
            (64, 7, 120),
            (1, 66, 130),
        ] {
            let left = left_all.slice(lo, len);
            let right = right_all.slice(ro, len);
            let expected: Vec<bool> = (0..len)
                .map(|i| pattern[lo + i] && !other[ro + i])
                .collect();
            let got = and_not(&left, &right).unwrap();
            assert_eq!(got, BooleanArray::from(expected), "offsets {lo} and {ro}");
        }
    }
}
