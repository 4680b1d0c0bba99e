//! Misbehaving builder for tests: reports success without an image tag.
//! The host must not believe it.

wit_bindgen::generate!({
    path: "../../../wit/current",
    world: "helix:build/builder",
});

use exports::helix::build::builder_info::{self, Metadata};
use helix::build::types::SimulatedImage;

struct EmptyTag;

impl builder_info::Guest for EmptyTag {
    fn info() -> Metadata {
        Metadata {
            name: "testing-empty-tag".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TESTING: claims success with an empty tag".into(),
            simulated: true,
        }
    }
}

impl Guest for EmptyTag {
    fn build(_job: Job) -> Result<BuildOutput, BuildError> {
        Ok(BuildOutput::Simulated(SimulatedImage {
            image_tag: String::new(),
            digest: None,
            manifest: Vec::new(),
        }))
    }
}

export!(EmptyTag);
