//! Typed values: what an option's value, or a typed argument pattern, may
//! be (see [`ValueType`]), checked against the job's own values and the
//! operator's registries and repository policy. Paths reach the program
//! as the canonical absolute path the host checked, never as the builder
//! wrote them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::JobValues;

/// What an option's value, or a typed pattern, accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// An option without a value.
    Flag,
    /// Any value.
    Text,
    /// An existing path inside the job workspace, handed over canonical.
    Path,
    /// An existing directory inside the job workspace, handed over
    /// canonical: a build context that can only be read from the checkout
    /// (a context that is no local directory is fetched by the tool or the
    /// engine, from anywhere).
    Dir,
    /// A path inside the job workspace that does not exist yet: where a
    /// program writes something new. Nothing can already lie below it (a
    /// link planted in the checkout, say) for the program to follow.
    /// Handed over as its canonical parent joined with the new name.
    Output,
    /// The job's own Dockerfile, handed over canonical: a builder cannot
    /// build a Dockerfile of its own choosing (one it wrote, or another
    /// file of the checkout) under the job's name.
    Dockerfile,
    /// The job's own build context directory, handed over canonical: the
    /// host checked the Dockerfile's bind mounts against it.
    Context,
    /// `NAME=VALUE`, exactly one of the job's build args.
    #[serde(rename = "build-arg")]
    BuildArg,
    /// An image reference in a registry the operator configured.
    Image,
    /// A repository URL the job policy accepts.
    Url,
    /// `id=NAME`, naming one of the job's build secrets; the host adds
    /// where its value is (`,src=FILE`).
    Secret,
    /// The job's repository in its builder's registry cache, nothing else:
    /// a build tool pushes there with the host's registry credentials.
    Cache,
    /// The control group the job run's `RUN` steps go in (podman's
    /// `--cgroup-parent`), nothing else: its limits are the job's.
    Cgroup,
    /// The name the host gave the job's images in its Docker Engine, with
    /// or without a tag: a build can neither overwrite another job's image
    /// there nor leave one the host does not remove.
    EngineImage,
}

impl ValueType {
    pub(super) fn from_placeholder(name: &str) -> Option<Self> {
        match name {
            "path" => Some(ValueType::Path),
            "dir" => Some(ValueType::Dir),
            "dockerfile" => Some(ValueType::Dockerfile),
            "context" => Some(ValueType::Context),
            "build-arg" => Some(ValueType::BuildArg),
            "engine-image" => Some(ValueType::EngineImage),
            "output" => Some(ValueType::Output),
            "image" => Some(ValueType::Image),
            "url" => Some(ValueType::Url),
            "secret" => Some(ValueType::Secret),
            "cache" => Some(ValueType::Cache),
            "cgroup" => Some(ValueType::Cgroup),
            _ => None,
        }
    }
}

/// What typed values are checked against: the operator's registries and
/// repository policy.
#[derive(Debug, Clone, Default)]
pub struct ValuePolicy {
    /// Registries (`host[:port]`) an `image` may name.
    pub registries: BTreeSet<String>,
    /// Whether a `url` may use `file://`.
    pub allow_file_repos: bool,
}

/// Where one call runs, for checking `path` and `secret` values.
pub struct CallSite<'a> {
    /// The workspace, canonical.
    pub workspace: &'a Path,
    /// The call's working directory, canonical and inside the workspace.
    pub cwd: &'a Path,
    /// What the host set for the job: its secrets, registry cache and
    /// control group.
    pub job: &'a JobValues,
}

