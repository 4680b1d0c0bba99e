//! Word scanners after BuildKit's: builder flags, `parseWords`, and the
//! shell-word scan that finds heredocs.

use crate::Heredoc;

/// Go's `unicode.IsSpace` applied to a single byte cast to a rune, as
/// BuildKit's byte-wise flag scanner does.
fn is_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// BuildKit's `extractBuilderFlags`: leading `--flag[=value]` words (a bare
/// `--flag` before any `=` takes the next word as its value); returns the
/// remaining text and the flag words.
pub(crate) fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let lossy = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let mut words: Vec<String> = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut parsing_flag_arg = false;
    let mut need_flag_arg = true;
    let mut pos = 0;
    while pos <= b.len() {
        let ch = if pos < b.len() { b[pos] } else { 0 };
        if phase == Phase::Spaces {
            if pos == b.len() {
                break;
            }
            if is_space_byte(ch) {
                pos += 1;
                continue;
            }
            if !parsing_flag_arg && (ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-') {
                return (lossy(&b[pos..]), words);
            }
            phase = Phase::Word;
        }
        if pos == b.len() {
            // A pending flag argument at the end is appended as its own word
            // (BuildKit then rejects it for not starting with `--`).
            if word != b"--" && (blank_ok || !word.is_empty()) {
                words.push(lossy(&word));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space_byte(ch) {
                phase = Phase::Spaces;
                if parsing_flag_arg {
                    let w = lossy(&word);
                    if let Some(last) = words.last_mut() {
                        last.push('=');
                        last.push_str(&w);
                    }
                    parsing_flag_arg = false;
                    need_flag_arg = true;
                } else {
                    if word == b"--" {
                        return (lossy(&b[pos..]), words);
                    }
                    if blank_ok || !word.is_empty() {
                        if need_flag_arg {
                            parsing_flag_arg = true;
                        }
                        words.push(lossy(&word));
                    }
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'=' && need_flag_arg {
                need_flag_arg = false;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if c == b'\\' {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = b[pos];
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if c == b'\\' {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = b[pos];
        }
        word.push(c);
        pos += 1;
    }
    (String::new(), words)
}

/// BuildKit's `parseWords` (ARG, ENV, LABEL): whitespace-separated words,
/// quotes and escapes kept, spaces inside quotes not splitting.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let ch = if at_end { '\0' } else { chars[pos] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            let mut c = ch;
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                c = chars[pos];
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        let mut c = ch;
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            c = chars[pos];
        }
        word.push(c);
        pos += 1;
    }
    words
}

/// Splits a line the way BuildKit's heredoc scan does (shell words, quotes
/// and escapes kept raw). `None` when the lexer would fail (unterminated
/// quote or `${`), in which case BuildKit finds no heredocs.
fn raw_shell_words(line: &str) -> Option<Vec<String>> {
    let chars: Vec<char> = line.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                word.push(c);
                i += 1;
                loop {
                    let c = *chars.get(i)?;
                    word.push(c);
                    if c == '\'' {
                        break;
                    }
                    i += 1;
                }
            }
            '"' => {
                in_word = true;
                word.push(c);
                i += 1;
                loop {
                    let c = *chars.get(i)?;
                    word.push(c);
                    if c == '"' {
                        break;
                    }
                    if c == '\\' {
                        i += 1;
                        if let Some(&n) = chars.get(i) {
                            word.push(n);
                        } else {
                            return None;
                        }
                    }
                    i += 1;
                }
            }
            '\\' => {
                in_word = true;
                word.push(c);
                if let Some(&n) = chars.get(i + 1) {
                    word.push(n);
                    i += 1;
                }
            }
            '$' if chars.get(i + 1) == Some(&'{') => {
                in_word = true;
                let mut depth = 0usize;
                loop {
                    let c = *chars.get(i)?;
                    word.push(c);
                    if c == '{' {
                        depth += 1;
                    } else if c == '}' {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
        i += 1;
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// Removes quotes and escapes from a heredoc terminator word; `None` unless
/// it is exactly one word.
fn unquote_word(raw: &str) -> Option<String> {
    let words = raw_shell_words(raw)?;
    if words.len() != 1 {
        return None;
    }
    let mut out = String::new();
    let mut chars = words[0].chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                if !matches!(n, '"' | '$' | '\\') {
                                    out.push('\\');
                                }
                                out.push(n);
                            }
                        }
                        c => out.push(c),
                    }
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Matches BuildKit's `^(\d*)<<(-?)([^<]*)$` on one word.
pub(crate) fn heredoc_word(word: &str) -> Option<(Option<u64>, bool, &str)> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let after = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    if rest.contains('<') || rest.contains('\n') {
        return None;
    }
    let fd = if digits > 0 {
        Some(word[..digits].parse().unwrap_or(0))
    } else {
        None
    };
    Some((fd, chomp, rest))
}

pub(crate) fn heredocs_from_line(line: &str) -> Vec<Heredoc> {
    let Some(words) = raw_shell_words(line) else {
        return Vec::new();
    };
    let mut docs = Vec::new();
    for word in &words {
        let Some((fd, chomp, rest)) = heredoc_word(word) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let Some(name) = unquote_word(rest) else {
            continue;
        };
        let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
        docs.push(Heredoc {
            expand: quotes(&name) == quotes(rest),
            name,
            content: String::new(),
            chomp,
            fd,
            start_line: 0,
            end_line: 0,
        });
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_stop_at_first_non_flag_word() {
        let (rest, flags) =
            extract_builder_flags("--mount=type=cache,target=/x --network=none echo --x");
        assert_eq!(flags, ["--mount=type=cache,target=/x", "--network=none"]);
        assert_eq!(rest, "echo --x");
    }

    #[test]
    fn bare_flag_takes_next_word_as_value() {
        let (rest, flags) = extract_builder_flags("--mount type=bind,from=x,target=/y cmd");
        assert_eq!(flags, ["--mount=type=bind,from=x,target=/y"]);
        assert_eq!(rest, "cmd");
    }

    #[test]
    fn flag_quotes_are_removed_and_double_dash_ends_flags() {
        let (rest, flags) =
            extract_builder_flags(r#"--mount="type=cache,target=/a b" -- --notflag"#);
        assert_eq!(flags, ["--mount=type=cache,target=/a b"]);
        assert_eq!(rest, " --notflag");
    }

    #[test]
    fn heredoc_words() {
        assert_eq!(heredoc_word("<<EOF"), Some((None, false, "EOF")));
        assert_eq!(heredoc_word("3<<-'X'"), Some((Some(3), true, "'X'")));
        assert_eq!(heredoc_word("cat<<EOF"), None);
        assert_eq!(heredoc_word("<<<EOF"), None);
        let docs = heredocs_from_line(r#"RUN <<A cat 2<<"B" echo "<<C""#);
        let names: Vec<_> = docs.iter().map(|d| (d.name.as_str(), d.expand)).collect();
        assert_eq!(names, [("A", true), ("B", false)]);
        assert!(heredocs_from_line("RUN <<EOF echo 'unterminated").is_empty());
    }

    #[test]
    fn parse_words_keeps_quotes() {
        assert_eq!(
            parse_words(r#"A="x y" B=1 C"#, '\\'),
            [r#"A="x y""#, "B=1", "C"]
        );
    }
}
