//! Projects and their tokens (`[projects.NAME]`, and the server-wide
//! admin `token`): parsed and checked here, turned into the
//! [`Access`] the API resolves bearer tokens with.

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{Config, ConfigError};
use crate::access::{Access, Project, Scope};
use crate::secrets::SecretSource;

/// One project: the tokens that act for it and the operator secrets its
/// jobs may name. A project with no tokens exists (admins may submit for
/// it) but nobody else acts for it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectConfig {
    pub tokens: Vec<TokenConfig>,
    /// Names from `[secrets]` this project's jobs may use; no others.
    pub secrets: Vec<String>,
}

/// A project token: exactly one of `digest` (the SHA-256 of the token,
/// 64 hex digits), `env` or `file` (where the token itself is, read when
/// the server starts, as build secrets are); the scopes it carries; and
/// optionally when it stops working.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    pub digest: Option<String>,
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    /// RFC 3339; the token is refused from then on.
    pub expires: Option<String>,
    /// Any of `jobs:submit`, `jobs:read`, `jobs:cancel`; none by default.
    pub scopes: Vec<String>,
}

/// Shortest token read from an `env` or `file` source (as for `token`).
const MIN_TOKEN_LEN: usize = 16;

impl Config {
    /// Checks every project's name, tokens and secrets, without reading
    /// the tokens' sources.
    pub(super) fn validate_projects(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for (name, project) in &self.projects {
            if !is_project_name(name) {
                return invalid(format!(
                    "projects.{name}: project names must be 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter or digit"
                ));
            }
            for (i, token) in project.tokens.iter().enumerate() {
                let at = format!("projects.{name}.tokens[{i}]");
                token_scopes(&at, token)?;
                token_expiry(&at, token)?;
                let sources = [
                    token.digest.is_some(),
                    token.env.is_some(),
                    token.file.is_some(),
                ];
                if sources.iter().filter(|s| **s).count() != 1 {
                    return invalid(format!(
                        "{at}: set exactly one of `digest` (the token's SHA-256, hex), `env` and `file`"
                    ));
                }
                if let Some(digest) = &token.digest {
                    parse_digest(&format!("{at}.digest"), digest)?;
                }
            }
            for secret in &project.secrets {
                if !self.secrets.contains_key(secret) {
                    let defined: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
                    return invalid(format!(
                        "projects.{name}.secrets: unknown secret \"{secret}\"; [secrets] defines: {}",
                        if defined.is_empty() {
                            "none".to_string()
                        } else {
                            defined.join(", ")
                        }
                    ));
                }
            }
        }
        Ok(())
    }

    /// The tokens the API accepts: `token` as the admin's, each project's
    /// own, their `env` and `file` sources read now.
    pub fn access(&self) -> Result<Access, ConfigError> {
        self.access_with(|name| std::env::var(name).ok())
    }

