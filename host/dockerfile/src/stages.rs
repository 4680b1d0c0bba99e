//! Stages, external images and remote sources: what a build pulls in.

use std::collections::HashMap;

use crate::expand::expand;
use crate::lexer::heredoc_word;
use crate::parse::go_lower;
use crate::{Dockerfile, Instruction, ParseError};

/// The platform args BuildKit predefines in the global scope; the caller
/// supplies their values in the build args.
const PLATFORM_ARGS: [&str; 8] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

/// One build stage (one FROM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// 0-based stage index (what `COPY --from=0` names).
    pub index: usize,
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// The base as BuildKit resolves it: the FROM word expanded with the
    /// global ARGs.
    pub image: String,
    /// The FROM word as written.
    pub raw_image: String,
    /// `--platform=`, expanded.
    pub platform: Option<String>,
    /// 1-based line of the FROM.
    pub line: usize,
    /// The earlier stage this one builds on (`FROM build`), if any.
    pub base_stage: Option<usize>,
    /// True for `FROM scratch` (no base image).
    pub scratch: bool,
}

impl Stage {
    /// True when the base is an image pulled from a registry.
    pub fn is_external(&self) -> bool {
        !self.scratch && self.base_stage.is_none()
    }
}

/// An external image the build pulls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    /// The reference, expanded.
    pub image: String,
    /// The word as written (may hold `$VAR`s whose value came from the
    /// caller's build args or was unknown).
    pub raw: String,
    /// `FROM`, `COPY`, `ADD` or `RUN` (a `--mount` `from=`).
    pub keyword: String,
    /// 1-based line of first use.
    pub line: usize,
}

/// True for a source BuildKit or podman would fetch rather than read from the
/// build context: anything with `://` (`http`, `https`, `git`, `ssh`, any
/// scheme, any case), `git@host:…`, and `github.com/…` (podman reads that as
/// git). Deliberately broad.
pub fn is_remote_source(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    let lower = lower.trim_matches(['"', '\'']);
    lower.contains("://") || lower.starts_with("git@") || lower.starts_with("github.com/")
}

fn err(line: usize, e: impl std::fmt::Display) -> ParseError {
    ParseError::new(line, e.to_string())
}

/// Global ARGs (before the first FROM): name → value, `None` when declared
/// without a value.
fn global_args(
    df: &Dockerfile,
    args: &HashMap<String, String>,
) -> Result<HashMap<String, Option<String>>, ParseError> {
    let mut globals: HashMap<String, Option<String>> = HashMap::new();
    for ins in &df.instructions {
        if ins.keyword == "FROM" {
            break;
        }
        if ins.keyword != "ARG" {
            continue;
        }
        for word in &ins.args {
            let (name, default) = match word.split_once('=') {
                Some((n, d)) => (n, Some(d)),
                None => (word.as_str(), None),
            };
            let value = match (args.get(name), default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => {
                    let lookup = |n: &str| global_lookup(&globals, args, n);
                    Some(expand(d, &lookup, df.escape).map_err(|e| err(ins.start_line, e))?)
                }
                (None, None) => None,
            };
            globals.insert(name.to_string(), value);
        }
    }
    Ok(globals)
}

fn global_lookup(
    globals: &HashMap<String, Option<String>>,
    args: &HashMap<String, String>,
    name: &str,
) -> Option<String> {
    match globals.get(name) {
        Some(v) => v.clone(),
        None if PLATFORM_ARGS.contains(&name) => args.get(name).cloned(),
        None => None,
    }
}

pub(crate) fn stages(
    df: &Dockerfile,
    args: &HashMap<String, String>,
) -> Result<Vec<Stage>, ParseError> {
    let globals = global_args(df, args)?;
    let lookup = |n: &str| global_lookup(&globals, args, n);
    let mut out: Vec<Stage> = Vec::new();
    for ins in df.instructions.iter().filter(|i| i.keyword == "FROM") {
        let line = ins.start_line;
        let raw_image = ins.args.first().cloned().unwrap_or_default();
        let image = expand(&raw_image, &lookup, df.escape).map_err(|e| err(line, e))?;
        if image.is_empty() {
            return Err(err(
                line,
                format!("base name ({raw_image}) should not be blank"),
            ));
        }
        let platform = match ins.flag("platform") {
            Some(p) => Some(expand(p, &lookup, df.escape).map_err(|e| err(line, e))?),
            None => None,
        };
        let lower = go_lower(&image);
        let base_stage = out
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .map(|s| s.index);
        out.push(Stage {
            index: out.len(),
            name: ins.args.get(2).map(|n| go_lower(n)),
            scratch: base_stage.is_none() && lower == "scratch",
            image,
            raw_image,
            platform,
            line,
            base_stage,
        });
    }
    Ok(out)
}

/// Variables visible inside a stage: its ARGs (build arg, default, or the
/// global value) and ENVs, declared so far.
struct Scope<'a> {
    vars: HashMap<String, String>,
    globals: &'a HashMap<String, Option<String>>,
    args: &'a HashMap<String, String>,
    escape: char,
}

