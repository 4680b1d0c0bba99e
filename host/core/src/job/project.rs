//! What a project's jobs may build, push, use and name: the rules a
//! submission for a project is checked against, each refusal naming the
//! field and only what the project itself may use.

use std::collections::BTreeSet;

use super::InvalidJob;
use crate::pattern::glob;
use crate::reference::repository_of;

/// A project: its name and what its jobs may do. Every `Option` left
/// `None` allows anything; the operator narrows it in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Project {
    pub name: String,
    /// Operator secrets any of its jobs may name.
    pub secrets: BTreeSet<String>,
    /// Operator secrets only its jobs of a protected ref may name.
    pub protected_secrets: BTreeSet<String>,
    /// Repository URL patterns (`*`: any run of characters) its jobs may
    /// build.
    pub repositories: Option<Vec<String>>,
    /// Image repository prefixes (`host[:port]/path`, whole path
    /// components) its jobs may push to.
    pub images: Option<Vec<String>>,
    /// Builders its jobs may use.
    pub builders: Option<BTreeSet<String>>,
    /// Full ref name patterns (`refs/heads/main`, `refs/tags/v*`) of its
    /// protected refs.
    pub protected_refs: Vec<String>,
}

impl Project {
    /// A project called `name` that may do anything and name no secret.
    pub fn named(name: &str) -> Self {
        Project {
            name: name.to_string(),
            ..Project::default()
        }
    }

    /// Whether `git_ref` is one of its protected refs. Only a full ref
    /// name can be: `main` could name a branch or a tag, and a commit is
    /// on any branch.
    pub fn is_protected(&self, git_ref: &str) -> bool {
        git_ref.starts_with("refs/") && self.protected_refs.iter().any(|p| glob(p, git_ref))
    }

