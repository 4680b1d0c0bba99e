//! What a builder may run: the operator's grants, and matching a call
//! against them.
//!
//! Nothing is granted by default. A program grant names one command and an
//! argument pattern: a literal matches itself, `*` exactly one argument,
//! `**` (last only) any remaining arguments, including none. Without `**`
//! the argument count must match.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A builder's grants, as written in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grants {
    /// Programs the builder may run, with their argument patterns.
    pub programs: Vec<ProgramGrant>,
    /// Variables set, with these values, for every program it runs.
    pub env: BTreeMap<String, String>,
    /// Variables copied from the host's environment (when set there).
    pub pass_env: Vec<String>,
    /// Like `pass_env`, and their values are replaced by `***` in logs.
    pub secret_env: Vec<String>,
    /// Variables the builder may set itself on a call.
    pub builder_env: Vec<String>,
    /// Host directories opened to the builder besides its workspace.
    pub dirs: Vec<DirGrant>,
}

/// One program and the arguments it may be given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramGrant {
    /// A name looked up on the host's `PATH`, or an absolute path.
    pub command: String,
    /// Argument patterns; absent means no arguments.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A host directory visible to the builder's own code (not its programs,
/// which run in the workspace).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    secrets: Vec<String>,
    dirs: Vec<DirGrant>,
}

/// Why a call was refused, for the builder and the job log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denial(pub String);

impl Grants {
    /// Checks the grants' shape; `at` names them in errors
    /// (`builders.podman.grants`).
    pub fn validate(&self, at: &str) -> Result<(), String> {
        for (i, grant) in self.programs.iter().enumerate() {
            let here = format!("{at}.programs[{i}]");
            let command = &grant.command;
            if command.is_empty() || command.contains('\0') {
                return Err(format!("{here}.command must not be empty"));
            }
            if command.contains('/') && !Path::new(command).is_absolute() {
                return Err(format!(
                    "{here}.command {command:?} must be a bare name (looked up on PATH) or an absolute path"
                ));
            }
            if let Some(pos) = grant.args.iter().position(|a| a == "**")
                && pos + 1 != grant.args.len()
            {
                return Err(format!("{here}.args: \"**\" may only be the last pattern"));
            }
        }
        let names = self
            .env
            .keys()
            .map(|n| ("env", n))
            .chain(self.pass_env.iter().map(|n| ("pass_env", n)))
            .chain(self.secret_env.iter().map(|n| ("secret_env", n)))
            .chain(self.builder_env.iter().map(|n| ("builder_env", n)));
        for (field, name) in names {
            if !is_env_name(name) {
                return Err(format!(
                    "{at}.{field}: {name:?} is not a valid environment variable name"
                ));
            }
        }
        for (i, dir) in self.dirs.iter().enumerate() {
            let here = format!("{at}.dirs[{i}]");
            if !dir.host.is_absolute() || !dir.host.is_dir() {
                return Err(format!(
                    "{here}.host {} must be an existing absolute directory",
                    dir.host.display()
                ));
            }
            let guest = Path::new(&dir.guest);
            if !guest.is_absolute()
                || guest.starts_with(crate::exec::GUEST_WORKSPACE)
                || dir.guest.contains("..")
            {
                return Err(format!(
                    "{here}.guest {:?} must be an absolute path outside {}",
                    dir.guest,
                    crate::exec::GUEST_WORKSPACE
                ));
            }
        }
        Ok(())
    }

    /// Resolves the grants against the host's environment, read through
    /// `host_env` (normally `|name| std::env::var(name).ok()`).
    pub fn resolve(&self, host_env: impl Fn(&str) -> Option<String>) -> GrantPolicy {
        let mut base_env = self.env.clone();
        let mut secrets = Vec::new();
        for name in self.pass_env.iter().chain(&self.secret_env) {
            if let Some(value) = host_env(name) {
                base_env.insert(name.clone(), value);
            }
        }
        for name in &self.secret_env {
            if let Some(value) = base_env.get(name).filter(|v| !v.is_empty()) {
                secrets.push(value.clone());
            }
        }
        GrantPolicy {
            programs: self.programs.clone(),
            base_env,
            builder_env: self.builder_env.iter().cloned().collect(),
            secrets,
            dirs: self.dirs.clone(),
        }
    }
}

