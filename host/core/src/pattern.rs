//! The one pattern language of the config: `*` matches any run of
//! characters (none included), everything else itself.

/// Whether `text` matches `pattern`.
pub fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|at| tail.is_char_boundary(*at))
                .any(|at| glob(rest, &tail[at..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn stars_match_runs_of_characters() {
        assert!(glob("refs/heads/*", "refs/heads/main"));
        assert!(glob("refs/heads/*", "refs/heads/"));
        assert!(glob(
            "https://git.example/team/*",
            "https://git.example/team/app.git"
        ));
        assert!(glob("refs/tags/v*.*", "refs/tags/v1.2"));
        assert!(!glob("refs/tags/v*.*", "refs/tags/v12"));
        assert!(!glob("refs/heads/main", "refs/heads/main2"));
        assert!(glob("*", ""));
    }
}
