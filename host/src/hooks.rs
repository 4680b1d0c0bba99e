//! Incoming git webhooks: which forge sent a push, whether its signature
//! holds, and which job — if any — the operator's rules make of it.
//!
//! Each forge signs differently, and each check is constant-time:
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`;
//! - Gitea and Forgejo: `X-Gitea-Signature` / `X-Forgejo-Signature`, the
//!   bare hex HMAC-SHA256 of the body;
//! - GitLab: `X-Gitlab-Token`, the secret itself.
//!
//! A delivery's id (`X-GitHub-Delivery`, `X-Gitea-Delivery`,
//! `X-Forgejo-Delivery`, `X-Gitlab-Event-UUID`) becomes the job's id, so
//! a replayed delivery is a duplicate the store refuses, on every host.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::job::JobRequest;
use crate::secrets::{BuildSecrets, SecretSource};

/// The forges a hook can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    /// Gitea, and Forgejo (which sends the same payload and either set of
    /// headers).
    Gitea,
    GitLab,
}

impl Forge {
    /// The forge of route `/v1/hooks/<name>`.
    pub fn from_route(name: &str) -> Option<Self> {
        match name {
            "github" => Some(Forge::GitHub),
            "gitea" | "forgejo" => Some(Forge::Gitea),
            "gitlab" => Some(Forge::GitLab),
            _ => None,
        }
    }

    /// Its name in the config (`[webhooks] github = …`) and in job ids.
    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::GitLab => "gitlab",
        }
    }
}

/// Turns a push into a job: the first rule whose `repository` and one of
/// whose `refs` match (`*` matches any run of characters).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookRule {
    /// The repository's clone URL, e.g. `https://git.example/team/*`.
    pub repository: String,
    /// Full ref names, e.g. `refs/heads/main`, `refs/tags/v*`.
    #[serde(default = "every_branch")]
    pub refs: Vec<String>,
    pub builder: Option<String>,
    pub image: Option<String>,
    pub dockerfile_path: Option<String>,
    #[serde(default)]
    pub platforms: Vec<String>,
    /// The jobs' concurrency group; default: the repository and the ref's
    /// short name (`<url>:main`).
    pub group: Option<String>,
    /// Whether a push cancels the group's earlier builds (default: yes).
    #[serde(default = "yes")]
    pub cancel_in_progress: bool,
    pub priority: Option<i32>,
}

fn every_branch() -> Vec<String> {
    vec!["refs/heads/*".into()]
}

fn yes() -> bool {
    true
}

/// The webhook settings: a secret per forge, and the rules.
#[derive(Debug, Default)]
pub struct Webhooks {
    secrets: BuildSecrets,
    rules: Vec<HookRule>,
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("{0}")]
    NotConfigured(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadRequest(String),
}

/// What a verified delivery asks for.
#[derive(Debug, Clone)]
pub enum Hooked {
    /// A build.
    Job(Box<JobRequest>),
    /// Nothing: why not.
    Ignored(String),
}

/// The part of a push payload a job is made from; the three forges name
/// these fields alike, except for GitLab's repository URL.
#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    repository: Repository,
}

#[derive(Deserialize)]
struct Repository {
    clone_url: Option<String>,
    git_http_url: Option<String>,
}

impl Webhooks {
    /// Reads each forge's secret (`[webhooks] github = { env = … }`).
    pub fn load(
        secrets: &BTreeMap<String, SecretSource>,
        rules: Vec<HookRule>,
        host_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        if let Some(name) = secrets.keys().find(|n| Forge::from_route(n).is_none()) {
            return Err(format!(
                "webhooks.{name}: no such forge; use github, gitea, forgejo or gitlab"
            ));
        }
        let secrets = BuildSecrets::load(secrets, host_env)
            .map_err(|e| e.to_string().replacen("secrets.", "webhooks.", 1))?;
        Ok(Webhooks { secrets, rules })
    }

