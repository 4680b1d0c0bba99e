//! Builder components compiled into this binary by `build.rs`, so the host
//! runs with no files beside it, and the grants each needs by default.

use crate::exec::{Grants, ProgramGrant};

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
/// nothing for `simulated`; for `podman` and `buildah` exactly the git,
/// build-tool and `skopeo inspect` invocations `plugins/kit` makes, with
/// container storage confined to the job workspace.
pub fn default_grants(name: &str) -> Grants {
    match name {
        "podman" | "buildah" => real_builder_grants(name),
        _ => Grants::default(),
    }
}

/// The global flags the real builders pass to podman and buildah: per-job
/// container storage inside the job workspace (`plugins/kit` uses the
/// same list).
pub const CONTAINER_STORAGE_ARGS: [&str; 6] = [
    "--root",
    "storage",
    "--runroot",
    "run",
    "--storage-driver",
    "vfs",
];

fn real_builder_grants(tool: &str) -> Grants {
    let grant = |command: &str, args: &[&str]| ProgramGrant {
        command: command.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    let tool_grant = |args: &[&str]| {
        let all: Vec<&str> = CONTAINER_STORAGE_ARGS.iter().chain(args).copied().collect();
        grant(tool, &all)
    };
    Grants {
        programs: vec![
            grant("git", &["clone", "--depth", "1", "--", "*", "src"]),
            grant(
                "git",
                &["clone", "--depth", "1", "--branch", "*", "--", "*", "src"],
            ),
            grant("git", &["clone", "--", "*", "src"]),
            grant("git", &["-C", "src", "checkout", "--detach", "*"]),
            grant("git", &["-C", "src", "rev-parse", "HEAD"]),
            tool_grant(&["build", "--isolation", "chroot", "**"]),
            tool_grant(&["push", "**"]),
            tool_grant(&["manifest", "push", "--all", "**"]),
            grant("skopeo", &["inspect", "--raw", "**"]),
        ],
        env: [("GIT_TERMINAL_PROMPT".to_string(), "0".to_string())].into(),
        // PATH for git's transport helpers. Registry credentials arrive as
        // REGISTRY_AUTH_FILE when the config names `registry_auth_file`.
        pass_env: vec!["PATH".into(), "HOME".into()],
        ..Grants::default()
    }
}
