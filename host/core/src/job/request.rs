//! What a client submits, and the validation that turns it into a queued
//! [`Job`] or an [`InvalidJob`] naming the field at fault.
//! The checks of single fields are in [`rules`]; this module holds the
//! request, the policy it is checked against, and the order of the checks.

pub mod limits;
mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BuildSteps, Job, JobId, Project, State, job_image};
use crate::manifest::Manifest;
use crate::platform::Platform;
use crate::reference::{registry_of, validate_image_ref};
use rules::{
    check_buildable, normalise_context, parse_platforms, refuse_hidden, refuse_reserved_image,
    validate_build_args, validate_group, validate_labels, validate_pinned_commit, validate_ref,
    validate_relative_path, validate_secrets, validate_target,
};

pub use rules::{reserved_build_arg, validate_repo_url};

/// A job submission as a client sends it, before validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Caller-chosen id; a UUIDv7 is generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    pub repo_url: String,
    /// Branch, tag or commit; the repository's default branch when absent.
    #[serde(rename = "ref", default)]
    pub git_ref: Option<String>,
    /// The commit to build, which must be on `ref` (reachable from where
    /// the ref is when the job checks out), as Buildkite's `commit`
    /// beside its `branch`: the full id, 40 or 64 hex digits. A webhook
    /// push builds the commit pushed, named with its ref, so a push to a
    /// protected ref is a protected job. When absent, the ref's tip.
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub dockerfile_path: Option<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// `os/arch[/variant]` strings; `linux/amd64` when empty.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Builder name; the configured default when absent.
    #[serde(default)]
    pub builder: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    /// Directory of the checkout to build, like `docker build`'s context
    /// argument; the checkout's root when absent.
    #[serde(default)]
    pub context: Option<String>,
    /// Stage of a multi-stage Dockerfile to build (`--target`).
    #[serde(default)]
    pub target: Option<String>,
    /// Labels set on the image (`--label`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Build every step afresh, reusing no cached layer (`--no-cache`).
    #[serde(default)]
    pub no_cache: bool,
    /// Names of build secrets the operator defined, for `RUN
    /// --mount=type=secret,id=NAME` steps.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Seconds the job may wait in the queue before it ends `expired`;
    /// the server's `queue_ttl_secs` when absent.
    #[serde(default)]
    pub queue_ttl_secs: Option<u64>,
    /// Higher runs first (-100 to 100, default 0); see [`effective_priority`].
    #[serde(default)]
    pub priority: Option<i32>,
    /// A concurrency group (a repository and branch, say): at most
    /// `max_running` of its jobs run at once.
    #[serde(default)]
    pub group: Option<String>,
    /// How many of the group's jobs may run at once when this one starts
    /// (1 to 100, default 1).
    #[serde(default)]
    pub max_running: Option<u32>,
    /// Submitting this job cancels the group's queued and running jobs:
    /// a newer push supersedes the builds of older ones.
    #[serde(default)]
    pub cancel_in_progress: bool,
    /// The project the job is for. A project token's jobs are its
    /// project's (naming another is refused); an admin may name any
    /// configured project, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// Most jobs of one group that may be allowed to run at once.
pub const MAX_RUNNING_LIMIT: u32 = 100;

/// The range of `priority`.
pub const PRIORITIES: std::ops::RangeInclusive<i32> = -100..=100;
/// A waiting job gains one priority level per this many seconds, so no
/// job waits forever behind higher ones: the lowest (-100) passes the
/// highest (100) after 200 such periods (200 minutes).
pub const PRIORITY_AGING_SECS: i64 = 60;

/// Where a waiting job stands: its priority plus one level per
/// [`PRIORITY_AGING_SECS`] it has waited. Claims take the highest first,
/// the oldest among equals.
pub fn effective_priority(priority: i32, waited_secs: i64) -> i64 {
    i64::from(priority) + waited_secs.max(0) / PRIORITY_AGING_SECS
}

/// Longest queue TTL a job may ask for: 30 days.
pub const MAX_QUEUE_TTL_SECS: u64 = 30 * 24 * 3600;

/// A submission refused by validation: which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidJob {
    pub field: &'static str,
    pub message: String,
}

impl InvalidJob {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidJob {
            field,
            message: message.into(),
        }
    }
}

