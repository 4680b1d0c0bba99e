//! Misbehaving builder for tests: allocates memory without bound inside
//! `build`.
//!
//! The host must stop it at the builder's memory limit, end the job
//! `failed` with an error naming the limit, and keep serving other jobs.

wit_bindgen::generate!({
    path: "../../../wit/current",
    world: "helix:build/builder",
});

use exports::helix::build::builder_info::{self, Metadata};

struct Hog;

impl builder_info::Guest for Hog {
    fn info() -> Metadata {
        Metadata {
            name: "testing-hog".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TESTING: allocates without bound in every build".into(),
            simulated: true,
        }
    }
}

impl Guest for Hog {
    fn build(_job: Job) -> Result<BuildOutput, BuildError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the memory is really used.
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export!(Hog);
