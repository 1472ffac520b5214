//! Tables in a database: stream pipelines often land in a serving database (a Flink or Kafka
//! Connect JDBC sink into PostgreSQL) while batch sits in files. The table is read through
//! `datafusion-table-providers`, so DataFusion still evaluates the analysis on both sides (only
//! projections and filters go to the database, and the rows that come back are counted), and
//! every session is read-only in the database itself (PostgreSQL's
//! `default_transaction_read_only`, MySQL's `SET SESSION TRANSACTION READ ONLY`, SQLite's
//! `mode=ro`), on top of dualrun's SELECT-only rule.
//!
//! Locations: `postgres://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE?table=[SCHEMA.]NAME[&sslmode=…]`
//! (what the URL leaves out comes from `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
//! `PGSSLMODE`), `mysql://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE?table=NAME[&sslmode=…]` (also
//! `mariadb://`; from `MYSQL_HOST`, `MYSQL_TCP_PORT`, `MYSQL_USER`, `MYSQL_PWD`,
//! `MYSQL_DATABASE`, `MYSQL_SSLMODE`) and `sqlite:///PATH.db?table=NAME` (opened read-only).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_table_providers::postgres::PostgresTableFactory;
use datafusion_table_providers::sql::db_connection_pool::dbconnection::DbConnection;
use datafusion_table_providers::sql::db_connection_pool::postgrespool::PostgresConnectionPool;
use datafusion_table_providers::sql::db_connection_pool::{DbConnectionPool, JoinPushDown};
use datafusion_table_providers::util::secrets::to_secret_map;
use futures::TryStreamExt;
use url::Url;

use crate::config::StoreOptions;

/// Whether a location is a database table rather than files.
pub fn is_database(location: &str) -> bool {
    let lower = location.to_ascii_lowercase();
    lower.starts_with("postgres://")
        || lower.starts_with("postgresql://")
        || lower.starts_with("mysql://")
        || lower.starts_with("mariadb://")
        || lower.starts_with("sqlite://")
}

/// The table provider of a database location, on a read-only session; `label` names the table
/// and side in errors that happen while its rows come over the wire.
pub async fn provider(
    location: &str,
    store: &StoreOptions,
    label: &str,
) -> Result<Arc<dyn TableProvider>> {
    let lower = location.to_ascii_lowercase();
    let inner = if lower.starts_with("sqlite://") {
        sqlite(location).await?
    } else if lower.starts_with("mysql://") || lower.starts_with("mariadb://") {
        mysql(location, store.query_timeout).await?
    } else {
        postgres(location, store.query_timeout).await?
    };
    Ok(Arc::new(Counted {
        inner,
        label: Arc::from(label),
    }))
}

/// `sqlite:///ABSOLUTE/PATH.db?table=NAME` or `sqlite://RELATIVE/PATH.db?table=NAME` (relative to
/// the config file, or to the working directory on the command line). The file is opened read-only (`mode=ro`): SQLite itself refuses any
/// write, and nothing (not even a journal mode) is changed in it.
async fn sqlite(location: &str) -> Result<Arc<dyn TableProvider>> {
    use datafusion_table_providers::sql::db_connection_pool::Mode;
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
        .map_err(|e| anyhow!("cannot connect: {}", first_line(&e.to_string())))?
        // json and jsonb as their text (PostgreSQL's own rendering); any other type the
        // provider cannot map is still an error naming the column.
        .with_unsupported_type_action(datafusion_table_providers::UnsupportedTypeAction::String);
    let reference = match table.split_once('.') {
        Some((schema, name)) => TableReference::partial(schema.to_string(), name.to_string()),
        None => TableReference::bare(table.to_string()),
    };
    PostgresTableFactory::new(Arc::new(pool))
        .table_provider(reference)
        .await
        .map_err(|e| anyhow!("table {table}: {}", first_line(&e.to_string())))
}

