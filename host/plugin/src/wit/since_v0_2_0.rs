//! `helix:build@0.2.0` (`wit/v0.2.0`): components built against it still
//! load and run. The host implements this version's imports by delegating
//! to the latest's, and converts the job and the result between them.
//! (bindgen's `with:` cannot share the unchanged `command-runner` and
//! `job-context` here: the package is versioned, so each version's
//! interfaces are distinct imports the linker must define separately.) A 0.2.0 job has no context, target, labels, no-cache or secrets,
//! so a job that needs one is refused with the reason instead of being
//! built without it.

wasmtime::component::bindgen!({
    path: "../../wit/v0.2.0",
    world: "helix:build/builder",
    imports: { "helix:build/command-runner.run": async },
    exports: { default: async },
});

/// The version these bindings are of, as `wit/v0.2.0/world.wit` declares it.
pub const VERSION: &str = "0.2.0";

use super::latest::{self as new, command_runner, job_context};
use crate::host::JobHost;
use helix::build as old;

impl old::command_runner::Host for JobHost {
    async fn run(
        &mut self,
        cmd: old::command_runner::Command,
    ) -> Result<old::command_runner::Output, old::command_runner::RunError> {
        use command_runner::RunError as New;
        use old::command_runner::RunError as Old;
        let cmd = command_runner::Command {
            program: cmd.program,
            args: cmd.args,
            env: cmd.env,
            working_dir: cmd.working_dir,
            timeout_ms: cmd.timeout_ms,
        };
        match <JobHost as command_runner::Host>::run(self, cmd).await {
            Ok(out) => Ok(old::command_runner::Output {
                exit_code: out.exit_code,
                stdout: out.stdout,
                stderr: out.stderr,
            }),
            Err(New::Denied(m)) => Err(Old::Denied(m)),
            Err(New::NotFound(m)) => Err(Old::NotFound(m)),
            Err(New::Cancelled) => Err(Old::Cancelled),
            Err(New::TimedOut) => Err(Old::TimedOut),
            Err(New::FailedToStart(m)) => Err(Old::FailedToStart(m)),
        }
    }
}

impl old::job_context::Host for JobHost {
    fn log(&mut self, line: String) {
        job_context::Host::log(self, line)
    }

    fn cancelled(&mut self) -> bool {
        job_context::Host::cancelled(self)
    }

    fn workspace(&mut self) -> String {
        job_context::Host::workspace(self)
    }

    fn setting(&mut self, name: String) -> Option<String> {
        job_context::Host::setting(self, name)
    }
}

impl old::types::Host for JobHost {}

/// A job a 0.2.0 builder cannot be given: what it cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the builder was built against helix:build@{}, which cannot pass {} to it; \
     rebuild it against helix:build@{} or drop them from the job",
    VERSION,
    .missing.join(", "),
    new::VERSION
)]
pub struct UnsupportedByContract {
    pub missing: Vec<&'static str>,
}

/// `job` as a 0.2.0 builder takes it; the error names what it cannot
/// carry.
pub(super) fn job(job: new::Job) -> Result<old::types::Job, UnsupportedByContract> {
    let mut missing = Vec::new();
    if job.context != "." {
        missing.push("a context");
    }
    if job.target.is_some() {
        missing.push("a target");
    }
    if !job.labels.is_empty() {
        missing.push("labels");
    }
    if job.no_cache {
        missing.push("no_cache");
    }
    if !job.secrets.is_empty() {
        missing.push("build secrets");
    }
    if !missing.is_empty() {
        return Err(UnsupportedByContract { missing });
    }
    Ok(old::types::Job {
        id: job.id,
        repo_url: job.repo_url,
        git_ref: job.git_ref,
        commit: job.commit,
        source_dir: job.source_dir,
        dockerfile_path: job.dockerfile_path,
        build_args: job
            .build_args
            .into_iter()
            .map(|a| old::types::BuildArg {
                name: a.name,
                value: a.value,
            })
            .collect(),
        platforms: job.platforms.into_iter().map(old_platform).collect(),
    })
}

fn old_platform(p: new::Platform) -> old::types::Platform {
    old::types::Platform {
        os: p.os,
        arch: p.arch,
        variant: p.variant,
    }
}

fn platform(p: old::types::Platform) -> new::Platform {
    new::Platform {
        os: p.os,
        arch: p.arch,
        variant: p.variant,
    }
}

/// A 0.2.0 result as this version's.
pub(super) fn result(
    result: Result<old::types::BuildOutput, old::types::BuildError>,
) -> Result<new::BuildOutput, new::BuildError> {
    use old::types::{BuildError as E, BuildOutput as O};
    match result {
        Ok(O::OciLayout(path)) => Ok(new::BuildOutput::OciLayout(path)),
        Ok(O::Simulated(image)) => Ok(new::BuildOutput::Simulated(new::SimulatedImage {
            image_tag: image.image_tag,
            digest: image.digest,
            manifest: image
                .manifest
                .into_iter()
                .map(|m| new::PlatformDigest {
                    platform: platform(m.platform),
                    digest: m.digest,
                })
                .collect(),
        })),
        Err(E::InvalidJob(m)) => Err(new::BuildError::InvalidJob(m)),
        Err(E::Source(m)) => Err(new::BuildError::Source(m)),
        Err(E::Build(m)) => Err(new::BuildError::Build(m)),
        Err(E::Registry(m)) => Err(new::BuildError::Registry(m)),
        Err(E::Denied(m)) => Err(new::BuildError::Denied(m)),
        Err(E::Cancelled) => Err(new::BuildError::Cancelled),
        Err(E::Internal(m)) => Err(new::BuildError::Internal(m)),
    }
}

/// A 0.2.0 builder's info as this version's.
pub(super) fn metadata(m: exports::helix::build::builder_info::Metadata) -> new::Metadata {
    new::Metadata {
        name: m.name,
        version: m.version,
        description: m.description,
        simulated: m.simulated,
    }
}
