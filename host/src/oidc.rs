//! OIDC token exchange: a CI system's ID token (a JWT, as GitHub Actions
//! and GitLab CI give each job) becomes a short-lived token of the project
//! whose rule it matches, bound to the token's repository and ref
//! (`POST /v1/tokens/oidc`), so a pipeline needs no long-lived Helix token.
//!
//! An ID token is taken only when it is signed by a key of a trusted
//! issuer (`[oidc.issuers]`: RS256/384/512 or ES256/384 from the issuer's
//! JWKS, never an HMAC and never `none`), is for this server (`aud`), is
//! within its `exp`/`nbf` (a minute of clock skew allowed) and names a
//! repository and ref one project's rule matches. The JWKS is fetched
//! from the issuer's discovery document (or `jwks_url`), kept ten
//! minutes, and fetched again at most every 30 s when a token names a key
//! it lacks (a rotation).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::access::{Access, Binding, Scope};
use helix_core::pattern::glob;

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// Its name in `[oidc.issuers]`.
    pub name: String,
    /// Its `iss`.
    pub url: String,
    pub audience: String,
    pub jwks_url: Option<String>,
}

/// One project's rule: which ID tokens become its tokens.
#[derive(Debug, Clone)]
pub struct Rule {
    pub project: String,
    pub issuer: String,
    /// Pattern of the `repository` (or `project_path`) claim.
    pub repository: String,
    /// Patterns of the full ref.
    pub refs: Vec<String>,
    pub repo_url: String,
    pub scopes: BTreeSet<Scope>,
}

/// The exchange: issuers, rules, and the issuers' keys as last fetched.
#[derive(Debug)]
pub struct TokenExchange {
    issuers: BTreeMap<String, Issuer>,
    rules: Vec<Rule>,
    ttl: Duration,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<HashMap<String, Fetched>>,
}

/// An issuer's keys and when they were fetched.
#[derive(Debug)]
struct Fetched {
    keys: JwkSet,
    at: Instant,
}

/// How long an issuer's keys are used before they are fetched again.
const KEYS_FRESH_FOR: Duration = Duration::from_secs(600);
/// Least time between two fetches of an issuer's keys.
const KEYS_REFETCH_AFTER: Duration = Duration::from_secs(30);
/// Clock skew allowed on `exp`, `nbf`.
const LEEWAY_SECS: u64 = 60;
/// Largest ID token taken (GitHub's are about 1.5 KiB).
const MAX_ID_TOKEN: usize = 16 * 1024;
/// Asymmetric algorithms only: with an HMAC one, an issuer's public key
/// would be the secret.
const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Why an exchange was refused; each says whose fault.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Not an ID token at all (400).
    #[error("{0}")]
    Malformed(String),
    /// An ID token this server does not take: unknown issuer, bad
    /// signature, wrong audience, expired (401).
    #[error("{0}")]
    Invalid(String),
    /// A valid ID token no project's rule takes (403).
    #[error("{0}")]
    NoRule(String),
    /// The issuer's keys could not be fetched (503).
    #[error("{0}")]
    IssuerUnreachable(String),
}

/// What an exchange gives: the token and what it allows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Issued {
    /// The bearer token (`hxo_…`).
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub project: String,
    pub scopes: Vec<String>,
    /// The only repository its jobs may build.
    pub repo_url: String,
    /// The only ref its jobs may build (a commit pinned on it may be).
    #[serde(rename = "ref")]
    pub git_ref: String,
}

/// The claims read of an ID token, beyond those the validation checks.
/// GitHub names the repository `repository` and the ref `ref` in full;
/// GitLab names them `project_path` and `ref` (short, with `ref_type`)
/// or `ref_path` (full).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    repository: Option<String>,
    project_path: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    ref_path: Option<String>,
    ref_type: Option<String>,
}

impl Claims {
    fn repository(&self) -> Option<&str> {
        self.repository.as_deref().or(self.project_path.as_deref())
    }

