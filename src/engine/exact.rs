//! Float `SUM` and `AVG` whose answer does not depend on the order the values arrive in.
//!
//! DataFusion adds float partial sums in the order partitions and threads finish, so the same
//! rows in another file layout give sums that differ in the last bits, and a nightly check
//! flaps. Here the sum is kept exactly (Shewchuk's non-overlapping partials, as Python's
//! `math.fsum`), merged exactly across partitions, and rounded once at the end: the same
//! multiset of values gives the bit-identical, correctly rounded sum whatever the layout,
//! partitioning, batch size or thread timing. AVG is that sum divided by the count.
//! Only Float64 inputs (after DataFusion's coercion, so Float32 and AVG over integers too) take
//! this path; integer, decimal, duration and interval aggregation stay DataFusion's own.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray, UInt64Array,
};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, UInt64Type};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::functions_aggregate::average::Avg;
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    ReversedUDAF, SetMonotonicity, Signature,
};
use datafusion::prelude::SessionContext;
use smallvec::SmallVec;

/// Replaces `sum` and `avg` (and its alias `mean`) in the session by their exact versions.
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(AggregateUDF::new_from_impl(ExactFloat {
        builtin: Builtin::Sum(Sum::new()),
    }));
    ctx.register_udaf(AggregateUDF::new_from_impl(ExactFloat {
        builtin: Builtin::Avg(Avg::new()),
    }));
}

/// The exact sum of a multiset of doubles: non-overlapping finite partials in increasing
/// magnitude whose sum is the exact sum of the finite values, plus counts of the values that
/// are not finite (they decide the result the way IEEE addition would, in any order).
#[derive(Clone, Debug, Default)]
pub struct ExactSum {
    /// The fast path: values near the first one's magnitude, summed as one 256-bit integer
    /// (two's complement, little-endian limbs) in units of 2^`bottom`.
    fixed: Option<Fixed>,
    /// The values outside the fixed window (rare: far smaller or larger than the first).
    partials: SmallVec<[f64; 1]>,
    nan: u64,
    pos_inf: u64,
    neg_inf: u64,
    /// Non-null values seen: AVG's divisor, and NULL when zero (SQL's empty sum).
    count: u64,
}

/// Beyond this magnitude an addition may overflow; such additions take the careful path.
const OVERFLOW_RISK: f64 = 8.98846567431158e307; // 2^1023

impl ExactSum {
    pub fn add_value(&mut self, x: f64) {
        self.count += 1;
        self.add(x, 1);
    }

    /// Takes a value back out (sliding window frames).
    pub fn retract_value(&mut self, x: f64) {
        self.count -= 1;
        self.add(-x, -1);
    }

    fn add(&mut self, x: f64, direction: i64) {
        if x.is_finite() {
            self.add_finite(x);
        } else {
            // A retracted +inf arrives negated: count it back on the side it came from.
            let counter = if x.is_nan() {
                &mut self.nan
            } else if (x > 0.0) == (direction > 0) {
                &mut self.pos_inf
            } else {
                &mut self.neg_inf
            };
            *counter = counter.wrapping_add_signed(direction);
        }
    }

    #[inline]
    fn add_finite(&mut self, x: f64) {
        if x == 0.0 {
            return;
        }
        let bits = x.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as i32;
        let fraction = bits & ((1 << 52) - 1);
        // x = mantissa × 2^exponent, mantissa < 2^53.
        let (mantissa, exponent) = if biased == 0 {
            (fraction, -1074)
        } else {
            (fraction | (1 << 52), biased - 1075)
        };
        let fixed = self.fixed.get_or_insert_with(|| Fixed::around(exponent));
        if fixed.add(mantissa, exponent, x < 0.0) {
            return;
        }
        self.add_to_partials(x);
    }

