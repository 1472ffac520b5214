//! Float `VAR` and `STDDEV` whose answer does not depend on the order the values arrive in.
//!
//! DataFusion's variance (Welford's running mean and sum of squared deviations, merged across
//! partitions) rounds at every step, so the same rows in another file layout give a standard
//! deviation that differs in the last bits, and a nightly check flaps. Here each group keeps the
//! exact sum of its values and the exact sum of their squares (each square as the two doubles
//! whose sum it is exactly, both summed by [`ExactSum`]'s machinery), and the variance is computed
//! once at the end from those exact sums: the same multiset of values gives the same bits
//! whatever the layout, partitioning, batch size or thread timing. The last step takes the
//! squared deviations around the mean, exactly, so a mean far larger than the spread does not
//! cancel the answer away (see [`finish`]).
//!
//! `var`/`var_samp`/`var_sample`, `var_pop`/`var_population`, `stddev`/`stddev_samp` and
//! `stddev_pop` over Float64 input (after DataFusion's coercion: integers and decimals too);
//! NULLs, the one-value and no-value cases as DataFusion's. `DISTINCT` stays DataFusion's.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions_aggregate::stddev::{Stddev, StddevPop};
use datafusion::functions_aggregate::variance::{VariancePopulation, VarianceSample};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    ReversedUDAF, SetMonotonicity, Signature,
};
use datafusion::prelude::SessionContext;

use super::exact::{ExactSum, Pieces, States, SumGroups, fsum, state_arrays, state_fields};

