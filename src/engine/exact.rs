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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, ListArray, UInt64Array,
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
    /// The fast path: values near the first one's magnitude, summed exactly in a fixed-point
    /// window of 256 bits (plus carries) in units of 2^`bottom`.
    fixed: Fixed,
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
        if !self.fixed.add_value(x) {
            self.add_to_partials(x);
        }
    }

    /// Shewchuk's grow-expansion (Python's `msum`): exact, with the partials kept
    /// non-overlapping and in increasing magnitude.
    fn add_to_partials(&mut self, x: f64) {
        if may_overflow(&self.partials, x) {
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
    fn grow(&mut self, x: f64) -> bool {
        grow(&mut self.partials, x)
    }

    #[cfg(test)]
    pub fn merge(&mut self, other: &ExactSum) {
        self.merge_window(&other.fixed);
        for &p in &other.partials {
            self.add_finite(p);
        }
        self.nan += other.nan;
        self.pos_inf += other.pos_inf;
        self.neg_inf += other.neg_inf;
        self.count += other.count;
    }

    /// Adds another sum's window: limb by limb when both have the same one.
    fn merge_window(&mut self, other: &Fixed) {
        if !self.fixed.absorb(other) {
            other.pieces(|piece| self.add_finite(piece));
        }
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
        if self.partials.is_empty() {
            return Some(self.fixed.round());
        }
        let whole = self.whole();
        // Folding the window into the partials may leave the double range (a window holding
        // 2^1024 - 2^971 + 2^999 with one tiny partial beside it): that sum is an infinity of
        // its sign, as any sum leaving the range is, never the partials without it.
        Some(match (whole.pos_inf > 0, whole.neg_inf > 0) {
            (true, true) => f64::NAN,
            (true, false) => f64::INFINITY,
            (false, true) => f64::NEG_INFINITY,
            (false, false) => round_partials(&whole.partials),
        })
    }

    /// The partials with the fixed part folded in: the whole exact sum as non-overlapping
    /// doubles, or counted as infinities where it left the double range.
    fn whole(&self) -> ExactSum {
        let mut whole = ExactSum {
            partials: self.partials.clone(),
            ..Default::default()
        };
        self.fixed.pieces(|piece| whole.add_to_partials(piece));
        whole
    }

    pub fn avg(&self) -> Option<f64> {
        self.sum().map(|sum| sum / self.count as f64)
    }

    /// The exact sum as finite doubles (what it is made of, in no canonical form); None when
    /// a NaN or an infinity was added or the sum left the double range.
    pub(super) fn pieces(&self) -> Option<Pieces> {
        if self.nan > 0 || self.pos_inf > 0 || self.neg_inf > 0 {
            return None;
        }
        let whole = self.whole();
        (whole.pos_inf == 0 && whole.neg_inf == 0).then(|| whole.partials.into_iter().collect())
    }

    /// The values added, less those retracted.
    pub(super) fn count(&self) -> u64 {
        self.count
    }

    pub(super) fn heap_size(&self) -> usize {
        if self.partials.spilled() {
            self.partials.capacity() * size_of::<f64>()
        } else {
            0
        }
    }
}

/// Finite doubles whose sum is an exact sum.
pub(super) type Pieces = SmallVec<[f64; 4]>;

/// The correctly rounded sum of a few finite doubles: Shewchuk's partials alone, without the
/// fixed-point window a long sum starts with. Infinite when it leaves the double range.
///
/// The partials live on the stack while no value comes near the top of the double range (the
/// statistics of a large GROUP BY take a dozen such sums a group); the same additions in the
/// same order as `ExactSum`'s, so the same result.
pub(super) fn fsum(values: impl IntoIterator<Item = f64>) -> f64 {
    let values: SmallVec<[f64; 32]> = values.into_iter().collect();
    let mut partials: SmallVec<[f64; 32]> = SmallVec::new();
    for &x in &values {
        if x.is_nan() || may_overflow(&partials, x) {
            let mut sum = ExactSum {
                count: 1,
                ..ExactSum::default()
            };
            for &x in &values {
                sum.add_to_partials(x);
            }
            return sum.sum().unwrap_or(0.0);
        }
        grow(&mut partials, x);
    }
    round_partials(&partials)
}

/// Whether adding `x` to `partials` might leave the double range.
#[inline]
fn may_overflow(partials: &[f64], x: f64) -> bool {
    x.abs() >= OVERFLOW_RISK || partials.last().is_some_and(|p| p.abs() >= OVERFLOW_RISK)
}

/// Shewchuk's grow-expansion of `partials` by `x`; false when an intermediate sum overflowed
/// (the partials are then garbage).
#[inline]
fn grow<A: smallvec::Array<Item = f64>>(partials: &mut SmallVec<A>, mut x: f64) -> bool {
    let mut kept = 0;
    for j in 0..partials.len() {
        let mut y = partials[j];
        if x.abs() < y.abs() {
            std::mem::swap(&mut x, &mut y);
        }
        let hi = x + y;
        let lo = y - (hi - x);
        if lo != 0.0 {
            partials[kept] = lo;
            kept += 1;
        }
        x = hi;
    }
    partials.truncate(kept);
    if x != 0.0 {
        partials.push(x);
    }
    x.is_finite()
}

/// Digits of the fixed-point window: 32 bits each, kept in i64 so that additions need no
/// carries until [`NORMALIZE_EVERY`] of them have piled up.
const DIGITS: usize = 8;
/// The largest shift of a value's lowest bit above the window's bottom: its 53 bits then span
/// three digits, the last of them below the top digit.
const LAST_SHIFT: i32 = (DIGITS as i32 - 2) * 32 - 1;
/// Additions a digit takes (each under 2^32) before its carries are moved up.
const NORMALIZE_EVERY: u32 = 1 << 30;
/// The window as two's complement limbs: the digits after normalisation, sign-extended.
const LIMBS: usize = DIGITS / 2 + 1;
/// Windows start at multiples of this, so sums of one group built in different partitions
/// usually share a window and merge digit by digit.
const ALIGN: i32 = 32;
/// The bottom of a window not placed yet (a group without a finite value so far).
const UNSET: i32 = i32::MIN;

/// An exact sum of doubles within a window of magnitudes, in units of 2^`bottom`: digit i holds
/// a signed multiple of 2^(32 i). A value fits when its lowest bit is at or above `bottom` and
/// at most [`LAST_SHIFT`] above it. The top digit absorbs the carries: it overflows only after
/// about 2^43 values, far beyond any group.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Fixed {
    digits: [i64; DIGITS],
    bottom: i32,
    /// Additions since the last normalisation.
    pending: u32,
}

