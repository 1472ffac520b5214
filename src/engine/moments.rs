//! Float `VAR`, `STDDEV`, `COVAR`, `CORR` and `REGR_*` whose answer does not depend on the
//! order the values arrive in.
//!
//! DataFusion's variance and covariance (Welford-style running means and sums of deviations,
//! merged across partitions) round at every step, and its grouped correlation adds rounded
//! products one by one; so the same rows in another file layout give a statistic that differs
//! in the last bits, and a nightly check flaps. Here each group keeps exact sums of the values
//! and of their squares and products (each square or product as the two doubles whose sum it is
//! exactly), all summed by [`ExactSum`]'s machinery, and the statistic is computed once at the
//! end from them: the same multiset of values (or pairs) gives the same bits whatever the
//! layout, partitioning, batch size or thread timing. The last step takes the deviations around
//! the means, exactly, so a mean far larger than the spread does not cancel the answer away
//! (see [`centered`]).
//!
//! `var`/`var_samp`/`var_sample`, `var_pop`/`var_population`, `stddev`/`stddev_samp`,
//! `stddev_pop`, `covar_samp`/`covar`, `covar_pop`, `corr` and the `regr_*` statistics but
//! `regr_count` (an integer) over Float64 input (after DataFusion's coercion: integers and
//! decimals too). A pair counts only when both its values are non-NULL; the no-value, one-value
//! and NaN cases are DataFusion's (for `corr`, those of its grouped accumulator, where its two
//! differ; `regr_avgx`/`regr_avgy` over an infinity are AVG's, where DataFusion's running mean
//! depends on the order). `DISTINCT` stays DataFusion's.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array};
use datafusion::arrow::buffer::{NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions_aggregate::correlation::Correlation;
use datafusion::functions_aggregate::covariance::{CovariancePopulation, CovarianceSample};
use datafusion::functions_aggregate::regr::{Regr, RegrType};
use datafusion::functions_aggregate::stddev::{Stddev, StddevPop};
use datafusion::functions_aggregate::variance::{VariancePopulation, VarianceSample};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    ReversedUDAF, SetMonotonicity, Signature,
};
use datafusion::prelude::SessionContext;

use smallvec::SmallVec;

use super::exact::{ExactSum, Pieces, States, SumGroups, fsum, state_arrays, state_fields};

/// The most exact sums a statistic keeps (the correlation's and the regressions'): a group's
/// sums are gathered on the stack when it is evaluated.
const MOST_SUMS: usize = 8;

/// Replaces the variance, standard deviation, covariance, correlation and regression
/// aggregates in the session by exact ones.
pub fn register(ctx: &SessionContext) {
    for builtin in [
        Builtin::Sample(VarianceSample::new()),
        Builtin::Population(VariancePopulation::new()),
        Builtin::StddevSample(Stddev::new()),
        Builtin::StddevPopulation(StddevPop::new()),
        Builtin::CovarianceSample(CovarianceSample::new()),
        Builtin::CovariancePopulation(CovariancePopulation::new()),
        Builtin::Correlation(Correlation::new()),
    ]
    .into_iter()
    .chain(
        REGRESSIONS
            .map(|(kind, name, regression)| Builtin::Regression(Regr::new(kind, name), regression)),
    ) {
        ctx.register_udaf(AggregateUDF::new_from_impl(ExactMoments { builtin }));
    }
}

/// The regression statistics over floats, by their SQL names (`regr_count` is an integer).
const REGRESSIONS: [(RegrType, &str, Regression); 8] = [
    (RegrType::Slope, "regr_slope", Regression::Slope),
    (RegrType::Intercept, "regr_intercept", Regression::Intercept),
    (RegrType::R2, "regr_r2", Regression::R2),
    (RegrType::AvgX, "regr_avgx", Regression::AvgX),
    (RegrType::AvgY, "regr_avgy", Regression::AvgY),
    (RegrType::SXX, "regr_sxx", Regression::Sxx),
    (RegrType::SYY, "regr_syy", Regression::Syy),
    (RegrType::SXY, "regr_sxy", Regression::Sxy),
];

#[derive(Debug, PartialEq, Eq, Hash)]
enum Builtin {
    Sample(VarianceSample),
    Population(VariancePopulation),
    StddevSample(Stddev),
    StddevPopulation(StddevPop),
    CovarianceSample(CovarianceSample),
    CovariancePopulation(CovariancePopulation),
    Correlation(Correlation),
    Regression(Regr, Regression),
}

/// What the final step computes from the exact sums. `sample` divides by n − 1 rather than n.
#[derive(Debug, Clone, Copy)]
enum Statistic {
    Variance {
        sample: bool,
        square_root: bool,
    },
    Covariance {
        sample: bool,
    },
    Correlation,
    /// `regr_*(Y, X)`: the same sums as the correlation's, Y being the first argument.
    Regression(Regression),
}

