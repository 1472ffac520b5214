//! `dualrun validate`: plans every check on both sides without reading rows, and reports
//! schema drift and nondeterministic constructs.

use anyhow::Result;

use crate::cli::ValidateArgs;
use crate::config::{Plan, RunFlags, Side};
use crate::engine::{Engine, lint};
use crate::error::Trouble;
use crate::redact::redact_url;
use crate::report::validate::{TableSide, Validated, render};
use crate::sources::{CATALOG, Catalog};
use crate::terminal::write_output;
use crate::verdict::{self, CheckStatus, Exit};
use datafusion::common::TableReference;

pub async fn validate(args: ValidateArgs) -> Result<Exit> {
    let flags = RunFlags {
        params: &args.params,
        ..Default::default()
    };
    let plan = Plan::from_config_file(&args.config, &flags)?;
    let (engine, catalog) = super::open(&plan).await?;
    let mut checks = Vec::new();
    let mut worst = CheckStatus::Match;
    for check in &plan.checks {
        let planned = async {
            let batch = engine
                .plan_side(check, Side::Batch, &plan.params, &catalog)
                .await?;
            let stream = engine
                .plan_side(check, Side::Stream, &plan.params, &catalog)
                .await?;
            if engine.remote.is_some() && !check.embedded {
                crate::engine::ballista::ensure_distributable(&check.name, &batch, &stream)?;
            }
            let hazards = lint::nondeterminism(&batch, &check.key, &check.allow_nondeterministic);
            Ok::<_, anyhow::Error>((
                crate::diff::align::align(
                    check,
                    batch.schema(),
                    stream.schema(),
                    engine.spec.unpacked_values,
                )?,
                hazards,
            ))
        }
        .await;
        let (status, validated) = match planned {
            Err(error) => (
                CheckStatus::Error,
                Validated::Failed {
                    name: check.name.clone(),
                    message: Trouble::of(&error).message,
                },
            ),
            Ok((alignment, hazards)) => (
                if alignment.schema.diverges() {
                    CheckStatus::Diverged
                } else {
                    CheckStatus::Match
                },
                Validated::Planned {
                    name: check.name.clone(),
                    keys: alignment.keys.len(),
                    values: alignment.values.len(),
                    schema: alignment.schema,
                    hazards,
                },
            ),
        };
        worst = verdict::run_status([worst, status]);
        checks.push(validated);
    }
    write_output(
        &render(&tables(&engine, &plan, &catalog).await, &checks),
        None,
    )?;
    Ok(Exit::of(worst))
}

/// Every table per side: where it comes from and the columns it gives (or why it failed).
async fn tables(engine: &Engine, plan: &Plan, catalog: &Catalog) -> Vec<TableSide> {
    let logical = plan.tables.iter().flat_map(|t| {
        Side::BOTH
            .into_iter()
            .map(move |side| (t.name.as_str(), side, t.side(side), false))
    });
    let raw = plan
        .raw_tables
        .iter()
        .map(|r| (r.name.as_str(), r.side, &r.source, true));
    let mut out = Vec::new();
    for (name, side, source, is_raw) in logical.chain(raw) {
        let origin = match (&source.view, &source.changelog) {
            (Some(sql), _) => {
                let sql: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
                format!("view: {sql}")
            }
            (None, Some(changelog)) => format!(
                "change log ({}) at {}",
                serde_json::to_value(changelog.shape)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                redact_url(&source.url)
            ),
            (None, None) if is_database(&source.url) => {
                format!("database table at {}", redact_url(&source.url))
            }
            (None, None) => match source.format {
                Some(format) => format!("{} files at {}", format.name(), redact_url(&source.url)),
                None => format!("files at {}", redact_url(&source.url)),
            },
        };
        let columns = match catalog.failure(side, name) {
            Some(failure) => Err(failure.to_string()),
            None => engine
                .ctx
                .table_provider(TableReference::full(CATALOG, side.name(), name))
                .await
                .map(|provider| {
                    provider
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| (f.name().clone(), f.data_type().to_string()))
                        .collect()
                })
                .map_err(|e| e.to_string()),
        };
        out.push(TableSide {
            name: name.to_string(),
            side: side.name(),
            raw: is_raw,
            origin,
            columns,
        });
    }
    out
}

#[cfg(feature = "databases")]
fn is_database(location: &str) -> bool {
    crate::sources::database::is_database(location)
}

#[cfg(not(feature = "databases"))]
fn is_database(_location: &str) -> bool {
    false
}
