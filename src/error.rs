//! What went wrong, by cause, in one line. Errors travel through dualrun as `anyhow` chains
//! (each layer adds where it was: the check, the table, the control run); at the edge, where
//! they are printed, this module names the cause and keeps the message short. DataFusion wraps
//! one failure several times over (a failed sort arrives as the same text three times, inside
//! Arrow and Context wrappers), so its part of the chain is replaced by its innermost error.
//! Secrets are scrubbed here, once.

use std::fmt::Write as _;

use datafusion::error::DataFusionError;
use serde::Serialize;

/// The cause of a failure: what the user should look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The config file or the flags.
    Config,
    /// A table's files: missing, unreadable, of the wrong format.
    Source,
    /// The SQL: does not plan, or fails while it runs.
    Query,
    /// An object store: unreachable, denied.
    Store,
    /// A check ran out of time.
    Timeout,
    /// A check ran out of memory under the memory limit.
    Memory,
    /// A bug in dualrun.
    Internal,
}

/// How a command ends, as a process exit code: like diff(1), 0 match, 1 diverged, 2 trouble;
/// 3 when a stream was not ready (nothing diverged, nothing failed: run again later); 4 when a
/// result was empty (nothing diverged, but nothing was compared either: no evidence); 130 when
/// interrupted. `gate` ends Match when batch removal is ready, Diverged when not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Match,
    Diverged,
    Trouble,
    NotReady,
    Empty,
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Match => 0,
            Exit::Diverged => 1,
            Exit::Trouble => 2,
            Exit::NotReady => 3,
            Exit::Empty => 4,
            Exit::Interrupted => 130,
        }
    }
}

impl Cause {
    /// Every failure ends the same way for the caller: trouble (2), whatever its cause; the
    /// cause tells the user where to look, not the scheduler what to do.
    pub fn exit(self) -> Exit {
        Exit::Trouble
    }
}

/// Text of one side that does not read as the other side's type (`diff::read_as`). The cast
/// cannot know where the text came from: the scan guard names the file when the cast ran in a
/// scan of several files, and the diff's error path looks for the file and line by the text.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub column: String,
    pub side: String,
    /// The text, when the cast error quotes it.
    pub text: Option<String>,
    /// What did not read and what to do, after the column and side.
    pub detail: String,
    /// The file the scan guard found failing, when it did.
    pub file: Option<String>,
}

impl Unreadable {
    /// The error's line, led by the file (and line) that holds the text when it is known, as
    /// the scan guard names a file whose reading fails.
    pub fn message(&self, file: Option<&str>) -> String {
        let message = format!(
            "column '{}' ({} side): {}",
            self.column, self.side, self.detail
        );
        match file {
            Some(file) => format!("file {file}: {message}"),
            None => message,
        }
    }

    /// The `Unreadable` behind an error, however DataFusion wrapped it.
    pub fn behind(error: &anyhow::Error) -> Option<&Unreadable> {
        error
            .chain()
            .find_map(|cause| cause.downcast_ref::<Unreadable>())
    }

    /// The `Unreadable` a DataFusion error is, if it is one.
    pub fn of(error: &DataFusionError) -> Option<&Unreadable> {
        match error.find_root() {
            DataFusionError::External(e) => e.downcast_ref::<Unreadable>(),
            _ => None,
        }
    }
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message(None))
    }
}

impl std::error::Error for Unreadable {}

/// A failure with its cause and a one-line message; `chain` keeps every layer for `--verbose`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Trouble {
    pub cause: Cause,
    pub message: String,
    pub chain: String,
}

impl Trouble {
    /// A failure whose cause is known where it happens (a timeout, a config mistake).
    pub fn error(cause: Cause, message: impl Into<String>) -> anyhow::Error {
        let message = message.into();
        anyhow::Error::new(Trouble {
            cause,
            chain: message.clone(),
            message,
        })
    }

