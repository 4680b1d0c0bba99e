//! Attestations in the registry: an OCI artifact (an image manifest whose
//! one layer is the DSSE envelope, or a Sigstore bundle holding it) whose
//! `subject` is the image it is about. Found through the OCI 1.1 referrers API where the registry has
//! it, else through the referrers tag fallback the distribution spec
//! describes: an image index tagged `sha256-<hex of the subject digest>`
//! that lists the artifacts referring to it (what registries without the
//! API, such as distribution 2.8, get).

use serde_json::{Value, json};

use crate::registry::oci::{OCI_INDEX, OCI_MANIFEST, RawManifest, RegistryClient, digest_of};
use oci_client::Reference;

use super::bundle::BUNDLE_TYPE;
use super::statement::sha256_hex;

/// The media type of a DSSE envelope, the attestation's layer and type.
pub const ENVELOPE_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// What is attached: a DSSE envelope or a Sigstore bundle, about a
/// statement of `predicate_type`.
#[derive(Debug, Clone, Copy)]
pub struct Artifact<'a> {
    /// [`ENVELOPE_TYPE`] or [`BUNDLE_TYPE`]: the artifact's type and its
    /// one layer's.
    pub media_type: &'static str,
    pub bytes: &'a [u8],
    pub predicate_type: &'a str,
}

impl Artifact<'_> {
    /// The annotations of its manifest and of its entry in a referrers
    /// index: the predicate type as in-toto and as the cosign bundle
    /// specification name it.
    fn annotations(&self) -> Value {
        match self.media_type {
            BUNDLE_TYPE => json!({
                "dev.sigstore.bundle.content": "dsse-envelope",
                "dev.sigstore.bundle.predicateType": self.predicate_type,
            }),
            _ => json!({ "in-toto.io/predicate-type": self.predicate_type }),
        }
    }
}

/// The OCI empty config blob.
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";

/// `repository`'s reference to `digest`.
fn by_digest(repository: &Reference, digest: &str) -> Reference {
    Reference::with_digest(
        repository.registry().to_string(),
        repository.repository().to_string(),
        digest.to_string(),
    )
}

/// The fallback tag listing the referrers of `digest`.
fn fallback_tag(repository: &Reference, digest: &str) -> Reference {
    Reference::with_tag(
        repository.registry().to_string(),
        repository.repository().to_string(),
        format!("sha256-{}", sha256_hex(digest)),
    )
}

/// How an attestation is found in a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    /// The registry's referrers API lists it.
    Referrers,
    /// The referrers tag fallback lists it.
    FallbackTag,
}

/// Pushes `artifact` as an attestation of `subject` (a manifest of
/// `repository`) and makes it findable; the attestation's digest, and
/// where it is listed.
pub async fn attach(
    registry: &RegistryClient,
    repository: &Reference,
    subject: &RawManifest,
    artifact: &Artifact<'_>,
) -> Result<(String, Index), String> {
    let (config, layer) = tokio::try_join!(
        registry.push_blob(repository, EMPTY),
        registry.push_blob(repository, artifact.bytes)
    )?;
    let mut annotations = artifact.annotations();
    annotations["org.opencontainers.image.created"] = chrono::Utc::now().to_rfc3339().into();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact.media_type,
        "config": { "mediaType": EMPTY_TYPE, "digest": config, "size": EMPTY.len() },
        "layers": [{
            "mediaType": artifact.media_type,
            "digest": layer,
            "size": artifact.bytes.len(),
            "annotations": artifact.annotations(),
        }],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.bytes.len(),
        },
        "annotations": annotations.clone(),
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let digest = digest_of(&bytes);
    let size = bytes.len();
    registry
        .push_manifest(&by_digest(repository, &digest), bytes, OCI_MANIFEST)
        .await?;
    let subject_ref = by_digest(repository, &subject.digest);
    if let Some(listed) = registry.referrers(&subject_ref).await?
        && listed.iter().any(|d| d["digest"] == digest.as_str())
    {
        // The registry indexed it from the manifest's subject.
        return Ok((digest, Index::Referrers));
    }
    let tag = fallback_tag(repository, &subject.digest);
    let entry = json!({
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": size,
        "artifactType": artifact.media_type,
        "annotations": annotations,
    });
    list_in_fallback_tag(registry, &tag, entry).await?;
    Ok((digest, Index::FallbackTag))
}