impl ValuePolicy {
    /// Checks one typed value; `Some` is the value the host completed
    /// (a secret's file), to pass instead.
    pub(super) fn check(
        &self,
        ty: ValueType,
        value: &str,
        site: &CallSite<'_>,
    ) -> Result<Option<String>, String> {
        match ty {
            ValueType::Flag | ValueType::Text => Ok(None),
            ValueType::Path => existing_in_workspace(value, site).map(canonical),
            ValueType::Dir => {
                let resolved = existing_in_workspace(value, site)?;
                match resolved.is_dir() {
                    true => Ok(canonical(resolved)),
                    false => Err(format!("{value:?} is not a directory of the workspace")),
                }
            }
            ValueType::Dockerfile => {
                pinned_path(value, site, site.job.dockerfile.as_deref(), "Dockerfile")
            }
            ValueType::Context => {
                pinned_path(value, site, site.job.context.as_deref(), "build context")
            }
            ValueType::BuildArg => {
                let Some((name, given)) = value.split_once('=') else {
                    return Err(format!(
                        "build arg {value:?} has no value: the tool would take it from its own environment"
                    ));
                };
                if let Some(why) = helix_core::job::reserved_build_arg(name) {
                    return Err(format!("build arg {name}: {why}"));
                }
                match site.job.build_args.get(name) {
                    Some(wanted) if wanted == given => Ok(None),
                    _ => Err(format!(
                        "build arg {name:?} is not one of the job's build args as the job gives it"
                    )),
                }
            }
            ValueType::EngineImage => match site.job.engine_image.as_deref() {
                Some(name) if is_engine_image(value, name) => Ok(None),
                Some(name) => Err(format!(
                    "{value:?} is not the job's image in the engine; only {name} or {name}:TAG is"
                )),
                None => Err(format!(
                    "{value:?}: the builder has no Docker Engine (builders.<name>.engine)"
                )),
            },
            ValueType::Output => new_in_workspace(value, site).map(canonical),
            ValueType::Secret => {
                let name = value.strip_prefix("id=").unwrap_or_default();
                match site.job.secrets.get(name) {
                    Some(file) => Ok(Some(format!("id={name},src={}", file.display()))),
                    None if name.is_empty() || name.contains(',') => Err(format!(
                        "{value:?} must be id=NAME; the host says where the value is"
                    )),
                    None => Err(format!("secret '{name}' is not one of the job's secrets")),
                }
            }
            ValueType::Cache => match site.job.registry_cache.as_deref() {
                Some(cache) if value == cache => Ok(None),
                Some(cache) => Err(format!(
                    "{value:?} is not the job's registry cache; only {cache:?} is"
                )),
                None => Err(format!(
                    "{value:?}: the builder has no registry cache (builders.<name>.registry_cache)"
                )),
            },
            ValueType::Cgroup => match site.job.cgroup.as_deref().map(|c| c.steps_path()) {
                Some(path) if value == path => Ok(None),
                Some(path) => Err(format!(
                    "{value:?} is not the job's control group; only {path:?} is"
                )),
                None => Err(format!("{value:?}: the job has no control group")),
            },
            ValueType::Image => {
                helix_core::reference::validate_image_ref(value)
                    .map_err(|e| format!("{value:?} is not an image reference: {e}"))?;
                let registry = helix_core::reference::registry_of(value);
                if value.contains('/') && self.registries.contains(registry) {
                    Ok(None)
                } else {
                    Err(format!(
                        "image {value:?} is not in a registry the operator configured"
                    ))
                }
            }
            ValueType::Url => helix_core::job::validate_repo_url(value, self.allow_file_repos)
                .map(|()| None)
                .map_err(|e| format!("{value:?}: {}", e.message)),
        }
    }
}

/// Whether `value` is `name` or `name:TAG`, TAG as Docker allows one.
fn is_engine_image(value: &str, name: &str) -> bool {
    match value.strip_prefix(name) {
        Some("") => true,
        Some(rest) => rest.strip_prefix(':').is_some_and(|tag| {
            tag.len() <= 128
                && tag
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        }),
        None => false,
    }
}
/// A path argument names something inside the workspace relative to the
/// call's directory (an absolute one — `/workspace/…` included — would
/// mean that path on the host): the canonical path it resolves to, symbolic
/// links followed, when that exists and lies inside the workspace.
fn existing_in_workspace(value: &str, site: &CallSite<'_>) -> Result<PathBuf, String> {
    let path = Path::new(value);
    if value.is_empty() || path.is_absolute() {
        return Err(format!("path {value:?} is outside the job workspace"));
    }
    match site.cwd.join(path).canonicalize() {
        Ok(resolved) if resolved.starts_with(site.workspace) => Ok(resolved),
        Ok(_) => Err(format!("path {value:?} is outside the job workspace")),
        Err(_) => Err(format!(
            "path {value:?} does not exist in the job workspace"
        )),
    }
}

/// An `output` path: its longest existing prefix must resolve inside the
/// workspace and be a directory, the rest must not exist and holds no
/// `..`; the canonical prefix joined with the rest.
fn new_in_workspace(value: &str, site: &CallSite<'_>) -> Result<PathBuf, String> {
    let outside = || format!("path {value:?} is outside the job workspace");
    let path = Path::new(value);
    if value.is_empty() || path.is_absolute() {
        return Err(outside());
    }
    let full = site.cwd.join(path);
    if std::fs::symlink_metadata(&full).is_ok() {
        return Err(format!("output path {value:?} exists already"));
    }
    let mut existing = full.as_path();
    let mut missing = Vec::new();
    // `file_name` is `None` for a `..`, so one in the missing part fails.
    while std::fs::symlink_metadata(existing).is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                existing = parent;
            }
            _ => return Err(outside()),
        }
    }
    match existing.canonicalize() {
        Ok(resolved) if resolved.starts_with(site.workspace) && resolved.is_dir() => {
            Ok(missing.iter().rev().fold(resolved, |p, name| p.join(name)))
        }
        _ => Err(outside()),
    }
}

/// A path value that must be exactly `pinned`, the job's `what`.
fn pinned_path(
    value: &str,
    site: &CallSite<'_>,
    pinned: Option<&Path>,
    what: &str,
) -> Result<Option<String>, String> {
    let Some(pinned) = pinned else {
        return Err(format!("{value:?}: the job has no {what} to build"));
    };
    match existing_in_workspace(value, site) {
        Ok(resolved) if resolved == pinned => Ok(canonical(resolved)),
        _ => Err(format!(
            "{value:?} is not the job's {what}; only {} is",
            pinned.display()
        )),
    }
}

/// What a program gets for a path value: the one the host checked.
fn canonical(path: PathBuf) -> Option<String> {
    Some(path.display().to_string())
}
