//! Guest code shared by the real builders: check out the job's source with
//! git, build it with podman or buildah, push it, and report what was
//! pushed. Everything runs through the host's `command-runner`, so what a
//! builder can do is exactly what the operator granted.
//!
//! Each job keeps its container storage inside its own workspace
//! (`--root storage --runroot run`, vfs driver): builds of different jobs
//! never share state, and when the host removes the workspace — after the
//! job, or after killing a cancelled build — nothing is left behind.
//!
//! Operator settings read here (the host fills them from its config):
//! `default_registry`, `insecure_registries` (comma-separated hosts that use
//! plain HTTP or unverified TLS), `allow_file_repos` (`true` to accept
//! `file://` URLs).

/// The `helix:build` bindings; builders export through
/// `helix_builder_kit::export_builder!(T with_types_in helix_builder_kit::bindings)`.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "helix:build/builder",
        pub_export_macro: true,
        export_macro_name: "export_builder",
    });
}

mod git;
mod image;
mod run;

pub use bindings::exports::helix::build::builder_info::{Guest as InfoGuest, Metadata};
pub use bindings::{BuildError, BuildOutput, Guest, Job};
use bindings::helix::build::job_context;
use bindings::helix::build::types::{Platform, PlatformDigest};

/// Where the checkout goes, relative to the workspace.
const SOURCE_DIR: &str = "src";
/// Container storage flags: per-job storage inside the workspace.
const STORAGE: [&str; 6] = ["--root", "storage", "--runroot", "run", "--storage-driver", "vfs"];
/// Written by `--digestfile`, relative to the workspace.
const DIGEST_FILE: &str = "pushed.digest";

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

    /// `<tool> <storage flags> <args…>`.
    fn args(self, args: &[&str]) -> Vec<String> {
        STORAGE.iter().chain(args).map(|a| a.to_string()).collect()
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

/// Builds and pushes `job` with `tool`.
pub fn build(tool: Tool, job: Job) -> Result<BuildOutput, BuildError> {
    let settings = image::Settings::read();
    git::check_source(&job, &settings)?;
    let image = image::reference(&job, &settings)?;
    log(&format!("building {} at {} with {} into {image}", job.repo_url, job.git_ref, tool.program()));

    git::checkout(&job.repo_url, &job.git_ref)?;
    check_dockerfile(&job.dockerfile_path)?;
    build_image(tool, &job, &image)?;
    let digest = push(tool, &job, &image, &settings)?;
    let manifest = if job.platforms.len() > 1 {
        pushed_platform_digests(&image, &settings)?
    } else {
        Vec::new()
    };
    log(&format!("pushed {image} as {digest}"));
    Ok(BuildOutput {
        image_tag: image,
        digest: Some(digest),
        manifest,
    })
}

fn log(line: &str) {
    job_context::log(&format!("[builder] {line}"));
}

fn workspace_path(relative: &str) -> String {
    format!("{}/{relative}", job_context::workspace())
}

/// The Dockerfile must exist inside the checkout. The lookup goes through
/// the sandbox, so a symlink pointing out of the workspace fails here too.
fn check_dockerfile(path: &str) -> Result<(), BuildError> {
    let full = workspace_path(&format!("{SOURCE_DIR}/{path}"));
    match std::fs::metadata(&full) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(BuildError::InvalidJob(format!("dockerfile_path {path:?} is not a file in the repository"))),
        Err(_) => Err(BuildError::InvalidJob(format!(
            "dockerfile_path {path:?} does not exist in the repository at this ref"
        ))),
    }
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.arch),
        None => format!("{}/{}", p.os, p.arch),
    }
}

fn build_image(tool: Tool, job: &Job, image: &str) -> Result<(), BuildError> {
    let dockerfile = format!("{SOURCE_DIR}/{}", job.dockerfile_path);
    let mut args: Vec<String> = ["build", "--isolation", "chroot", "-f", &dockerfile]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let mut build_args: Vec<_> = job.build_args.iter().collect();
    build_args.sort_by(|a, b| a.name.cmp(&b.name));
    for arg in build_args {
        args.push("--build-arg".into());
        args.push(format!("{}={}", arg.name, arg.value));
    }
    let platforms: Vec<String> = job.platforms.iter().map(platform_string).collect();
    args.push("--platform".into());
    args.push(platforms.join(","));
    args.push(if platforms.len() > 1 { "--manifest" } else { "-t" }.into());
    args.push(image.into());
    args.push(SOURCE_DIR.into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run::run(tool.program(), tool.args(&args))?;
    if output.exit_code != 0 {
        return Err(BuildError::Build(format!(
            "{} build failed: {}",
            tool.program(),
            run::error_line(&output.stderr)
        )));
    }
    Ok(())
}

fn push(tool: Tool, job: &Job, image: &str, settings: &image::Settings) -> Result<String, BuildError> {
    let destination = format!("docker://{image}");
    let mut args: Vec<&str> = if job.platforms.len() > 1 {
        vec!["manifest", "push", "--all"]
    } else {
        vec!["push"]
    };
    if settings.is_insecure(image) {
        args.push("--tls-verify=false");
    }
    args.extend(["--digestfile", DIGEST_FILE, image, &destination]);
    let output = run::run(tool.program(), tool.args(&args))?;
    if output.exit_code != 0 {
        return Err(BuildError::Registry(format!(
            "pushing {image} failed: {}",
            run::error_line(&output.stderr)
        )));
    }
    let digest = std::fs::read_to_string(workspace_path(DIGEST_FILE))
        .map_err(|e| BuildError::Internal(format!("{} wrote no digest file: {e}", tool.program())))?;
    Ok(digest.trim().to_string())
}

/// Each platform's digest as pushed. Pushing rewrites the per-platform
/// manifests (compression, format), so the local list's digests are not
/// what the registry holds; ask the registry.
fn pushed_platform_digests(image: &str, settings: &image::Settings) -> Result<Vec<PlatformDigest>, BuildError> {
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    if settings.is_insecure(image) {
        args.push("--tls-verify=false".into());
    }
    args.push(format!("docker://{image}"));
    let output = run::run("skopeo", args)?;
    if output.exit_code != 0 {
        return Err(BuildError::Registry(format!(
            "cannot read back the pushed index of {image}: {}",
            run::error_line(&output.stderr)
        )));
    }
    image::parse_manifest_list(&output.stdout).map_err(BuildError::Internal)
}