/// How many times an entry is added again to a fallback index that lost
/// it to another host's update.
const FALLBACK_WRITES: usize = 4;

/// Adds `entry` to the referrers index tagged `tag`. The registry offers
/// no conditional write, so the index is read, extended and written
/// back: updates of one tag on this host take turns (the attestations of
/// one image, of several platforms, or of images reused from one build,
/// are attached at once), and an entry that another host's update
/// overwrote is added again, up to [`FALLBACK_WRITES`] times.
async fn list_in_fallback_tag(
    registry: &RegistryClient,
    tag: &Reference,
    entry: Value,
) -> Result<(), String> {
    let name = tag.to_string();
    let turn = {
        let mut locks = FALLBACK_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, lock| std::sync::Arc::strong_count(lock) > 1);
        locks.entry(name).or_default().clone()
    };
    let _turn = turn.lock().await;
    for writes in 0..=FALLBACK_WRITES {
        let mut index = match registry.manifest(tag).await? {
            Some(existing) => serde_json::from_slice::<Value>(&existing.bytes)
                .map_err(|e| format!("the referrers index {tag} is not JSON: {e}"))?,
            None => json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] }),
        };
        let Some(entries) = index["manifests"].as_array_mut() else {
            return Err(format!("the referrers index {tag} lists no manifests"));
        };
        if entries.iter().any(|e| e["digest"] == entry["digest"]) {
            return Ok(());
        }
        if writes == FALLBACK_WRITES {
            break;
        }
        entries.push(entry.clone());
        let bytes = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
        registry.push_manifest(tag, bytes, OCI_INDEX).await?;
    }
    Err(format!(
        "the referrers index {tag} lost the attestation {} to other updates {FALLBACK_WRITES} times",
        entry["digest"].as_str().unwrap_or_default()
    ))
}

/// The fallback tags being updated on this host, each with its turn.
static FALLBACK_LOCKS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
> = std::sync::LazyLock::new(Default::default);

/// The digests of the attestations of `artifact_type` ([`ENVELOPE_TYPE`]
/// or [`BUNDLE_TYPE`]) referring to `digest` in `repository`, oldest
/// first: through the referrers API, else the fallback tag (only there
/// when `index` says so).
pub async fn attestations(
    registry: &RegistryClient,
    repository: &Reference,
    digest: &str,
    index: Option<Index>,
    artifact_type: &str,
) -> Result<Vec<String>, String> {
    let by_api = match index {
        Some(Index::FallbackTag) => None,
        _ => registry.referrers(&by_digest(repository, digest)).await?,
    };
    let listed = match by_api {
        Some(listed) if !listed.is_empty() => listed,
        _ => match registry.manifest(&fallback_tag(repository, digest)).await? {
            Some(index) => serde_json::from_slice::<Value>(&index.bytes)
                .ok()
                .and_then(|index| index["manifests"].as_array().cloned())
                .unwrap_or_default(),
            None => Vec::new(),
        },
    };
    Ok(listed
        .iter()
        .filter(|d| d["artifactType"] == artifact_type)
        .filter_map(|d| d["digest"].as_str().map(String::from))
        .collect())
}

/// The envelope attestation `digest` of `repository` carries.
pub async fn envelope(
    registry: &RegistryClient,
    repository: &Reference,
    digest: &str,
) -> Result<Vec<u8>, String> {
    let reference = by_digest(repository, digest);
    let manifest = registry
        .manifest(&reference)
        .await?
        .ok_or_else(|| format!("the attestation {reference} is listed but not in the registry"))?;
    let manifest: Value = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| format!("the attestation {reference} is not JSON: {e}"))?;
    let layer = manifest["layers"]
        .as_array()
        .and_then(|layers| layers.iter().find(|l| l["mediaType"] == ENVELOPE_TYPE))
        .and_then(|l| l["digest"].as_str())
        .ok_or_else(|| format!("the attestation {reference} holds no DSSE envelope"))?;
    registry.blob(repository, layer).await
}
