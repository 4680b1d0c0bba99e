//! Projects and their tokens (`[projects.NAME]`, and the server-wide
//! admin `token`): parsed and checked here, turned into the
//! [`Access`] the API resolves bearer tokens with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{Config, ConfigError, OidcRuleConfig};
use crate::access::{Access, Project, Scope};
use crate::hooks::{HookConfig, HookRule, check_forges};
use crate::secrets::SecretSource;
use crate::service::Quotas;

/// One project: the tokens that act for it, what its jobs may build,
/// push, pull and name, its quotas and its webhooks. A project with no
/// tokens exists (admins may submit for it) but nobody else acts for it.
/// Each list left out allows anything; an empty one would allow nothing
/// and is refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectConfig {
    pub tokens: Vec<TokenConfig>,
    /// Names from `[secrets]` this project's jobs may use; no others.
    pub secrets: Vec<String>,
    /// Names from `[secrets]` only its jobs of a protected ref may use.
    pub protected_secrets: Vec<String>,
    /// Full ref name patterns of its protected refs (`refs/heads/main`,
    /// `refs/tags/v*`): their jobs get `protected_secrets` and a layer
    /// cache of their own.
    pub protected_refs: Vec<String>,
    /// Repository URL patterns its jobs may build (`*`: any run of
    /// characters); any when absent.
    pub repositories: Option<Vec<String>>,
    /// Image repository prefixes (`host[:port]/path`, in configured
    /// registries) its jobs may push to; any when absent.
    pub images: Option<Vec<String>>,
    /// Builders its jobs may use; every one when absent.
    pub builders: Option<Vec<String>>,
    /// Its own registry credentials (a containers auth file), for its
    /// jobs' pulls and pushes only. Without one its jobs reach registries
    /// anonymously: never with the operator's `registry_auth_file`.
    pub registry_auth: Option<PathBuf>,
    /// Most of its jobs running at once, on every host; none: no limit.
    pub max_running: Option<u32>,
    /// Most of its jobs waiting for a worker; a submission past it is
    /// refused (429). None: no limit but `queue_capacity`.
    pub max_queued: Option<u32>,
    /// Its webhooks (`/v1/hooks/<forge>/<project>`): each forge's secret,
    /// as in `[webhooks]`.
    pub webhooks: BTreeMap<String, SecretSource>,
    /// What its webhooks' pushes build, as `[[webhook_rules]]`.
    pub webhook_rules: Vec<HookRule>,
    /// Which CI systems' ID tokens are exchanged for a token of it (see
    /// `[oidc]`): each rule's tokens build one repository, at the ID
    /// token's ref.
    pub oidc: Vec<OidcRuleConfig>,
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
            for (field, limit) in [
                ("max_running", project.max_running),
                ("max_queued", project.max_queued),
            ] {
                if limit == Some(0) {
                    return invalid(format!(
                        "projects.{name}.{field}: must be at least 1 (leave it out for no limit)"
                    ));
                }
            }
            check_forges(&format!("projects.{name}.webhooks"), &project.webhooks)
                .map_err(ConfigError::Invalid)?;
            self.validate_project_rules(name, project)?;
            let usable = project
                .secrets
                .iter()
                .chain(&project.protected_secrets)
                .map(String::as_str)
                .collect();
            crate::hooks::check_rule_secrets(
                &format!("projects.{name}.webhook_rules"),
                &project.webhook_rules,
                &usable,
                &format!("project {name} may use"),
            )
            .map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }

    /// Checks what a project's jobs may build, push, pull and name.
    fn validate_project_rules(
        &self,
        name: &str,
        project: &ProjectConfig,
    ) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for (field, names) in [
            ("secrets", &project.secrets),
            ("protected_secrets", &project.protected_secrets),
        ] {
            if let Some(secret) = names.iter().find(|s| !self.secrets.contains_key(*s)) {
                let defined: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
                return invalid(format!(
                    "projects.{name}.{field}: unknown secret \"{secret}\"; [secrets] defines: {}",
                    if defined.is_empty() {
                        "none".to_string()
                    } else {
                        defined.join(", ")
                    }
                ));
            }
        }
        if let Some(both) = project
            .protected_secrets
            .iter()
            .find(|s| project.secrets.contains(s))
        {
            return invalid(format!(
                "projects.{name}.protected_secrets: \"{both}\" is in `secrets` too; a secret is for every ref or for protected refs only"
            ));
        }
        if !project.protected_secrets.is_empty() && project.protected_refs.is_empty() {
            return invalid(format!(
                "projects.{name}.protected_secrets: no job could use them: set protected_refs, e.g. [\"refs/heads/main\"]"
            ));
        }
        for (i, pattern) in project.protected_refs.iter().enumerate() {
            if let Some(problem) = ref_pattern_problem(pattern) {
                return invalid(format!("projects.{name}.protected_refs[{i}]: {problem}"));
            }
        }
        let nonempty = |field: &str, list: &Option<Vec<String>>| match list {
            Some(list) if list.is_empty() => invalid(format!(
                "projects.{name}.{field}: an empty list allows nothing; leave it out to allow any"
            )),
            _ => Ok(()),
        };
        nonempty("repositories", &project.repositories)?;
        nonempty("images", &project.images)?;
        nonempty("builders", &project.builders)?;
        for (i, pattern) in project.repositories.iter().flatten().enumerate() {
            let probe = pattern.replace('*', "x");
            if let Err(e) = crate::job::validate_repo_url(&probe, self.allow_file_repos) {
                return invalid(format!("projects.{name}.repositories[{i}]: {}", e.message));
            }
        }
        let registries = self.push_registries();
        for (i, prefix) in project.images.iter().flatten().enumerate() {
            let at = format!("projects.{name}.images[{i}]");
            let trimmed = prefix.trim_end_matches('/');
            if crate::reference::validate_image_ref(&format!("{trimmed}/probe")).is_err()
                || !trimmed.contains('/') && !prefix.ends_with('/')
            {
                return invalid(format!(
                    "{at}: {prefix:?} must be a repository prefix, host[:port]/path (e.g. registry.example/team-a/)"
                ));
            }
            let registry = crate::reference::registry_of(trimmed);
            if !registries.contains(registry) {
                return invalid(format!(
                    "{at}: registry {registry} is not configured; add [registries.\"{registry}\"] or make it the default_registry"
                ));
            }
        }
        let builders = self.builder_configs();
        // One that cannot run here is refused at submit, naming the setting.
        let unavailable = self.unavailable_builders();
        if let Some(unknown) = project
            .builders
            .iter()
            .flatten()
            .find(|b| !builders.contains_key(*b) && !unavailable.contains_key(*b))
        {
            let known: Vec<&str> = builders.keys().map(String::as_str).collect();
            return invalid(format!(
                "projects.{name}.builders: unknown builder \"{unknown}\"; configured and built-in: {}",
                known.join(", ")
            ));
        }
        if let Some(file) = &project.registry_auth
            && !file.is_file()
        {
            return invalid(format!(
                "projects.{name}.registry_auth: {} is not a readable file",
                file.display()
            ));
        }
        Ok(())
    }

    /// Each project's `max_running` and `max_queued`.
    pub fn quotas(&self) -> Quotas {
        let mut quotas = Quotas::default();
        for (name, project) in &self.projects {
            if let Some(most) = project.max_running {
                quotas.max_running.insert(name.clone(), most);
            }
            if let Some(most) = project.max_queued {
                let most = usize::try_from(most).unwrap_or(usize::MAX);
                quotas.max_queued.insert(name.clone(), most);
            }
        }
        quotas
    }

    /// Each project's webhooks, by project.
    pub(super) fn project_hooks(&self) -> BTreeMap<String, HookConfig<'_>> {
        self.projects
            .iter()
            .map(|(name, project)| {
                let hooks = HookConfig {
                    secrets: &project.webhooks,
                    rules: project.webhook_rules.clone(),
                };
                (name.clone(), hooks)
            })
            .collect()
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
        if let Some(issued) = self.issued_tokens(&host_env)? {
            access = access.with_issued(issued);
        }
        if let Some(token) = &self.token {
            access = access.with_admin(Sha256::digest(token.as_bytes()).into());
        }
        for (name, project) in &self.projects {
            access = access.with_project(Project {
                name: name.clone(),
                secrets: project.secrets.iter().cloned().collect(),
                protected_secrets: project.protected_secrets.iter().cloned().collect(),
                repositories: project.repositories.clone(),
                images: project.images.clone(),
                builders: project
                    .builders
                    .as_ref()
                    .map(|b| b.iter().cloned().collect()),
                protected_refs: project.protected_refs.clone(),
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

/// Why `pattern` is not a full ref name pattern (`refs/heads/main`,
/// `refs/tags/v*`), if it is not.
pub(super) fn ref_pattern_problem(pattern: &str) -> Option<String> {
    let probe = pattern.replace('*', "x");
    let wrong = !pattern.starts_with("refs/")
        || pattern.chars().any(|c| c.is_whitespace() || c.is_control())
        || probe.contains("..");
    wrong.then(|| {
        format!("{pattern:?} must be a full ref name pattern, e.g. refs/heads/main or refs/tags/v*")
    })
}

fn token_scopes(at: &str, token: &TokenConfig) -> Result<BTreeSet<Scope>, ConfigError> {
    token_scopes_named(&format!("{at}.scopes"), &token.scopes)
}

/// The project scopes `names` (the list at `at`) name.
pub(super) fn token_scopes_named(
    at: &str,
    names: &[String],
) -> Result<BTreeSet<Scope>, ConfigError> {
    names
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
                    "{at}: unknown scope \"{name}\"; known: {}{hint}",
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
            (
                "[projects.team-a]\nprotected_secrets = ['nope']".to_string(),
                "projects.team-a.protected_secrets: unknown secret \"nope\"",
            ),
            (
                "[secrets.s]\nenv = 'PATH'\n[projects.team-a]\nsecrets = ['s']\nprotected_secrets = ['s']\nprotected_refs = ['refs/heads/main']".to_string(),
                "projects.team-a.protected_secrets: \"s\" is in `secrets` too",
            ),
            (
                "[secrets.s]\nenv = 'PATH'\n[projects.team-a]\nprotected_secrets = ['s']".to_string(),
                "projects.team-a.protected_secrets: no job could use them: set protected_refs",
            ),
            (
                "[projects.team-a]\nprotected_refs = ['main']".to_string(),
                "projects.team-a.protected_refs[0]: \"main\" must be a full ref name pattern",
            ),
            (
                "[projects.team-a]\nrepositories = []".to_string(),
                "projects.team-a.repositories: an empty list allows nothing",
            ),
            (
                "[projects.team-a]\nrepositories = ['https://u:p@git.example/*']".to_string(),
                "projects.team-a.repositories[0]: must not hold credentials",
            ),
            (
                "[projects.team-a]\nrepositories = ['ftp://git.example/*']".to_string(),
                "projects.team-a.repositories[0]: transport \"ftp\" is not allowed",
            ),
            (
                "[projects.team-a]\nimages = ['elsewhere.example/team-a/']".to_string(),
                "projects.team-a.images[0]: registry elsewhere.example is not configured",
            ),
            (
                "[registries.'r.example']\n[projects.team-a]\nimages = ['r.example/Team A']".to_string(),
                "projects.team-a.images[0]: \"r.example/Team A\" must be a repository prefix",
            ),
            (
                "[projects.team-a]\nbuilders = ['nope']".to_string(),
                "projects.team-a.builders: unknown builder \"nope\"",
            ),
            (
                "[projects.team-a]\nregistry_auth = '/nonexistent/auth.json'".to_string(),
                "projects.team-a.registry_auth: /nonexistent/auth.json is not a readable file",
            ),
            (
                "[projects.team-a]\nmax_running = 0".to_string(),
                "projects.team-a.max_running: must be at least 1 (leave it out for no limit)",
            ),
            (
                "[projects.team-a]\nmax_queued = 0".to_string(),
                "projects.team-a.max_queued: must be at least 1",
            ),
            (
                "[projects.team-a]\nmax_queued = -1".to_string(),
                "max_queued",
            ),
            (
                "[projects.team-a.webhooks]\nbitbucket = { env = 'X' }".to_string(),
                "projects.team-a.webhooks.bitbucket: no such forge; use github, gitea, forgejo or gitlab",
            ),
            (
                "[[projects.team-a.webhook_rules]]\nrefs = ['refs/heads/main']".to_string(),
                "missing field `repository`",
            ),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(expected), "{text}:\n{err}");
        }
    }

    #[test]
    fn project_rules_reach_the_callers_project() {
        let config = parse(
            "[registries.'r.example:5000']\n\
             [secrets.npm]\nenv = 'PATH'\n[secrets.deploy]\nenv = 'PATH'\n\
             [projects.team-a]\nsecrets = ['npm']\nprotected_secrets = ['deploy']\n\
             protected_refs = ['refs/heads/main', 'refs/tags/v*']\n\
             repositories = ['https://git.example/team-a/*']\n\
             images = ['r.example:5000/team-a/']\nbuilders = ['podman', 'simulated']\n",
        )
        .unwrap();
        let access = config.access_with(|_| None).unwrap();
        let project = access.project("team-a").unwrap();
        assert_eq!(
            project.protected_secrets,
            BTreeSet::from(["deploy".to_string()])
        );
        assert!(project.is_protected("refs/tags/v2"));
        assert_eq!(
            project.images.as_deref(),
            Some(&["r.example:5000/team-a/".to_string()][..])
        );
        assert_eq!(
            project.builders,
            Some(BTreeSet::from([
                "podman".to_string(),
                "simulated".to_string()
            ]))
        );
        assert_eq!(
            project.repositories.as_deref(),
            Some(&["https://git.example/team-a/*".to_string()][..])
        );
    }

    #[test]
    fn webhook_rules_name_only_secrets_their_owner_may_use() {
        let rules = |project_rule: &str, server_rule: &str| {
            parse(&format!(
                "[secrets.npm]\nenv = 'PATH'\n[secrets.deploy]\nenv = 'PATH'\n\
                 [[webhook_rules]]\nrepository = 'https://h/*'\nsecrets = [{server_rule}]\n\
                 [projects.web]\nsecrets = ['npm']\n\
                 [[projects.web.webhook_rules]]\nrepository = 'https://h/web/*'\nsecrets = [{project_rule}]\n"
            ))
        };
        assert!(rules("'npm'", "'deploy'").is_ok());
        let err = rules("'deploy'", "").unwrap_err().to_string();
        assert!(
            err.contains("projects.web.webhook_rules[0].secrets: unknown secret \"deploy\"; project web may use: npm"),
            "{err}"
        );
        let err = rules("", "'nope'").unwrap_err().to_string();
        assert!(
            err.contains(
                "webhook_rules[0].secrets: unknown secret \"nope\"; [secrets] defines: deploy, npm"
            ),
            "{err}"
        );
    }

    #[test]
    fn quotas_and_webhooks_parse() {
        let config = parse(
            "[projects.web]\nmax_running = 4\nmax_queued = 50\n\
             [projects.web.webhooks]\ngithub = { env = 'WEB_HOOK_SECRET' }\n\
             [[projects.web.webhook_rules]]\nrepository = 'https://github.com/web/*'\n\
             [projects.data]\n",
        )
        .unwrap();
        let quotas = config.quotas();
        assert_eq!(quotas.max_running, BTreeMap::from([("web".to_string(), 4)]));
        assert_eq!(quotas.max_queued, BTreeMap::from([("web".to_string(), 50)]));
        let hooks = config.project_hooks();
        assert_eq!(hooks["web"].rules.len(), 1);
        assert!(hooks["data"].secrets.is_empty());
    }

    #[test]
    fn a_project_webhook_secret_that_cannot_be_read_names_its_field() {
        let config =
            parse("[projects.web.webhooks]\ngithub = { env = 'HELIX_TEST_UNSET_HOOK_SECRET' }")
                .unwrap();
        let err = config.webhooks().unwrap_err().to_string();
        assert!(err.contains("projects.web.webhooks.github"), "{err}");
    }

    /// The two-team example of "Projects and tokens" is a config, with
    /// each rule where it belongs.
    #[test]
    fn the_readme_two_team_example_is_a_config() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("### Projects and tokens").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let config = toml::from_str::<Config>(example).unwrap_or_else(|e| panic!("{e}"));
        let web = &config.projects["web"];
        assert_eq!(web.protected_secrets, ["web_deploy"]);
        assert_eq!(web.protected_refs, ["refs/heads/main", "refs/tags/v*"]);
        assert_eq!(
            web.images.as_deref(),
            Some(&["registry.internal:5000/web/".to_string()][..])
        );
        assert_eq!(
            web.builders.as_deref(),
            Some(&["podman".to_string(), "buildkit".to_string()][..])
        );
        assert!(web.registry_auth.is_some() && config.projects["data"].repositories.is_some());
        assert_eq!(config.quotas().max_queued["data"], 50);
        assert_eq!(config.project_hooks()["data"].rules.len(), 1);
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