/// Operator choices that change what a submission may contain.
#[derive(Debug, Clone, Default)]
pub struct SubmitPolicy {
    /// Whether `file://` repository URLs are accepted (they read the host's
    /// disk, so only an operator may enable them).
    pub allow_file_repos: bool,
    /// The builder of jobs that name none.
    pub default_builder: String,
    /// Builders a job may name (those loaded on this host), each with the
    /// platforms it can build here; `None`: any (a simulated builder).
    pub builders: BTreeMap<String, Option<Vec<Platform>>>,
    /// Builders this host knows but cannot run, each with why and the
    /// setting to change: a job naming one is refused with it.
    pub unavailable: BTreeMap<String, String>,
    /// Build secrets the operator defined: what a job of no project may
    /// name, and what a project's secrets are taken from.
    pub secrets: BTreeSet<String>,
    /// The registries (`host[:port]`) the operator configured: a real
    /// builder's job may push to these only.
    pub registries: BTreeSet<String>,
    /// Where images of jobs that name none go (`host[:port][/namespace]`).
    pub default_registry: Option<String>,
    /// Builders whose layer cache every job shares whatever its project
    /// (those building in an operator's Docker Engine): no project's job
    /// may use them.
    pub shared_cache_builders: BTreeSet<String>,
    /// The project the submission is for (its job's `project`), whose
    /// rules it must then meet.
    pub project: Option<Arc<Project>>,
}

impl SubmitPolicy {
    /// A policy accepting jobs for `builders`, `default` when they name
    /// none, with no file repositories and no secrets.
    pub fn for_builders<'a>(default: &str, builders: impl IntoIterator<Item = &'a str>) -> Self {
        SubmitPolicy {
            default_builder: default.to_string(),
            builders: builders
                .into_iter()
                .map(|b| (b.to_string(), None))
                .collect(),
            ..SubmitPolicy::default()
        }
    }
}

const DEFAULT_REF: &str = "HEAD";
const DEFAULT_DOCKERFILE: &str = "Dockerfile";
/// The checkout's root, as a context.
pub const ROOT_CONTEXT: &str = ".";