impl GrantPolicy {
    /// Whether `program` may run with `args`. The denial names what was
    /// refused and what the grants allow instead.
    pub fn check(&self, program: &str, args: &[String]) -> Result<(), Denial> {
        let for_program: Vec<&ProgramGrant> = self
            .programs
            .iter()
            .filter(|g| g.command == program)
            .collect();
        if for_program.iter().any(|g| matches(&g.args, args)) {
            return Ok(());
        }
        let call = describe(program, args);
        if for_program.is_empty() {
            return Err(Denial(format!(
                "`{call}`: program `{program}` is not granted"
            )));
        }
        let allowed: Vec<String> = for_program
            .iter()
            .map(|g| describe(&g.command, &g.args))
            .collect();
        Err(Denial(format!(
            "`{call}`: these arguments are not granted; allowed: {}",
            allowed.join(" | ")
        )))
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

    /// Values to replace by `***` in logs.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
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

fn matches(patterns: &[String], args: &[String]) -> bool {
    match (patterns.split_first(), args.split_first()) {
        (None, None) => true,
        (Some((p, _)), _) if p == "**" => true,
        (Some((p, rest)), Some((a, args))) => (p == "*" || p == a) && matches(rest, args),
        _ => false,
    }
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

    fn grant(command: &str, args: &[&str]) -> ProgramGrant {
        ProgramGrant {
            command: command.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
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
            ("podman", &["build", "-f", "Dockerfile", "."], true),
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
        for (program, list, allowed) in cases {
            assert_eq!(
                policy.check(program, &args(list)).is_ok(),
                *allowed,
                "{program} {list:?}"
            );
        }
    }

    #[test]
    fn denials_say_what_was_refused_and_what_is_allowed() {
        let policy = policy(vec![grant("podman", &["build", "**"])]);
        let err = policy
            .check("curl", &args(&["http://x"]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "`curl http://x`: program `curl` is not granted");
        let err = policy
            .check("podman", &args(&["run", "x"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowed: podman build **"), "{err}");
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let policy = Grants::default().resolve(no_env);
        assert!(policy.check("true", &[]).is_err());
        assert!(policy.environment(&[]).unwrap().is_empty());
        assert!(policy.environment(&[("HOME".into(), "/".into())]).is_err());
    }

    #[test]
    fn environment_is_built_from_grants_only() {
        let host_env = |name: &str| match name {
            "HELIX_TEST_PASS" => Some("passed".to_string()),
            "HELIX_TEST_SECRET" => Some("hunter22".to_string()),
            "HOME" => Some("/root".to_string()),
            _ => None,
        };
        let grants = Grants {
            env: [("LANG".to_string(), "C".to_string())].into(),
            pass_env: vec!["HELIX_TEST_PASS".into(), "HELIX_TEST_UNSET_VAR".into()],
            secret_env: vec!["HELIX_TEST_SECRET".into()],
            builder_env: vec!["GIT_TERMINAL_PROMPT".into()],
            ..Grants::default()
        };
        let policy = grants.resolve(host_env);
        let env = policy
            .environment(&[("GIT_TERMINAL_PROMPT".into(), "0".into())])
            .unwrap();
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "GIT_TERMINAL_PROMPT",
                "HELIX_TEST_PASS",
                "HELIX_TEST_SECRET",
                "LANG"
            ]
        );
        assert_eq!(env["HELIX_TEST_PASS"], "passed");
        assert_eq!(policy.secrets(), ["hunter22"]);
        let err = policy
            .environment(&[("LD_PRELOAD".into(), "/x.so".into())])
            .unwrap_err();
        assert!(err.to_string().contains("LD_PRELOAD"));
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
            let err = grants.validate("builders.b.grants").unwrap_err();
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
}
