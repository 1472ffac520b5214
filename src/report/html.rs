//! HTML for people who would rather look than read: the run report (`--format html`) and the
//! migration board (`dualrun serve` at `/`, `dualrun board --output DIR`). Server-rendered from
//! templates (minijinja, auto-escaped), every asset inline, no script: one file opens anywhere,
//! and a static board can be published to any bucket.

use std::collections::BTreeMap;

use minijinja::{Environment, context};
use serde_json::{Value, json};

use super::{RunReport, chart, gate as gate_text, show, show_key};
use crate::diff::{RowSample, Samples};
use crate::gate::{GateCheck, GateReport, Night, NightKind, Stage};
use crate::verdict::{CheckReport, CheckStatus};

const CSS: &str = include_str!("templates/style.css");

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in [
        ("report.html", include_str!("templates/report.html")),
        ("board.html", include_str!("templates/board.html")),
        ("check.html", include_str!("templates/check.html")),
    ] {
        // The templates are part of the binary: one that does not parse is a build mistake
        // the tests catch, never a user's.
        if let Err(e) = env.add_template(name, source) {
            tracing::error!("template {name}: {e}");
        }
    }
    env
}

fn render(name: &str, ctx: minijinja::Value) -> String {
    environment()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|e| {
            format!("<!doctype html><title>dualrun</title><p>cannot render {name}: {e}</p>")
        })
}

fn status_text(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Match => "match",
        CheckStatus::Diverged => "diverged",
        CheckStatus::NotReady => "not ready",
        CheckStatus::Empty => "empty",
        CheckStatus::Unstable => "unstable",
        CheckStatus::Error => "error",
    }
}

/// An id for a link target: letters, digits and dashes.
fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The file of a check's page in a static board (and its path under `dualrun serve`).
pub fn check_page(name: &str) -> String {
    format!("checks/{}.html", anchor(name))
}

/// The run report as one self-contained page.
pub fn report(run: &RunReport) -> String {
    let checks: Vec<Value> = run.checks.iter().map(check_view).collect();
    render(
        "report.html",
        context! {
            css => CSS,
            status => run.status.name(),
            status_text => status_text(run.status),
            params => run.params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            version => run.dualrun_version,
            error => run.error,
            problems => run.problems,
            checks => checks,
            gate => run.gate.as_ref().map(gate_text::headline),
        },
    )
}

fn check_view(c: &CheckReport) -> Value {
    let mut schema = Vec::new();
    for column in &c.schema.only_in_batch {
        schema.push(format!("only in batch: {column}"));
    }
    for column in &c.schema.only_in_stream {
        schema.push(format!("only in stream: {column}"));
    }
    for t in &c.schema.type_changes {
        schema.push(format!(
            "{} changed type: {} → {}",
            t.column, t.batch, t.stream
        ));
    }
    let columns: Vec<Value> = c
        .columns
        .iter()
        .filter(|col| col.mismatched > 0 || col.tolerance.is_some())
        .map(|col| {
            let stats = col.stats.as_ref().map(|s| {
                let mut parts = Vec::new();
                if let Some(v) = s.max_abs_diff {
                    parts.push(format!("max |Δ| {}", super::significant(v)));
                }
                if let Some(v) = s.mean_abs_diff {
                    parts.push(format!("mean |Δ| {}", super::significant(v)));
                }
                if let Some(v) = s.max_rel_diff {
                    parts.push(format!("max rel {v:.3e}"));
                }
                for pair in &s.top_pairs {
                    parts.push(format!(
                        "{} → {} ×{}",
                        super::show_text(pair.batch.as_deref()),
                        super::show_text(pair.stream.as_deref()),
                        pair.rows
                    ));
                }
                parts.join(" · ")
            });
            json!({
                "name": col.name,
                "type": col.data_type,
                "mismatched": col.mismatched,
                "tolerance": col.tolerance.clone().unwrap_or_default(),
                "stats": stats.unwrap_or_default(),
            })
        })
        .collect();
    let findings: Vec<Value> = c
        .findings
        .iter()
        .map(|f| json!({"kind": f.kind.name(), "columns": f.columns.join(", "), "evidence": f.evidence}))
        .collect();
    let (histogram, dimension) = match &c.histogram {
        Some(h) if !h.buckets.is_empty() => {
            let labels: Vec<String> = h.buckets.iter().map(|b| b.value.clone()).collect();
            let values: Vec<u64> = h
                .buckets
                .iter()
                .map(|b| b.missing_in_stream + b.extra_in_stream + b.mismatched)
                .collect();
            (
                Some(chart::bars(&labels, &values, "divergent rows")),
                h.dimension.clone(),
            )
        }
        _ => (None, String::new()),
    };
    let control = c.control.as_ref().map(|control| {
        let text = if control.stable {
            format!(
                "{} extra run(s) in other layouts ({}) gave the same answer",
                control.runs,
                control.layouts.join("; ")
            )
        } else {
            format!(
                "{} of {} run(s) in other layouts answered differently on the same input: {} row(s) moved, in {}",
                control.differing_runs,
                control.runs,
                control.moved_rows,
                control.moved_columns.join(", ")
            )
        };
        json!({"stable": control.stable, "text": text})
    });
    json!({
        "name": c.name,
        "anchor": anchor(&c.name),
        "status": c.status.name(),
        "status_text": status_text(c.status),
        "query": c.query,
        "key": c.key.join(", "),
        "seconds": format!("{:.2}", c.duration_seconds),
        "rows_batch": c.rows.batch,
        "rows_stream": c.rows.stream,
        "matched": c.counts.matched,
        "mismatched": c.counts.mismatched,
        "missing": c.counts.missing_in_stream,
        "extra": c.counts.extra_in_stream,
        "ratio": format!("{:.6}", c.divergence_ratio),
        "paired_by_occurrence": c.paired_by_occurrence,
        "error": c.error,
        "readiness": c.readiness.as_ref().map(|r| r.message()),
        "empty": (c.status == CheckStatus::Empty).then_some(super::EMPTY_EXPLANATION),
        "hazards": c.nondeterministic.iter().map(|h| json!({"kind": h.kind.name(), "expression": h.expression, "why": h.why})).collect::<Vec<_>>(),
        "control": control,
        "schema": schema,
        "columns": columns,
        "findings": findings,
        "samples": samples(&c.samples, &c.key),
        "histogram": histogram,
        "histogram_dimension": dimension,
    })
}

