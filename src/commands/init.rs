//! `dualrun init`: a commented starter config.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::terminal::write_output;

pub const STARTER_CONFIG: &str = include_str!("starter.toml");

/// `dualrun init`: the starter config, to a new file (`-`: stdout).
pub(super) fn init(output: &Path) -> Result<()> {
    match output {
        path if path == Path::new("-") => write_output(STARTER_CONFIG, None),
        path => {
            if path.exists() {
                bail!(
                    "{} exists already; dualrun init does not overwrite",
                    path.display()
                );
            }
            std::fs::write(path, STARTER_CONFIG)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote {}; edit the tables and checks, then run: dualrun validate --config {}",
                path.display(),
                path.display()
            );
            Ok(())
        }
    }
}
