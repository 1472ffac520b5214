//! Float `MIN` and `MAX` in IEEE total order, with or without GROUP BY.
//!
//! DataFusion 55's grouped float MIN/MAX compare with `partial_cmp` and start each group at the
//! largest finite value (apache/datafusion#24432, fixed upstream after 55). A group holding a NaN
//! then gets an answer that depends on the order its rows arrive in (MAX of [NaN, 1] is 1, of
//! [1, NaN] is NaN), so the same rows laid out in other files give another answer and a check
//! says `diverged` on identical data; and a group of only +inf gets MIN = 1.797e308, a value not
//! in the data, which hides a real +inf-against-1.797e308 difference. The query without GROUP
//! BY was already right (it uses total order), so this makes both agree: `-NaN < -inf < … <
//! -0.0 < +0.0 < … < +inf < NaN`. Other types, and everything else about MIN and MAX, are the
//! built-in functions'.

use std::cmp::Ordering;

use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float16Type, Float32Type, Float64Type,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions_aggregate::min_max::{Max, Min};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF,
    SetMonotonicity, Signature, StatisticsArgs,
};
use datafusion::prelude::SessionContext;
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::prim_op::PrimitiveGroupsAccumulator;
use half::f16;

/// Replaces `min` and `max` in the session by their total-order versions.
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(AggregateUDF::new_from_impl(TotalOrder::Min(Min::new())));
    ctx.register_udaf(AggregateUDF::new_from_impl(TotalOrder::Max(Max::new())));
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum TotalOrder {
    Min(Min),
    Max(Max),
}

impl TotalOrder {
    fn inner(&self) -> &dyn AggregateUDFImpl {
        match self {
            TotalOrder::Min(min) => min,
            TotalOrder::Max(max) => max,
        }
    }

    /// The order a new value must have against the group's to replace it.
    fn replaces(&self) -> Ordering {
        match self {
            TotalOrder::Min(_) => Ordering::Less,
            TotalOrder::Max(_) => Ordering::Greater,
        }
    }
}

/// A grouped accumulator comparing in total order. Each group starts at the far end of the order
/// from where it moves (the largest NaN for MIN, the smallest for MAX): every value replaces it
/// but that same bit pattern, and a group that saw no value is NULL through the null state.
fn grouped<T: ArrowPrimitiveType + Send>(
    data_type: &DataType,
    replaces: Ordering,
    start: T::Native,
    total_cmp: fn(&T::Native, &T::Native) -> Ordering,
) -> Box<dyn GroupsAccumulator> {
    Box::new(
        PrimitiveGroupsAccumulator::<T, _>::new(data_type, move |current, new| {
            if total_cmp(&new, current) == replaces {
                *current = new;
            }
        })
        .with_starting_value(start),
    )
}

impl AggregateUDFImpl for TotalOrder {
    same_function_as_inner!();

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner().coerce_types(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner().accumulator(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner().groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let data_type = args.return_field.data_type();
        let replaces = self.replaces();
        // The far end: the NaN with every payload bit set, of the sign away from `replaces`.
        let far = |bits: u64| match replaces {
            Ordering::Less => bits >> 1,
            _ => bits,
        };
        Ok(match data_type {
            DataType::Float16 => grouped::<Float16Type>(
                data_type,
                replaces,
                f16::from_bits(far(0xffff) as u16),
                f16::total_cmp,
            ),
            DataType::Float32 => grouped::<Float32Type>(
                data_type,
                replaces,
                f32::from_bits(far(0xffff_ffff) as u32),
                f32::total_cmp,
            ),
            DataType::Float64 => grouped::<Float64Type>(
                data_type,
                replaces,
                f64::from_bits(far(u64::MAX)),
                f64::total_cmp,
            ),
            _ => return self.inner().create_groups_accumulator(args),
        })
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner().create_sliding_accumulator(args)
    }

    fn is_descending(&self) -> Option<bool> {
        self.inner().is_descending()
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner().order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn value_from_stats(&self, args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner().value_from_stats(args)
    }
}
