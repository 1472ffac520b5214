//! `dualrun board`: the migration board as a static site, from the run history alone, for teams
//! that publish to a bucket instead of running `dualrun serve` (which serves the same pages).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::BoardArgs;
use crate::config::Plan;
use crate::gate;
use crate::history::RunRecord;
use crate::report::html;
use crate::verdict::Exit;

pub async fn board(args: BoardArgs) -> Result<Exit> {
    let plan = super::plan_of(&args.config)?;
    let records = super::read_history(&plan, None).await?;
    let mut site = pages(
        &plan,
        &records,
        args.report.is_some().then_some("report.html"),
    );
    if let Some(report) = &args.report {
        let html = std::fs::read_to_string(report)
            .with_context(|| format!("--report {}: cannot read it", report.display()))?;
        site.push(("report.html".to_string(), html));
    }
    write_site(&args.output, &site)?;
    eprintln!(
        "dualrun: wrote the migration board to {} (open index.html)",
        args.output.display()
    );
    Ok(Exit::Match)
}

/// Every page of the board, front page first: (path in the site, HTML).
/// `report`: the path of the last run's HTML report in the site, when there is one.
pub fn pages(plan: &Plan, records: &[RunRecord], report: Option<&str>) -> Vec<(String, String)> {
    let gate = gate::evaluate(&plan.all_checks, records);
    let nights: BTreeMap<String, Vec<gate::Night>> = plan
        .all_checks
        .iter()
        .map(|check| (check.name.clone(), gate::nights(check, records)))
        .collect();
    let generated_at = crate::history::timestamp(chrono::Utc::now());
    let mut pages = vec![(
        "index.html".to_string(),
        html::board(&gate, &nights, &generated_at, report),
    )];
    for check in &gate.checks {
        pages.push((
            html::check_page(&check.name),
            html::board_check(check, &nights[&check.name], "../index.html"),
        ));
    }
    pages
}

fn write_site(dir: &Path, pages: &[(String, String)]) -> Result<()> {
    for (path, text) in pages {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}
