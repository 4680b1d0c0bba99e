//! The host's one Dockerfile parser.
//!
//! The host is trusted; Dockerfiles come from untrusted users. Every security
//! check the host makes on a Dockerfile (frontend directives, `RUN --mount`
//! rules, `ADD <url>`, base images for provenance) uses this parser, so it
//! reads a Dockerfile exactly as BuildKit's parser
//! (moby/buildkit `frontend/dockerfile/parser`) does. Where tools disagree
//! (old and new BuildKit, podman/buildah without heredocs), it errs towards
//! reporting MORE: a check that sees more refuses more. Errors carry the
//! 1-based line number.
//!
//! Entry points: [`parse`] / [`parse_with`] give a [`Dockerfile`];
//! [`detect_syntax`] finds the frontend a file asks for even when it does not
//! parse; [`expand`] is BuildKit's word expansion; [`is_remote_source`] says
//! whether a source word would be fetched rather than read from the context.

mod directives;
mod expand;
mod lexer;
mod mount;
mod parse;
mod stages;

use std::collections::HashMap;

pub use directives::detect_syntax;
pub use expand::{ExpandError, expand};
pub use mount::{Mount, MountKind};
pub use stages::{ImageUse, Stage, is_remote_source};

/// A parse (or view) error, with the 1-based line of the offending instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line in the original text (the instruction's first line).
    pub line: usize,
    /// What is wrong, e.g. `unknown instruction "FORM"`.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(line: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            message: message.into(),
        }
    }
}

/// How to read a Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Read heredocs (`RUN <<EOF`) as BuildKit (dockerfile ≥ 1.4) does. With
    /// `false`, heredoc bodies are read as instructions, as podman 4.3 /
    /// buildah 1.28 do, and the reading ends (without an error) at the
    /// first line that is no instruction they know: they run what comes
    /// before it, then fail. The host checks both readings.
    pub heredocs: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions { heredocs: true }
    }
}

/// A parser directive (`# syntax=…`, `# escape=…`, `# check=…`, or any other
/// directive-shaped line of the leading block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Key, lowercased (`syntax`).
    pub name: String,
    /// Value, trimmed (`docker/dockerfile:1`); for `syntax` the frontend image
    /// is its first space-separated word.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// A `--name[=value]` flag after an instruction keyword, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// Name without the leading `--` (`mount`, `platform`, `from`).
    pub name: String,
    /// Value after `=`, quotes removed; `None` for a bare `--link`.
    pub value: Option<String>,
}

/// A heredoc attached to a RUN/COPY/ADD (or ONBUILD of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// Terminator word with quotes removed (`EOF`).
    pub name: String,
    /// Body lines with their line endings; leading tabs removed for `<<-`.
    pub content: String,
    /// False when the terminator was quoted (`<<"EOF"`): no expansion in body.
    pub expand: bool,
    /// True for `<<-`.
    pub chomp: bool,
    /// File descriptor digits before `<<` (`3<<EOF`), if any.
    pub fd: Option<u64>,
    /// 1-based line of the first body line.
    pub start_line: usize,
    /// 1-based line of the terminator.
    pub end_line: usize,
}

/// One instruction as BuildKit's parser reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Keyword, uppercase (`RUN`).
    pub keyword: String,
    /// Leading `--flags`, in order.
    pub flags: Vec<Flag>,
    /// Arguments as BuildKit's node values: the JSON array elements for the
    /// exec form; otherwise per keyword: RUN/CMD/ENTRYPOINT/SHELL/USER/
    /// WORKDIR/MAINTAINER/STOPSIGNAL one string (the shell form), FROM/
    /// EXPOSE/COPY/ADD/VOLUME whitespace-separated words, ARG quote-aware
    /// words, ENV/LABEL alternating key and value, HEALTHCHECK the type then
    /// the command, ONBUILD none (see `onbuild`).
    pub args: Vec<String>,
    /// True when the arguments were a JSON string array (exec form).
    pub json: bool,
    /// The argument text after keyword and flags, trimmed.
    pub rest: String,
    /// Heredocs, in order of their `<<` words.
    pub heredocs: Vec<Heredoc>,
    /// The trigger instruction of an ONBUILD.
    pub onbuild: Option<Box<Instruction>>,
    /// The logical line BuildKit parses: continuations joined without the
    /// escape character, comment and empty lines inside dropped.
    pub text: String,
    /// The exact source lines `start_line..=end_line` (heredoc bodies
    /// included), without the final line ending.
    pub original: String,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (last continuation line or heredoc terminator).
    pub end_line: usize,
}

