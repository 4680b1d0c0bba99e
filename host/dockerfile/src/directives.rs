//! Parser directives and BuildKit's frontend detection (`DetectSyntax`).

use crate::Directive;

/// Go RE2's `\s`: ASCII whitespace without `\v`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// Matches `^<prefix>\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`; returns the
/// lowercased key and the value.
pub(crate) fn match_directive(line: &str, prefix: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix(prefix)?;
    let rest = rest.trim_start_matches(is_re_space);
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| {
            if i == 0 {
                !c.is_ascii_alphabetic()
            } else {
                !c.is_ascii_alphanumeric()
            }
        })
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    if key_len == 0 {
        return None;
    }
    let key = &rest[..key_len];
    let rest = rest[key_len..].trim_start_matches(is_re_space);
    let after_eq = rest.strip_prefix('=')?;
    if after_eq.contains('\n') {
        return None;
    }
    let trimmed = after_eq.trim_start_matches(is_re_space);
    let value = if trimmed.is_empty() {
        // `(.+?)` still takes one (whitespace) character if there is one.
        let last = after_eq.chars().last()?;
        last.to_string()
    } else {
        trimmed.trim_end_matches(is_re_space).to_string()
    };
    Some((key.to_ascii_lowercase(), value))
}

/// Finds the frontend a file asks for, as BuildKit's `DetectSyntax` does, but
/// more permissively, as older BuildKit did: a leading BOM and one `#!` line
/// are skipped; then the leading block of `#`-directives (leading whitespace
/// allowed, unknown keys do not end it) is searched for `syntax`; then the
/// same with `//`; then a whole file that is a JSON object with a string
/// `"syntax"` key. Works on text that does not otherwise parse, so call it
/// before [`crate::parse`]: BuildKit switches frontend before parsing.
pub fn detect_syntax(text: &str) -> Option<Directive> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (body, first_line) = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("#!") => (rest, 2),
        None if text.starts_with("#!") => ("", 2),
        _ => (text, 1),
    };
    for prefix in ["#", "//"] {
        for (i, line) in body.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let line = line.trim_start();
            match match_directive(line, prefix) {
                Some((key, value)) => {
                    if key == "syntax" {
                        return Some(Directive {
                            name: key,
                            value,
                            line: first_line + i,
                        });
                    }
                }
                None => break,
            }
        }
    }
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let syntax = value.as_object()?.get("syntax")?.as_str()?;
    Some(Directive {
        name: "syntax".to_string(),
        value: syntax.to_string(),
        line: first_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_regex_edges() {
        assert_eq!(
            match_directive("#  SYNTAX = x ", "#"),
            Some(("syntax".into(), "x".into()))
        );
        assert_eq!(
            match_directive("#check=skip=all", "#"),
            Some(("check".into(), "skip=all".into()))
        );
        assert_eq!(match_directive("# 1a=b", "#"), None);
        assert_eq!(match_directive("# a b=c", "#"), None);
        assert_eq!(match_directive("# a=", "#"), None);
        assert_eq!(match_directive("# comment", "#"), None);
        assert_eq!(
            match_directive("// syntax=y", "//"),
            Some(("syntax".into(), "y".into()))
        );
    }
}