impl Default for Fixed {
    fn default() -> Fixed {
        Fixed::EMPTY
    }
}

impl Fixed {
    const EMPTY: Fixed = Fixed {
        digits: [0; DIGITS],
        bottom: UNSET,
        pending: 0,
    };

    /// A window around a first value of this exponent: 80 to 111 bits of room below its lowest
    /// bit (smaller values) and 80 to 111 above (larger ones), inside the double range.
    fn around(exponent: i32) -> Fixed {
        let aligned = (exponent - 80).div_euclid(ALIGN) * ALIGN;
        Fixed {
            bottom: aligned.clamp(-1074, 971 - LAST_SHIFT),
            ..Fixed::EMPTY
        }
    }

    /// Adds a finite value, placing the window around the first one that is not zero; false
    /// when it does not fit (the caller keeps it elsewhere).
    #[inline]
    fn add_value(&mut self, x: f64) -> bool {
        if x == 0.0 {
            return true;
        }
        let (mantissa, exponent) = decompose(x);
        if self.bottom == UNSET {
            *self = Fixed::around(exponent);
        }
        self.add(mantissa, exponent, x < 0.0)
    }

    /// Adds another window when that can go limb by limb (the same bottom, or this one not
    /// placed yet); false when the other must be added piece by piece.
    fn absorb(&mut self, other: &Fixed) -> bool {
        if other.bottom == UNSET {
        } else if self.bottom == UNSET {
            *self = *other;
        } else if self.bottom == other.bottom {
            self.add_window(other);
        } else {
            return false;
        }
        true
    }

    /// Adds ±mantissa × 2^exponent; false when it does not fit the window.
    #[inline(always)]
    fn add(&mut self, mantissa: u64, exponent: i32, negative: bool) -> bool {
        let shift = exponent - self.bottom;
        if !(0..=LAST_SHIFT).contains(&shift) {
            return false;
        }
        let (digit, offset) = ((shift >> 5) as usize, shift & 31);
        let wide = (mantissa as u128) << offset;
        // Negated (flip and add one) without a branch on the sign, which is as unpredictable
        // as the data.
        let flip = -(negative as i64);
        let signed = |part: i64| (part ^ flip) - flip;
        let digits = &mut self.digits[digit..digit + 3];
        digits[0] += signed((wide as u64 & 0xffff_ffff) as i64);
        digits[1] += signed(((wide >> 32) as u64 & 0xffff_ffff) as i64);
        digits[2] += signed((wide >> 64) as i64);
        self.pending += 1;
        if self.pending == NORMALIZE_EVERY {
            self.normalize();
        }
        true
    }

    /// Moves the carries up: every digit but the top one back in [0, 2^32).
    fn normalize(&mut self) {
        let mut carry = 0i64;
        for digit in &mut self.digits[..DIGITS - 1] {
            let value = *digit + carry;
            *digit = value & 0xffff_ffff;
            carry = value >> 32;
        }
        self.digits[DIGITS - 1] += carry;
        self.pending = 0;
    }

    /// Adds another window with the same bottom.
    fn add_window(&mut self, other: &Fixed) {
        let mut other = *other;
        other.normalize();
        self.normalize();
        for (digit, add) in self.digits.iter_mut().zip(other.digits) {
            *digit += add;
        }
        self.pending = 2;
    }

    /// The sum as a two's complement integer in little-endian 64-bit limbs.
    fn limbs(&self) -> [u64; LIMBS] {
        let mut normal = *self;
        normal.normalize();
        let d = normal.digits.map(|d| d as u64);
        let mut limbs = [0u64; LIMBS];
        for (i, limb) in limbs.iter_mut().take(DIGITS / 2).enumerate() {
            *limb = d[2 * i] | d[2 * i + 1] << 32;
        }
        limbs[LIMBS - 1] = (normal.digits[DIGITS - 1] >> 32) as u64;
        limbs
    }

    /// The window back from [`Fixed::limbs`].
    fn from_limbs(limbs: &[u64; LIMBS], bottom: i32) -> Fixed {
        let mut digits = [0i64; DIGITS];
        for (i, limb) in limbs.iter().take(DIGITS / 2).enumerate() {
            digits[2 * i] = (limb & 0xffff_ffff) as i64;
            digits[2 * i + 1] = (limb >> 32) as i64;
        }
        digits[DIGITS - 1] = ((limbs[LIMBS - 1] << 32) | (limbs[LIMBS - 2] >> 32)) as i64;
        Fixed {
            digits,
            bottom,
            pending: 0,
        }
    }

