//! The buildah builder: checks out the job's repository, builds it with
//! `buildah build --isolation chroot` (one platform, or a manifest list for
//! several), and pushes it to the registry. See `helix-builder-kit`.

use helix_builder_kit::{BuildError, BuildOutput, InfoGuest, Job, Metadata, Tool};

struct Buildah;

impl InfoGuest for Buildah {
    fn info() -> Metadata {
        Metadata {
            name: "buildah".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Builds with buildah (chroot isolation) and pushes to a registry".into(),
            simulated: false,
        }
    }
}

impl helix_builder_kit::Guest for Buildah {
    fn build(job: Job) -> Result<BuildOutput, BuildError> {
        helix_builder_kit::build(Tool::Buildah, job)
    }
}

helix_builder_kit::bindings::export_builder!(Buildah with_types_in helix_builder_kit::bindings);