    /// Shewchuk's grow-expansion (Python's `msum`): exact, with the partials kept
    /// non-overlapping and in increasing magnitude.
    fn add_to_partials(&mut self, x: f64) {
        let risky = x.abs() >= OVERFLOW_RISK
            || self
                .partials
                .last()
                .is_some_and(|p| p.abs() >= OVERFLOW_RISK);
        if risky {
            // The exact sum may leave the double range. Such a sum has no finite rounding:
            // it counts as an infinity of its sign, like the built-in's overflow (this one
            // case is order-dependent when later values would bring the sum back in range).
            let saved = self.partials.clone();
            if !self.grow(x) {
                self.partials = saved;
                let sign = x + self.partials.last().copied().unwrap_or(0.0);
                if sign > 0.0 {
                    self.pos_inf += 1;
                } else {
                    self.neg_inf += 1;
                }
            }
        } else {
            self.grow(x);
        }
    }

    /// Returns false when an intermediate sum overflowed (the partials are then garbage).
    #[inline]
    fn grow(&mut self, mut x: f64) -> bool {
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        if x != 0.0 {
            self.partials.push(x);
        }
        x.is_finite()
    }

    #[cfg(test)]
    pub fn merge(&mut self, other: &ExactSum) {
        self.merge_parts(
            &other.all_partials(),
            other.nan,
            other.pos_inf,
            other.neg_inf,
            other.count,
        );
    }

    fn merge_parts(&mut self, partials: &[f64], nan: u64, pos_inf: u64, neg_inf: u64, count: u64) {
        for &p in partials {
            self.add_finite(p);
        }
        self.nan += nan;
        self.pos_inf += pos_inf;
        self.neg_inf += neg_inf;
        self.count += count;
    }

    /// The sum rounded once, to nearest with ties to even; NULL for no values.
    pub fn sum(&self) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            return Some(f64::NAN);
        }
        if self.pos_inf > 0 {
            return Some(f64::INFINITY);
        }
        if self.neg_inf > 0 {
            return Some(f64::NEG_INFINITY);
        }
        Some(round_partials(&self.all_partials()))
    }

    /// The partials with the fixed part folded in: the whole exact sum as non-overlapping
    /// doubles.
    fn all_partials(&self) -> SmallVec<[f64; 1]> {
        let Some(fixed) = &self.fixed else {
            return self.partials.clone();
        };
        let mut whole = ExactSum {
            partials: self.partials.clone(),
            ..Default::default()
        };
        fixed.pieces(|piece| whole.add_to_partials(piece));
        whole.partials
    }

    pub fn avg(&self) -> Option<f64> {
        self.sum().map(|sum| sum / self.count as f64)
    }

    fn heap_size(&self) -> usize {
        if self.partials.spilled() {
            self.partials.capacity() * size_of::<f64>()
        } else {
            0
        }
    }
}

/// An exact sum of doubles within a window of magnitudes, as a 256-bit two's complement integer
/// in units of 2^`bottom`. A value fits when its lowest bit is at or above `bottom` and its
/// highest below bit 191: then 2^63 of them cannot overflow the 255 bits of magnitude.
#[derive(Clone, Debug)]
struct Fixed {
    limbs: [u64; 4],
    bottom: i32,
}

impl Fixed {
    /// A window around a first value of this exponent: 100 bits of room below it (smaller
    /// values) and about 38 above (larger values), kept inside the double range so that every
    /// piece converts back exactly.
    fn around(exponent: i32) -> Fixed {
        Fixed {
            limbs: [0; 4],
            bottom: (exponent - 100).clamp(-1074, 1023 - 191),
        }
    }

    /// Adds ±mantissa × 2^exponent; false when it does not fit the window.
    #[inline]
    fn add(&mut self, mantissa: u64, exponent: i32, negative: bool) -> bool {
        let shift = exponent - self.bottom;
        if !(0..=191 - 53).contains(&shift) {
            return false;
        }
        let (limb, bit) = ((shift / 64) as usize, (shift % 64) as u32);
        let low = mantissa << bit;
        let high = if bit == 0 { 0 } else { mantissa >> (64 - bit) };
        let mut parts = [0u64; 5];
        parts[limb] = low;
        parts[limb + 1] = high;
        // Adds the value, or its two's complement (every bit flipped, plus one) when negative:
        // no branch on the sign, which is as unpredictable as the data.
        let flip = (negative as u64).wrapping_neg();
        let mut carry = negative as u64;
        for (i, limb) in self.limbs.iter_mut().enumerate() {
            let (sum, c1) = limb.overflowing_add(parts[i] ^ flip);
            let (sum, c2) = sum.overflowing_add(carry);
            *limb = sum;
            carry = (c1 | c2) as u64;
        }
        true
    }

