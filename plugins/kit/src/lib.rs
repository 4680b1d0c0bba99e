//! Guest code shared by the real builders: build the source the host
//! checked out with podman or buildah, and leave the image in the
//! workspace as an OCI layout for the host to push. Everything runs through
//! the host's `command-runner`, so what a builder can do is exactly what the
//! operator granted.
//!
//! Container storage is the host's business: every program of a job gets
//! `CONTAINERS_STORAGE_CONF` naming that job's own storage, outside the
//! workspace, removed with the job. Builds of different jobs never share
//! state.
//!
//! Every `RUN` step runs in its own OCI container (`--isolation oci
//! --runtime runc`: own PID, mount, IPC, UTS and network namespaces,
//! default capabilities, seccomp) on the network the host's setting
//! `network` names (`none`, `host`, or the host's private build network).

/// The `helix:build` bindings; builders export through
/// `helix_builder_kit::export_builder!(T with_types_in helix_builder_kit::bindings)`.
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "helix:build/builder",
        pub_export_macro: true,
        export_macro_name: "export_builder",
    });
}

mod run;

pub use bindings::exports::helix::build::builder_info::{Guest as InfoGuest, Metadata};
use bindings::helix::build::job_context;
use bindings::helix::build::types::Platform;
pub use bindings::{BuildError, BuildOutput, Guest, Job};

/// Given before the subcommand: cgroupfs, because runc cannot use
/// systemd's cgroups on every host.
const GLOBAL: [&str; 2] = ["--cgroup-manager", "cgroupfs"];
/// The image's name in the job's own container storage.
const LOCAL_IMAGE: &str = "localhost/helix-image";

/// The build tool a builder drives. Both accept the same flags for what
/// this kit does.
#[derive(Debug, Clone, Copy)]
pub enum Tool {
    Podman,
    Buildah,
}

impl Tool {
    pub fn program(self) -> &'static str {
        match self {
            Tool::Podman => "podman",
            Tool::Buildah => "buildah",
        }
    }

    /// Runs `<tool> <global flags> <args…>`; a non-zero exit becomes
    /// `failure(first line of what went wrong)`.
    fn run(
        self,
        args: Vec<String>,
        failure: impl Fn(String) -> BuildError,
    ) -> Result<(), BuildError> {
        let all = GLOBAL.iter().map(|a| a.to_string()).chain(args).collect();
        let output = run::run(self.program(), all)?;
        if output.exit_code == 0 {
            Ok(())
        } else {
            Err(failure(run::error_line(&output.stderr)))
        }
    }
}

/// Defines a complete builder component that drives `tool`: its `info`,
/// its `build`, and the component exports.
///
/// ```ignore
/// helix_builder_kit::real_builder!(Podman, Tool::Podman, "Builds with podman …");
/// ```
#[macro_export]
macro_rules! real_builder {
    ($ty:ident, $tool:expr, $description:literal) => {
        struct $ty;

        impl $crate::InfoGuest for $ty {
            fn info() -> $crate::Metadata {
                $crate::Metadata {
                    name: $tool.program().into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    description: $description.into(),
                    simulated: false,
                }
            }
        }

        impl $crate::Guest for $ty {
            fn build(job: $crate::Job) -> Result<$crate::BuildOutput, $crate::BuildError> {
                $crate::build($tool, job)
            }
        }

        $crate::bindings::export_builder!($ty with_types_in $crate::bindings);
    };
}

/// The build context of `job`: a directory of the host's checkout, as
/// the builder sees it (read-only).
pub fn context_dir(job: &Job) -> String {
    match job.context.as_str() {
        "." => job.source_dir.clone(),
        sub => format!("{}/{sub}", job.source_dir),
    }
}

/// The path of `job`'s Dockerfile in the checkout, as the builder sees it.
pub fn dockerfile_path(job: &Job) -> String {
    format!("{}/{}", context_dir(job), job.dockerfile_path)
}

