//! Outgoing notifications: when a job ends, POST it to each configured
//! URL, signed, until each has taken it.
//!
//! The store owes a notification for every job that ends, in the same
//! transaction as the end itself (see [`OwedNotification`]), so a job's
//! end and the notification about it are durable together: one owed when
//! the server is killed is sent after it restarts (or by another host
//! sharing the database). This module only says how to send one; the
//! service's background task decides when.
//!
//! Each request carries the job as JSON (what `GET /v1/jobs/{id}` gives)
//! and the headers:
//! - `X-Helix-Event: job.<state>`;
//! - `X-Helix-Delivery`: an id that is the same on every retry of the same
//!   job to the same URL, so a receiver can drop repeats (delivery is at
//!   least once);
//! - `X-Helix-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, keyed
//!   with the target's secret, as GitHub signs its webhooks.
//!
//! A target that does not answer 2xx is tried again with backoff, the
//! targets already told are not told twice, and a notification still
//! undelivered [`GIVE_UP_AFTER`] after the job ended is dropped with a
//! warning in the server's log.

use std::time::Duration;

use hmac::{Hmac, Mac as _};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::backoff::Backoff;
use crate::job::State;
use crate::secrets::SecretSource;
use crate::store::OwedNotification;

/// One `[[notifications]]` entry of the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// Where ended jobs are POSTed (`http://` or `https://`).
    pub url: String,
    /// The key of the `X-Helix-Signature-256` HMAC.
    pub secret: SecretSource,
    /// Only jobs that end in one of these states; every end state when
    /// absent.
    #[serde(default)]
    pub states: Option<Vec<State>>,
}

/// The waits between tries of one notification.
pub const RETRY: Backoff = Backoff {
    first: Duration::from_secs(5),
    max: Duration::from_secs(600),
};

/// A notification not delivered this long after its job ended is dropped.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The configured targets, their secrets read, ready to send.
#[derive(Debug, Clone, Default)]
pub struct Notifications {
    targets: Vec<Target>,
    client: reqwest::Client,
}

#[derive(Debug, Clone)]
struct Target {
    url: reqwest::Url,
    secret: String,
    /// `None`: every end state.
    states: Option<Vec<State>>,
}

/// What one delivery of an owed notification achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Every target told so far, earlier deliveries' included.
    pub delivered: Vec<String>,
    /// When the rest are tried again; `None` when nothing is left to do.
    pub retry_in: Option<Duration>,
}

impl Notifications {
    /// Checks `targets` and reads their secrets (variables through
    /// `host_env`); the error names the entry at fault.
    pub fn load(
        targets: &[NotifyTarget],
        host_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let targets = targets
            .iter()
            .enumerate()
            .map(|(n, target)| {
                let at = format!("notifications[{n}]");
                let url = reqwest::Url::parse(&target.url)
                    .map_err(|e| format!("{at}.url: '{}' is not a URL: {e}", target.url))?;
                if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                    return Err(format!(
                        "{at}.url: '{}' is not an http:// or https:// URL",
                        target.url
                    ));
                }
                if let Some(state) = target.states.iter().flatten().find(|s| !s.is_terminal()) {
                    return Err(format!(
                        "{at}.states: '{}' is not a state a job ends in; use succeeded, failed, \
                         cancelled, timed_out or expired",
                        state.as_str()
                    ));
                }
                Ok(Target {
                    url,
                    secret: target
                        .secret
                        .read(&format!("{at}.secret"), &host_env)
                        .map_err(|e| e.to_string())?,
                    states: target.states.clone(),
                })
            })
            .collect::<Result<_, String>>()?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("helix-build/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("notifications: cannot make an HTTP client: {e}"))?;
        Ok(Notifications { targets, client })
    }