    pub(super) fn check_builder(&self, builder: &str) -> Result<(), InvalidJob> {
        match &self.builders {
            Some(allowed) if !allowed.contains(builder) => Err(InvalidJob::new(
                "builder",
                format!(
                    "project {} may not use builder '{builder}'; it may use: {}",
                    self.name,
                    join(allowed)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `url` (already a valid repository URL without credentials) must
    /// match one of its patterns. A URL with `.` or `..` path segments or
    /// percent-escapes is refused outright: git and the server resolve
    /// them, so `team-a/../team-b/app` would match `team-a/*` and fetch
    /// team-b's repository.
    pub(super) fn check_repository(&self, url: &str) -> Result<(), InvalidJob> {
        let Some(patterns) = &self.repositories else {
            return Ok(());
        };
        let refused = |why: String| {
            Err(InvalidJob::new(
                "repo_url",
                format!(
                    "{why}; project {} may build: {}",
                    self.name,
                    patterns.join(", ")
                ),
            ))
        };
        let path = url.split_once("://").map_or(url, |(_, rest)| rest);
        let dotted = path
            .split(['/', ':'])
            .any(|segment| segment == "." || segment == "..");
        if dotted || url.contains(['%', '\\', '?', '#']) {
            return refused(format!(
                "{url:?} has '.' or '..' segments, escapes, a query or a fragment"
            ));
        }
        if !patterns.iter().any(|p| glob(p, url)) {
            return refused(format!("{url:?} is not one of the project's repositories"));
        }
        Ok(())
    }

    /// `image` must be under one of its prefixes, component by component:
    /// `registry/team-a` allows `registry/team-a/app`, never
    /// `registry/team-ab/app`.
    pub(super) fn check_image(&self, image: &str) -> Result<(), InvalidJob> {
        let Some(prefixes) = &self.images else {
            return Ok(());
        };
        let repository = repository_of(image);
        let under = |prefix: &String| {
            let prefix = prefix.trim_end_matches('/');
            repository
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if prefixes.iter().any(under) {
            return Ok(());
        }
        Err(InvalidJob::new(
            "image",
            format!(
                "{image:?} is not under the project's image prefixes; project {} may push to: {}",
                self.name,
                prefixes.join(", ")
            ),
        ))
    }

    /// The secrets a job of it may name, of those the server `defined`:
    /// its own, and its protected ones when the job is of a protected ref.
    pub(super) fn usable_secrets(
        &self,
        protected: bool,
        defined: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let protected_ones = self.protected_secrets.iter().filter(|_| protected);
        self.secrets
            .iter()
            .chain(protected_ones)
            .filter(|s| defined.contains(*s))
            .cloned()
            .collect()
    }

    /// Why a job of an unprotected ref may not name `secret`, if it is
    /// one of the project's protected-only secrets.
    pub(super) fn protected_only(
        &self,
        secret: &str,
        git_ref: &str,
        usable: &BTreeSet<String>,
    ) -> Option<InvalidJob> {
        self.protected_secrets.contains(secret).then(|| {
            InvalidJob::new(
                "secrets",
                format!(
                    "secret '{secret}' is for protected refs only ({}), and '{git_ref}' is not one \
                     (name the full ref, e.g. refs/heads/main); project {} may use here: {}",
                    self.protected_refs.join(", "),
                    self.name,
                    match usable.is_empty() {
                        true => "none".to_string(),
                        false => join(usable),
                    }
                ),
            )
        })
    }
}

/// Whose cached layers a job may use and add to: those of the jobs of no
/// project (shared, as before projects), its project's, or its project's
/// protected refs' — never another's, so a poisoned step of one scope
/// never serves another, and a build of an unprotected ref never writes
/// what a release build reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheScope(String);

impl CacheScope {
    pub fn of(job: &super::Job) -> Self {
        CacheScope(match (&job.project, job.protected) {
            (None, _) => String::new(),
            (Some(project), false) => format!("project {project}"),
            (Some(project), true) => format!("project {project}, protected refs"),
        })
    }

    /// A scope as [`CacheScope::as_str`] wrote it.
    pub fn from_stored(text: String) -> Self {
        CacheScope(text)
    }

    /// Its stored form: empty for the jobs of no project.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For people.
    pub fn describe(&self) -> &str {
        match self.0.as_str() {
            "" => "jobs of no project",
            scope => scope,
        }
    }
}

fn join(names: &BTreeSet<String>) -> String {
    names
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team_a() -> Project {
        Project {
            repositories: Some(vec!["https://git.example/team-a/*".into()]),
            images: Some(vec!["registry:5000/team-a/".into()]),
            builders: Some(["podman".to_string()].into()),
            protected_refs: vec!["refs/heads/main".into(), "refs/tags/v*".into()],
            ..Project::named("team-a")
        }
    }

    #[test]
    fn repositories_match_patterns_and_refuse_dot_segments() {
        let project = team_a();
        assert!(
            project
                .check_repository("https://git.example/team-a/app.git")
                .is_ok()
        );
        for url in [
            "https://git.example/team-b/app.git",
            "https://git.example/team-a/../team-b/app.git",
            "https://git.example/team-a/./x/../../team-b/app",
            "https://git.example/team-a/%2e%2e/team-b/app",
            "https://git.example/team-a/x?y",
        ] {
            let err = project.check_repository(url).unwrap_err();
            assert_eq!(err.field, "repo_url", "{url}");
            assert!(
                err.message
                    .ends_with("project team-a may build: https://git.example/team-a/*"),
                "{err}"
            );
        }
        assert!(
            Project::named("open")
                .check_repository("https://anywhere/x")
                .is_ok()
        );
    }

    #[test]
    fn images_are_under_a_prefix_by_whole_components() {
        let project = team_a();
        for ok in [
            "registry:5000/team-a/app",
            "registry:5000/team-a/app:1",
            "registry:5000/team-a/sub/app@sha256:abc",
        ] {
            assert!(project.check_image(ok).is_ok(), "{ok}");
        }
        for refused in [
            "registry:5000/team-ab/app",
            "registry:5000/team-b/app:latest",
            "other:5000/team-a/app",
        ] {
            let err = project.check_image(refused).unwrap_err();
            assert_eq!(err.field, "image");
            assert!(
                err.message
                    .ends_with("project team-a may push to: registry:5000/team-a/"),
                "{err}"
            );
        }
    }

    #[test]
    fn only_full_names_of_protected_refs_are_protected() {
        let project = team_a();
        assert!(project.is_protected("refs/heads/main"));
        assert!(project.is_protected("refs/tags/v1.2"));
        for not in [
            "main",
            "refs/heads/main2",
            "refs/heads/feature",
            "v1.2",
            "HEAD",
        ] {
            assert!(!project.is_protected(not), "{not}");
        }
        assert!(project.check_builder("podman").is_ok());
        let err = project.check_builder("buildah").unwrap_err();
        assert_eq!(
            err.message,
            "project team-a may not use builder 'buildah'; it may use: podman"
        );
    }
}
