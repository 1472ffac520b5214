//! Where tables live: a location (local path or URL) parsed and checked, and the object store
//! behind it built once per bucket from the standard environment of its cloud. Table sources
//! and the run history share it, so both reach the same stores with the same retry bounds.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};
use url::Url;

use crate::config::StoreOptions;

/// Parses a table location. Local paths must exist (the message says which); a directory gets a
/// trailing slash so DataFusion lists it as a collection.
pub fn table_url(location: &str) -> Result<ListingTableUrl> {
    if let Some((scheme, _)) = location.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(
            scheme.as_str(),
            "file"
                | "s3"
                | "s3a"
                | "gs"
                | "gcs"
                | "az"
                | "azure"
                | "abfs"
                | "abfss"
                | "http"
                | "https"
        ) {
            bail!(
                "unsupported URL scheme '{scheme}://' (supported: a local path, file://, s3://, gs://, az://, abfss://, http(s)://)"
            );
        }
        if scheme != "file" {
            return ListingTableUrl::parse(location).map_err(|e| anyhow!("bad URL: {e}"));
        }
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("path {path} does not exist"),
        _ => anyhow!("path {path} cannot be read: {e}"),
    })?;
    let mut text = path.to_string();
    if meta.is_dir() && !text.ends_with('/') {
        text.push('/');
    }
    ListingTableUrl::parse(&text).map_err(|e| anyhow!("bad path {path}: {e}"))
}

/// Registers the object store of a remote URL, built from the standard environment of its
/// cloud (AWS_*, GOOGLE_*, AZURE_*), once per bucket.
pub fn register_object_store(
    ctx: &SessionContext,
    url: &ListingTableUrl,
    options: &StoreOptions,
) -> Result<()> {
    let url: &Url = url.as_ref();
    let scheme = url.scheme();
    if scheme == "file" {
        return Ok(());
    }
    let base = Url::parse(&format!("{}://{}", scheme, url.authority()))
        .map_err(|e| anyhow!("bad URL: {e}"))?;
    if ctx
        .runtime_env()
        .object_store_registry
        .get_store(&base)
        .is_ok()
    {
        return Ok(());
    }
    // Bounded retries with exponential backoff and a per-request timeout; set as config keys so
    // the client options the environment gave (AWS_ALLOW_HTTP, proxies, …) are kept.
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: options.retries,
        retry_timeout: options.request_timeout * (options.retries as u32 + 1),
    };
    let timeout = humantime::format_duration(options.request_timeout).to_string();
    let connect = humantime::format_duration(
        options
            .request_timeout
            .min(std::time::Duration::from_secs(10)),
    )
    .to_string();
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" | "s3a" => Arc::new(
            AmazonS3Builder::from_env()
                .with_url(base.as_str())
                .with_retry(retry)
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                    &timeout,
                )
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    &connect,
                )
                .build()
                .map_err(|e| anyhow!("S3 configuration: {e}"))?,
        ),
        "gs" | "gcs" => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_url(base.as_str())
                .with_retry(retry)
                .with_config(GoogleConfigKey::Client(ClientConfigKey::Timeout), &timeout)
                .with_config(
                    GoogleConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    &connect,
                )
                .build()
                .map_err(|e| anyhow!("GCS configuration: {e}"))?,
        ),
        "az" | "azure" | "abfs" | "abfss" => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry)
                .with_config(AzureConfigKey::Client(ClientConfigKey::Timeout), &timeout)
                .with_config(
                    AzureConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    &connect,
                )
                .build()
                .map_err(|e| anyhow!("Azure configuration: {e}"))?,
        ),
        "http" | "https" => Arc::new(
            HttpBuilder::new()
                .with_url(base.as_str())
                .with_retry(retry)
                // The user asked for this very URL; plain http:// is only refused by default.
                .with_config(
                    ClientConfigKey::AllowHttp,
                    if scheme == "http" { "true" } else { "false" },
                )
                .with_config(ClientConfigKey::Timeout, &timeout)
                .with_config(ClientConfigKey::ConnectTimeout, &connect)
                .build()
                .map_err(|e| anyhow!("HTTP store: {e}"))?,
        ),
        other => bail!("unsupported URL scheme '{other}://'"),
    };
    ctx.register_object_store(&base, store);
    Ok(())
}
