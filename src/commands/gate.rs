//! `dualrun gate`: exit 0 when batch removal is ready, 1 when not.

use anyhow::{Result, anyhow, bail};

use crate::cli::GateArgs;
use crate::config::Plan;
use crate::engine::Engine;
use crate::gate::{self, Stage};
use crate::history::{History, Mark, RunRecord};
use crate::report::{self, OutputFormat};
use crate::terminal::{width, write_output};
use crate::verdict::Exit;

pub async fn gate(args: GateArgs) -> Result<Exit> {
    let plan = super::plan_of(&args.config)?;
    let mut records = super::read_history(&plan, None).await?;
    if let Some([step, name]) = args.mark.as_deref() {
        records.push(mark(&plan, &records, step, name).await?);
    }
    let gate = gate::evaluate(&plan.all_checks, &records);
    let text = match args.format {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&gate)?),
        OutputFormat::Markdown => report::gate::markdown(&gate),
        OutputFormat::Text => report::gate::text(&gate, width()),
        OutputFormat::Html => super::board::pages(&plan, &records, None).remove(0).1,
    };
    write_output(&text, args.output.as_deref())?;
    Ok(if gate.ready {
        Exit::Match
    } else {
        Exit::Diverged
    })
}

/// Writes the lifecycle record of `dualrun gate --mark STEP CHECK`, after checking the check
/// is where that step starts: proven before migrated, migrated before retired.
async fn mark(plan: &Plan, records: &[RunRecord], step: &str, name: &str) -> Result<RunRecord> {
    let mark = match step {
        "migrated" => Mark::Migrated,
        "retired" => Mark::Retired,
        other => bail!("--mark {other}: expected migrated or retired"),
    };
    let check = plan
        .all_checks
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = plan.all_checks.iter().map(|c| c.name.as_str()).collect();
            anyhow!(
                "--mark {step} {name}: no such check (checks: {})",
                names.join(", ")
            )
        })?;
    let now = gate::evaluate(std::slice::from_ref(check), records);
    let stage = now.checks[0].stage;
    let allowed = match mark {
        Mark::Migrated => matches!(stage, Stage::Proven),
        Mark::Retired => matches!(stage, Stage::Migrated) && !now.checks[0].incident,
    };
    if mark == Mark::Retired && now.checks[0].incident {
        bail!(
            "--mark {step} {name}: the stream tables of '{name}' disagree with batch tonight (a stream incident); retire its batch once the stream agrees again"
        );
    }
    if !allowed {
        let needs = match mark {
            Mark::Migrated => "proven",
            Mark::Retired => "migrated",
        };
        bail!(
            "--mark {step} {name}: the check is {}, not {needs}; a check is marked {step} only once it is {needs}",
            crate::report::gate::stage_text(&now.checks[0])
        );
    }
    let engine = Engine::new(&plan.engine).await?;
    let location = plan
        .history
        .as_deref()
        .ok_or_else(|| anyhow!("no history location"))?;
    let history = History::open(&engine.ctx, location, &plan.engine.store)?;
    let record = RunRecord::mark(check, mark, chrono::Utc::now());
    history.append(&engine.ctx, &record).await?;
    eprintln!("dualrun: check '{name}' marked {}", mark.name());
    Ok(record)
}
