//! An example builder with one policy of its own: it refuses a Dockerfile
//! whose image would run as root (no `USER`, or a last `USER` of root),
//! then builds like the built-in podman builder. Everything else — the
//! bindings, running podman through the host, the error variants — comes
//! from `helix-builder-kit`. Run it under the podman builder's grants.

use helix_builder_kit::{BuildError, BuildOutput, Guest, InfoGuest, Job, Metadata, Tool};

struct UserPolicy;

impl InfoGuest for UserPolicy {
    fn info() -> Metadata {
        Metadata {
            name: "user-policy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Refuses images that would run as root, then builds with podman".into(),
            simulated: false,
        }
    }
}

impl Guest for UserPolicy {
    fn build(job: Job) -> Result<BuildOutput, BuildError> {
        let dockerfile = helix_builder_kit::read_dockerfile(&job)?;
        let last_user = dockerfile
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let instruction = words.next()?;
                instruction.eq_ignore_ascii_case("USER").then(|| words.next())?
            })
            .last();
        match last_user {
            Some(user) if !["root", "0", "root:root", "0:0"].contains(&user) => {
                helix_builder_kit::build(Tool::Podman, job)
            }
            _ => Err(BuildError::InvalidJob(format!(
                "{} would run as root: end it with `USER <a non-root user>` (policy of builder \
                 user-policy)",
                job.dockerfile_path
            ))),
        }
    }
}

helix_builder_kit::bindings::export_builder!(UserPolicy with_types_in helix_builder_kit::bindings);