/// [`RegrType`] but `Count`, as a `Copy` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Regression {
    Slope,
    Intercept,
    R2,
    AvgX,
    AvgY,
    Sxx,
    Syy,
    Sxy,
}

impl Statistic {
    /// The exact sums it keeps, by the prefix of their state fields, in the order [`terms`]
    /// gives their terms. Squares and products are summed apart from what their rounding left
    /// (one sum of both doubles would be a sum less, but its terms would span the residues'
    /// magnitudes below the squares', and fall out of the fast fixed-point window more often:
    /// 1.5× the time on `make bench`'s floats).
    fn sums(self) -> &'static [&'static str] {
        match self {
            Statistic::Variance { .. } => &["values_", "squares_", "square_residues_"],
            Statistic::Covariance { .. } => &["x_", "y_", "products_", "product_residues_"],
            Statistic::Correlation | Statistic::Regression(_) => &[
                "x_",
                "y_",
                "products_",
                "product_residues_",
                "x_squares_",
                "x_square_residues_",
                "y_squares_",
                "y_square_residues_",
            ],
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ExactMoments {
    builtin: Builtin,
}

impl ExactMoments {
    fn inner(&self) -> &dyn AggregateUDFImpl {
        match &self.builtin {
            Builtin::Sample(f) => f,
            Builtin::Population(f) => f,
            Builtin::StddevSample(f) => f,
            Builtin::StddevPopulation(f) => f,
            Builtin::CovarianceSample(f) => f,
            Builtin::CovariancePopulation(f) => f,
            Builtin::Correlation(f) => f,
            Builtin::Regression(f, _) => f,
        }
    }

    fn float_groups(&self) -> Box<dyn GroupsAccumulator> {
        Box::new(MomentsGroups::new(self.statistic()))
    }

    fn statistic(&self) -> Statistic {
        let variance = |sample, square_root| Statistic::Variance {
            sample,
            square_root,
        };
        match self.builtin {
            Builtin::Sample(_) => variance(true, false),
            Builtin::Population(_) => variance(false, false),
            Builtin::StddevSample(_) => variance(true, true),
            Builtin::StddevPopulation(_) => variance(false, true),
            Builtin::CovarianceSample(_) => Statistic::Covariance { sample: true },
            Builtin::CovariancePopulation(_) => Statistic::Covariance { sample: false },
            Builtin::Correlation(_) => Statistic::Correlation,
            Builtin::Regression(_, kind) => Statistic::Regression(kind),
        }
    }
}

impl AggregateUDFImpl for ExactMoments {
    same_function_as_inner!();

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if !super::is_float(args.expr_fields, args.return_type()) || args.is_distinct {
            return self.inner().accumulator(args);
        }
        Ok(Box::new(MomentsAccumulator::new(self.statistic())))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if !super::is_float(args.input_fields, args.return_type()) || args.is_distinct {
            return self.inner().state_fields(args);
        }
        Ok(self
            .statistic()
            .sums()
            .iter()
            .flat_map(|prefix| state_fields(args.name, prefix))
            .collect())
    }

    float_path_else_inner!();
}

/// `a × b` as `hi + lo` exactly (within the double range, above the subnormals).
#[inline]
fn two_product(a: f64, b: f64) -> (f64, f64) {
    let hi = a * b;
    (hi, a.mul_add(b, -hi))
}

/// The terms of each exact sum of a batch of input rows (one column, or the pair): the values,
/// then the squares or products as [`two_product`] splits them, NULL wherever a value of the
/// row is.
fn terms(statistic: Statistic, values: &[ArrayRef]) -> Vec<ArrayRef> {
    let x = values[0].as_primitive::<Float64Type>();
    let y = values.get(1).map_or(x, |y| y.as_primitive::<Float64Type>());
    let nulls = NullBuffer::union(x.nulls(), y.nulls());
    let column = |values: ScalarBuffer<f64>| -> ArrayRef {
        Arc::new(Float64Array::new(values, nulls.clone()))
    };
    let products = |a: &Float64Array, b: &Float64Array| {
        let (hi, lo): (Vec<f64>, Vec<f64>) = a
            .values()
            .iter()
            .zip(b.values().iter())
            .map(|(&a, &b)| two_product(a, b))
            .unzip();
        [column(hi.into()), column(lo.into())]
    };
    let mut terms = vec![column(x.values().clone())];
    match statistic {
        Statistic::Variance { .. } => terms.extend(products(x, x)),
        Statistic::Covariance { .. } => {
            terms.push(column(y.values().clone()));
            terms.extend(products(x, y));
        }
        Statistic::Correlation | Statistic::Regression(_) => {
            terms.push(column(y.values().clone()));
            terms.extend(products(x, y));
            terms.extend(products(x, x));
            terms.extend(products(y, y));
        }
    }
    terms
}

/// The statistic from the count of rows (pairs) and the exact sums in [`Statistic::sums`]'
/// order (None for a sum that met a NaN or an infinity). `rounded_sum(i)` is the i-th sum
/// rounded, as SUM gives it: DataFusion's correlation tells a NaN among the values from an
/// infinity by it.
fn finish(
    statistic: Statistic,
    count: u64,
    sums: &[Option<Pieces>],
    rounded_sum: impl Fn(usize) -> Option<f64>,
) -> Option<f64> {
    let n = count as f64;
    let divisor = |sample: bool| if sample { n - 1.0 } else { n };
    // With any sum not finite, a NaN or an infinity was among the values (or a square or a
    // product left the double range): NaN, as DataFusion's recurrences give for them.
    let finite: Option<SmallVec<[&Pieces; MOST_SUMS]>> = sums.iter().map(Option::as_ref).collect();
    match statistic {
        Statistic::Variance {
            sample,
            square_root,
        } => {
            // As DataFusion: one value has no sample variance, and a population variance of 0
            // (whatever the value).
            match count {
                0 => return None,
                1 if sample => return None,
                1 => return Some(0.0),
                _ => {}
            }
            let variance = match finite.as_deref() {
                // Never negative exactly; the one subtraction may leave a hair below zero.
                Some([x, squares, residues]) => {
                    (centered(n, x, x, [squares, residues]) / divisor(sample)).max(0.0)
                }
                _ => f64::NAN,
            };
            Some(if square_root {
                variance.sqrt()
            } else {
                variance
            })
        }
        Statistic::Covariance { sample } => {
            if count == 0 || (sample && count == 1) {
                return None;
            }
            Some(match finite.as_deref() {
                Some([x, y, products, residues]) => {
                    centered(n, x, y, [products, residues]) / divisor(sample)
                }
                _ => f64::NAN,
            })
        }
        Statistic::Correlation => {
            // As DataFusion's grouped correlation: NaN when both columns hold a NaN, NULL when
            // one does, or for fewer than two pairs, or when either column is constant.
            let [x_nan, y_nan] = [0, 1].map(|i| rounded_sum(i).is_some_and(f64::is_nan));
            if x_nan && y_nan {
                return Some(f64::NAN);
            }
            if count < 2 || x_nan || y_nan {
                return None;
            }
            let Some([x, y, xy, xy_residues, xx, xx_residues, yy, yy_residues]) = finite.as_deref()
            else {
                return Some(f64::NAN);
            };
            let covariance = centered(n, x, y, [xy, xy_residues]);
            let x_spread = centered(n, x, x, [xx, xx_residues]).max(0.0);
            let y_spread = centered(n, y, y, [yy, yy_residues]).max(0.0);
            correlation(covariance, x_spread, y_spread)
        }
        Statistic::Regression(kind) => {
            // As DataFusion: NULL without pairs, and the fit's statistics need two pairs.
            let fit = matches!(
                kind,
                Regression::Slope | Regression::Intercept | Regression::R2
            );
            if count == 0 || (fit && count == 1) {
                return None;
            }
            let Some([y, x, yx, yx_residues, yy, yy_residues, xx, xx_residues]) = finite.as_deref()
            else {
                // The averages are AVG's over an infinity; the rest NaN.
                let average = |i: usize| rounded_sum(i).map(|sum| sum / n);
                return match kind {
                    Regression::AvgY => average(0),
                    Regression::AvgX => average(1),
                    _ => Some(f64::NAN),
                };
            };
            let sxy = || centered(n, x, y, [yx, yx_residues]);
            let sxx = || centered(n, x, x, [xx, xx_residues]).max(0.0);
            let syy = || centered(n, y, y, [yy, yy_residues]).max(0.0);
            // A constant X has no fit (nor a constant Y an R²): NULL, as DataFusion.
            let slope = || Some(sxx()).filter(|&s| s != 0.0).map(|s| sxy() / s);
            match kind {
                Regression::Slope => slope(),
                Regression::Intercept => slope().map(|slope| mean(y, n) - slope * mean(x, n)),
                Regression::R2 => correlation(sxy(), sxx(), syy()).map(|r| r * r),
                Regression::AvgX => Some(mean(x, n)),
                Regression::AvgY => Some(mean(y, n)),
                Regression::Sxx => Some(sxx()),
                Regression::Syy => Some(syy()),
                Regression::Sxy => Some(sxy()),
            }
        }
    }
}

/// The correlation from the centered sums of products and squares: NULL when either column is
/// constant.
fn correlation(covariance: f64, x_spread: f64, y_spread: f64) -> Option<f64> {
    if x_spread == 0.0 || y_spread == 0.0 {
        return None;
    }
    // One square root where the product stays a normal double (two pairs on a line give 1
    // exactly); within [-1, 1] exactly, where rounding may step a hair outside.
    let product = x_spread * y_spread;
    let scale = match product.is_normal() {
        true => product.sqrt(),
        false => x_spread.sqrt() * y_spread.sqrt(),
    };
    Some((covariance / scale).clamp(-1.0, 1.0))
}

/// `Σ(x − x̄)(y − ȳ)` from the count and the exact sums of x, of y and of the products xy (as
/// the sums of the products rounded and of what the rounding left).
///
/// `Σxy − Σx·Σy/n` cancels to nothing when the means are far larger than the spread
/// (timestamps, say). So the deviations are taken around `cx` and `cy`, the means rounded to
/// doubles: `T = Σ(x − cx)(y − cy) = Σxy − cy·Σx − cx·Σy + n·cx·cy` is summed exactly (every
/// product split into two doubles), then the result is `T − (Σx − n·cx)(Σy − n·cy)/n`, whose
/// second term is at most about n times the product of the means' half-ulps. Everything is a
/// function of the exact sums, so of the multiset of values.
fn centered(n: f64, x: &Pieces, y: &Pieces, [products, residues]: [&Pieces; 2]) -> f64 {
    // A variance (x is y) takes its mean once, and `−2c·Σx` as one term: the same exact sums,
    // so the same result, for fewer of the group's sums at the end of a large GROUP BY.
    let same = std::ptr::eq(x, y);
    let cx = mean(x, n);
    let cy = if same { cx } else { mean(y, n) };
    let (x_factor, y_pieces): (f64, &[f64]) = if same { (-2.0 * cx, &[]) } else { (-cy, y) };
    let (means, means_residue) = two_product(cx, cy);
    let t = fsum(
        products
            .iter()
            .chain(residues.iter())
            .copied()
            .chain(times(x, x_factor))
            .chain(times(y_pieces, -cx))
            .chain(times(&[means, means_residue], n)),
    );
    let off_mean = |pieces: &Pieces, c: f64| {
        fsum(
            pieces
                .iter()
                .copied()
                .chain(<[f64; 2]>::from(two_product(c, -n))),
        )
    };
    let dx = off_mean(x, cx);
    let dy = if same { dx } else { off_mean(y, cy) };
    t - dx * dy / n
}

/// Each of `pieces` times `factor`, exactly, as two doubles.
fn times(pieces: &[f64], factor: f64) -> impl Iterator<Item = f64> + '_ {
    pieces
        .iter()
        .flat_map(move |&piece| <[f64; 2]>::from(two_product(piece, factor)))
}

