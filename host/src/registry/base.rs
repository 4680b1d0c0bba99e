//! What the registry says of a failed build's base images: one that does
//! not exist, or lacks a platform the job asked for, is the job's own
//! fault, however the build tool put it.

use std::sync::Arc;
use std::time::Duration;

use super::RegistrySettings;
use super::oci::{RegistryClient, reference};
use crate::platform::Platform;

/// How long the registry may take to answer about all base images.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a base image cannot serve the job, as its registry shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseImageError {
    #[error(
        "base image {image} does not exist in its registry (manifest unknown); check its name and tag"
    )]
    Missing { image: String },
    #[error(
        "base image {image} has no image for {}; it has only {}",
        list(.missing),
        list(.has)
    )]
    LacksPlatforms {
        image: String,
        missing: Vec<Platform>,
        has: Vec<Platform>,
    },
}

fn list(platforms: &[Platform]) -> String {
    let names: Vec<String> = platforms.iter().map(ToString::to_string).collect();
    names.join(", ")
}

/// The first of `images` whose registry shows it cannot serve
/// `requested`; `None` when each can, or when a registry does not answer
/// (the build's own error then stands).
pub(super) async fn check(
    registries: Arc<RegistrySettings>,
    images: &[String],
    requested: &[Platform],
) -> Option<BaseImageError> {
    let client = RegistryClient::new(registries);
    let checks = async {
        for image in images {
            if let Some(error) = check_one(&client, image, requested).await {
                return Some(error);
            }
        }
        None
    };
    tokio::time::timeout(CHECK_TIMEOUT, checks)
        .await
        .ok()
        .flatten()
}

async fn check_one(
    client: &RegistryClient,
    image: &str,
    requested: &[Platform],
) -> Option<BaseImageError> {
    let reference = reference(image).ok()?;
    let Some(manifest) = client.manifest(&reference).await.ok()? else {
        return Some(BaseImageError::Missing {
            image: image.to_string(),
        });
    };
    let has: Vec<Platform> = match super::publish::index_platforms(&manifest.bytes) {
        Ok(listed) => listed.into_iter().map(|(platform, _)| platform).collect(),
        // A single image: its platform is in its config.
        Err(_) => {
            let manifest: serde_json::Value = serde_json::from_slice(&manifest.bytes).ok()?;
            let config = client
                .blob(&reference, manifest["config"]["digest"].as_str()?)
                .await
                .ok()?;
            vec![platform_of_config(&config)?]
        }
    };
    let missing: Vec<Platform> = requested
        .iter()
        .filter(|p| !has.contains(p))
        .cloned()
        .collect();
    match missing.is_empty() {
        true => None,
        false => Some(BaseImageError::LacksPlatforms {
            image: image.to_string(),
            missing,
            has,
        }),
    }
}

/// The platform an image config names (`os`, `architecture`, `variant`).
fn platform_of_config(config: &[u8]) -> Option<Platform> {
    let config: serde_json::Value = serde_json::from_slice(config).ok()?;
    let mut text = format!(
        "{}/{}",
        config["os"].as_str()?,
        config["architecture"].as_str()?
    );
    if let Some(variant) = config["variant"].as_str().filter(|v| !v.is_empty()) {
        text = format!("{text}/{variant}");
    }
    Platform::parse(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_platform_is_named_with_those_the_image_has() {
        let p = |s: &str| Platform::parse(s).unwrap();
        let error = BaseImageError::LacksPlatforms {
            image: "registry.test/base:1".into(),
            missing: vec![p("linux/arm64")],
            has: vec![p("linux/amd64"), p("linux/arm/v7")],
        };
        assert_eq!(
            error.to_string(),
            "base image registry.test/base:1 has no image for linux/arm64; it has only linux/amd64, linux/arm/v7"
        );
        assert_eq!(
            platform_of_config(br#"{"os":"linux","architecture":"arm","variant":"v7"}"#),
            Some(p("linux/arm/v7"))
        );
    }
}
