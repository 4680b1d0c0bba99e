//! Incoming git webhooks: which forge sent a push, whether its signature
//! holds, and which job — if any — the operator's rules make of it.
//!
//! Each forge signs differently, and each check is constant-time:
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`;
//! - Gitea and Forgejo: `X-Gitea-Signature` / `X-Forgejo-Signature`, the
//!   bare hex HMAC-SHA256 of the body;
//! - GitLab: `X-Gitlab-Token`, the secret itself.
//!
//! Hooks are the server's (`[webhooks]`, jobs of no project, at
//! `/v1/hooks/<forge>`) or a project's (`[projects.NAME.webhooks]`, its
//! jobs, at `/v1/hooks/<forge>/<project>`), each with its own secrets and
//! rules.
//!
//! A push's job id is made from what it builds — the forge, the project,
//! the repository, the ref and the commit — so any delivery of one push
//! (a forge's redelivery under the same delivery id, or a captured body
//! replayed under a new one) is a duplicate the store refuses, on every
//! host, and never supersedes the job the first delivery made.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::job::JobRequest;
use crate::secrets::{BuildSecrets, SecretSource};
use helix_core::pattern::glob;

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
    /// Build secrets its jobs name, as a submission's `secrets`: of
    /// `[secrets]` for the server's rules, of the project's `secrets` or
    /// `protected_secrets` for a project's (a protected one only for
    /// pushes to its protected refs; another push is refused naming it).
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// Checks that every secret `rules` (the list at `at`) name is one `usable`
/// (listed for the error as `from`) holds.
pub fn check_rule_secrets(
    at: &str,
    rules: &[HookRule],
    usable: &std::collections::BTreeSet<&str>,
    from: &str,
) -> Result<(), String> {
    for (i, rule) in rules.iter().enumerate() {
        if let Some(unknown) = rule.secrets.iter().find(|s| !usable.contains(s.as_str())) {
            let known: Vec<&str> = usable.iter().copied().collect();
            return Err(format!(
                "{at}[{i}].secrets: unknown secret \"{unknown}\"; {from}: {}",
                match known.is_empty() {
                    true => "none".to_string(),
                    false => known.join(", "),
                }
            ));
        }
    }
    Ok(())
}

fn every_branch() -> Vec<String> {
    vec!["refs/heads/*".into()]
}

fn yes() -> bool {
    true
}

/// One owner's hooks as configured: a secret per forge (not read yet),
/// and the rules.
#[derive(Debug, Clone)]
pub struct HookConfig<'a> {
    pub secrets: &'a BTreeMap<String, SecretSource>,
    pub rules: Vec<HookRule>,
}

/// One owner's hooks: a secret per forge, and the rules.
#[derive(Debug, Default)]
struct Hooks {
    secrets: BuildSecrets,
    rules: Vec<HookRule>,
}

/// The webhook settings: the server's hooks and each project's.
#[derive(Debug, Default)]
pub struct Webhooks {
    server: Hooks,
    projects: BTreeMap<String, Hooks>,
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
    /// GitLab's commit of a tag push, whose `after` is the tag object.
    checkout_sha: Option<String>,
    repository: Repository,
}

#[derive(Deserialize)]
struct Repository {
    clone_url: Option<String>,
    git_http_url: Option<String>,
}

/// Checks that every name of `secrets` (the table at `at`) is a forge's.
pub fn check_forges(at: &str, secrets: &BTreeMap<String, SecretSource>) -> Result<(), String> {
    match secrets.keys().find(|n| Forge::from_route(n).is_none()) {
        Some(name) => Err(format!(
            "{at}.{name}: no such forge; use github, gitea, forgejo or gitlab"
        )),
        None => Ok(()),
    }
}

impl Hooks {
    /// Reads each forge's secret of `config`; errors name fields under
    /// `at` (`webhooks`, `projects.NAME.webhooks`).
    fn load(
        at: &str,
        config: HookConfig<'_>,
        host_env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        check_forges(at, config.secrets)?;
        let secrets = BuildSecrets::load(config.secrets, host_env)
            .map_err(|e| e.to_string().replacen("secrets", at, 1))?;
        Ok(Hooks {
            secrets,
            rules: config.rules,
        })
    }

    /// The secret for `forge`, if these hooks have one.
    fn secret(&self, forge: Forge) -> Option<&str> {
        self.secrets.value(forge.name()).or_else(|| {
            (forge == Forge::Gitea)
                .then(|| self.secrets.value("forgejo"))
                .flatten()
        })
    }
}

impl Webhooks {
    /// Reads each forge's secret of the server's hooks and of each
    /// project's.
    pub fn load(
        server: HookConfig<'_>,
        projects: BTreeMap<String, HookConfig<'_>>,
        host_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let server = Hooks::load("webhooks", server, &host_env)?;
        let projects = projects
            .into_iter()
            .map(|(name, config)| {
                let hooks = Hooks::load(&format!("projects.{name}.webhooks"), config, &host_env)?;
                Ok((name, hooks))
            })
            .collect::<Result<_, String>>()?;
        Ok(Webhooks { server, projects })
    }

    /// Checks a delivery from `forge` to the hook of `project` (`None`:
    /// the server's) and says what it asks for.
    pub fn receive(
        &self,
        forge: Forge,
        project: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Hooked, HookError> {
        let hooks = match project {
            None => Some(&self.server),
            Some(name) => self.projects.get(name),
        };
        let secret = hooks.and_then(|h| h.secret(forge)).ok_or_else(|| {
            HookError::NotConfigured(match project {
                None => format!(
                    "no {} webhook here: the server configures no secret for it ([webhooks] {})",
                    forge.name(),
                    forge.name()
                ),
                Some(name) => format!(
                    "no {} webhook for project {name:?} here ([projects.{name}.webhooks] {})",
                    forge.name(),
                    forge.name()
                ),
            })
        })?;
        let rules = hooks.map(|h| h.rules.as_slice()).unwrap_or_default();
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
        let Some(rule) = rules.iter().find(|rule| {
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
        let group = rule
            .group
            .clone()
            .unwrap_or_else(|| format!("{url}:{short}"));
        let id = job_id(forge, project, &url, &push.git_ref, &push.after);
        tracing::info!(forge = forge.name(), delivery, job = %id, "webhook push");
        // The commit pushed, named with its ref: checked to be on the ref
        // when it is checked out, so a push to a protected ref is a job
        // of that protected ref.
        Ok(Hooked::Job(Box::new(JobRequest {
            id: Some(id),
            repo_url: url.clone(),
            commit: Some(push.checkout_sha.unwrap_or(push.after)),
            git_ref: Some(push.git_ref),
            dockerfile_path: rule.dockerfile_path.clone(),
            platforms: rule.platforms.clone(),
            builder: rule.builder.clone(),
            image: rule.image.clone(),
            group: Some(group),
            cancel_in_progress: rule.cancel_in_progress,
            priority: rule.priority,
            secrets: rule.secrets.clone(),
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

/// The job id of a push: `hook-<forge>-` and 32 hex digits of the
/// SHA-256 of the project, repository, ref and commit, so every delivery
/// of the same push gives the same id.
fn job_id(forge: Forge, project: Option<&str>, url: &str, git_ref: &str, commit: &str) -> String {
    let mut digest = Sha256::new();
    for part in [project.unwrap_or_default(), url, git_ref, commit] {
        // Length-prefixed, so no two pushes' parts run together alike.
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    let digest = hex::encode(digest.finalize());
    format!("hook-{}-{}", forge.name(), &digest[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_always_gives_the_same_valid_job_id_and_another_push_another() {
        let url = "https://git.example/team/app.git";
        let commit = "4f5c8d0e3a2b1c9d8e7f6a5b4c3d2e1f0a9b8c7d";
        let id = job_id(Forge::GitHub, Some("web"), url, "refs/heads/main", commit);
        assert!(id.starts_with("hook-github-") && id.len() == "hook-github-".len() + 32);
        assert!(crate::job::JobId::parse(&id).is_ok());
        assert_eq!(
            id,
            job_id(Forge::GitHub, Some("web"), url, "refs/heads/main", commit)
        );
        for other in [
            job_id(Forge::Gitea, Some("web"), url, "refs/heads/main", commit),
            job_id(Forge::GitHub, Some("data"), url, "refs/heads/main", commit),
            job_id(Forge::GitHub, None, url, "refs/heads/main", commit),
            job_id(Forge::GitHub, Some("web"), url, "refs/heads/dev", commit),
            job_id(Forge::GitHub, Some("web"), url, "refs/heads/main", "0123"),
        ] {
            assert_ne!(id, other);
        }
    }
}
