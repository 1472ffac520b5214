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

#[cfg(test)]
mod tests {
    use super::redact_url;

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