/// The samples as tables: missing and extra rows with their values, mismatched rows with one
/// line per differing column.
fn samples(samples: &Samples, key: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for (kind, title, rows) in [
        (
            "missing_in_stream",
            "Missing in stream",
            &samples.missing_in_stream,
        ),
        (
            "extra_in_stream",
            "Extra in stream",
            &samples.extra_in_stream,
        ),
    ] {
        if rows.is_empty() {
            continue;
        }
        let mut header: Vec<String> = Vec::new();
        for row in rows.iter() {
            for name in row.key.keys().chain(row.values.keys()) {
                if !header.contains(name) {
                    header.push(name.clone());
                }
            }
        }
        let counted = rows.iter().any(|r| r.count.is_some());
        let cells = |row: &RowSample| -> Vec<String> {
            let mut cells: Vec<String> = header
                .iter()
                .map(|h| {
                    row.key
                        .get(h)
                        .or_else(|| row.values.get(h))
                        .map(show)
                        .unwrap_or_default()
                })
                .collect();
            if counted {
                cells.push(row.count.map(|n| n.to_string()).unwrap_or_default());
            }
            cells
        };
        let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
        if counted {
            header.push("times".to_string());
        }
        out.push(json!({"kind": kind, "title": title, "header": header, "rows": body}));
    }
    if !samples.mismatched.is_empty() {
        let mut body = Vec::new();
        for row in &samples.mismatched {
            let key_text = show_key(&row.key, key);
            for difference in &row.differences {
                body.push(vec![
                    key_text.clone(),
                    difference.column.clone(),
                    show(&difference.batch),
                    show(&difference.stream),
                ]);
            }
        }
        out.push(json!({
            "kind": "mismatched",
            "title": "Mismatched",
            "header": ["key", "column", "batch", "stream"],
            "rows": body,
        }));
    }
    out
}

fn stage_class(check: &GateCheck) -> &'static str {
    if check.incident {
        "incident"
    } else {
        check.stage.name()
    }
}

/// `2026-11-25T02:00:00.123456Z` → `2026-11-25`.
fn day(timestamp: &str) -> String {
    timestamp.get(..10).unwrap_or(timestamp).to_string()
}

fn night_label(night: &Night) -> String {
    night.run_date.clone().unwrap_or_else(|| {
        let params: BTreeMap<String, String> =
            serde_json::from_str(&night.params).unwrap_or_default();
        if params.is_empty() {
            day(&night.started_at)
        } else {
            params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    })
}

fn kind_name(kind: NightKind) -> &'static str {
    match kind {
        NightKind::Clean => "clean",
        NightKind::Dirty => "dirty",
        NightKind::NoVerdict => "none",
    }
}