    /// Checks a delivery from `forge` and says what it asks for.
    pub fn receive(
        &self,
        forge: Forge,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Hooked, HookError> {
        let secret = self
            .secrets
            .value(forge.name())
            .or_else(|| {
                (forge == Forge::Gitea)
                    .then(|| self.secrets.value("forgejo"))
                    .flatten()
            })
            .ok_or_else(|| {
                HookError::NotConfigured(format!(
                    "no {} webhook here: the server configures no secret for it ([webhooks] {})",
                    forge.name(),
                    forge.name()
                ))
            })?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        verify(forge, secret.as_bytes(), &header, body)?;
        let delivery = match forge {
            Forge::GitHub => header("x-github-delivery"),
            Forge::Gitea => header("x-gitea-delivery").or(header("x-forgejo-delivery")),
            Forge::GitLab => header("x-gitlab-event-uuid"),
        }
        .ok_or_else(|| HookError::BadRequest("the delivery has no delivery id header".into()))?;
        let event = match forge {
            Forge::GitHub => header("x-github-event"),
            Forge::Gitea => header("x-gitea-event").or(header("x-forgejo-event")),
            Forge::GitLab => header("x-gitlab-event"),
        }
        .unwrap_or_default();
        if !matches!(event, "push" | "Push Hook" | "Tag Push Hook") {
            return Ok(Hooked::Ignored(format!("a {event:?} event builds nothing")));
        }
        let push: Push = serde_json::from_slice(body)
            .map_err(|e| HookError::BadRequest(format!("not a push payload: {e}")))?;
        let url = push
            .repository
            .clone_url
            .or(push.repository.git_http_url)
            .ok_or_else(|| HookError::BadRequest("the push names no repository URL".into()))?;
        if push.after.bytes().all(|b| b == b'0') {
            return Ok(Hooked::Ignored(format!("{} was deleted", push.git_ref)));
        }
        let Some(rule) = self.rules.iter().find(|rule| {
            glob(&rule.repository, &url) && rule.refs.iter().any(|r| glob(r, &push.git_ref))
        }) else {
            return Ok(Hooked::Ignored(format!(
                "no rule builds {} of {url}",
                push.git_ref
            )));
        };
        let short = push
            .git_ref
            .strip_prefix("refs/heads/")
            .or(push.git_ref.strip_prefix("refs/tags/"))
            .unwrap_or(&push.git_ref);
        Ok(Hooked::Job(Box::new(JobRequest {
            id: Some(job_id(forge, delivery)),
            repo_url: url.clone(),
            git_ref: Some(push.after),
            dockerfile_path: rule.dockerfile_path.clone(),
            platforms: rule.platforms.clone(),
            builder: rule.builder.clone(),
            image: rule.image.clone(),
            group: Some(
                rule.group
                    .clone()
                    .unwrap_or_else(|| format!("{url}:{short}")),
            ),
            cancel_in_progress: rule.cancel_in_progress,
            priority: rule.priority,
            ..JobRequest::default()
        })))
    }
}

/// Checks the forge's signature of `body` with `secret`, in constant time.
fn verify<'a>(
    forge: Forge,
    secret: &[u8],
    header: &impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> Result<(), HookError> {
    let missing = |name: &str| {
        HookError::Unauthorized(format!("the delivery is not signed: no {name} header"))
    };
    let wrong = || {
        HookError::Unauthorized(
            "the delivery's signature does not match this server's secret".into(),
        )
    };
    match forge {
        Forge::GitLab => {
            let token = header("x-gitlab-token").ok_or_else(|| missing("X-Gitlab-Token"))?;
            crate::secrets::matches_digest(token.as_bytes(), &Sha256::digest(secret))
                .then_some(())
                .ok_or_else(wrong)
        }
        Forge::GitHub | Forge::Gitea => {
            let hex_signature = match forge {
                Forge::GitHub => header("x-hub-signature-256")
                    .ok_or_else(|| missing("X-Hub-Signature-256"))?
                    .strip_prefix("sha256=")
                    .ok_or_else(wrong)?,
                _ => header("x-gitea-signature")
                    .or(header("x-forgejo-signature"))
                    .ok_or_else(|| missing("X-Gitea-Signature"))?,
            };
            let signature = hex::decode(hex_signature).map_err(|_| wrong())?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| wrong())?;
            mac.update(body);
            mac.verify_slice(&signature).map_err(|_| wrong())
        }
    }
}

/// The job id of a delivery: `hook-<forge>-<delivery id>`, with anything
/// a job id cannot hold replaced, so the same delivery always gives the
/// same id.
fn job_id(forge: Forge, delivery: &str) -> String {
    let clean: String = delivery
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    format!("hook-{}-{clean}", forge.name())
}

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters (none included) and everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|at| tail.is_char_boundary(*at))
                .any(|at| glob(rest, &tail[at..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("refs/heads/*", "refs/heads/main"));
        assert!(glob("refs/heads/*", "refs/heads/"));
        assert!(glob(
            "https://git.example/team/*",
            "https://git.example/team/app.git"
        ));
        assert!(glob("refs/tags/v*.*", "refs/tags/v1.2"));
        assert!(!glob("refs/tags/v*.*", "refs/tags/v12"));
        assert!(!glob("refs/heads/main", "refs/heads/main2"));
        assert!(glob("*", ""));
    }

    #[test]
    fn a_delivery_id_always_gives_the_same_valid_job_id() {
        let id = job_id(Forge::GitHub, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert_eq!(id, "hook-github-72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert!(crate::job::JobId::parse(&job_id(Forge::GitLab, "a b/../c")).is_ok());
    }
}
