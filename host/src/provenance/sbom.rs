//! The software bill of materials of a build: per platform of the pushed
//! image, an SPDX 2.3 document listing the packages its dpkg and apk
//! databases say are installed ([`packages`](super::packages)), read by
//! the host from the image's layers in the registry
//! ([`layers`](super::layers)). Each is the predicate of an in-toto
//! statement (`https://spdx.dev/Document`) about the pushed digest and
//! the platform's manifest, signed and attached like the provenance.

use std::collections::BTreeMap;

use oci_client::Reference;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::dsse::Envelope;
use super::layers::{self, LayerError};
use super::packages::{self, Ecosystem, Package};
use super::statement::{ResourceDescriptor, STATEMENT_TYPE, sha256_hex};
use crate::registry::oci::{RawManifest, RegistryClient};

/// The predicate type of an SPDX document (what `cosign --type spdxjson`
/// looks for).
pub const SPDX_DOCUMENT: &str = "https://spdx.dev/Document";

/// The name of the job record holding a job's SBOMs.
pub const RECORD: &str = "sbom";

/// An SPDX 2.3 document (JSON), the fields this host writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpdxDocument {
    /// `SPDX-2.3`.
    pub spdx_version: String,
    /// `CC0-1.0`.
    pub data_license: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    /// `urn:helix-build:sbom:<host>:<job>:<manifest digest hex>`.
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    /// The image first, then each package in it.
    pub packages: Vec<SpdxPackage>,
    /// The document describes the image; the image contains each package.
    pub relationships: Vec<Relationship>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreationInfo {
    /// `YYYY-MM-DDThh:mm:ssZ`.
    pub created: String,
    pub creators: Vec<String>,
    /// What could not be read, when something could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpdxPackage {
    pub name: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub version_info: String,
    /// `NOASSERTION`: where the package came from is not in its database.
    pub download_location: String,
    pub files_analyzed: bool,
    /// `CONTAINER` for the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_package_purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<SpdxChecksum>,
    /// Its package URL.
    pub external_refs: Vec<ExternalRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpdxChecksum {
    pub algorithm: String,
    pub checksum_value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    /// `PACKAGE-MANAGER`.
    pub reference_category: String,
    /// `purl`.
    pub reference_type: String,
    pub reference_locator: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: String,
    pub related_spdx_element: String,
}

/// An in-toto v1 statement whose predicate is an SPDX document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SbomStatement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// The pushed digest and the platform's manifest.
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: SpdxDocument,
}

/// One platform's SBOM as the host keeps it with the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sbom {
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The platform's image: `repository@sha256:…`.
    pub image: String,
    /// Where its DSSE attestation is: `repository@sha256:…`.
    pub reference: String,
    /// Where its Sigstore bundle is: `repository@sha256:…`.
    pub bundle: String,
    /// The id of the key that signed it.
    pub key_id: String,
    pub envelope: Envelope,
    /// The envelope's payload, decoded.
    pub statement: SbomStatement,
}

/// A job's SBOMs, one per platform of its image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobSbom {
    pub sboms: Vec<Sbom>,
}

/// The most bytes of an image config read (for its platform).
const MAX_CONFIG: u64 = 1 << 20;

/// One platform's image in the registry.
pub struct PlatformImage {
    pub platform: String,
    pub digest: String,
    pub manifest: Value,
}

/// `os/arch[/variant]` of a platform object of an index or image config.
fn platform_of(value: &Value) -> Option<String> {
    let (os, arch) = (value["os"].as_str()?, value["architecture"].as_str()?);
    Some(match value["variant"].as_str().filter(|v| !v.is_empty()) {
        Some(variant) => format!("{os}/{arch}/{variant}"),
        None => format!("{os}/{arch}"),
    })
}

/// The platform images of `pushed` (an index or one image) in
/// `repository`; an index's entries that are no platform (`unknown`) are
/// left out.
pub async fn platform_images(
    registry: &RegistryClient,
    repository: &Reference,
    pushed: &RawManifest,
) -> Result<Vec<PlatformImage>, LayerError> {
    let json = |raw: &RawManifest| {
        serde_json::from_slice::<Value>(&raw.bytes).map_err(|_| LayerError::Manifest {
            digest: raw.digest.clone(),
        })
    };
    let by_digest = |digest: &str| {
        Reference::with_digest(
            repository.registry().to_string(),
            repository.repository().to_string(),
            digest.to_string(),
        )
    };
    let fetch = async |digest: &str| {
        registry
            .manifest(&by_digest(digest))
            .await
            .map_err(LayerError::Registry)?
            .ok_or_else(|| LayerError::Registry(format!("{digest} is not in the registry")))
    };
    let top = json(pushed)?;
    let Some(entries) = top["manifests"].as_array() else {
        use tokio::io::AsyncReadExt as _;
        let digest = top["config"]["digest"].as_str().unwrap_or_default();
        let mut config = Vec::new();
        registry
            .blob_reader(repository, digest)
            .await
            .map_err(LayerError::Registry)?
            .take(MAX_CONFIG)
            .read_to_end(&mut config)
            .await
            .map_err(|source| LayerError::Read {
                digest: digest.to_string(),
                source,
            })?;
        let config: Value = serde_json::from_slice(&config).unwrap_or_default();
        return Ok(vec![PlatformImage {
            platform: platform_of(&config).unwrap_or_else(|| "unknown".into()),
            digest: pushed.digest.clone(),
            manifest: top,
        }]);
    };
    let mut images = Vec::new();
    for entry in entries {
        let (Some(platform), Some(digest)) =
            (platform_of(&entry["platform"]), entry["digest"].as_str())
        else {
            continue;
        };
        if platform.starts_with("unknown/") {
            continue;
        }
        let raw = fetch(digest).await?;
        images.push(PlatformImage {
            platform,
            digest: raw.digest.clone(),
            manifest: json(&raw)?,
        });
    }
    Ok(images)
}

