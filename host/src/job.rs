//! Build jobs: what a client submits, how it is validated, and the lifecycle
//! state machine the host drives.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::{Digest, Manifest};
use crate::platform::Platform;
use crate::reference::validate_image_ref;

/// Where a job is in its life.
///
/// Allowed transitions: `queued → running`, `queued → cancelled`, and
/// `running → succeeded | failed | cancelled | timed_out`. Terminal states
/// never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Queued,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
        State::TimedOut,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Queued | State::Running)
    }

    /// Whether the lifecycle allows moving from `self` to `next`.
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Succeeded | Failed | Cancelled | TimedOut)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused state change; the job is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {id} cannot go from {from} to {to}")]
pub struct TransitionError {
    pub id: String,
    pub from: State,
    pub to: State,
}

/// A job submission as a client sends it, before validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Caller-chosen id; a UUIDv7 is generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    pub repo_url: String,
    /// Branch, tag or commit; the repository's default branch when absent.
    #[serde(rename = "ref", default)]
    pub git_ref: Option<String>,
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
}

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
}

pub const MAX_ID_LEN: usize = 128;
const MAX_BUILD_ARGS: usize = 256;
const MAX_BUILD_ARG_VALUE: usize = 64 * 1024;
const MAX_PLATFORMS: usize = 16;
const DEFAULT_REF: &str = "HEAD";
const DEFAULT_DOCKERFILE: &str = "Dockerfile";

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

/// What a successful build produced, validated by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    pub image_tag: String,
    pub digest: Option<Digest>,
    pub manifest: Manifest,
}

impl BuildResult {
    /// Checks a builder's report against the job it built: a well-formed
    /// non-empty tag, well-formed digests, and for a multi-platform job one
    /// digest per requested platform and no others. The error says what the
    /// builder got wrong.
    pub fn validate(
        image_tag: String,
        digest: Option<String>,
        platform_digests: Vec<(String, String)>,
        requested: &[Platform],
    ) -> Result<Self, String> {
        if image_tag.trim().is_empty() {
            return Err("reported success without an image tag".into());
        }
        validate_image_ref(&image_tag)
            .map_err(|e| format!("reported an invalid image tag {image_tag:?}: {e}"))?;
        let digest = digest
            .map(|d| Digest::parse(&d))
            .transpose()
            .map_err(|e| format!("reported {e}"))?;
        let mut manifest = Manifest::new();
        for (platform, digest) in platform_digests {
            let platform = Platform::parse(&platform).map_err(|e| format!("reported {e}"))?;
            let digest =
                Digest::parse(&digest).map_err(|e| format!("reported {e} for {platform}"))?;
            if manifest.insert(platform.clone(), digest).is_some() {
                return Err(format!("reported platform {platform} twice"));
            }
        }
        if requested.len() > 1 {
            let missing: Vec<String> = requested
                .iter()
                .filter(|p| manifest.get(p).is_none())
                .map(ToString::to_string)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "reported no image for platform(s) {}",
                    missing.join(", ")
                ));
            }
        }
        if let Some(extra) = manifest.platforms().find(|p| !requested.contains(p)) {
            return Err(format!(
                "reported platform {extra}, which the job did not request"
            ));
        }
        Ok(BuildResult {
            image_tag,
            digest,
            manifest,
        })
    }
}

/// Whose fault a failed job is. It leads the job's `error`, so a user knows
/// at a glance whether to fix their Dockerfile, ask the operator for a grant,
/// or report a plugin bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The submission cannot be built as given.
    InvalidJob,
    /// The repository or ref could not be fetched.
    Source,
    /// A step of the user's build failed.
    Build,
    /// The registry refused or could not be reached.
    Registry,
    /// The builder needed something its grants do not allow.
    Denied,
    /// The builder trapped, panicked or reported something invalid.
    Plugin,
    /// The builder went over a resource limit (memory).
    Limit,
    /// The host itself failed (disk, instantiation).
    Host,
}

impl FailureKind {
    fn label(self) -> &'static str {
        match self {
            FailureKind::InvalidJob => "invalid job",
            FailureKind::Source => "source error",
            FailureKind::Build => "build error",
            FailureKind::Registry => "registry error",
            FailureKind::Denied => "denied",
            FailureKind::Plugin => "plugin fault",
            FailureKind::Limit => "limit exceeded",
            FailureKind::Host => "host error",
        }
    }
}

