//! Misbehaving builder for tests: panics inside `build`.
//!
//! The host must end the job `failed` with the panic message and keep
//! serving other jobs.

wit_bindgen::generate!({
    path: "../../../wit/current",
    world: "helix:build/builder",
});

use exports::helix::build::builder_info::{self, Metadata};

struct Panics;

impl builder_info::Guest for Panics {
    fn info() -> Metadata {
        Metadata {
            name: "testing-panic".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TESTING: panics in every build".into(),
            simulated: true,
        }
    }
}

impl Guest for Panics {
    fn build(job: Job) -> Result<BuildOutput, BuildError> {
        panic!("testing-panic gave up on job {}", job.id);
    }
}

export!(Panics);