/// The mean of an exact sum of `n` values, rounded to a double: a function of the sum's value
/// alone (not of its pieces).
fn mean(sum: &Pieces, n: f64) -> f64 {
    let hi = fsum(sum.iter().copied());
    let lo = fsum(sum.iter().copied().chain([-hi]));
    dd_div((hi, lo), n).0
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
    sums: Vec<ExactSum>,
    statistic: Statistic,
}

impl MomentsAccumulator {
    fn new(statistic: Statistic) -> Self {
        MomentsAccumulator {
            sums: vec![ExactSum::default(); statistic.sums().len()],
            statistic,
        }
    }

    fn each_row(&mut self, values: &[ArrayRef], retract: bool) {
        for (sum, terms) in self.sums.iter_mut().zip(terms(self.statistic, values)) {
            for term in terms.as_primitive::<Float64Type>().iter().flatten() {
                if retract {
                    sum.retract_value(term);
                } else {
                    sum.add_value(term);
                }
            }
        }
    }
}

impl Accumulator for MomentsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.each_row(values, false);
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.each_row(values, true);
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
        let pieces: SmallVec<[_; MOST_SUMS]> = self.sums.iter().map(ExactSum::pieces).collect();
        Ok(ScalarValue::Float64(finish(
            self.statistic,
            self.sums[0].count(),
            &pieces,
            |i| self.sums[i].sum(),
        )))
    }

    fn size(&self) -> usize {
        size_of_val(self)
            + self
                .sums
                .iter()
                .map(|sum| size_of_val(sum) + sum.heap_size())
                .sum::<usize>()
    }
}

