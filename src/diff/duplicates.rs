//! Duplicate keys at the price of the duplicates. At-least-once delivery makes a few repeated
//! keys the normal case on the stream side, so the keyed diff does not assume unique keys and
//! then rerun: it finds the repeated keys in the join's own output, in the same pass.
//!
//! Each side numbers its rows (plan::RowIds). In the output of a join on the key alone, a key
//! with m batch rows and n stream rows appears as the m × n pairs of its rows, so a row that
//! comes out paired twice has a key that repeats on the other side; a key that repeats among
//! the unpaired rows of one side is seen by its hash. Every divergent row, and every row paired
//! twice, is kept back (spilling beyond a budget) until the pass ends; equal pairs seen once
//! are counted by their absence. At the end, the kept rows whose key repeats are taken out,
//! each repeated key's rows on both sides are rebuilt (an equal pair seen only once is a row
//! of the other side's values: the pair counts say how many), and those rows alone go through
//! the duplicate-safe plan that pairs them by occurrence in value order. Every other kept row
//! is accounted as it is. Rows, counts, samples and findings are what the duplicate-safe plan
//! over everything would give.
//!
//! When the repeated keys are too many to handle this way (a side delivered twice over), or a
//! tolerance makes equal pairs other than copies, the pass gives up and the caller runs the
//! duplicate-safe plan over everything.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Result, anyhow};
use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::kernels::boolean::{and, not, or};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, interleave};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef, UInt64Type};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::datasource::MemTable;
use datafusion::execution::SpillFile;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, SpillMetrics};
use datafusion::physical_plan::{SendableRecordBatchStream, SpillManager};
use futures::StreamExt;

use super::align::Alignment;
use super::collect::and_not;
use super::columns::{self, BATCH_PRESENT, BATCH_ROW_ID, STREAM_PRESENT, STREAM_ROW_ID};
use super::explain::Explainer;
use super::keyed::KeyedCollector;
use super::pack::Packing;
use super::plan::{self, KeyedShape};

/// Unpaired rows whose key hashes are remembered per side; beyond it the pass gives up.
const MAX_UNPAIRED_KEYS: usize = 4_000_000;
/// Rows of repeated keys resolved in memory at the end; beyond it the pass gives up.
const MAX_REPEATED_ROWS: usize = 2_000_000;
/// Rows (both sides) from which a pass also gives up when its rows paired again are more than
/// a quarter of them (`MAX_REPEAT_SHARE`). Resolving that many in memory is slower than pairing
/// every row by occurrence: a stream delivered twice over, in 21 buckets of under 2M repeats
/// each, took 24 s under a 1GiB limit where giving up took 12 s. Smaller passes keep resolving.
const MIN_ROWS_FOR_SHARE: u64 = 100_000;
const MAX_REPEAT_SHARE: u64 = 4;
/// Kept rows held in memory before they are spilled to disk (less under a tighter pool).
const KEPT_IN_MEMORY: usize = 128 << 20;
/// The hash of a key among the unpaired rows: only a candidate for a repeat, checked exactly.
const KEY_HASH: RandomState = RandomState::with_seed(0x0064_7561_6c72_756e);
/// Marks the kept rows that came out of the join paired a second time.
const REPEAT: &str = "__dr_repeat";

/// Which row numbers of one side were seen paired, and how often beyond once.
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    more: HashMap<u64, u32>,
}

impl Seen {
    /// Marks `id` seen; true when it was seen before.
    fn see(&mut self, id: u64) -> bool {
        let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
        if word >= self.bits.len() {
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            return false;
        }
        *self.more.entry(id).or_default() += 1;
        true
    }

