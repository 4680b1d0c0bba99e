//! Why a builder's run produced nothing to publish, as typed facts: the
//! host's classifier (`helix-build`'s `service::fault`) decides whose fault
//! each is.

use std::path::PathBuf;

/// Why [`super::Builder::run`] returned no image.
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    /// The job was cancelled while the builder ran.
    #[error("cancelled: {reason}")]
    Cancelled { reason: String },
    /// The run went over the builder's time limit.
    #[error(
        "builder '{builder}' ran longer than its limit of {limit_secs}s (builders.{builder}.timeout_secs)"
    )]
    TimedOut { builder: String, limit_secs: u64 },
    /// The instance went over the builder's memory limit.
    #[error(
        "builder '{builder}' needed more memory than its limit of {limit_mib} MiB (builders.{builder}.memory_mib)"
    )]
    OutOfMemory { builder: String, limit_mib: usize },
    /// The host could not give the instance its workspace.
    #[error("could not open the job workspace {}: {source}", workspace.display())]
    Workspace {
        workspace: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The host could not instantiate the component (not a trap of its own).
    #[error("could not start builder '{builder}': {source:#}")]
    Start {
        builder: String,
        #[source]
        source: wasmtime::Error,
    },
    /// The guest trapped or panicked; `message` is what it said.
    #[error("builder '{builder}' crashed: {message}")]
    Crashed { builder: String, message: String },
    /// The guest returned something its contract does not allow.
    #[error("builder '{builder}' {problem}")]
    Invalid { builder: String, problem: String },
    /// A simulated builder's result is not a valid one.
    #[error("builder '{builder}' {source}")]
    Result {
        builder: String,
        #[source]
        source: helix_core::job::InvalidResult,
    },
    /// The job needs what the component's older contract cannot carry.
    #[error(transparent)]
    UnsupportedByContract(#[from] crate::wit::UnsupportedByContract),
    /// The guest reported an error of its own.
    #[error(transparent)]
    Reported(Reported),
}

/// What a builder said went wrong, by the class its contract gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reported {
    #[error("{0}")]
    InvalidJob(String),
    #[error("{0}")]
    Source(String),
    #[error("{0}")]
    Build(String),
    #[error("{0}")]
    Registry(String),
    #[error("{0}")]
    Denied(String),
    /// A fault of the builder itself (`internal`, or a cancel nobody made).
    #[error("builder '{builder}': {message}")]
    Internal { builder: String, message: String },
}
