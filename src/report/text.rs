//! The terminal report: a verdict line per check, the counts, the columns that differ, and
//! sample rows with batch and stream values side by side.

use std::fmt::Write;

use comfy_table::{Cell, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use similar::{ChangeTag, TextDiff};

use super::{CheckReport, RunReport, TextStyle, gate, show, show_key, show_text};
use crate::verdict::CheckStatus;
use crate::words::plural;

fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn status_word(status: CheckStatus, color: bool) -> String {
    match status {
        CheckStatus::Match => paint("MATCH", "1;32", color),
        CheckStatus::Diverged => paint("DIVERGED", "1;31", color),
        CheckStatus::NotReady => paint("NOT READY", "1;33", color),
        CheckStatus::Empty => paint("EMPTY", "1;33", color),
        CheckStatus::Unstable => paint("UNSTABLE", "1;31", color),
        CheckStatus::Error => paint("ERROR", "1;35", color),
    }
}

/// Joins `parts` with `separator` into lines of at most `width` visible characters (escape
/// codes not counted), the first line after `first`, the others after `rest`; a part longer
/// than a line gets a line of its own. Ends with a newline.
fn wrap<S: AsRef<str>>(
    parts: &[S],
    separator: &str,
    width: usize,
    first: &str,
    rest: &str,
) -> String {
    let visible = |text: &str| {
        let mut n = 0;
        let mut in_escape = false;
        for c in text.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (true, c) if c.is_ascii_alphabetic() => in_escape = false,
                (true, _) => {}
                (false, _) => n += 1,
            }
        }
        n
    };
    let mut out = String::from(first);
    let mut line = visible(first);
    let mut fresh = true;
    for part in parts {
        let part = part.as_ref();
        let needed = visible(part) + if fresh { 0 } else { visible(separator) };
        if !fresh && line + needed > width {
            out.push_str(separator.trim_end());
            out.push('\n');
            out.push_str(rest);
            line = visible(rest);
            fresh = true;
        }
        if !fresh {
            out.push_str(separator);
        }
        out.push_str(part);
        line += visible(part) + if fresh { 0 } else { visible(separator) };
        fresh = false;
    }
    out.push('\n');
    out
}

fn table(width: usize) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width.max(40) as u16);
    table
}

pub fn render(report: &RunReport, style: TextStyle) -> String {
    let TextStyle {
        color,
        width,
        verbose,
    } = style;
    let mut out = String::new();
    for check in &report.checks {
        render_check(&mut out, check, color, width);
        if verbose && check.error.is_none() && check.readiness.is_none() {
            let _ = writeln!(out, "  {}", scanned_line(check));
        }
        out.push('\n');
    }
    if let Some(gate) = &report.gate {
        out.push_str(&gate::text(gate, width));
        out.push('\n');
    }
    for problem in &report.problems {
        let _ = writeln!(out, "problem: {problem}");
    }
    let counts = |s: CheckStatus| report.checks.iter().filter(|c| c.status == s).count();
    let mut summary = vec![plural(report.checks.len() as u64, "check", "checks")];
    for (status, word) in [
        (CheckStatus::Match, "match"),
        (CheckStatus::Diverged, "diverged"),
        (CheckStatus::NotReady, "not ready"),
        (CheckStatus::Empty, "empty"),
        (CheckStatus::Unstable, "unstable"),
        (CheckStatus::Error, "error"),
    ] {
        let n = counts(status);
        // Empty and unstable are rare: named only when they happened.
        if n > 0 || !matches!(status, CheckStatus::Empty | CheckStatus::Unstable) {
            summary.push(format!("{n} {word}"));
        }
    }
    let _ = writeln!(
        out,
        "{}: {}",
        status_word(report.status, color),
        summary.join(", ")
    );
    out
}

