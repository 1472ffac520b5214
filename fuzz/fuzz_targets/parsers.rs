//! Feeds arbitrary text to every parser a user's input reaches: the config file, tolerance specs,
//! sizes, params, URLs and the secret scrubber. None may panic; errors are fine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = dualrun::config::Tolerance::parse(text);
    let _ = dualrun::config::parse_size(text);
    let _ = dualrun::config::parse_params(&[text.to_string()]);
    let _ = dualrun::config::Plan::from_config_text(text, std::path::Path::new("/nonexistent"));
    let _ = dualrun::redact::scrub(text);
    let _ = dualrun::redact::redact_url(text);
    if text.contains("://") {
        let _ = dualrun::sources::table_url(text);
    }
});
