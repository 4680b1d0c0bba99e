//! Where the image goes, and reading what was pushed.

use crate::bindings::helix::build::job_context;
use crate::{BuildError, Job, Platform, PlatformDigest};

/// The operator's registry settings for this builder.
pub(crate) struct Settings {
    default_registry: Option<String>,
    insecure: Vec<String>,
    pub(crate) allow_file_repos: bool,
}

impl Settings {
    pub(crate) fn read() -> Self {
        Settings {
            default_registry: job_context::setting("default_registry").filter(|r| !r.is_empty()),
            insecure: job_context::setting("insecure_registries")
                .unwrap_or_default()
                .split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
            allow_file_repos: job_context::setting("allow_file_repos").as_deref() == Some("true"),
        }
    }

    /// Whether pushing to `image`'s registry skips TLS verification.
    pub(crate) fn is_insecure(&self, image: &str) -> bool {
        let registry = image.split('/').next().unwrap_or_default();
        self.insecure.iter().any(|h| h == registry)
    }
}

/// The job's image, or `<default_registry>/<repository name>:<job id>`.
pub(crate) fn reference(job: &Job, settings: &Settings) -> Result<String, BuildError> {
    if let Some(image) = &job.image {
        return Ok(if image.rsplit('/').next().is_some_and(|last| last.contains(':') || last.contains('@')) {
            image.clone()
        } else {
            format!("{image}:{}", job.id)
        });
    }
    let Some(registry) = &settings.default_registry else {
        return Err(BuildError::InvalidJob(
            "the job names no image and the operator configured no default registry; set `image`".into(),
        ));
    };
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
    Ok(format!("{registry}/{name}:{}", job.id))
}

/// Per-platform digests from `manifest inspect` JSON.
pub(crate) fn parse_manifest_list(json: &str) -> Result<Vec<PlatformDigest>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("manifest list is not JSON: {e}"))?;
    let entries = value["manifests"]
        .as_array()
        .ok_or("manifest list has no `manifests` array")?;
    entries
        .iter()
        .map(|entry| {
            let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
            let platform = &entry["platform"];
            Ok(PlatformDigest {
                platform: Platform {
                    os: text(&platform["os"]).ok_or("manifest entry without os")?,
                    arch: text(&platform["architecture"]).ok_or("manifest entry without architecture")?,
                    variant: text(&platform["variant"]).filter(|v| !v.is_empty()),
                },
                digest: text(&entry["digest"]).ok_or("manifest entry without digest")?,
            })
        })
        .collect()
}
