//! English for counts in messages and reports ("1 check", "2 checks"), in one place so every
//! output says it the same way.

/// `n` with the singular or plural noun.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(plural(0, "check", "checks"), "0 checks");
        assert_eq!(plural(1, "check", "checks"), "1 check");
        assert_eq!(plural(2, "key", "keys"), "2 keys");
    }
}
