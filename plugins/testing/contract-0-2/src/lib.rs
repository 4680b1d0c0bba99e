//! Builder for tests of contract versions: built against the previous
//! contract, `helix:build@0.2.0` (`wit/v0.2.0`). It runs `echo from
//! 0.2.0` through the host's command runner, logs the job it was given
//! and reports a simulated image.

wit_bindgen::generate!({
    path: "../../../wit/v0.2.0",
    world: "helix:build/builder",
});

use exports::helix::build::builder_info::{self, Metadata};
use helix::build::command_runner::{self, Command};
use helix::build::job_context;
use helix::build::types::SimulatedImage;

struct Contract02;

impl builder_info::Guest for Contract02 {
    fn info() -> Metadata {
        Metadata {
            name: "testing-contract-0-2".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TESTING: built against helix:build@0.2.0".into(),
            simulated: true,
        }
    }
}

impl Guest for Contract02 {
    fn build(job: Job) -> Result<BuildOutput, BuildError> {
        job_context::log(&format!(
            "[v0.2] job {} of {} at {} ({})",
            job.id, job.repo_url, job.git_ref, job.dockerfile_path
        ));
        let echo = Command {
            program: "echo".into(),
            args: vec!["from".into(), "0.2.0".into()],
            env: Vec::new(),
            working_dir: None,
            timeout_ms: None,
        };
        let output = command_runner::run(&echo).map_err(|e| BuildError::Denied(format!("{e:?}")))?;
        job_context::log(&format!("[v0.2] echo said: {}", output.stdout.trim()));
        Ok(BuildOutput::Simulated(SimulatedImage {
            image_tag: format!("simulated.invalid/contract-0-2:{}", job.id),
            digest: None,
            manifest: Vec::new(),
        }))
    }
}

export!(Contract02);
