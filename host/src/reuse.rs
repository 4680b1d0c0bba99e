//! No work when nothing changed: a job whose build inputs equal those of
//! an earlier successful job of its project gets that job's image under
//! its own name (a manifest stored again, verified as after a push)
//! instead of a build.
//!
//! The inputs are everything a build reads that the host can name: the
//! tree of the context at the commit, the Dockerfile's digest, build args,
//! target, labels, platforms, the builder (name, component digest, grants
//! digest, network) and each base image's digest as its registry resolves
//! it now, and the values of the build's secrets by a keyed digest (never
//! the values). A build step's own fetches (`RUN curl …`) are not inputs,
//! as they are not for BuildKit's cache; `no_cache` opts out.
//!
//! An earlier build is found by its inputs' digest, kept as a job document
//! named after it and its scope: the project, and whether the ref is
//! protected. A protected job reuses only protected builds (an unprotected
//! ref never writes what a release build reads, as with cache slots); an
//! unprotected one reuses either.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use hmac::{Hmac, Mac as _};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::job::{Job, State};
use crate::plugin::BuilderInfo;
use crate::reference::repository_of;
use crate::registry::oci::{RegistryClient, reference};
use crate::rules::CheckedBuild;
use crate::secrets::BuildSecrets;
use crate::store::JobStore;

/// Where the digests of a build's inputs are kept: `inputs/<project or
/// ->/<protected|unprotected>/<digest>`.
const RECORD_PREFIX: &str = "inputs";

/// Earlier jobs of the same inputs looked at, the newest first: an older
/// one is tried when a newer one's image has left the registry.
const CANDIDATES: usize = 3;

/// The key of the secrets' digests: a digest of a guessable secret
/// without it would tell the secret to whoever reads the store.
pub struct ReuseKey([u8; 32]);

impl ReuseKey {
    /// The key in `path`, made there (readable by its owner only) on
    /// first use. Hosts sharing a store with keys of their own reuse each
    /// other's builds only where no secret is used.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0; 32];
                key.copy_from_slice(&bytes);
                return Ok(ReuseKey(key));
            }
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a 32-byte key; delete it to make a new one",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut key = [0; 32];
        getrandom::getrandom(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?
            .write_all(&key)?;
        Ok(ReuseKey(key))
    }

    fn digest(&self, name: &str, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Everything a build reads that the host can name (see the module docs).
#[derive(Debug, Serialize)]
pub struct BuildInputs {
    context_tree: String,
    dockerfile_sha256: String,
    build_args: BTreeMap<String, String>,
    target: Option<String>,
    labels: BTreeMap<String, String>,
    platforms: Vec<String>,
    builder: String,
    component_digest: String,
    grants_digest: String,
    network: String,
    /// Each base image with its digest.
    base_images: BTreeMap<String, String>,
    /// Each secret's keyed digest.
    secrets: BTreeMap<String, String>,
}

/// Why a job's inputs could not all be named: it is built as usual.
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    #[error("base image {image} cannot be resolved in its registry: {said}")]
    BaseImage { image: String, said: String },
    #[error("secret '{0}' is no longer defined")]
    Secret(String),
}

impl BuildInputs {
    /// The inputs of `job`'s build of `source` (its context's tree
    /// `context_tree`), with its base images resolved through `registry`
    /// (the job's own credentials).
    pub async fn of(
        job: &Job,
        builder: &BuilderInfo,
        source: &CheckedBuild,
        context_tree: String,
        registry: &RegistryClient,
        secrets: &BuildSecrets,
        key: &ReuseKey,
    ) -> Result<Self, InputsError> {
        let mut base_images = BTreeMap::new();
        for image in &source.external_images {
            let unresolved = |said: String| InputsError::BaseImage {
                image: image.clone(),
                said,
            };
            let pinned = reference(image).map_err(unresolved)?;
            let manifest = registry
                .manifest(&pinned)
                .await
                .map_err(unresolved)?
                .ok_or_else(|| unresolved("no such manifest".into()))?;
            base_images.insert(image.clone(), manifest.digest);
        }
        let mut secret_digests = BTreeMap::new();
        for name in &job.secrets {
            let value = secrets
                .value(name)
                .ok_or_else(|| InputsError::Secret(name.clone()))?;
            secret_digests.insert(name.clone(), key.digest(name, value));
        }
        let grants = serde_json::to_vec(&builder.grants).unwrap_or_default();
        Ok(BuildInputs {
            context_tree,
            dockerfile_sha256: source.dockerfile_sha256.clone(),
            build_args: job.build_args.clone(),
            target: job.target.clone(),
            labels: job.labels.clone(),
            platforms: job.platforms.iter().map(ToString::to_string).collect(),
            builder: builder.name.clone(),
            component_digest: builder.component_digest.clone(),
            grants_digest: crate::registry::oci::digest_of(&grants),
            network: builder.network.flag_value().to_string(),
            base_images,
            secrets: secret_digests,
        })
    }

    fn digest(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("inputs serialize");
        hex::encode(Sha256::digest(canonical))
    }

