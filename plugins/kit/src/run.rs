//! Running a program through the host, with the host's refusals mapped to
//! build errors that say whose fault they are.

use crate::BuildError;
use crate::bindings::helix::build::command_runner::{self, Command, Output, RunError};

pub(crate) fn run(program: &str, args: Vec<String>) -> Result<Output, BuildError> {
    let command = Command {
        program: program.to_string(),
        args,
        env: Vec::new(),
        working_dir: None,
        timeout_ms: None,
    };
    command_runner::run(&command).map_err(|e| match e {
        RunError::Denied(reason) => BuildError::Denied(reason),
        RunError::NotFound(reason) => BuildError::Internal(format!(
            "{reason}; the operator must install `{program}` on the build host"
        )),
        RunError::Cancelled => BuildError::Cancelled,
        RunError::TimedOut => BuildError::Internal(format!("`{program}` timed out")),
        RunError::FailedToStart(reason) => {
            BuildError::Internal(format!("`{program}` could not start: {reason}"))
        }
    })
}

/// The line of a tool's stderr that says what went wrong: where a Go
/// tool crashed, its `panic:` line (the stack trace after it says
/// nothing a user can act on); else its last `Error:`/`fatal:` line, else
/// its last non-empty line. A crash counts only as the tool's last words
/// — a goroutine trace after the panic line and no error line after it —
/// since a build step's own stderr passes through the tool, and a step
/// that printed a made-up crash is still followed by the tool's error.
pub(crate) fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let is_error =
        |l: &str| l.starts_with("Error:") || l.starts_with("error:") || l.starts_with("fatal:");
    let crash = lines
        .iter()
        .rposition(|l| l.starts_with("panic: ") || l.starts_with("fatal error: "))
        .filter(|&at| {
            let after = &lines[at + 1..];
            after
                .iter()
                .any(|l| l.starts_with("goroutine ") && l.ends_with(':'))
                && !after.iter().any(|l| is_error(l))
        })
        .map(|at| &lines[at]);
    crash
        .or_else(|| lines.iter().rev().find(|l| is_error(l)))
        .or(lines.last())
        .map(|l| {
            l.trim_start_matches("Error: ")
                .trim_start_matches("error: ")
                .trim_start_matches("fatal: ")
                .to_string()
        })
        .unwrap_or_else(|| "no error output".into())
}
