//! Running the checks on Apache Ballista, DataFusion's distributed engine, for diffs one
//! machine cannot carry. Nothing else changes: the same logical plans (both queries and the
//! diff) are shipped to a Ballista scheduler instead of being executed in-process, and the same
//! collector, report, metrics and history consume what comes back. Plans must serialize with
//! datafusion-proto, so sources are listing tables on storage the executors can reach.

#[cfg(feature = "ballista")]
use anyhow::anyhow;
use anyhow::{Result, bail};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;

pub use crate::config::STANDALONE;

/// A session state that runs its plans on the Ballista scheduler at `url`, with `local`'s
/// catalog and settings.
#[cfg(feature = "ballista")]
pub async fn connect(local: SessionState, url: &str) -> Result<SessionState> {
    use ballista::prelude::SessionContextExt;
    use ballista_core::extension::{SessionConfigExt, SessionStateExt};
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    // Ballista 55's adaptive planner never finishes a job with an empty input: it replans the
    // exchange above the empty scan into a new stage, forever (an empty Parquet file, or a
    // filter that keeps nothing, hung the diff). The static planner runs the same plans.
    // Nor does it plan with the files' statistics: they leave NaN out of a float column's min
    // and max, and a column whose min equals its max is read as that constant (embedded runs
    // drop only the float columns' bounds, through a file format a plan sent here cannot carry).
    let config = local
        .config()
        .clone()
        .upgrade_for_ballista()
        .with_ballista_adaptive_query_planner(false)
        .with_collect_statistics(false);
    // The guard around file scans is a node of this process only: Ballista could not ship it.
    let rules = local
        .physical_optimizers()
        .iter()
        .filter(|rule| rule.name() != crate::sources::guard::RULE)
        .cloned()
        .collect();
    let local = SessionStateBuilder::new_from_existing(local)
        .with_config(config)
        .with_physical_optimizer_rules(rules)
        .build();

    if url == STANDALONE {
        let ctx = SessionContext::standalone_with_state(local)
            .await
            .map_err(|e| anyhow!("starting the in-process Ballista cluster: {e}"))?;
        return Ok(ctx.state());
    }
    let address = url.trim_start_matches("ballista://");
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| anyhow!("engine URL '{url}': port '{port}' is not a number"))?,
        ),
        None => (address, 50050),
    };
    let scheduler = format!("http://{host}:{port}");
    // Fail now, naming the scheduler, rather than at the first check.
    ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient::connect(
        scheduler.clone(),
    )
    .await
    .map_err(|e| anyhow!("Ballista scheduler {url} is not reachable: {e}"))?;
    local
        .upgrade_for_ballista(scheduler)
        .map_err(|e| anyhow!("Ballista session for {url}: {e}"))
}

#[cfg(not(feature = "ballista"))]
pub async fn connect(_local: SessionState, url: &str) -> Result<SessionState> {
    bail!(
        "engine {url}: this dualrun was built without Ballista support; rebuild it with `cargo build --release --features ballista`"
    )
}

/// Fails before anything runs when a check's two plans cannot run correctly on Ballista, naming what and
/// why: a query with LIMIT (Ballista 55's distributed planners drop a LIMIT that sits below a
/// shuffle, and the diff always shuffles the query's result: measured 20 rows for a LIMIT 10 on
/// two executors), or a table provider without a codec, such as a Delta table.
pub fn ensure_distributable(check: &str, batch: &LogicalPlan, stream: &LogicalPlan) -> Result<()> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut limited = false;
    for plan in [batch, stream] {
        let _ = plan.apply_with_subqueries(|node| {
            limited |= matches!(node, LogicalPlan::Limit(_));
            Ok(if limited {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        });
    }
    if limited {
        bail!(
            "check '{check}': its query has a LIMIT, which Ballista 55 does not run correctly below the diff's shuffle (it returns too many or too few rows); run it in-process: engine = \"embedded\" on the check, or compare without --engine"
        );
    }
    ensure_serializable(batch, "batch")?;
    ensure_serializable(stream, "stream")
}

/// Fails before anything runs when a plan cannot be shipped to Ballista (a table provider
/// without a codec, such as a Delta table), naming the tables it reads.
#[cfg(feature = "ballista")]
fn ensure_serializable(plan: &LogicalPlan, side: &str) -> Result<()> {
    let codec = ballista_core::serde::BallistaLogicalExtensionCodec::default();
    datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec(plan, &codec)
        .map(|_| ())
        .map_err(|e| {
            let tables: Vec<String> = crate::engine::scanned_tables(plan).into_iter().collect();
            anyhow!(
                "the {side} side cannot run on Ballista (tables: {}): {}; Ballista runs listing tables (Parquet, CSV, NDJSON, Avro, Arrow) only, not Delta tables",
                tables.join(", "),
                crate::error::clean_df_error(&e.to_string())
            )
        })
}

#[cfg(not(feature = "ballista"))]
fn ensure_serializable(_plan: &LogicalPlan, _side: &str) -> Result<()> {
    Ok(())
}
