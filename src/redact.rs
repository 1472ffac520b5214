//! Keeps secrets out of everything dualrun prints: a URL may carry a password or a signed query
//! string (SAS tokens, presigned URLs), and reports, logs and metrics must never repeat them.

/// The URL with any user info and query string replaced by `***`.
pub fn redact_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let (authority_end, _) = rest
        .char_indices()
        .find(|(_, c)| *c == '/' || *c == '?' || *c == '#')
        .unwrap_or((rest.len(), ' '));
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, _)) => format!("{path}?***"),
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Every URL in a message redacted, and the values of secret-looking environment variables
/// (`*SECRET*`, `*PASSWORD*`, `*TOKEN*`, `*_KEY`, `MYSQL_PWD`) replaced: errors from lower layers sometimes
/// repeat the URL they were given, and dualrun prints errors verbatim.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("://") {
        // The scheme starts after the last character that cannot be part of one (which may be
        // more than one byte long).
        let start = rest[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = rest[at..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')' | ',')
            })
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    for (name, value) in std::env::vars() {
        let upper = name.to_ascii_uppercase();
        let secret = ["SECRET", "PASSWORD", "TOKEN"]
            .iter()
            .any(|w| upper.contains(w))
            || upper.ends_with("_KEY")
            // MySQL's password variable (not `PWD`, which is the working directory).
            || upper == "MYSQL_PWD";
        if secret && value.len() >= 8 {
            out = out.replace(&value, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{redact_url, scrub};

    #[test]
    fn scrubs_urls_inside_messages() {
        assert_eq!(
            scrub(
                "Error performing HEAD https://u:pw@h/x.parquet in 2s (see s3://b/k?X-Amz-Signature=abc)"
            ),
            "Error performing HEAD https://***@h/x.parquet in 2s (see s3://b/k?***)"
        );
        assert_eq!(scrub("no url here"), "no url here");
        // Found by the fuzz target: a multi-byte character right before the scheme.
        assert_eq!(scrub("\u{feff}y://u:p@h/x"), "\u{feff}y://***@h/x");
    }

    #[test]
    fn hides_user_info_and_query() {
        assert_eq!(redact_url("s3://bucket/a/b/"), "s3://bucket/a/b/");
        assert_eq!(
            redact_url("https://u:secret@host/x.parquet"),
            "https://***@host/x.parquet"
        );
        assert_eq!(
            redact_url("https://host/x.csv?sig=abc&se=1"),
            "https://host/x.csv?***"
        );
        assert_eq!(
            redact_url("fixtures/batch/orders/"),
            "fixtures/batch/orders/"
        );
    }
}