impl Scope<'_> {
    fn get(&self, n: &str) -> Option<String> {
        self.vars.get(n).cloned()
    }

    fn expand(&self, word: &str) -> Result<String, crate::ExpandError> {
        expand(word, &|n: &str| self.get(n), self.escape)
    }

    /// Records ARG/ENV; a value that does not expand is kept as written.
    fn declare(&mut self, ins: &Instruction) {
        match ins.keyword.as_str() {
            "FROM" => self.vars.clear(),
            "ARG" => {
                for word in &ins.args {
                    let (name, default) = match word.split_once('=') {
                        Some((n, d)) => (n, Some(d)),
                        None => (word.as_str(), None),
                    };
                    let value = match (self.args.get(name), default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(d)) => Some(self.expand(d).unwrap_or_else(|_| d.to_string())),
                        (None, None) => self.globals.get(name).cloned().flatten(),
                    };
                    if let Some(v) = value {
                        self.vars.insert(name.to_string(), v);
                    }
                }
            }
            "ENV" => {
                for pair in ins.args.chunks(2) {
                    if let [k, v] = pair {
                        let v = self.expand(v).unwrap_or_else(|_| v.clone());
                        self.vars.insert(k.clone(), v);
                    }
                }
            }
            _ => {}
        }
    }
}

pub(crate) fn external_images(
    df: &Dockerfile,
    args: &HashMap<String, String>,
) -> Result<Vec<ImageUse>, ParseError> {
    let all = stages(df, args)?;
    let globals = global_args(df, args)?;
    let mut scope = Scope {
        vars: HashMap::new(),
        globals: &globals,
        args,
        escape: df.escape,
    };
    let mut out: Vec<ImageUse> = Vec::new();
    let mut push = |u: ImageUse| {
        if !out.iter().any(|o| o.image == u.image) {
            out.push(u);
        }
    };
    // Number of FROMs seen so far; the current stage is `seen - 1`.
    let mut seen = 0usize;
    for ins in &df.instructions {
        let line = ins.start_line;
        match ins.keyword.as_str() {
            "FROM" => {
                if let Some(stage) = all.get(seen)
                    && stage.is_external()
                {
                    push(ImageUse {
                        image: stage.image.clone(),
                        raw: stage.raw_image.clone(),
                        keyword: "FROM".into(),
                        line,
                    });
                }
                seen += 1;
            }
            "COPY" | "ADD" => {
                for f in ins.flags.iter().filter(|f| f.name == "from") {
                    let raw = f.value.clone().unwrap_or_default();
                    let image = scope.expand(&raw).map_err(|e| err(line, e))?;
                    if !names_stage(&all, seen.saturating_sub(1), &image) {
                        push(ImageUse {
                            image,
                            raw,
                            keyword: ins.keyword.clone(),
                            line,
                        });
                    }
                }
            }
            "RUN" => {
                for m in ins.mounts()? {
                    let Some(raw) = m.from else { continue };
                    let image = scope.expand(&raw).map_err(|e| err(line, e))?;
                    if !names_stage(&all, seen.saturating_sub(1), &image) {
                        push(ImageUse {
                            image,
                            raw,
                            keyword: "RUN".into(),
                            line,
                        });
                    }
                }
            }
            _ => {}
        }
        scope.declare(ins);
    }
    Ok(out)
}

/// True when `word` names a stage before `current`, by name (any case) or
/// by index.
fn names_stage(all: &[Stage], current: usize, word: &str) -> bool {
    let lower = go_lower(word);
    let earlier = &all[..current.min(all.len())];
    if earlier.iter().any(|s| s.name.as_deref() == Some(&lower)) {
        return true;
    }
    match word.parse::<usize>() {
        Ok(i) => i < current && word.bytes().all(|b| b.is_ascii_digit()),
        Err(_) => false,
    }
}

pub(crate) fn remote_sources(
    df: &Dockerfile,
    args: &HashMap<String, String>,
) -> Vec<(usize, String)> {
    let globals = global_args(df, args).unwrap_or_default();
    let mut scope = Scope {
        vars: HashMap::new(),
        globals: &globals,
        args,
        escape: df.escape,
    };
    let mut out = Vec::new();
    for ins in &df.instructions {
        let mut targets = vec![ins];
        if let Some(child) = &ins.onbuild {
            targets.push(child);
        }
        for t in targets {
            if t.keyword != "ADD" && t.keyword != "COPY" {
                continue;
            }
            let line = t.start_line;
            let n = t.args.len();
            let sources = if n >= 2 {
                &t.args[..n - 1]
            } else {
                &t.args[..]
            };
            for src in sources {
                if !t.heredocs.is_empty() && heredoc_word(src).is_some() {
                    continue;
                }
                if is_remote_source(src) {
                    out.push((line, src.clone()));
                } else if src.contains('$')
                    && let Ok(e) = scope.expand(src)
                    && is_remote_source(&e)
                {
                    out.push((line, e));
                }
            }
            for f in &t.flags {
                if let Some(v) = &f.value
                    && is_remote_source(v)
                {
                    out.push((line, v.clone()));
                }
            }
        }
        scope.declare(ins);
    }
    out
}