    /// The sign and the magnitude of the sum.
    fn magnitude(&self) -> (bool, [u64; LIMBS]) {
        let mut magnitude = self.limbs();
        let negative = magnitude[LIMBS - 1] >> 63 == 1;
        if negative {
            let mut carry = true;
            for limb in magnitude.iter_mut() {
                let (s, c) = (!*limb).overflowing_add(carry as u64);
                *limb = s;
                carry = c;
            }
        }
        (negative, magnitude)
    }

    /// The sum as doubles, each exact (53-bit chunks of the magnitude, scaled).
    fn pieces(&self, mut emit: impl FnMut(f64)) {
        if self.bottom == UNSET {
            return;
        }
        let (negative, magnitude) = self.magnitude();
        const MASK: u64 = (1 << 53) - 1;
        let mut start = 0usize;
        while start < LIMBS * 64 {
            let chunk = bits(&magnitude, start) & MASK;
            if chunk != 0 {
                let piece = chunk as f64 * pow2(self.bottom + start as i32);
                emit(if negative { -piece } else { piece });
            }
            start += 53;
        }
    }

    /// The sum rounded once, to nearest with ties to even (the window alone: no partials).
    fn round(&self) -> f64 {
        if self.bottom == UNSET {
            return 0.0;
        }
        let (negative, m) = self.magnitude();
        let Some(top) = (0..LIMBS).rev().find(|&i| m[i] != 0) else {
            return 0.0;
        };
        let length = top * 64 + 64 - m[top].leading_zeros() as usize;
        let value = if length <= 53 {
            // Exact: every bit of the window is a multiple of 2^-1074 or more.
            m[0] as f64 * pow2(self.bottom)
        } else {
            let shift = length - 53;
            let mut mantissa = bits(&m, shift) & ((1 << 53) - 1);
            let half = bits(&m, shift - 1) & 1 == 1;
            let (limb, offset) = ((shift - 1) / 64, (shift - 1) % 64);
            let sticky = m[..limb].iter().any(|&l| l != 0) || m[limb] & ((1u64 << offset) - 1) != 0;
            if half && (sticky || mantissa & 1 == 1) {
                mantissa += 1;
            }
            let exponent = self.bottom + shift as i32;
            if exponent + 53 > 1024 {
                f64::INFINITY
            } else {
                mantissa as f64 * pow2(exponent)
            }
        };
        if negative { -value } else { value }
    }
}

/// The 64 bits of `m` from bit `start` up (zeros past the top).
#[inline]
fn bits(m: &[u64; LIMBS], start: usize) -> u64 {
    let (limb, offset) = (start / 64, start % 64);
    let low = m.get(limb).copied().unwrap_or(0) >> offset;
    let high = if offset == 0 {
        0
    } else {
        m.get(limb + 1).copied().unwrap_or(0) << (64 - offset)
    };
    low | high
}