/// Nights shown per analysis on the board.
const BOARD_NIGHTS: usize = 30;

/// The board's front page: the headline, then one line per analysis.
/// `report`: where the last run's HTML report is, relative to the board, if it has one.
pub fn board(
    gate: &GateReport,
    nights: &BTreeMap<String, Vec<Night>>,
    generated_at: &str,
    report: Option<&str>,
) -> String {
    let checks: Vec<Value> = gate
        .checks
        .iter()
        .map(|check| {
            let all = nights.get(&check.name).map(Vec::as_slice).unwrap_or(&[]);
            let shown = &all[all.len().saturating_sub(BOARD_NIGHTS)..];
            let cells: Vec<Value> = shown
                .iter()
                .map(|n| {
                    json!({
                        "kind": kind_name(n.kind),
                        "title": format!("{}: {} (ratio {:.6})", night_label(n), n.status.name(), n.divergence_ratio),
                    })
                })
                .collect();
            let since = match check.stage {
                Stage::Retired => check.retired_at.as_deref().map(|t| format!("retired {}", day(t))),
                Stage::Migrated => check.migrated_at.as_deref().map(|t| format!("migrated {}", day(t))),
                Stage::Proven => check.proven_at.as_deref().map(|t| format!("proven {}", day(t))),
                _ => None,
            };
            json!({
                "name": check.name,
                "link": check_page(&check.name),
                "required": check.required,
                "stage": check.stage.name(),
                "stage_class": stage_class(check),
                "stage_text": gate_text::stage_text(check),
                "nights": cells,
                "streak": check.clean_streak,
                "required_runs": check.required_runs,
                "ratio": check.latest_ratio.map(|r| format!("{r:.6}")).unwrap_or_else(|| "—".into()),
                "columns": check.latest_columns.join(", "),
                "since": since.unwrap_or_default(),
                "report": report.map(|r| format!("{r}#check-{}", anchor(&check.name))),
            })
        })
        .collect();
    let headline = format!(
        "{} of {} analyses proven, {} migrated; {}",
        gate.proven,
        gate.required,
        gate.migrated,
        if gate.ready {
            "batch can be retired: every analysis is proven"
        } else if gate.checks.iter().any(|c| c.required && c.incident) {
            "batch stays: a migrated analysis's stream disagrees with batch (a stream incident)"
        } else {
            "batch can be retired when all are"
        }
    );
    render(
        "board.html",
        context! {
            css => CSS,
            headline => headline,
            proven => gate.proven,
            required => gate.required,
            migrated => gate.migrated,
            ready => gate.ready,
            generated_at => generated_at,
            report => report,
            checks => checks,
            version => env!("CARGO_PKG_VERSION"),
        },
    )
}

/// One analysis: its stage, the divergence ratio over the nights, and the nights themselves.
pub fn board_check(check: &GateCheck, nights: &[Night], back: &str) -> String {
    let labels: Vec<String> = nights.iter().map(night_label).collect();
    let ratios: Vec<f64> = nights.iter().map(|n| n.divergence_ratio).collect();
    let chart = (!nights.is_empty()).then(|| chart::ratio_line(&labels, &ratios));
    let rows: Vec<Value> = nights
        .iter()
        .rev()
        .map(|n| {
            json!({
                "night": night_label(n),
                "status": n.status.name(),
                "kind": kind_name(n.kind),
                "kind_text": match (n.kind, n.status) {
                    (_, CheckStatus::Unstable) => "unstable: resets the streak",
                    (NightKind::Clean, _) => "clean",
                    (NightKind::Dirty, _) => "resets the streak",
                    (NightKind::NoVerdict, _) => "no verdict",
                },
                "ratio": format!("{:.6}", n.divergence_ratio),
                "columns": n.columns.join(", "),
                "findings": n.findings.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "),
                "at": n.started_at,
            })
        })
        .collect();
    render(
        "check.html",
        context! {
            css => CSS,
            back => back,
            name => check.name,
            stage => check.stage.name(),
            stage_class => stage_class(check),
            stage_text => gate_text::stage_text(check),
            streak => check.clean_streak,
            required_runs => check.required_runs,
            proven_at => check.proven_at.as_deref().map(day),
            migrated_at => check.migrated_at.as_deref().map(day),
            retired_at => check.retired_at.as_deref().map(day),
            chart => chart,
            nights => rows,
            version => env!("CARGO_PKG_VERSION"),
        },
    )
}
