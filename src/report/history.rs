//! The run history as a table: one line per record, oldest first.

use crate::history::RunRecord;
use crate::verdict::CheckStatus;

use super::OutputFormat;

pub fn render(records: &[RunRecord], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(records).unwrap_or_else(|e| format!("[\"{e}\"]"))
        ),
        // `history` refuses html (the board is its HTML form); text is the fallback.
        OutputFormat::Text | OutputFormat::Markdown | OutputFormat::Html => {
            let mut table = comfy_table::Table::new();
            let preset = if format == OutputFormat::Markdown {
                comfy_table::presets::ASCII_MARKDOWN
            } else {
                comfy_table::presets::UTF8_FULL_CONDENSED
            };
            table.load_preset(preset).set_header(vec![
                "started_at",
                "check",
                "params",
                "status",
                "batch rows",
                "stream rows",
                "divergent",
                "ratio",
            ]);
            for r in records {
                // A run without a verdict has no figures: a dash, never zeros that read as some.
                let figures = matches!(
                    r.status,
                    CheckStatus::Match
                        | CheckStatus::Diverged
                        | CheckStatus::Empty
                        | CheckStatus::Unstable
                );
                let figure = |text: String| if figures { text } else { "—".to_string() };
                table.add_row(vec![
                    r.started_at.clone(),
                    r.check_name.clone(),
                    r.params.clone(),
                    r.status.name().to_string(),
                    figure(r.rows_batch.to_string()),
                    figure(r.rows_stream.to_string()),
                    figure((r.missing_in_stream + r.extra_in_stream + r.mismatched).to_string()),
                    figure(format!("{:.6}", r.divergence_ratio)),
                ]);
            }
            format!(
                "{table}\n{}\n",
                crate::words::plural(records.len() as u64, "record", "records")
            )
        }
    }
}
