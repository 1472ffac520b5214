//! What depends on the terminal: progress on stderr while a check runs, the width and colour
//! of text reports, and writing to stdout when it may be a closed pipe. Nothing here when
//! stderr is not a terminal, so cron logs stay clean.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use crate::diff;
use crate::report::TextStyle;

/// A diff's progress drawn on the terminal.
pub struct TerminalProgress(pub indicatif::ProgressBar);

impl diff::Progress for TerminalProgress {
    fn advance(&self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }

    fn stage(&self, text: String) {
        self.0.set_message(text);
    }
}

/// Progress on stderr while a check runs: bytes read of the files to read, with an ETA. Only on
/// a terminal, so cron logs stay clean.
pub fn spinner(check: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {elapsed} {bytes}/{total_bytes} [{wide_bar}] eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("check {check}"));
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// Width for text reports: the terminal's own (asked of stdout, else stderr, so `| less`
/// keeps it), else COLUMNS, else 100.
pub fn width() -> usize {
    let asked = terminal_size::terminal_size()
        .or_else(|| terminal_size::terminal_size_of(std::io::stderr()))
        .map(|(terminal_size::Width(w), _)| usize::from(w))
        .filter(|w| *w > 0);
    asked
        .or_else(|| std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()))
        .unwrap_or(100)
}

/// How a text report looks on this output: colour only on a terminal without NO_COLOR.
pub fn text_style(output: Option<&Path>, verbose: bool) -> TextStyle {
    let to_terminal = output.is_none() && std::io::stdout().is_terminal();
    TextStyle {
        color: to_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        width: width(),
        verbose,
    }
}

pub fn write_output(text: &str, path: Option<&Path>) -> Result<()> {
    match path {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            match stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush())
            {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.map_err(|e| anyhow!("cannot write the report: {e}")),
            }
        }
    }
}
