//! Delta Lake sources through the `deltalake` crate: the table as of its latest version, a given
//! version, or a point in time (time travel), so a nightly run compares what the stream had
//! committed by then. The object store is dualrun's own (built from the standard environment),
//! handed to deltalake, so Delta tables live wherever Parquet tables can.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTableBuilder;

use crate::config::SourceSpec;
use crate::sources::Listed;

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
    register(provider)?;
    tracing::debug!(version = ?table.version(), files, "registered Delta table");
    Ok(Listed {
        files,
        bytes: 0,
        prefix: url.prefix().as_ref().to_string(),
    })
}
