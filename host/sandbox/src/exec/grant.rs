//! What a builder may run: the operator's grants, and matching a call
//! against them.
//!
//! Nothing is granted by default. A program grant names one command, an
//! argument pattern and the options the builder may add:
//!
//! - In the pattern, a literal matches itself; `*` one argument that is not
//!   an option (does not start with `-`); `**` (last only) the remaining
//!   non-option arguments, including none; `{path}`, `{output}`, `{image}`,
//!   `{url}`, `{dir}`, `{dockerfile}`, `{build-arg}`, `{engine-image}`
//!   `{context}` (after an optional literal prefix, as in `oci:{output}`) one argument
//!   of that type. Without `**` the argument count must match.
//! - `options` lists, by name, the options the builder may put anywhere
//!   among the arguments, each with the type of its value (`flag` for
//!   none), given as `--name=value` or `--name value`. Any other argument
//!   starting with `-` is refused, and an option the pattern pins (a
//!   literal starting with `-`) cannot be given again.
//! - Typed values: a `path` must be relative and name an existing file or
//!   directory inside the job workspace, symbolic links followed; a `dir`
//!   likewise, and must be a directory; an `output` must be a new path
//!   inside the workspace. All three reach the program as the canonical
//!   absolute path the host checked, never as the builder wrote them: a
//!   build tool reads `http://…`, `//host/x` or `host:path` as a place to
//!   fetch from, and none of those survives canonicalisation. A
//!   `dockerfile` is exactly the job's Dockerfile (so what is built is
//!   what the job names, and what the host checked and attests), a
//!   `context` exactly its build context (what bind mounts were checked
//!   against); a
//!   `build-arg` is exactly `NAME=VALUE` for one of the job's build args
//!   (a name alone makes the tool read its own environment, and
//!   `BUILDKIT_*` names are the engine's options, never a build arg). An
//!   `image` must be in a registry the
//!   operator configured; a `url` must pass the policy a job's `repo_url`
//!   does; a `secret` is `id=NAME` for one of the job's build secrets, and
//!   the host appends `,src=FILE` (a file the builder cannot read); a
//!   `cache` is exactly the job's repository in the registry cache (the
//!   builder's `registry-cache` setting); a `cgroup` exactly the control
//!   group of the job run's build steps (the `cgroup-parent` setting); an
//!   `engine-image` exactly the name the host gave the job's images in its
//!   Docker Engine (the `engine-image` setting), with or without a `:TAG`;
//!   `text` is anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::value::{CallSite, ValuePolicy, ValueType};

/// A builder's grants, as written in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grants {
    /// Programs the builder may run, with their argument patterns.
    pub programs: Vec<ProgramGrant>,
    /// Variables set, with these values, for every program it runs.
    pub env: BTreeMap<String, String>,
    /// Variables copied from the host's environment (when set there).
    /// Never a secret: whatever a program is given, the builder that runs
    /// it can have it print back. Secrets reach builds as build secrets
    /// (`[secrets]`, the `secret` value type).
    pub pass_env: Vec<String>,
    /// Variables the builder may set itself on a call.
    pub builder_env: Vec<String>,
    /// Host directories opened to the builder besides its workspace.
    pub dirs: Vec<DirGrant>,
}

/// One program and the arguments it may be given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgramGrant {
    /// A name looked up on the host's `PATH`, or an absolute path.
    pub command: String,
    /// Argument patterns; absent means no arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Options the builder may add, by name (`-f`, `--build-arg`), with
    /// the type of their value; absent means none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, ValueType>,
}

/// A host directory visible to the builder's own code (not its programs,
/// which run in the workspace).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    pub host: PathBuf,
    /// Where the builder sees it; absolute, not under `/workspace`.
    pub guest: String,
    #[serde(default)]
    pub writable: bool,
}

/// Grants checked and resolved against the host at load time.
#[derive(Debug, Clone, Default)]
pub struct GrantPolicy {
    programs: Vec<ProgramGrant>,
    /// The environment every program starts from.
    base_env: BTreeMap<String, String>,
    builder_env: BTreeSet<String>,
    dirs: Vec<DirGrant>,
    values: ValuePolicy,
}

/// A call the grants allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The arguments to run it with (host values put in where the grant
    /// says).
    pub args: Vec<String>,
    /// The grant that allowed it: its program and argument patterns.
    pub grant: String,
}

/// Why a call was refused, for the builder and the job log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denial(pub String);

/// Grants of a shape the host refuses; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidGrants(pub String);