    /// The sum as doubles, each exact (53-bit chunks of the magnitude, scaled).
    fn pieces(&self, mut emit: impl FnMut(f64)) {
        let negative = self.limbs[3] >> 63 == 1;
        let mut magnitude = self.limbs;
        if negative {
            let mut carry = true;
            for limb in magnitude.iter_mut() {
                let (s, c) = (!*limb).overflowing_add(carry as u64);
                *limb = s;
                carry = c;
            }
        }
        const MASK: u64 = (1 << 53) - 1;
        let mut start = 0usize;
        while start < 256 {
            let (limb, offset) = (start / 64, start % 64);
            let mut chunk = magnitude[limb] >> offset;
            if offset > 11 && limb + 1 < 4 {
                chunk |= magnitude[limb + 1] << (64 - offset);
            }
            let chunk = chunk & MASK;
            if chunk != 0 {
                let piece = chunk as f64 * pow2(self.bottom + start as i32);
                emit(if negative { -piece } else { piece });
            }
            start += 53;
        }
    }
}

/// 2^e for -1074 <= e <= 1023, exactly.
fn pow2(e: i32) -> f64 {
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (e + 1074))
    }
}

/// The correctly rounded value of non-overlapping partials (CPython's `fsum` epilogue): add
/// from the top until the remainder is lost, then fix a halfway case the lower partials decide.
fn round_partials(p: &[f64]) -> f64 {
    let Some(mut n) = p.len().checked_sub(1) else {
        return 0.0;
    };
    let mut hi = p[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = p[n];
        hi = x + y;
        lo = y - (hi - x);
        if lo != 0.0 {
            break;
        }
    }
    if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        if y == x - hi {
            hi = x;
        }
    }
    hi
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum Builtin {
    Sum(Sum),
    Avg(Avg),
}

/// DataFusion's `sum`/`avg` with the float path replaced: signature, coercion and return types
/// stay the built-in's, so only the accumulators differ.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ExactFloat {
    builtin: Builtin,
}

impl ExactFloat {
    fn inner(&self) -> &dyn AggregateUDFImpl {
        match &self.builtin {
            Builtin::Sum(sum) => sum,
            Builtin::Avg(avg) => avg,
        }
    }

    fn is_avg(&self) -> bool {
        matches!(self.builtin, Builtin::Avg(_))
    }
}

/// After coercion, a float SUM or AVG sees Float64 input and returns Float64.
fn is_float(input: &[FieldRef], output: &DataType) -> bool {
    input.len() == 1 && input[0].data_type() == &DataType::Float64 && output == &DataType::Float64
}

impl AggregateUDFImpl for ExactFloat {
    fn name(&self) -> &str {
        self.inner().name()
    }

