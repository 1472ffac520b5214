//! What a diff read: files and bytes per side, taken from the running physical plan's own
//! metrics. It proves partition pruning (a nightly run for one `run_date` reads one partition)
//! and feeds the progress bar while the plan runs.

use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};

use crate::config::Side;
use crate::sources::Catalog;

use super::result::{DatabaseQuery, ScanStats};

fn visit(plan: &Arc<dyn ExecutionPlan>, found: &mut Vec<(Vec<(String, u64)>, u64)>) {
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>()
        && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
    {
        let files = config
            .file_groups
            .iter()
            .flat_map(|group| group.iter())
            .map(|file| (file.object_meta.location.to_string(), file.object_meta.size))
            .collect();
        let scanned = exec
            .metrics()
            .and_then(|m| m.sum_by_name("bytes_scanned"))
            .map(|v| v.as_usize() as u64)
            .unwrap_or(0);
        found.push((files, scanned));
    }
    for child in plan.children() {
        visit(child, found);
    }
}

/// What each database scan sent (`SqlExec sql=…` in the plan's own display) and the rows that
/// came back (the `DatabaseScan` above it counts them).
fn database_queries(plan: &Arc<dyn ExecutionPlan>, found: &mut Vec<DatabaseQuery>) {
    if plan.name() == "DatabaseScan" {
        fn sql_of(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
            if plan.name() == "SqlExec" {
                return Some(displayable(plan.as_ref()).one_line().to_string());
            }
            plan.children().into_iter().find_map(sql_of)
        }
        let sql = sql_of(plan).unwrap_or_default();
        found.push(DatabaseQuery {
            sql: sql.trim_start_matches("SqlExec sql=").trim().to_string(),
            rows: plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0) as u64,
        });
        return;
    }
    for child in plan.children() {
        database_queries(child, found);
    }
}

/// Files and bytes of every file scan in the plan, attributed to the side whose table holds them,
/// and the queries sent to databases.
pub fn stats(plan: &Arc<dyn ExecutionPlan>, catalog: &Catalog) -> ScanStats {
    let mut found = Vec::new();
    visit(plan, &mut found);
    let mut stats = ScanStats::default();
    database_queries(plan, &mut stats.database_queries);
    for (files, scanned) in found {
        let side = files.first().and_then(|(path, _)| catalog.side_of(path));
        let target = match side {
            Some(Side::Batch) => &mut stats.batch,
            Some(Side::Stream) => &mut stats.stream,
            None => continue,
        };
        target.files += files.len() as u64;
        target.bytes += files.iter().map(|(_, size)| size).sum::<u64>();
        target.bytes_scanned += scanned;
    }
    stats
}

/// (bytes fetched so far, bytes of the files to read) over the whole plan, for progress.
pub fn progress(plan: &Arc<dyn ExecutionPlan>) -> (u64, u64) {
    let mut found = Vec::new();
    visit(plan, &mut found);
    found
        .iter()
        .fold((0, 0), |(done, total), (files, scanned)| {
            (
                done + scanned,
                total + files.iter().map(|(_, s)| s).sum::<u64>(),
            )
        })
}
