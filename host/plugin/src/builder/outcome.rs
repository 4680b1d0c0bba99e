//! What a builder's run comes to: the output it returned checked against
//! what it is (real or simulated), and its errors and crashes as typed
//! errors.

use std::path::{Path, PathBuf};

use super::{Backend, Builder, BuilderError, Built, Reported, platform_string};
use crate::wit::latest::{BuildError, BuildOutput};
use helix_core::job::{BuildResult, Job};
use helix_sandbox::cancel::CancelSignal;
use wasmtime::Trap;

impl Builder {
    /// A real builder must leave its image in the job's container storage
    /// or an OCI layout inside the workspace; a
    /// simulated one reports a pretend image whose fields must be valid.
    pub(super) fn validate(
        &self,
        job: &Job,
        output: BuildOutput,
        workspace: &Path,
    ) -> Result<Built, BuilderError> {
        let fault = |problem: String| BuilderError::Invalid {
            builder: self.info.name.clone(),
            problem,
        };
        match (output, matches!(self.backend, Backend::Simulated)) {
            (BuildOutput::OciLayout(path), false) => layout_in(workspace, &path)
                .map(Built::Layout)
                .map_err(fault),
            (BuildOutput::LocalImage, false) => Ok(Built::LocalImage),
            (BuildOutput::Simulated(image), true) => {
                let platform_digests = image
                    .manifest
                    .into_iter()
                    .map(|entry| (platform_string(&entry.platform), entry.digest))
                    .collect();
                BuildResult::validate(
                    image.image_tag,
                    image.digest,
                    platform_digests,
                    &job.platforms,
                )
                .map(Built::Simulated)
                .map_err(|source| BuilderError::Result {
                    builder: self.info.name.clone(),
                    source,
                })
            }
            (BuildOutput::OciLayout(_) | BuildOutput::LocalImage, true) => {
                Err(fault("is simulated but returned an image to push".into()))
            }
            (BuildOutput::Simulated(_), false) => Err(fault(
                "returned a simulated image, but its info does not say it is simulated".into(),
            )),
        }
    }

    pub(super) fn build_error(&self, error: BuildError, cancel: &CancelSignal) -> BuilderError {
        let builder = self.info.name.clone();
        let reported = match error {
            BuildError::Cancelled if cancel.is_cancelled() => {
                return BuilderError::Cancelled {
                    reason: cancel.reason(),
                };
            }
            BuildError::Cancelled => {
                return BuilderError::Invalid {
                    builder,
                    problem: "reported the job cancelled, but nobody cancelled it".into(),
                };
            }
            BuildError::InvalidJob(m) => Reported::InvalidJob(m),
            BuildError::Source(m) => Reported::Source(m),
            BuildError::Build(m) => Reported::Build(m),
            BuildError::Registry(m) => Reported::Registry(m),
            BuildError::Denied(m) => Reported::Denied(m),
            BuildError::Internal(message) => Reported::Internal { builder, message },
        };
        BuilderError::Reported(reported)
    }
}

/// The panic message a Rust guest printed, or the last lines of stderr,
/// followed by the trap itself.
pub(super) fn crash_message(error: &wasmtime::Error, stderr_tail: &[String]) -> String {
    let panic_start = stderr_tail.iter().rposition(|l| l.contains("panicked at"));
    let said: Vec<&str> = match panic_start {
        Some(i) => stderr_tail[i..].iter().map(String::as_str).collect(),
        None => stderr_tail
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(String::as_str)
            .collect(),
    };
    let said: Vec<&str> = said
        .into_iter()
        .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let cause = match error.downcast_ref::<Trap>() {
        Some(trap) => format!("wasm trap: {trap}"),
        None => format!("{error:#}"),
    };
    if said.is_empty() {
        cause
    } else {
        format!("{} ({cause})", said.join(" "))
    }
}

/// The host path of a layout a builder names: relative to the workspace,
/// plain directory names only, no symbolic link on the way.
fn layout_in(workspace: &Path, relative: &str) -> Result<PathBuf, String> {
    let path = Path::new(relative);
    let plain = !relative.is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return Err(format!(
            "named its image {relative:?}; it must be a path inside the workspace such as \"image\""
        ));
    }
    let mut host = workspace.to_path_buf();
    for part in path.components() {
        host.push(part);
        let meta = std::fs::symlink_metadata(&host)
            .map_err(|e| format!("left no image at {relative:?}: {e}"))?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "named its image {relative:?}, but {} is a symbolic link",
                host.display()
            ));
        }
    }
    Ok(host)
}
