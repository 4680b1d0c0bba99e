//! Attestations in the registry: an OCI artifact (an image manifest whose
//! one layer is the DSSE envelope) whose `subject` is the image it is
//! about. Found through the OCI 1.1 referrers API where the registry has
//! it, else through the referrers tag fallback the distribution spec
//! describes: an image index tagged `sha256-<hex of the subject digest>`
//! that lists the artifacts referring to it (what registries without the
//! API, such as distribution 2.8, get).

use serde_json::{Value, json};

use crate::registry::oci::{OCI_INDEX, OCI_MANIFEST, RawManifest, RegistryClient, digest_of};
use oci_client::Reference;

use super::statement::{SLSA_PROVENANCE, sha256_hex};

/// The media type of a DSSE envelope, the attestation's layer and type.
pub const ENVELOPE_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
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

/// Pushes `envelope` as an attestation of `subject` (a manifest of
/// `repository`) and makes it findable; the attestation's digest, and
/// where it is listed.
pub async fn attach(
    registry: &RegistryClient,
    repository: &Reference,
    subject: &RawManifest,
    envelope: &[u8],
) -> Result<(String, Index), String> {
    let (config, layer) = tokio::try_join!(
        registry.push_blob(repository, EMPTY),
        registry.push_blob(repository, envelope)
    )?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ENVELOPE_TYPE,
        "config": { "mediaType": EMPTY_TYPE, "digest": config, "size": EMPTY.len() },
        "layers": [{
            "mediaType": ENVELOPE_TYPE,
            "digest": layer,
            "size": envelope.len(),
            "annotations": { "in-toto.io/predicate-type": SLSA_PROVENANCE },
        }],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.bytes.len(),
        },
        "annotations": {
            "org.opencontainers.image.created": chrono::Utc::now().to_rfc3339(),
        },
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
    let mut index = match registry.manifest(&tag).await? {
        Some(existing) => serde_json::from_slice::<Value>(&existing.bytes)
            .map_err(|e| format!("the referrers index {tag} is not JSON: {e}"))?,
        None => json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] }),
    };
    let Some(entries) = index["manifests"].as_array_mut() else {
        return Err(format!("the referrers index {tag} lists no manifests"));
    };
    entries.push(json!({
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": size,
        "artifactType": ENVELOPE_TYPE,
        "annotations": { "in-toto.io/predicate-type": SLSA_PROVENANCE },
    }));
    let bytes = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
    registry.push_manifest(&tag, bytes, OCI_INDEX).await?;
    Ok((digest, Index::FallbackTag))
}

/// The digests of the attestations referring to `digest` in `repository`,
/// oldest first: through the referrers API, else the fallback tag (only
/// there when `index` says so).
pub async fn attestations(
    registry: &RegistryClient,
    repository: &Reference,
    digest: &str,
    index: Option<Index>,
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
        .filter(|d| d["artifactType"] == ENVELOPE_TYPE)
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
