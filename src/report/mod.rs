//! What a run says, in three forms: text for people at a terminal, JSON (a versioned contract
//! for machines) and Markdown for pull requests and chat. All three render the same
//! [`RunReport`], so they cannot disagree.

mod chart;
pub mod gate;
pub mod history;
pub mod html;
mod markdown;
mod text;
pub mod validate;

use serde::Serialize;

use crate::verdict::{self, CheckReport, CheckStatus};

pub const REPORT_VERSION: u32 = 1;

/// A difference's size to six significant digits: the statistics are f64, and `{:.6}` printed
/// a 38-digit decimal's difference with twenty digits the f64 never held. Beyond 10^15 and below
/// 10^-6, in scientific notation.
pub(crate) fn significant(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return value.to_string();
    }
    let magnitude = value.abs().log10().floor() as i32;
    if !(-6..15).contains(&magnitude) {
        return format!("{value:.5e}");
    }
    let digits = (5 - magnitude).clamp(0, 12) as usize;
    let text = format!("{value:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// The forms a report takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
    Markdown,
    /// One self-contained page (compare and run; `gate` draws the board).
    Html,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub version: u32,
    pub status: CheckStatus,
    pub dualrun_version: &'static str,
    pub params: std::collections::BTreeMap<String, String>,
    pub checks: Vec<CheckReport>,
    /// Set when the run failed before its checks could run (bad config or flags).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The migration gate after this run, when the run keeps a history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::gate::GateReport>,
    /// Trouble after the verdicts (history not written, …): the run exits 2 if it would exit 0.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl RunReport {
    pub fn new(
        params: std::collections::BTreeMap<String, String>,
        checks: Vec<CheckReport>,
    ) -> Self {
        RunReport {
            version: REPORT_VERSION,
            status: verdict::run_status(checks.iter().map(|c| c.status)),
            dualrun_version: env!("CARGO_PKG_VERSION"),
            params,
            checks,
            error: None,
            gate: None,
            problems: Vec::new(),
        }
    }

    pub fn render(&self, format: OutputFormat, style: TextStyle) -> String {
        match format {
            OutputFormat::Json => {
                let mut text = serde_json::to_string_pretty(self).unwrap_or_else(|e| {
                    format!(
                        "{{\"version\":1,\"status\":\"error\",\"checks\":[],\"error\":\"{e}\"}}"
                    )
                });
                text.push('\n');
                text
            }
            OutputFormat::Markdown => markdown::render(self),
            OutputFormat::Html => html::report(self),
            OutputFormat::Text => text::render(self, style),
        }
    }
}

/// What an `empty` status means, in every output that shows one.
pub const EMPTY_EXPLANATION: &str = "no rows to compare: nothing diverged, but an empty result proves nothing (a wrong run_date? set allow_empty = true on a check whose result may legitimately be empty, or min_rows to ask for more)";

/// How the text report looks: colour (a terminal without NO_COLOR), width, and whether to show
/// what each check scanned.
#[derive(Debug, Clone, Copy)]
pub struct TextStyle {
    pub color: bool,
    pub width: usize,
    pub verbose: bool,
}

impl TextStyle {
    pub const PLAIN: TextStyle = TextStyle {
        color: false,
        width: 120,
        verbose: false,
    };
}

/// A sample value as people read it: strings without JSON quotes, NULL spelled out, and the
/// two strings that would read like something else quoted: `''` (empty) and `'NULL'`.
pub(crate) fn show(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::String(s) => show_text(Some(s)),
        other => other.to_string(),
    }
}

/// A value already in text form (None: NULL), by the rules of [`show`].
pub(crate) fn show_text(value: Option<&str>) -> String {
    match value {
        None => "NULL".to_string(),
        Some("") => "''".to_string(),
        Some(s) if s.eq_ignore_ascii_case("null") => format!("'{s}'"),
        Some(s) => s.to_string(),
    }
}

pub(crate) fn show_key(
    key: &std::collections::BTreeMap<String, serde_json::Value>,
    order: &[String],
) -> String {
    let mut parts: Vec<String> = order
        .iter()
        .filter_map(|k| key.get(k).map(|v| format!("{k}={}", show(v))))
        .collect();
    for (k, v) in key {
        if !order.contains(k) {
            parts.push(format!("{k}={}", show(v)));
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::significant;

    #[test]
    fn differences_show_the_digits_an_f64_holds() {
        assert_eq!(significant(0.01), "0.01");
        assert_eq!(significant(1234.5678), "1234.57");
        assert_eq!(significant(-2.5), "-2.5");
        assert_eq!(significant(0.0), "0");
        assert_eq!(
            significant(99999999999999999999999999999999999996.99),
            "1.00000e38"
        );
        assert_eq!(significant(0.000_000_123_4), "1.23400e-7");
        assert_eq!(significant(f64::NAN), "NaN");
    }
}
