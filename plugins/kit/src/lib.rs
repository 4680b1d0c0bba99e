//! Guest code shared by the real builders: build the source the host
//! checked out with podman, buildah or BuildKit, and leave the image where
//! the host pushes it from. Everything runs through the host's
//! `command-runner`, so what a builder can do is exactly what the operator
//! granted.
//!
//! Container storage is the host's business: every program of a podman or
//! buildah job gets `CONTAINERS_STORAGE_CONF` naming that job's own
//! storage, outside the workspace, removed with the job. A BuildKit job
//! builds in the Docker Engine the host points `docker` at (`DOCKER_HOST`),
//! and may name its images only as the host's `engine-image` setting says.
//!
//! Every `RUN` step runs in its own OCI container (own PID, mount, IPC,
//! UTS and network namespaces, default capabilities, seccomp) on the
//! network the host's setting `network` names (`none`, `host`, or the
//! host's private build network; only `none` for BuildKit).

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

/// The build tool a builder drives. All three accept the same flags for
/// what the job asks (see [`job_options`]).
#[derive(Debug, Clone, Copy)]
pub enum Tool {
    Podman,
    Buildah,
    /// BuildKit inside the Docker Engine the host names, driven by the
    /// classic `docker build` (`DOCKER_BUILDKIT=1`, set by the host).
    BuildKit,
}