/// How a run ended, as the host decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded(BuildResult),
    Failed { kind: FailureKind, message: String },
    Cancelled { reason: String },
    TimedOut { message: String },
}

impl Outcome {
    pub fn failed(kind: FailureKind, message: impl Into<String>) -> Self {
        Outcome::Failed {
            kind,
            message: message.into(),
        }
    }

    pub fn state(&self) -> State {
        match self {
            Outcome::Succeeded(_) => State::Succeeded,
            Outcome::Failed { .. } => State::Failed,
            Outcome::Cancelled { .. } => State::Cancelled,
            Outcome::TimedOut { .. } => State::TimedOut,
        }
    }

    /// The same outcome with `redact` applied to its message.
    pub fn redacted(self, redact: impl Fn(&str) -> String) -> Self {
        match self {
            Outcome::Succeeded(result) => Outcome::Succeeded(result),
            Outcome::Failed { kind, message } => Outcome::Failed {
                kind,
                message: redact(&message),
            },
            Outcome::Cancelled { reason } => Outcome::Cancelled {
                reason: redact(&reason),
            },
            Outcome::TimedOut { message } => Outcome::TimedOut {
                message: redact(&message),
            },
        }
    }

    /// The job's `error` text for this outcome; `None` on success.
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Succeeded(_) => None,
            Outcome::Failed { kind, message } => Some(format!("{}: {message}", kind.label())),
            Outcome::Cancelled { reason } => Some(format!("cancelled: {reason}")),
            Outcome::TimedOut { message } => Some(format!("timed out: {message}")),
        }
    }
}

/// A job and everything known about it. Cloning gives an independent
/// snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub repo_url: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub dockerfile_path: String,
    pub build_args: BTreeMap<String, String>,
    pub platforms: Vec<Platform>,
    pub builder: String,
    pub image: Option<String>,
    pub state: State,
    pub image_tag: Option<String>,
    pub digest: Option<Digest>,
    pub manifest: Manifest,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub attempts: u32,
}

impl Job {
    /// Validates `request` and makes a `queued` job of it. `id` and
    /// `builder` are the caller's choice after defaults were applied; the
    /// caller checks that the builder exists.
    pub fn from_request(
        request: JobRequest,
        id: JobId,
        builder: String,
        policy: &SubmitPolicy,
        now: DateTime<Utc>,
    ) -> Result<Self, InvalidJob> {
        validate_repo_url(&request.repo_url, policy)?;
        let git_ref = request.git_ref.unwrap_or_else(|| DEFAULT_REF.into());
        validate_ref(&git_ref)?;
        let dockerfile_path = request
            .dockerfile_path
            .unwrap_or_else(|| DEFAULT_DOCKERFILE.into());
        validate_dockerfile_path(&dockerfile_path)?;
        validate_build_args(&request.build_args)?;
        let platforms = parse_platforms(&request.platforms)?;
        if let Some(image) = &request.image {
            validate_image_ref(image).map_err(|e| InvalidJob::new("image", e))?;
        }
        Ok(Job {
            id,
            repo_url: request.repo_url,
            git_ref,
            dockerfile_path,
            build_args: request.build_args,
            platforms,
            builder,
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
        })
    }

    fn check(&self, to: State) -> Result<(), TransitionError> {
        if self.state.can_become(to) {
            Ok(())
        } else {
            Err(TransitionError {
                id: self.id.to_string(),
                from: self.state,
                to,
            })
        }
    }

    /// `queued → running`: counts an attempt and stamps `started_at`.
    pub fn start(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        self.check(State::Running)?;
        self.state = State::Running;
        self.attempts += 1;
        self.started_at = Some(now);
        Ok(())
    }

    /// Crash recovery only: a job found `running` when the host starts was
    /// interrupted by the host's death, not by anything it did, so it goes
    /// back to `queued` (its attempt stays counted). Any other state is
    /// refused.
    pub fn requeue_after_interruption(&mut self) -> Result<(), TransitionError> {
        if self.state != State::Running {
            return Err(TransitionError {
                id: self.id.to_string(),
                from: self.state,
                to: State::Queued,
            });
        }
        self.state = State::Queued;
        self.started_at = None;
        Ok(())
    }

