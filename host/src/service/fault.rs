//! Whose fault a failed run is, decided here and nowhere else: every step
//! of a run returns a typed error, and [`outcome`] turns it into the job's
//! fault class and the message the user reads.
//!
//! - the job's own: an invalid job, its Dockerfile or context, a base
//!   image that does not exist or lacks a requested platform (as the
//!   registry shows it, whatever the build tool said), a failing step;
//! - the source's: a repository or ref git cannot fetch;
//! - the registry's: unreachable, refusing, or not holding what was pushed;
//! - the host's: its disk (a tool's error saying it is full, read-only or
//!   failing, where no limit of the run's was reached), control groups,
//!   jail, engine or tools;
//! - a limit the build reached (named with the setting that raises it),
//!   a grant it lacks, or the plugin's own fault.
//!
//! Only infrastructure faults, the registry's and the host's, are retried
//! ([`is_infrastructure`]).

use crate::job::{FailureKind, Outcome};
use crate::log::JobLog;
use crate::platform::Platform;
use crate::plugin::{BuilderError, Reported};
use crate::registry::{BaseImageError, PublishError, Publisher};
use crate::rules::SourceError;
use crate::source::{CheckoutError, ContextError};

/// Why a run did not succeed, as the step that failed says it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("builder '{0}' is not loaded on this host")]
    NotLoaded(String),
    #[error("could not mount the builder's layer cache: {0}")]
    Cache(#[source] std::io::Error),
    #[error("could not create the job's control group: {0}")]
    Cgroup(#[source] std::io::Error),
    #[error("could not create the job workspace {}: {source}", root.display())]
    Workspace {
        root: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The managed Docker Engine of the run's slot did not start.
    #[error("{0}")]
    ManagedEngine(String),
    #[error("builder '{0}' builds in managed engines but has no cache slot")]
    NoSlot(String),
    #[error("could not make the run's jail: {0}")]
    Jail(#[from] super::confine::ConfineError),
    /// The builder's Docker Engine does not answer.
    #[error(transparent)]
    Engine(crate::docker_engine::DockerEngineError),
    #[error("the job names no image and the operator configured no default registry; set `image`")]
    NoImage,
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("could not hand the job its build secrets: {0}")]
    Secrets(#[source] std::io::Error),
    #[error(transparent)]
    Builder(#[from] BuilderError),
    #[error(transparent)]
    BaseImage(#[from] BaseImageError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("could not attach the build's provenance to the image: {0}")]
    Attest(String),
}

/// How a failure ends the job.
enum Ending {
    Failed(FailureKind),
    Cancelled(String),
    TimedOut,
}

impl Failure {
    fn ending(&self) -> Ending {
        use Ending::{Cancelled, Failed, TimedOut};
        use FailureKind::*;
        match self {
            Failure::NotLoaded(_)
            | Failure::Cache(_)
            | Failure::Cgroup(_)
            | Failure::Workspace { .. }
            | Failure::ManagedEngine(_)
            | Failure::NoSlot(_)
            | Failure::Jail(_)
            | Failure::Engine(_)
            | Failure::Secrets(_) => Failed(Host),
            Failure::NoImage | Failure::BaseImage(_) => Failed(InvalidJob),
            Failure::Checkout(e) => match e {
                CheckoutError::Cancelled { reason } => Cancelled(reason.clone()),
                CheckoutError::Git(_)
                | CheckoutError::Mirror(_)
                | CheckoutError::MirrorDamaged { .. }
                | CheckoutError::Tree { .. } => Failed(Host),
                CheckoutError::Clone { .. }
                | CheckoutError::RefNotFound { .. }
                | CheckoutError::NotOnRef { .. }
                | CheckoutError::Unresolved { .. }
                | CheckoutError::Checkout { .. }
                | CheckoutError::NoCommit { .. }
                | CheckoutError::TimedOut => Failed(Source),
            },
            Failure::Source(SourceError::Context(ContextError::Gone(_))) => Failed(Host),
            Failure::Source(_) => Failed(InvalidJob),
            Failure::Builder(e) => match e {
                BuilderError::Cancelled { reason } => Cancelled(reason.clone()),
                BuilderError::TimedOut { .. } => TimedOut,
                BuilderError::OutOfMemory { .. } => Failed(Limit),
                BuilderError::Workspace { .. } | BuilderError::Start { .. } => Failed(Host),
                BuilderError::Crashed { .. }
                | BuilderError::Invalid { .. }
                | BuilderError::Result { .. } => Failed(Plugin),
                BuilderError::UnsupportedByContract(_) => Failed(InvalidJob),
                BuilderError::Reported(reported) => Failed(match reported {
                    Reported::InvalidJob(_) => InvalidJob,
                    Reported::Source(_) => Source,
                    Reported::Build(_) => Build,
                    Reported::Registry(_) => Registry,
                    Reported::Denied(_) => Denied,
                    Reported::Internal { .. } => Plugin,
                }),
            },
            Failure::Publish(e) => match e {
                PublishError::Cancelled { reason } => Cancelled(reason.clone()),
                PublishError::PushTimedOut { .. }
                | PublishError::Refused { .. }
                | PublishError::EnginePush { .. }
                | PublishError::Index { .. }
                | PublishError::Unverified(_)
                | PublishError::Copy(_) => Failed(Registry),
                PublishError::Tool { .. } | PublishError::Engine(_) => Failed(Host),
                PublishError::Destination(_) => Failed(InvalidJob),
                PublishError::Builder(_) => Failed(Plugin),
            },
            Failure::Attest(_) => Failed(Registry),
        }
    }
}

/// The job's outcome for `failure`, its message redacted as the log is.
/// A failure of the build, the checkout or a push is blamed on `limit`
/// when the run reached one: the limit is named first (with the setting
/// that raises it), the tool's own error after it.
pub(crate) fn outcome(failure: Failure, limit: Option<&str>, log: &JobLog) -> Outcome {
    let message = without_dumps(&log.redact(&failure.to_string()));
    match failure.ending() {
        Ending::Cancelled(reason) => Outcome::Cancelled { reason },
        Ending::TimedOut => Outcome::TimedOut { message },
        Ending::Failed(kind) => match limit {
            Some(limit)
                if matches!(
                    kind,
                    FailureKind::Build | FailureKind::Registry | FailureKind::Source
                ) =>
            {
                Outcome::failed(
                    FailureKind::Limit,
                    format!("the build reached its {limit}; {message}"),
                )
            }
            // No limit of the run's was reached: the disk that failed is the host's.
            _ if matches!(kind, FailureKind::Build | FailureKind::Source)
                && host_disk_failed(&message) =>
            {
                Outcome::failed(
                    FailureKind::Host,
                    format!("the host's disk failed the run; tell its operator: {message}"),
                )
            }
            _ => Outcome::failed(kind, message),
        },
    }
}

/// `message` without the Go values a build tool printed with `%#v`
/// (`Unknown instruction: "RUNN" &imagebuilder.Step{Env:[]string{…}, …}`
/// reads `Unknown instruction: "RUNN"`): a `package.Type{…}`, `&` before
/// it or not, to its matching brace (braces in quoted strings skipped).
fn without_dumps(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((before, after)) = next_dump(rest) {
        out.push_str(before.trim_end());
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The text before the first dump in `text` and the text after it.
fn next_dump(text: &str) -> Option<(&str, &str)> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let mut search = 0;
    while let Some(found) = text[search..].find('{') {
        let brace = search + found;
        let start = text[..brace]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_name(c))
            .last()
            .map_or(brace, |(i, _)| i);
        let name = &text[start..brace];
        let typed = name.contains('.')
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && !name.ends_with('.');
        if typed && let Some(end) = matching_brace(&text[brace..]) {
            let start = text[..start].strip_suffix('&').map_or(start, str::len);
            return Some((&text[..start], &text[brace + end + 1..]));
        }
        search = brace + 1;
    }
    None
}

/// The index of the brace closing the one `text` starts with.
fn matching_brace(text: &str) -> Option<usize> {
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '{' if !quoted => depth += 1,
            '}' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether a tool's error (not a build step's output) says the disk it
/// wrote to is full, read-only or failing. The step a tool names
/// (`building at STEP "RUN …"`) is the Dockerfile's text, the user's, so
/// it is never read for it.
fn host_disk_failed(message: &str) -> bool {
    let message = without_step_text(message).to_ascii_lowercase();
    [
        "no space left on device",
        "read-only file system",
        "input/output error",
    ]
    .iter()
    .any(|said| message.contains(said))
}

/// `message` without the Dockerfile text of each `STEP "…"` it quotes (Go's
/// `%q`: to the first quote not escaped).
fn without_step_text(message: &str) -> String {
    const STEP: &str = "STEP \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(STEP) {
        out.push_str(&rest[..at + STEP.len()]);
        let quoted = &rest[at + STEP.len()..];
        let mut escaped = false;
        let end = quoted.char_indices().find_map(|(i, c)| match c {
            _ if escaped => {
                escaped = false;
                None
            }
            '\\' => {
                escaped = true;
                None
            }
            '"' => Some(i),
            _ => None,
        });
        match end {
            Some(end) => rest = &quoted[end..],
            // Unterminated: all of it is the step's.
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// Whether `outcome` is an infrastructure fault, which another attempt
/// may not meet: the registry's or the host's.
pub(super) fn is_infrastructure(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Failed {
            kind: FailureKind::Registry | FailureKind::Host,
            ..
        }
    )
}

/// A builder's failure, looked at further where the build tool's words
/// can mislead: a base image the registry shows missing, or lacking one of
/// `platforms`, is the job's own fault, not the registry's.
pub(super) async fn examine(
    error: BuilderError,
    publisher: &Publisher,
    base_images: &[String],
    platforms: &[Platform],
) -> Failure {
    let pulling = matches!(
        error,
        BuilderError::Reported(Reported::Registry(_) | Reported::Build(_))
    );
    if pulling
        && !base_images.is_empty()
        && let Some(base) = publisher.check_base_images(base_images, platforms).await
    {
        return Failure::BaseImage(base);
    }
    Failure::Builder(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(failure: Failure, limit: Option<&str>) -> (Option<String>, bool) {
        let outcome = outcome(failure, limit, &JobLog::new(10));
        (outcome.error(), is_infrastructure(&outcome))
    }

    fn reported(reported: Reported) -> Failure {
        Failure::Builder(BuilderError::Reported(reported))
    }

    #[test]
    fn each_failure_gets_its_class_and_only_infrastructure_is_retried() {
        let build = || reported(Reported::Build("podman build failed: exit status 1".into()));
        assert_eq!(
            error_of(build(), None),
            (
                Some("build error: podman build failed: exit status 1".into()),
                false
            )
        );
        assert_eq!(
            error_of(
                build(),
                Some("disk limit of 64 MiB (builders.b.build_disk_mib)")
            ),
            (
                Some(
                    "limit exceeded: the build reached its disk limit of 64 MiB \
                     (builders.b.build_disk_mib); podman build failed: exit status 1"
                        .into()
                ),
                false
            )
        );
        let read_only = reported(Reported::Build(
            "podman build failed: mkdir /slot/storage: read-only file system".into(),
        ));
        let (error, retried) = error_of(read_only, None);
        assert!(
            error
                .unwrap()
                .starts_with("host error: the host's disk failed the run")
        );
        assert!(retried);
        // The step's own text names a disk fault; the tool's error does not.
        let step = reported(Reported::Build(
            "podman build failed: building at STEP \"RUN echo \\\"read-only file system\\\"\": \
             while running runtime: exit status 1"
                .into(),
        ));
        let (error, retried) = error_of(step, None);
        assert!(error.unwrap().starts_with("build error: "));
        assert!(!retried);
        let (error, retried) = error_of(reported(Reported::Registry("pull: 503".into())), None);
        assert_eq!(error.as_deref(), Some("registry error: pull: 503"));
        assert!(retried);
        let missing = Failure::BaseImage(BaseImageError::Missing {
            image: "r.test/base:1".into(),
        });
        let (error, retried) = error_of(missing, None);
        assert!(
            error
                .unwrap()
                .starts_with("invalid job: base image r.test/base:1 does not exist")
        );
        assert!(!retried);
        let dumped = reported(Reported::Build(
            "buildah build failed: Unknown instruction: \"RUNN\" &imagebuilder.Step{Env:[]string{\"PATH=/x\"}, \
             Command:\"runn\", Args:[]string{\"echo }\"}, Flags:map[string]string{}}: exit status 125"
                .into(),
        ));
        assert_eq!(
            error_of(dumped, None).0.as_deref(),
            Some(
                "build error: buildah build failed: Unknown instruction: \"RUNN\": exit status 125"
            )
        );
        let gone = Failure::Checkout(CheckoutError::RefNotFound {
            url: "http://git.test/r.git".into(),
            git_ref: "x".into(),
        });
        assert!(!error_of(gone, None).1, "a source error is not retried");
    }
}