    /// [`Config::access`], reading variables through `host_env`.
    pub fn access_with(
        &self,
        host_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Access, ConfigError> {
        let mut access = Access::open();
        if let Some(token) = &self.token {
            access = access.with_admin(Sha256::digest(token.as_bytes()).into());
        }
        for (name, project) in &self.projects {
            access = access.with_project(Project {
                name: name.clone(),
                secrets: project.secrets.iter().cloned().collect(),
            });
            for (i, token) in project.tokens.iter().enumerate() {
                let at = format!("projects.{name}.tokens[{i}]");
                let digest = match &token.digest {
                    Some(digest) => parse_digest(&format!("{at}.digest"), digest)?,
                    None => {
                        let source = SecretSource {
                            env: token.env.clone(),
                            file: token.file.clone(),
                        };
                        let value = source
                            .read(&at, &host_env)
                            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
                        // A file's trailing newline is not part of the token.
                        let value = value.trim_end_matches(['\n', '\r']);
                        if value.len() < MIN_TOKEN_LEN {
                            return Err(ConfigError::Invalid(format!(
                                "{at}: a token must be at least {MIN_TOKEN_LEN} characters"
                            )));
                        }
                        Sha256::digest(value.as_bytes()).into()
                    }
                };
                access = access.with_project_token(
                    name,
                    digest,
                    token_expiry(&at, token)?,
                    token_scopes(&at, token)?,
                );
            }
        }
        Ok(access)
    }
}

fn is_project_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn token_scopes(at: &str, token: &TokenConfig) -> Result<BTreeSet<Scope>, ConfigError> {
    token
        .scopes
        .iter()
        .map(|name| {
            Scope::parse_project(name).ok_or_else(|| {
                let known: Vec<&str> = Scope::PROJECT.iter().map(|s| s.as_str()).collect();
                let hint = if name == Scope::Admin.as_str() {
                    " (admin is the server's `token`, never a project's)"
                } else {
                    ""
                };
                ConfigError::Invalid(format!(
                    "{at}.scopes: unknown scope \"{name}\"; known: {}{hint}",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

fn token_expiry(at: &str, token: &TokenConfig) -> Result<Option<DateTime<Utc>>, ConfigError> {
    token
        .expires
        .as_deref()
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ConfigError::Invalid(format!(
                        "{at}.expires: {text:?} is not an RFC 3339 time ({e}), e.g. 2030-01-31T00:00:00Z"
                    ))
                })
        })
        .transpose()
}

fn parse_digest(at: &str, text: &str) -> Result<[u8; 32], ConfigError> {
    let hex_text = text.strip_prefix("sha256:").unwrap_or(text);
    hex::decode(hex_text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "{at}: must be a token's SHA-256 as 64 hex digits (`printf %s TOKEN | sha256sum`)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    const DIGEST: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    #[test]
    fn projects_and_tokens_parse() {
        let config = parse(&format!(
            "token = 'admin-token-0123456789'\n\
             [secrets.deploy]\nenv = 'PATH'\n\
             [projects.team-a]\nsecrets = ['deploy']\n\
             [[projects.team-a.tokens]]\ndigest = '{DIGEST}'\nscopes = ['jobs:submit', 'jobs:read']\n\
             [[projects.team-a.tokens]]\nenv = 'HELIX_TEST_TEAM_A_TOKEN'\nexpires = '2030-01-31T00:00:00Z'\nscopes = ['jobs:cancel']\n"
        ))
        .unwrap();
        assert_eq!(config.projects["team-a"].tokens.len(), 2);
        let access = config
            .access_with(|var| {
                (var == "HELIX_TEST_TEAM_A_TOKEN").then(|| "team-a-cancel-token-xyz".into())
            })
            .unwrap();
        let now = Utc::now();
        let caller = access.resolve(Some("password"), now).unwrap();
        assert_eq!(caller.project_name(), Some("team-a"));
        assert!(caller.has(Scope::JobsSubmit) && !caller.has(Scope::JobsCancel));
        let canceller = access
            .resolve(Some("team-a-cancel-token-xyz"), now)
            .unwrap();
        assert!(canceller.has(Scope::JobsCancel) && !canceller.has(Scope::JobsRead));
        assert!(
            access
                .resolve(Some("admin-token-0123456789"), now)
                .unwrap()
                .is_admin()
        );
        assert_eq!(
            access.project("team-a").unwrap().secrets,
            BTreeSet::from(["deploy".to_string()])
        );
    }

    #[test]
    fn bad_projects_name_the_field() {
        for (text, expected) in [
            (
                format!("[[projects.team-a.tokens]]\ndigest = '{DIGEST}'\nscopes = ['jobs:write']"),
                "projects.team-a.tokens[0].scopes: unknown scope \"jobs:write\"; known: jobs:submit, jobs:read, jobs:cancel",
            ),
            (
                format!("[[projects.team-a.tokens]]\ndigest = '{DIGEST}'\nscopes = ['admin']"),
                "projects.team-a.tokens[0].scopes: unknown scope \"admin\"",
            ),
            (
                "[[projects.team-a.tokens]]\ndigest = 'abc'".to_string(),
                "projects.team-a.tokens[0].digest: must be a token's SHA-256",
            ),
            (
                format!("[[projects.team-a.tokens]]\ndigest = '{DIGEST}'\nenv = 'X'"),
                "projects.team-a.tokens[0]: set exactly one of",
            ),
            (
                "[[projects.team-a.tokens]]\nscopes = []".to_string(),
                "projects.team-a.tokens[0]: set exactly one of",
            ),
            (
                format!("[[projects.team-a.tokens]]\ndigest = '{DIGEST}'\nexpires = 'tomorrow'"),
                "projects.team-a.tokens[0].expires: \"tomorrow\" is not an RFC 3339 time",
            ),
            (
                "[projects.team-a]\nsecrets = ['nope']".to_string(),
                "projects.team-a.secrets: unknown secret \"nope\"",
            ),
            (
                "[projects.Team]\nsecrets = []".to_string(),
                "projects.Team: project names must be",
            ),
            (
                "[projects.team-a]\ntoken = 'x'".to_string(),
                "unknown field `token`",
            ),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(expected), "{text}:\n{err}");
        }
    }

    #[test]
    fn a_short_token_from_a_source_is_refused() {
        let config =
            parse("[[projects.team-a.tokens]]\nenv = 'SHORT'\nscopes = ['jobs:read']").unwrap();
        let err = config
            .access_with(|_| Some("short".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("projects.team-a.tokens[0]: a token must be at least 16"),
            "{err}"
        );
    }
}