impl Grants {
    /// Checks the grants' shape; `at` names them in errors
    /// (`builders.podman.grants`).
    pub fn validate(&self, at: &str) -> Result<(), InvalidGrants> {
        for (i, grant) in self.programs.iter().enumerate() {
            let here = format!("{at}.programs[{i}]");
            let command = &grant.command;
            if command.is_empty() || command.contains('\0') {
                return Err(InvalidGrants(format!("{here}.command must not be empty")));
            }
            if command.contains('/') && !Path::new(command).is_absolute() {
                return Err(InvalidGrants(format!(
                    "{here}.command {command:?} must be a bare name (looked up on PATH) or an absolute path"
                )));
            }
            if let Some(pos) = grant.args.iter().position(|a| a == "**")
                && pos + 1 != grant.args.len()
            {
                return Err(InvalidGrants(format!(
                    "{here}.args: \"**\" may only be the last pattern"
                )));
            }
            for arg in &grant.args {
                if let Some((_, name)) = placeholder(arg)
                    && ValueType::from_placeholder(name).is_none()
                {
                    return Err(InvalidGrants(format!(
                        "{here}.args: {arg:?} names no type; use {{path}}, {{dir}}, {{output}}, {{dockerfile}}, {{context}}, {{build-arg}}, {{image}}, {{url}}, {{secret}}, {{cache}}, {{cgroup}} or {{engine-image}}"
                    )));
                }
            }
            for name in grant.options.keys() {
                if !name.starts_with('-') || name == "-" || name == "--" || name.contains('=') {
                    return Err(InvalidGrants(format!(
                        "{here}.options: {name:?} is not an option name such as \"-f\" or \"--build-arg\""
                    )));
                }
                if pinned(&grant.args).contains(name.as_str()) {
                    return Err(InvalidGrants(format!(
                        "{here}.options: {name} is pinned in args and cannot also be an option"
                    )));
                }
            }
        }
        let names = self
            .env
            .keys()
            .map(|n| ("env", n))
            .chain(self.pass_env.iter().map(|n| ("pass_env", n)))
            .chain(self.builder_env.iter().map(|n| ("builder_env", n)));
        for (field, name) in names {
            if !is_env_name(name) {
                return Err(InvalidGrants(format!(
                    "{at}.{field}: {name:?} is not a valid environment variable name"
                )));
            }
        }
        for (i, dir) in self.dirs.iter().enumerate() {
            let here = format!("{at}.dirs[{i}]");
            if !dir.host.is_absolute() || !dir.host.is_dir() {
                return Err(InvalidGrants(format!(
                    "{here}.host {} must be an existing absolute directory",
                    dir.host.display()
                )));
            }
            let guest = Path::new(&dir.guest);
            if !guest.is_absolute()
                || guest.starts_with(crate::exec::GUEST_WORKSPACE)
                || dir.guest.contains("..")
            {
                return Err(InvalidGrants(format!(
                    "{here}.guest {:?} must be an absolute path outside {}",
                    dir.guest,
                    crate::exec::GUEST_WORKSPACE
                )));
            }
        }
        Ok(())
    }

    /// Resolves the grants against the host's environment, read through
    /// `host_env` (normally `|name| std::env::var(name).ok()`).
    pub fn resolve(&self, host_env: impl Fn(&str) -> Option<String>) -> GrantPolicy {
        let mut base_env = self.env.clone();
        for name in &self.pass_env {
            if let Some(value) = host_env(name) {
                base_env.insert(name.clone(), value);
            }
        }
        GrantPolicy {
            programs: self.programs.clone(),
            base_env,
            builder_env: self.builder_env.iter().cloned().collect(),
            dirs: self.dirs.clone(),
            values: ValuePolicy::default(),
        }
    }
}

impl GrantPolicy {
    /// The same policy, checking typed values against `values`.
    pub fn with_values(mut self, values: ValuePolicy) -> Self {
        self.values = values;
        self
    }

    /// Whether `program` may run with `args` at `site`: the arguments to
    /// run it with (`secret` values completed by the host), or a denial
    /// naming the rule that refused the call.
    pub fn check(
        &self,
        program: &str,
        args: &[String],
        site: &CallSite<'_>,
    ) -> Result<Granted, Denial> {
        let for_program: Vec<&ProgramGrant> = self
            .programs
            .iter()
            .filter(|g| g.command == program)
            .collect();
        let call = describe(program, args);
        if for_program.is_empty() {
            return Err(Denial(format!(
                "`{call}`: program `{program}` is not granted"
            )));
        }
        // The refusal of the grant that matched furthest says most.
        let mut best: Option<Mismatch> = None;
        for grant in &for_program {
            match self.match_grant(grant, args, site) {
                Ok(args) => {
                    return Ok(Granted {
                        args,
                        grant: describe(&grant.command, &grant.args),
                    });
                }
                Err(mismatch) if best.as_ref().is_none_or(|b| mismatch.at > b.at) => {
                    best = Some(mismatch)
                }
                Err(_) => {}
            }
        }
        let reason = best.map(|m| m.reason).unwrap_or_default();
        let allowed: Vec<String> = for_program
            .iter()
            .map(|g| describe(&g.command, &g.args))
            .collect();
        Err(Denial(format!(
            "`{call}`: {reason}; granted: {}",
            allowed.join(" | ")
        )))
    }