    /// The document name that records a successful build of these inputs
    /// by `job`, and its body (the inputs, for whoever asks why).
    pub fn record(&self, job: &Job) -> (String, String) {
        let body = serde_json::to_string_pretty(self).expect("inputs serialize");
        (record_name(job, job.protected, &self.digest()), body)
    }

    /// The newest earlier successful job of `job`'s project with these
    /// inputs whose image `registry` still holds at its digest; `None`
    /// when there is none.
    pub async fn earlier_build(
        &self,
        job: &Job,
        image: &str,
        store: &dyn JobStore,
        registry: &RegistryClient,
    ) -> Option<EarlierBuild> {
        let digest = self.digest();
        // A protected job reads only protected builds.
        let scopes: &[bool] = match job.protected {
            true => &[true],
            false => &[false, true],
        };
        for protected in scopes {
            let name = record_name(job, *protected, &digest);
            let ids = match store.jobs_with_record(&name, CANDIDATES).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(job = %job.id, "cannot look for an earlier build: {e}");
                    return None;
                }
            };
            let mut earlier = Vec::new();
            for id in ids.into_iter().filter(|id| id != job.id.as_str()) {
                if let Ok(Some(stored)) = store.get(&id).await {
                    earlier.push(stored);
                }
            }
            // One in the job's own repository first: its blobs and its
            // SBOMs are there already.
            earlier.sort_by_key(|e| {
                e.image_tag.as_deref().map(repository_of) != Some(repository_of(image))
            });
            for stored in earlier {
                if let Some(earlier) = EarlierBuild::still_there(registry, stored).await {
                    return Some(earlier);
                }
            }
        }
        None
    }
}

fn record_name(job: &Job, protected: bool, digest: &str) -> String {
    format!(
        "{RECORD_PREFIX}/{}/{}/{digest}",
        job.project.as_deref().unwrap_or("-"),
        match protected {
            true => "protected",
            false => "unprotected",
        }
    )
}

/// A successful earlier job whose image the registry holds.
#[derive(Debug, Clone)]
pub struct EarlierBuild {
    /// Its id.
    pub job: String,
    /// Its image, `repository@sha256:…`.
    pub pinned: String,
}

impl EarlierBuild {
    /// Job `job`, if it succeeded and its image is still in the registry at
    /// the digest it pushed.
    async fn still_there(registry: &RegistryClient, job: Job) -> Option<Self> {
        if job.state != State::Succeeded {
            return None;
        }
        let image_tag = job.image_tag?;
        let digest = job.digest?;
        let pinned = format!("{}@{}", repository_of(&image_tag), digest.as_str());
        registry.manifest(&reference(&pinned).ok()?).await.ok()??;
        Some(EarlierBuild {
            job: job.id.to_string(),
            pinned,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> BuildInputs {
        BuildInputs {
            context_tree: "a".repeat(40),
            dockerfile_sha256: "b".repeat(64),
            build_args: BTreeMap::from([("A".into(), "1".into())]),
            target: None,
            labels: BTreeMap::new(),
            platforms: vec!["linux/amd64".into()],
            builder: "podman".into(),
            component_digest: "sha256:c".into(),
            grants_digest: "sha256:d".into(),
            network: "none".into(),
            base_images: BTreeMap::from([("r/base:1".into(), "sha256:e".into())]),
            secrets: BTreeMap::new(),
        }
    }

    #[test]
    fn every_input_changes_the_digest() {
        let same = inputs().digest();
        assert_eq!(same, inputs().digest(), "the digest is deterministic");
        let changes: Vec<fn(&mut BuildInputs)> = vec![
            |i| i.context_tree = "f".repeat(40),
            |i| i.dockerfile_sha256 = "f".repeat(64),
            |i| {
                i.build_args.insert("A".into(), "2".into());
            },
            |i| i.target = Some("test".into()),
            |i| {
                i.labels.insert("team".into(), "a".into());
            },
            |i| i.platforms.push("linux/arm64".into()),
            |i| i.builder = "buildah".into(),
            |i| i.component_digest = "sha256:f".into(),
            |i| i.grants_digest = "sha256:f".into(),
            |i| i.network = "private".into(),
            |i| {
                i.base_images.insert("r/base:1".into(), "sha256:f".into());
            },
            |i| {
                i.secrets.insert("token".into(), "0".repeat(64));
            },
        ];
        for (n, change) in changes.iter().enumerate() {
            let mut changed = inputs();
            change(&mut changed);
            assert_ne!(
                changed.digest(),
                same,
                "change {n} left the digest as it was"
            );
        }
    }

    #[test]
    fn a_secret_is_digested_by_the_key_never_as_its_plain_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reuse.key");
        let key = ReuseKey::load_or_create(&path).unwrap();
        let again = ReuseKey::load_or_create(&path).unwrap();
        assert_eq!(
            key.digest("token", "hunter2"),
            again.digest("token", "hunter2")
        );
        let other = ReuseKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert_ne!(
            key.digest("token", "hunter2"),
            other.digest("token", "hunter2")
        );
        assert_ne!(
            key.digest("token", "hunter2"),
            hex::encode(Sha256::digest(b"hunter2"))
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"short").unwrap();
        assert!(ReuseKey::load_or_create(&path).is_err());
    }
}