impl Instruction {
    /// The value of the first flag named `name`, if present with a value.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.value.as_deref())
    }

    /// The `--mount` flags of a RUN, parsed as BuildKit does (empty for other
    /// keywords). An invalid mount is an error, as in BuildKit.
    pub fn mounts(&self) -> Result<Vec<Mount>, ParseError> {
        mount::instruction_mounts(self)
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Every directive-shaped line of the leading block (any key), in order.
    /// Newer BuildKit stops at an unknown key, older accepted any: callers
    /// should treat all of these as possibly in force.
    pub directives: Vec<Directive>,
    /// The escape character in force (`\` or `` ` ``).
    pub escape: char,
    /// Instructions in order (heredoc bodies and comments excluded).
    pub instructions: Vec<Instruction>,
    /// The syntax directive found by any detection form.
    syntax: Option<Directive>,
}

/// Parses `text` as BuildKit does, heredocs on.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    parse_with(text, ParseOptions::default())
}

/// Parses `text` with explicit options (see [`ParseOptions::heredocs`]).
pub fn parse_with(text: &str, options: ParseOptions) -> Result<Dockerfile, ParseError> {
    let mut df = parse::parse(text, options)?;
    df.syntax =
        detect_syntax(text).or_else(|| df.directives.iter().find(|d| d.name == "syntax").cloned());
    Ok(df)
}

impl Dockerfile {
    /// The frontend (`syntax`) this file asks for, by any form BuildKit or an
    /// older version honours: `# syntax=` (with leading whitespace or after
    /// unknown directives too), `// syntax=`, after a `#!` line, or a JSON
    /// object with a `"syntax"` key. A caller must refuse or vet it: a
    /// frontend is code run on the build host.
    pub fn frontend(&self) -> Option<&Directive> {
        self.syntax.as_ref()
    }

    /// The build stages (one per FROM), with base images expanded by the
    /// global ARGs. `args` are the build args, including the predefined
    /// platform args (`TARGETPLATFORM`, …) the caller supplies.
    pub fn stages(&self, args: &HashMap<String, String>) -> Result<Vec<Stage>, ParseError> {
        stages::stages(self, args)
    }

    /// Every external image the build pulls, in order of first use, no
    /// repeats: FROM bases that are not `scratch` or an earlier stage,
    /// `COPY/ADD --from=` and `RUN --mount=…,from=` that name no earlier
    /// stage (by name or index). Values are expanded with the variables in
    /// scope; `ImageUse::raw` keeps the unexpanded word.
    pub fn external_images(
        &self,
        args: &HashMap<String, String>,
    ) -> Result<Vec<ImageUse>, ParseError> {
        stages::external_images(self, args)
    }

    /// Every `RUN --mount` (ONBUILD RUN included), in order, with its line.
    pub fn run_mounts(&self) -> Result<Vec<Mount>, ParseError> {
        let mut out = Vec::new();
        for ins in &self.instructions {
            out.extend(ins.mounts()?);
            if let Some(child) = &ins.onbuild {
                out.extend(child.mounts()?);
            }
        }
        Ok(out)
    }

    /// ADD and COPY sources (destination and heredoc names excluded; ONBUILD
    /// ones included) that would be fetched rather than read from the context
    /// (see [`is_remote_source`]), with their lines. A source is reported if
    /// it is remote as written or after expansion with `args` and the
    /// variables in scope. Flag values that are remote are reported too
    /// (a bare boolean flag can swallow the next word as its value).
    pub fn remote_sources(&self, args: &HashMap<String, String>) -> Vec<(usize, String)> {
        stages::remote_sources(self, args)
    }
}
