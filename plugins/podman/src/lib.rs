//! The podman builder: checks out the job's repository, builds it with
//! `podman build --isolation chroot` (one platform, or a manifest list for
//! several), and pushes it to the registry. See `helix-builder-kit`.

use helix_builder_kit::{BuildError, BuildOutput, InfoGuest, Job, Metadata, Tool};

struct Podman;

impl InfoGuest for Podman {
    fn info() -> Metadata {
        Metadata {
            name: "podman".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Builds with podman (chroot isolation) and pushes to a registry".into(),
            simulated: false,
        }
    }
}

impl helix_builder_kit::Guest for Podman {
    fn build(job: Job) -> Result<BuildOutput, BuildError> {
        helix_builder_kit::build(Tool::Podman, job)
    }
}

helix_builder_kit::bindings::export_builder!(Podman with_types_in helix_builder_kit::bindings);