fn render_check(out: &mut String, check: &CheckReport, color: bool, width: usize) {
    let _ = writeln!(
        out,
        "{} {}  ({}; {:.2}s)",
        status_word(check.status, color),
        paint(&check.name, "1", color),
        check.query,
        check.duration_seconds
    );
    if let Some(error) = &check.error {
        let _ = writeln!(out, "  error: {error}");
        return;
    }
    if let Some(why) = &check.readiness {
        let _ = writeln!(out, "  {} (not compared; run again later)", why.message());
        return;
    }
    let c = &check.counts;
    let _ = writeln!(
        out,
        "  rows: batch {} · stream {}   key: {}",
        check.rows.batch,
        check.rows.stream,
        if check.key.is_empty() {
            "(none: multiset comparison)".to_string()
        } else {
            check.key.join(", ")
        }
    );
    let figures = [
        format!("matched {}", c.matched),
        format!("mismatched {}", c.mismatched),
        format!("missing in stream {}", c.missing_in_stream),
        format!("extra in stream {}", c.extra_in_stream),
        format!("divergence {:.4}%", check.divergence_ratio * 100.0),
    ];
    out.push_str(&wrap(&figures, " · ", width, "  ", "  "));
    if check.status == CheckStatus::Empty {
        let words: Vec<&str> = super::EMPTY_EXPLANATION.split(' ').collect();
        out.push_str(&wrap(&words, " ", width, "  ", "  "));
    }
    for log in &check.changelog {
        let parts = [
            format!("changelog ({} {}):", log.side, log.table),
            format!("{} change rows", log.change_rows),
            format!("({} replayed)", log.replayed_rows),
            format!(
                "· {} after the as-of bound ignored",
                log.ignored_after_as_of
            ),
            format!("· {} keys", log.keys),
            format!("· {} deletes applied", log.deletes_applied),
            format!("→ {} rows", log.rows),
        ];
        out.push_str(&wrap(&parts, " ", width, "  ", "    "));
    }
    render_control(out, check, color, width);
    for hazard in &check.nondeterministic {
        let head = format!(
            "{} ({}): {}:",
            paint("warning: nondeterministic", "1;33", color),
            hazard.kind.name(),
            hazard.expression
        );
        let mut words = vec![head.as_str()];
        words.extend(hazard.why.split(' '));
        out.push_str(&wrap(&words, " ", width, "  ", "    "));
    }
    if c.duplicate_keys_batch + c.duplicate_keys_stream > 0 {
        let what = if check.key.is_empty() {
            "duplicated rows"
        } else {
            "duplicated keys"
        };
        let _ = writeln!(
            out,
            "  {what}: batch {} · stream {}",
            c.duplicate_keys_batch, c.duplicate_keys_stream
        );
    }
    let s = &check.schema;
    if !s.only_in_batch.is_empty() {
        let _ = writeln!(
            out,
            "  schema: only in batch: {}",
            s.only_in_batch.join(", ")
        );
    }
    if !s.only_in_stream.is_empty() {
        let _ = writeln!(
            out,
            "  schema: only in stream: {}",
            s.only_in_stream.join(", ")
        );
    }
    for change in &s.type_changes {
        let _ = writeln!(
            out,
            "  schema: {} changed type: batch {} → stream {} (compared after coercion)",
            change.column, change.batch, change.stream
        );
    }
    let differing: Vec<_> = check
        .columns
        .iter()
        .filter(|col| col.mismatched > 0)
        .collect();
    if !differing.is_empty() {
        let mut t = table(width - 2);
        t.set_header(vec![
            "column",
            "type",
            "mismatched rows",
            "tolerance",
            "how they differ",
        ]);
        for col in differing {
            t.add_row(vec![
                Cell::new(&col.name),
                Cell::new(&col.data_type),
                Cell::new(col.mismatched),
                Cell::new(col.tolerance.as_deref().unwrap_or("exact")),
                Cell::new(describe_stats(col.stats.as_ref())),
            ]);
        }
        for line in t.to_string().lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    render_findings(out, check, color, width);
    render_samples(out, check, color, width);
    render_histogram(out, check, width);
}

fn render_control(out: &mut String, check: &CheckReport, color: bool, width: usize) {
    let Some(control) = &check.control else {
        return;
    };
    if control.stable {
        let _ = writeln!(
            out,
            "  control: {} in other layouts gave the same answer",
            plural(u64::from(control.runs), "run", "runs")
        );
        return;
    }
    let mut words: Vec<String> = format!(
        "{} {} of {} control runs answered differently on the same batch input: the query is          nondeterministic, so neither a match nor a divergence means anything until it is fixed          (see the warnings below).",
        paint("unstable:", "1;31", color),
        control.differing_runs,
        control.runs
    )
    .split(' ')
    .map(str::to_string)
    .collect();
    if !control.moved_columns.is_empty() {
        words.push(format!(
            "Columns that moved: {}.",
            control.moved_columns.join(", ")
        ));
    }
    words.push(format!("Rows that moved: {}.", control.moved_rows));
    let samples = &control.samples;
    let keys: Vec<String> = samples
        .mismatched
        .iter()
        .chain(&samples.missing_in_stream)
        .chain(&samples.extra_in_stream)
        .map(|row| show_key(&row.key, &check.key))
        .collect();
    if !keys.is_empty() {
        words.push(format!("For example: {}.", keys.join("; ")));
    }
    out.push_str(&wrap(&words, " ", width, "  ", "    "));
}

fn describe_stats(stats: Option<&crate::diff::DiffStats>) -> String {
    let Some(stats) = stats else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let (Some(max), Some(mean), Some(rel)) =
        (stats.max_abs_diff, stats.mean_abs_diff, stats.max_rel_diff)
    {
        parts.push(format!(
            "max |Δ| {}, mean {}, max rel {rel:.2e}",
            super::significant(max),
            super::significant(mean)
        ));
    }
    if let Some(top) = stats.top_pairs.first().filter(|p| p.rows > 1) {
        parts.push(format!(
            "most often {} → {} ({}×)",
            show_text(top.batch.as_deref()),
            show_text(top.stream.as_deref()),
            top.rows
        ));
    }
    parts.join("; ")
}

fn render_findings(out: &mut String, check: &CheckReport, color: bool, width: usize) {
    if check.findings.is_empty() {
        return;
    }
    let _ = writeln!(out, "  findings:");
    let width = width.max(40);
    for finding in &check.findings {
        let columns = if finding.columns.is_empty() {
            String::new()
        } else {
            format!(" [{}]", finding.columns.join(", "))
        };
        let head = format!("{}{columns}:", paint(finding.kind.name(), "1;36", color));
        let mut words = vec![head.as_str()];
        words.extend(finding.evidence.split(' '));
        out.push_str(&wrap(&words, " ", width, "    • ", "      "));
    }
}

fn render_histogram(out: &mut String, check: &CheckReport, width: usize) {
    let Some(histogram) = &check.histogram else {
        return;
    };
    const MAX_LINES: usize = 30;
    let total = |b: &crate::diff::Bucket| b.missing_in_stream + b.extra_in_stream + b.mismatched;
    let largest = histogram
        .buckets
        .iter()
        .map(total)
        .max()
        .unwrap_or(0)
        .max(1);
    let label_width = histogram
        .buckets
        .iter()
        .map(|b| b.value.chars().count())
        .max()
        .unwrap_or(0);
    let bar_width = width.saturating_sub(label_width + 20).clamp(10, 50);
    let _ = writeln!(out, "  divergent rows by {}:", histogram.dimension);
    for bucket in histogram.buckets.iter().take(MAX_LINES) {
        let n = total(bucket);
        let bar = "█".repeat(((n as f64 / largest as f64) * bar_width as f64).ceil() as usize);
        let _ = writeln!(out, "    {:<label_width$} {bar} {n}", bucket.value);
    }
    if histogram.buckets.len() > MAX_LINES || histogram.truncated {
        let _ = writeln!(
            out,
            "    … {} more buckets (all in the JSON report)",
            histogram.buckets.len().saturating_sub(MAX_LINES)
        );
    }
}

fn scanned_line(check: &CheckReport) -> String {
    let side = |s: &crate::diff::SideScan| {
        format!(
            "{} of {} files ({} bytes, {} read)",
            s.files, s.files_listed, s.bytes, s.bytes_scanned
        )
    };
    let mut line = format!(
        "scanned: batch {} · stream {}",
        side(&check.scan.batch),
        side(&check.scan.stream)
    );
    for query in &check.scan.database_queries {
        line.push_str(&format!(
            "\n  sent to the database: {} ({} rows came back)",
            query.sql, query.rows
        ));
    }
    line
}

fn render_samples(out: &mut String, check: &CheckReport, color: bool, width: usize) {
    let samples = &check.samples;
    if !samples.mismatched.is_empty() {
        let _ = writeln!(
            out,
            "  mismatched rows ({} shown, by key):",
            samples.mismatched.len()
        );
        let mut t = table(width - 4);
        t.set_header(vec!["key", "column", "batch", "stream"]);
        for sample in &samples.mismatched {
            for (i, d) in sample.differences.iter().enumerate() {
                let key = if i == 0 {
                    show_key(&sample.key, &check.key)
                } else {
                    String::new()
                };
                let (b, s) = (show(&d.batch), show(&d.stream));
                let (b, s) = highlight(&b, &s, color);
                t.add_row(vec![
                    Cell::new(key),
                    Cell::new(&d.column),
                    Cell::new(b),
                    Cell::new(s),
                ]);
            }
        }
        for line in t.to_string().lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    for (title, rows) in [
        ("missing in stream", &samples.missing_in_stream),
        ("extra in stream", &samples.extra_in_stream),
    ] {
        if rows.is_empty() {
            continue;
        }
        let order = if check.key.is_empty() { "" } else { ", by key" };
        let _ = writeln!(out, "  {title} ({} shown{order}):", rows.len());
        for sample in rows {
            let mut line = show_key(&sample.key, &check.key);
            if !sample.values.is_empty() {
                let values: Vec<String> = sample
                    .values
                    .iter()
                    .map(|(k, v)| format!("{k}={}", show(v)))
                    .collect();
                let _ = write!(line, " │ {}", values.join(", "));
            }
            if let Some(n) = sample.count.filter(|n| *n > 1) {
                let _ = write!(line, "  (×{n})");
            }
            let _ = writeln!(out, "    {}", truncate(&line, width.saturating_sub(4)));
        }
    }
}

/// Marks the characters that differ between two short values, so a trailing space or a changed
/// digit is visible at a glance. Long or very different values are shown as they are.
fn highlight(batch: &str, stream: &str, color: bool) -> (String, String) {
    if !color || batch.len() > 200 || stream.len() > 200 {
        return (batch.to_string(), stream.to_string());
    }
    let diff = TextDiff::from_chars(batch, stream);
    if diff.ratio() < 0.5 {
        return (batch.to_string(), stream.to_string());
    }
    let (mut b, mut s) = (String::new(), String::new());
    for change in diff.iter_all_changes() {
        let value = change.value();
        match change.tag() {
            ChangeTag::Equal => {
                b.push_str(value);
                s.push_str(value);
            }
            ChangeTag::Delete => b.push_str(&paint(&visible(value), "4;31", true)),
            ChangeTag::Insert => s.push_str(&paint(&visible(value), "4;32", true)),
        }
    }
    (b, s)
}

fn visible(text: &str) -> String {
    text.replace(' ', "␠")
}

fn truncate(line: &str, width: usize) -> String {
    if line.chars().count() <= width || width < 8 {
        return line.to_string();
    }
    let mut out: String = line.chars().take(width - 1).collect();
    out.push('…');
    out
}
