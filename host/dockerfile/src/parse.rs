//! Line reading, directives, continuations, heredocs and instruction splitting,
//! after BuildKit's `parser.Parse`, `splitCommand` and line parsers.

use std::collections::HashSet;

use crate::directives::match_directive;
use crate::lexer::{extract_builder_flags, heredocs_from_line, parse_words};
use crate::{Directive, Dockerfile, Flag, Instruction, ParseError, ParseOptions};

const KEYWORDS: [&str; 18] = [
    "from",
    "run",
    "cmd",
    "label",
    "maintainer",
    "expose",
    "env",
    "add",
    "copy",
    "entrypoint",
    "volume",
    "user",
    "workdir",
    "arg",
    "onbuild",
    "stopsignal",
    "healthcheck",
    "shell",
];

/// Go's `strings.ToLower`: simple (one-to-one) case mapping, so that e.g. the
/// Kelvin sign lowers to `k` and `İ` to `i`, exactly as BuildKit dispatches.
pub(crate) fn go_lower(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\u{130}' {
                'i'
            } else {
                let mut l = c.to_lowercase();
                match (l.next(), l.next()) {
                    (Some(one), None) => one,
                    _ => c,
                }
            }
        })
        .collect()
}

/// Go's `strings.EqualFold` for an ASCII target (`as`, `scratch`): simple
/// case folding, under which `ſ` folds to `s` and the Kelvin sign to `k`.
pub(crate) fn go_equal_fold_ascii(s: &str, ascii: &str) -> bool {
    let fold = |c: char| match c {
        '\u{17f}' => 's',
        '\u{212a}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    let mut a = s.chars();
    let mut b = ascii.chars();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if fold(x) == y.to_ascii_lowercase() => {}
            _ => return false,
        }
    }
}

/// `bytes.TrimRight(line, "\r\n")`.
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    trim_newline(s).trim_start().starts_with('#')
}

/// BuildKit's line-continuation regex `([^E])E[ \t]*$|^E[ \t]*$`.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape)
        && (before.is_empty() || !before.ends_with(escape))
    {
        return (before, false);
    }
    (line, true)
}

struct Directives {
    escape: char,
    done: bool,
    seen: HashSet<String>,
    unknown_seen: bool,
    list: Vec<Directive>,
}

impl Directives {
    fn line(&mut self, token: &str, line: usize) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = match_directive(token, "#") else {
            self.done = true;
            return Ok(());
        };
        if matches!(key.as_str(), "escape" | "syntax" | "check") {
            if !self.seen.insert(key.clone()) {
                return Err(ParseError::new(
                    line,
                    format!("only one {key} parser directive can be used"),
                ));
            }
            if key == "escape" {
                let esc = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(ParseError::new(
                            line,
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ));
                    }
                };
                if self.unknown_seen && esc != '\\' {
                    return Err(ParseError::new(
                        line,
                        "escape directive after an unknown directive: BuildKit versions \
                         disagree on whether it applies",
                    ));
                }
                self.escape = esc;
            }
        } else {
            self.unknown_seen = true;
        }
        self.list.push(Directive {
            name: key,
            value,
            line,
        });
        Ok(())
    }
}

