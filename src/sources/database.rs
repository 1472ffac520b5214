//! Tables in a database: stream pipelines often land in a serving database (a Flink or Kafka
//! Connect JDBC sink into PostgreSQL) while batch sits in files. The table is read through
//! `datafusion-table-providers`, so DataFusion still evaluates the analysis on both sides (only
//! projections and filters go to the database, and the rows that come back are counted), and
//! every session is read-only in the database itself (PostgreSQL's
//! `default_transaction_read_only`, SQLite's `mode=ro`), on top of dualrun's SELECT-only rule.
//!
//! Locations: `postgres://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE?table=[SCHEMA.]NAME[&sslmode=…]`
//! (what the URL leaves out comes from `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
//! `PGSSLMODE`) and `sqlite:///PATH.db?table=NAME` (opened read-only).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_table_providers::postgres::PostgresTableFactory;
use datafusion_table_providers::sql::db_connection_pool::postgrespool::PostgresConnectionPool;
use datafusion_table_providers::util::secrets::to_secret_map;
use futures::TryStreamExt;
use url::Url;

use crate::config::StoreOptions;

/// Whether a location is a database table rather than files.
pub fn is_database(location: &str) -> bool {
    let lower = location.to_ascii_lowercase();
    lower.starts_with("postgres://")
        || lower.starts_with("postgresql://")
        || lower.starts_with("sqlite://")
}

/// The table provider of a database location, on a read-only session.
pub async fn provider(location: &str, store: &StoreOptions) -> Result<Arc<dyn TableProvider>> {
    if location.to_ascii_lowercase().starts_with("sqlite://") {
        return sqlite(location).await;
    }
    postgres(location, store.query_timeout).await
}

/// `sqlite:///ABSOLUTE/PATH.db?table=NAME` or `sqlite://RELATIVE/PATH.db?table=NAME` (relative to
/// the config file, or to the working directory on the command line). The file is opened read-only (`mode=ro`): SQLite itself refuses any
/// write, and nothing (not even a journal mode) is changed in it.
async fn sqlite(location: &str) -> Result<Arc<dyn TableProvider>> {
    use datafusion_table_providers::sql::db_connection_pool::{JoinPushDown, Mode};
    use datafusion_table_providers::sqlite::SqliteTableFactory;
    use datafusion_table_providers::sqlite::pool::SqliteConnectionPool;

    let rest = &location["sqlite://".len()..];
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let table = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "table")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("database URL has no table: add ?table=NAME"))?;
    let path = percent_decode(path);
    if !std::path::Path::new(&path).is_file() {
        bail!("SQLite file {path} does not exist");
    }
    let read_only = format!("file:{path}?mode=ro");
    let pool = SqliteConnectionPool::new(
        &read_only,
        Mode::File,
        JoinPushDown::AllowedFor(path.clone()),
        Vec::new(),
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| anyhow!("cannot open {path}: {}", first_line(&e.to_string())))?;
    SqliteTableFactory::new(Arc::new(pool))
        .table_provider(TableReference::bare(table.clone()))
        .await
        .map(counted)
        .map_err(|e| anyhow!("table {table}: {}", first_line(&e.to_string())))
}

/// `postgres://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE?table=[SCHEMA.]NAME`, with `PG*` for what
/// it leaves out; every transaction of the session is read-only.
async fn postgres(
    location: &str,
    query_timeout: Option<Duration>,
) -> Result<Arc<dyn TableProvider>> {
    let url = Url::parse(location).map_err(|e| anyhow!("database URL: {e}"))?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let Some(table) = query.get("table").filter(|t| !t.is_empty()) else {
        bail!("database URL has no table: add ?table=SCHEMA.NAME (or ?table=NAME)");
    };
    let mut params: HashMap<String, String> = HashMap::new();
    let mut options = "-c default_transaction_read_only=on".to_string();
    if let Some(limit) = query_timeout {
        options.push_str(&format!(
            " -c statement_timeout={}",
            limit.as_millis().max(1)
        ));
    }
    let host = url.host_str().map(str::to_string).or_else(|| env("PGHOST"));
    let database = Some(url.path().trim_start_matches('/'))
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .or_else(|| env("PGDATABASE"));
    let user = Some(url.username())
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .or_else(|| env("PGUSER"));
    let password = url
        .password()
        .map(percent_decode)
        .or_else(|| env("PGPASSWORD"));
    let port = url
        .port()
        .map(|p| p.to_string())
        .or_else(|| env("PGPORT"))
        .unwrap_or_else(|| "5432".to_string());
    let sslmode = query
        .get("sslmode")
        .cloned()
        .or_else(|| env("PGSSLMODE"))
        .unwrap_or_else(|| "prefer".to_string());
    for (key, value) in [
        ("host", host),
        ("db", database),
        ("user", user),
        ("pass", password),
        ("port", Some(port)),
        ("sslmode", Some(sslmode)),
        // Every transaction of the session is read-only: a write fails in the database itself;
        // and a check that times out leaves no query behind on the server.
        ("options", Some(options)),
    ] {
        if let Some(value) = value {
            params.insert(key.to_string(), value);
        }
    }
    if !params.contains_key("host") {
        bail!("database URL has no host (and PGHOST is not set)");
    }
    let pool = PostgresConnectionPool::new(to_secret_map(params))
        .await
        .map_err(|e| anyhow!("cannot connect: {}", first_line(&e.to_string())))?;
    let reference = match table.split_once('.') {
        Some((schema, name)) => TableReference::partial(schema.to_string(), name.to_string()),
        None => TableReference::bare(table.to_string()),
    };
    PostgresTableFactory::new(Arc::new(pool))
        .table_provider(reference)
        .await
        .map(counted)
        .map_err(|e| anyhow!("table {table}: {}", first_line(&e.to_string())))
}

/// `%XX` escapes of a URL's user info back to bytes (a password may hold `@`, `:` or `/`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The provider with its scans counted: the rows that came over the wire show in the plan's
/// metrics (`DatabaseScan`, `output_rows`). Reads only: writes are not delegated.
fn counted(inner: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
    Arc::new(Counted(inner))
}

#[derive(Debug)]
struct Counted(Arc<dyn TableProvider>);

#[async_trait::async_trait]
impl TableProvider for Counted {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.0.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let input = self.0.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(DatabaseScan {
            input,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// Passes the database's rows through, counting them.
#[derive(Debug)]
struct DatabaseScan {
    input: Arc<dyn ExecutionPlan>,
    metrics: ExecutionPlanMetricsSet,
}

impl DisplayAs for DatabaseScan {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "DatabaseScan")
    }
}

#[allow(deprecated)]
impl ExecutionPlan for DatabaseScan {
    fn name(&self) -> &'static str {
        "DatabaseScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    // A pass-through: no repartitioning of the database's stream below it.
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

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(DatabaseScan {
            input: children.swap_remove(0),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn with_new_children_and_same_properties(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let stream = self.input.execute(partition, context)?;
        let schema = stream.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.inspect_ok(move |batch| rows.add(batch.num_rows())),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_percent_decoded() {
        assert_eq!(percent_decode("p%40ss%3Aw%2Fd+x"), "p@ss:w/d+x");
        assert_eq!(percent_decode("plain%"), "plain%");
        assert!(is_database("postgresql://h/db?table=t"));
        assert!(!is_database("s3://bucket/postgres://"));
    }
}