/// 2^e, exactly for -1074 <= e <= 1023 (infinity above).
fn pow2(e: i32) -> f64 {
    if e > 1023 {
        f64::INFINITY
    } else if e >= -1022 {
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

    fn float_groups(&self) -> Box<dyn GroupsAccumulator> {
        Box::new(SumGroups::new(self.is_avg()))
    }
}

impl AggregateUDFImpl for ExactFloat {
    same_function_as_inner!();

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if !super::is_float(args.expr_fields, args.return_type()) {
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
        if !super::is_float(args.input_fields, args.return_type()) {
            return self.inner().state_fields(args);
        }
        if args.is_distinct {
            let distinct = Field::new_list(
                format_state_name(args.name, "distinct"),
                Field::new_list_field(DataType::Float64, true),
                true,
            );
            return Ok(vec![distinct.into()]);
        }
        Ok(state_fields(args.name, ""))
    }

    float_path_else_inner!();
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
            self.sum.merge_state_row(&states, row);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let arrays = state_arrays(std::iter::once(self.sum.parts()));
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

/// Exact sums per group of a hash aggregate, in two tiers so that a group costs little memory
/// (with a million groups, the states must stay near the cache, as the built-in's do):
/// - hot: the exact sum as two doubles (their sum as real numbers), 24 bytes with the count. Nearly every group of a few values, and many larger ones, stay here:
///   the two terms hold about 106 bits wherever they sit.
/// - cold: a group whose exact sum no longer fits two doubles (or that met a NaN, an infinity or
///   a value near the double range) moves, for good, to a fixed-point window (where a big group
///   sums fastest), with whatever is rarer still (values outside the window, non-finite counts)
///   in a side table.
///
/// A GROUP BY over a handful of groups sums each batch by exponent first
/// ([`SumGroups::add_few`]).
///
/// Both tiers hold the exact sum and round it once, so a group's result does not depend on
/// which tier the order of arrival left it in.
#[derive(Debug)]
pub(super) struct SumGroups {
    groups: Vec<GroupSum>,
    /// The windows of cold groups; a cold group's `lo` holds its index here.
    windows: Vec<Fixed>,
    /// Partials and non-finite counts of cold groups that have any.
    rare: HashMap<usize, ExactSum>,
    /// [`SumGroups::add_few`]'s slots, kept between batches (zero there).
    few: Option<Box<FewSlots>>,
    avg: bool,
}

/// At most this many groups sum a batch by exponent ([`SumGroups::add_few`]).
const FEW_GROUPS: usize = 16;
/// Biased exponents below this sum by exponent: even a batch's whole sum at the top one stays
/// far from the double range.
const BY_EXPONENT_BELOW: usize = 0x780;
/// Values summed by exponent before a fold: far fewer than the 2^31 halves of mantissas (each
/// below 2^32) an i64 takes.
const BY_EXPONENT_VALUES: usize = 1 << 20;
/// Per biased exponent and group, the sums of the low 32 bits and of the rest of the signed
/// mantissas.
type FewSlots = [[i64; 2]; 2048 * FEW_GROUPS];

/// A group's exact sum `hi + lo` (hot) and its count; in a cold group `hi` is NaN and `lo` the
/// index of its window.
#[derive(Clone, Copy, Debug)]
struct GroupSum {
    hi: f64,
    lo: f64,
    count: u64,
}

impl GroupSum {
    const EMPTY: GroupSum = GroupSum {
        hi: 0.0,
        lo: 0.0,
        count: 0,
    };

    /// The index of a cold group's window.
    #[inline]
    fn cold(&self) -> Option<usize> {
        self.hi.is_nan().then_some(self.lo.to_bits() as usize)
    }
}

/// Knuth's TwoSum: `a + b` rounded, and the exact error of that rounding.
#[inline]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let sum = a + b;
    let b_part = sum - a;
    let a_part = sum - b_part;
    (sum, (a - a_part) + (b - b_part))
}

/// The hot path of one value into one group: in registers while the group is hot, into its
/// window when it is cold; false when the value needs [`SumGroups::add_slowly`].
#[inline(always)]
fn add_fast(sum: &mut GroupSum, windows: &mut [Fixed], x: f64) -> bool {
    if let Some(window) = sum.cold() {
        // A big group: its window nearly always takes the value, without a branch on the
        // value's kind (zero, subnormal, negative) until the window refuses it.
        let bits = x.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as i32;
        let fixed = &mut windows[window];
        if biased != 0x7ff && fixed.bottom != UNSET {
            let mantissa = significand(bits, biased as u64);
            return fixed.add(mantissa, biased.max(1) - 1075, bits >> 63 == 1);
        }
    } else if x.abs() < OVERFLOW_RISK {
        // Far from the double range (NaN fails the test too), TwoSum cannot overflow.
        let (hi, error) = two_sum(sum.hi, x);
        let (lo, rest) = two_sum(sum.lo, error);
        // Exact as long as nothing is left over; the two terms may overlap, which costs
        // nothing: their one rounded addition is the correctly rounded sum.
        if rest == 0.0 && hi.abs() < OVERFLOW_RISK {
            (sum.hi, sum.lo) = (hi, lo);
            return true;
        }
    }
    false
}

/// How many rows ahead a grouped loop asks for its groups' sums: in many groups each row's
/// sum is a cache miss, and the loop does too little per row for the CPU to overlap them.
const FETCH_AHEAD: usize = 16;

/// Asks the CPU to bring in the sum of the group `FETCH_AHEAD` rows after `row`, and the window
/// of the one half as far ahead, whose sum should be in by now (a hint: it reads no memory it
/// may not, and faults on nothing).
#[inline(always)]
fn fetch_group(groups: &[GroupSum], windows: &[Fixed], group_indices: &[usize], row: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        if let Some(sum) = group_indices
            .get(row + FETCH_AHEAD)
            .and_then(|&g| groups.get(g))
        {
            // SAFETY: a prefetch is a hint; it neither reads nor faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>((sum as *const GroupSum).cast()) };
        }
        let window = group_indices
            .get(row + FETCH_AHEAD / 2)
            .and_then(|&g| groups.get(g))
            .and_then(GroupSum::cold)
            .and_then(|w| windows.get(w));
        if let Some(window) = window {
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>((window as *const Fixed).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (groups, windows, group_indices, row);
}

impl SumGroups {
    pub(super) fn new(avg: bool) -> SumGroups {
        SumGroups {
            groups: Vec::new(),
            windows: Vec::new(),
            rare: HashMap::new(),
            few: None,
            avg,
        }
    }

    fn resize(&mut self, groups: usize) {
        self.groups.resize(groups, GroupSum::EMPTY);
    }

    /// One value into one group (not counted); anything unusual goes to
    /// [`SumGroups::add_slowly`], out of line.
    #[inline(always)]
    fn add(&mut self, group: usize, x: f64) {
        if !add_fast(&mut self.groups[group], &mut self.windows, x) {
            self.add_slowly(group, x);
        }
    }

    /// The hot loop over a batch without NULLs. The tiers are borrowed once per run of rows
    /// that need nothing unusual, so their bounds and bases stay in registers.
    fn add_all(&mut self, group_indices: &[usize], data: &[f64]) {
        let mut start = 0;
        while start < group_indices.len() {
            let (groups, windows) = (&mut self.groups[..], &mut self.windows[..]);
            let refused = group_indices[start..]
                .iter()
                .zip(&data[start..])
                .enumerate()
                .position(|(offset, (&group, &x))| {
                    fetch_group(groups, windows, group_indices, start + offset);
                    let sum = &mut groups[group];
                    sum.count += 1;
                    !add_fast(sum, windows, x)
                });
            let Some(offset) = refused else {
                return;
            };
            let row = start + offset;
            self.add_slowly(group_indices[row], data[row]);
            start = row + 1;
        }
    }

    /// A batch of a GROUP BY over a handful of groups, where every group soon holds a big exact
    /// sum and the windows' shifts and carries would be most of the query's time: each value's
    /// signed mantissa goes, as two halves with no carry between them, into a slot per exponent
    /// and group, and the slots are added into the groups once per batch (each an exact
    /// integer times a power of two). The top of the double range, NaN and infinities take the
    /// usual path.
    fn add_few(&mut self, group_indices: &[usize], data: &[f64]) {
        let mut slots = self.few.take().unwrap_or_else(|| {
            vec![[0i64; 2]; 2048 * FEW_GROUPS]
                .into_boxed_slice()
                .try_into()
                .expect("the slots' length")
        });
        for (group_indices, data) in group_indices
            .chunks(BY_EXPONENT_VALUES)
            .zip(data.chunks(BY_EXPONENT_VALUES))
        {
            let mut counts = [0u64; FEW_GROUPS];
            let (mut lowest, mut highest) = (usize::MAX, 0);
            let mut unusual = Vec::new();
            for (&group, &x) in group_indices.iter().zip(data) {
                let bits = x.to_bits();
                let biased = ((bits >> 52) & 0x7ff) as usize;
                if biased >= BY_EXPONENT_BELOW || group >= FEW_GROUPS {
                    unusual.push((group, x));
                    continue;
                }
                counts[group] += 1;
                let mantissa = significand(bits, biased as u64);
                let flip = -((bits >> 63) as i64);
                let [low, high] = &mut slots[biased * FEW_GROUPS + group];
                *low += ((mantissa & 0xffff_ffff) as i64 ^ flip) - flip;
                *high += ((mantissa >> 32) as i64 ^ flip) - flip;
                lowest = lowest.min(biased);
                highest = highest.max(biased);
            }
            for (group, count) in counts.into_iter().enumerate().filter(|c| c.1 > 0) {
                self.groups[group].count += count;
            }
            for biased in lowest..=highest {
                for group in 0..FEW_GROUPS {
                    let [low, high] = std::mem::take(&mut slots[biased * FEW_GROUPS + group]);
                    let sum = low as i128 + ((high as i128) << 32);
                    let magnitude = sum.unsigned_abs();
                    // Below 2^84: two exact doubles.
                    for start in [0, 53] {
                        let chunk = ((magnitude >> start) as u64) & ((1 << 53) - 1);
                        if chunk != 0 {
                            let piece = chunk as f64 * pow2(biased.max(1) as i32 - 1075 + start);
                            self.add(group, if sum < 0 { -piece } else { piece });
                        }
                    }
                }
            }
            for (group, x) in unusual {
                self.groups[group].count += 1;
                self.add(group, x);
            }
        }
        self.few = Some(slots);
    }

    /// A value the hot loop could not take: the group turns (or is) cold, and the value goes
    /// into its window or its side table.
    #[cold]
    #[inline(never)]
    fn add_slowly(&mut self, group: usize, x: f64) {
        let window = self.make_cold(group);
        self.add_cold(group, window, x);
    }

    /// Moves a hot group to a window of its own, its two terms in it; the window's index.
    fn make_cold(&mut self, group: usize) -> usize {
        let sum = &mut self.groups[group];
        if let Some(window) = sum.cold() {
            return window;
        }
        let window = self.windows.len();
        self.windows.push(Fixed::EMPTY);
        let (hi, lo) = (sum.hi, sum.lo);
        (sum.hi, sum.lo) = (f64::NAN, f64::from_bits(window as u64));
        self.add_cold(group, window, hi);
        self.add_cold(group, window, lo);
        window
    }

    fn add_cold(&mut self, group: usize, window: usize, x: f64) {
        if !x.is_finite() {
            self.rare.entry(group).or_default().add(x, 1);
            return;
        }
        if !self.windows[window].add_value(x) {
            self.rare.entry(group).or_default().add_to_partials(x);
        }
    }

    /// Merges another sum's window into a group, which becomes cold.
    fn merge_window(&mut self, group: usize, other: &Fixed) {
        let window = self.make_cold(group);
        if !self.windows[window].absorb(other) {
            other.pieces(|piece| self.add_cold(group, window, piece));
        }
    }

    /// The whole exact sum of one group, rounded once.
    pub(super) fn sum(&self, group: usize) -> Option<f64> {
        let GroupSum { hi, lo, count } = self.groups[group];
        if count == 0 {
            return None;
        }
        let sum = match self.groups[group].cold() {
            None => hi + lo,
            Some(window) => ExactSum {
                fixed: self.windows[window],
                count,
                ..self.rare.get(&group).cloned().unwrap_or_default()
            }
            .sum()?,
        };
        Some(if self.avg { sum / count as f64 } else { sum })
    }

    /// A group's exact sum as [`ExactSum::pieces`] gives it.
    pub(super) fn pieces(&self, group: usize) -> Option<Pieces> {
        let GroupSum { hi, lo, count } = self.groups[group];
        match self.groups[group].cold() {
            None => Some([hi, lo].into_iter().collect()),
            Some(window) => ExactSum {
                fixed: self.windows[window],
                count,
                ..self.rare.get(&group).cloned().unwrap_or_default()
            }
            .pieces(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.groups.len()
    }

    /// The values a group holds.
    pub(super) fn count(&self, group: usize) -> u64 {
        self.groups[group].count
    }

    /// Removes the groups `emit_to` asks for, renumbering the rest (and their windows).
    pub(super) fn take(&mut self, emit_to: EmitTo) -> SumGroups {
        let groups = emit_to.take_needed(&mut self.groups);
        let taken = groups.len();
        let windows = std::mem::take(&mut self.windows);
        let mut emitted = SumGroups {
            groups,
            windows: Vec::new(),
            rare: HashMap::new(),
            few: None,
            avg: self.avg,
        };
        for (group, sum) in std::mem::take(&mut self.rare) {
            if group < taken {
                emitted.rare.insert(group, sum);
            } else {
                self.rare.insert(group - taken, sum);
            }
        }
        for tier in [&mut emitted, &mut *self] {
            for sum in &mut tier.groups {
                if let Some(window) = sum.cold() {
                    sum.lo = f64::from_bits(tier.windows.len() as u64);
                    tier.windows.push(windows[window]);
                }
            }
        }
        emitted
    }

    fn parts(&self) -> impl Iterator<Item = Parts> {
        self.groups
            .iter()
            .enumerate()
            .map(|(group, sum)| match sum.cold() {
                None => Parts {
                    window: Fixed::EMPTY,
                    partials: [sum.hi, sum.lo].into_iter().filter(|&p| p != 0.0).collect(),
                    count: sum.count,
                    ..Parts::default()
                },
                Some(window) => {
                    let mut parts = self
                        .rare
                        .get(&group)
                        .map(ExactSum::parts)
                        .unwrap_or_default();
                    parts.window = self.windows[window];
                    parts.count = sum.count;
                    parts
                }
            })
    }
}

/// `x` (finite, not zero) as mantissa × 2^exponent, mantissa < 2^53.
#[inline]
fn decompose(x: f64) -> (u64, i32) {
    let bits = x.to_bits();
    let biased = (bits >> 52) & 0x7ff;
    (significand(bits, biased), biased.max(1) as i32 - 1075)
}

/// The significand of a finite double's `bits` of biased exponent `biased`: the fraction with
/// the hidden bit (none for a subnormal). The value is it × 2^(max(biased, 1) − 1075).
#[inline(always)]
fn significand(bits: u64, biased: u64) -> u64 {
    (bits & ((1 << 52) - 1)) | ((biased != 0) as u64) << 52
}

impl GroupsAccumulator for SumGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let values = values[0].as_primitive::<Float64Type>();
        let data = values.values();
        if values.null_count() == 0 && opt_filter.is_none() {
            if total_num_groups <= FEW_GROUPS {
                self.add_few(group_indices, data);
            } else {
                self.add_all(group_indices, data);
            }
        } else {
            for (row, (&group, &x)) in group_indices.iter().zip(data.iter()).enumerate() {
                if values.is_valid(row)
                    && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row))
                {
                    self.groups[group].count += 1;
                    self.add(group, x);
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
        self.resize(total_num_groups);
        let states = States::new(values)?;
        for (row, &group) in group_indices.iter().enumerate() {
            fetch_group(&self.groups, &self.windows, group_indices, row);
            if let Some(window) = states.window(row) {
                self.merge_window(group, &window);
            }
            for &x in states.partials(row) {
                self.add(group, x);
            }
            self.groups[group].count += states.counts[row];
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = self.take(emit_to);
        let values: Float64Array = (0..taken.groups.len()).map(|g| taken.sum(g)).collect();
        Ok(Arc::new(values))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = self.take(emit_to);
        Ok(state_arrays(taken.parts()))
    }

    /// Each input row as a one-value state (DataFusion skips partial aggregation this way
    /// when groups barely repeat): no window, the value as the one partial (a zero, a NaN or an
    /// infinity included: merging sorts them out), a count of one. Without NULLs or a filter
    /// the partials are the input column itself.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = values[0].as_primitive::<Float64Type>();
        let rows = values.len();
        let no_windows: ArrayRef = Arc::new(BinaryArray::new(
            OffsetBuffer::new(ScalarBuffer::from(vec![0i32; rows + 1])),
            Vec::<u8>::new().into(),
            None,
        ));
        if values.null_count() == 0 && opt_filter.is_none() {
            let offsets: Vec<i32> = (0..=rows as i32).collect();
            return Ok(vec![
                no_windows,
                partials_list(offsets, values.clone()),
                Arc::new(UInt64Array::from(vec![1u64; rows])),
            ]);
        }
        let (mut offsets, mut kept_values, mut counts) = (
            vec![0i32],
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
        );
        for row in 0..rows {
            let kept =
                values.is_valid(row) && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            if kept {
                kept_values.push(values.value(row));
            }
            offsets.push(kept_values.len() as i32);
            counts.push(u64::from(kept));
        }
        Ok(vec![
            no_windows,
            partials_list(offsets, Float64Array::from(kept_values)),
            Arc::new(UInt64Array::from(counts)),
        ])
    }

    /// Called after every batch, so O(1): the columns, and the side table at a rough size.
    fn size(&self) -> usize {
        self.groups.capacity() * size_of::<GroupSum>()
            + self.windows.capacity() * size_of::<Fixed>()
            + self.rare.capacity() * (size_of::<usize>() + size_of::<ExactSum>() + 16)
            + self.few.as_ref().map_or(0, |_| size_of::<FewSlots>())
    }
}

/// One exact sum's parts as they travel from partial to final aggregation.
#[derive(Default)]
pub(super) struct Parts {
    window: Fixed,
    partials: SmallVec<[f64; 2]>,
    nan: u64,
    pos_inf: u64,
    neg_inf: u64,
    count: u64,
}

impl ExactSum {
    pub(super) fn parts(&self) -> Parts {
        Parts {
            window: self.fixed,
            partials: self.partials.iter().copied().collect(),
            nan: self.nan,
            pos_inf: self.pos_inf,
            neg_inf: self.neg_inf,
            count: self.count,
        }
    }

    pub(super) fn merge_state_row(&mut self, states: &States, row: usize) {
        if let Some(window) = states.window(row) {
            self.merge_window(&window);
        }
        for &x in states.partials(row) {
            // Finite partials are added; a NaN or an infinity marks its kind as present.
            self.add(x, 1);
        }
        self.count += states.counts[row];
    }
}

/// The intermediate state of exact sums as Arrow arrays: the window (its limbs and bottom,
/// little-endian; empty for a window not placed, as in rows passed through one by one), the
/// partials outside it followed by one NaN, +inf or -inf for each kind of non-finite value seen
/// (the result depends only on which kinds were seen: retractions never cross a state), and the
/// count.
pub(super) fn state_arrays(sums: impl Iterator<Item = Parts>) -> Vec<ArrayRef> {
    let (mut windows, mut window_offsets) = (Vec::new(), vec![0i32]);
    let (mut offsets, mut partials, mut count) = (vec![0i32], Vec::new(), Vec::new());
    for sum in sums {
        if sum.window.bottom != UNSET {
            for limb in sum.window.limbs() {
                windows.extend_from_slice(&limb.to_le_bytes());
            }
            windows.extend_from_slice(&sum.window.bottom.to_le_bytes());
        }
        window_offsets.push(windows.len() as i32);
        partials.extend_from_slice(&sum.partials);
        for (seen, marker) in [
            (sum.nan, f64::NAN),
            (sum.pos_inf, f64::INFINITY),
            (sum.neg_inf, f64::NEG_INFINITY),
        ] {
            if seen > 0 {
                partials.push(marker);
            }
        }
        offsets.push(partials.len() as i32);
        count.push(sum.count);
    }
    vec![
        Arc::new(BinaryArray::new(
            OffsetBuffer::new(ScalarBuffer::from(window_offsets)),
            windows.into(),
            None,
        )),
        partials_list(offsets, Float64Array::from(partials)),
        Arc::new(UInt64Array::from(count)),
    ]
}

/// The fields of [`state_arrays`] for the aggregate `name`, each named with `prefix`.
pub(super) fn state_fields(name: &str, prefix: &str) -> Vec<FieldRef> {
    let named = |part: &str| format_state_name(name, &format!("{prefix}{part}"));
    vec![
        Field::new(named("window"), DataType::Binary, true).into(),
        Field::new_list(
            named("partials"),
            Field::new_list_field(DataType::Float64, true),
            true,
        )
        .into(),
        Field::new(named("count"), DataType::UInt64, true).into(),
    ]
}

fn partials_list(offsets: impl Into<ScalarBuffer<i32>>, values: Float64Array) -> ArrayRef {
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float64, true)),
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        None,
    ))
}

