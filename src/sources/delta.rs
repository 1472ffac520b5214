//! Delta Lake sources through the `deltalake` crate: the table as of its latest version, a given
//! version, or a point in time (time travel), so a nightly run compares what the stream had
//! committed by then. The object store is dualrun's own (built from the standard environment),
//! handed to deltalake, so Delta tables live wherever Parquet tables can.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTableBuilder;

use crate::config::SourceSpec;
use crate::sources::{Listed, data_type_has_float, has_float};

/// Whether the location holds a Delta log.
pub async fn is_delta(ctx: &SessionContext, url: &ListingTableUrl) -> bool {
    use futures::StreamExt;
    let Ok(store) = ctx.runtime_env().object_store(url) else {
        return false;
    };
    let log = object_store::path::Path::from(format!(
        "{}/_delta_log",
        url.prefix().as_ref().trim_end_matches('/')
    ));
    store
        .list(Some(&log))
        .next()
        .await
        .is_some_and(|entry| entry.is_ok())
}

pub async fn register(
    ctx: &SessionContext,
    url: &ListingTableUrl,
    source: &SourceSpec,
    register: impl FnOnce(Arc<dyn datafusion::catalog::TableProvider>) -> Result<()>,
) -> Result<Listed> {
    let location: url::Url = AsRef::<url::Url>::as_ref(url).clone();
    let mut builder =
        DeltaTableBuilder::from_url(location.clone()).map_err(|e| anyhow!("Delta table: {e}"))?;
    if location.scheme() != "file" {
        let store = ctx.runtime_env().object_store(url)?;
        builder = builder.with_storage_backend(store, location.clone());
    }
    match (&source.delta_version, &source.delta_as_of) {
        (Some(version), _) => builder = builder.with_version(*version as _),
        (None, Some(as_of)) => builder = builder.with_datestring(as_of).map_err(|e| {
            anyhow!(
                "as_of = '{as_of}' is not an RFC 3339 timestamp (like 2026-11-25T23:59:59Z): {e}"
            )
        })?,
        (None, None) => {}
    }
    let table = builder
        .load()
        .await
        .map_err(|e| anyhow!("cannot load the Delta table: {e}"))?;
    if let Some(as_of) = &source.delta_as_of {
        // deltalake falls back to the first version for a time before it; that table did not
        // exist then, and comparing against it would be a false verdict.
        let requested = chrono::DateTime::parse_from_rfc3339(as_of).map(|t| t.timestamp_millis());
        let version = table.version().unwrap_or_default();
        let committed = table
            .snapshot()
            .ok()
            .and_then(|s| s.version_timestamp(version as _));
        if let (Ok(requested), Some(committed)) = (requested, committed)
            && requested < committed
        {
            let committed = chrono::DateTime::from_timestamp_millis(committed)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            bail!("Delta table has no version as of {as_of}: its first commit is from {committed}");
        }
    }
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| anyhow!("Delta table: {e}"))?;
    let files = table
        .get_file_uris()
        .map(|uris| uris.count() as u64)
        .unwrap_or(0);
    let provider = table
        .table_provider()
        .await
        .map_err(|e| anyhow!("Delta table: {e}"))?;
    match has_float(provider.schema().fields()) {
        true => register(Arc::new(NanSafeDelta { inner: provider }))?,
        false => register(provider)?,
    }
    tracing::debug!(version = ?table.version(), files, "registered Delta table");
    Ok(Listed {
        files,
        bytes: 0,
        prefix: url.prefix().as_ref().to_string(),
    })
}

/// A Delta table that prunes nothing by a float column. The Delta log's min and max leave NaN
/// out, as Parquet's do, while DataFusion orders NaN above every number: given `WHERE x > 5`,
/// a file of NaN and 1.0 was skipped by its statistics and the NaN row lost. Filters on float
/// columns are refused at planning, and the scan takes no filter pushed down while the physical
/// plan is optimised (nor one a join or a TopK derives while running); they run above it.
#[derive(Debug)]
struct NanSafeDelta {
    inner: Arc<dyn TableProvider>,
}

impl NanSafeDelta {
    fn reads_a_float(&self, filter: &Expr) -> bool {
        let schema = self.inner.schema();
        filter.column_refs().iter().any(|column| {
            schema
                .field_with_name(&column.name)
                .is_ok_and(|field| data_type_has_float(field.data_type()))
        })
    }
}

#[async_trait::async_trait]
impl TableProvider for NanSafeDelta {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let input = self.inner.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(NoPushdown { input }))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        let mut answers = self.inner.supports_filters_pushdown(filters)?;
        for (answer, filter) in answers.iter_mut().zip(filters) {
            if self.reads_a_float(filter) {
                *answer = TableProviderFilterPushDown::Unsupported;
            }
        }
        Ok(answers)
    }
}

/// Passes its input's rows through and no filter down to it: `ExecutionPlan`'s default answer
/// to filter pushdown is "unsupported", which is the point of this node.
#[derive(Debug)]
struct NoPushdown {
    input: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for NoPushdown {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "NoPushdown")
    }
}

impl ExecutionPlan for NoPushdown {
    fn name(&self) -> &'static str {
        "NoPushdown"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => Ok(Arc::new(NoPushdown { input })),
            _ => Err(datafusion::error::DataFusionError::Internal(
                "NoPushdown takes one input".to_string(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