/// `mysql://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE?table=NAME` (or `mariadb://`), with
/// `MYSQL_*` for what it leaves out. Every session is made read-only (and time-limited when the
/// check has a timeout) before it runs a query: see [`ReadOnlyMySql`].
async fn mysql(location: &str, query_timeout: Option<Duration>) -> Result<Arc<dyn TableProvider>> {
    use datafusion::sql::unparser::dialect::MySqlDialect;
    use datafusion_table_providers::sql::sql_provider_datafusion::SqlTable;

    let (pool, table) = mysql_pool(location, query_timeout).await?;
    let pool: Arc<dyn DbConnectionPool<mysql_async::Conn, MySqlParameter> + Send + Sync> =
        Arc::new(pool);
    let table_provider = SqlTable::new("mysql", &pool, TableReference::bare(table.clone()))
        .await
        .map_err(|e| anyhow!("table {table}: {}", first_line(&e.to_string())))?
        .with_dialect(Arc::new(MySqlDialect {}));
    Ok(Arc::new(table_provider))
}

/// The read-only pool of a MySQL location, and the table it names.
async fn mysql_pool(
    location: &str,
    query_timeout: Option<Duration>,
) -> Result<(ReadOnlyMySql, String)> {
    use datafusion_table_providers::sql::db_connection_pool::mysqlpool::MySQLConnectionPool;

    let url = Url::parse(location).map_err(|e| anyhow!("database URL: {e}"))?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let Some(table) = query.get("table").filter(|t| !t.is_empty()) else {
        bail!("database URL has no table: add ?table=NAME");
    };
    let sslmode = query
        .get("sslmode")
        .cloned()
        .or_else(|| env("MYSQL_SSLMODE"))
        .unwrap_or_else(|| "preferred".to_string())
        .to_ascii_lowercase();
    if !["disabled", "preferred", "required"].contains(&sslmode.as_str()) {
        bail!("database URL: sslmode '{sslmode}' is not one of disabled, preferred, required");
    }
    let mut params: HashMap<String, String> = HashMap::new();
    for (key, value) in [
        (
            "host",
            url.host_str()
                .map(str::to_string)
                .or_else(|| env("MYSQL_HOST")),
        ),
        (
            "tcp_port",
            Some(
                url.port()
                    .map(|p| p.to_string())
                    .or_else(|| env("MYSQL_TCP_PORT"))
                    .unwrap_or_else(|| "3306".to_string()),
            ),
        ),
        (
            "user",
            Some(url.username())
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .or_else(|| env("MYSQL_USER")),
        ),
        (
            "pass",
            url.password()
                .map(percent_decode)
                .or_else(|| env("MYSQL_PWD")),
        ),
        (
            "db",
            Some(url.path().trim_start_matches('/'))
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .or_else(|| env("MYSQL_DATABASE")),
        ),
        ("sslmode", Some(sslmode)),
    ] {
        if let Some(value) = value {
            params.insert(key.to_string(), value);
        }
    }
    if !params.contains_key("host") {
        bail!("database URL has no host (and MYSQL_HOST is not set)");
    }
    if !params.contains_key("db") {
        bail!("database URL has no database (and MYSQL_DATABASE is not set)");
    }
    let pool = MySQLConnectionPool::new(to_secret_map(params))
        .await
        .map_err(|e| anyhow!("cannot connect: {}", first_line(&e.to_string())))?;
    let pool = ReadOnlyMySql {
        inner: pool,
        query_timeout,
    };
    Ok((pool, table.clone()))
}

type MySqlParameter = &'static (dyn mysql_async::prelude::ToValue + Sync);

/// MySQL's connections as the table provider's pool hands them out, each made read-only first:
/// the pool's own setup statements cannot be extended, so the session is set on every
/// connection before the provider sees it. A write through it fails in the server itself
/// (ERROR 1792); with a check timeout the server also stops the statement
/// (`max_statement_time` on MariaDB, `max_execution_time` on MySQL).
struct ReadOnlyMySql {
    inner: datafusion_table_providers::sql::db_connection_pool::mysqlpool::MySQLConnectionPool,
    query_timeout: Option<Duration>,
}