    /// A running job whose run was lost with its host (the host died, or
    /// stopped renewing its lease; `what` says which): queued again while
    /// it has attempts left (the lost attempt stays counted), else failed.
    /// Returns the log line that says which.
    pub fn recover_lost_run(
        &mut self,
        max_attempts: u32,
        what: &str,
        now: DateTime<Utc>,
    ) -> Result<String, TransitionError> {
        if self.attempts < max_attempts {
            self.requeue_after_interruption()?;
            return Ok(format!(
                "[helix] {what}; queued again (attempt {} of {max_attempts})",
                self.attempts + 1
            ));
        }
        let message = format!("{what}, and the job has used all {max_attempts} attempts");
        self.finish(Outcome::failed(FailureKind::Host, message), now)?;
        Ok(format!("[helix] {what}; no attempts left"))
    }

    /// Moves to the terminal state of `outcome`, recording its result or
    /// error and stamping `completed_at`.
    pub fn finish(&mut self, outcome: Outcome, now: DateTime<Utc>) -> Result<(), TransitionError> {
        self.check(outcome.state())?;
        self.state = outcome.state();
        self.error = outcome.error();
        if let Outcome::Succeeded(result) = outcome {
            self.image_tag = Some(result.image_tag);
            self.digest = result.digest;
            self.manifest = result.manifest;
        }
        self.completed_at = Some(now);
        Ok(())
    }
}

pub(crate) fn validate_repo_url(url: &str, policy: &SubmitPolicy) -> Result<(), InvalidJob> {
    let err = |message: String| Err(InvalidJob::new("repo_url", message));
    if url.is_empty() || url.len() > 2048 {
        return err("must be 1 to 2048 characters".into());
    }
    if url.starts_with('-') {
        return err(format!(
            "{url:?} starts with '-' and could be read as an option"
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return err("must not contain white space or control characters".into());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if rest.is_empty() {
            return err(format!("{url:?} has no host or path after {scheme}://"));
        }
        return match scheme.as_str() {
            "https" | "http" | "ssh" | "git" => Ok(()),
            "file" if policy.allow_file_repos => Ok(()),
            "file" => err(
                "file:// repositories are disabled on this server (the operator can allow them)"
                    .into(),
            ),
            _ => err(format!(
                "transport {scheme:?} is not allowed; use https, http, ssh or git"
            )),
        };
    }
    // scp-like ssh syntax: [user@]host:path, with no '/' before the ':'.
    if let Some((host, path)) = url.split_once(':') {
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if host_ok && !path.is_empty() && !path.starts_with(':') {
            return Ok(());
        }
    }
    err(format!(
        "{url:?} is not a repository URL; use https://, http://, ssh://, git:// or user@host:path"
    ))
}

fn validate_ref(git_ref: &str) -> Result<(), InvalidJob> {
    let err = |message: String| Err(InvalidJob::new("ref", message));
    if git_ref.is_empty() || git_ref.len() > 255 {
        return err("must be 1 to 255 characters".into());
    }
    if git_ref.starts_with('-') {
        return err(format!(
            "{git_ref:?} starts with '-' and could be read as an option"
        ));
    }
    let bad_char = git_ref
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(*c));
    if let Some(c) = bad_char {
        return err(format!(
            "{git_ref:?} contains {c:?}, which git does not allow in a ref"
        ));
    }
    let bad_shape = git_ref.contains("..")
        || git_ref.contains("@{")
        || git_ref.contains("//")
        || git_ref.starts_with('/')
        || git_ref.ends_with(['/', '.'])
        || git_ref.ends_with(".lock")
        || git_ref == "@"
        || git_ref.split('/').any(|part| part.starts_with('.'));
    if bad_shape {
        return err(format!(
            "{git_ref:?} is not a valid git branch, tag or commit"
        ));
    }
    Ok(())
}

fn validate_dockerfile_path(path: &str) -> Result<(), InvalidJob> {
    let err = |message: String| Err(InvalidJob::new("dockerfile_path", message));
    if path.is_empty() || path.len() > 1024 {
        return err("must be 1 to 1024 characters".into());
    }
    if path.chars().any(char::is_control) {
        return err("must not contain control characters".into());
    }
    if path.starts_with('/') || path.starts_with('-') {
        return err(format!(
            "{path:?} must be a path relative to the repository root"
        ));
    }
    if path.split(['/', '\\']).any(|part| part == "..") {
        return err(format!(
            "{path:?} must stay inside the repository (no '..')"
        ));
    }
    Ok(())
}

fn validate_build_args(args: &BTreeMap<String, String>) -> Result<(), InvalidJob> {
    if args.len() > MAX_BUILD_ARGS {
        return Err(InvalidJob::new(
            "build_args",
            format!(
                "at most {MAX_BUILD_ARGS} build args are allowed, got {}",
                args.len()
            ),
        ));
    }
    for (name, value) in args {
        let mut bytes = name.bytes();
        let name_ok = name.len() <= 128
            && bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(InvalidJob::new(
                "build_args",
                format!("name {name:?} must match [A-Za-z_][A-Za-z0-9_]* (at most 128 characters)"),
            ));
        }
        if value.len() > MAX_BUILD_ARG_VALUE || value.contains('\0') {
            return Err(InvalidJob::new(
                "build_args",
                format!("value of {name} must be at most 64 KiB with no NUL bytes"),
            ));
        }
    }
    Ok(())
}