/// The text of `job`'s Dockerfile, for builders that check it before
/// building.
pub fn read_dockerfile(job: &Job) -> Result<String, BuildError> {
    // Paths in the job are relative to the workspace, which the builder's
    // own code sees where `workspace()` says.
    let path = format!("{}/{}", job_context::workspace(), dockerfile_path(job));
    std::fs::read_to_string(&path)
        .map_err(|e| BuildError::Internal(format!("cannot read the Dockerfile {path}: {e}")))
}

/// Builds the checked-out source of `job` with `tool` and leaves the image
/// (or, for several platforms, the index) in the job's container storage
/// for the host to push.
pub fn build(tool: Tool, job: Job) -> Result<BuildOutput, BuildError> {
    let network = job_context::setting("network").unwrap_or_else(|| "none".into());
    // The host checked both: a directory and a file of the checkout.
    let context = context_dir(&job);
    let dockerfile = dockerfile_path(&job);
    log(&format!(
        "building {} at {} with {} (network: {network})",
        job.repo_url,
        job.commit.as_deref().unwrap_or(&job.git_ref),
        tool.program()
    ));

    let platforms: Vec<String> = job.platforms.iter().map(platform_string).collect();
    let several = platforms.len() > 1;
    let mut args = strings(&[
        "build",
        "--isolation",
        "oci",
        "--runtime",
        "runc",
        "--network",
        &network,
        // The host's control group for the job's steps: its limits apply.
        &format!(
            "--cgroup-parent={}",
            job_context::setting("cgroup-parent").unwrap_or_default()
        ),
        "-f",
        &dockerfile,
        // Keep each step's layer (the host keeps the storage between jobs
        // of this builder), and remove a failed step's container.
        "--layers",
        "--force-rm",
    ]);
    let mut build_args: Vec<_> = job.build_args.iter().collect();
    build_args.sort_by(|a, b| a.name.cmp(&b.name));
    // `--flag=value` keeps a value starting with '-' from reading as a flag.
    args.extend(
        build_args
            .iter()
            .map(|arg| format!("--build-arg={}={}", arg.name, arg.value)),
    );
    if let Some(target) = &job.target {
        args.push(format!("--target={target}"));
    }
    args.extend(
        job.labels
            .iter()
            .map(|(key, value)| format!("--label={key}={value}")),
    );
    if job.no_cache {
        args.push("--no-cache".into());
    }
    // Layers shared through the registry, when the operator keeps them
    // there: a new host starts from them; `no_cache` only refreshes them.
    if let Some(cache) = job_context::setting("registry-cache") {
        log(&format!("layer cache in the registry: {cache}"));
        if !job.no_cache {
            args.push(format!("--cache-from={cache}"));
        }
        args.push(format!("--cache-to={cache}"));
    }
    // The host completes each with where the value is.
    args.extend(job.secrets.iter().map(|name| format!("--secret=id={name}")));
    args.push(format!("--platform={}", platforms.join(",")));
    // Just before the context, as the grants pin it: the only name a
    // build may give its image.
    args.push(format!(
        "{}={LOCAL_IMAGE}",
        if several { "--manifest" } else { "--tag" }
    ));
    args.push(context);
    tool.run(args, |why| {
        let what = format!("{} build failed: {why}", tool.program());
        if is_registry_failure(&why) {
            BuildError::Registry(what)
        } else {
            BuildError::Build(what)
        }
    })?;

    log(&format!(
        "image left in the job's container storage as {LOCAL_IMAGE} for the host to push"
    ));
    Ok(BuildOutput::LocalImage)
}

/// Whether a failed build stopped at a registry (pulling a base image)
/// rather than at a step of the Dockerfile: the phrases podman and buildah
/// (containers/image) use for those.
fn is_registry_failure(error: &str) -> bool {
    const REGISTRY: [&str; 6] = [
        "initializing source docker://",
        "pinging container registry",
        "authentication required",
        "unauthorized",
        "manifest unknown",
        "requested access to the resource is denied",
    ];
    !error.contains("building at STEP \"RUN") && REGISTRY.iter().any(|p| error.contains(p))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn log(line: &str) {
    job_context::log(&format!("[builder] {line}"));
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.arch),
        None => format!("{}/{}", p.os, p.arch),
    }
}
