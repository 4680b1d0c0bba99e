//! {{name}}: a Helix Build builder. It checks the job's Dockerfile against
//! a policy of your own (`check`), then builds with podman exactly as the
//! built-in podman builder does, so it runs under the same grants
//! (`grants.toml`). The contract is the WIT in `wit/`.

wit_bindgen::generate!({ path: "wit", world: "builder" });

use exports::helix::build::builder_info::{self, Metadata};
use helix::build::command_runner::{self, Command, RunError};
use helix::build::job_context;

struct Builder;

/// Your policy: why this job must not be built, if it must not.
fn check(_job: &Job, dockerfile: &str) -> Result<(), String> {
    if dockerfile.trim().is_empty() {
        return Err("the Dockerfile is empty".into());
    }
    Ok(())
}

impl builder_info::Guest for Builder {
    fn info() -> Metadata {
        Metadata {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "{{name}}: a policy, then podman".into(),
            simulated: false,
        }
    }
}

impl Guest for Builder {
    fn build(job: Job) -> Result<BuildOutput, BuildError> {
        let context = match job.context.as_str() {
            "." => job.source_dir.clone(),
            sub => format!("{}/{sub}", job.source_dir),
        };
        let dockerfile = format!("{context}/{}", job.dockerfile_path);
        let path = format!("{}/{dockerfile}", job_context::workspace());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| BuildError::Internal(format!("cannot read {path}: {e}")))?;
        check(&job, &text).map_err(BuildError::InvalidJob)?;

        let setting = |name: &str| job_context::setting(name).unwrap_or_default();
        let platforms: Vec<String> = job
            .platforms
            .iter()
            .map(|p| match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.arch),
                None => format!("{}/{}", p.os, p.arch),
            })
            .collect();
        let mut args: Vec<String> = [
            "--cgroup-manager", "cgroupfs", "build", "--isolation", "oci", "--runtime", "runc",
            "--network",
        ]
        .map(String::from)
        .to_vec();
        args.push(setting("network"));
        args.push(format!("--cgroup-parent={}", setting("cgroup-parent")));
        args.extend(["-f".into(), dockerfile, "--layers".into(), "--force-rm".into()]);
        let mut build_args: Vec<_> = job.build_args.iter().collect();
        build_args.sort_by(|a, b| a.name.cmp(&b.name));
        args.extend(build_args.iter().map(|a| format!("--build-arg={}={}", a.name, a.value)));
        args.extend(job.target.iter().map(|t| format!("--target={t}")));
        args.extend(job.labels.iter().map(|(k, v)| format!("--label={k}={v}")));
        if job.no_cache {
            args.push("--no-cache".into());
        }
        args.extend(job.secrets.iter().map(|s| format!("--secret=id={s}")));
        args.push(format!("--platform={}", platforms.join(",")));
        let name = if platforms.len() > 1 { "--manifest" } else { "--tag" };
        args.push(format!("{name}=localhost/helix-image"));
        args.push(context);

        job_context::log(&format!("[{{name}}] building {} with podman", job.repo_url));
        let command = Command {
            program: "podman".into(),
            args,
            env: Vec::new(),
            working_dir: None,
            timeout_ms: None,
        };
        let output = command_runner::run(&command).map_err(|e| match e {
            RunError::Denied(why) => BuildError::Denied(why),
            RunError::Cancelled => BuildError::Cancelled,
            other => BuildError::Internal(format!("podman did not run: {other:?}")),
        })?;
        if output.exit_code != 0 {
            let last = output.stderr.lines().rev().find(|l| !l.trim().is_empty());
            return Err(BuildError::Build(format!(
                "podman build failed: {}",
                last.unwrap_or("no output")
            )));
        }
        Ok(BuildOutput::LocalImage)
    }
}

export!(Builder);
