//! `dualrun history`: the run records, oldest first.

use anyhow::{Result, bail};

use crate::cli::HistoryArgs;
use crate::report;
use crate::terminal::write_output;
use crate::verdict::Exit;

pub async fn history(args: HistoryArgs) -> Result<Exit> {
    if args.format == crate::report::OutputFormat::Html {
        bail!(
            "--format html: the history is text, json or markdown; `dualrun board` draws it as pages"
        );
    }
    let plan = super::plan_of(&args.config)?;
    let check = args.check.as_deref();
    let records = super::read_history(&plan, check).await?;
    if let Some(wanted) = check
        && records.is_empty()
        && !plan.all_checks.iter().any(|c| c.name == wanted)
    {
        let names: Vec<&str> = plan.all_checks.iter().map(|c| c.name.as_str()).collect();
        bail!(
            "--check '{wanted}' is not in the config and has no history records (checks: {})",
            names.join(", ")
        );
    }
    write_output(&report::history::render(&records, args.format), None)?;
    Ok(Exit::Match)
}
