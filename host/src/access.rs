//! Who a request comes from: bearer tokens resolved to a caller (a project
//! or the server's admin) with the scopes its token carries.
//!
//! Deny by default: a token grants exactly its scopes, and a project
//! token reaches only its own project's jobs and secrets. Tokens are held
//! as SHA-256 digests only and compared digest to digest in constant time;
//! every configured token is compared on every request, so the time taken
//! says nothing about which one (if any) matched. When no token and no
//! project is configured the API is open and every caller is the admin,
//! as before projects existed.
//!
//! Besides the configured tokens, the server accepts the tokens it issued
//! itself in exchange for a CI system's ID token ([`crate::oidc`]): each
//! names its project, scopes, expiry and the one repository and ref its
//! jobs may build, signed with the server's `oidc.token_key`
//! (HMAC-SHA256), so every host holding the key checks them with no
//! store.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::job::Job;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Submit jobs for the token's project.
    JobsSubmit,
    /// Read the project's jobs: the jobs, their logs, audit and provenance.
    JobsRead,
    /// Cancel the project's jobs.
    JobsCancel,
    /// Everything: every project's jobs, reloading builders. Server-wide
    /// only (the `token` setting), never a project's.
    Admin,
}

impl Scope {
    /// The scopes a project token may carry.
    pub const PROJECT: [Scope; 3] = [Scope::JobsSubmit, Scope::JobsRead, Scope::JobsCancel];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsSubmit => "jobs:submit",
            Scope::JobsRead => "jobs:read",
            Scope::JobsCancel => "jobs:cancel",
            Scope::Admin => "admin",
        }
    }

    /// A project token's scope by its name.
    pub fn parse_project(name: &str) -> Option<Scope> {
        Scope::PROJECT.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A project as requests see it: its name and what its jobs may do.
pub use crate::job::Project;

/// One accepted token.
#[derive(Debug, Clone)]
struct TokenEntry {
    digest: [u8; 32],
    /// Refused from this instant on.
    expires: Option<DateTime<Utc>>,
    /// `None`: the admin token.
    project: Option<Arc<Project>>,
    scopes: BTreeSet<Scope>,
}

/// The tokens the server accepts and the projects they belong to.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: Vec<TokenEntry>,
    projects: BTreeMap<String, Arc<Project>>,
    issued: Option<IssuedTokens>,
}

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None`: the admin (every project).
    pub project: Option<Arc<Project>>,
    scopes: BTreeSet<Scope>,
    /// What an issued token's jobs are bound to; `None` for a configured
    /// token.
    pub bound: Option<Arc<Binding>>,
}

/// The one repository and ref an issued token's jobs may build, and whom
/// the ID token it was issued for named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub repo_url: String,
    /// A full ref name (`refs/heads/main`).
    pub git_ref: String,
    /// The ID token's issuer (its name in `[oidc.issuers]`) and `sub`.
    pub issuer: String,
    pub subject: String,
}

/// What an issued token says, signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IssuedClaims {
    project: String,
    scopes: Vec<String>,
    /// Unix seconds from which it is refused.
    expires: i64,
    #[serde(flatten)]
    bound: Binding,
}

/// Issued tokens start so, telling them from configured ones at a glance
/// (and to secret scanners).
const ISSUED_PREFIX: &str = "hxo_";

/// The key the server signs and checks the tokens it issues with.
#[derive(Clone)]
pub struct IssuedTokens {
    key: Arc<[u8]>,
}

impl fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IssuedTokens(..)")
    }
}

impl IssuedTokens {
    pub fn new(key: &[u8]) -> Self {
        IssuedTokens { key: key.into() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// A token of `project` with `scopes`, bound to `bound`, refused from
    /// `expires` on.
    pub fn issue(
        &self,
        project: &str,
        scopes: &BTreeSet<Scope>,
        bound: Binding,
        expires: DateTime<Utc>,
    ) -> String {
        let claims = IssuedClaims {
            project: project.to_string(),
            scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
            expires: expires.timestamp(),
            bound,
        };
        let body = serde_json::to_vec(&claims).expect("claims serialise");
        let signed = format!("{ISSUED_PREFIX}{}", URL_SAFE_NO_PAD.encode(body));
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{tag}")
    }

    /// What `token` says, if this key signed it (checked in constant time).
    fn verify(&self, token: &str) -> Option<IssuedClaims> {
        let (signed, tag) = token.rsplit_once('.')?;
        let body = signed.strip_prefix(ISSUED_PREFIX)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }
}

/// Why a token was refused (answered 401 without saying which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Missing,
    Unknown,
    Expired,
}

impl Access {
    /// No token at all: the API is open, every caller the admin.
    pub fn open() -> Self {
        Access::default()
    }

    /// Accepts the tokens `issued` signs (and lets it issue them).
    pub fn with_issued(mut self, issued: IssuedTokens) -> Self {
        self.issued = Some(issued);
        self
    }

    /// The key of the tokens the server issues, if it issues any.
    pub fn issued(&self) -> Option<&IssuedTokens> {
        self.issued.as_ref()
    }

    /// Adds the admin token, by its SHA-256.
    pub fn with_admin(mut self, digest: [u8; 32]) -> Self {
        self.tokens.push(TokenEntry {
            digest,
            expires: None,
            project: None,
            scopes: BTreeSet::from([Scope::Admin]),
        });
        self
    }

    /// Adds project `project` (replacing one of that name).
    pub fn with_project(mut self, project: Project) -> Self {
        self.projects
            .insert(project.name.clone(), Arc::new(project));
        self
    }

    /// Adds a token of project `name` (added before with
    /// [`Access::with_project`]), by its SHA-256.
    pub fn with_project_token(
        mut self,
        name: &str,
        digest: [u8; 32],
        expires: Option<DateTime<Utc>>,
        scopes: BTreeSet<Scope>,
    ) -> Self {
        let project = self.projects.get(name).cloned();
        assert!(project.is_some(), "token of unknown project {name}");
        self.tokens.push(TokenEntry {
            digest,
            expires,
            project,
            scopes: scopes.into_iter().filter(|s| *s != Scope::Admin).collect(),
        });
        self
    }

    /// Whether every request needs a token.
    pub fn is_guarded(&self) -> bool {
        !self.tokens.is_empty() || !self.projects.is_empty()
    }

    /// The project called `name`.
    pub fn project(&self, name: &str) -> Option<&Arc<Project>> {
        self.projects.get(name)
    }

    /// Names of the configured projects.
    pub fn project_names(&self) -> impl Iterator<Item = &str> {
        self.projects.keys().map(String::as_str)
    }

    /// The caller presenting `token` (the bearer token, if any) at `now`.
    pub fn resolve(&self, token: Option<&str>, now: DateTime<Utc>) -> Result<Caller, Refused> {
        if !self.is_guarded() {
            return Ok(Caller::admin());
        }
        let token = token.filter(|t| !t.is_empty()).ok_or(Refused::Missing)?;
        if let (Some(issued), true) = (&self.issued, token.starts_with(ISSUED_PREFIX)) {
            return self.resolve_issued(issued, token, now);
        }
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every entry, so the time says nothing about which.
        let mut found = None;
        for (i, entry) in self.tokens.iter().enumerate() {
            if digests_equal(&given, &entry.digest) {
                found.get_or_insert(i);
            }
        }
        let entry = &self.tokens[found.ok_or(Refused::Unknown)?];
        if entry.expires.is_some_and(|at| at <= now) {
            return Err(Refused::Expired);
        }
        Ok(Caller {
            project: entry.project.clone(),
            scopes: entry.scopes.clone(),
            bound: None,
        })
    }

    /// The caller presenting a token the server issued: of a project the
    /// server still has, with no scope but a project's.
    fn resolve_issued(
        &self,
        issued: &IssuedTokens,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Caller, Refused> {
        let claims = issued.verify(token).ok_or(Refused::Unknown)?;
        if claims.expires <= now.timestamp() {
            return Err(Refused::Expired);
        }
        let project = self.projects.get(&claims.project).ok_or(Refused::Unknown)?;
        Ok(Caller {
            project: Some(project.clone()),
            scopes: claims
                .scopes
                .iter()
                .filter_map(|s| Scope::parse_project(s))
                .collect(),
            bound: Some(Arc::new(claims.bound)),
        })
    }
}

/// Whether two digests are equal, folding every byte (constant time).
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Caller {
    /// The admin: every scope, every project.
    pub fn admin() -> Self {
        Caller {
            project: None,
            scopes: BTreeSet::from([Scope::Admin]),
            bound: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// Whether the caller holds `scope` (the admin holds every one).
    pub fn has(&self, scope: Scope) -> bool {
        self.is_admin() || self.scopes.contains(&scope)
    }

    /// The scopes its token carries.
    pub fn scopes(&self) -> impl Iterator<Item = Scope> + '_ {
        self.scopes.iter().copied()
    }

    /// The caller's project's name; `None` for the admin.
    pub fn project_name(&self) -> Option<&str> {
        self.project.as_deref().map(|p| p.name.as_str())
    }

    /// Whether the caller may see `job` at all: the admin sees every job,
    /// a project only its own.
    pub fn sees(&self, job: &Job) -> bool {
        self.is_admin() || (job.project.is_some() && job.project.as_deref() == self.project_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn access() -> Access {
        Access::open()
            .with_admin(digest("admin-token-0123456789"))
            .with_project(Project::named("team-a"))
            .with_project_token(
                "team-a",
                digest("a-read"),
                None,
                BTreeSet::from([Scope::JobsRead]),
            )
            .with_project_token(
                "team-a",
                digest("a-old"),
                Some(Utc::now() - chrono::Duration::seconds(1)),
                BTreeSet::from([Scope::JobsRead]),
            )
    }

    #[test]
    fn tokens_resolve_to_their_caller() {
        let access = access();
        let now = Utc::now();
        assert!(
            access
                .resolve(Some("admin-token-0123456789"), now)
                .unwrap()
                .is_admin()
        );
        let reader = access.resolve(Some("a-read"), now).unwrap();
        assert_eq!(reader.project_name(), Some("team-a"));
        assert!(reader.has(Scope::JobsRead));
        assert!(!reader.has(Scope::JobsSubmit));
        assert!(!reader.is_admin());
        assert_eq!(access.resolve(None, now).unwrap_err(), Refused::Missing);
        assert_eq!(
            access.resolve(Some("nope"), now).unwrap_err(),
            Refused::Unknown
        );
        assert_eq!(
            access.resolve(Some("a-old"), now).unwrap_err(),
            Refused::Expired
        );
    }

    #[test]
    fn issued_tokens_resolve_only_unaltered_unexpired_and_of_a_known_project() {
        let issued = IssuedTokens::new(b"0123456789abcdef0123456789abcdef");
        let access = access().with_issued(issued.clone());
        let now = Utc::now();
        let bound = Binding {
            repo_url: "https://git.example/team-a/app.git".into(),
            git_ref: "refs/heads/main".into(),
            issuer: "ci".into(),
            subject: "repo:team-a/app:ref:refs/heads/main".into(),
        };
        let scopes = BTreeSet::from([Scope::JobsSubmit, Scope::Admin]);
        let hour = chrono::Duration::hours(1);
        let token = issued.issue("team-a", &scopes, bound.clone(), now + hour);
        assert!(token.starts_with("hxo_"), "{token}");
        let caller = access.resolve(Some(&token), now).unwrap();
        assert_eq!(caller.project_name(), Some("team-a"));
        assert!(caller.has(Scope::JobsSubmit) && !caller.has(Scope::JobsRead));
        assert!(!caller.is_admin(), "no issued token is the admin's");
        assert_eq!(caller.bound.as_deref(), Some(&bound));

        let (signed, tag) = token.rsplit_once('.').unwrap();
        let mut claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(signed.strip_prefix("hxo_").unwrap())
                .unwrap(),
        )
        .unwrap();
        claims["project"] = "team-b".into();
        let altered = format!("hxo_{}.{tag}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        assert_eq!(
            access.resolve(Some(&altered), now).unwrap_err(),
            Refused::Unknown
        );
        let other_key = IssuedTokens::new(b"another-key-another-key-another-key");
        let foreign = other_key.issue("team-a", &scopes, bound.clone(), now + hour);
        assert_eq!(
            access.resolve(Some(&foreign), now).unwrap_err(),
            Refused::Unknown
        );
        let late = issued.issue("team-a", &scopes, bound.clone(), now - hour);
        assert_eq!(
            access.resolve(Some(&late), now).unwrap_err(),
            Refused::Expired
        );
        let gone = issued.issue("no-such-project", &scopes, bound, now + hour);
        assert_eq!(
            access.resolve(Some(&gone), now).unwrap_err(),
            Refused::Unknown
        );
    }

    #[test]
    fn an_open_server_makes_everyone_admin() {
        assert!(Access::open().resolve(None, Utc::now()).unwrap().is_admin());
    }
}
