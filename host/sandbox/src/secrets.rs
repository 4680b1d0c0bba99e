//! Build secrets: values the operator defines once in the config, a job
//! names, and the host hands to the build's `RUN --mount=type=secret`
//! steps.
//!
//! A builder never sees a value. It learns the names of the job's secrets
//! and passes `--secret id=NAME` to its build tool; the host checks the
//! name against the job and rewrites the argument to point at a file it
//! wrote outside the workspace (`src=`), where the builder's own code
//! cannot read it. Every value is redacted from the job's log, its error
//! and the program output returned to the builder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use helix_core::log::Redactor;

/// Where one secret's value comes from, as written in the config file:
/// exactly one of `env` and `file`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// A variable of the server's environment.
    pub env: Option<String>,
    /// A file on the server, read whole.
    pub file: Option<PathBuf>,
}

/// Why a secret could not be read; each names its config key `at`.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{at}: environment variable {var} is not set on this server")]
    Unset { at: String, var: String },
    #[error("{at}: cannot read {}: {source}", file.display())]
    Unreadable {
        at: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: set exactly one of `env` and `file`")]
    Source { at: String },
    #[error("{at}: the value is empty")]
    Empty { at: String },
    #[error(
        "{at}: a secret name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    Name { at: String },
}

impl SecretSource {
    /// The value, read now through `host_env` for a variable; errors name
    /// the config key `at`.
    pub fn read(
        &self,
        at: &str,
        host_env: impl Fn(&str) -> Option<String>,
    ) -> Result<String, SecretError> {
        let at = at.to_string();
        let value = match (&self.env, &self.file) {
            (Some(var), None) => host_env(var).ok_or_else(|| SecretError::Unset {
                at: at.clone(),
                var: var.clone(),
            })?,
            (None, Some(file)) => {
                std::fs::read_to_string(file).map_err(|source| SecretError::Unreadable {
                    at: at.clone(),
                    file: file.clone(),
                    source,
                })?
            }
            _ => return Err(SecretError::Source { at }),
        };
        if value.is_empty() {
            return Err(SecretError::Empty { at });
        }
        Ok(value)
    }
}

/// The operator's secrets, read when the server starts.
#[derive(Debug, Clone, Default)]
pub struct BuildSecrets {
    values: BTreeMap<String, String>,
}

/// Whether `given` is the secret whose SHA-256 is `expected`, compared
/// digest to digest with a constant-time fold, so the time taken says
/// nothing about how much of it matched (or how long the secret is).
pub fn matches_digest(given: &[u8], expected: &sha2::digest::Output<sha2::Sha256>) -> bool {
    use sha2::Digest as _;
    let given = sha2::Sha256::digest(given);
    given
        .iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The files a job's secrets were written to, by name.
pub type SecretFiles = BTreeMap<String, PathBuf>;

impl BuildSecrets {
    /// Reads every secret from its source, through `host_env` for
    /// variables. The error names the secret and what is missing.
    pub fn load(
        sources: &BTreeMap<String, SecretSource>,
        host_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SecretError> {
        let mut values = BTreeMap::new();
        for (name, source) in sources {
            let at = format!("secrets.{name}");
            if !is_secret_name(name) {
                return Err(SecretError::Name { at });
            }
            values.insert(name.clone(), source.read(&at, &host_env)?);
        }
        Ok(BuildSecrets { values })
    }

    /// The value of secret `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Names a job may ask for.
    pub fn names(&self) -> BTreeSet<String> {
        self.values.keys().cloned().collect()
    }

    /// A redactor of the values of `names`.
    pub fn redactor(&self, names: &[String]) -> Redactor {
        let values: Vec<String> = names
            .iter()
            .filter_map(|name| self.values.get(name).cloned())
            .collect();
        Redactor::new(&values)
    }

    /// Writes the values of `names` into `dir` (created, readable by the
    /// host's user only), one file per secret.
    pub fn write(&self, names: &[String], dir: &Path) -> std::io::Result<SecretFiles> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let mut files = SecretFiles::new();
        if names.is_empty() {
            return Ok(files);
        }
        std::fs::DirBuilder::new().mode(0o700).create(dir)?;
        for name in names {
            let value = self.values.get(name).ok_or_else(|| {
                std::io::Error::other(format!("secret '{name}' is no longer defined"))
            })?;
            let path = dir.join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)?
                .write_all(value.as_bytes())?;
            files.insert(name.clone(), path);
        }
        Ok(files)
    }
}

fn is_secret_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(entries: &[(&str, SecretSource)]) -> BTreeMap<String, SecretSource> {
        entries
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect()
    }

    fn env(var: &str) -> SecretSource {
        SecretSource {
            env: Some(var.into()),
            file: None,
        }
    }

    #[test]
    fn values_come_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file").unwrap();
        let secrets = BuildSecrets::load(
            &sources(&[
                ("token", env("TOKEN")),
                (
                    "key",
                    SecretSource {
                        env: None,
                        file: Some(file),
                    },
                ),
            ]),
            |name| (name == "TOKEN").then(|| "from-env".to_string()),
        )
        .unwrap();
        assert_eq!(
            secrets.names(),
            ["key".to_string(), "token".to_string()].into()
        );
        let redactor = secrets.redactor(&["token".into()]);
        assert_eq!(
            redactor.redact("a from-env b from-file"),
            "a *** b from-file"
        );

        let out = dir.path().join("job-secrets");
        let files = secrets
            .write(&["key".into(), "token".into()], &out)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&files["token"]).unwrap(),
            "from-env"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&files["key"])
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
    }

    #[test]
    fn a_missing_or_ambiguous_source_is_named() {
        let err = BuildSecrets::load(&sources(&[("token", env("UNSET"))]), |_| None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "secrets.token: environment variable UNSET is not set on this server"
        );
        let both = SecretSource {
            env: Some("A".into()),
            file: Some("/etc/hostname".into()),
        };
        let err = BuildSecrets::load(&sources(&[("x", both)]), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one"), "{err}");
        let err = BuildSecrets::load(&sources(&[("bad,name", env("A"))]), |_| Some("v".into()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("secrets.bad,name:"), "{err}");
    }
}