    fn aliases(&self) -> &[String] {
        self.inner().aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner().signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner().return_type(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if !is_float(args.expr_fields, args.return_type()) {
            return self.inner().accumulator(args);
        }
        if args.is_distinct {
            Ok(Box::new(DistinctAccumulator {
                values: HashSet::new(),
                avg: self.is_avg(),
            }))
        } else {
            Ok(Box::new(SumAccumulator {
                sum: ExactSum::default(),
                avg: self.is_avg(),
            }))
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if !is_float(args.input_fields, args.return_type()) {
            return self.inner().state_fields(args);
        }
        let partials = Field::new_list(
            format_state_name(args.name, "partials"),
            Field::new_list_field(DataType::Float64, true),
            true,
        );
        if args.is_distinct {
            return Ok(vec![
                partials
                    .with_name(format_state_name(args.name, "distinct"))
                    .into(),
            ]);
        }
        let count =
            |what: &str| Field::new(format_state_name(args.name, what), DataType::UInt64, true);
        Ok(vec![
            partials.into(),
            count("nan").into(),
            count("pos_inf").into(),
            count("neg_inf").into(),
            count("count").into(),
        ])
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        if is_float(args.expr_fields, args.return_type()) {
            !args.is_distinct
        } else {
            self.inner().groups_accumulator_supported(args)
        }
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        if !is_float(args.expr_fields, args.return_type()) {
            return self.inner().create_groups_accumulator(args);
        }
        Ok(Box::new(SumGroups {
            sums: Vec::new(),
            avg: self.is_avg(),
        }))
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if !is_float(args.expr_fields, args.return_type()) || args.is_distinct {
            return self.inner().create_sliding_accumulator(args);
        }
        self.accumulator(args)
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner().documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner().set_monotonicity(data_type)
    }
    // Not delegated: `simplify_expr_op_literal` (it would rewrite to the built-in `sum`) and
    // `value_from_stats` (file statistics carry no float sums worth trusting).
}

/// One exact sum (an aggregate without GROUP BY, or a window frame).
#[derive(Debug)]
struct SumAccumulator {
    sum: ExactSum,
    avg: bool,
}

impl Accumulator for SumAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for x in values[0].as_primitive::<Float64Type>().iter().flatten() {
            self.sum.add_value(x);
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for x in values[0].as_primitive::<Float64Type>().iter().flatten() {
            self.sum.retract_value(x);
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let states = States::new(states)?;
        for row in 0..states.len() {
            states.merge_row_into(row, &mut self.sum);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let arrays = state_arrays(std::slice::from_ref(&self.sum));
        arrays
            .iter()
            .map(|array| ScalarValue::try_from_array(array, 0))
            .collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(if self.avg {
            self.sum.avg()
        } else {
            self.sum.sum()
        }))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.sum.heap_size()
    }
}

/// SUM(DISTINCT x) / AVG(DISTINCT x): the distinct values, summed exactly at the end (the
/// built-in sums them in hash-set order, which changes from run to run).
#[derive(Debug)]
struct DistinctAccumulator {
    /// Bit patterns, with -0.0 folded into 0.0 and every NaN into one.
    values: HashSet<u64>,
    avg: bool,
}

fn distinct_bits(x: f64) -> u64 {
    if x == 0.0 {
        0
    } else if x.is_nan() {
        f64::NAN.to_bits()
    } else {
        x.to_bits()
    }
}

impl Accumulator for DistinctAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for x in values[0].as_primitive::<Float64Type>().iter().flatten() {
            self.values.insert(distinct_bits(x));
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for row in 0..lists.len() {
            if lists.is_valid(row) {
                let values = lists.value(row);
                for x in values.as_primitive::<Float64Type>().iter().flatten() {
                    self.values.insert(distinct_bits(x));
                }
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values: Vec<ScalarValue> = self
            .values
            .iter()
            .map(|&bits| ScalarValue::Float64(Some(f64::from_bits(bits))))
            .collect();
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
            &values,
            &DataType::Float64,
        ))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut sum = ExactSum::default();
        for &bits in &self.values {
            sum.add_value(f64::from_bits(bits));
        }
        Ok(ScalarValue::Float64(if self.avg {
            sum.avg()
        } else {
            sum.sum()
        }))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.values.capacity() * size_of::<u64>()
    }
}

/// Exact sums per group of a hash aggregate.
#[derive(Debug)]
struct SumGroups {
    sums: Vec<ExactSum>,
    avg: bool,
}

impl GroupsAccumulator for SumGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize_with(total_num_groups, ExactSum::default);
        let values = values[0].as_primitive::<Float64Type>();
        let data = values.values();
        if values.null_count() == 0 && opt_filter.is_none() {
            for (&group, &x) in group_indices.iter().zip(data.iter()) {
                self.sums[group].add_value(x);
            }
        } else {
            for (row, (&group, &x)) in group_indices.iter().zip(data.iter()).enumerate() {
                if values.is_valid(row)
                    && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row))
                {
                    self.sums[group].add_value(x);
                }
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize_with(total_num_groups, ExactSum::default);
        let states = States::new(values)?;
        for (row, &group) in group_indices.iter().enumerate() {
            states.merge_row_into(row, &mut self.sums[group]);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sums = emit_to.take_needed(&mut self.sums);
        let values: Float64Array = sums
            .iter()
            .map(|s| if self.avg { s.avg() } else { s.sum() })
            .collect();
        Ok(Arc::new(values))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let sums = emit_to.take_needed(&mut self.sums);
        Ok(state_arrays(&sums))
    }