    /// How many distinct ids were seen.
    fn distinct(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// How many times `id` came out paired.
    fn count(&self, id: u64) -> u64 {
        let word = (id / 64) as usize;
        let seen = self
            .bits
            .get(word)
            .is_some_and(|w| w & (1 << (id % 64)) != 0);
        if seen {
            1 + u64::from(self.more.get(&id).copied().unwrap_or(0))
        } else {
            0
        }
    }
}

/// What one keyed pass found, besides what its collector accounted.
pub struct PassStats {
    pub batch_rows: u64,
    pub stream_rows: u64,
    pub batch_dups: u64,
    pub stream_dups: u64,
}

/// The output rows kept back until the pass ends: in memory up to a budget, then on disk.
struct Kept {
    schema: Option<SchemaRef>,
    batches: Vec<RecordBatch>,
    reservation: MemoryReservation,
    budget: usize,
    spill: Option<SpillManager>,
    files: Vec<Arc<dyn SpillFile>>,
    rows: usize,
}

impl Kept {
    fn new(state: &SessionState) -> Kept {
        let pool = &state.runtime_env().memory_pool;
        let budget = match pool.memory_limit() {
            datafusion::execution::memory_pool::MemoryLimit::Finite(limit) => {
                (limit / 8).min(KEPT_IN_MEMORY)
            }
            _ => KEPT_IN_MEMORY,
        };
        Kept {
            schema: None,
            batches: Vec::new(),
            reservation: MemoryConsumer::new("dualrun kept diff rows")
                .with_can_spill(true)
                .register(pool),
            budget,
            spill: None,
            files: Vec::new(),
            rows: 0,
        }
    }

    fn push(&mut self, state: &SessionState, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.schema.get_or_insert_with(|| batch.schema());
        self.rows += batch.num_rows();
        let size = batch.get_array_memory_size();
        if self.reservation.size() + size <= self.budget && self.reservation.try_grow(size).is_ok()
        {
            self.batches.push(batch);
            return Ok(());
        }
        let manager = self.spill.get_or_insert_with(|| {
            SpillManager::new(
                state.runtime_env().clone(),
                SpillMetrics::new(&ExecutionPlanMetricsSet::new(), 0),
                batch.schema(),
            )
        });
        let mut held = std::mem::take(&mut self.batches);
        held.push(batch);
        if let Some(file) =
            manager.spill_record_batch_and_finish(&held, "dualrun kept diff rows")?
        {
            self.files.push(file);
        }
        self.reservation.free();
        Ok(())
    }

