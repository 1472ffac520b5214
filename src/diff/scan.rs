//! What a diff read: files and bytes per side, taken from the running physical plan's own
//! metrics. It proves partition pruning (a nightly run for one `run_date` reads one partition)
//! and feeds the progress bar while the plan runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};

use crate::config::Side;
use crate::sources::Catalog;

use super::result::{DatabaseQuery, ScanStats};

/// One file a scan reads: its path, its size, and the bytes of it this scan reads (a large file
/// is read in byte ranges, each range by a partition of its own).
struct ScannedFile {
    path: String,
    size: u64,
    span: u64,
}

fn visit(plan: &Arc<dyn ExecutionPlan>, found: &mut Vec<(Vec<ScannedFile>, u64)>) {
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>()
        && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
    {
        let files = config
            .file_groups
            .iter()
            .flat_map(|group| group.iter())
            .map(|file| ScannedFile {
                path: file.object_meta.location.to_string(),
                size: file.object_meta.size,
                span: file.range.as_ref().map_or(file.object_meta.size, |range| {
                    u64::try_from(range.end - range.start).unwrap_or(0)
                }),
            })
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
/// and the queries sent to databases. A file counts once per side: DataFusion reads a large
/// file in byte ranges, one per partition, and a query may scan a table twice.
pub fn stats(plan: &Arc<dyn ExecutionPlan>, catalog: &Catalog) -> ScanStats {
    let mut found = Vec::new();
    visit(plan, &mut found);
    let mut stats = ScanStats::default();
    database_queries(plan, &mut stats.database_queries);
    let mut seen: [BTreeMap<String, u64>; 2] = Default::default();
    for (files, scanned) in found {
        let side = files.first().and_then(|file| catalog.side_of(&file.path));
        let (target, seen) = match side {
            Some(Side::Batch) => (&mut stats.batch, &mut seen[0]),
            Some(Side::Stream) => (&mut stats.stream, &mut seen[1]),
            None => continue,
        };
        seen.extend(files.into_iter().map(|file| (file.path, file.size)));
        target.bytes_scanned += scanned;
    }
    for (target, seen) in [&mut stats.batch, &mut stats.stream].into_iter().zip(seen) {
        target.files = seen.len() as u64;
        target.bytes = seen.values().sum();
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
                total + files.iter().map(|file| file.span).sum::<u64>(),
            )
        })
}
