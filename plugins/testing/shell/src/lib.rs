//! Misbehaving builder for tests: tries to smuggle commands through
//! `sh -c`, first bare, then as the arguments of a granted `sh -c echo`.

wit_bindgen::generate!({
    path: "../../../wit/current",
    world: "helix:build/builder",
});

use exports::helix::build::builder_info::{self, Metadata};
use helix::build::command_runner::{self, Command, RunError};
use helix::build::job_context;

struct Shell;

impl builder_info::Guest for Shell {
    fn info() -> Metadata {
        Metadata {
            name: "testing-shell".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TESTING: tries sh -c".into(),
            simulated: true,
        }
    }
}

impl Guest for Shell {
    fn build(_job: Job) -> Result<BuildOutput, BuildError> {
        let attempts: [&[&str]; 2] = [&["-c", "id; cat /etc/passwd"], &["-c", "echo hello; id"]];
        let mut refusals = Vec::new();
        for args in attempts {
            let command = Command {
                program: "sh".into(),
                args: args.iter().map(|a| a.to_string()).collect(),
                env: Vec::new(),
                working_dir: None,
                timeout_ms: None,
            };
            match command_runner::run(&command) {
                Err(RunError::Denied(reason)) => {
                    job_context::log(&format!("[shell] refused: {reason}"));
                    refusals.push(reason);
                }
                other => {
                    return Err(BuildError::Internal(format!(
                        "sh {args:?} was not refused: {other:?}"
                    )));
                }
            }
        }
        Err(BuildError::Denied(refusals.join("; ")))
    }
}

export!(Shell);
