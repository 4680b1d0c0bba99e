//! The OCI distribution API spoken directly (through `oci-client`), for
//! what `skopeo` has no command for: pushing an artifact that refers to an
//! image, and finding the artifacts that refer to one.
//!
//! TLS and credentials come from the same [`RegistrySettings`] as the
//! host's pushes: a registry configured with `tls_verify = false` is
//! spoken to over plain HTTP, and credentials are read from the auth file.

use std::sync::Arc;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::RegistrySettings;

/// Media types of the manifests this client reads and writes.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ACCEPTED: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// A manifest as stored: its bytes, their digest, its media type.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

/// A registry client with the host's settings.
pub struct RegistryClient {
    client: Client,
    settings: Arc<RegistrySettings>,
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `image` (`host[:port]/path[:tag][@digest]`) as a reference.
pub fn reference(image: &str) -> Result<Reference, String> {
    image
        .parse::<Reference>()
        .map_err(|e| format!("'{image}' is not an image reference: {e}"))
}

impl RegistryClient {
    pub fn new(settings: Arc<RegistrySettings>) -> Self {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(settings.insecure_registries()),
            // What this client pushes is small: one request per blob, not
            // an upload session of several.
            use_monolithic_push: true,
            read_timeout: Some(std::time::Duration::from_secs(60)),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..ClientConfig::default()
        };
        RegistryClient {
            client: Client::new(config),
            settings,
        }
    }

    /// The credentials for `reference`'s registry in the auth file, if any.
    fn auth(&self, reference: &Reference) -> RegistryAuth {
        match self.settings.credentials(reference.registry()) {
            Some((user, password)) => RegistryAuth::Basic(user, password),
            None => RegistryAuth::Anonymous,
        }
    }

    async fn authenticate(
        &self,
        reference: &Reference,
        operation: RegistryOperation,
    ) -> Result<(), String> {
        let auth = self.auth(reference);
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &auth)
            .await;
        if !matches!(auth, RegistryAuth::Anonymous) {
            self.client
                .auth(reference, &auth, operation)
                .await
                .map_err(|e| describe(reference, e))?;
        }
        Ok(())
    }

    /// The manifest `reference` names; `None` when the registry has none.
    pub async fn manifest(&self, reference: &Reference) -> Result<Option<RawManifest>, String> {
        self.authenticate(reference, RegistryOperation::Pull)
            .await?;
        match self
            .client
            .pull_manifest_raw(reference, &self.auth(reference), ACCEPTED)
            .await
        {
            Ok((bytes, _)) => {
                let media_type = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|m| m["mediaType"].as_str().map(String::from))
                    .unwrap_or_else(|| OCI_MANIFEST.to_string());
                Ok(Some(RawManifest {
                    digest: digest_of(&bytes),
                    bytes,
                    media_type,
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(describe(reference, e)),
        }
    }

    /// Uploads `data` as a blob of `reference`'s repository; its digest.
    pub async fn push_blob(&self, reference: &Reference, data: &[u8]) -> Result<String, String> {
        self.authenticate(reference, RegistryOperation::Push)
            .await?;
        let digest = digest_of(data);
        self.client
            .push_blob(reference, data, &digest)
            .await
            .map_err(|e| describe(reference, e))?;
        Ok(digest)
    }

    /// Stores manifest `bytes` of `media_type` at `reference` (a tag, or
    /// the digest of the bytes).
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(), String> {
        self.authenticate(reference, RegistryOperation::Push)
            .await?;
        let content_type = media_type
            .parse()
            .map_err(|_| format!("'{media_type}' is not a media type"))?;
        self.client
            .push_manifest_raw(reference, bytes, content_type)
            .await
            .map_err(|e| describe(reference, e))?;
        Ok(())
    }

    /// Makes blob `digest` of `source`'s repository one of `destination`'s
    /// too, without sending it (a cross-repository mount).
    pub async fn mount_blob(
        &self,
        destination: &Reference,
        source: &Reference,
        digest: &str,
    ) -> Result<(), String> {
        self.authenticate(destination, RegistryOperation::Push)
            .await?;
        self.client
            .mount_blob(destination, source, digest)
            .await
            .map_err(|e| describe(destination, e))
    }

    /// The manifests that refer to `subject` (a reference by digest)
    /// through the OCI 1.1 referrers API, as index entries; `None` when the
    /// registry has no such API.
    pub async fn referrers(&self, subject: &Reference) -> Result<Option<Vec<Value>>, String> {
        self.authenticate(subject, RegistryOperation::Pull).await?;
        match self.client.pull_referrers(subject, None).await {
            Ok(index) => {
                let index = serde_json::to_value(index).map_err(|e| e.to_string())?;
                Ok(Some(
                    index["manifests"].as_array().cloned().unwrap_or_default(),
                ))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(describe(subject, e)),
        }
    }

    /// Blob `digest` of `reference`'s repository.
    pub async fn blob(&self, reference: &Reference, digest: &str) -> Result<Vec<u8>, String> {
        self.authenticate(reference, RegistryOperation::Pull)
            .await?;
        let mut out = Vec::new();
        self.client
            .pull_blob(reference, digest, &mut out)
            .await
            .map_err(|e| describe(reference, e))?;
        Ok(out)
    }

    /// Blob `digest` of `reference`'s repository as it arrives, checked
    /// against its digest once read to the end (an error then if it does
    /// not match): for blobs too large to hold in memory.
    pub async fn blob_reader(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<impl tokio::io::AsyncRead + Send + Unpin + 'static, String> {
        self.authenticate(reference, RegistryOperation::Pull)
            .await?;
        let stream = self
            .client
            .pull_blob_stream(reference, digest)
            .await
            .map_err(|e| describe(reference, e))?;
        Ok(tokio_util::io::StreamReader::new(stream))
    }
}

fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NameUnknown
                    | oci_client::errors::OciErrorCode::NotFound
            )
        }),
        _ => false,
    }
}

fn describe(reference: &Reference, e: OciDistributionError) -> String {
    format!("registry {}: {e}", reference.registry())
}