    /// Each input row as a one-value state (DataFusion skips partial aggregation this way
    /// when groups barely repeat).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = values[0].as_primitive::<Float64Type>();
        let rows = values.len();
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0i32);
        let mut partials = Vec::with_capacity(rows);
        let (mut nan, mut pos_inf, mut neg_inf, mut count) = (
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
        );
        for row in 0..rows {
            let kept =
                values.is_valid(row) && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            let x = values.value(row);
            if kept && x.is_finite() && x != 0.0 {
                partials.push(x);
            }
            offsets.push(partials.len() as i32);
            nan.push(u64::from(kept && x.is_nan()));
            pos_inf.push(u64::from(kept && x == f64::INFINITY));
            neg_inf.push(u64::from(kept && x == f64::NEG_INFINITY));
            count.push(u64::from(kept));
        }
        let list = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Float64, true)),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Arc::new(Float64Array::from(partials)),
            None,
        );
        let column = |v: Vec<u64>| -> ArrayRef { Arc::new(UInt64Array::from(v)) };
        Ok(vec![
            Arc::new(list),
            column(nan),
            column(pos_inf),
            column(neg_inf),
            column(count),
        ])
    }

    /// Called after every batch, so O(1): a group's partials rarely leave their inline room
    /// (values near each other's magnitude take the fixed-point path), and each group is
    /// allowed 16 bytes of heap for the ones that do.
    fn size(&self) -> usize {
        self.sums.capacity() * (size_of::<ExactSum>() + 16)
    }
}

/// The intermediate state of exact sums as Arrow arrays (partials, NaN, +inf, -inf, count).
fn state_arrays(sums: &[ExactSum]) -> Vec<ArrayRef> {
    let mut offsets = Vec::with_capacity(sums.len() + 1);
    offsets.push(0i32);
    let mut partials = Vec::new();
    for sum in sums {
        partials.extend_from_slice(&sum.all_partials());
        offsets.push(partials.len() as i32);
    }
    let list = ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float64, true)),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Arc::new(Float64Array::from(partials)),
        None,
    );
    let counts = |f: fn(&ExactSum) -> u64| -> ArrayRef {
        Arc::new(sums.iter().map(f).map(Some).collect::<UInt64Array>())
    };
    vec![
        Arc::new(list),
        counts(|s| s.nan),
        counts(|s| s.pos_inf),
        counts(|s| s.neg_inf),
        counts(|s| s.count),
    ]
}

/// Typed views of [`state_arrays`] arriving to be merged.
struct States<'a> {
    partials: &'a ListArray,
    nan: &'a UInt64Array,
    pos_inf: &'a UInt64Array,
    neg_inf: &'a UInt64Array,
    count: &'a UInt64Array,
}

impl<'a> States<'a> {
    fn new(arrays: &'a [ArrayRef]) -> Result<Self> {
        let [partials, nan, pos_inf, neg_inf, count] = arrays else {
            return internal_err!("exact sum state has {} columns, not 5", arrays.len());
        };
        Ok(States {
            partials: partials.as_list::<i32>(),
            nan: nan.as_primitive::<UInt64Type>(),
            pos_inf: pos_inf.as_primitive::<UInt64Type>(),
            neg_inf: neg_inf.as_primitive::<UInt64Type>(),
            count: count.as_primitive::<UInt64Type>(),
        })
    }

    fn len(&self) -> usize {
        self.count.len()
    }

