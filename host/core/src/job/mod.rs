//! Build jobs: what a client submits and how it is validated
//! ([`request`]), the lifecycle state machine the host drives
//! ([`lifecycle`]), and how a run ended ([`outcome`]).

mod lifecycle;
mod outcome;
mod phases;
mod project;
mod request;
mod usage;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::{Digest, Manifest};
use crate::platform::Platform;

pub use lifecycle::{State, TransitionError};
pub use outcome::{BuildResult, FailureKind, InvalidResult, Outcome};
pub use phases::{Phase, PhaseClock, PhaseName};
pub use project::{CacheScope, Project};
pub use request::{
    InvalidJob, JobRequest, MAX_QUEUE_TTL_SECS, MAX_RUNNING_LIMIT, PRIORITIES, PRIORITY_AGING_SECS,
    SubmitPolicy, effective_priority,
};
pub use request::{ROOT_CONTEXT, limits, reserved_build_arg, validate_repo_url};
pub use usage::{Resources, WaitReason, Waits, waiting_for};

pub const MAX_ID_LEN: usize = 128;

/// A job's id: caller-given `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`, or a UUIDv7.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub fn parse(input: &str) -> Result<Self, InvalidJob> {
        let ok = !input.is_empty()
            && input.len() <= MAX_ID_LEN
            && input.as_bytes()[0].is_ascii_alphanumeric()
            && input
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(JobId(input.to_string()))
        } else {
            Err(InvalidJob::new(
                "id",
                format!(
                    "{input:?} must be 1 to {MAX_ID_LEN} letters, digits, '.', '_' or '-', starting with a letter or digit"
                ),
            ))
        }
    }

    /// A new time-ordered id.
    pub fn generate() -> Self {
        JobId(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for JobId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
/// A job and everything known about it. Cloning gives an independent
/// snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    #[schema(value_type = String)]
    pub id: JobId,
    pub repo_url: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit it must build, on `ref` (the request's `commit`); when
    /// absent, the ref's tip at checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_commit: Option<String>,
    /// Directory of the checkout that is the build context (`.`: its root).
    #[serde(default = "root_context")]
    pub context: String,
    /// Relative to `context`.
    pub dockerfile_path: String,
    pub build_args: BTreeMap<String, String>,
    #[schema(value_type = Vec<String>, example = json!(["linux/amd64"]))]
    pub platforms: Vec<Platform>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub no_cache: bool,
    /// Names of the build secrets handed to the build; never their values.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Seconds it may wait in the queue, when the submission set it.
    #[serde(default)]
    pub queue_ttl_secs: Option<u64>,
    /// Higher is claimed first (-100 to 100).
    #[serde(default)]
    pub priority: i32,
    /// Its concurrency group, if it has one.
    #[serde(default)]
    pub group: Option<String>,
    /// At most this many of its group's jobs run at once when it starts.
    #[serde(default = "one")]
    pub max_running: u32,
    /// Whether submitting it cancelled its group's earlier jobs.
    #[serde(default)]
    pub cancel_in_progress: bool,
    /// Queued again after its host was lost: not claimed before this
    /// (the retry's backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    pub builder: String,
    /// The project it belongs to: the submitting token's, or the one an
    /// admin named; `None` for an admin's job of no project (and every
    /// job of a server without projects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Whether it builds one of its project's protected refs (named in
    /// full, as `refs/heads/main`): only then may it name the project's
    /// protected secrets and use the project's protected cache.
    #[serde(default)]
    pub protected: bool,
    pub image: Option<String>,
    pub state: State,
    pub image_tag: Option<String>,
    #[schema(value_type = Option<String>)]
    pub digest: Option<Digest>,
    /// Each platform's image digest.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub manifest: Manifest,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    /// The sha256 digest of the builder component its last run ran on
    /// (builders can be swapped while jobs wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_digest: Option<String>,
    /// The commit its last run checked out (`null` until a checkout
    /// succeeds, and for a simulated builder, which checks nothing out).
    #[serde(default)]
    pub commit: Option<String>,
    /// Build steps of its last run, and how many came from the cache.
    #[serde(default)]
    pub steps: BuildSteps,
    /// Where the time of its last run went, phase by phase (see
    /// [`PhaseName`]); empty until a run of it ends.
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// What its last run used; `null` before a run is measured (and for
    /// a simulated builder, which runs nothing).
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Why a queued job has not started, worked out when it is read (never
    /// stored); absent when nothing holds it back and for other states.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<WaitReason>,
}

/// Build steps a job's build tools reported, and how many of them came
/// from the layer cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildSteps {
    pub total: u32,
    pub cached: u32,
}

/// What jobs stored before `context` existed were built from.
impl Job {
    /// How it stands, for a person: its state and its error, each said
    /// once (`failed: build error: …`, `cancelled by request`, `timed out:
    /// …`: those ends' errors start by naming them).
    pub fn summary(&self) -> String {
        match (self.state, &self.error) {
            (State::Cancelled | State::TimedOut | State::Expired, Some(error)) => error.clone(),
            (state, Some(error)) => format!("{state}: {error}"),
            (state, None) => state.to_string(),
        }
    }

    /// How long it may wait in the queue: its own TTL, else `default`.
    pub fn queue_ttl(&self, default: Option<std::time::Duration>) -> Option<std::time::Duration> {
        self.queue_ttl_secs
            .map(std::time::Duration::from_secs)
            .or(default)
    }

    /// Whether it has waited past its queue TTL at `now`.
    pub fn is_overdue(&self, default_ttl: Option<std::time::Duration>, now: DateTime<Utc>) -> bool {
        self.queue_ttl(default_ttl).is_some_and(|ttl| {
            (now - self.created_at)
                .to_std()
                .is_ok_and(|waited| waited >= ttl)
        })
    }
}

fn one() -> u32 {
    1
}

fn root_context() -> String {
    request::ROOT_CONTEXT.into()
}

/// Where a job's image goes: its `image` (tagged with the job id when it
/// names no tag or digest), or `<default_registry>/<repository name>:<job
/// id>`. `None` when the job names no image and there is no default.
pub fn job_image(job: &Job, default_registry: Option<&str>) -> Option<String> {
    if let Some(image) = &job.image {
        let last = image.rsplit('/').next().unwrap_or_default();
        return Some(if last.contains(':') || last.contains('@') {
            image.clone()
        } else {
            format!("{image}:{}", job.id)
        });
    }
    let registry = default_registry?;
    let name: String = job
        .repo_url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default()
        .trim_end_matches(".git")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-');
    let name = if name.is_empty() { "image" } else { name };
    Some(format!("{registry}/{name}:{}", job.id))
}

#[cfg(test)]
pub(crate) mod fixtures {
    use chrono::Utc;

    use super::{InvalidJob, Job, JobRequest, SubmitPolicy};

    /// The smallest valid request.
    pub fn request() -> JobRequest {
        JobRequest {
            repo_url: "https://git.example/team/app.git".into(),
            ..JobRequest::default()
        }
    }

    /// `request` accepted as a queued job for the simulated builder.
    pub fn job(request: JobRequest) -> Result<Job, InvalidJob> {
        Job::from_request(
            request,
            &SubmitPolicy::for_builders("simulated", ["simulated"]),
            Utc::now(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{job, request};
    use super::*;

    #[test]
    fn job_ids() {
        for ok in ["a", "Job-1", "x.y_z", &"a".repeat(128)] {
            assert!(JobId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", &"a".repeat(129), "ü"] {
            assert_eq!(JobId::parse(bad).unwrap_err().field, "id", "{bad}");
        }
        let a = JobId::generate();
        let b = JobId::generate();
        assert!(a < b, "UUIDv7 ids sort by creation time");
        assert!(JobId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn json_uses_the_documented_field_names() {
        let job = job(request()).unwrap();
        let value = serde_json::to_value(&job).unwrap();
        for field in [
            "id",
            "repo_url",
            "ref",
            "dockerfile_path",
            "build_args",
            "platforms",
            "builder",
            "image",
            "state",
            "image_tag",
            "digest",
            "manifest",
            "error",
            "created_at",
            "started_at",
            "completed_at",
            "attempts",
            "steps",
            "commit",
            "phases",
            "resources",
        ] {
            assert!(value.get(field).is_some(), "missing {field}");
        }
        assert_eq!(value["state"], "queued");
        assert_eq!(value["platforms"][0], "linux/amd64");
    }
}