/// Typed views of [`state_arrays`] arriving to be merged: plain slices, since the final
/// aggregation reads one state per input row when partial aggregation is skipped.
pub(super) struct States<'a> {
    window_offsets: &'a [i32],
    window_bytes: &'a [u8],
    partial_offsets: &'a [i32],
    partials: &'a [f64],
    counts: &'a [u64],
}

impl<'a> States<'a> {
    pub(super) fn new(arrays: &'a [ArrayRef]) -> Result<Self> {
        let [windows, partials, counts] = arrays else {
            return internal_err!("exact sum state has {} columns, not 3", arrays.len());
        };
        let (windows, partials) = (windows.as_binary::<i32>(), partials.as_list::<i32>());
        Ok(States {
            window_offsets: windows.value_offsets(),
            window_bytes: windows.value_data(),
            partial_offsets: partials.value_offsets(),
            partials: partials.values().as_primitive::<Float64Type>().values(),
            counts: counts.as_primitive::<UInt64Type>().values(),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.counts.len()
    }

    /// A row's window, if it has one.
    #[inline]
    fn window(&self, row: usize) -> Option<Fixed> {
        let (start, end) = (self.window_offsets[row], self.window_offsets[row + 1]);
        if start == end {
            return None;
        }
        let bytes = &self.window_bytes[start as usize..end as usize];
        let mut limbs = [0u64; LIMBS];
        for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(8)) {
            *limb = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        }
        let bottom = i32::from_le_bytes(bytes[LIMBS * 8..].try_into().expect("4 bytes"));
        Some(Fixed::from_limbs(&limbs, bottom))
    }

    /// The partials of a row, with a NaN or infinity for each kind of non-finite value seen.
    #[inline]
    fn partials(&self, row: usize) -> &'a [f64] {
        let (start, end) = (self.partial_offsets[row], self.partial_offsets[row + 1]);
        &self.partials[start as usize..end as usize]
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
    fn the_window_rounds_like_the_partials() {
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..2000 {
            let spread = [3u64, 40, 90][round % 3];
            let base = (next() % 2000) as i32 - 1074;
            let mut sum = ExactSum::default();
            for _ in 0..1 + round % 50 {
                let exponent = (base + (next() % spread) as i32).clamp(-1074, 970);
                let mantissa = 1.0 + (next() % (1 << 52)) as f64 / (1u64 << 52) as f64;
                let x = mantissa * 2f64.powi(exponent);
                sum.add_value(if next() % 3 == 0 { -x } else { x });
            }
            if sum.partials.is_empty() {
                assert_eq!(
                    sum.fixed.round().to_bits(),
                    round_partials(&sum.whole().partials).to_bits(),
                    "round {round}: {:?}",
                    sum.fixed
                );
            }
        }
    }

    /// A window near the top of the double range plus a partial far below it: the exact sum is
    /// above the largest double, so it is infinity (it was the partials alone, 8.8e297).
    #[test]
    fn a_window_that_overflows_beside_partials_is_infinite() {
        for order in [
            [7.082418926260072e300, f64::MAX, -1e-271],
            [f64::MAX, 7.082418926260072e300, 1.0],
        ] {
            let mut sum = ExactSum::default();
            order.iter().for_each(|&x| sum.add_value(x));
            assert_eq!(sum.sum(), Some(f64::INFINITY), "{order:?}");
            let mut negated = ExactSum::default();
            order.iter().for_each(|&x| negated.add_value(-x));
            assert_eq!(negated.sum(), Some(f64::NEG_INFINITY), "{order:?}");
        }
    }

    /// The hash aggregate's accumulator against one exact sum per group: values over many
    /// magnitudes (some outside any window), NaN and infinities, three partitions merged
    /// through their state, rows passed through `convert_to_state`, groups emitted in two parts.
    /// With 40 groups every group turns cold; with 5,000 (four values each) most stay hot, and
    /// some turn cold in a merge.
    #[test]
    fn group_sums_agree_with_one_exact_sum_per_group() {
        // Three groups sum by exponent; 40 and 5,000 stay mostly hot.
        for groups in [3, 40, 5_000] {
            group_sums_agree(groups);
        }
    }

    fn group_sums_agree(groups: usize) {
        let mut state = 0x0bad_5eed_dead_beefu64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let rows: Vec<(usize, f64)> = (0..20_000)
            .map(|_| {
                let group = (next() % groups as u64) as usize;
                let x = match next() % 500 {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    2 => 0.0,
                    3 => -0.0,
                    // Subnormal, and far above the exponents summed by exponent.
                    4 => f64::from_bits(next() % (1 << 52)),
                    5 => (next() % 1_000) as f64 * 2f64.powi(900),
                    _ => {
                        let scale = 2f64.powi((next() % 300) as i32 - 150);
                        let x = (next() % 1_000_000) as f64 / 7.0 * scale;
                        if next() % 2 == 0 { x } else { -x }
                    }
                };
                (group, x)
            })
            .collect();
        for avg in [false, true] {
            let mut expected = vec![ExactSum::default(); groups];
            rows.iter().for_each(|&(g, x)| expected[g].add_value(x));
            let new = || SumGroups::new(avg);
            let mut last = new();
            let identity: Vec<usize> = (0..groups).collect();
            for part in rows.chunks(7_000) {
                let mut partial = new();
                for batch in part.chunks(1_000) {
                    let values: ArrayRef =
                        Arc::new(Float64Array::from_iter_values(batch.iter().map(|r| r.1)));
                    let indices: Vec<usize> = batch.iter().map(|r| r.0).collect();
                    if indices[0].is_multiple_of(5) {
                        let states = partial.convert_to_state(&[values], None).unwrap();
                        last.merge_batch(&states, &indices, groups).unwrap();
                    } else {
                        partial
                            .update_batch(&[values], &indices, None, groups)
                            .unwrap();
                    }
                }
                partial.resize(groups);
                let states = partial.state(EmitTo::All).unwrap();
                last.merge_batch(&states, &identity, groups).unwrap();
            }
            let first = last.evaluate(EmitTo::First(groups.min(13))).unwrap();
            let rest = last.evaluate(EmitTo::All).unwrap();
            let got: Vec<Option<f64>> = first
                .as_primitive::<Float64Type>()
                .iter()
                .chain(rest.as_primitive::<Float64Type>().iter())
                .collect();
            let want: Vec<Option<f64>> = expected
                .iter()
                .map(|s| if avg { s.avg() } else { s.sum() })
                .collect();
            assert_eq!(got.len(), groups);
            for (g, (got, want)) in got.iter().zip(&want).enumerate() {
                assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "group {g}");
            }
        }
    }

