//! Misbehaving builder for tests: spins forever inside `build` without
//! calling any import.
//!
//! The host must interrupt it (epoch deadline), end the job `timed_out`, and
//! stay responsive while it spins.

wit_bindgen::generate!({
    path: "../../../wit/current",
    world: "helix:build/builder",
});

use exports::helix::build::builder_info::{self, Metadata};

struct Spins;

impl builder_info::Guest for Spins {
    fn info() -> Metadata {
        Metadata {
            name: "testing-spin".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TESTING: loops forever in every build".into(),
            simulated: true,
        }
    }
}

impl Guest for Spins {
    fn build(_job: Job) -> Result<BuildOutput, BuildError> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Spins);
