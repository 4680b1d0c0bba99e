//! How a run ended: the validated result of a build, or whose fault its
//! failure was.

use crate::manifest::{Digest, DigestError, Manifest};
use crate::platform::{Platform, PlatformError};
use crate::reference::{ImageRefError, validate_image_ref};

use super::State;

/// What a builder got wrong in the result it reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResult {
    #[error("reported success without an image tag")]
    NoTag,
    #[error("reported an invalid image tag {tag:?}: {source}")]
    Tag {
        tag: String,
        #[source]
        source: ImageRefError,
    },
    #[error("reported {0}")]
    Digest(#[source] DigestError),
    #[error("reported {0}")]
    Platform(#[source] PlatformError),
    #[error("reported {source} for {platform}")]
    PlatformDigest {
        platform: Platform,
        #[source]
        source: DigestError,
    },
    #[error("reported platform {0} twice")]
    Twice(Platform),
    #[error("reported no image for platform(s) {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Missing(Vec<Platform>),
    #[error("reported platform {0}, which the job did not request")]
    Unrequested(Platform),
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
    ) -> Result<Self, InvalidResult> {
        if image_tag.trim().is_empty() {
            return Err(InvalidResult::NoTag);
        }
        validate_image_ref(&image_tag).map_err(|source| InvalidResult::Tag {
            tag: image_tag.clone(),
            source,
        })?;
        let digest = digest
            .map(|d| Digest::parse(&d))
            .transpose()
            .map_err(InvalidResult::Digest)?;
        let mut manifest = Manifest::new();
        for (platform, digest) in platform_digests {
            let platform = Platform::parse(&platform).map_err(InvalidResult::Platform)?;
            let digest = match Digest::parse(&digest) {
                Ok(digest) => digest,
                Err(source) => return Err(InvalidResult::PlatformDigest { platform, source }),
            };
            if manifest.insert(platform.clone(), digest).is_some() {
                return Err(InvalidResult::Twice(platform));
            }
        }
        if requested.len() > 1 {
            let missing: Vec<Platform> = requested
                .iter()
                .filter(|p| manifest.get(p).is_none())
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(InvalidResult::Missing(missing));
            }
        }
        if let Some(extra) = manifest.platforms().find(|p| !requested.contains(p)) {
            return Err(InvalidResult::Unrequested(extra.clone()));
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
    Failed {
        kind: FailureKind,
        message: String,
    },
    Cancelled {
        reason: String,
    },
    TimedOut {
        message: String,
    },
    /// Never started: it waited longer than its queue TTL.
    Expired {
        message: String,
    },
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
            Outcome::Expired { .. } => State::Expired,
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
            Outcome::Expired { message } => Outcome::Expired {
                message: redact(&message),
            },
        }
    }

    /// The job's `error` text for this outcome; `None` on success.
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Succeeded(_) => None,
            Outcome::Failed { kind, message } => Some(format!("{}: {message}", kind.label())),
            // "cancelled by request" says it once (as hosts of any version
            // ask it over a shared queue).
            Outcome::Cancelled { reason } if reason.starts_with("cancelled") => {
                Some(reason.clone())
            }
            Outcome::Cancelled { reason } => Some(format!("cancelled: {reason}")),
            Outcome::TimedOut { message } => Some(format!("timed out: {message}")),
            Outcome::Expired { message } => Some(format!("expired: {message}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                BuildResult::validate(tag.into(), digest, entries, req)
                    .unwrap_err()
                    .to_string()
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
}
