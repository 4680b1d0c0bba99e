//! Builder components compiled into this binary by `build.rs`, so the host
//! runs with no files beside it, and the grants each needs by default.

use crate::exec::{Grants, ProgramGrant, ValueType};
use crate::layer_cache::LOCAL_IMAGE;
use crate::network::BuildNetwork;

include!(concat!(env!("OUT_DIR"), "/builtin_components.rs"));

/// The component bytes of the built-in builder `name`.
pub fn component(name: &str) -> Option<&'static [u8]> {
    BUILTIN_COMPONENTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// Names of the built-in builders.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN_COMPONENTS.iter().map(|(name, _)| *name)
}

/// The grants a built-in builder gets unless the config gives its own:
/// nothing for `simulated`; for `podman` and `buildah` exactly the build
/// `plugins/kit` runs — every `RUN` step in an OCI container under runc on
/// `network`, the image left in the job's container storage, which the
/// host pushes from. No storage flags (the host names each job's container
/// storage), no export, no git, no push, no credentials. For `buildkit`,
/// likewise `docker build` alone, run as `engine_client` (see
/// [`engine_builder_grants`]).
pub fn default_grants(name: &str, network: BuildNetwork, engine_client: &str) -> Grants {
    match name {
        "podman" | "buildah" => real_builder_grants(name, network),
        "buildkit" => engine_builder_grants(engine_client),
        _ => Grants::default(),
    }
}

/// `docker build` in the host's engine, as `plugins/kit` runs it: no
/// network for the steps, the job's own image name, a context that is a
/// directory of the workspace (any other is fetched by the engine), and
/// the job's options. Never `--network` or `--add-host` (the host's
/// network), `--output` or `--iidfile` (files the host did not choose),
/// `--ssh`, `--cache-from`/`--cache-to`, `--cgroup-parent`, `--security-opt`,
/// nor any `docker` command but `build` or global option (`-H`, `--config`):
/// the engine is the one `DOCKER_HOST` names, which the host sets.
fn engine_builder_grants(client: &str) -> Grants {
    Grants {
        programs: vec![ProgramGrant {
            command: client.into(),
            args: [
                "build",
                "--progress=plain",
                "--network=none",
                "--tag={engine-image}",
                "-f",
                "{dockerfile}",
                "{context}",
            ]
            .map(String::from)
            .to_vec(),
            options: options(&JOB_OPTIONS),
        }],
        ..Grants::default()
    }
}

/// The options every build tool takes alike for what a job asks, as
/// `plugins/kit`'s `job_options` passes them (`-f` is pinned in the
/// patterns: the job's own Dockerfile, and never none).
const JOB_OPTIONS: [(&str, ValueType); 6] = [
    ("--build-arg", ValueType::BuildArg),
    ("--platform", ValueType::Text),
    ("--target", ValueType::Text),
    ("--label", ValueType::Text),
    ("--no-cache", ValueType::Flag),
    ("--secret", ValueType::Secret),
];

fn options(list: &[(&str, ValueType)]) -> std::collections::BTreeMap<String, ValueType> {
    list.iter()
        .map(|(name, ty)| (name.to_string(), *ty))
        .collect()
}