impl Job {
    /// Validates `request` against `policy` and makes a `queued` job of
    /// it: a generated id unless it names one, the default builder unless
    /// it names a loaded one. The error names the first field at fault.
    pub fn from_request(
        request: JobRequest,
        policy: &SubmitPolicy,
        now: DateTime<Utc>,
    ) -> Result<Self, InvalidJob> {
        let id = match &request.id {
            Some(id) => JobId::parse(id)?,
            None => JobId::generate(),
        };
        let builder = request
            .builder
            .unwrap_or_else(|| policy.default_builder.clone());
        let project = policy.project.as_deref();
        if let Some(reason) = policy.unavailable.get(&builder) {
            return Err(InvalidJob::new("builder", reason.clone()));
        }
        let Some(buildable) = policy.builders.get(&builder) else {
            let available: Vec<&str> = policy.builders.keys().map(String::as_str).collect();
            return Err(InvalidJob::new(
                "builder",
                format!(
                    "no builder called '{builder}'; available: {}",
                    available.join(", ")
                ),
            ));
        };
        if let Some(project) = project {
            project.check_builder(&builder)?;
            if policy.shared_cache_builders.contains(&builder) {
                return Err(InvalidJob::new(
                    "builder",
                    format!(
                        "builder '{builder}' builds in the operator's Docker Engine, whose cache every job \
                         shares, so no project's job may use it; project {} may use a builder with \
                         engine = \"managed\" (an engine per cache slot) instead",
                        project.name
                    ),
                ));
            }
        }
        validate_repo_url(&request.repo_url, policy.allow_file_repos)?;
        if let Some(project) = project {
            project.check_repository(&request.repo_url)?;
        }
        let git_ref = request.git_ref.unwrap_or_else(|| DEFAULT_REF.into());
        validate_ref(&git_ref)?;
        let pinned_commit = request
            .commit
            .map(|commit| validate_pinned_commit(&commit, &git_ref))
            .transpose()?;
        let protected = project.is_some_and(|p| p.is_protected(&git_ref));
        let context = match request.context {
            Some(context) => normalise_context(&context)?,
            None => ROOT_CONTEXT.into(),
        };
        let dockerfile_path = request
            .dockerfile_path
            .unwrap_or_else(|| DEFAULT_DOCKERFILE.into());
        validate_relative_path("dockerfile_path", &dockerfile_path, "the context")?;
        validate_build_args(&request.build_args)?;
        let platforms = parse_platforms(&request.platforms)?;
        if let Some(buildable) = buildable {
            check_buildable(&builder, &platforms, buildable)?;
        }
        if let Some(image) = &request.image {
            refuse_hidden("image", image)?;
            validate_image_ref(image).map_err(|e| InvalidJob::new("image", e.to_string()))?;
        }
        if let Some(target) = &request.target {
            validate_target(target)?;
        }
        validate_labels(&request.labels)?;
        let secrets = match project {
            None => validate_secrets(request.secrets, &policy.secrets, None)?,
            Some(project) => validate_secrets(
                request.secrets,
                &project.usable_secrets(protected, &policy.secrets),
                Some((project, &git_ref)),
            )?,
        };
        let priority = request.priority.unwrap_or(0);
        if !PRIORITIES.contains(&priority) {
            return Err(InvalidJob::new(
                "priority",
                format!("must be -100 to 100 (higher runs first), got {priority}"),
            ));
        }
        let group = validate_group(
            request.group,
            request.max_running,
            request.cancel_in_progress,
        )?;
        if let Some(ttl) = request.queue_ttl_secs
            && !(1..=MAX_QUEUE_TTL_SECS).contains(&ttl)
        {
            return Err(InvalidJob::new(
                "queue_ttl_secs",
                format!("must be 1 to {MAX_QUEUE_TTL_SECS} seconds (30 days), got {ttl}"),
            ));
        }
        let job = Job {
            id,
            repo_url: request.repo_url,
            git_ref,
            pinned_commit,
            context,
            dockerfile_path,
            build_args: request.build_args,
            platforms,
            target: request.target,
            labels: request.labels,
            no_cache: request.no_cache,
            secrets,
            queue_ttl_secs: request.queue_ttl_secs,
            priority,
            max_running: match group {
                Some(_) => request.max_running.unwrap_or(1),
                None => 1,
            },
            cancel_in_progress: request.cancel_in_progress,
            not_before: None,
            group,
            builder,
            project: project.map(|p| p.name.clone()),
            protected,
            image: request.image,
            state: State::Queued,
            image_tag: None,
            digest: None,
            manifest: Manifest::new(),
            error: None,
            created_at: now,
            started_at: None,
            completed_at: None,
            attempts: 0,
            component_digest: None,
            commit: None,
            steps: BuildSteps::default(),
            phases: Vec::new(),
            resources: None,
            waiting_for: Vec::new(),
        };
        // Where it will push, named or the default: a real builder's push
        // goes to a registry the operator configured, a project's under
        // its prefixes.
        if let Some(image) = job_image(&job, policy.default_registry.as_deref()) {
            let registry = registry_of(&image);
            if buildable.is_some() {
                refuse_reserved_image(&image, registry)?;
            }
            if buildable.is_some() && !policy.registries.contains(registry) {
                let configured: Vec<&str> = policy.registries.iter().map(String::as_str).collect();
                return Err(InvalidJob::new(
                    "image",
                    format!(
                        "{image:?} is in registry {registry}, which this server does not push to; configured: {}",
                        match configured.is_empty() {
                            true => "none".to_string(),
                            false => configured.join(", "),
                        }
                    ),
                ));
            }
            if let Some(project) = project {
                project.check_image(&image)?;
            }
        }
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn waiting_raises_a_jobs_priority_so_none_starves() {
        assert_eq!(effective_priority(5, 0), 5);
        assert_eq!(effective_priority(5, PRIORITY_AGING_SECS - 1), 5);
        assert_eq!(effective_priority(5, PRIORITY_AGING_SECS), 6);
        // The lowest passes a fresh highest after 200 periods.
        let waited = 201 * PRIORITY_AGING_SECS;
        assert!(
            effective_priority(*PRIORITIES.start(), waited)
                > effective_priority(*PRIORITIES.end(), 0)
        );
        assert_eq!(
            effective_priority(0, -10),
            0,
            "a clock step back gives no bonus"
        );
    }

    use super::super::fixtures::{job, request};
    use super::*;

    #[test]
    fn request_defaults() {
        let job = job(request()).unwrap();
        assert_eq!(job.git_ref, "HEAD");
        assert_eq!(job.dockerfile_path, "Dockerfile");
        assert_eq!(job.platforms, vec![Platform::default_target()]);
    }

    #[test]
    fn refuses_bad_submissions_naming_the_field() {
        let cases: Vec<(&str, JobRequest)> = vec![
            (
                "repo_url",
                JobRequest {
                    repo_url: String::new(),
                    ..request()
                },
            ),
            (
                "repo_url",
                JobRequest {
                    repo_url: "-uhttps://x".into(),
                    ..request()
                },
            ),
            (
                "repo_url",
                JobRequest {
                    repo_url: "ext::sh -c touch% /tmp/pwned".into(),
                    ..request()
                },
            ),
            (
                "repo_url",
                JobRequest {
                    repo_url: "ext::sh".into(),
                    ..request()
                },
            ),
            (
                "repo_url",
                JobRequest {
                    repo_url: "ftp://host/repo".into(),
                    ..request()
                },
            ),
            (
                "repo_url",
                JobRequest {
                    repo_url: "file:///srv/repo".into(),
                    ..request()
                },
            ),
            (
                "repo_url",
                JobRequest {
                    repo_url: "/srv/repo".into(),
                    ..request()
                },
            ),
            (
                "repo_url",
                JobRequest {
                    repo_url: "https://".into(),
                    ..request()
                },
            ),
            (
                "ref",
                JobRequest {
                    git_ref: Some("--upload-pack=evil".into()),
                    ..request()
                },
            ),
            (
                "ref",
                JobRequest {
                    git_ref: Some("main..dev".into()),
                    ..request()
                },
            ),
            (
                "ref",
                JobRequest {
                    git_ref: Some("a b".into()),
                    ..request()
                },
            ),
            (
                "ref",
                JobRequest {
                    git_ref: Some(String::new()),
                    ..request()
                },
            ),
            (
                "dockerfile_path",
                JobRequest {
                    dockerfile_path: Some("../../etc/passwd".into()),
                    ..request()
                },
            ),
            (
                "dockerfile_path",
                JobRequest {
                    dockerfile_path: Some("/etc/passwd".into()),
                    ..request()
                },
            ),
            (
                "dockerfile_path",
                JobRequest {
                    dockerfile_path: Some("docker/../../x".into()),
                    ..request()
                },
            ),
            (
                "build_args",
                JobRequest {
                    build_args: [("1BAD".into(), "v".into())].into(),
                    ..request()
                },
            ),
            (
                "build_args",
                JobRequest {
                    build_args: [("A-B".into(), "v".into())].into(),
                    ..request()
                },
            ),
            (
                "build_args",
                JobRequest {
                    build_args: [("OK".into(), "nul\0".into())].into(),
                    ..request()
                },
            ),
            (
                "platforms",
                JobRequest {
                    platforms: vec!["linux/".into()],
                    ..request()
                },
            ),
            (
                "image",
                JobRequest {
                    image: Some("Not A Ref".into()),
                    ..request()
                },
            ),
        ];
        for (field, request) in cases {
            let debug = format!("{request:?}");
            let err = job(request).expect_err(&debug);
            assert_eq!(err.field, field, "{debug}: {err}");
        }
    }

    #[test]
    fn builder_must_be_loaded_here() {
        let err = job(JobRequest {
            builder: Some("nope".into()),
            ..request()
        })
        .unwrap_err();
        assert_eq!(err.field, "builder");
        assert!(err.message.contains("available: simulated"), "{err}");
    }

    #[test]
    fn a_builder_that_cannot_run_here_is_refused_with_its_reason() {
        let policy = SubmitPolicy {
            unavailable: BTreeMap::from([(
                "buildkit".to_string(),
                "set builders.buildkit.engine".to_string(),
            )]),
            ..SubmitPolicy::for_builders("simulated", ["simulated"])
        };
        let request = JobRequest {
            builder: Some("buildkit".into()),
            ..request()
        };
        let err = Job::from_request(request, &policy, Utc::now()).unwrap_err();
        assert_eq!(
            (err.field, err.message.as_str()),
            ("builder", "set builders.buildkit.engine")
        );
    }

    #[test]
    fn request_rejects_unknown_fields() {
        let err = serde_json::from_str::<JobRequest>(r#"{"repo_url":"https://h/r","colour":1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
