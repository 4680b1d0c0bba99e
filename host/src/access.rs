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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
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
}

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None`: the admin (every project).
    pub project: Option<Arc<Project>>,
    scopes: BTreeSet<Scope>,
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
    fn an_open_server_makes_everyone_admin() {
        assert!(Access::open().resolve(None, Utc::now()).unwrap().is_admin());
    }
}