/// Replaces the variance and standard deviation aggregates in the session by exact ones.
pub fn register(ctx: &SessionContext) {
    for builtin in [
        Builtin::Sample(VarianceSample::new()),
        Builtin::Population(VariancePopulation::new()),
        Builtin::StddevSample(Stddev::new()),
        Builtin::StddevPopulation(StddevPop::new()),
    ] {
        ctx.register_udaf(AggregateUDF::new_from_impl(ExactVariance { builtin }));
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum Builtin {
    Sample(VarianceSample),
    Population(VariancePopulation),
    StddevSample(Stddev),
    StddevPopulation(StddevPop),
}

/// What the final step computes from the exact sums.
#[derive(Debug, Clone, Copy)]
struct Statistic {
    /// Divide by n − 1 (sample) rather than n (population).
    sample: bool,
    square_root: bool,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ExactVariance {
    builtin: Builtin,
}

impl ExactVariance {
    fn inner(&self) -> &dyn AggregateUDFImpl {
        match &self.builtin {
            Builtin::Sample(f) => f,
            Builtin::Population(f) => f,
            Builtin::StddevSample(f) => f,
            Builtin::StddevPopulation(f) => f,
        }
    }

    fn float_groups(&self) -> Box<dyn GroupsAccumulator> {
        Box::new(MomentsGroups {
            sums: [false; 3].map(SumGroups::new),
            statistic: self.statistic(),
        })
    }

    fn statistic(&self) -> Statistic {
        let (sample, square_root) = match self.builtin {
            Builtin::Sample(_) => (true, false),
            Builtin::Population(_) => (false, false),
            Builtin::StddevSample(_) => (true, true),
            Builtin::StddevPopulation(_) => (false, true),
        };
        Statistic {
            sample,
            square_root,
        }
    }
}

/// The three exact sums' state fields: of the values, of their squares rounded, and of what
/// the rounding left of each square. (One sum of both doubles of each square would be one
/// sum less, but its terms would span the residues' magnitudes below the squares', and fall
/// out of the fast fixed-point window more often: 1.5× the time on `make bench`'s floats.)
const SUMS: [&str; 3] = ["values_", "squares_", "square_residues_"];

impl AggregateUDFImpl for ExactVariance {
    same_function_as_inner!();

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if !super::is_float(args.expr_fields, args.return_type()) || args.is_distinct {
            return self.inner().accumulator(args);
        }
        Ok(Box::new(MomentsAccumulator {
            sums: Default::default(),
            statistic: self.statistic(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if !super::is_float(args.input_fields, args.return_type()) || args.is_distinct {
            return self.inner().state_fields(args);
        }
        Ok(SUMS
            .iter()
            .flat_map(|prefix| state_fields(args.name, prefix))
            .collect())
    }

    float_path_else_inner!();
}

/// A value's square as `hi + lo` exactly.
#[inline]
fn square(x: f64) -> (f64, f64) {
    two_product(x, x)
}

/// The statistic from the count and the exact sums of the values, of their squares rounded and
/// of the squares' residues (None for a sum that met a NaN or an infinity).
///
/// The sum of squared deviations is `Σx² − (Σx)²/n`, which cancels to nothing when the mean is
/// far larger than the spread (timestamps, say). So it is taken around `c`, the mean rounded
/// to a double: `T = Σ(x − c)² = Σx² − 2c·Σx + n·c²` is summed exactly (every product split
/// into two doubles), then `m2 = T − (Σx − n·c)²/n`, where the second term is at most about
/// `n` squared half-ulps of the mean. Everything is a function of the three exact sums, so of
/// the multiset of values.
fn finish(statistic: Statistic, count: u64, sums: [Option<Pieces>; 3]) -> Option<f64> {
    // As DataFusion: no value is NULL; one value has no sample variance, and a population
    // variance of 0 (whatever the value).
    match count {
        0 => return None,
        1 if statistic.sample => return None,
        1 => return Some(0.0),
        _ => {}
    }
    let n = count as f64;
    let variance = match sums {
        [Some(total), Some(squares), Some(residues)] => {
            // The exact total as hi + lo, both rounded: a function of its value alone.
            let hi = fsum(total.iter().copied());
            let lo = fsum(total.iter().copied().chain([-hi]));
            let mean = dd_div((hi, lo), n).0;
            let (mean_squared, residue) = two_product(mean, mean);
            let around_mean = squares
                .into_iter()
                .chain(residues)
                .chain(
                    total
                        .iter()
                        .flat_map(|&piece| <[f64; 2]>::from(two_product(piece, -2.0 * mean))),
                )
                .chain(
                    [mean_squared, residue]
                        .into_iter()
                        .flat_map(|part| <[f64; 2]>::from(two_product(part, n))),
                );
            let t = fsum(around_mean);
            let d = fsum(
                total
                    .into_iter()
                    .chain(<[f64; 2]>::from(two_product(mean, -n))),
            );
            let m2 = t - d * d / n;
            let divisor = if statistic.sample { n - 1.0 } else { n };
            // Never negative exactly; the one subtraction may leave a hair below zero.
            (m2 / divisor).max(0.0)
        }
        // A NaN or an infinity among the values (or a square beyond the double range):
        // NaN, as Welford's recurrence gives for them.
        _ => f64::NAN,
    };
    Some(if statistic.square_root {
        variance.sqrt()
    } else {
        variance
    })
}

/// `a × b` as `hi + lo` exactly (within the double range, above the subnormals).
#[inline]
fn two_product(a: f64, b: f64) -> (f64, f64) {
    let hi = a * b;
    (hi, a.mul_add(b, -hi))
}

/// `(hi + lo) / divisor` in double-double arithmetic (Dekker): the quotient rounded to a double
/// as its first term, to within a hair of correct rounding.
fn dd_div((hi, lo): (f64, f64), divisor: f64) -> (f64, f64) {
    let first = hi / divisor;
    let (product, product_error) = two_product(first, divisor);
    let remainder = ((hi - product) - product_error) + lo;
    let second = remainder / divisor;
    let sum = first + second;
    (sum, second - (sum - first))
}

/// One group's sums (an aggregate without GROUP BY, or a window frame).
#[derive(Debug)]
struct MomentsAccumulator {
    sums: [ExactSum; 3],
    statistic: Statistic,
}

impl MomentsAccumulator {
    fn each_value(&mut self, values: &ArrayRef, retract: bool) {
        let [total, squares, residues] = &mut self.sums;
        for x in values.as_primitive::<Float64Type>().iter().flatten() {
            let (hi, lo) = square(x);
            if retract {
                total.retract_value(x);
                squares.retract_value(hi);
                residues.retract_value(lo);
            } else {
                total.add_value(x);
                squares.add_value(hi);
                residues.add_value(lo);
            }
        }
    }
}

impl Accumulator for MomentsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.each_value(&values[0], false);
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.each_value(&values[0], true);
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for (sum, states) in self.sums.iter_mut().zip(states.chunks(3)) {
            let states = States::new(states)?;
            for row in 0..states.len() {
                sum.merge_state_row(&states, row);
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.sums
            .iter()
            .flat_map(|sum| state_arrays(std::iter::once(sum.parts())))
            .map(|array| ScalarValue::try_from_array(&array, 0))
            .collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let count = self.sums[0].count();
        let sums = self.sums.each_ref().map(ExactSum::pieces);
        Ok(ScalarValue::Float64(finish(self.statistic, count, sums)))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.sums.iter().map(ExactSum::heap_size).sum::<usize>()
    }
}

/// The sums per group of a hash aggregate: three of [`SumGroups`], fed the values, their
/// squares rounded and the squares' residues.
#[derive(Debug)]
struct MomentsGroups {
    sums: [SumGroups; 3],
    statistic: Statistic,
}

/// The values, their squares rounded and the squares' residues, NULL where the value is.
fn with_squares(values: &ArrayRef) -> [ArrayRef; 3] {
    let floats = values.as_primitive::<Float64Type>();
    let (squares, residues): (Vec<f64>, Vec<f64>) =
        floats.values().iter().map(|&x| square(x)).unzip();
    let nulls = floats.nulls().cloned();
    [
        Arc::clone(values),
        Arc::new(Float64Array::new(squares.into(), nulls.clone())),
        Arc::new(Float64Array::new(residues.into(), nulls)),
    ]
}

impl GroupsAccumulator for MomentsGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        for (sum, column) in self.sums.iter_mut().zip(with_squares(&values[0])) {
            sum.update_batch(&[column], group_indices, opt_filter, total_num_groups)?;
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        for (sum, states) in self.sums.iter_mut().zip(values.chunks(3)) {
            sum.merge_batch(states, group_indices, total_num_groups)?;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = self.sums.each_mut().map(|sum| sum.take(emit_to));
        let values: Float64Array = (0..taken[0].len())
            .map(|group| {
                let (count, total) = taken[0].pieces(group);
                let (squares, residues) = (taken[1].pieces(group).1, taken[2].pieces(group).1);
                finish(self.statistic, count, [total, squares, residues])
            })
            .collect();
        Ok(Arc::new(values))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let mut arrays = Vec::with_capacity(9);
        for sum in &mut self.sums {
            arrays.extend(sum.state(emit_to)?);
        }
        Ok(arrays)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut arrays = Vec::with_capacity(9);
        for (sum, column) in self.sums.iter().zip(with_squares(&values[0])) {
            arrays.extend(sum.convert_to_state(&[column], opt_filter)?);
        }
        Ok(arrays)
    }

    fn size(&self) -> usize {
        self.sums.iter().map(|sum| sum.size()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: Statistic = Statistic {
        sample: true,
        square_root: false,
    };
    const POPULATION: Statistic = Statistic {
        sample: false,
        square_root: false,
    };

    /// The statistic of `values` through one accumulator fed in batches of `batch` values.
    fn accumulated(statistic: Statistic, values: &[Option<f64>], batch: usize) -> Option<f64> {
        let mut accumulator = MomentsAccumulator {
            sums: Default::default(),
            statistic,
        };
        for chunk in values.chunks(batch.max(1)) {
            let array: ArrayRef = Arc::new(Float64Array::from(chunk.to_vec()));
            accumulator.update_batch(&[array]).unwrap();
        }
        match accumulator.evaluate().unwrap() {
            ScalarValue::Float64(v) => v,
            other => panic!("{other:?}"),
        }
    }

    /// The statistic of every group through the grouped accumulator, its rows split across
    /// `parts` partial aggregations whose states are merged in reverse order.
    fn grouped(
        statistic: Statistic,
        rows: &[(usize, f64)],
        groups: usize,
        parts: usize,
    ) -> Vec<Option<f64>> {
        let mut states = Vec::new();
        for part in rows.chunks(rows.len().div_ceil(parts).max(1)) {
            let mut partial = MomentsGroups {
                sums: [false; 3].map(SumGroups::new),
                statistic,
            };
            let indices: Vec<usize> = part.iter().map(|r| r.0).collect();
            let values: ArrayRef =
                Arc::new(Float64Array::from_iter_values(part.iter().map(|r| r.1)));
            partial
                .update_batch(&[values], &indices, None, groups)
                .unwrap();
            states.push(partial.state(EmitTo::All).unwrap());
        }
        let mut last = MomentsGroups {
            sums: [false; 3].map(SumGroups::new),
            statistic,
        };
        let all: Vec<usize> = (0..groups).collect();
        for state in states.iter().rev() {
            last.merge_batch(state, &all, groups).unwrap();
        }
        let result = last.evaluate(EmitTo::All).unwrap();
        result.as_primitive::<Float64Type>().iter().collect()
    }

    /// Values k / 1024 for integers k: the exact variance is a ratio of integers (i128), so
    /// the reference is exact but for the one final division.
    fn reference(sample: bool, ks: &[i64]) -> f64 {
        let n = ks.len() as i128;
        let sum: i128 = ks.iter().map(|&k| k as i128).sum();
        let squares: i128 = ks.iter().map(|&k| (k as i128) * (k as i128)).sum();
        let numerator = n * squares - sum * sum; // in units of 2^-20
        let denominator = n * if sample { n - 1 } else { n };
        numerator as f64 / denominator as f64 / 1_048_576.0
    }

    /// A deterministic shuffle (an LCG), so the test needs no random source.
    fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
        let mut items = items.to_vec();
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        for i in (1..items.len()).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            items.swap(i, (state >> 33) as usize % (i + 1));
        }
        items
    }

    #[test]
    fn any_order_and_any_split_gives_the_same_bits() {
        // Magnitudes over 12 orders and both signs, and a mean far above the spread.
        let mut values: Vec<f64> = (0..5000)
            .map(|i| {
                let x = ((i * 2654435761u64) % 1000003) as f64 / 7.0;
                x * 10f64.powi((i % 13) as i32 - 6) * if i % 3 == 0 { -1.0 } else { 1.0 }
            })
            .collect();
        values.extend((0..2000).map(|i| 1e9 + (i % 17) as f64 * 0.25));
        let rows: Vec<(usize, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, &x)| (i % 7, x))
            .collect();
        for statistic in [SAMPLE, POPULATION] {
            let whole: Vec<Option<f64>> = values.iter().map(|&x| Some(x)).collect();
            let expected = accumulated(statistic, &whole, whole.len());
            let expected_groups = grouped(statistic, &rows, 7, 1);
            for seed in 0..8 {
                let order = shuffled(&whole, seed);
                assert_eq!(
                    accumulated(statistic, &order, 1 + seed as usize * 37),
                    expected
                );
                let rows = shuffled(&rows, seed);
                assert_eq!(
                    grouped(statistic, &rows, 7, 1 + seed as usize % 5),
                    expected_groups
                );
            }
            // One group of 7 holds every value: the grouped path agrees with the single one.
            let one: Vec<(usize, f64)> = values.iter().map(|&x| (0, x)).collect();
            assert_eq!(grouped(statistic, &one, 1, 3)[0], expected);
        }
    }

    #[test]
    fn the_variance_is_the_exact_one_rounded() {
        let cases: Vec<Vec<i64>> = vec![
            vec![1, 2, 3, 4],
            (0..1000)
                .map(|i| (i * 7919) % 1_000_003 - 500_000)
                .collect(),
            // A mean 2^40 times the spread: Welford-style rounding would keep only its top bits.
            (0..999).map(|i| (1i64 << 50) + i % 3).collect(),
            (0..300)
                .map(|i| {
                    if i % 2 == 0 {
                        -(1i64 << 45)
                    } else {
                        1i64 << 45
                    }
                })
                .collect(),
        ];
        for ks in cases {
            let values: Vec<Option<f64>> = ks.iter().map(|&k| Some(k as f64 / 1024.0)).collect();
            for (statistic, sample) in [(SAMPLE, true), (POPULATION, false)] {
                let want = reference(sample, &ks);
                let got = accumulated(statistic, &values, 64).unwrap();
                assert!(
                    (got - want).abs() <= want.abs() * 4.0 * f64::EPSILON,
                    "{} values: got {got}, exact {want}",
                    ks.len()
                );
            }
        }
    }

    #[test]
    fn nulls_counts_and_non_finite_values_as_datafusion() {
        let stddev = Statistic {
            sample: true,
            square_root: true,
        };
        let none: [Option<f64>; 0] = [];
        assert_eq!(accumulated(SAMPLE, &none, 1), None);
        assert_eq!(accumulated(SAMPLE, &[None, None], 1), None);
        assert_eq!(accumulated(SAMPLE, &[Some(3.0), None], 1), None);
        assert_eq!(accumulated(POPULATION, &[Some(3.0), None], 1), Some(0.0));
        assert_eq!(
            accumulated(POPULATION, &[Some(1.0), None, Some(3.0)], 2),
            Some(1.0)
        );
        assert_eq!(
            accumulated(stddev, &[Some(1.0), Some(3.0)], 1),
            Some(2f64.sqrt())
        );
        for odd in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let got = accumulated(SAMPLE, &[Some(1.0), Some(odd), Some(2.0)], 2);
            assert!(got.unwrap().is_nan(), "{odd}: {got:?}");
        }
        // Equal values: exactly zero, never a hair below (nor NaN for the square root).
        let same = vec![Some(0.1); 1001];
        assert_eq!(accumulated(stddev, &same, 10), Some(0.0));
    }

    #[test]
    fn nulls_and_filters_in_groups_and_in_rows_passed_through_as_states() {
        let values: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.5),
            None,
            Some(-2.25),
            Some(1e10),
            Some(3.0),
            Some(0.1),
        ]));
        let filter = BooleanArray::from(vec![
            Some(true),
            Some(true),
            Some(true),
            Some(false),
            None,
            Some(true),
        ]);
        let groups = [0, 0, 1, 1, 1, 0];
        // Kept: group 0 holds 1.5 and 0.1, group 1 holds -2.25 alone.
        let want = [
            accumulated(POPULATION, &[Some(1.5), Some(0.1)], 1),
            accumulated(POPULATION, &[Some(-2.25)], 1),
        ];
        let fresh = || MomentsGroups {
            sums: [false; 3].map(SumGroups::new),
            statistic: POPULATION,
        };
        let mut direct = fresh();
        direct
            .update_batch(std::slice::from_ref(&values), &groups, Some(&filter), 2)
            .unwrap();
        let mut passed = fresh();
        let states = fresh().convert_to_state(&[values], Some(&filter)).unwrap();
        passed.merge_batch(&states, &groups, 2).unwrap();
        for mut accumulator in [direct, passed] {
            let result = accumulator.evaluate(EmitTo::All).unwrap();
            let got: Vec<Option<f64>> = result.as_primitive::<Float64Type>().iter().collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_sliding_frame_takes_values_back_out_exactly() {
        let mut accumulator = MomentsAccumulator {
            sums: Default::default(),
            statistic: POPULATION,
        };
        let array = |v: Vec<f64>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
        accumulator
            .update_batch(&[array(vec![1e16, 1.0, 2.0, 3.0])])
            .unwrap();
        accumulator.retract_batch(&[array(vec![1e16])]).unwrap();
        let fresh = accumulated(POPULATION, &[Some(1.0), Some(2.0), Some(3.0)], 3);
        assert_eq!(accumulator.evaluate().unwrap(), ScalarValue::Float64(fresh));
    }
}
