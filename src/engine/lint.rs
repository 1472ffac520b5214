//! Finds what makes a query answer differently on identical input: a LIMIT that keeps
//! arbitrary rows, window and aggregate orderings with ties, functions that read the clock or
//! a random source. Such a query flaps between nights on the same data, which looks exactly like
//! a divergence; naming the construct up front saves the night. Read from the logical plan
//! before optimization (the optimizer folds `now()` into a literal).

use std::collections::HashSet;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Dependency};
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::{
    Expr, LogicalPlan, SortExpr, Volatility, WindowFrameUnits, WindowFunctionDefinition,
};
use serde::Serialize;

use crate::config::Nondeterminism;

/// One construct that can make the same input give another answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hazard {
    pub kind: Nondeterminism,
    /// The construct, as SQL-ish text.
    pub expression: String,
    pub why: String,
}

/// Window functions whose value depends on which of two tied rows comes first.
const TIE_SENSITIVE_WINDOWS: [&str; 7] = [
    "row_number",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
];

/// Aggregates whose value depends on the order the rows arrive in.
const ORDER_SENSITIVE_AGGREGATES: [&str; 7] = [
    "array_agg",
    "string_agg",
    "first_value",
    "last_value",
    "nth_value",
    "listagg",
    "any_value",
];

/// Estimates built from a t-digest that merges the rows batch by batch as they arrive: the same
/// rows answer differently in another layout, and even in another run over the same files
/// (partitions finish in another order). No ORDER BY fixes that.
const ARRIVAL_ORDER_ESTIMATES: [&str; 3] = [
    "approx_percentile_cont",
    "approx_percentile_cont_with_weight",
    "approx_median",
];

/// The hazards of `plan`, minus the kinds the check acknowledges. `key` is the check's result
/// key: an ORDER BY over it makes a top-level LIMIT deterministic.
pub fn nondeterminism(
    plan: &LogicalPlan,
    key: &[String],
    allowed: &[Nondeterminism],
) -> Vec<Hazard> {
    let mut hazards = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Limit(limit) => {
                if let Some(hazard) = limit_hazard(node, &limit.input, key) {
                    hazards.push(hazard);
                }
            }
            LogicalPlan::Window(window) => {
                for expr in &window.window_expr {
                    window_hazards(expr, window.input.schema(), &mut hazards);
                }
            }
            LogicalPlan::Aggregate(aggregate) => {
                for expr in &aggregate.aggr_expr {
                    aggregate_hazards(expr, &aggregate.group_expr, &mut hazards);
                }
            }
            _ => {}
        }
        let _ = node.apply_expressions(|expr| {
            volatile_hazards(expr, &mut hazards);
            Ok(TreeNodeRecursion::Continue)
        });
        Ok(TreeNodeRecursion::Continue)
    });
    hazards.retain(|h| !allowed.contains(&h.kind));
    // A function used twice is one hazard to fix.
    let mut seen = HashSet::new();
    hazards.retain(|h| seen.insert((h.kind, h.expression.clone())));
    hazards
}

fn limit_hazard(node: &LogicalPlan, input: &LogicalPlan, key: &[String]) -> Option<Hazard> {
    let LogicalPlan::Limit(limit) = node else {
        return None;
    };
    let mut text = String::new();
    if let Some(fetch) = &limit.fetch {
        text.push_str(&format!("LIMIT {}", fetch.human_display()));
    }
    if let Some(skip) = &limit.skip {
        text.push_str(&format!(" OFFSET {}", skip.human_display()));
    }
    let text = text.trim().to_string();
    // The rows under the limit, past renames and filters that keep the order.
    let mut below = input;
    loop {
        match below {
            LogicalPlan::Projection(p) => below = &p.input,
            LogicalPlan::SubqueryAlias(a) => below = &a.input,
            LogicalPlan::Filter(f) => below = &f.input,
            _ => break,
        }
    }
    match below {
        LogicalPlan::Sort(sort) => {
            let columns = sort_columns(&sort.expr);
            let names: HashSet<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let covers_key = !key.is_empty() && key.iter().all(|k| names.contains(k.as_str()));
            if covers_key || covers_unique(sort.input.schema(), &columns) {
                return None;
            }
            let order: Vec<String> = sort
                .expr
                .iter()
                .map(|s| {
                    let direction = if s.asc { "" } else { " DESC" };
                    format!("{}{direction}", s.expr.human_display())
                })
                .collect();
            Some(Hazard {
                kind: Nondeterminism::Limit,
                expression: format!("ORDER BY {} {text}", order.join(", ")),
                why: "the ORDER BY does not cover a unique key: rows tied on it are cut at the \
                      limit in whatever order they arrive"
                    .into(),
            })
        }
        // A global aggregate has one row: nothing to choose from.
        LogicalPlan::Aggregate(aggregate) if aggregate.group_expr.is_empty() => None,
        _ => Some(Hazard {
            kind: Nondeterminism::Limit,
            expression: text,
            why: "a LIMIT without ORDER BY keeps whichever rows arrive first, which changes \
                  with file layout and thread timing"
                .into(),
        }),
    }
}