    /// Whether any target is configured.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Sends `owed` to every target that wants it and has not taken it
    /// yet, at once; says who has it now and when to try the rest.
    pub async fn deliver(&self, owed: &OwedNotification) -> Delivery {
        let job = &owed.job;
        let wanting: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| t.states.as_ref().is_none_or(|s| s.contains(&job.state)))
            .collect();
        let body = match serde_json::to_vec(job) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(job = %job.id, "notification dropped: the job is unwritable: {e}");
                return Delivery {
                    delivered: owed.delivered.clone(),
                    retry_in: None,
                };
            }
        };
        let pending = wanting
            .iter()
            .filter(|t| !owed.delivered.iter().any(|d| d == t.url.as_str()));
        let sends = pending.map(|target| async {
            let sent = self.send(target, job.id.as_str(), job.state, &body).await;
            if let Err(e) = &sent {
                tracing::warn!(
                    job = %job.id,
                    attempt = owed.attempts,
                    "notification to {} failed: {e}",
                    target.url
                );
            }
            sent.ok().map(|()| target.url.to_string())
        });
        let mut delivered = owed.delivered.clone();
        delivered.extend(
            futures_util::future::join_all(sends)
                .await
                .into_iter()
                .flatten(),
        );
        let missing = wanting
            .iter()
            .filter(|t| !delivered.iter().any(|d| d == t.url.as_str()))
            .count();
        let ended = job.completed_at.unwrap_or(job.created_at);
        let age = (chrono::Utc::now() - ended).to_std().unwrap_or_default();
        let retry_in = match missing {
            0 => None,
            _ if age >= GIVE_UP_AFTER => {
                tracing::warn!(
                    job = %job.id,
                    "notification dropped: {missing} target(s) still refused it {}h after the \
                     job ended",
                    GIVE_UP_AFTER.as_secs() / 3600
                );
                None
            }
            _ => Some(RETRY.delay(owed.attempts)),
        };
        Delivery {
            delivered,
            retry_in,
        }
    }

    /// One POST of `body` (job `id`, ended `state`) to `target`.
    async fn send(
        &self,
        target: &Target,
        id: &str,
        state: State,
        body: &[u8],
    ) -> Result<(), String> {
        let response = self
            .client
            .post(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Helix-Event", format!("job.{}", state.as_str()))
            .header("X-Helix-Delivery", delivery_id(id, target.url.as_str()))
            .header("X-Helix-Signature-256", signature(&target.secret, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("{e}"))?;
        let status = response.status();
        match status.is_success() {
            true => Ok(()),
            false => Err(format!("the receiver answered {status}")),
        }
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delivery id of job `id`'s notification to `url`: a UUID-shaped
/// digest of both, so every retry of it carries the same one.
fn delivery_id(id: &str, url: &str) -> String {
    let digest = Sha256::new()
        .chain_update(id)
        .chain_update([0])
        .chain_update(url)
        .finalize();
    let bytes: [u8; 16] = digest[..16].try_into().expect("a SHA-256 has 32 bytes");
    uuid::Uuid::from_bytes(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, states: Option<Vec<State>>) -> NotifyTarget {
        NotifyTarget {
            url: url.into(),
            secret: SecretSource {
                env: Some("NOTIFY_SECRET".into()),
                file: None,
            },
            states,
        }
    }

    fn env(var: &str) -> Option<String> {
        (var == "NOTIFY_SECRET").then(|| "s3cret".to_string())
    }

    #[test]
    fn targets_are_checked_by_entry() {
        let good = Notifications::load(&[target("https://ci.example/helix", None)], env).unwrap();
        assert!(!good.is_empty());
        let err = Notifications::load(
            &[
                target("https://ok.example/", None),
                target("ftp://x/", None),
            ],
            env,
        )
        .unwrap_err();
        assert!(err.starts_with("notifications[1].url:"), "{err}");
        let err = Notifications::load(&[target("not a url", None)], env).unwrap_err();
        assert!(err.contains("is not a URL"), "{err}");
        let err = Notifications::load(&[target("http://x/", Some(vec![State::Running]))], env)
            .unwrap_err();
        assert!(
            err.contains("'running' is not a state a job ends in"),
            "{err}"
        );
        let err = Notifications::load(&[target("http://x/", None)], |_| None).unwrap_err();
        assert!(
            err.contains("notifications[0].secret: environment variable NOTIFY_SECRET"),
            "{err}"
        );
    }

    #[test]
    fn the_signature_is_githubs_scheme() {
        // RFC 4231 test case 2 (key "Jefe").
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_delivery_id_is_stable_per_job_and_url() {
        let id = delivery_id("job-1", "http://a/");
        assert_eq!(id, delivery_id("job-1", "http://a/"));
        assert_ne!(id, delivery_id("job-1", "http://b/"));
        assert_ne!(id, delivery_id("job-2", "http://a/"));
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }
}
