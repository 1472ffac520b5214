//! `dualrun gate`: exit 0 when batch removal is ready, 1 when not.

use anyhow::Result;

use crate::cli::GateArgs;
use crate::gate;
use crate::report::{self, OutputFormat};
use crate::terminal::{width, write_output};
use crate::verdict::Exit;

pub async fn gate(args: GateArgs) -> Result<Exit> {
    let plan = super::plan_of(&args.config)?;
    let records = super::read_history(&plan, None).await?;
    let gate = gate::evaluate(&plan.all_checks, &records);
    let text = match args.format {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&gate)?),
        OutputFormat::Markdown => report::gate::markdown(&gate),
        OutputFormat::Text => report::gate::text(&gate, width()),
    };
    write_output(&text, args.output.as_deref())?;
    Ok(if gate.ready {
        Exit::Match
    } else {
        Exit::Diverged
    })
}