fn window_hazards(expr: &Expr, input: &DFSchema, hazards: &mut Vec<Hazard>) {
    let _ = expr.apply(|e| {
        if let Expr::WindowFunction(window) = e {
            let WindowFunction { fun, params } = window.as_ref();
            let name = fun.name();
            let aggregate_over_rows = matches!(fun, WindowFunctionDefinition::AggregateUDF(_))
                && params.window_frame.units == WindowFrameUnits::Rows
                && !params.order_by.is_empty();
            if TIE_SENSITIVE_WINDOWS.contains(&name) || aggregate_over_rows {
                let mut columns = sort_columns(&params.order_by);
                columns.extend(
                    params
                        .partition_by
                        .iter()
                        .filter_map(|e| e.try_as_col().cloned()),
                );
                if !covers_unique(input, &columns) {
                    let why = if params.order_by.is_empty() {
                        format!("{name}() OVER without ORDER BY numbers rows in arrival order")
                    } else {
                        format!(
                            "{name}() depends on the order of rows tied on its PARTITION BY + \
                             ORDER BY, which do not cover a unique key"
                        )
                    };
                    hazards.push(Hazard {
                        kind: Nondeterminism::WindowOrder,
                        expression: e.human_display().to_string(),
                        why,
                    });
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

fn aggregate_hazards(expr: &Expr, group_by: &[Expr], hazards: &mut Vec<Hazard>) {
    let _ = expr.apply(|e| {
        if let Expr::AggregateFunction(AggregateFunction { func, params }) = e {
            let name = func.name();
            if ARRIVAL_ORDER_ESTIMATES.contains(&name) {
                hazards.push(Hazard {
                    kind: Nondeterminism::AggregateOrder,
                    expression: e.human_display().to_string(),
                    why: format!(
                        "{name}() estimates from the rows in the order they arrive: another \
                         layout, or another run over the same files, gives another estimate \
                         (median() and percentile_cont() are exact)"
                    ),
                });
            } else if ORDER_SENSITIVE_AGGREGATES.contains(&name) {
                let ordered: Vec<&Expr> = params.order_by.iter().map(|s| &s.expr).collect();
                // Ordering by the aggregated values themselves makes ties indistinguishable.
                let by_own_values = !ordered.is_empty()
                    && params
                        .args
                        .iter()
                        .filter(|a| !matches!(a, Expr::Literal(..)))
                        .all(|a| ordered.contains(&a));
                if !by_own_values {
                    let why = if ordered.is_empty() {
                        format!("{name}() without ORDER BY takes rows in arrival order")
                    } else {
                        format!(
                            "{name}() depends on the order of rows tied on its ORDER BY{}",
                            if group_by.is_empty() {
                                ""
                            } else {
                                " within a group"
                            }
                        )
                    };
                    hazards.push(Hazard {
                        kind: Nondeterminism::AggregateOrder,
                        expression: e.human_display().to_string(),
                        why,
                    });
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

fn volatile_hazards(expr: &Expr, hazards: &mut Vec<Hazard>) {
    let _ = expr.apply(|e| {
        if let Expr::ScalarFunction(call) = e {
            let volatility = call.func.signature().volatility;
            if volatility != Volatility::Immutable {
                let name = call.func.name();
                let why = if volatility == Volatility::Volatile {
                    format!("{name}() gives a new value on every call")
                } else {
                    format!(
                        "{name}() depends on when the query runs: the two sides run at different \
                         moments, and on different nights"
                    )
                };
                hazards.push(Hazard {
                    kind: Nondeterminism::VolatileFunction,
                    expression: e.human_display().to_string(),
                    why,
                });
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

fn sort_columns(sort: &[SortExpr]) -> Vec<datafusion::common::Column> {
    sort.iter()
        .filter_map(|s| s.expr.try_as_col().cloned())
        .collect()
}

/// Whether `columns` include every column of a key the schema knows to be unique (DataFusion
/// derives these functional dependencies: a GROUP BY's columns are unique in its output).
fn covers_unique(schema: &DFSchema, columns: &[datafusion::common::Column]) -> bool {
    let indices: HashSet<usize> = columns
        .iter()
        .filter_map(|c| schema.index_of_column(c).ok())
        .collect();
    schema.functional_dependencies().iter().any(|dependence| {
        dependence.mode == Dependency::Single
            && !dependence.source_indices.is_empty()
            && dependence
                .source_indices
                .iter()
                .all(|i| indices.contains(i))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// The kinds the lint finds in `sql` over `t(id, region, ts, x, name)`, with `key` as the
    /// check's key.
    async fn kinds(sql: &str, key: &[&str]) -> Vec<&'static str> {
        let ctx = SessionContext::new();
        ctx.sql(
            "CREATE TABLE t (id BIGINT, region VARCHAR, ts BIGINT, x DOUBLE, name VARCHAR) \
             AS VALUES (1, 'a', 10, 1.0, 'n')",
        )
        .await
        .unwrap();
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        nondeterminism(&plan, &key, &[])
            .into_iter()
            .map(|h| h.kind.name())
            .collect()
    }

    #[tokio::test]
    async fn limit_needs_an_order_by_over_a_unique_key() {
        let fires = ["limit"];
        assert_eq!(kinds("SELECT * FROM t LIMIT 5", &[]).await, fires);
        assert_eq!(kinds("SELECT * FROM t OFFSET 5", &[]).await, fires);
        assert_eq!(
            kinds("SELECT * FROM t ORDER BY ts LIMIT 5", &[]).await,
            fires
        );
        let by_value = "SELECT region, sum(x) AS s FROM t GROUP BY region ORDER BY s DESC LIMIT 3";
        assert_eq!(kinds(by_value, &[]).await, fires);
        // The GROUP BY columns are unique in its output; the check's key is declared unique.
        let by_group =
            "SELECT region, sum(x) AS s FROM t GROUP BY region ORDER BY s DESC, region LIMIT 3";
        assert!(kinds(by_group, &[]).await.is_empty());
        assert!(
            kinds("SELECT * FROM t ORDER BY id LIMIT 5", &["id"])
                .await
                .is_empty()
        );
        assert!(
            kinds("SELECT count(*) AS n FROM t LIMIT 1", &[])
                .await
                .is_empty()
        );
        // In a subquery too.
        let nested = "SELECT region FROM (SELECT region FROM t LIMIT 10) AS s GROUP BY region";
        assert_eq!(kinds(nested, &[]).await, fires);
    }

    #[tokio::test]
    async fn window_functions_over_ties() {
        let fires = ["window_order"];
        let ranked = "SELECT id, row_number() OVER (PARTITION BY region ORDER BY ts) AS r FROM t";
        assert_eq!(kinds(ranked, &["id"]).await, fires);
        let lagged = "SELECT id, lag(x) OVER (ORDER BY ts) AS p FROM t";
        assert_eq!(kinds(lagged, &["id"]).await, fires);
        let running = "SELECT id, sum(x) OVER (ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS w FROM t";
        assert_eq!(kinds(running, &["id"]).await, fires);
        // Ties share a rank, and a RANGE frame includes its peers: both are tie-proof.
        let rank = "SELECT id, rank() OVER (PARTITION BY region ORDER BY ts) AS r FROM t";
        assert!(kinds(rank, &["id"]).await.is_empty());
        let range = "SELECT id, sum(x) OVER (ORDER BY ts) AS w FROM t";
        assert!(kinds(range, &["id"]).await.is_empty());
        // Over the output of a GROUP BY, its columns make the order unique.
        let grouped = "SELECT region, row_number() OVER (ORDER BY region) AS r \
                       FROM (SELECT region, count(*) AS n FROM t GROUP BY region) AS g";
        assert!(kinds(grouped, &["region"]).await.is_empty());
    }

    #[tokio::test]
    async fn order_sensitive_aggregates() {
        let fires = ["aggregate_order"];
        let unordered = "SELECT region, array_agg(name) AS names FROM t GROUP BY region";
        assert_eq!(kinds(unordered, &["region"]).await, fires);
        let by_time = "SELECT region, first_value(x ORDER BY ts) AS f FROM t GROUP BY region";
        assert_eq!(kinds(by_time, &["region"]).await, fires);
        let joined = "SELECT region, string_agg(name, ',') AS s FROM t GROUP BY region";
        assert_eq!(kinds(joined, &["region"]).await, fires);
        // Ordered by the values themselves, ties are indistinguishable.
        let sorted =
            "SELECT region, string_agg(name, ',' ORDER BY name) AS s FROM t GROUP BY region";
        assert!(kinds(sorted, &["region"]).await.is_empty());
        let sorted = "SELECT region, array_agg(name ORDER BY name) AS s FROM t GROUP BY region";
        assert!(kinds(sorted, &["region"]).await.is_empty());
        let distinct = "SELECT region, array_agg(DISTINCT name) AS s FROM t GROUP BY region";
        assert_eq!(kinds(distinct, &["region"]).await, fires);
        let sorted =
            "SELECT region, array_agg(DISTINCT name ORDER BY name) AS s FROM t GROUP BY region";
        assert!(kinds(sorted, &["region"]).await.is_empty());
        let any = "SELECT region, any_value(name) AS s FROM t GROUP BY region";
        assert_eq!(kinds(any, &["region"]).await, fires);
        // Order-insensitive aggregates are fine, exact percentiles and distinct counts too.
        let plain = "SELECT region, sum(x), max(name), count(DISTINCT id), median(x), \
                     percentile_cont(0.9) WITHIN GROUP (ORDER BY x), approx_distinct(name) \
                     FROM t GROUP BY region";
        assert!(kinds(plain, &["region"]).await.is_empty());
    }

    #[tokio::test]
    async fn approximate_percentiles_depend_on_arrival_order_whatever_the_query_says() {
        let fires = ["aggregate_order"];
        for estimate in [
            "approx_median(x)",
            "approx_percentile_cont(x, 0.9)",
            "approx_percentile_cont(0.9) WITHIN GROUP (ORDER BY x)",
            "approx_percentile_cont_with_weight(ts, 0.5) WITHIN GROUP (ORDER BY x)",
        ] {
            let grouped = format!("SELECT region, {estimate} AS p FROM t GROUP BY region");
            assert_eq!(kinds(&grouped, &["region"]).await, fires, "{estimate}");
            let global = format!("SELECT {estimate} AS p FROM t");
            assert_eq!(kinds(&global, &[]).await, fires, "{estimate}");
        }
    }

    #[tokio::test]
    async fn clocks_and_random_sources() {
        let fires = ["volatile_function"];
        assert_eq!(
            kinds("SELECT id, random() AS r FROM t", &["id"]).await,
            fires
        );
        assert_eq!(kinds("SELECT id, uuid() AS u FROM t", &["id"]).await, fires);
        assert_eq!(
            kinds("SELECT id FROM t WHERE ts < now()", &["id"]).await,
            fires
        );
        assert_eq!(kinds("SELECT current_date() AS d", &[]).await, fires);
        assert!(
            kinds("SELECT id, abs(x), upper(name) FROM t", &["id"])
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn acknowledged_kinds_are_not_reported() {
        let ctx = SessionContext::new();
        let plan = ctx
            .state()
            .create_logical_plan("SELECT random() AS r LIMIT 1")
            .await
            .unwrap();
        let all = nondeterminism(&plan, &[], &[]);
        assert_eq!(all.len(), 2, "{all:?}");
        let rest = nondeterminism(&plan, &[], &[Nondeterminism::Limit]);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].kind, Nondeterminism::VolatileFunction);
        assert_eq!(rest[0].expression, "random()");
    }
}