/// The packages of `image` (of `repository`), and what could not be read;
/// layers read lately taken from `kept`.
async fn packages(
    registry: &RegistryClient,
    repository: &Reference,
    image: &PlatformImage,
    kept: &layers::LayersRead,
) -> Result<ImagePackages, LayerError> {
    let ecosystems = [Ecosystem::Deb, Ecosystem::Apk];
    let wanted: Vec<&'static str> = ecosystems.iter().map(|e| e.database()).collect();
    let found = layers::read(
        registry,
        repository,
        &image.digest,
        &image.manifest,
        &wanted,
        kept,
    )
    .await?;
    let mut listed = Vec::new();
    for ecosystem in ecosystems {
        if let Some(bytes) = found.files.get(ecosystem.database()) {
            listed.extend(packages::parse(ecosystem, &String::from_utf8_lossy(bytes)));
        }
    }
    listed.sort();
    listed.dedup();
    Ok((listed, found.notes))
}

/// The packages of platform images read lately, by manifest digest: an
/// image reused from an earlier build, or pushed again unchanged, is not
/// downloaded again for its SBOM. A digest names its layers, so what was
/// read for it holds for every repository and project that has it (each
/// reads the digest from its own repository first, with its own
/// credentials). What each layer said is kept too, so a rebuild's image
/// (new top layers over the same base) walks only its new layers.
#[derive(Default)]
pub struct PackagesRead {
    images: std::sync::Mutex<std::collections::VecDeque<(String, ImagePackages)>>,
    layers: layers::LayersRead,
}

/// An image's packages, and what could not be read.
pub type ImagePackages = (Vec<Package>, Vec<String>);

/// How many images' packages [`PackagesRead`] keeps.
const PACKAGES_KEPT: usize = 64;

impl PackagesRead {
    /// The packages of `image` (of `repository`), read from its layers
    /// unless they were read lately.
    pub async fn of(
        &self,
        registry: &RegistryClient,
        repository: &Reference,
        image: &PlatformImage,
    ) -> Result<ImagePackages, LayerError> {
        let kept = |read: &std::collections::VecDeque<(String, ImagePackages)>| {
            read.iter()
                .find(|(digest, _)| *digest == image.digest)
                .map(|(_, packages)| packages.clone())
        };
        if let Some(packages) = kept(&self.lock()) {
            return Ok(packages);
        }
        let packages = packages(registry, repository, image, &self.layers).await?;
        let mut read = self.lock();
        if kept(&read).is_none() {
            if read.len() == PACKAGES_KEPT {
                read.pop_front();
            }
            read.push_back((image.digest.clone(), packages.clone()));
        }
        Ok(packages)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(String, ImagePackages)>> {
        self.images.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a document is about and by whom.
pub struct About<'a> {
    /// `registry/path` of the image.
    pub repository: &'a str,
    /// The digest pushed (an index or the one image).
    pub pushed: &'a str,
    pub image: &'a PlatformImage,
    pub job: &'a str,
    pub host: &'a str,
}

/// `text` with every character an SPDX id may not hold as `-`.
fn spdx_id(text: &str) -> String {
    text.chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                true => c,
                false => '-',
            },
        )
        .collect()
}

/// The purl of the image: `pkg:oci/NAME@sha256%3A…?repository_url=…&arch=…`.
fn image_purl(repository: &str, digest: &str, platform: &str) -> String {
    let name = repository.rsplit('/').next().unwrap_or(repository);
    let mut purl = format!(
        "pkg:oci/{name}@sha256%3A{}?repository_url={}",
        sha256_hex(digest),
        repository.replace(':', "%3A")
    );
    if let Some(arch) = platform.split('/').nth(1) {
        purl.push_str(&format!("&arch={arch}"));
    }
    purl
}