    /// Names the cause of `error` and says it in one line: the layers dualrun added, then the
    /// innermost DataFusion error once.
    pub fn of(error: &anyhow::Error) -> Trouble {
        let mut cause = None;
        let mut parts: Vec<String> = Vec::new();
        for link in error.chain() {
            if let Some(known) = link.downcast_ref::<Trouble>() {
                cause = Some(known.cause);
                parts.push(known.message.clone());
                break;
            }
            if let Some(df) = link.downcast_ref::<DataFusionError>() {
                let root = df.find_root();
                cause = Some(datafusion_cause(root));
                parts.push(clean_df_error(&root.to_string()));
                break;
            }
            if link.downcast_ref::<object_store::Error>().is_some() {
                cause = Some(Cause::Store);
            }
            parts.push(link.to_string());
            // A link's text that already holds its sources' text ends the chain.
            if link
                .source()
                .is_some_and(|s| link.to_string().contains(&s.to_string()))
            {
                break;
            }
        }
        parts.dedup();
        let message = one_line(&crate::redact::scrub(&parts.join(": ")));
        let mut chain = String::new();
        for (i, link) in error.chain().enumerate() {
            let _ = write!(
                chain,
                "{}{link}",
                if i == 0 { "" } else { "\n  caused by: " }
            );
        }
        Trouble {
            cause: cause.unwrap_or(Cause::Query),
            message,
            chain: crate::redact::scrub(&chain),
        }
    }
}

fn datafusion_cause(error: &DataFusionError) -> Cause {
    match error {
        DataFusionError::ResourcesExhausted(_) => Cause::Memory,
        DataFusionError::ObjectStore(_) => Cause::Store,
        DataFusionError::IoError(_) => Cause::Source,
        DataFusionError::Internal(_) => Cause::Internal,
        _ => Cause::Query,
    }
}

/// A message as one line: an object store's XML error body becomes its `<Code>` and
/// `<Message>`, and every other line break a space.
fn one_line(message: &str) -> String {
    let mut text = message.to_string();
    if let Some(start) = text.find("<?xml") {
        let tag = |name: &str| {
            let open = format!("<{name}>");
            let from = text[start..].find(&open)? + start + open.len();
            let to = text[from..].find(&format!("</{name}>"))? + from;
            Some(
                text[from..to]
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            )
        };
        let summary = [tag("Code"), tag("Message")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        text = format!("{}{summary}", &text[..start]);
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// DataFusion's messages carry a category prefix ("Error during planning: ") that helps its
/// developers more than dualrun's users; keep the substance.
pub fn clean_df_error(message: &str) -> String {
    let mut text = message.trim();
    for prefix in [
        "Error during planning: ",
        "SQL error: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Arrow error: ",
        "External error: ",
        "Parquet error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            text = rest;
        }
    }
    // sqlparser errors arrive as `ParserError("…")`.
    if let Some(inner) = text
        .strip_prefix("ParserError(\"")
        .and_then(|t| t.strip_suffix("\")"))
    {
        text = inner;
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use datafusion::arrow::error::ArrowError;

    #[test]
    fn a_wrapped_datafusion_error_is_said_once() {
        let root = DataFusionError::ResourcesExhausted(
            "Failed to allocate additional 10.0 MB for ExternalSorterMerge[0]".into(),
        );
        // DataFusion's own wrapping: an Arrow error around a context around the root.
        let wrapped = DataFusionError::ArrowError(
            Box::new(ArrowError::ExternalError(Box::new(
                DataFusionError::Context("sorting".into(), Box::new(root)),
            ))),
            None,
        );
        let error = Err::<(), _>(wrapped).context("check 'orders'").unwrap_err();
        let trouble = Trouble::of(&error);
        assert_eq!(trouble.cause, Cause::Memory);
        assert_eq!(
            trouble.message,
            "check 'orders': Resources exhausted: Failed to allocate additional 10.0 MB for ExternalSorterMerge[0]"
        );
        assert_eq!(trouble.message.matches("Failed to allocate").count(), 1);
        assert!(trouble.chain.contains("caused by"));
    }

    #[test]
    fn known_causes_and_secrets() {
        let error = Trouble::error(Cause::Timeout, "timed out after 30m");
        let trouble = Trouble::of(&error.context("check 'x'"));
        assert_eq!(trouble.cause, Cause::Timeout);
        assert_eq!(trouble.message, "check 'x': timed out after 30m");
        let error = anyhow::anyhow!("cannot read s3://user:pw@bucket/key");
        assert_eq!(
            Trouble::of(&error).message,
            "cannot read s3://***@bucket/key"
        );
    }

    #[test]
    fn messages_are_one_line_and_xml_bodies_are_their_code_and_message() {
        let text = "cannot list files: 404 Not Found: <?xml version=\"1.0\"?>\n<Error>\n  <Code>ContainerNotFound</Code>\n  <Message>The specified container does not exist.\nRequestId:1</Message>\n</Error>";
        assert_eq!(
            one_line(text),
            "cannot list files: 404 Not Found: ContainerNotFound: The specified container does not exist."
        );
        assert_eq!(one_line("a\n  b"), "a b");
    }
}
