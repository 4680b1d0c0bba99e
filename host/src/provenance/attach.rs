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

/// An attestation pushed to its repository, not yet listed as referring
/// to its subject.
pub struct Pushed {
    pub digest: String,
    /// Its entry in a referrers index.
    entry: Value,
}

/// Pushes `artifacts` as attestations of `subject` (a manifest of
/// `repository`): the empty config blob they share once (distribution 2.8
/// answers 400 to uploads of one blob at once) beside each one's own blob,
/// then their manifests, side by side.
pub async fn push(
    registry: &RegistryClient,
    repository: &Reference,
    subject: &RawManifest,
    artifacts: &[Artifact<'_>],
) -> Result<Vec<Pushed>, String> {
    let layers = artifacts
        .iter()
        .map(|artifact| registry.push_blob(repository, artifact.bytes));
    let (config, layers) = tokio::try_join!(
        registry.push_blob(repository, EMPTY),
        futures_util::future::try_join_all(layers)
    )?;
    let pushed = artifacts.iter().zip(layers).map(|(artifact, layer)| {
        push_manifest(registry, repository, subject, &config, artifact, layer)
    });
    futures_util::future::try_join_all(pushed).await
}

/// The manifest of `artifact`, whose blobs are `config` and `layer`.
async fn push_manifest(
    registry: &RegistryClient,
    repository: &Reference,
    subject: &RawManifest,
    config: &str,
    artifact: &Artifact<'_>,
    layer: String,
) -> Result<Pushed, String> {
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
    let entry = json!({
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": bytes.len(),
        "artifactType": artifact.media_type,
        "annotations": annotations,
    });
    registry
        .push_manifest(&by_digest(repository, &digest), bytes, OCI_MANIFEST)
        .await?;
    Ok(Pushed { digest, entry })
}

/// How a registry lists the attestations of one subject, asked before
/// they are pushed (so beside their uploads): by its referrers API, or
/// else by the fallback index.
pub enum Listing {
    Referrers,
    FallbackTag(FallbackRead),
}

/// A fallback index read under this host's turn to update it, which is
/// held until [`list`] has written it.
pub struct FallbackRead {
    /// The index as read, if the tag names one.
    read: Option<RawManifest>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// How the registry lists the attestations of `subject` (a digest of
/// `repository`): see [`Listing`].
pub async fn listing(
    registry: &RegistryClient,
    repository: &Reference,
    subject: &str,
) -> Result<Listing, String> {
    if registry
        .referrers(&by_digest(repository, subject))
        .await?
        .is_some()
    {
        return Ok(Listing::Referrers);
    }
    let read = fallback_read(registry, &fallback_tag(repository, subject)).await?;
    Ok(Listing::FallbackTag(read))
}

/// The fallback index `tag`, read once this host's turn to update it
/// has come.
async fn fallback_read(registry: &RegistryClient, tag: &Reference) -> Result<FallbackRead, String> {
    let turn = {
        let mut locks = FALLBACK_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, lock| std::sync::Arc::strong_count(lock) > 1);
        locks.entry(tag.to_string()).or_default().clone()
    };
    let turn = turn.lock_owned().await;
    Ok(FallbackRead {
        read: registry.manifest(tag).await?,
        _turn: turn,
    })
}

/// Makes the attestations `pushed` (of `subject` in `repository`)
/// findable, in their order, as `listing` found the registry: where its
/// referrers API lists them (it indexed their manifests' subject), as
/// they are; else added to the fallback index in one update. Once this
/// returns, the registry lists each; where.
pub async fn list(
    registry: &RegistryClient,
    repository: &Reference,
    subject: &str,
    pushed: &[Pushed],
    listing: Listing,
) -> Result<Index, String> {
    let tag = fallback_tag(repository, subject);
    let fallback = match listing {
        Listing::FallbackTag(fallback) => fallback,
        Listing::Referrers => {
            if let Some(listed) = registry.referrers(&by_digest(repository, subject)).await?
                && pushed
                    .iter()
                    .all(|p| listed.iter().any(|d| d["digest"] == p.digest.as_str()))
            {
                return Ok(Index::Referrers);
            }
            fallback_read(registry, &tag).await?
        }
    };
    let entries = pushed.iter().map(|p| p.entry.clone()).collect();
    list_in_fallback_tag(registry, &tag, fallback, entries).await?;
    Ok(Index::FallbackTag)
}

/// How many times entries are added again to a fallback index that lost
/// them to another host's update.
const FALLBACK_WRITES: usize = 4;

/// Adds `entries` to the referrers index tagged `tag` (as `fallback`
/// read it when this host's turn to update it came), in their order, and
/// reads it back. The registry offers no conditional write, so the index is
/// extended and written back whole: updates of one tag on this host take
/// turns (the attestations of one image, of several platforms, or of
/// images reused from one build, are attached at once), and entries that
/// another host's update overwrote are added again, up to
/// [`FALLBACK_WRITES`] times.
async fn list_in_fallback_tag(
    registry: &RegistryClient,
    tag: &Reference,
    fallback: FallbackRead,
    entries: Vec<Value>,
) -> Result<(), String> {
    let FallbackRead { mut read, _turn } = fallback;
    let mut lost = String::new();
    for writes in 0..=FALLBACK_WRITES {
        if writes > 0 {
            read = registry.manifest(tag).await?;
        }
        let mut index = match &read {
            Some(existing) => serde_json::from_slice::<Value>(&existing.bytes)
                .map_err(|e| format!("the referrers index {tag} is not JSON: {e}"))?,
            None => json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] }),
        };
        let Some(listed) = index["manifests"].as_array_mut() else {
            return Err(format!("the referrers index {tag} lists no manifests"));
        };
        let missing: Vec<&Value> = entries
            .iter()
            .filter(|entry| !listed.iter().any(|e| e["digest"] == entry["digest"]))
            .collect();
        let Some(first) = missing.first() else {
            return Ok(());
        };
        if writes == FALLBACK_WRITES {
            lost = first["digest"].as_str().unwrap_or_default().to_string();
            break;
        }
        listed.extend(missing.into_iter().cloned());
        let bytes = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
        registry.push_manifest(tag, bytes, OCI_INDEX).await?;
    }
    Err(format!(
        "the referrers index {tag} lost the attestation {lost} to other updates {FALLBACK_WRITES} times"
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
    let listed = referring(registry, repository, digest, index).await?;
    Ok(listed
        .iter()
        .filter(|d| d["artifactType"] == artifact_type)
        .filter_map(|d| d["digest"].as_str().map(String::from))
        .collect())
}

/// The index entries of every artifact referring to `digest` in
/// `repository` (see [`attestations`]).
async fn referring(
    registry: &RegistryClient,
    repository: &Reference,
    digest: &str,
    index: Option<Index>,
) -> Result<Vec<Value>, String> {
    let by_api = match index {
        Some(Index::FallbackTag) => None,
        _ => registry.referrers(&by_digest(repository, digest)).await?,
    };
    Ok(match by_api {
        Some(listed) if !listed.is_empty() => listed,
        _ => match registry.manifest(&fallback_tag(repository, digest)).await? {
            Some(index) => serde_json::from_slice::<Value>(&index.bytes)
                .ok()
                .and_then(|index| index["manifests"].as_array().cloned())
                .unwrap_or_default(),
            None => Vec::new(),
        },
    })
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