    fn match_grant(
        &self,
        grant: &ProgramGrant,
        args: &[String],
        site: &CallSite<'_>,
    ) -> Result<Vec<String>, Mismatch> {
        let pinned = pinned(&grant.args);
        let mut patterns = grant.args.iter().peekable();
        let mut resolved = args.to_vec();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            let at = i;
            let fail = |reason: String| Err(Mismatch { at, reason });
            if patterns.peek().is_some_and(|p| *p == arg) {
                patterns.next();
                i += 1;
                continue;
            }
            // A pinned option with a typed value (`--name={type}`) is
            // matched as a pattern, not as one of the options.
            let pinned_typed = patterns.peek().is_some_and(|p| {
                p.starts_with('-')
                    && placeholder(p).is_some_and(|(prefix, _)| arg.starts_with(prefix))
            });
            if arg.starts_with('-') && !pinned_typed {
                let (name, inline) = match arg.split_once('=') {
                    Some((name, value)) if arg.starts_with("--") => (name, Some(value)),
                    _ => (arg.as_str(), None),
                };
                if pinned.contains(name) {
                    // Pinned further on: an option the grant requires first
                    // is missing; else this one comes a second time.
                    let later = patterns
                        .clone()
                        .any(|p| p.split_once('=').map_or(p.as_str(), |(n, _)| n) == name);
                    return match (later, patterns.peek()) {
                        (true, Some(next)) => {
                            fail(format!("the grant requires {next:?} before {name}"))
                        }
                        _ => fail(format!(
                            "option {name} is pinned by the grant and may not be given again"
                        )),
                    };
                }
                let Some(&ty) = grant.options.get(name) else {
                    return fail(format!("option {name} is not granted"));
                };
                let value = match (ty, inline) {
                    (ValueType::Flag, None) => {
                        i += 1;
                        continue;
                    }
                    (ValueType::Flag, Some(_)) => {
                        return fail(format!("option {name} takes no value"));
                    }
                    (_, Some(value)) => value,
                    (_, None) => match args.get(i + 1) {
                        Some(value) if !value.starts_with('-') => {
                            i += 1;
                            value.as_str()
                        }
                        _ => {
                            return fail(format!(
                                "option {name} needs a value (give it as {name}=VALUE)"
                            ));
                        }
                    },
                };
                match self.values.check(ty, value, site) {
                    Err(why) => return fail(format!("option {name}: {why}")),
                    Ok(Some(completed)) if inline.is_some() => {
                        resolved[i] = format!("{name}={completed}");
                    }
                    Ok(Some(completed)) => resolved[i] = completed,
                    Ok(None) => {}
                }
                i += 1;
                continue;
            }
            match patterns.peek().map(|p| p.as_str()) {
                Some("**") => {}
                Some("*") => {
                    patterns.next();
                }
                Some(pattern) => {
                    let typed = placeholder(pattern).and_then(|(prefix, name)| {
                        Some((prefix, ValueType::from_placeholder(name)?))
                    });
                    let Some((prefix, ty)) = typed else {
                        return fail(format!("expected {pattern:?}, got {arg:?}"));
                    };
                    let Some(value) = arg.strip_prefix(prefix) else {
                        return fail(format!("expected {pattern:?}, got {arg:?}"));
                    };
                    match self.values.check(ty, value, site) {
                        Err(why) => return fail(why),
                        Ok(Some(completed)) => resolved[i] = format!("{prefix}{completed}"),
                        Ok(None) => {}
                    }
                    patterns.next();
                }
                None => return fail(format!("argument {arg:?} is not granted")),
            }
            i += 1;
        }
        match patterns.next().map(String::as_str) {
            None | Some("**") => Ok(resolved),
            Some(missing) => Err(Mismatch {
                at: args.len(),
                reason: format!("the grant requires {missing:?} here"),
            }),
        }
    }

    /// The environment for one call: the granted base plus what the
    /// builder set, each of which must be granted in `builder_env`.
    pub fn environment(
        &self,
        requested: &[(String, String)],
    ) -> Result<BTreeMap<String, String>, Denial> {
        let mut env = self.base_env.clone();
        for (name, value) in requested {
            if !self.builder_env.contains(name) {
                return Err(Denial(format!(
                    "environment variable {name} is not granted to the builder"
                )));
            }
            env.insert(name.clone(), value.clone());
        }
        Ok(env)
    }

    pub fn dirs(&self) -> &[DirGrant] {
        &self.dirs
    }

    pub fn programs(&self) -> &[ProgramGrant] {
        &self.programs
    }

    /// Names of the variables every program gets.
    pub fn env_names(&self) -> Vec<String> {
        self.base_env.keys().cloned().collect()
    }

    pub fn builder_env(&self) -> Vec<String> {
        self.builder_env.iter().cloned().collect()
    }
}