    fn merge_row_into(&self, row: usize, sum: &mut ExactSum) {
        let offsets = self.partials.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let values = self
            .partials
            .values()
            .as_primitive::<Float64Type>()
            .values();
        sum.merge_parts(
            &values[start..end],
            self.nan.value(row),
            self.pos_inf.value(row),
            self.neg_inf.value(row),
            self.count.value(row),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &[f64]) -> f64 {
        let mut sum = ExactSum::default();
        values.iter().for_each(|&x| sum.add_value(x));
        sum.sum().unwrap()
    }

    #[test]
    fn rounds_the_exact_sum_correctly() {
        // CPython's test_math fsum cases: each needs the exact sum and correct rounding.
        let two = 2f64;
        let cases: &[(&[f64], f64)] = &[
            (&[0.1; 10], 1.0),
            (&[1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50], 1e-100),
            (&[two.powi(53), -0.5, -two.powi(-54)], two.powi(53) - 1.0),
            (&[two.powi(53), 1.0, two.powi(-100)], two.powi(53) + 2.0),
            (
                &[two.powi(53) + 10.0, 1.0, two.powi(-100)],
                two.powi(53) + 12.0,
            ),
            (
                &[two.powi(53) - 4.0, 0.5, two.powi(-54)],
                two.powi(53) - 3.0,
            ),
            (
                &[1.7976931348623157e308, -1.7976931348623157e308, 5e-324],
                5e-324,
            ),
        ];
        for (values, expected) in cases {
            assert_eq!(exact(values).to_bits(), expected.to_bits(), "{values:?}");
        }
        // The naive sum of tenths is off in the last bit; the exact one is not.
        assert_ne!([0.1f64; 10].iter().sum::<f64>(), 1.0);
    }

    #[test]
    fn any_order_and_any_split_gives_the_same_bits() {
        // Values over 30 orders of magnitude, both signs: the naive sums of the orders differ.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let values: Vec<f64> = (0..10_000)
            .map(|_| {
                let mantissa = (next() % 1_000_000) as f64 / 7.0;
                let scale = 10f64.powi((next() % 30) as i32 - 15);
                if next() % 2 == 0 {
                    mantissa * scale
                } else {
                    -mantissa * scale
                }
            })
            .collect();
        let reference = exact(&values);
        let mut naive = std::collections::BTreeSet::new();
        for round in 0..20 {
            let mut shuffled = values.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            naive.insert(shuffled.iter().sum::<f64>().to_bits());
            // Split into partitions of varying sizes, merged in varying order.
            let chunk = 1 + round * 97;
            let mut parts: Vec<ExactSum> = shuffled
                .chunks(chunk)
                .map(|c| {
                    let mut s = ExactSum::default();
                    c.iter().for_each(|&x| s.add_value(x));
                    s
                })
                .collect();
            parts.reverse();
            let mut total = ExactSum::default();
            parts.iter().for_each(|p| total.merge(p));
            assert_eq!(total.sum().unwrap().to_bits(), reference.to_bits());
            assert_eq!(total.count, values.len() as u64);
        }
        assert!(
            naive.len() > 1,
            "the naive sums should disagree for this test to mean anything"
        );
    }

    #[test]
    fn the_fixed_point_path_agrees_with_the_partials() {
        // Magnitudes from 2^-1074 to 2^1000, both signs, subnormals included: some values take
        // the 256-bit fast path, others the partials; the rounded sums must be the same.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200 {
            let spread = [5u64, 60, 200, 2000][round % 4];
            let values: Vec<f64> = (0..500)
                .map(|_| {
                    let exponent = (next() % spread) as i32 - (spread as i32) / 2;
                    let mantissa = 1.0 + (next() % (1 << 52)) as f64 / (1u64 << 52) as f64;
                    let x = mantissa * 2f64.powi(exponent.clamp(-1074, 1000));
                    if next() % 2 == 0 { x } else { -x }
                })
                .chain([5e-324, -1e-310, 2.5e-308])
                .collect();
            let mut both = ExactSum::default();
            let mut slow = ExactSum::default();
            for &x in &values {
                both.add_value(x);
                slow.count += 1;
                slow.add_to_partials(x);
            }
            assert_eq!(
                both.sum().unwrap().to_bits(),
                slow.sum().unwrap().to_bits(),
                "round {round}"
            );
        }
    }

