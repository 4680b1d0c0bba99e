//! Misbehaving builder for tests: runs `curl`, which no grant allows, and
//! passes the host's refusal on as its error.

wit_bindgen::generate!({
    path: "../../../wit/current",
    world: "helix:build/builder",
});

use exports::helix::build::builder_info::{self, Metadata};
use helix::build::command_runner::{self, Command, RunError};

struct Ungranted;

impl builder_info::Guest for Ungranted {
    fn info() -> Metadata {
        Metadata {
            name: "testing-ungranted".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TESTING: runs a program it was not granted".into(),
            simulated: true,
        }
    }
}

impl Guest for Ungranted {
    fn build(_job: Job) -> Result<BuildOutput, BuildError> {
        let command = Command {
            program: "curl".into(),
            args: vec!["-s".into(), "http://127.0.0.1:1/".into()],
            env: Vec::new(),
            working_dir: None,
            timeout_ms: None,
        };
        match command_runner::run(&command) {
            Err(RunError::Denied(reason)) => Err(BuildError::Denied(reason)),
            other => Err(BuildError::Internal(format!(
                "curl was not refused: {other:?}"
            ))),
        }
    }
}

export!(Ungranted);
