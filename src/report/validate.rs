//! What `dualrun validate` found per check: the columns each side's plan gives, schema drift
//! between them, and the nondeterminism lint.

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

pub fn render(checks: &[Validated]) -> String {
    let mut out = String::new();
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
