//! The Pushgateway's way out, for jobs that end before Prometheus could scrape them.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use base64::Engine as _;
use prometheus::Registry;

use super::{
    Families, LastSuccess, encode, register_last_success, registry, run_completed, unix_now,
};
use crate::config::PushgatewaySpec;
use crate::report::RunReport;
use crate::verdict::CheckStatus;

/// Pushes a run's metrics to the Pushgateway the config names (see [`Gateway::push`]).
pub async fn push(gateway: &PushgatewaySpec, report: &RunReport) -> Result<()> {
    Gateway(gateway).push(report).await
}

struct Gateway<'a>(&'a PushgatewaySpec);

fn path_segment(name: &str, value: &str) -> String {
    // base64 keeps any label value (slashes included) a single path segment.
    let encoded = base64::engine::general_purpose::URL_SAFE.encode(value.as_bytes());
    format!(
        "/{name}@base64/{}",
        if encoded.is_empty() {
            "=".to_string()
        } else {
            encoded
        }
    )
}

impl Gateway<'_> {
    fn group_url(&self, check: Option<&str>) -> String {
        let mut url = self.0.url.trim_end_matches('/').to_string();
        url.push_str("/metrics");
        url.push_str(&path_segment("job", &self.0.job));
        for (name, value) in &self.0.grouping {
            url.push_str(&path_segment(name, value));
        }
        if let Some(check) = check {
            url.push_str(&path_segment("check", check));
        }
        url
    }

    /// Pushes a run with PUT into three kinds of groups:
    /// - `{job, …grouping}`: the run's results, replaced whole by every run (no stale series);
    /// - `{job, …grouping, check=NAME}`: that check's last-success time, replaced only when the
    ///   check reached a verdict;
    /// - `{job, …grouping, check=""}`: the run's last-success time, replaced only when the whole
    ///   run completed (an empty label is no label to Prometheus).
    ///
    /// So a failed run updates `up`/`passed` but leaves the last-success timestamps alone.
    pub async fn push(&self, report: &RunReport) -> Result<()> {
        let client = reqwest::Client::builder()
            .timeout(self.0.timeout)
            .build()
            .map_err(|e| anyhow!("pushgateway client: {e}"))?;
        let now = unix_now();
        let results = encode(&registry(
            report,
            &LastSuccess::default(),
            Families::ResultsOnly,
        )?)?;
        self.put(&client, self.group_url(None), results).await?;
        for check in report
            .checks
            .iter()
            .filter(|c| c.status != CheckStatus::Error)
        {
            let only = LastSuccess {
                checks: [(check.name.clone(), now)].into(),
                run: None,
            };
            self.put(
                &client,
                self.group_url(Some(&check.name)),
                encode_last_success(&only)?,
            )
            .await?;
        }
        if run_completed(report) {
            let only = LastSuccess {
                checks: BTreeMap::new(),
                run: Some(now),
            };
            self.put(
                &client,
                self.group_url(Some("")),
                encode_last_success(&only)?,
            )
            .await?;
        }
        Ok(())
    }

    async fn put(&self, client: &reqwest::Client, url: String, body: String) -> Result<()> {
        let shown = crate::redact::redact_url(&self.0.url);
        let response = client
            .put(&url)
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "push to the Pushgateway at {shown} failed: {}",
                    describe_reqwest(e)
                )
            })?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            bail!(
                "the Pushgateway at {shown} answered {status}: {}",
                text.trim()
            );
        }
        Ok(())
    }
}

fn describe_reqwest(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "cannot connect".to_string()
    } else {
        error.without_url().to_string()
    }
}

/// Only the last-success families, for their own Pushgateway groups.
fn encode_last_success(last_success: &LastSuccess) -> Result<String> {
    let registry = Registry::new();
    register_last_success(&registry, last_success)?;
    encode(&registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_become_single_path_segments() {
        assert_eq!(path_segment("check", "a/b"), "/check@base64/YS9i");
        assert_eq!(path_segment("check", ""), "/check@base64/=");
    }
}