/// Why one grant did not match: the argument it stopped at, and the rule.
struct Mismatch {
    at: usize,
    reason: String,
}

/// Option names a pattern pins: its literals that start with `-`.
fn pinned(patterns: &[String]) -> BTreeSet<&str> {
    patterns
        .iter()
        .filter(|p| p.starts_with('-') && p.as_str() != "--")
        .map(|p| p.split_once('=').map_or(p.as_str(), |(name, _)| name))
        .collect()
}

/// `(prefix, type name)` of a typed pattern such as `oci:{path}`.
fn placeholder(pattern: &str) -> Option<(&str, &str)> {
    let rest = pattern.strip_suffix('}')?;
    let open = rest.rfind('{')?;
    Some((&rest[..open], &rest[open + 1..]))
}

/// `program arg arg …`, long calls shortened, for messages.
fn describe(program: &str, args: &[String]) -> String {
    let mut text = program.to_string();
    for arg in args {
        text.push(' ');
        text.push_str(arg);
    }
    if text.chars().count() > 200 {
        text = text.chars().take(200).collect::<String>() + "…";
    }
    text
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::JobValues;

    fn grant(command: &str, args: &[&str]) -> ProgramGrant {
        with_options(command, args, &[])
    }

    fn with_options(command: &str, args: &[&str], options: &[(&str, ValueType)]) -> ProgramGrant {
        ProgramGrant {
            command: command.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            options: options.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
        }
    }

    /// A real workspace with `src/Dockerfile`, a symlink `out` pointing to
    /// the host's `/etc`, and one `inside` pointing to `src`; the job has
    /// one build secret, `token`.
    struct Site {
        dir: tempfile::TempDir,
        values: JobValues,
    }

    impl Site {
        fn new() -> Site {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("src")).unwrap();
            std::fs::write(dir.path().join("src/Dockerfile"), "FROM scratch").unwrap();
            std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
            std::os::unix::fs::symlink("src", dir.path().join("inside")).unwrap();
            let secrets = [("token".to_string(), PathBuf::from("/state/secrets/token"))].into();
            let dockerfile = dir.path().join("src/Dockerfile").canonicalize().unwrap();
            let context = dir.path().join("src").canonicalize().unwrap();
            Site {
                dir,
                values: JobValues {
                    secrets,
                    dockerfile: Some(dockerfile),
                    context: Some(context),
                    build_args: [("A".to_string(), "1".to_string())].into(),
                    registry_cache: Some("127.0.0.1:5000/cache/0123456789abcdef".into()),
                    engine_image: Some("helix.local/job-0123456789abcdef".into()),
                    ..JobValues::default()
                },
            }
        }

        fn check(&self, policy: &GrantPolicy, program: &str, list: &[&str]) -> Result<(), Denial> {
            self.resolve(policy, program, list).map(|_| ())
        }

        fn resolve(
            &self,
            policy: &GrantPolicy,
            program: &str,
            list: &[&str],
        ) -> Result<Vec<String>, Denial> {
            let root = self.dir.path().canonicalize().unwrap();
            policy
                .check(
                    program,
                    &args(list),
                    &CallSite {
                        workspace: &root,
                        cwd: &root,
                        job: &self.values,
                    },
                )
                .map(|granted| granted.args)
        }
    }

    fn policy(programs: Vec<ProgramGrant>) -> GrantPolicy {
        Grants {
            programs,
            ..Grants::default()
        }
        .resolve(no_env)
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn matching_table() {
        let policy = policy(vec![
            grant("podman", &["build", "**"]),
            grant("podman", &["push", "*"]),
            grant("git", &["--version"]),
            grant("/usr/bin/true", &[]),
        ]);
        let cases: &[(&str, &[&str], bool)] = &[
            ("git", &["--version"], true),
            ("git", &[], false),
            ("git", &["--version", "extra"], false),
            ("git", &["--help"], false),
            ("podman", &["build"], true),
            ("podman", &["build", "-f", "Dockerfile", "."], false),
            ("podman", &["build", "Dockerfile", "."], true),
            ("podman", &["push", "localhost/x"], true),
            ("podman", &["push"], false),
            ("podman", &["push", "a", "b"], false),
            ("podman", &["run", "x"], false),
            ("podman", &[], false),
            ("buildah", &["build"], false),
            ("/usr/bin/podman", &["build"], false),
            ("./podman", &["build"], false),
            ("/workspace/podman", &["build"], false),
            ("/usr/bin/true", &[], true),
            ("true", &[], false),
            ("sh", &["-c", "podman build"], false),
        ];
        let site = Site::new();
        for (program, list, allowed) in cases {
            assert_eq!(
                site.check(&policy, program, list).is_ok(),
                *allowed,
                "{program} {list:?}"
            );
        }
    }

    #[test]
    fn wildcards_never_match_an_option() {
        let policy = policy(vec![
            grant("podman", &["build", "**"]),
            grant("skopeo", &["inspect", "*"]),
        ]);
        let site = Site::new();
        for (program, list) in [
            ("podman", &["build", "--volume", "/:/host", "."][..]),
            ("podman", &["build", "--root=/var/lib/containers", "."]),
            ("podman", &["build", "-v/:/host"]),
            ("podman", &["build", "-"]),
            ("skopeo", &["inspect", "--raw"]),
        ] {
            let err = site.check(&policy, program, list).unwrap_err().to_string();
            assert!(err.contains("is not granted"), "{list:?}: {err}");
        }
        assert!(site.check(&policy, "podman", &["build", "a", "b"]).is_ok());
    }

    #[test]
    fn options_are_an_allowlist_and_pinned_options_cannot_repeat() {
        let policy = policy(vec![with_options(
            "podman",
            &["--root", "{path}", "build", "--isolation", "oci", "{path}"],
            &[
                ("-f", ValueType::Path),
                ("--build-arg", ValueType::Text),
                ("--no-cache", ValueType::Flag),
            ],
        )]);
        let site = Site::new();
        let ok: &[&[&str]] = &[
            &["--root", "inside", "build", "--isolation", "oci", "src"],
            &[
                "--root",
                "inside",
                "build",
                "--isolation",
                "oci",
                "-f",
                "src/Dockerfile",
                "src",
            ],
            &[
                "--root",
                "inside",
                "build",
                "--isolation",
                "oci",
                "--build-arg=A=-x",
                "src",
                "--no-cache",
            ],
            &[
                "--root",
                "inside",
                "build",
                "-f=src/Dockerfile",
                "--isolation",
                "oci",
                "src",
            ],
        ];
        for list in ok {
            let denied = site.check(&policy, "podman", list);
            // `-f=…` is not a long option: a short one takes no `=`.
            assert_eq!(
                denied.is_ok(),
                !list.contains(&"-f=src/Dockerfile"),
                "{list:?}: {denied:?}"
            );
        }
        let refused: &[(&[&str], &str)] = &[
            (
                &[
                    "--root",
                    "inside",
                    "build",
                    "--isolation",
                    "oci",
                    "--isolation",
                    "chroot",
                    "src",
                ],
                "--isolation is pinned",
            ),
            (
                &[
                    "--root",
                    "inside",
                    "build",
                    "--isolation",
                    "oci",
                    "--root=/",
                    "src",
                ],
                "--root is pinned",
            ),
            (
                &[
                    "--root",
                    "inside",
                    "build",
                    "--isolation",
                    "oci",
                    "--runtime",
                    "runc",
                    "src",
                ],
                "--runtime is not granted",
            ),
            (
                &["--root", "inside", "build", "--isolation", "chroot", "src"],
                "expected \"oci\", got \"chroot\"",
            ),
            (
                &[
                    "--root",
                    "inside",
                    "build",
                    "--isolation",
                    "oci",
                    "--no-cache=false",
                    "src",
                ],
                "takes no value",
            ),
            (
                &[
                    "--root",
                    "inside",
                    "build",
                    "--isolation",
                    "oci",
                    "--build-arg",
                    "-x",
                    "src",
                ],
                "needs a value",
            ),
            (
                &["--root", "/", "build", "--isolation", "oci", "src"],
                "outside the job workspace",
            ),
            (
                &["--root", "inside", "build", "--isolation", "oci", "/etc"],
                "outside the job workspace",
            ),
            (
                &[
                    "--root",
                    "inside",
                    "build",
                    "--isolation",
                    "oci",
                    "-f",
                    "/etc/shadow",
                    "src",
                ],
                "outside the job workspace",
            ),
            (
                &[
                    "--root",
                    "inside",
                    "build",
                    "--isolation",
                    "oci",
                    "src",
                    "extra",
                ],
                "not granted",
            ),
            (
                &["--root", "inside", "build", "--isolation", "oci"],
                "requires",
            ),
        ];
        for (list, expected) in refused {
            let err = site.check(&policy, "podman", list).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{list:?}: expected {expected:?} in {err}"
            );
        }
    }

    #[test]
    fn paths_must_resolve_inside_the_workspace() {
        let policy = policy(vec![grant("podman", &["push", "*", "oci:{path}"])]);
        let site = Site::new();
        for (dest, allowed) in [
            ("oci:src", true),
            ("oci:src/Dockerfile", true),
            ("oci:inside/Dockerfile", true),
            // Only what exists: a new path is an `output`.
            ("oci:image", false),
            ("oci:image/new/deeper", false),
            // Programs see host paths: /workspace is not the workspace.
            ("oci:/workspace/image", false),
            ("oci:out", false),
            ("oci:out/x", false),
            ("oci:../x", false),
            ("oci:src/../../x", false),
            ("oci:missing/../../x", false),
            ("oci:/etc", false),
            ("oci:/workspace/../etc", false),
            ("docker://evil.example/x", false),
        ] {
            let result = site.check(&policy, "podman", &["push", "img", dest]);
            assert_eq!(result.is_ok(), allowed, "{dest}: {result:?}");
        }
    }

    #[test]
    fn outputs_must_be_new_paths_inside_the_workspace() {
        let policy = policy(vec![grant("podman", &["push", "*", "oci:{output}"])]);
        let site = Site::new();
        for (dest, allowed) in [
            ("oci:image", true),
            ("oci:inside/layout", true),
            ("oci:src", false),
            ("oci:src/Dockerfile", false),
            ("oci:inside", false),
            ("oci:out/x", false),
            ("oci:/tmp/new", false),
            ("oci:../new", false),
        ] {
            let result = site.check(&policy, "podman", &["push", "img", dest]);
            assert_eq!(result.is_ok(), allowed, "{dest}: {result:?}");
        }
        let err = site
            .check(&policy, "podman", &["push", "img", "oci:src"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("output path \"src\" exists already"), "{err}");
    }

    #[test]
    fn images_must_be_in_a_configured_registry_and_urls_pass_the_job_policy() {
        let policy = policy(vec![
            grant("skopeo", &["inspect", "docker://{image}"]),
            grant("git", &["clone", "{url}"]),
        ])
        .with_values(ValuePolicy {
            registries: ["registry.internal:5000".to_string()].into(),
            allow_file_repos: false,
        });
        let site = Site::new();
        assert!(
            site.check(
                &policy,
                "skopeo",
                &["inspect", "docker://registry.internal:5000/team/app:1"]
            )
            .is_ok()
        );
        for image in [
            "docker://exfil.example/secret-data:x",
            "docker://app",
            "docker://registry.internal:5000",
        ] {
            let err = site
                .check(&policy, "skopeo", &["inspect", image])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("registry") || err.contains("image"),
                "{image}: {err}"
            );
        }
        assert!(
            site.check(&policy, "git", &["clone", "https://git.example/a.git"])
                .is_ok()
        );
        for url in ["file:///srv/other-job", "/srv/repo", "ext::sh -c id"] {
            assert!(
                site.check(&policy, "git", &["clone", url]).is_err(),
                "{url}"
            );
        }
    }

    #[test]
    fn denials_say_what_was_refused_and_what_is_allowed() {
        let policy = policy(vec![
            grant("podman", &["build", "**"]),
            grant("podman", &["push", "*"]),
        ]);
        let site = Site::new();
        let err = site
            .check(&policy, "curl", &["http://x"])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "`curl http://x`: program `curl` is not granted");
        let err = site
            .check(&policy, "podman", &["run", "x"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("granted: podman build ** | podman push *"),
            "{err}"
        );
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let policy = Grants::default().resolve(no_env);
        assert!(Site::new().check(&policy, "true", &[]).is_err());
        assert!(policy.environment(&[]).unwrap().is_empty());
        assert!(policy.environment(&[("HOME".into(), "/".into())]).is_err());
    }

    #[test]
    fn environment_is_built_from_grants_only() {
        let host_env = |name: &str| match name {
            "HELIX_TEST_PASS" => Some("passed".to_string()),
            "HOME" => Some("/root".to_string()),
            _ => None,
        };
        let grants = Grants {
            env: [("LANG".to_string(), "C".to_string())].into(),
            pass_env: vec!["HELIX_TEST_PASS".into(), "HELIX_TEST_UNSET_VAR".into()],
            builder_env: vec!["GIT_TERMINAL_PROMPT".into()],
            ..Grants::default()
        };
        let policy = grants.resolve(host_env);
        let env = policy
            .environment(&[("GIT_TERMINAL_PROMPT".into(), "0".into())])
            .unwrap();
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(names, ["GIT_TERMINAL_PROMPT", "HELIX_TEST_PASS", "LANG"]);
        assert_eq!(env["HELIX_TEST_PASS"], "passed");
        let err = policy
            .environment(&[("LD_PRELOAD".into(), "/x.so".into())])
            .unwrap_err();
        assert!(err.to_string().contains("LD_PRELOAD"));
    }

    #[test]
    fn secrets_are_named_by_the_builder_and_located_by_the_host() {
        let site = Site::new();
        let policy = policy(vec![with_options(
            "podman",
            &["build", "*"],
            &[("--secret", ValueType::Secret)],
        )]);
        assert_eq!(
            site.resolve(&policy, "podman", &["build", "--secret", "id=token", "src"])
                .unwrap(),
            [
                "build",
                "--secret",
                "id=token,src=/state/secrets/token",
                "src"
            ]
        );
        assert_eq!(
            site.resolve(&policy, "podman", &["build", "--secret=id=token", "src"])
                .unwrap(),
            ["build", "--secret=id=token,src=/state/secrets/token", "src"]
        );
        for (bad, why) in [
            ("id=other", "secret 'other' is not one of the job's secrets"),
            ("id=token,src=/etc/shadow", "must be id=NAME"),
            ("id=x,src=/etc/shadow", "must be id=NAME"),
            ("token", "must be id=NAME"),
        ] {
            let err = site
                .check(&policy, "podman", &["build", "--secret", bad, "src"])
                .unwrap_err();
            assert!(err.0.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn a_registry_cache_value_is_the_jobs_own_repository_and_nothing_else() {
        let mut site = Site::new();
        let policy = policy(vec![with_options(
            "podman",
            &["build", "*"],
            &[
                ("--cache-from", ValueType::Cache),
                ("--cache-to", ValueType::Cache),
            ],
        )]);
        let own = "127.0.0.1:5000/cache/0123456789abcdef";
        site.check(
            &policy,
            "podman",
            &[
                "build",
                &format!("--cache-from={own}"),
                "--cache-to",
                own,
                "src",
            ],
        )
        .unwrap();
        for bad in [
            "127.0.0.1:5000/cache/fedcba9876543210",
            "127.0.0.1:5000/team/app",
            "127.0.0.1:5000/cache/0123456789abcdef/x",
        ] {
            let err = site
                .check(&policy, "podman", &["build", "--cache-to", bad, "src"])
                .unwrap_err();
            assert!(
                err.0.contains("not the job's registry cache"),
                "{bad}: {err}"
            );
        }
        site.values.registry_cache = None;
        let err = site
            .check(&policy, "podman", &["build", "--cache-to", own, "src"])
            .unwrap_err();
        assert!(err.0.contains("has no registry cache"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (
                Grants {
                    programs: vec![grant("", &[])],
                    ..Grants::default()
                },
                "programs[0].command",
            ),
            (
                Grants {
                    programs: vec![grant("bin/podman", &[])],
                    ..Grants::default()
                },
                "programs[0].command",
            ),
            (
                Grants {
                    programs: vec![grant("podman", &["**", "x"])],
                    ..Grants::default()
                },
                "programs[0].args",
            ),
            (
                Grants {
                    programs: vec![grant("podman", &["{file}"])],
                    ..Grants::default()
                },
                "programs[0].args",
            ),
            (
                Grants {
                    programs: vec![with_options(
                        "podman",
                        &["--root", "x"],
                        &[("--root", ValueType::Path)],
                    )],
                    ..Grants::default()
                },
                "programs[0].options",
            ),
            (
                Grants {
                    programs: vec![with_options("podman", &[], &[("root", ValueType::Path)])],
                    ..Grants::default()
                },
                "programs[0].options",
            ),
            (
                Grants {
                    pass_env: vec!["A-B".into()],
                    ..Grants::default()
                },
                "pass_env",
            ),
            (
                Grants {
                    dirs: vec![DirGrant {
                        host: "/nonexistent-dir".into(),
                        guest: "/x".into(),
                        writable: false,
                    }],
                    ..Grants::default()
                },
                "dirs[0].host",
            ),
            (
                Grants {
                    dirs: vec![DirGrant {
                        host: "/tmp".into(),
                        guest: "/workspace/x".into(),
                        writable: false,
                    }],
                    ..Grants::default()
                },
                "dirs[0].guest",
            ),
        ];
        for (grants, field) in cases {
            let err = grants.validate("builders.b.grants").unwrap_err().0;
            assert!(
                err.starts_with(&format!("builders.b.grants.{field}")),
                "{err}"
            );
        }
        let ok = Grants {
            programs: vec![grant("/usr/bin/git", &["*"])],
            ..Grants::default()
        };
        assert_eq!(ok.validate("g"), Ok(()));
    }

    #[test]
    fn paths_reach_the_program_as_the_canonical_path_the_host_checked() {
        let policy = policy(vec![with_options(
            "podman",
            &["build", "{dir}"],
            &[("--file", ValueType::Path), ("--out", ValueType::Output)],
        )]);
        let site = Site::new();
        let root = site.dir.path().canonicalize().unwrap();
        let args = site
            .resolve(
                &policy,
                "podman",
                &[
                    "build",
                    "--file=inside/Dockerfile",
                    "--out",
                    "inside/new",
                    "inside",
                ],
            )
            .unwrap();
        assert_eq!(
            args,
            [
                "build".to_string(),
                format!("--file={}", root.join("src/Dockerfile").display()),
                "--out".to_string(),
                root.join("src/new").display().to_string(),
                root.join("src").display().to_string(),
            ]
        );
        // What a tool would fetch: a URL, a `//host` path, `host:path`.
        for value in [
            "http://127.0.0.1:1/x",
            "https://evil.example/Dockerfile",
            "git://127.0.0.1/repo.git",
            "github.com/x/y",
            "//127.0.0.1/share",
            "127.0.0.1:/srv",
            "",
        ] {
            let denial = site
                .check(&policy, "podman", &["build", value])
                .unwrap_err()
                .0;
            assert!(
                denial.contains("does not exist") || denial.contains("outside"),
                "{value}: {denial}"
            );
        }
        // A checkout can hold a directory named like a URL: it is handed
        // over as the absolute path it is, which no tool reads as a URL.
        std::fs::create_dir_all(site.dir.path().join("src/http:/127.0.0.1:1")).unwrap();
        let args = site
            .resolve(&policy, "podman", &["build", "src/http://127.0.0.1:1"])
            .unwrap();
        assert_eq!(
            args[1],
            root.join("src/http:/127.0.0.1:1").display().to_string()
        );
    }

    #[test]
    fn dockerfile_and_context_values_are_the_jobs_and_nothing_else() {
        let policy = policy(vec![with_options(
            "podman",
            &["build", "-f", "{dockerfile}", "{context}"],
            &[],
        )]);
        let mut site = Site::new();
        std::fs::write(site.dir.path().join("src/Other"), "FROM scratch").unwrap();
        let root = site.dir.path().canonicalize().unwrap();
        let args = site
            .resolve(
                &policy,
                "podman",
                &["build", "-f", "inside/Dockerfile", "src"],
            )
            .unwrap();
        assert_eq!(args[2], root.join("src/Dockerfile").display().to_string());
        for other in [
            "src/Other",
            "src",
            "out/passwd",
            "http://127.0.0.1:1/Dockerfile",
        ] {
            let denial = site
                .check(&policy, "podman", &["build", "-f", other, "src"])
                .unwrap_err()
                .0;
            assert!(
                denial.contains("is not the job's Dockerfile"),
                "{other}: {denial}"
            );
        }
        assert_eq!(args[3], root.join("src").display().to_string());
        for other in [
            ".",
            "inside/..",
            "out",
            "/etc",
            "src/Dockerfile",
            "github.com/x/y",
        ] {
            let denial = site
                .check(&policy, "podman", &["build", "-f", "src/Dockerfile", other])
                .unwrap_err()
                .0;
            assert!(
                denial.contains("is not the job's build context"),
                "{other}: {denial}"
            );
        }
        let denial = site
            .check(&policy, "podman", &["build", "src"])
            .unwrap_err()
            .0;
        assert!(denial.contains("expected \"-f\", got \"src\""), "{denial}");
        site.values.dockerfile = None;
        let denial = site
            .check(&policy, "podman", &["build", "-f", "src/Dockerfile", "src"])
            .unwrap_err()
            .0;
        assert!(denial.contains("the job has no Dockerfile"), "{denial}");
    }

    #[test]
    fn a_build_arg_value_is_one_of_the_jobs_build_args_as_given() {
        let policy = policy(vec![with_options(
            "podman",
            &["build", "**"],
            &[("--build-arg", ValueType::BuildArg)],
        )]);
        let site = Site::new();
        assert!(
            site.check(&policy, "podman", &["build", "--build-arg=A=1"])
                .is_ok()
        );
        assert!(
            site.check(&policy, "podman", &["build", "--build-arg", "A=1"])
                .is_ok()
        );
        for (value, why) in [
            ("A", "has no value"),
            ("REGISTRY_AUTH_FILE", "has no value"),
            ("A=2", "not one of the job's build args"),
            ("B=1", "not one of the job's build args"),
            ("A=1=", "not one of the job's build args"),
            ("BUILDKIT_SYNTAX=evil.example/fe", "BuildKit's own options"),
            ("buildkit_syntax=evil.example/fe", "BuildKit's own options"),
            ("HTTP_PROXY=http://10.0.0.1:3128", "proxy build args"),
            ("no_proxy=*", "proxy build args"),
        ] {
            let denial = site
                .check(
                    &policy,
                    "podman",
                    &["build", &format!("--build-arg={value}")],
                )
                .unwrap_err()
                .0;
            assert!(denial.contains(why), "{value}: {denial}");
        }
    }
}