    /// Every kept batch, in memory or read back from disk, in turn.
    async fn for_each(&self, mut each: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        for batch in &self.batches {
            each(batch.clone())?;
        }
        if let Some(manager) = &self.spill {
            for file in &self.files {
                let mut stream = manager.read_spill_as_stream(file.clone(), None)?;
                while let Some(batch) = stream.next().await {
                    each(batch?)?;
                }
            }
        }
        Ok(())
    }
}

/// How a one pass over a keyed plan ended.
pub enum Consumed {
    /// Every row accounted.
    Done(PassStats),
    /// Every row accounted but those of these repeated keys (one column per key column, the
    /// pass's duplicated key counts left at 0): they are to be read again from both sides and
    /// paired by occurrence.
    Reread(PassStats, RecordBatch),
    /// The repeated keys are too many to resolve this way: nothing was accounted, and the
    /// duplicate-safe plan is to run over everything.
    GaveUp,
}

/// Consumes a keyed plan built with row ids (and without occurrence), accounting into
/// `collector`. Once every row is read, and before the repeated keys are resolved, the plan is
/// dropped and `release` called (for the caller to let go of the plan too).
pub async fn consume(
    state: &SessionState,
    mut output: SendableRecordBatchStream,
    collector: &mut KeyedCollector<'_>,
    explainer: &mut Explainer,
    dimensions: [Option<&str>; 2],
    release: impl FnOnce(),
) -> Result<Consumed> {
    let alignment = collector.alignment();
    let key_names: Vec<String> = alignment.keys.iter().map(|k| k.name.clone()).collect();
    let differs = collector.differs_columns().to_vec();
    let mut seen = [Seen::default(), Seen::default()];
    let mut unpaired: [HashSet<u64>; 2] = Default::default();
    let mut candidates: [HashSet<u64>; 2] = Default::default();
    let mut repeats = 0usize;
    // Rows that came out without a partner, per side: each exactly once.
    let mut alone = [0u64; 2];
    let mut kept = Kept::new(state);
    let mut hashes = Vec::new();
    let watch_windows = dimensions.iter().any(Option::is_some);
    while let Some(batch) = output.next().await {
        let batch = batch?;
        let rows = batch.num_rows();
        if rows == 0 {
            continue;
        }
        let bp = column(&batch, BATCH_PRESENT)?.as_boolean().clone();
        let sp = column(&batch, STREAM_PRESENT)?.as_boolean().clone();
        let both = and(&bp, &sp)?;
        let bid = column(&batch, BATCH_ROW_ID)?
            .as_primitive::<UInt64Type>()
            .clone();
        let sid = column(&batch, STREAM_ROW_ID)?
            .as_primitive::<UInt64Type>()
            .clone();
        let mut repeat = vec![false; rows];
        for i in (0..rows).filter(|&i| both.value(i)) {
            // Both marks are made: each count must be complete at the end.
            let b = seen[0].see(bid.value(i));
            let s = seen[1].see(sid.value(i));
            if b || s {
                repeat[i] = true;
                repeats += 1;
            }
        }
        if repeats > MAX_REPEATED_ROWS {
            return Ok(Consumed::GaveUp);
        }
        let missing = and_not(&bp, &sp)?;
        let extra = and_not(&sp, &bp)?;
        alone[0] += missing.true_count() as u64;
        alone[1] += extra.true_count() as u64;
        if missing.true_count() + extra.true_count() > 0 {
            let keys: Vec<ArrayRef> = key_names
                .iter()
                .map(|k| column(&batch, k).cloned())
                .collect::<Result<_>>()?;
            hashes.clear();
            hashes.resize(rows, 0);
            create_hashes(&keys, &KEY_HASH, &mut hashes)?;
            for (side, mask) in [(0, &missing), (1, &extra)] {
                for i in (0..rows).filter(|&i| mask.value(i)) {
                    if !unpaired[side].insert(hashes[i]) {
                        candidates[side].insert(hashes[i]);
                    }
                }
                if unpaired[side].len() > MAX_UNPAIRED_KEYS {
                    return Ok(Consumed::GaveUp);
                }
            }
        }
        let repeat = BooleanArray::from(repeat);
        let mut keep = or(&not(&both)?, &repeat)?;
        for name in &differs {
            keep = or(&keep, column(&batch, name)?.as_boolean())?;
        }
        if watch_windows {
            // Equal pairs are not kept, but their times still bound the late-data windows.
            let passed = filter_record_batch(&batch, &not(&keep)?)?;
            if passed.num_rows() > 0 {
                let none = BooleanArray::from(vec![false; passed.num_rows()]);
                let present = column(&passed, BATCH_PRESENT)?.as_boolean().clone();
                explainer.observe_rows(&passed, &present, &none, &none, &none, None)?;
            }
        }
        if keep.true_count() > 0 {
            let mut with_flag = batch.columns().to_vec();
            with_flag.push(Arc::new(repeat));
            let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
            fields.push(Arc::new(Field::new(
                REPEAT,
                datafusion::arrow::datatypes::DataType::Boolean,
                false,
            )));
            let flagged = RecordBatch::try_new(Arc::new(Schema::new(fields)), with_flag)?;
            kept.push(state, filter_record_batch(&flagged, &keep)?)?;
        }
    }
    drop(output);
    release();
    // Each side's rows are the ids that came out, not the ids handed out: DataFusion may move
    // the projection that numbers the rows below a filter of the query (it did, when a
    // tolerance kept a filtered column out of the packed values), numbering rows the filter
    // then drops. A filter that kept nothing was counted as rows that all matched.
    let batch_rows = seen[0].distinct() + alone[0];
    let stream_rows = seen[1].distinct() + alone[1];
    let rows = batch_rows + stream_rows;
    if rows >= MIN_ROWS_FOR_SHARE && repeats as u64 * MAX_REPEAT_SHARE > rows {
        return Ok(Consumed::GaveUp);
    }

    // The repeated keys: exactly, from the rows paired twice and the unpaired rows whose key
    // hash was seen twice.
    let converter = RowConverter::new(
        alignment
            .keys
            .iter()
            .map(|k| SortField::new(k.common.clone()))
            .collect(),
    )?;
    let key_rows = |batch: &RecordBatch| -> Result<datafusion::arrow::row::Rows> {
        let keys: Vec<ArrayRef> = key_names
            .iter()
            .map(|k| column(batch, k).cloned())
            .collect::<Result<_>>()?;
        Ok(converter.convert_columns(&keys)?)
    };
    let mut repeated: HashSet<OwnedRow> = HashSet::new();
    let mut unpaired_keys: [HashMap<OwnedRow, u32>; 2] = Default::default();
    let any_candidates = !candidates[0].is_empty() || !candidates[1].is_empty();
    if repeats > 0 || any_candidates {
        let mut hashes = Vec::new();
        kept.for_each(|batch| {
            let rows = key_rows(&batch)?;
            let repeat = column(&batch, REPEAT)?.as_boolean().clone();
            let bp = column(&batch, BATCH_PRESENT)?.as_boolean().clone();
            let sp = column(&batch, STREAM_PRESENT)?.as_boolean().clone();
            for i in (0..batch.num_rows()).filter(|&i| repeat.value(i)) {
                repeated.insert(rows.row(i).owned());
            }
            if any_candidates {
                let keys: Vec<ArrayRef> = key_names
                    .iter()
                    .map(|k| column(&batch, k).cloned())
                    .collect::<Result<_>>()?;
                hashes.clear();
                hashes.resize(batch.num_rows(), 0);
                create_hashes(&keys, &KEY_HASH, &mut hashes)?;
                for (i, hash) in hashes.iter().enumerate() {
                    let side = match (bp.value(i), sp.value(i)) {
                        (true, false) => 0,
                        (false, true) => 1,
                        _ => continue,
                    };
                    if candidates[side].contains(hash) {
                        *unpaired_keys[side].entry(rows.row(i).owned()).or_default() += 1;
                    }
                }
            }
            Ok(())
        })
        .await?;
        for counts in &unpaired_keys {
            repeated.extend(
                counts
                    .iter()
                    .filter(|(_, n)| **n > 1)
                    .map(|(k, _)| k.clone()),
            );
        }
    }

    // Rebuilding a repeated key's rows takes a row of an equal pair that was not kept as a copy
    // of its partner; within a tolerance, equal is not identical, and the copy would sort (and
    // pair) where the row itself does not. Those keys' rows are read again instead.
    let reread = !repeated.is_empty() && alignment.values.iter().any(|v| v.tolerance.is_some());
    // Every kept row of a key that does not repeat is accounted as it is; the others wait.
    // Both are held in memory until the end, and the waiting rows copied twice more (unpacked,
    // then one table per side for the duplicate-safe plan): reserved from the pool at that,
    // and when the pool says no, the pass gives up as above. Unreserved, a stream delivered
    // twice over peaked at 2.25× a 256 MiB limit.
    let held =
        MemoryConsumer::new("dualrun repeated key rows").register(&state.runtime_env().memory_pool);
    let mut waiting: Vec<RecordBatch> = Vec::new();
    let mut waiting_rows = 0usize;
    let mut overflow = false;
    let mut accounted: Vec<RecordBatch> = Vec::new();
    kept.for_each(|batch| {
        let batch = without_column(batch, REPEAT)?;
        if repeated.is_empty() {
            accounted.push(batch);
            return Ok(());
        }
        let rows = key_rows(&batch)?;
        let of_repeated = BooleanArray::from_iter(
            (0..batch.num_rows()).map(|i| Some(repeated.contains(&rows.row(i).owned()))),
        );
        let rest = filter_record_batch(&batch, &not(&of_repeated)?)?;
        let theirs = match reread {
            true => batch.slice(0, 0),
            false => filter_record_batch(&batch, &of_repeated)?,
        };
        waiting_rows += theirs.num_rows();
        overflow |= waiting_rows > MAX_REPEATED_ROWS;
        let bytes = 3 * theirs.get_array_memory_size() + rest.get_array_memory_size();
        overflow |= !overflow && held.try_grow(bytes).is_err();
        if !overflow && theirs.num_rows() > 0 {
            waiting.push(theirs);
        }
        accounted.push(rest);
        Ok(())
    })
    .await?;
    if overflow {
        return Ok(Consumed::GaveUp);
    }
    for batch in accounted {
        collector.account(batch, explainer)?;
    }
    if reread {
        let fields: Vec<Field> = alignment
            .keys
            .iter()
            .map(|k| Field::new(&k.name, k.common.clone(), true))
            .collect();
        let keys = converter.convert_rows(repeated.iter().map(|key| key.row()))?;
        let keys = RecordBatch::try_new(Arc::new(Schema::new(fields)), keys)?;
        let stats = PassStats {
            batch_rows,
            stream_rows,
            batch_dups: 0,
            stream_dups: 0,
        };
        return Ok(Consumed::Reread(stats, keys));
    }
    let (mut batch_dups, mut stream_dups) = (0, 0);
    if !waiting.is_empty() {
        let waiting = concat_batches(&waiting[0].schema(), &waiting)?;
        let (batch_side, stream_side, dups) =
            rebuild_sides(&waiting, alignment, collector.packing(), &seen)?;
        (batch_dups, stream_dups) = dups;
        let plan = plan::keyed(
            scan(batch_side)?,
            scan(stream_side)?,
            alignment,
            KeyedShape {
                with_occurrence: true,
                dimensions,
                ..Default::default()
            },
        )?;
        let mut paired = super::execute(state, plan).await?;
        while let Some(batch) = paired.next().await {
            collector.account_unpacked(batch?, explainer)?;
        }
    }
    Ok(Consumed::Done(PassStats {
        batch_rows,
        stream_rows,
        batch_dups,
        stream_dups,
    }))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| anyhow!("internal: diff output lacks column {name}"))
}

