//! Word expansion as BuildKit's `shell.Lex.ProcessWord` does it.

/// A malformed word (`${`, an unterminated quote, `${VAR:?msg}` unset, an
/// unsupported modifier).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExpandError(pub String);

/// Expands `$VAR`, `${VAR}`, `${VAR:-w}`, `${VAR-w}`, `${VAR:+w}`,
/// `${VAR+w}`, `${VAR:?w}`, `${VAR?w}` in `word`, removing quotes: single
/// quotes are literal, double quotes are processed, `escape` before a
/// character makes it literal. Unset variables expand to nothing. Used to
/// learn what BuildKit will resolve, e.g. the image of `FROM $BASE`.
pub fn expand(
    word: &str,
    vars: &impl Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, ExpandError> {
    let mut lx = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        vars,
    };
    lx.process(None)
}

struct Lexer<'a, F: Fn(&str) -> Option<String>> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a F,
}

fn err<T>(m: impl Into<String>) -> Result<T, ExpandError> {
    Err(ExpandError(m.into()))
}

impl<F: Fn(&str) -> Option<String>> Lexer<'_, F> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// Processes up to `stop` (consumed) or the end.
    fn process(&mut self, stop: Option<char>) -> Result<String, ExpandError> {
        let mut out = String::new();
        loop {
            let Some(c) = self.next() else {
                if stop.is_some() {
                    return err("missing '}' in substitution");
                }
                return Ok(out);
            };
            if Some(c) == stop {
                return Ok(out);
            }
            match c {
                '\'' => loop {
                    match self.next() {
                        None => {
                            return err(
                                "unexpected end of statement while looking for matching single-quote",
                            );
                        }
                        Some('\'') => break,
                        Some(c) => out.push(c),
                    }
                },
                '"' => self.double_quote(&mut out)?,
                '$' => out.push_str(&self.dollar()?),
                c if c == self.escape => {
                    if let Some(n) = self.next() {
                        out.push(n);
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn double_quote(&mut self, out: &mut String) -> Result<(), ExpandError> {
        loop {
            match self.next() {
                None => {
                    return err(
                        "unexpected end of statement while looking for matching double-quote",
                    );
                }
                Some('"') => return Ok(()),
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) if c == self.escape => match self.peek() {
                    None => {}
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        out.push(n);
                    }
                    Some(_) => out.push(c),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                name.push(c);
                return name;
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn dollar(&mut self) -> Result<String, ExpandError> {
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok((self.vars)(&name).unwrap_or_default());
        }
        self.pos += 1;
        let name = self.name();
        if name.is_empty() {
            return err("bad substitution: missing variable name after '${'");
        }
        let value = (self.vars)(&name);
        let Some(c) = self.next() else {
            return err("missing '}' in substitution");
        };
        let (colon, modifier) = if c == ':' {
            match self.next() {
                Some(m) => (true, m),
                None => return err("missing '}' in substitution"),
            }
        } else {
            (false, c)
        };
        if modifier == '}' && !colon {
            return Ok(value.unwrap_or_default());
        }
        // `set` per the modifier: with a colon, an empty value counts as unset.
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        match modifier {
            '-' => {
                let w = self.process(Some('}'))?;
                Ok(if set { value.unwrap_or_default() } else { w })
            }
            '+' => {
                let w = self.process(Some('}'))?;
                Ok(if set { w } else { String::new() })
            }
            '?' => {
                let w = self.process(Some('}'))?;
                if set {
                    Ok(value.unwrap_or_default())
                } else {
                    err(format!("{name}: {w}"))
                }
            }
            m => err(format!("unsupported modifier ({m}) in substitution")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(n: &str) -> Option<String> {
        match n {
            "A" => Some("alpha".into()),
            "E" => Some(String::new()),
            "SP" => Some("a b".into()),
            _ => None,
        }
    }

    fn x(w: &str) -> Result<String, ExpandError> {
        expand(w, &vars, '\\')
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(x("img:$A").unwrap(), "img:alpha");
        assert_eq!(x("${A}x").unwrap(), "alphax");
        assert_eq!(x("$UNSET-x").unwrap(), "-x");
        assert_eq!(x("a$").unwrap(), "a$");
        assert_eq!(x("$1x").unwrap(), "x");
    }

    #[test]
    fn modifiers_with_and_without_colon() {
        assert_eq!(x("${U:-def}").unwrap(), "def");
        assert_eq!(x("${E:-def}").unwrap(), "def");
        assert_eq!(x("${E-def}").unwrap(), "");
        assert_eq!(x("${A:+set}").unwrap(), "set");
        assert_eq!(x("${E+set}").unwrap(), "set");
        assert_eq!(x("${E:+set}").unwrap(), "");
        assert_eq!(x("${U:-${A}}").unwrap(), "alpha");
        assert_eq!(x("${U:?boom}").unwrap_err().0, "U: boom");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$A'").unwrap(), "$A");
        assert_eq!(x("\"$A b\"").unwrap(), "alpha b");
        assert_eq!(x("\\$A").unwrap(), "$A");
        assert_eq!(x("\"\\$A\\n\"").unwrap(), "$A\\n");
        assert_eq!(expand("`$A", &vars, '`').unwrap(), "$A");
        assert_eq!(expand("c:\\dir", &vars, '`').unwrap(), "c:\\dir");
    }

    #[test]
    fn malformed_braces_are_errors() {
        assert!(x("${A").is_err());
        assert!(x("${").is_err());
        assert!(x("${}").is_err());
        assert!(x("${A:-x").is_err());
        assert!(x("${A%x}").is_err());
        assert!(x("${A B}").is_err());
        assert!(x("'open").is_err());
        assert!(x("\"open").is_err());
    }
}