    #[test]
    fn non_finite_values_and_nulls_follow_ieee_and_sql() {
        assert_eq!(ExactSum::default().sum(), None);
        assert!(exact(&[1.0, f64::NAN]).is_nan());
        assert!(exact(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert_eq!(exact(&[f64::INFINITY, 1.0]), f64::INFINITY);
        assert_eq!(exact(&[f64::NEG_INFINITY, 1.0]), f64::NEG_INFINITY);
        assert_eq!(exact(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(exact(&[-f64::MAX, -f64::MAX]), f64::NEG_INFINITY);
        // Retracting values (sliding frames) restores the earlier sum exactly.
        let mut sum = ExactSum::default();
        for x in [0.1, f64::INFINITY, 1e20, 0.2] {
            sum.add_value(x);
        }
        for x in [f64::INFINITY, 1e20] {
            sum.retract_value(x);
        }
        assert_eq!(sum.sum(), Some(0.30000000000000004));
        assert_eq!(sum.avg(), Some(0.30000000000000004 / 2.0));
    }
}

#[cfg(test)]
mod sql_tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    /// Runs `sql` over a small table `t(id, g, x DOUBLE, y DOUBLE, f FLOAT, i BIGINT,
    /// d DECIMAL(10,2))`, with DataFusion's aggregates or the exact ones.
    async fn query(sql: &str, exact: bool) -> String {
        let ctx = SessionContext::new();
        if exact {
            super::register(&ctx);
        }
        ctx.sql(
            "CREATE VIEW t AS SELECT id, g, x, y, CAST(x AS FLOAT) AS f, id * 10 AS i, \
             CAST(x AS DECIMAL(10, 2)) AS d FROM (VALUES (1, 'a', 0.1, 1.5), (2, 'a', 0.2, 2.5), \
             (3, 'b', 0.3, NULL), (4, 'b', 0.1, CAST('inf' AS DOUBLE)), (5, 'a', 0.1, 5.0)) \
             AS v(id, g, x, y)",
        )
        .await
        .unwrap();
        let frame = ctx.sql(sql).await.unwrap();
        let batches = frame.collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn float_aggregates_are_exact_everything_else_is_datafusions() {
        // 0.1 + 0.2 + 0.1 rounds twice in DataFusion; once here.
        let sql = "SELECT g, SUM(x) AS s, AVG(x) AS a, SUM(y) AS sy, AVG(y) AS ay, SUM(f) AS sf \
                   FROM t GROUP BY g ORDER BY g";
        let exact = query(sql, true).await;
        assert_eq!(
            exact.lines().collect::<Vec<_>>()[3..5],
            [
                "| a | 0.4 | 0.13333333333333333 | 9.0 | 3.0 | 0.4000000059604645 |",
                "| b | 0.4 | 0.2                 | inf | inf | 0.4000000134110451 |",
            ],
            "\n{exact}"
        );
        // Integer and decimal sums keep DataFusion's types and values.
        let sql = "SELECT SUM(i) AS si, AVG(i) AS ai, SUM(d) AS sd, AVG(d) AS ad, \
                   arrow_typeof(SUM(i)) AS ti, arrow_typeof(SUM(d)) AS td FROM t";
        assert_eq!(query(sql, true).await, query(sql, false).await);
        // DISTINCT, no GROUP BY, and a sliding window frame take the exact path too.
        // (Python: math.fsum([0.1, 0.2, 0.3]) == 0.6; the naive sum is 0.6000000000000001.)
        let sql = "SELECT SUM(DISTINCT x) AS sd, AVG(DISTINCT x) AS ad FROM t";
        let distinct = query(sql, true).await;
        assert!(
            distinct.contains("| 0.6 | 0.19999999999999998 |"),
            "{distinct}"
        );
        let sql = "SELECT id, SUM(x) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) \
                   AS w FROM t ORDER BY id";
        let window = query(sql, true).await;
        assert!(window.contains("| 3  | 0.5"), "{window}");
        assert!(window.contains("| 5  | 0.2 "), "{window}");
    }
}