fn without_column(batch: RecordBatch, name: &str) -> Result<RecordBatch> {
    let index = batch.schema().index_of(name)?;
    let mut batch = batch;
    batch.remove_column(index);
    Ok(batch)
}

fn scan(batch: RecordBatch) -> Result<LogicalPlan> {
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    let source = datafusion::datasource::provider_as_source(Arc::new(table));
    Ok(LogicalPlanBuilder::scan("repeated", source, None)?.build()?)
}

/// The rows of both sides of the repeated keys, from the kept output rows of those keys: one
/// table per side with the compared columns under their own names, and the number of
/// duplicated key values on each side.
fn rebuild_sides(
    output: &RecordBatch,
    alignment: &Alignment,
    packing: Option<&Packing>,
    seen: &[Seen; 2],
) -> Result<(RecordBatch, RecordBatch, (u64, u64))> {
    // Both sides' values of every compared column, unpacked.
    let unpacked = match packing {
        Some(packing) => packing.unpack(output.clone())?,
        None => output.clone(),
    };
    let bp = column(&unpacked, BATCH_PRESENT)?.as_boolean().clone();
    let sp = column(&unpacked, STREAM_PRESENT)?.as_boolean().clone();
    let bid = column(&unpacked, BATCH_ROW_ID)?
        .as_primitive::<UInt64Type>()
        .clone();
    let sid = column(&unpacked, STREAM_ROW_ID)?
        .as_primitive::<UInt64Type>()
        .clone();
    let keys: Vec<ArrayRef> = alignment
        .keys
        .iter()
        .map(|k| column(&unpacked, &k.name).cloned())
        .collect::<Result<_>>()?;
    let key_rows = RowConverter::new(
        alignment
            .keys
            .iter()
            .map(|k| SortField::new(k.common.clone()))
            .collect(),
    )?
    .convert_columns(&keys)?;

    // Per key: the distinct rows of each side (by row number), as (output row, side taken).
    #[derive(Default)]
    struct Group {
        batch: Vec<(u64, usize)>,
        stream: Vec<(u64, usize)>,
        paired: bool,
    }
    let mut groups: HashMap<OwnedRow, Group> = HashMap::new();
    let mut order: Vec<OwnedRow> = Vec::new();
    for i in 0..unpacked.num_rows() {
        let key = key_rows.row(i).owned();
        let group = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            Group::default()
        });
        group.paired |= bp.value(i) && sp.value(i);
        if bp.value(i) && !group.batch.iter().any(|(id, _)| *id == bid.value(i)) {
            group.batch.push((bid.value(i), i));
        }
        if sp.value(i) && !group.stream.iter().any(|(id, _)| *id == sid.value(i)) {
            group.stream.push((sid.value(i), i));
        }
    }
    // Rows as (source, output row): source 0 is the batch values, 1 the stream values.
    let mut batch_rows: Vec<(usize, usize)> = Vec::new();
    let mut stream_rows: Vec<(usize, usize)> = Vec::new();
    let (mut batch_dups, mut stream_dups) = (0, 0);
    for key in &order {
        let group = &groups[key];
        let (mut m, mut n) = (group.batch.len() as u64, group.stream.len() as u64);
        batch_rows.extend(group.batch.iter().map(|&(_, i)| (0, i)));
        stream_rows.extend(group.stream.iter().map(|&(_, i)| (1, i)));
        if group.paired {
            // Each batch row of the key came out once per stream row, and the other way
            // round; a pair seen only once, and equal, was not kept: its rows are copies of
            // the rows it paired with.
            let pairs_of_batch_row = group.batch.iter().map(|&(id, _)| seen[0].count(id)).max();
            let pairs_of_stream_row = group.stream.iter().map(|&(id, _)| seen[1].count(id)).max();
            let n_true = pairs_of_batch_row.unwrap_or(0).max(n);
            let m_true = pairs_of_stream_row.unwrap_or(0).max(m);
            if let (true, Some(&(_, i))) = (m_true > m, group.stream.first()) {
                batch_rows.extend(std::iter::repeat_n((1, i), (m_true - m) as usize));
            }
            if let (true, Some(&(_, i))) = (n_true > n, group.batch.first()) {
                stream_rows.extend(std::iter::repeat_n((0, i), (n_true - n) as usize));
            }
            (m, n) = (m_true, n_true);
        }
        batch_dups += u64::from(m > 1);
        stream_dups += u64::from(n > 1);
    }
    let side = |rows: &[(usize, usize)]| -> Result<RecordBatch> {
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        let indices: Vec<usize> = rows.iter().map(|&(_, i)| i).collect();
        let take = UInt64Array::from_iter_values(indices.iter().map(|&i| i as u64));
        for key in &alignment.keys {
            let array = column(&unpacked, &key.name)?;
            columns.push(datafusion::arrow::compute::take(array, &take, None)?);
            fields.push(Field::new(&key.name, key.common.clone(), true));
        }
        for (v, value) in alignment.values.iter().enumerate() {
            let b = column(&unpacked, &columns::batch_value_name(v))?;
            let s = column(&unpacked, &columns::stream_value_name(v))?;
            let picks: Vec<(usize, usize)> = rows.to_vec();
            columns.push(interleave(&[b.as_ref(), s.as_ref()], &picks)?);
            fields.push(Field::new(&value.name, value.common.clone(), true));
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    };
    Ok((
        side(&batch_rows)?,
        side(&stream_rows)?,
        (batch_dups, stream_dups),
    ))
}