pub(crate) fn parse(text: &str, options: ParseOptions) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut d = Directives {
        escape: '\\',
        done: false,
        seen: HashSet::new(),
        unknown_seen: false,
        list: Vec::new(),
    };
    let mut instructions = Vec::new();
    let mut idx = 0;
    while idx < lines.len() {
        let raw = lines[idx];
        idx += 1;
        let start = idx;
        let token = trim_newline(raw).trim_start();
        d.line(token, start)?;
        let processed = if token.starts_with('#') { "" } else { token };
        let (first, mut eol) = trim_continuation(processed, d.escape);
        if eol && first.is_empty() {
            continue;
        }
        let mut logical = first.to_string();
        while !eol && idx < lines.len() {
            let raw = lines[idx];
            idx += 1;
            if is_comment(raw) || trim_newline(raw).trim_start().is_empty() {
                continue;
            }
            let (cont, e) = trim_continuation(trim_newline(raw), d.escape);
            logical.push_str(cont);
            eol = e;
        }
        let mut ins = match new_instruction(&logical, d.escape, start, idx) {
            Ok(ins) => ins,
            // podman 4.3 and buildah 1.28 run the instructions before one
            // they cannot read (a heredoc's `EOF` line, say), then stop:
            // what they ran is the reading.
            Err(_) if !options.heredocs => break,
            Err(e) => return Err(e),
        };
        if options.heredocs && can_contain_heredoc(&ins) {
            let mut docs = heredocs_from_line(&logical);
            for doc in &mut docs {
                doc.start_line = idx + 1;
                let mut terminated = false;
                while idx < lines.len() {
                    let raw = lines[idx];
                    idx += 1;
                    let mut possible = trim_newline(raw);
                    if doc.chomp {
                        possible = possible.trim_start_matches('\t');
                    }
                    if possible == doc.name {
                        terminated = true;
                        break;
                    }
                    if doc.chomp {
                        doc.content.push_str(raw.trim_start_matches('\t'));
                    } else {
                        doc.content.push_str(raw);
                    }
                }
                if !terminated {
                    return Err(ParseError::new(
                        start,
                        format!("unterminated heredoc {:?}", doc.name),
                    ));
                }
                doc.end_line = idx;
            }
            if let Some(child) = &mut ins.onbuild {
                child.heredocs = docs.clone();
            }
            ins.heredocs = docs;
        }
        ins.end_line = idx;
        if let Some(child) = &mut ins.onbuild {
            child.end_line = idx;
        }
        let original = lines[start - 1..idx].concat();
        ins.original = original
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&original)
            .to_string();
        if let Some(child) = &mut ins.onbuild {
            child.original = ins.original.clone();
        }
        instructions.push(ins);
    }
    validate(&instructions, lines.len().max(1))?;
    Ok(Dockerfile {
        directives: d.list,
        escape: d.escape,
        instructions,
        syntax: None,
    })
}

fn validate(instructions: &[Instruction], last_line: usize) -> Result<(), ParseError> {
    let Some(first) = instructions.first() else {
        return Err(ParseError::new(last_line, "file with no instructions"));
    };
    let mut seen_from = false;
    for ins in instructions {
        match ins.keyword.as_str() {
            "FROM" => seen_from = true,
            "ARG" => {}
            kw if !seen_from => {
                return Err(ParseError::new(
                    ins.start_line,
                    format!("{kw} before the first FROM: no build stage in current context"),
                ));
            }
            _ => {}
        }
    }
    if !seen_from {
        return Err(ParseError::new(
            first.start_line,
            "dockerfile contains no FROM: no stages to build",
        ));
    }
    Ok(())
}

fn can_contain_heredoc(ins: &Instruction) -> bool {
    let node = match &ins.onbuild {
        Some(child) => child,
        None => ins,
    };
    matches!(node.keyword.as_str(), "RUN" | "COPY" | "ADD") && !node.json
}