#[async_trait::async_trait]
impl DbConnectionPool<mysql_async::Conn, MySqlParameter> for ReadOnlyMySql {
    async fn connect(
        &self,
    ) -> std::result::Result<
        Box<dyn DbConnection<mysql_async::Conn, MySqlParameter>>,
        Box<dyn std::error::Error + Send + Sync>,
    > {
        use mysql_async::prelude::Queryable;
        let connection = self.inner.connect_direct().await?;
        {
            let mut session = connection.conn.lock().await;
            session
                .query_drop("SET SESSION TRANSACTION READ ONLY")
                .await?;
            if let Some(limit) = self.query_timeout {
                let mariadb = format!(
                    "SET SESSION max_statement_time = {:.3}",
                    limit.as_secs_f64().max(0.001)
                );
                if session.query_drop(mariadb).await.is_err() {
                    let mysql = format!(
                        "SET SESSION max_execution_time = {}",
                        limit.as_millis().max(1)
                    );
                    session.query_drop(mysql).await?;
                }
            }
        }
        Ok(Box::new(connection))
    }

    fn join_push_down(&self) -> JoinPushDown {
        // One table per provider: nothing is joined in the database.
        JoinPushDown::Disallow
    }
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
/// metrics (`DatabaseScan`, `output_rows`), and an error while they come (a connection dropped
/// mid-scan) names the table and side. Reads only: writes are not delegated.
#[derive(Debug)]
struct Counted {
    inner: Arc<dyn TableProvider>,
    label: Arc<str>,
}

#[async_trait::async_trait]
impl TableProvider for Counted {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let input = self.inner.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(DatabaseScan {
            input,
            label: Arc::clone(&self.label),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// Passes the database's rows through, counting them.
#[derive(Debug)]
struct DatabaseScan {
    input: Arc<dyn ExecutionPlan>,
    label: Arc<str>,
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
            label: Arc::clone(&self.label),
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
        let label = Arc::clone(&self.label);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream
                .inspect_ok(move |batch| rows.add(batch.num_rows()))
                .map_err(move |error| {
                    DataFusionError::Execution(format!(
                        "{label}: {}",
                        first_line(&error.find_root().to_string())
                    ))
                }),
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
        assert!(is_database("mariadb://h/db?table=t") && is_database("MYSQL://h/db?table=t"));
        assert!(!is_database("s3://bucket/postgres://"));
    }

    /// Runs SQL as root on the test server (scripts/servers.sh, started by `make test`).
    fn mariadb_root(sql: &str) {
        let socket = std::env::var("DUALRUN_TEST_MYSQL_SOCKET")
            .expect("DUALRUN_TEST_MYSQL_SOCKET is not set: run the tests through `make test`");
        let output = std::process::Command::new("mariadb")
            .args(["--no-defaults", "--socket", &socket, "-uroot", "-e", sql])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }

    /// The connections dualrun reads MySQL through refuse writes in the server itself, even for
    /// a user allowed to write, and carry the check's timeout.
    #[test]
    fn mysql_sessions_refuse_writes_and_carry_the_timeout() {
        use datafusion_table_providers::sql::db_connection_pool::dbconnection::mysqlconn::MySQLConnection;
        use mysql_async::prelude::Queryable;

        mariadb_root(
            "DROP DATABASE IF EXISTS dr_my_unit; CREATE DATABASE dr_my_unit; \
             CREATE TABLE dr_my_unit.t (i INT)",
        );
        let admin = std::env::var("DUALRUN_TEST_MYSQL_ADMIN").unwrap();
        let location = format!(
            "{}/dr_my_unit?table=t&sslmode=disabled",
            admin.rsplit_once('/').unwrap().0
        );
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let (pool, table) = mysql_pool(&location, Some(Duration::from_millis(2500)))
                .await
                .unwrap();
            assert_eq!(table, "t");
            let connection = pool.connect().await.unwrap();
            let connection = connection
                .as_any()
                .downcast_ref::<MySQLConnection>()
                .unwrap();
            let mut session = connection.conn.lock().await;
            let write = session.query_drop("INSERT INTO t VALUES (1)").await;
            let error = write
                .expect_err("a write through a read-only session")
                .to_string();
            assert!(error.contains("READ ONLY"), "{error}");
            let limit: Option<f64> = session
                .query_first("SELECT @@max_statement_time")
                .await
                .unwrap();
            assert_eq!(limit, Some(2.5));
        });
    }
}