/// The sums per group of a hash aggregate: one [`SumGroups`] per exact sum.
#[derive(Debug)]
struct MomentsGroups {
    sums: Vec<SumGroups>,
    statistic: Statistic,
}

impl MomentsGroups {
    fn new(statistic: Statistic) -> Self {
        MomentsGroups {
            sums: statistic
                .sums()
                .iter()
                .map(|_| SumGroups::new(false))
                .collect(),
            statistic,
        }
    }
}

impl GroupsAccumulator for MomentsGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        for (sum, column) in self.sums.iter_mut().zip(terms(self.statistic, values)) {
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
        let taken: Vec<SumGroups> = self.sums.iter_mut().map(|sum| sum.take(emit_to)).collect();
        let values: Float64Array = (0..taken[0].len())
            .map(|group| {
                let pieces: SmallVec<[_; MOST_SUMS]> =
                    taken.iter().map(|sum| sum.pieces(group)).collect();
                let count = taken[0].count(group);
                finish(self.statistic, count, &pieces, |i| taken[i].sum(group))
            })
            .collect();
        Ok(Arc::new(values))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let mut arrays = Vec::with_capacity(3 * self.sums.len());
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
        let mut arrays = Vec::with_capacity(3 * self.sums.len());
        for (sum, column) in self.sums.iter().zip(terms(self.statistic, values)) {
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

    const SAMPLE: Statistic = Statistic::Variance {
        sample: true,
        square_root: false,
    };
    const POPULATION: Statistic = Statistic::Variance {
        sample: false,
        square_root: false,
    };

    /// The input columns of `statistic` (one, or the pair) from rows of pairs.
    fn columns(statistic: Statistic, rows: &[[Option<f64>; 2]]) -> Vec<ArrayRef> {
        let arguments = match statistic {
            Statistic::Variance { .. } => 1,
            _ => 2,
        };
        (0..arguments)
            .map(|i| Arc::new(Float64Array::from_iter(rows.iter().map(|r| r[i]))) as ArrayRef)
            .collect()
    }

    /// The statistic of `values` through one accumulator fed in batches of `batch` values.
    fn accumulated(statistic: Statistic, values: &[Option<f64>], batch: usize) -> Option<f64> {
        let pairs: Vec<[Option<f64>; 2]> = values.iter().map(|&v| [v, v]).collect();
        accumulated_pairs(statistic, &pairs, batch)
    }

    /// The statistic of rows of pairs (the first value alone for a variance) through one
    /// accumulator fed in batches of `batch` rows.
    fn accumulated_pairs(
        statistic: Statistic,
        rows: &[[Option<f64>; 2]],
        batch: usize,
    ) -> Option<f64> {
        let mut accumulator = MomentsAccumulator::new(statistic);
        for chunk in rows.chunks(batch.max(1)) {
            accumulator
                .update_batch(&columns(statistic, chunk))
                .unwrap();
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
        let pairs: Vec<(usize, [f64; 2])> = rows.iter().map(|&(g, x)| (g, [x, x])).collect();
        grouped_pairs(statistic, &pairs, groups, parts)
    }

    /// [`grouped`] over rows of pairs.
    fn grouped_pairs(
        statistic: Statistic,
        rows: &[(usize, [f64; 2])],
        groups: usize,
        parts: usize,
    ) -> Vec<Option<f64>> {
        let mut states = Vec::new();
        for part in rows.chunks(rows.len().div_ceil(parts).max(1)) {
            let mut partial = MomentsGroups::new(statistic);
            let indices: Vec<usize> = part.iter().map(|r| r.0).collect();
            let values: Vec<[Option<f64>; 2]> = part.iter().map(|r| r.1.map(Some)).collect();
            partial
                .update_batch(&columns(statistic, &values), &indices, None, groups)
                .unwrap();
            states.push(partial.state(EmitTo::All).unwrap());
        }
        let mut last = MomentsGroups::new(statistic);
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
        let stddev = Statistic::Variance {
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
        let fresh = || MomentsGroups::new(POPULATION);
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
        let mut accumulator = MomentsAccumulator::new(POPULATION);
        let array = |v: Vec<f64>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
        accumulator
            .update_batch(&[array(vec![1e16, 1.0, 2.0, 3.0])])
            .unwrap();
        accumulator.retract_batch(&[array(vec![1e16])]).unwrap();
        let fresh = accumulated(POPULATION, &[Some(1.0), Some(2.0), Some(3.0)], 3);
        assert_eq!(accumulator.evaluate().unwrap(), ScalarValue::Float64(fresh));
    }

    const COVARIANCES: [Statistic; 3] = [
        Statistic::Covariance { sample: true },
        Statistic::Covariance { sample: false },
        Statistic::Correlation,
    ];

    /// Every statistic of pairs: the covariances, the correlation and the regressions.
    fn of_pairs() -> impl Iterator<Item = Statistic> {
        COVARIANCES
            .into_iter()
            .chain(REGRESSIONS.map(|(_, _, regression)| Statistic::Regression(regression)))
    }

    #[test]
    fn statistics_of_pairs_give_the_same_bits_in_any_order_and_split() {
        // Magnitudes over 12 orders, y following x loosely, and a block whose means are far
        // above its spread.
        let mut pairs: Vec<[f64; 2]> = (0..5000u64)
            .map(|i| {
                let x = ((i * 2654435761) % 1000003) as f64 / 7.0 * 10f64.powi((i % 13) as i32 - 6);
                let noise = ((i * 40503) % 997) as f64 / 3.0;
                [x, 0.5 * x + if i % 3 == 0 { -noise } else { noise }]
            })
            .collect();
        pairs.extend(
            (0..2000).map(|i| [1e9 + (i % 17) as f64 * 0.25, -3e8 + (i % 5) as f64 * 0.125]),
        );
        let whole: Vec<[Option<f64>; 2]> = pairs.iter().map(|p| p.map(Some)).collect();
        let rows: Vec<(usize, [f64; 2])> =
            pairs.iter().enumerate().map(|(i, &p)| (i % 7, p)).collect();
        let one: Vec<(usize, [f64; 2])> = pairs.iter().map(|&p| (0, p)).collect();
        for statistic in of_pairs() {
            let expected = accumulated_pairs(statistic, &whole, whole.len());
            assert!(expected.is_some_and(f64::is_finite), "{expected:?}");
            let expected_groups = grouped_pairs(statistic, &rows, 7, 1);
            for seed in 0..8 {
                assert_eq!(
                    accumulated_pairs(statistic, &shuffled(&whole, seed), 1 + seed as usize * 37),
                    expected
                );
                assert_eq!(
                    grouped_pairs(statistic, &shuffled(&rows, seed), 7, 1 + seed as usize % 5),
                    expected_groups
                );
            }
            assert_eq!(grouped_pairs(statistic, &one, 1, 3)[0], expected);
        }
    }

    #[test]
    fn covariance_and_correlation_are_the_exact_ones_rounded() {
        let cases: Vec<Vec<(i64, i64)>> = vec![
            vec![(1, 2), (2, 4), (3, 7), (4, 1)],
            (0..1000)
                .map(|i| {
                    let x = (i * 7919) % 1_000_003 - 500_000;
                    (x, (i * 104729) % 999_983 - 400_000 + x / 3)
                })
                .collect(),
            // Means 2^40 times the spread: `Σxy − Σx·Σy/n` in doubles keeps nothing of it.
            (0..999)
                .map(|i| ((1i64 << 50) + i % 3, (1i64 << 49) - i % 5 + i % 3))
                .collect(),
        ];
        for pairs in cases {
            // In units of 2^-20: n² times the population covariance, and n² times each
            // population variance, exactly.
            let n = pairs.len() as i128;
            let total = |f: &dyn Fn(i128, i128) -> i128| -> i128 {
                pairs.iter().map(|&(x, y)| f(x as i128, y as i128)).sum()
            };
            let (sx, sy) = (total(&|x, _| x), total(&|_, y| y));
            let covariance = n * total(&|x, y| x * y) - sx * sy;
            let x_spread = n * total(&|x, _| x * x) - sx * sx;
            let y_spread = n * total(&|_, y| y * y) - sy * sy;
            let values: Vec<[Option<f64>; 2]> = pairs
                .iter()
                .map(|&(x, y)| [Some(x as f64 / 1024.0), Some(y as f64 / 1024.0)])
                .collect();
            // regr_*(Y, X) with Y the first value of each pair and X the second.
            let slope = covariance as f64 / y_spread as f64;
            let (mean_y, mean_x) = (sx as f64 / n as f64 / 1024.0, sy as f64 / n as f64 / 1024.0);
            let intercept =
                (sx * y_spread - covariance * sy) as f64 / (n * y_spread) as f64 / 1024.0;
            let correlation =
                covariance as f64 / (x_spread as f64).sqrt() / (y_spread as f64).sqrt();
            let scaled = |v: i128| v as f64 / n as f64 / 1_048_576.0;
            let regression = Statistic::Regression;
            let expected = [
                (
                    COVARIANCES[0],
                    covariance as f64 / (n * (n - 1)) as f64 / 1_048_576.0,
                ),
                (COVARIANCES[1], scaled(covariance) / n as f64),
                (COVARIANCES[2], correlation),
                (regression(Regression::Slope), slope),
                (regression(Regression::R2), correlation * correlation),
                (regression(Regression::AvgX), mean_x),
                (regression(Regression::AvgY), mean_y),
                (regression(Regression::Sxx), scaled(y_spread)),
                (regression(Regression::Syy), scaled(x_spread)),
                (regression(Regression::Sxy), scaled(covariance)),
            ];
            for (statistic, want) in expected {
                let got = accumulated_pairs(statistic, &values, 64).unwrap();
                assert!(
                    (got - want).abs() <= want.abs() * 8.0 * f64::EPSILON,
                    "{statistic:?} of {} pairs: got {got}, exact {want}",
                    pairs.len()
                );
            }
            // The intercept, ȳ − slope·x̄, is as good as its two terms allow.
            let got = accumulated_pairs(regression(Regression::Intercept), &values, 64).unwrap();
            let scale = mean_y.abs() + (slope * mean_x).abs();
            assert!(
                (got - intercept).abs() <= scale * 4.0 * f64::EPSILON,
                "intercept of {} pairs: got {got}, exact {intercept}",
                pairs.len()
            );
        }
    }

    #[test]
    fn pairs_with_nulls_few_pairs_and_non_finite_values_as_datafusion() {
        let [sample, population, correlation] = COVARIANCES;
        let pairs = |rows: &[[Option<f64>; 2]], statistic| accumulated_pairs(statistic, rows, 2);
        // A pair counts only when both its values are there.
        let one = [[Some(1.0), Some(2.0)], [None, Some(3.0)], [Some(3.0), None]];
        assert_eq!(pairs(&one, sample), None);
        assert_eq!(pairs(&one, population), Some(0.0));
        assert_eq!(pairs(&one, correlation), None);
        for statistic in COVARIANCES {
            assert_eq!(pairs(&[], statistic), None);
        }
        let two = [
            [Some(1.0), Some(2.0)],
            [None, Some(3.0)],
            [Some(3.0), Some(6.0)],
        ];
        assert_eq!(pairs(&two, sample), Some(4.0));
        assert_eq!(pairs(&two, population), Some(2.0));
        assert_eq!(pairs(&two, correlation), Some(1.0));
        // Nearly a line: within [-1, 1] whatever the rounding; a constant column: NULL.
        let line: Vec<[Option<f64>; 2]> = (0..100)
            .map(|i| [Some(i as f64 * 0.1), Some(7.0 - i as f64 * 0.3)])
            .collect();
        let r = pairs(&line, correlation).unwrap();
        assert!((-1.0..-0.999_999_999_999).contains(&r), "{r}");
        let flat: Vec<[Option<f64>; 2]> = (0..10).map(|i| [Some(0.1), Some(i as f64)]).collect();
        assert_eq!(pairs(&flat, correlation), None);
        assert_eq!(pairs(&flat, sample), Some(0.0));
        // A NaN in one column: no correlation (NULL); in both: NaN. Covariance: NaN. An
        // infinity: NaN for all three.
        let nan = [
            [Some(f64::NAN), Some(1.0)],
            [Some(2.0), Some(3.0)],
            [Some(4.0), Some(1.0)],
        ];
        assert_eq!(pairs(&nan, correlation), None);
        assert!(pairs(&nan, sample).unwrap().is_nan());
        let both = [[Some(f64::NAN), Some(f64::NAN)]];
        assert!(pairs(&both, correlation).unwrap().is_nan());
        let infinite = [[Some(f64::INFINITY), Some(1.0)], [Some(2.0), Some(3.0)]];
        for statistic in COVARIANCES {
            assert!(
                pairs(&infinite, statistic).unwrap().is_nan(),
                "{statistic:?}"
            );
        }
        // Regressions (Y first): one pair has averages and sums but no fit, nor has a
        // constant X; an infinity leaves the averages AVG's and the rest NaN.
        use Regression::*;
        let regression = |rows: &[[Option<f64>; 2]], kind| pairs(rows, Statistic::Regression(kind));
        let constant_x: Vec<[Option<f64>; 2]> =
            (0..10).map(|i| [Some(i as f64), Some(0.1)]).collect();
        for kind in [Slope, Intercept, R2] {
            assert_eq!(regression(&one, kind), None, "{kind:?}");
            assert_eq!(regression(&constant_x, kind), None, "{kind:?}");
        }
        assert_eq!(regression(&flat, Slope), Some(0.0));
        assert_eq!(regression(&flat, R2), None);
        assert_eq!(regression(&one, AvgY), Some(1.0));
        assert_eq!(regression(&one, AvgX), Some(2.0));
        assert_eq!(regression(&one, Sxx), Some(0.0));
        assert_eq!(regression(&two, Slope), Some(0.5));
        assert_eq!(regression(&two, Intercept), Some(0.0));
        assert_eq!(regression(&two, Sxy), Some(4.0));
        assert_eq!(regression(&two, R2), Some(1.0));
        for kind in [AvgX, AvgY, Sxx] {
            assert_eq!(regression(&[], kind), None, "{kind:?}");
        }
        assert_eq!(regression(&infinite, AvgY), Some(f64::INFINITY));
        assert_eq!(regression(&infinite, AvgX), Some(2.0));
        for kind in [Slope, Intercept, R2, Sxx, Syy, Sxy] {
            assert!(regression(&infinite, kind).unwrap().is_nan(), "{kind:?}");
        }
    }
}

#[cfg(test)]
mod sql_tests {
    use datafusion::arrow::array::{Array, AsArray, RecordBatch};
    use datafusion::arrow::datatypes::Float64Type;
    use datafusion::prelude::SessionContext;

    /// The Float64 columns of `sql`'s result over a small table of groups with NULLs, one
    /// pair, a constant column and ordinary pairs, row by row.
    async fn query(sql: &str, exact: bool) -> Vec<Vec<Option<f64>>> {
        let ctx = SessionContext::new();
        if exact {
            super::register(&ctx);
        }
        ctx.sql(
            "CREATE VIEW t AS SELECT * FROM (VALUES (1, 'a', 0.1, 1.5), (2, 'a', 0.2, 2.5), \
             (3, 'a', NULL, 9.0), (4, 'a', 0.7, -1.25), (5, 'b', 0.3, NULL), (6, 'b', 2.0, 4.0), \
             (7, 'c', 1.0, 3.0), (8, 'c', 1.0, 5.0), (9, 'c', 1.0, 8.0), (10, 'd', 3.0, 1.0), \
             (11, 'd', 5.0, 2.0), (12, 'd', 13.0, -7.5)) AS v(id, g, x, y)",
        )
        .await
        .unwrap();
        let batches: Vec<RecordBatch> = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut rows = Vec::new();
        for batch in batches {
            for row in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| {
                            let c = c.as_primitive::<Float64Type>();
                            c.is_valid(row).then(|| c.value(row))
                        })
                        .collect(),
                );
            }
        }
        rows
    }