/// The SPDX document of `about`'s image holding `packages`; `notes`, what
/// could not be read, go in its creation comment.
pub fn document(about: &About<'_>, packages: &[Package], notes: &[String]) -> SpdxDocument {
    let image = about.image;
    let purl = |locator: String| ExternalRef {
        reference_category: "PACKAGE-MANAGER".into(),
        reference_type: "purl".into(),
        reference_locator: locator,
    };
    let relationship = |from: &str, kind: &str, to: &str| Relationship {
        spdx_element_id: from.into(),
        relationship_type: kind.into(),
        related_spdx_element: to.into(),
    };
    const IMAGE: &str = "SPDXRef-image";
    let mut listed = vec![SpdxPackage {
        name: about.repository.to_string(),
        spdx_id: IMAGE.into(),
        version_info: image.digest.clone(),
        download_location: "NOASSERTION".into(),
        files_analyzed: false,
        primary_package_purpose: Some("CONTAINER".into()),
        checksums: vec![SpdxChecksum {
            algorithm: "SHA256".into(),
            checksum_value: sha256_hex(&image.digest).to_string(),
        }],
        external_refs: vec![purl(image_purl(
            about.repository,
            &image.digest,
            &image.platform,
        ))],
    }];
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE)];
    for (i, package) in packages.iter().enumerate() {
        let kind = match package.ecosystem {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
        };
        let id = format!("SPDXRef-{kind}-{i}-{}", spdx_id(&package.name));
        relationships.push(relationship(IMAGE, "CONTAINS", &id));
        listed.push(SpdxPackage {
            name: package.name.clone(),
            spdx_id: id,
            version_info: package.version.clone(),
            download_location: "NOASSERTION".into(),
            files_analyzed: false,
            primary_package_purpose: None,
            checksums: Vec::new(),
            external_refs: vec![purl(package.purl())],
        });
    }
    SpdxDocument {
        spdx_version: "SPDX-2.3".into(),
        data_license: "CC0-1.0".into(),
        spdx_id: "SPDXRef-DOCUMENT".into(),
        name: format!("{}@{} {}", about.repository, image.digest, image.platform),
        document_namespace: format!(
            "urn:helix-build:sbom:{}:{}:{}",
            spdx_id(about.host),
            spdx_id(about.job),
            sha256_hex(&image.digest)
        ),
        creation_info: CreationInfo {
            created: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            creators: vec![format!("Tool: helix-build-{}", env!("CARGO_PKG_VERSION"))],
            comment: (!notes.is_empty()).then(|| notes.join("; ")),
        },
        packages: listed,
        relationships,
    }
}

/// The statement about `about`'s image whose predicate is `document`.
pub fn statement(about: &About<'_>, document: SpdxDocument) -> SbomStatement {
    let descriptor = |digest: &str, annotations: BTreeMap<String, String>| ResourceDescriptor {
        name: Some(about.repository.to_string()),
        digest: BTreeMap::from([("sha256".into(), sha256_hex(digest).to_string())]),
        annotations,
        ..Default::default()
    };
    let platform = BTreeMap::from([("platform".to_string(), about.image.platform.clone())]);
    let mut subject = vec![descriptor(about.pushed, BTreeMap::new())];
    if about.image.digest != about.pushed {
        subject.push(descriptor(&about.image.digest, platform));
    } else {
        subject[0].annotations = platform;
    }
    SbomStatement {
        statement_type: STATEMENT_TYPE.into(),
        subject,
        predicate_type: SPDX_DOCUMENT.into(),
        predicate: document,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_the_image_and_contains_each_package() {
        let image = PlatformImage {
            platform: "linux/arm64".into(),
            digest: format!("sha256:{}", "b".repeat(64)),
            manifest: Value::Null,
        };
        let index = format!("sha256:{}", "a".repeat(64));
        let about = About {
            repository: "localhost:5000/team/app",
            pushed: &index,
            image: &image,
            job: "job-1",
            host: "build host",
        };
        let packages = packages::dpkg(
            "Package: libstdc++6\nStatus: install ok installed\nVersion: 12.2.0-14\nArchitecture: arm64\n",
        );
        let document = document(&about, &packages, &["a note".into()]);
        assert_eq!(document.packages.len(), 2);
        assert_eq!(document.packages[1].spdx_id, "SPDXRef-deb-0-libstdc--6");
        assert_eq!(
            document.packages[0].external_refs[0].reference_locator,
            format!(
                "pkg:oci/app@sha256%3A{}?repository_url=localhost%3A5000/team/app&arch=arm64",
                "b".repeat(64)
            )
        );
        assert_eq!(
            document.relationships[1].related_spdx_element,
            document.packages[1].spdx_id
        );
        assert_eq!(document.creation_info.comment.as_deref(), Some("a note"));
        assert!(
            document
                .document_namespace
                .starts_with("urn:helix-build:sbom:build-host:job-1:")
        );
        let statement = statement(&about, document);
        assert_eq!(
            statement.subject.len(),
            2,
            "the index and the platform's image"
        );
        assert_eq!(statement.subject[1].annotations["platform"], "linux/arm64");
    }
}
