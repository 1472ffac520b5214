//! `dualrun compare`: one query over tables named on the command line, run like one check of
//! a config (no history, no gate).

use crate::cli::CompareArgs;
use crate::config::{CompareInput, Plan};
use crate::verdict::Exit;

pub async fn compare(args: CompareArgs) -> Exit {
    let plan = Plan::from_compare(CompareInput {
        batch: &args.batch,
        stream: &args.stream,
        batch_views: &args.batch_views,
        stream_views: &args.stream_views,
        input_formats: &args.input_formats,
        csv_headers: &args.csv_headers,
        csv_delimiters: &args.csv_delimiters,
        infer_all_records: args.infer_all_records,
        sql: args.sql.as_deref(),
        query: args.query.as_deref(),
        key: &args.key,
        tolerances: &args.tolerances,
        ignore: &args.ignore,
        sample: args.sample,
        name: &args.name,
        params: &args.report.params,
        memory_limit: args.report.memory_limit,
        engine: args.report.engine.as_deref(),
        metrics_textfile: args.metrics.metrics_textfile.as_deref(),
        pushgateway: args.metrics.pushgateway.as_deref(),
        time_column: args.time_column.as_deref(),
        window_column: args.window_column.as_deref(),
        timeout: args.timeout,
        redact: &args.redact,
        min_rows: Some(args.min_rows),
        allow_empty: args.allow_empty,
        allow_nondeterministic: &args.allow_nondeterministic,
        control: args.control,
    });
    let names = [args.name.clone()];
    super::run::run_and_emit(plan, &args.report, &names).await
}
