//! OIDC token exchange (`[oidc]`, and each project's `[[projects.NAME.oidc]]`
//! rules): parsed and checked here, turned into the
//! [`TokenExchange`] the API's `POST /v1/tokens/oidc` answers with and the
//! [`IssuedTokens`] key the API accepts its tokens by.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::projects::{ref_pattern_problem, token_scopes_named};
use super::{Config, ConfigError};
use crate::access::IssuedTokens;
use crate::oidc::{Issuer, Rule, TokenExchange};
use crate::secrets::SecretSource;

/// The identity providers whose ID tokens (JWTs) the server takes in
/// exchange for a short-lived token of a project, and the key those tokens
/// are signed with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The HMAC-SHA256 key of the tokens the server issues (at least 32
    /// bytes): hosts sharing a store need the same one, so a token one
    /// issued works on every other.
    pub token_key: SecretSource,
    /// How long an issued token works, in seconds (60 to 86,400); 3,600
    /// when absent.
    #[serde(default = "default_token_ttl_secs")]
    pub token_ttl_secs: u64,
    /// The issuers trusted, by a name of the operator's that rules use.
    pub issuers: BTreeMap<String, IssuerConfig>,
}

/// One trusted issuer of ID tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Its `iss`, e.g. `https://token.actions.githubusercontent.com` or
    /// `https://gitlab.example`: https, or http to a loopback address.
    pub url: String,
    /// The `aud` an ID token must carry to be taken here (what the CI job
    /// asks its token for), so a token minted for another service is not.
    pub audience: String,
    /// Where its signing keys (JWKS) are; when absent, the `jwks_uri` of
    /// its discovery document (`<url>/.well-known/openid-configuration`).
    pub jwks_url: Option<String>,
}

/// Which ID tokens become tokens of the project, and what those may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcRuleConfig {
    /// A name from `[oidc.issuers]`.
    pub issuer: String,
    /// Pattern (`*`: any run of characters) of the token's repository:
    /// its `repository` claim (GitHub, `owner/name`) or `project_path`
    /// (GitLab, `group/name`).
    pub repository: String,
    /// Full ref name patterns the token's ref must match (its `ref`, or
    /// GitLab's `ref_path`); every branch and tag when absent.
    #[serde(default = "every_ref")]
    pub refs: Vec<String>,
    /// The repository the issued token's jobs build: it submits this URL
    /// at the token's ref, nothing else.
    pub repo_url: String,
    /// Any of `jobs:submit`, `jobs:read`, `jobs:cancel`.
    pub scopes: Vec<String>,
}

fn default_token_ttl_secs() -> u64 {
    3600
}

fn every_ref() -> Vec<String> {
    vec!["refs/heads/*".into(), "refs/tags/*".into()]
}

/// Shortest `token_key`.
const MIN_KEY_LEN: usize = 32;
const TOKEN_TTL_SECS: std::ops::RangeInclusive<u64> = 60..=86_400;

