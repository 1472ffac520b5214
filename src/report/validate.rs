//! What `dualrun validate` found: each table per side (where it comes from and its columns),
//! then per check the columns each side's plan gives, schema drift between them, and the
//! nondeterminism lint.

use std::fmt::Write as _;

use crate::diff::SchemaDiff;
use crate::engine::lint::Hazard;

/// One check as planned on both sides, or why it could not be.
pub enum Validated {
    Planned {
        name: String,
        keys: usize,
        values: usize,
        schema: SchemaDiff,
        hazards: Vec<Hazard>,
    },
    Failed {
        name: String,
        message: String,
    },
}

/// One side of a table as registered: where it comes from and its columns, or why it failed.
pub struct TableSide {
    pub name: String,
    pub side: &'static str,
    /// A raw table: on this side only, for its views.
    pub raw: bool,
    pub origin: String,
    pub columns: Result<Vec<(String, String)>, String>,
}

pub fn render(tables: &[TableSide], checks: &[Validated]) -> String {
    let mut out = String::new();
    if !tables.is_empty() {
        let _ = writeln!(out, "tables");
        for table in tables {
            let raw = if table.raw { ", raw" } else { "" };
            let _ = writeln!(
                out,
                "  {} ({}{raw}): {}",
                table.name, table.side, table.origin
            );
            match &table.columns {
                Ok(columns) => {
                    let columns: Vec<String> =
                        columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
                    let _ = writeln!(out, "      {}", columns.join(", "));
                }
                Err(message) => {
                    let _ = writeln!(out, "      ERROR {message}");
                }
            }
        }
        let _ = writeln!(out, "checks");
    }
    for check in checks {
        match check {
            Validated::Failed { name, message } => {
                let _ = writeln!(out, "ERROR    {name}: {message}");
            }
            Validated::Planned {
                name,
                keys,
                values,
                schema,
                hazards,
            } => {
                let _ = writeln!(
                    out,
                    "{}  {name}: {keys} key + {values} value columns",
                    if schema.diverges() {
                        "SCHEMA "
                    } else {
                        "OK     "
                    },
                );
                for c in &schema.only_in_batch {
                    let _ = writeln!(out, "         only in batch: {c}");
                }
                for c in &schema.only_in_stream {
                    let _ = writeln!(out, "         only in stream: {c}");
                }
                for t in &schema.type_changes {
                    let _ = writeln!(
                        out,
                        "         {} changed type: {} → {}",
                        t.column, t.batch, t.stream
                    );
                }
                for hazard in hazards {
                    let _ = writeln!(
                        out,
                        "         warning: nondeterministic ({}): {}: {}",
                        hazard.kind.name(),
                        hazard.expression,
                        hazard.why
                    );
                }
            }
        }
    }
    out
}