    #[tokio::test]
    async fn covariance_and_correlation_agree_with_datafusion_on_ordinary_data() {
        for sql in [
            "SELECT covar_samp(x, y), covar(x, y), covar_pop(x, y), corr(x, y), \
             CAST(id AS DOUBLE) AS row FROM t GROUP BY g, id ORDER BY row",
            "SELECT covar_samp(x, y), covar_pop(x, y), corr(x, y), corr(y, x) FROM t \
             GROUP BY g ORDER BY g",
            "SELECT covar_samp(x, y), covar_pop(x, y), corr(x, y) FROM t",
            "SELECT regr_slope(y, x), regr_intercept(y, x), regr_r2(y, x), regr_avgx(y, x), \
             regr_avgy(y, x), regr_sxx(y, x), regr_syy(y, x), regr_sxy(y, x), \
             CAST(regr_count(y, x) AS DOUBLE) AS n FROM t GROUP BY g ORDER BY g",
            "SELECT regr_slope(x, y), regr_intercept(x, y), regr_r2(x, y), regr_sxy(x, y) FROM t",
            "SELECT covar_pop(x, y) OVER (ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW), \
             corr(x, y) OVER (ORDER BY id ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) FROM t \
             ORDER BY id",
        ] {
            let (exact, builtin) = (query(sql, true).await, query(sql, false).await);
            assert_eq!(exact.len(), builtin.len(), "{sql}");
            for (got, want) in exact.iter().zip(&builtin) {
                let close = got.iter().zip(want).all(|(g, w)| match (g, w) {
                    (Some(g), Some(w)) => (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                    (g, w) => g == w,
                });
                assert!(close, "{sql}\nexact {got:?}\nDataFusion's {want:?}");
            }
        }
        // Far from zero, DataFusion's grouped correlation (sums of rounded squares and
        // products) loses the spread entirely and answers NULL; the true one is 6.5 / √43.75.
        let sql = "SELECT corr(x, y) FROM (VALUES ('a', 1e8, 1e8), ('a', 1e8 + 1, 1e8 + 1), \
                   ('a', 1e8 + 2, 1e8 + 2), ('a', 1e8 + 3, 1e8 + 4)) AS v(g, x, y) GROUP BY g";
        assert_eq!(query(sql, false).await, [[None]]);
        let exact = query(sql, true).await[0][0].unwrap();
        assert!(
            (exact - 6.5 / 43.75f64.sqrt()).abs() <= 2.0 * f64::EPSILON,
            "{exact}"
        );
    }
}