impl Config {
    /// Checks `[oidc]` and every project's rules, without reading the key.
    pub(super) fn validate_oidc(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Some(oidc) = &self.oidc {
            if !TOKEN_TTL_SECS.contains(&oidc.token_ttl_secs) {
                return invalid(format!(
                    "oidc.token_ttl_secs: must be 60 to 86400 seconds, got {}",
                    oidc.token_ttl_secs
                ));
            }
            if oidc.issuers.is_empty() {
                return invalid("oidc.issuers: name at least one issuer".into());
            }
            for (name, issuer) in &oidc.issuers {
                let at = format!("oidc.issuers.{name}");
                for (field, url) in [
                    ("url", Some(&issuer.url)),
                    ("jwks_url", issuer.jwks_url.as_ref()),
                ] {
                    if let Some(url) = url
                        && let Err(why) = crate::oidc::check_issuer_url(url)
                    {
                        return invalid(format!("{at}.{field}: {why}"));
                    }
                }
                if issuer.audience.trim().is_empty() {
                    return invalid(format!(
                        "{at}.audience: name the `aud` ID tokens for this server carry"
                    ));
                }
            }
        }
        for (name, project) in &self.projects {
            for (i, rule) in project.oidc.iter().enumerate() {
                let at = format!("projects.{name}.oidc[{i}]");
                let Some(oidc) = &self.oidc else {
                    return invalid(format!(
                        "{at}: no issuer is trusted: add [oidc] with token_key and [oidc.issuers.NAME]"
                    ));
                };
                if !oidc.issuers.contains_key(&rule.issuer) {
                    let known: Vec<&str> = oidc.issuers.keys().map(String::as_str).collect();
                    return invalid(format!(
                        "{at}.issuer: unknown issuer \"{}\"; [oidc.issuers] names: {}",
                        rule.issuer,
                        known.join(", ")
                    ));
                }
                if rule.repository.trim().is_empty() {
                    return invalid(format!(
                        "{at}.repository: name the repository claim's pattern"
                    ));
                }
                if rule.refs.is_empty() {
                    return invalid(format!(
                        "{at}.refs: an empty list allows nothing; leave it out to allow every branch and tag"
                    ));
                }
                for (j, pattern) in rule.refs.iter().enumerate() {
                    if let Some(problem) = ref_pattern_problem(pattern) {
                        return invalid(format!("{at}.refs[{j}]: {problem}"));
                    }
                }
                if let Err(e) = crate::job::validate_repo_url(&rule.repo_url, self.allow_file_repos)
                {
                    return invalid(format!("{at}.repo_url: {}", e.message));
                }
                if token_scopes_named(&format!("{at}.scopes"), &rule.scopes)?.is_empty() {
                    return invalid(format!(
                        "{at}.scopes: name at least one of jobs:submit, jobs:read, jobs:cancel"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The key issued tokens are signed and checked with, read now; `None`
    /// without `[oidc]`.
    pub(super) fn issued_tokens(
        &self,
        host_env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<IssuedTokens>, ConfigError> {
        let Some(oidc) = &self.oidc else {
            return Ok(None);
        };
        let key = oidc
            .token_key
            .read("oidc.token_key", host_env)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let key = key.trim_end_matches(['\n', '\r']);
        if key.len() < MIN_KEY_LEN {
            return Err(ConfigError::Invalid(format!(
                "oidc.token_key: must be at least {MIN_KEY_LEN} bytes (e.g. `openssl rand -hex 32`)"
            )));
        }
        Ok(Some(IssuedTokens::new(key.as_bytes())))
    }

    /// The token exchange: the issuers and every project's rules; `None`
    /// without `[oidc]`.
    pub fn token_exchange(&self) -> Result<Option<TokenExchange>, ConfigError> {
        let Some(oidc) = &self.oidc else {
            return Ok(None);
        };
        let issuers = oidc
            .issuers
            .iter()
            .map(|(name, issuer)| {
                let issuer = Issuer {
                    name: name.clone(),
                    url: issuer.url.clone(),
                    audience: issuer.audience.clone(),
                    jwks_url: issuer.jwks_url.clone(),
                };
                (name.clone(), issuer)
            })
            .collect();
        let mut rules = Vec::new();
        for (name, project) in &self.projects {
            for (i, rule) in project.oidc.iter().enumerate() {
                let scopes: BTreeSet<_> =
                    token_scopes_named(&format!("projects.{name}.oidc[{i}].scopes"), &rule.scopes)?;
                rules.push(Rule {
                    project: name.clone(),
                    issuer: rule.issuer.clone(),
                    repository: rule.repository.clone(),
                    refs: rule.refs.clone(),
                    repo_url: rule.repo_url.clone(),
                    scopes,
                });
            }
        }
        Ok(Some(TokenExchange::new(
            issuers,
            rules,
            Duration::from_secs(oidc.token_ttl_secs),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;

    const ISSUER: &str = "[oidc]\ntoken_key = { env = 'PATH' }\n\
         [oidc.issuers.github]\nurl = 'https://token.actions.githubusercontent.com'\naudience = 'helix'\n";

    #[test]
    fn rules_name_a_trusted_issuer_full_ref_patterns_and_scopes() {
        let rule = |body: &str| {
            parse(&format!(
                "{ISSUER}[projects.web]\n[[projects.web.oidc]]\n{body}"
            ))
        };
        let config = rule(
            "issuer = 'github'\nrepository = 'org/web'\nrepo_url = 'https://github.com/org/web.git'\nscopes = ['jobs:submit']\n",
        )
        .unwrap();
        assert_eq!(
            config.projects["web"].oidc[0].refs,
            ["refs/heads/*", "refs/tags/*"]
        );
        for (body, says) in [
            (
                "issuer = 'gitlab'\nrepository = 'x'\nrepo_url = 'https://h/x.git'\nscopes = ['jobs:read']\n",
                "projects.web.oidc[0].issuer: unknown issuer \"gitlab\"; [oidc.issuers] names: github",
            ),
            (
                "issuer = 'github'\nrepository = 'x'\nrefs = ['main']\nrepo_url = 'https://h/x.git'\nscopes = ['jobs:read']\n",
                "projects.web.oidc[0].refs[0]: \"main\" must be a full ref name pattern",
            ),
            (
                "issuer = 'github'\nrepository = 'x'\nrepo_url = 'https://h/x.git'\nscopes = ['admin']\n",
                "projects.web.oidc[0].scopes: unknown scope \"admin\"",
            ),
            (
                "issuer = 'github'\nrepository = 'x'\nrepo_url = 'https://h/x.git'\nscopes = []\n",
                "projects.web.oidc[0].scopes: name at least one",
            ),
        ] {
            let err = rule(body).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        let err = parse(
            "[projects.web]\n[[projects.web.oidc]]\nissuer = 'github'\nrepository = 'x'\nrepo_url = 'https://h/x.git'\nscopes = ['jobs:read']\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no issuer is trusted: add [oidc]"), "{err}");
    }

    #[test]
    fn issuers_are_https_or_loopback_http() {
        for (url, ok) in [
            ("https://gitlab.example", true),
            ("http://127.0.0.1:8099", true),
            ("http://[::1]:8099/issuer", true),
            ("http://gitlab.example", false),
            ("ftp://gitlab.example", false),
            ("https://user:pw@gitlab.example", false),
        ] {
            let parsed = parse(&format!(
                "[oidc]\ntoken_key = {{ env = 'PATH' }}\n[oidc.issuers.x]\nurl = '{url}'\naudience = 'helix'\n"
            ));
            assert_eq!(parsed.is_ok(), ok, "{url}: {parsed:?}");
        }
    }
}
