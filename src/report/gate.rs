//! The migration gate as a table for people (text) and for pull requests (Markdown).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::gate::{GateCheck, GateReport, Stage};

pub(crate) fn stage_text(check: &GateCheck) -> String {
    match check.stage {
        Stage::NoRuns => "no runs yet".to_string(),
        Stage::Diverging => "diverging".to_string(),
        Stage::Proving => format!(
            "proving ({} of {})",
            check.clean_streak.min(check.required_runs),
            check.required_runs
        ),
        Stage::Proven => "proven".to_string(),
        Stage::Migrated if check.incident => "migrated (stream incident)".to_string(),
        Stage::Migrated => "migrated".to_string(),
        Stage::Retired => "batch retired".to_string(),
    }
}

pub(crate) fn headline(gate: &GateReport) -> String {
    let migrated = if gate.migrated > 0 {
        format!(", {} migrated", gate.migrated)
    } else {
        String::new()
    };
    format!(
        "batch removal: {} ({} of {} analyses proven{migrated})",
        if gate.ready { "READY" } else { "NOT READY" },
        gate.proven,
        gate.required
    )
}

pub fn text(gate: &GateReport, width: usize) -> String {
    use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width.max(40) as u16)
        .set_header(vec![
            "check",
            "stage",
            "clean streak",
            "empty nights",
            "gate",
            "last divergence",
            "required",
        ]);
    for check in &gate.checks {
        table.add_row(vec![
            check.name.clone(),
            stage_text(check),
            format!("{} / {}", check.clean_streak, check.required_runs),
            check.empty_nights.to_string(),
            if check.open {
                "open".into()
            } else {
                "closed".into()
            },
            check
                .last_divergence
                .as_ref()
                .map(|d| {
                    format!(
                        "{} (ratio {:.4})",
                        short_params(&d.params),
                        d.divergence_ratio
                    )
                })
                .unwrap_or_else(|| "-".into()),
            if check.required {
                "yes".into()
            } else {
                "no".into()
            },
        ]);
    }
    format!("{table}\n{}\n", headline(gate))
}

pub fn markdown(gate: &GateReport) -> String {
    let mut out = format!("## Migration gate: {}\n\n", headline(gate));
    out.push_str(
        "| check | stage | clean streak | empty nights | gate | last divergence |\n|---|---|---:|---:|---|---|\n",
    );
    for check in &gate.checks {
        let _ = writeln!(
            out,
            "| {}{} | {} | {} / {} | {} | {} | {} |",
            check.name,
            if check.required { "" } else { " (optional)" },
            stage_text(check),
            check.clean_streak,
            check.required_runs,
            check.empty_nights,
            if check.open { "✅ open" } else { "⛔ closed" },
            check
                .last_divergence
                .as_ref()
                .map(|d| short_params(&d.params))
                .unwrap_or_else(|| "-".into()),
        );
    }
    out
}

/// `{"run_date":"2026-11-25"}` reads better as `run_date=2026-11-25`.
fn short_params(params: &str) -> String {
    match serde_json::from_str::<BTreeMap<String, String>>(params) {
        Ok(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => params.to_string(),
    }
}