/// `[\t\v\f\r ]`, BuildKit's `reWhitespace`.
fn is_ws_class(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

fn split_ws(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(is_ws_class)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits at the first run of `[\t\v\f\r ]`, like `reWhitespace.Split(s, 2)`.
fn split_ws2(s: &str) -> (&str, Option<&str>) {
    match s.find(is_ws_class) {
        Some(i) => {
            let rest = s[i..].trim_start_matches(is_ws_class);
            (&s[..i], Some(rest))
        }
        None => (s, None),
    }
}

fn new_instruction(
    line: &str,
    escape: char,
    start: usize,
    end: usize,
) -> Result<Instruction, ParseError> {
    let (cmd, rest) = split_ws2(line.trim());
    let lower = go_lower(cmd);
    if !KEYWORDS.contains(&lower.as_str()) {
        return Err(ParseError::new(
            start,
            format!("unknown instruction {:?}", cmd.to_uppercase()),
        ));
    }
    let keyword = lower.to_ascii_uppercase();
    let (rest, flag_words) = match rest {
        Some(r) => extract_builder_flags(r),
        None => (String::new(), Vec::new()),
    };
    let rest = rest.trim().to_string();
    let mut flags = Vec::new();
    for w in flag_words {
        let Some(w) = w.strip_prefix("--") else {
            return Err(ParseError::new(
                start,
                format!("arg should start with -- : {w}"),
            ));
        };
        flags.push(match w.split_once('=') {
            Some((n, v)) => Flag {
                name: n.to_string(),
                value: Some(v.to_string()),
            },
            None => Flag {
                name: w.to_string(),
                value: None,
            },
        });
    }
    let err = |m: String| ParseError::new(start, m);
    let mut json = false;
    let mut onbuild = None;
    let args = match keyword.as_str() {
        "ADD" | "COPY" | "VOLUME" => match parse_json(&rest).map_err(err)? {
            Some(a) => {
                json = true;
                a
            }
            None => split_ws(&rest),
        },
        "RUN" | "CMD" | "ENTRYPOINT" | "SHELL" => match parse_json(&rest).map_err(err)? {
            Some(a) => {
                json = true;
                a
            }
            None if rest.is_empty() => Vec::new(),
            None => vec![rest.clone()],
        },
        "ARG" => parse_words(&rest, escape),
        "ENV" | "LABEL" => parse_name_val(&rest, &keyword, escape).map_err(err)?,
        "FROM" => {
            let words = split_ws(&rest);
            check_from(&words).map_err(err)?;
            words
        }
        "EXPOSE" => split_ws(&rest),
        "HEALTHCHECK" => {
            let (typ, cmd) = split_ws2(&rest);
            if typ.is_empty() {
                Vec::new()
            } else {
                let cmd = cmd.unwrap_or("");
                let mut v = vec![typ.to_string()];
                match parse_json(cmd).map_err(err)? {
                    Some(a) => {
                        json = true;
                        v.extend(a);
                    }
                    None if cmd.is_empty() => {}
                    None => v.push(cmd.to_string()),
                }
                v
            }
        }
        "ONBUILD" => {
            if rest.is_empty() {
                return Err(err("ONBUILD requires at least one argument".into()));
            }
            let child = new_instruction(&rest, escape, start, end)?;
            match child.keyword.as_str() {
                "ONBUILD" => {
                    return Err(err(
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()
                    ));
                }
                "FROM" | "MAINTAINER" => {
                    return Err(err(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        child.keyword
                    )));
                }
                _ => {}
            }
            onbuild = Some(Box::new(child));
            Vec::new()
        }
        // MAINTAINER, STOPSIGNAL, USER, WORKDIR
        _ if rest.is_empty() => Vec::new(),
        _ => vec![rest.clone()],
    };
    Ok(Instruction {
        keyword,
        flags,
        args,
        json,
        rest,
        heredocs: Vec::new(),
        onbuild,
        text: line.to_string(),
        original: String::new(),
        start_line: start,
        end_line: end,
    })
}

fn check_from(words: &[String]) -> Result<(), String> {
    match words {
        [_] => Ok(()),
        [_, as_kw, name] if go_equal_fold_ascii(as_kw, "as") => {
            let name = go_lower(name);
            let mut chars = name.chars();
            let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if ok {
                Ok(())
            } else {
                Err(format!("invalid name for build stage: {name:?}"))
            }
        }
        _ => Err("FROM requires either one or three arguments".into()),
    }
}

/// BuildKit's `parseJSON`: `Ok(Some)` for a JSON string array (trailing text
/// after the array ignored, as Go's `json.Decoder` does), `Ok(None)` when the
/// text is not a JSON array, `Err` for an array with a non-string element.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    let Some(Ok(serde_json::Value::Array(items))) = stream.next() else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => {
                Err("when using JSON array syntax, arrays must be comprised of strings only".into())
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// BuildKit's `parseNameVal` (ENV, LABEL): `KEY value` or `K=v K2=v2 …`,
/// flattened to alternating key, value.
fn parse_name_val(rest: &str, keyword: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let (k, v) = split_ws2(rest);
        return match v {
            Some(v) => Ok(vec![k.to_string(), v.to_string()]),
            None => Err(format!("{keyword} must have two arguments")),
        };
    }
    let mut out = Vec::new();
    for w in &words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            ));
        };
        out.push(k.to_string());
        out.push(v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_regex_semantics() {
        assert_eq!(trim_continuation("RUN a \\", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN a \\  \t", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("RUN a \\\\", '\\'), ("RUN a \\\\", true));
        assert_eq!(trim_continuation("RUN a `", '`'), ("RUN a ", false));
    }

    #[test]
    fn go_case_mapping_matches_buildkit_dispatch() {
        assert_eq!(go_lower("WOR\u{212a}DIR"), "workdir");
        assert_eq!(go_lower("ONBU\u{130}LD"), "onbuild");
        assert!(go_equal_fold_ascii("a\u{17f}", "as"));
        assert!(!go_equal_fold_ascii("ass", "as"));
    }
}