    /// Rows passed through one by one keep NULLs and filtered rows out of the sum and count.
    #[test]
    fn rows_passed_through_skip_nulls_and_filtered_rows() {
        let values: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(0.1),
            None,
            Some(f64::INFINITY),
            Some(0.2),
            Some(1e300),
            Some(-0.0),
        ]));
        let filter = BooleanArray::from(vec![true, true, false, true, true, true]);
        let groups = [0usize, 0, 0, 1, 1, 1];
        for (filter, expected) in [
            (None, [Some(0.1 + f64::INFINITY), Some(1e300 + 0.2)]),
            (Some(&filter), [Some(0.1), Some(1e300 + 0.2)]),
        ] {
            let passed = SumGroups::new(false);
            let states = passed
                .convert_to_state(std::slice::from_ref(&values), filter)
                .unwrap();
            let mut merged = SumGroups::new(true);
            merged.merge_batch(&states, &groups, 2).unwrap();
            let sums = merged.evaluate(EmitTo::All).unwrap();
            let sums: Vec<Option<f64>> = sums.as_primitive::<Float64Type>().iter().collect();
            let counts = if filter.is_some() {
                [1.0, 3.0]
            } else {
                [2.0, 3.0]
            };
            let expected: Vec<Option<f64>> = expected
                .iter()
                .zip(counts)
                .map(|(sum, count)| sum.map(|s| s / count))
                .collect();
            assert_eq!(sums, expected);
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