    /// The ref in full.
    fn full_ref(&self) -> Option<String> {
        if let Some(path) = &self.ref_path {
            return Some(path.clone());
        }
        let git_ref = self.git_ref.as_deref()?;
        if git_ref.starts_with("refs/") {
            return Some(git_ref.to_string());
        }
        match self.ref_type.as_deref() {
            Some("branch") => Some(format!("refs/heads/{git_ref}")),
            Some("tag") => Some(format!("refs/tags/{git_ref}")),
            _ => None,
        }
    }
}

/// Checks an issuer's or JWKS URL: https, or http to a loopback address;
/// no credentials.
pub fn check_issuer_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{text:?} must not hold credentials"));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{text:?} must be an https URL (http only to a loopback address)"
        )),
    }
}

impl TokenExchange {
    pub fn new(issuers: BTreeMap<String, Issuer>, rules: Vec<Rule>, ttl: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // An issuer's redirect is not followed to where it likes.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client with a timeout builds");
        TokenExchange {
            issuers,
            rules,
            ttl,
            http,
            keys: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A token for `id_token`, issued with `access`'s key at `now`.
    pub async fn exchange(
        &self,
        id_token: &str,
        access: &Access,
        now: DateTime<Utc>,
    ) -> Result<Issued, ExchangeError> {
        let issued = access.issued().ok_or_else(|| {
            ExchangeError::IssuerUnreachable("this server issues no tokens".into())
        })?;
        if id_token.len() > MAX_ID_TOKEN {
            return Err(ExchangeError::Malformed(format!(
                "id_token: an ID token is at most {MAX_ID_TOKEN} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|e| ExchangeError::Malformed(format!("id_token: not a signed JWT ({e})")))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(ExchangeError::Invalid(format!(
                "the ID token is signed with {:?}; taken: RS256, RS384, RS512, ES256, ES384",
                header.alg
            )));
        }
        // Which issuer's keys to check it with, by its word, unverified:
        // the signature then decides.
        let said = unverified_issuer(id_token)?;
        let issuer = self
            .issuers
            .values()
            .find(|issuer| issuer.url == said)
            .ok_or_else(|| {
                ExchangeError::Invalid(format!("issuer {said:?} is not trusted by this server"))
            })?;
        let key = self.key(issuer, header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&issuer.url]);
        validation.set_audience(&[&issuer.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<Claims>(id_token, &key, &validation)
            .map_err(|e| ExchangeError::Invalid(format!("the ID token is not valid here: {e}")))?
            .claims;
        let (Some(repository), Some(git_ref)) = (claims.repository(), claims.full_ref()) else {
            return Err(ExchangeError::NoRule(
                "the ID token names no repository (`repository` or `project_path`) or no ref (`ref`, `ref_path`)".into(),
            ));
        };
        let rule = self
            .rules
            .iter()
            .find(|rule| {
                rule.issuer == issuer.name
                    && glob(&rule.repository, repository)
                    && rule.refs.iter().any(|r| glob(r, &git_ref))
            })
            .ok_or_else(|| {
                ExchangeError::NoRule(format!(
                    "no project's oidc rule takes repository {repository:?} at {git_ref} from issuer {}",
                    issuer.name
                ))
            })?;
        let expires_at = now + chrono::Duration::from_std(self.ttl).unwrap_or_default();
        let bound = Binding {
            repo_url: rule.repo_url.clone(),
            git_ref: git_ref.clone(),
            issuer: issuer.name.clone(),
            subject: claims.sub.clone(),
        };
        tracing::info!(
            project = %rule.project, issuer = %issuer.name, subject = %bound.subject,
            %repository, %git_ref, "token issued for an ID token"
        );
        Ok(Issued {
            token: issued.issue(&rule.project, &rule.scopes, bound, expires_at),
            expires_at,
            project: rule.project.clone(),
            scopes: rule.scopes.iter().map(|s| s.as_str().to_string()).collect(),
            repo_url: rule.repo_url.clone(),
            git_ref,
        })
    }

    /// `issuer`'s key `kid` (its only key when the token names none),
    /// fetching its keys when they are stale or lack it.
    async fn key(&self, issuer: &Issuer, kid: Option<&str>) -> Result<DecodingKey, ExchangeError> {
        let mut cache = self.keys.lock().await;
        let find = |keys: &JwkSet| match kid {
            Some(kid) => keys.find(kid).cloned(),
            None if keys.keys.len() == 1 => keys.keys.first().cloned(),
            None => None,
        };
        let cached = cache.get(&issuer.name);
        let stale = cached.is_none_or(|f| f.at.elapsed() > KEYS_FRESH_FOR);
        let lacking = cached.is_some_and(|f| find(&f.keys).is_none())
            && cached.is_some_and(|f| f.at.elapsed() > KEYS_REFETCH_AFTER);
        if stale || lacking {
            let keys = self.fetch_keys(issuer).await?;
            cache.insert(
                issuer.name.clone(),
                Fetched {
                    keys,
                    at: Instant::now(),
                },
            );
        }
        let jwk = cache
            .get(&issuer.name)
            .and_then(|f| find(&f.keys))
            .ok_or_else(|| {
                ExchangeError::Invalid(format!(
                    "issuer {} has no key {}",
                    issuer.name,
                    kid.map_or("(the token names none)".into(), |k| format!("{k:?}"))
                ))
            })?;
        DecodingKey::from_jwk(&jwk).map_err(|e| {
            ExchangeError::Invalid(format!("issuer {}'s key cannot be used: {e}", issuer.name))
        })
    }

    /// The issuer's JWKS, from `jwks_url` or its discovery document.
    async fn fetch_keys(&self, issuer: &Issuer) -> Result<JwkSet, ExchangeError> {
        let unreachable = |what: String| {
            tracing::warn!(issuer = %issuer.name, "{what}");
            ExchangeError::IssuerUnreachable(what)
        };
        let jwks_url = match &issuer.jwks_url {
            Some(url) => url.clone(),
            None => {
                #[derive(Deserialize)]
                struct Discovery {
                    jwks_uri: String,
                }
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.url.trim_end_matches('/')
                );
                let found: Discovery = self.get_json(&discovery).await.map_err(unreachable)?;
                check_issuer_url(&found.jwks_uri)
                    .map_err(|why| unreachable(format!("{discovery} names jwks_uri {why}")))?;
                found.jwks_uri
            }
        };
        self.get_json(&jwks_url).await.map_err(unreachable)
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("cannot fetch {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        response
            .json()
            .await
            .map_err(|e| format!("{url} did not answer what an OIDC issuer does: {e}"))
    }
}

/// The `iss` an ID token claims, before its signature is checked.
fn unverified_issuer(id_token: &str) -> Result<String, ExchangeError> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    let malformed = || ExchangeError::Malformed("id_token: not a JWT with an `iss` claim".into());
    let payload = id_token.split('.').nth(1).ok_or_else(malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed())?;
    Ok(serde_json::from_slice::<Iss>(&bytes)
        .map_err(|_| malformed())?
        .iss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_and_github_refs_are_read_in_full() {
        let claims = |json: serde_json::Value| serde_json::from_value::<Claims>(json).unwrap();
        let github = claims(
            serde_json::json!({"sub": "s", "repository": "org/web", "ref": "refs/heads/main"}),
        );
        assert_eq!(
            (github.repository(), github.full_ref().as_deref()),
            (Some("org/web"), Some("refs/heads/main"))
        );
        let gitlab = claims(
            serde_json::json!({"sub": "s", "project_path": "grp/web", "ref": "v1", "ref_type": "tag"}),
        );
        assert_eq!(
            (gitlab.repository(), gitlab.full_ref().as_deref()),
            (Some("grp/web"), Some("refs/tags/v1"))
        );
        let path = claims(
            serde_json::json!({"sub": "s", "project_path": "grp/web", "ref": "main", "ref_path": "refs/heads/main"}),
        );
        assert_eq!(path.full_ref().as_deref(), Some("refs/heads/main"));
        let unknown = claims(serde_json::json!({"sub": "s", "ref": "main"}));
        assert_eq!(unknown.full_ref(), None, "a short ref of no known type");
    }
}
