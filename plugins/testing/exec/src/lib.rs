//! Builder for tests of the command runner: runs the commands its build
//! args describe, in order, and logs how each ended.
//!
//! - `EXEC_<n>` (n = 0..9): the program and its arguments, one per line.
//! - `EXEC_<n>_ENV`: `NAME=value` lines to set on the call.
//! - `EXEC_<n>_CWD`: the working directory.
//! - `EXEC_<n>_TIMEOUT_MS`: the call's timeout.
//!
//! A denied call ends the build `denied`; any other error or a non-zero
//! exit ends it as a build error.

wit_bindgen::generate!({
    path: "../../../wit/current",
    world: "helix:build/builder",
});

use exports::helix::build::builder_info::{self, Metadata};
use helix::build::command_runner::{self, Command, RunError};
use helix::build::job_context;
use helix::build::types::SimulatedImage;

struct Exec;

impl builder_info::Guest for Exec {
    fn info() -> Metadata {
        Metadata {
            name: "testing-exec".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TESTING: runs the commands its build args describe".into(),
            simulated: true,
        }
    }
}

fn arg(job: &Job, name: &str) -> Option<String> {
    job.build_args
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.clone())
}

impl Guest for Exec {
    fn build(job: Job) -> Result<BuildOutput, BuildError> {
        for n in 0..10 {
            let Some(line) = arg(&job, &format!("EXEC_{n}")) else {
                continue;
            };
            let mut words = line.split('\n').map(str::to_string);
            let program = words.next().unwrap_or_default();
            let env = arg(&job, &format!("EXEC_{n}_ENV"))
                .map(|e| {
                    e.lines()
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let command = Command {
                program,
                args: words.collect(),
                env,
                working_dir: arg(&job, &format!("EXEC_{n}_CWD")),
                timeout_ms: arg(&job, &format!("EXEC_{n}_TIMEOUT_MS")).and_then(|t| t.parse().ok()),
            };
            match command_runner::run(&command) {
                Ok(output) => {
                    job_context::log(&format!(
                        "[exec] {n}: exit {}, {} bytes of stdout kept, {} of stderr",
                        output.exit_code,
                        output.stdout.len(),
                        output.stderr.len()
                    ));
                    if let Some(last) = output.stdout.lines().last() {
                        job_context::log(&format!("[exec] {n}: last stdout line: {last}"));
                    }
                    if output.exit_code != 0 {
                        return Err(BuildError::Build(format!(
                            "command {n} exited with {}",
                            output.exit_code
                        )));
                    }
                }
                Err(RunError::Denied(reason)) => {
                    job_context::log(&format!("[exec] {n}: denied"));
                    return Err(BuildError::Denied(reason));
                }
                Err(other) => {
                    job_context::log(&format!("[exec] {n}: {other:?}"));
                    return Err(BuildError::Build(format!("command {n}: {other:?}")));
                }
            }
        }
        Ok(BuildOutput::Simulated(SimulatedImage {
            image_tag: format!("testing.invalid/exec:{}", job.id),
            digest: None,
            manifest: Vec::new(),
        }))
    }
}

export!(Exec);
