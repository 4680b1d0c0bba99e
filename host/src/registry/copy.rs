//! Giving an image the registry already holds another name: the manifest
//! (and, for an index, each platform's manifest) stored again under the
//! destination, with the blobs mounted from the repository that has them,
//! so nothing is downloaded or uploaded but manifests. Only within one
//! registry: blobs do not move between registries without a download.

use oci_client::Reference;

use super::oci::{OCI_INDEX, RawManifest, RegistryClient, reference};
use crate::reference::{registry_of, repository_of};

/// Media type of a Docker manifest list (an index by another name).
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Why an image could not be given another name.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{from} is in another registry than {to}")]
    OtherRegistry { from: String, to: String },
    #[error("{0} is no longer in the registry")]
    Gone(String),
    #[error("{0}")]
    Registry(String),
}

/// Stores the image `from` (`repository@sha256:…`) under `to` (a tag):
/// afterwards `to` names exactly the manifest `from` does.
pub async fn copy(client: &RegistryClient, from: &str, to: &str) -> Result<(), CopyError> {
    if registry_of(from) != registry_of(to) {
        return Err(CopyError::OtherRegistry {
            from: from.to_string(),
            to: to.to_string(),
        });
    }
    let source = reference(from).map_err(CopyError::Registry)?;
    let destination = reference(to).map_err(CopyError::Registry)?;
    let top = client
        .manifest(&source)
        .await
        .map_err(CopyError::Registry)?
        .ok_or_else(|| CopyError::Gone(from.to_string()))?;
    if repository_of(from) != repository_of(to) {
        let mount = Mount {
            client,
            source: &source,
            destination: &destination,
            from,
        };
        mount.manifest_and_blobs(&top).await?;
    }
    client
        .push_manifest(&destination, top.bytes, &top.media_type)
        .await
        .map_err(CopyError::Registry)
}

/// Makes what one manifest needs present in the destination repository.
struct Mount<'a> {
    client: &'a RegistryClient,
    source: &'a Reference,
    destination: &'a Reference,
    from: &'a str,
}

impl Mount<'_> {
    /// The blobs `manifest` names, and for an index each platform's
    /// manifest (stored by digest) with its blobs.
    async fn manifest_and_blobs(&self, manifest: &RawManifest) -> Result<(), CopyError> {
        let parsed: serde_json::Value = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| CopyError::Registry(format!("{}: {e}", self.from)))?;
        if [OCI_INDEX, DOCKER_LIST].contains(&manifest.media_type.as_str()) {
            for child in parsed["manifests"].as_array().into_iter().flatten() {
                let Some(digest) = child["digest"].as_str() else {
                    continue;
                };
                let by_digest = |r: &Reference| r.clone_with_digest(digest.to_string());
                let child_manifest = self
                    .client
                    .manifest(&by_digest(self.source))
                    .await
                    .map_err(CopyError::Registry)?
                    .ok_or_else(|| CopyError::Gone(format!("{}@{digest}", self.from)))?;
                Box::pin(self.blobs_of(&child_manifest)).await?;
                self.client
                    .push_manifest(
                        &by_digest(self.destination),
                        child_manifest.bytes,
                        &child_manifest.media_type,
                    )
                    .await
                    .map_err(CopyError::Registry)?;
            }
            return Ok(());
        }
        self.blobs_of(manifest).await
    }

    /// Mounts the config and layers of an image manifest.
    async fn blobs_of(&self, manifest: &RawManifest) -> Result<(), CopyError> {
        let parsed: serde_json::Value = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| CopyError::Registry(format!("{}: {e}", self.from)))?;
        let config = parsed["config"]["digest"].as_str();
        let layers = parsed["layers"].as_array().into_iter().flatten();
        for digest in config
            .into_iter()
            .chain(layers.filter_map(|l| l["digest"].as_str()))
        {
            self.client
                .mount_blob(self.destination, self.source, digest)
                .await
                .map_err(CopyError::Registry)?;
        }
        Ok(())
    }
}