/// Parses, normalises, sorts and de-duplicates the requested platforms
/// (`x86_64` and `amd64` name one platform).
fn parse_platforms(raw: &[String]) -> Result<Vec<Platform>, InvalidJob> {
    if raw.len() > MAX_PLATFORMS {
        return Err(InvalidJob::new(
            "platforms",
            format!(
                "at most {MAX_PLATFORMS} platforms are allowed, got {}",
                raw.len()
            ),
        ));
    }
    if raw.is_empty() {
        return Ok(vec![Platform::default_target()]);
    }
    let set = raw
        .iter()
        .map(|p| Platform::parse(p).map_err(|e| InvalidJob::new("platforms", e.to_string())))
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(set.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> JobRequest {
        JobRequest {
            repo_url: "https://git.example/team/app.git".into(),
            ..JobRequest::default()
        }
    }

    fn job(request: JobRequest) -> Result<Job, InvalidJob> {
        Job::from_request(
            request,
            JobId::generate(),
            "simulated".into(),
            &SubmitPolicy::default(),
            Utc::now(),
        )
    }

    #[test]
    fn lifecycle_table() {
        use State::*;
        let allowed = [
            (Queued, Running),
            (Queued, Cancelled),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Running, TimedOut),
        ];
        for from in State::ALL {
            for to in State::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn terminal_states_never_change() {
        for state in State::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(
                State::ALL.iter().all(|next| !state.can_become(*next)),
                "{state}"
            );
        }
        assert!(!State::Queued.is_terminal() && !State::Running.is_terminal());
    }

    #[test]
    fn transitions_stamp_times_and_count_attempts() {
        let mut job = job(request()).unwrap();
        assert_eq!((job.state, job.attempts), (State::Queued, 0));
        assert!(job.started_at.is_none() && job.completed_at.is_none());

        let err = job
            .finish(Outcome::Cancelled { reason: "x".into() }, Utc::now())
            .map(|_| job.state);
        assert_eq!(err, Ok(State::Cancelled));
        assert!(job.completed_at.is_some() && job.started_at.is_none());
        let refused = job.start(Utc::now()).unwrap_err();
        assert_eq!(
            (refused.from, refused.to),
            (State::Cancelled, State::Running)
        );
        assert_eq!(
            job.state,
            State::Cancelled,
            "a refused transition changes nothing"
        );

        let mut job = self::job(request()).unwrap();
        job.start(Utc::now()).unwrap();
        assert_eq!((job.state, job.attempts), (State::Running, 1));
        assert!(job.started_at.is_some());
        job.finish(
            Outcome::failed(FailureKind::Build, "RUN make failed"),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(job.state, State::Failed);
        assert_eq!(job.error.as_deref(), Some("build error: RUN make failed"));
        assert!(job.completed_at >= job.started_at);
        let before = job.clone();
        assert!(
            job.finish(
                Outcome::TimedOut {
                    message: "x".into()
                },
                Utc::now()
            )
            .is_err()
        );
        assert_eq!(job, before);
    }

    #[test]
    fn only_running_jobs_are_requeued_after_an_interruption() {
        let mut job = job(request()).unwrap();
        assert!(job.requeue_after_interruption().is_err());
        job.start(Utc::now()).unwrap();
        job.requeue_after_interruption().unwrap();
        assert_eq!(
            (job.state, job.attempts, job.started_at),
            (State::Queued, 1, None)
        );
        job.start(Utc::now()).unwrap();
        assert_eq!(job.attempts, 2);
    }

    #[test]
    fn success_records_result() {
        let mut job = job(request()).unwrap();
        job.start(Utc::now()).unwrap();
        let digest = format!("sha256:{}", "b".repeat(64));
        let result = BuildResult::validate(
            "localhost:5000/app:1".into(),
            Some(digest.clone()),
            vec![],
            &job.platforms,
        )
        .unwrap();
        job.finish(Outcome::Succeeded(result), Utc::now()).unwrap();
        assert_eq!(job.state, State::Succeeded);
        assert_eq!(job.image_tag.as_deref(), Some("localhost:5000/app:1"));
        assert_eq!(
            job.digest.as_ref().map(Digest::as_str),
            Some(digest.as_str())
        );
        assert_eq!(job.error, None);
    }

    #[test]
    fn build_result_validation() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let both = [amd64.clone(), arm64.clone()];
        let err =
            |tag: &str, digest: Option<String>, entries: Vec<(&str, String)>, req: &[Platform]| {
                let entries = entries
                    .into_iter()
                    .map(|(p, d)| (p.to_string(), d))
                    .collect();
                BuildResult::validate(tag.into(), digest, entries, req).unwrap_err()
            };
        assert!(err("", None, vec![], &both[..1]).contains("without an image tag"));
        assert!(err("  ", None, vec![], &both[..1]).contains("without an image tag"));
        assert!(err("Bad Tag", None, vec![], &both[..1]).contains("invalid image tag"));
        assert!(
            err("app:1", Some("sha256:x".into()), vec![], &both[..1]).contains("invalid digest")
        );
        assert!(err("app:1", None, vec![("linux/amd64", d('a'))], &both).contains("linux/arm64"));
        assert!(
            err(
                "app:1",
                None,
                vec![("linux/amd64", d('a')), ("linux/s390x", d('b'))],
                &both[..1]
            )
            .contains("did not request")
        );
        assert!(
            err(
                "app:1",
                None,
                vec![("linux/amd64", d('a')), ("linux/x86_64", d('b'))],
                &both
            )
            .contains("twice")
        );
        let ok = BuildResult::validate(
            "app:1".into(),
            Some(d('c')),
            vec![
                ("linux/arm64".into(), d('a')),
                ("linux/amd64".into(), d('b')),
            ],
            &both,
        )
        .unwrap();
        assert_eq!(ok.manifest.platforms().cloned().collect::<Vec<_>>(), both);
    }

    #[test]
    fn request_defaults() {
        let job = job(request()).unwrap();
        assert_eq!(job.git_ref, "HEAD");
        assert_eq!(job.dockerfile_path, "Dockerfile");
        assert_eq!(job.platforms, vec![Platform::default_target()]);
    }

    #[test]
    fn platforms_are_normalised_sorted_and_unique() {
        let job = job(JobRequest {
            platforms: vec![
                "linux/arm64".into(),
                "Linux/x86_64".into(),
                "linux/amd64".into(),
            ],
            ..request()
        })
        .unwrap();
        let names: Vec<String> = job.platforms.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64"]);
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
    fn accepts_every_allowed_transport() {
        for url in [
            "https://h/r.git",
            "http://h/r",
            "ssh://git@h/r",
            "git://h/r",
            "git@github.example:team/r.git",
        ] {
            assert!(
                job(JobRequest {
                    repo_url: url.into(),
                    ..request()
                })
                .is_ok(),
                "{url}"
            );
        }
        let policy = SubmitPolicy {
            allow_file_repos: true,
        };
        let file = JobRequest {
            repo_url: "file:///srv/repo".into(),
            ..request()
        };
        assert!(
            Job::from_request(file, JobId::generate(), "s".into(), &policy, Utc::now()).is_ok()
        );
    }

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
        ] {
            assert!(value.get(field).is_some(), "missing {field}");
        }
        assert_eq!(value["state"], "queued");
        assert_eq!(value["platforms"][0], "linux/amd64");
    }

    #[test]
    fn request_rejects_unknown_fields() {
        let err = serde_json::from_str::<JobRequest>(r#"{"repo_url":"https://h/r","colour":1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