impl Tool {
    /// The builder's name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Podman => "podman",
            Tool::Buildah => "buildah",
            Tool::BuildKit => "buildkit",
        }
    }

    /// The program it runs.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Podman => "podman",
            Tool::Buildah => "buildah",
            Tool::BuildKit => "docker",
        }
    }

    /// Runs `<tool> <global flags> <args…>`; a non-zero exit becomes
    /// `failure(first line of what went wrong)`.
    fn run(
        self,
        args: Vec<String>,
        failure: impl Fn(String) -> BuildError,
    ) -> Result<(), BuildError> {
        let (program, global): (String, &[&str]) = match self {
            // The client the operator pointed the builder at, if not the
            // one on PATH (a newer one may want plugins to use BuildKit).
            Tool::BuildKit => (
                job_context::setting(ENGINE_CLIENT_SETTING).unwrap_or_else(|| "docker".into()),
                &[],
            ),
            Tool::Podman | Tool::Buildah => (self.program().into(), &GLOBAL),
        };
        let all = global.iter().map(|a| a.to_string()).chain(args).collect();
        let output = run::run(&program, all)?;
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
                    name: $tool.name().into(),
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
/// where the host pushes it from: for podman and buildah the job's
/// container storage (one image, or a manifest list for several
/// platforms); for BuildKit the engine, one image per platform (see
/// [`ENGINE_IMAGE_SETTING`]).
pub fn build(tool: Tool, job: Job) -> Result<BuildOutput, BuildError> {
    let network = job_context::setting("network").unwrap_or_else(|| "none".into());
    log(&format!(
        "building {} at {} with {} (network: {network})",
        job.repo_url,
        job.commit.as_deref().unwrap_or(&job.git_ref),
        tool.name()
    ));
    match tool {
        Tool::BuildKit => build_in_engine(&job, &network),
        Tool::Podman | Tool::Buildah => build_in_storage(tool, &job, &network),
    }
}

/// The options every tool takes alike for what the job asks: the
/// Dockerfile, build args, target, labels, no-cache and secrets.
pub fn job_options(job: &Job) -> Vec<String> {
    // The host checked it: a file of the checkout.
    let mut args = vec!["-f".to_string(), dockerfile_path(job)];
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
    // The host completes each with where the value is.
    args.extend(job.secrets.iter().map(|name| format!("--secret=id={name}")));
    args
}

fn build_in_storage(tool: Tool, job: &Job, network: &str) -> Result<BuildOutput, BuildError> {
    let platforms: Vec<String> = job.platforms.iter().map(platform_string).collect();
    let several = platforms.len() > 1;
    let mut args = strings(&[
        "build",
        "--isolation",
        "oci",
        "--runtime",
        "runc",
        "--network",
        network,
        // The host's control group for the job's steps: its limits apply.
        &format!(
            "--cgroup-parent={}",
            job_context::setting("cgroup-parent").unwrap_or_default()
        ),
        // Keep each step's layer (the host keeps the storage between jobs
        // of this builder), and remove a failed step's container.
        "--layers",
        "--force-rm",
    ]);
    args.extend(job_options(job));
    // Layers shared through the registry, when the operator keeps them
    // there: a new host starts from them; `no_cache` only refreshes them.
    if let Some(cache) = job_context::setting("registry-cache") {
        log(&format!("layer cache in the registry: {cache}"));
        if !job.no_cache {
            args.push(format!("--cache-from={cache}"));
        }
        args.push(format!("--cache-to={cache}"));
    }
    args.push(format!("--platform={}", platforms.join(",")));
    // Just before the context, as the grants pin it: the only name a
    // build may give its image.
    args.push(format!(
        "{}={LOCAL_IMAGE}",
        if several { "--manifest" } else { "--tag" }
    ));
    args.push(context_dir(job));
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

/// The setting naming the job's images in a shared Docker Engine: a
/// BuildKit builder tags each platform's image `<name>:<os>-<arch>[-<variant>]`
/// and the host pushes those, then removes them.
pub const ENGINE_IMAGE_SETTING: &str = "engine-image";
/// The setting naming the Docker client to run (`docker` on PATH unless set).
pub const ENGINE_CLIENT_SETTING: &str = "engine-client";

/// One `docker build` per platform: the classic Docker client cannot put
/// several platforms in one image store entry, so the host assembles the
/// index from what each left.
fn build_in_engine(job: &Job, network: &str) -> Result<BuildOutput, BuildError> {
    let Some(name) = job_context::setting(ENGINE_IMAGE_SETTING) else {
        return Err(BuildError::Denied(
            "this builder builds in a Docker Engine and the host gave it none; the operator \
             must set `engine` (the engine's unix socket) in the builder's [builders.NAME] section"
                .into(),
        ));
    };
    for platform in &job.platforms {
        let image = format!("{name}:{}", platform_tag(platform));
        let mut args = strings(&[
            "build",
            "--progress=plain",
            &format!("--network={network}"),
            &format!("--tag={image}"),
        ]);
        args.push(format!("--platform={}", platform_string(platform)));
        args.extend(job_options(job));
        args.push(context_dir(job));
        Tool::BuildKit.run(args, |why| {
            let what = format!("docker build (BuildKit) failed: {why}");
            if why.contains("Cannot connect to the Docker daemon") {
                BuildError::Internal(format!(
                    "{what}; the host's Docker Engine is not answering, tell its operator"
                ))
            } else if is_engine_registry_failure(&why) {
                BuildError::Registry(what)
            } else {
                BuildError::Build(what)
            }
        })?;
        log(&format!("image left in the engine as {image} for the host to push"));
    }
    Ok(BuildOutput::LocalImage)
}

/// The tag of one platform's image in the engine: `linux-arm64`,
/// `linux-arm-v7`.
pub fn platform_tag(p: &Platform) -> String {
    platform_string(p).replace('/', "-")
}

/// Whether BuildKit stopped at a registry (resolving or pulling a base
/// image) rather than at the Dockerfile: the phrases dockerd 20.10 uses.
fn is_engine_registry_failure(error: &str) -> bool {
    const REGISTRY: [&str; 7] = [
        "failed to do request",
        "failed to authorize",
        "unauthorized",
        "pull access denied",
        "no basic auth credentials",
        "x509:",
        "server gave HTTP response to HTTPS client",
    ];
    let resolving = error.contains("failed to create LLB definition")
        && !error.contains("dockerfile parse error")
        && error.ends_with("not found");
    !error.contains("executor failed running")
        && (resolving || REGISTRY.iter().any(|p| error.contains(p)))
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
