//! The node_exporter textfile collector's way out: one file, replaced atomically.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use super::{Families, LastSuccess, encode, registry, unix_now};
use crate::report::RunReport;

/// Writes the node_exporter textfile atomically: a temporary file in the same directory, then a
/// rename, so a scrape never sees half a file. Last-success timestamps of the previous file are
/// carried over for checks that did not reach a verdict this time.
pub fn write_textfile(path: &Path, report: &RunReport) -> Result<()> {
    let mut last_success = match std::fs::read_to_string(path) {
        Ok(text) => LastSuccess::parse_exposition(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => LastSuccess::default(),
        Err(e) => bail!(
            "cannot read the previous metrics textfile {}: {e}",
            path.display()
        ),
    };
    last_success.advance(report, unix_now());
    let text = encode(&registry(report, &last_success, Families::All)?)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if path.file_name().is_none() {
        bail!("metrics textfile {} has no file name", path.display());
    }
    // Written beside the target and renamed over it, so node_exporter never reads half a file;
    // its name starts with a dot and does not end in .prom, which node_exporter skips.
    let mut temporary = tempfile::Builder::new()
        .prefix(".dualrun-metrics-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write the metrics textfile in {}", dir.display()))?;
    temporary
        .write_all(text.as_bytes())
        .with_context(|| format!("cannot write the metrics textfile {}", path.display()))?;
    temporary.persist(path).map_err(|e| {
        anyhow!(
            "cannot move the metrics textfile into place at {}: {}",
            path.display(),
            e.error
        )
    })?;
    Ok(())
}