fn real_builder_grants(tool: &str, network: BuildNetwork) -> Grants {
    // Before the subcommand, as plugins/kit passes it; pinned.
    const GLOBAL: [&str; 2] = ["--cgroup-manager", "cgroupfs"];
    // Beside the job's options: layers kept in the cache slot, and the
    // registry cache.
    let storage_options = [
        ("--layers", ValueType::Flag),
        ("--force-rm", ValueType::Flag),
        ("--cache-from", ValueType::Cache),
        ("--cache-to", ValueType::Cache),
    ];
    let build = |name_option: &str| {
        let name = format!("{name_option}={LOCAL_IMAGE}");
        ProgramGrant {
            command: tool.into(),
            args: GLOBAL
                .iter()
                .chain(&[
                    "build",
                    "--isolation",
                    "oci",
                    "--runtime",
                    "runc",
                    "--network",
                    network.flag_value(),
                    // Pinned: every `RUN` step in the job's control group,
                    // under the job's limits, found again after a crash.
                    "--cgroup-parent={cgroup}",
                    // Pinned: what is built is the job's Dockerfile.
                    "-f",
                    "{dockerfile}",
                    // Pinned: the build's image can have no other name, so no
                    // name it leaves in a shared cache slot outlives the job.
                    &name,
                    "{context}",
                ])
                .map(|a| a.to_string())
                .collect(),
            options: options(&[&JOB_OPTIONS[..], &storage_options].concat()),
        }
    };
    Grants {
        // One image, or a manifest list for several platforms.
        programs: vec![build("--tag"), build("--manifest")],
        // PATH so the tools find their helpers (runc, conmon, the CNI
        // plugins); nothing else of the host's environment.
        pass_env: vec!["PATH".into()],
        ..Grants::default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::exec::{CallSite, Denial, GrantPolicy, JobValues};

    /// A real workspace with `src/Dockerfile` and a link `out` to the
    /// host's `/etc`; the job builds `src` with build arg `A=1` and build
    /// secret `token`, in the engine under its own name.
    struct Site {
        dir: tempfile::TempDir,
        values: JobValues,
    }

    impl Site {
        fn new() -> Site {
            let dir = tempfile::tempdir().unwrap();
            let src = dir.path().join("src");
            std::fs::create_dir(&src).unwrap();
            std::fs::write(src.join("Dockerfile"), "FROM scratch").unwrap();
            std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
            let values = JobValues {
                secrets: [("token".to_string(), PathBuf::from("/state/secrets/token"))].into(),
                dockerfile: Some(src.join("Dockerfile").canonicalize().unwrap()),
                context: Some(src.canonicalize().unwrap()),
                build_args: [("A".to_string(), "1".to_string())].into(),
                engine_image: Some("helix.local/job-0123456789abcdef".into()),
                ..JobValues::default()
            };
            Site { dir, values }
        }

        fn root(&self) -> PathBuf {
            self.dir.path().canonicalize().unwrap()
        }

        fn resolve(
            &self,
            policy: &GrantPolicy,
            program: &str,
            list: &[&str],
        ) -> Result<Vec<String>, Denial> {
            let root = self.root();
            let args: Vec<String> = list.iter().map(|a| a.to_string()).collect();
            let site = CallSite {
                workspace: Path::new(&root),
                cwd: Path::new(&root),
                job: &self.values,
            };
            policy
                .check(program, &args, &site)
                .map(|granted| granted.args)
        }

        fn check(&self, policy: &GrantPolicy, program: &str, list: &[&str]) -> Result<(), Denial> {
            self.resolve(policy, program, list).map(|_| ())
        }
    }

    #[test]
    fn the_buildkit_grants_allow_the_kits_build_and_no_way_to_the_host() {
        let policy = default_grants("buildkit", BuildNetwork::None, "docker").resolve(|_| None);
        let site = Site::new();
        let build = |extra: &[&str]| {
            let mut list = vec![
                "build",
                "--progress=plain",
                "--network=none",
                "--tag=helix.local/job-0123456789abcdef:linux-amd64",
                "--platform=linux/amd64",
                "-f",
                "src/Dockerfile",
                "--build-arg=A=1",
                "--secret=id=token",
            ];
            list.extend(extra);
            list.push("src");
            site.resolve(&policy, "docker", &list)
        };
        let allowed = build(&[]).unwrap();
        assert!(
            allowed.contains(&"--secret=id=token,src=/state/secrets/token".to_string()),
            "{allowed:?}"
        );
        let root = site.root();
        assert_eq!(
            allowed[allowed.len() - 1],
            root.join("src").display().to_string()
        );
        for (way_out, why) in [
            (&["--network=host"][..], "pinned"),
            (&["--add-host=h:10.0.0.1"], "not granted"),
            (&["--output=type=local,dest=out"], "not granted"),
            (&["--iidfile=id"], "not granted"),
            (&["--ssh=default"], "not granted"),
            (&["--cgroup-parent=/"], "not granted"),
            (&["--security-opt=seccomp=unconfined"], "not granted"),
            (&["--cache-from=evil.example/x"], "not granted"),
            (&["--tag=127.0.0.1:5000/team/app:1"], "pinned"),
        ] {
            let denial = build(way_out).unwrap_err().0;
            assert!(denial.contains(why), "{way_out:?}: {denial}");
        }
        let refused = [
            // Another job's name, or a name that is not the job's.
            &[
                "build",
                "--progress=plain",
                "--network=none",
                "--tag=helix.local/job-ffff:x",
                "src",
            ][..],
            // A context the engine would fetch, or one outside the workspace.
            &[
                "build",
                "--progress=plain",
                "--network=none",
                "--tag=helix.local/job-0123456789abcdef",
                "github.com/x/y",
            ],
            &[
                "build",
                "--progress=plain",
                "--network=none",
                "--tag=helix.local/job-0123456789abcdef",
                "out",
            ],
            &[
                "build",
                "--progress=plain",
                "--network=none",
                "--tag=helix.local/job-0123456789abcdef",
                "src/Dockerfile",
            ],
            // Another command, or a global option choosing the engine.
            &["run", "--privileged", "-v", "/:/host", "busybox"],
            &["-H", "tcp://10.0.0.1:2375", "build", "src"],
            &["push", "helix.local/job-0123456789abcdef"],
        ];
        for call in refused {
            assert!(site.check(&policy, "docker", call).is_err(), "{call:?}");
        }
    }
}
