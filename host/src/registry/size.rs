//! How much an image pushed to a registry holds: its manifests, image
//! configurations and compressed layers, as the registry serves them.

use std::collections::BTreeMap;

use oci_client::Reference;
use serde_json::Value;

use super::oci::RegistryClient;

/// The bytes of the image whose manifest (or index) `raw` is, at
/// `reference`: every blob and manifest it refers to, each once (layers
/// shared by platforms count once). A platform's manifest the registry
/// does not serve counts as its size in the index alone.
pub(super) async fn image_bytes(client: &RegistryClient, reference: &Reference, raw: &[u8]) -> u64 {
    let mut blobs = BTreeMap::new();
    let mut manifests = raw.len() as u64;
    let top: Value = serde_json::from_slice(raw).unwrap_or_default();
    match top["manifests"].as_array() {
        Some(entries) => {
            for entry in entries {
                let Some(digest) = entry["digest"].as_str() else {
                    continue;
                };
                let platform = reference.clone_with_digest(digest.to_string());
                match client.manifest(&platform).await {
                    Ok(Some(manifest)) => {
                        manifests += manifest.bytes.len() as u64;
                        let value = serde_json::from_slice(&manifest.bytes).unwrap_or_default();
                        referred(&value, &mut blobs);
                    }
                    _ => manifests += entry["size"].as_u64().unwrap_or(0),
                }
            }
        }
        None => referred(&top, &mut blobs),
    }
    manifests + blobs.values().sum::<u64>()
}

/// Adds the config and layers an image manifest names, by digest.
fn referred(manifest: &Value, blobs: &mut BTreeMap<String, u64>) {
    let layers = manifest["layers"].as_array().into_iter().flatten();
    for blob in std::iter::once(&manifest["config"]).chain(layers) {
        if let (Some(digest), Some(size)) = (blob["digest"].as_str(), blob["size"].as_u64()) {
            blobs.insert(digest.to_string(), size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_count_once_each() {
        let manifest = serde_json::json!({
            "config": {"digest": "sha256:c", "size": 10},
            "layers": [{"digest": "sha256:a", "size": 100}, {"digest": "sha256:a", "size": 100},
                       {"digest": "sha256:b", "size": 5}]
        });
        let mut blobs = BTreeMap::new();
        referred(&manifest, &mut blobs);
        assert_eq!(blobs.values().sum::<u64>(), 115);
    }
}
