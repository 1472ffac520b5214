//! `dualrun validate`: plans every check on both sides without reading rows, and reports
//! schema drift and nondeterministic constructs.

use anyhow::Result;

use crate::cli::ValidateArgs;
use crate::config::{Plan, RunFlags, Side};
use crate::engine::{Engine, lint};
use crate::error::Trouble;
use crate::report::validate::{Validated, render};
use crate::sources;
use crate::terminal::write_output;
use crate::verdict::{self, CheckStatus, Exit};

pub async fn validate(args: ValidateArgs) -> Result<Exit> {
    let flags = RunFlags {
        params: &args.params,
        ..Default::default()
    };
    let plan = Plan::from_config_file(&args.config, &flags)?;
    let engine = Engine::new(&plan.engine).await?;
    let catalog = sources::register_tables(&engine.ctx, &plan.tables, &plan.engine.store).await?;
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
                crate::diff::align::align(check, batch.schema(), stream.schema())?,
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
    write_output(&render(&checks), None)?;
    Ok(Exit::of(worst))
}
