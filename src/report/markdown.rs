//! The Markdown report, for pull requests and chat: a summary table of checks, then the
//! details of each divergent one.

use std::fmt::Write;

use super::{RunReport, show, show_key};
use crate::verdict::CheckStatus;

fn icon(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Match => "✅ match",
        CheckStatus::Diverged => "❌ diverged",
        CheckStatus::NotReady => "⏳ not ready",
        CheckStatus::Empty => "∅ empty",
        CheckStatus::Unstable => "🎲 unstable",
        CheckStatus::Error => "⚠️ error",
    }
}

/// Table cells must not break the table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

pub fn render(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## dualrun: {}\n", icon(report.status));
    if !report.params.is_empty() {
        let params: Vec<String> = report
            .params
            .iter()
            .map(|(k, v)| format!("`{k}={v}`"))
            .collect();
        let _ = writeln!(out, "Params: {}\n", params.join(", "));
    }
    let _ = writeln!(
        out,
        "| check | status | batch rows | stream rows | matched | mismatched | missing in stream | extra in stream |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    for check in &report.checks {
        let c = &check.counts;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&check.name),
            icon(check.status),
            check.rows.batch,
            check.rows.stream,
            c.matched,
            c.mismatched,
            c.missing_in_stream,
            c.extra_in_stream
        );
    }
    for check in report
        .checks
        .iter()
        .filter(|c| c.status != CheckStatus::Match)
    {
        let _ = writeln!(
            out,
            "\n### {} ({})\n",
            cell(&check.name),
            icon(check.status)
        );
        if let Some(error) = &check.error {
            let _ = writeln!(out, "```\n{error}\n```");
            continue;
        }
        if let Some(why) = &check.readiness {
            let _ = writeln!(out, "{}", why.message());
            continue;
        }
        if check.status == CheckStatus::Empty {
            let _ = writeln!(out, "{}", super::EMPTY_EXPLANATION);
            continue;
        }
        if let Some(control) = check.control.as_ref().filter(|c| !c.stable) {
            let _ = writeln!(
                out,
                "- **unstable**: {} of {} control runs answered differently on the same batch input (columns that moved: {})",
                control.differing_runs,
                control.runs,
                cell(&control.moved_columns.join(", "))
            );
        }
        for hazard in &check.nondeterministic {
            let _ = writeln!(
                out,
                "- nondeterministic ({}): `{}`: {}",
                hazard.kind.name(),
                hazard.expression.replace('`', "'"),
                hazard.why
            );
        }
        let c = &check.counts;
        if c.duplicate_keys_batch + c.duplicate_keys_stream > 0 {
            let _ = writeln!(
                out,
                "- duplicated {}: batch {}, stream {}",
                if check.key.is_empty() { "rows" } else { "keys" },
                c.duplicate_keys_batch,
                c.duplicate_keys_stream
            );
        }
        let s = &check.schema;
        if !s.only_in_batch.is_empty() {
            let _ = writeln!(out, "- only in batch: `{}`", s.only_in_batch.join("`, `"));
        }
        if !s.only_in_stream.is_empty() {
            let _ = writeln!(out, "- only in stream: `{}`", s.only_in_stream.join("`, `"));
        }
        for t in &s.type_changes {
            let _ = writeln!(
                out,
                "- `{}` changed type: `{}` → `{}`",
                t.column, t.batch, t.stream
            );
        }
        if !check.findings.is_empty() {
            let _ = writeln!(out, "\n**Findings**\n");
            for finding in &check.findings {
                let _ = writeln!(
                    out,
                    "- **{}**: {}",
                    finding.kind.name(),
                    cell(&finding.evidence)
                );
            }
        }
        if let Some(histogram) = &check.histogram {
            let _ = writeln!(
                out,
                "\nDivergent rows by `{}`:\n\n| {} | missing | extra | mismatched |\n|---|---:|---:|---:|",
                histogram.dimension, histogram.dimension
            );
            for b in histogram.buckets.iter().take(50) {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    cell(&b.value),
                    b.missing_in_stream,
                    b.extra_in_stream,
                    b.mismatched
                );
            }
        }
        let differing: Vec<_> = check.columns.iter().filter(|c| c.mismatched > 0).collect();
        if !differing.is_empty() {
            let _ = writeln!(
                out,
                "\n| column | mismatched rows | tolerance |\n|---|---:|---|"
            );
            for col in differing {
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} |",
                    cell(&col.name),
                    col.mismatched,
                    col.tolerance.as_deref().unwrap_or("exact")
                );
            }
        }
        if !check.samples.mismatched.is_empty() {
            let _ = writeln!(
                out,
                "\n| key | column | batch | stream |\n|---|---|---|---|"
            );
            for sample in &check.samples.mismatched {
                for d in &sample.differences {
                    let _ = writeln!(
                        out,
                        "| {} | `{}` | `{}` | `{}` |",
                        cell(&show_key(&sample.key, &check.key)),
                        cell(&d.column),
                        cell(&show(&d.batch)),
                        cell(&show(&d.stream))
                    );
                }
            }
        }
        for (title, rows) in [
            ("Missing in stream", &check.samples.missing_in_stream),
            ("Extra in stream", &check.samples.extra_in_stream),
        ] {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title}:\n");
            for sample in rows {
                let times = sample
                    .count
                    .filter(|n| *n > 1)
                    .map(|n| format!(" (×{n})"))
                    .unwrap_or_default();
                let _ = writeln!(out, "- `{}`{times}", show_key(&sample.key, &check.key));
            }
        }
    }
    out
}
