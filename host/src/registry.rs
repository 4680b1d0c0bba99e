//! Checking a builder's report against the registry: the job succeeds only
//! if the pushed tag resolves to the digest the builder reported and, for a
//! multi-platform job, its index lists every requested platform.
//!
//! Uses `skopeo inspect --raw`, which speaks the OCI distribution API with
//! the host's TLS configuration and the configured auth file.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::job::BuildResult;
use crate::platform::Platform;

/// How long one registry query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Asks registries what a tag really points to.
#[derive(Debug, Clone, Default)]
pub struct RegistryCheck {
    /// Registries (`host[:port]`) reached without TLS verification.
    insecure: BTreeSet<String>,
    /// Credentials, as a containers auth file.
    auth_file: Option<PathBuf>,
}

impl RegistryCheck {
    pub fn new(insecure: impl IntoIterator<Item = String>, auth_file: Option<PathBuf>) -> Self {
        RegistryCheck {
            insecure: insecure.into_iter().collect(),
            auth_file,
        }
    }

    /// Returns what `verified …` line to log, or what did not match.
    pub async fn verify(
        &self,
        result: &BuildResult,
        requested: &[Platform],
    ) -> Result<String, String> {
        let tag = &result.image_tag;
        let raw = self.raw_manifest(tag).await?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));
        if let Some(reported) = &result.digest
            && reported.as_str() != actual
        {
            return Err(format!(
                "{tag} resolves to {actual} in the registry, but the builder reported {reported}"
            ));
        }
        if requested.len() > 1 {
            let listed = index_platforms(&raw).map_err(|e| format!("{tag}: {e}"))?;
            let missing: Vec<String> = requested
                .iter()
                .filter(|p| !listed.iter().any(|(listed, _)| listed == *p))
                .map(ToString::to_string)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "the index of {tag} lists no image for {}",
                    missing.join(", ")
                ));
            }
            for (platform, digest) in result.manifest.iter() {
                let in_registry = listed.iter().find(|(p, _)| p == platform).map(|(_, d)| d);
                if in_registry.is_some_and(|d| d != digest.as_str()) {
                    return Err(format!(
                        "the index of {tag} has a different image for {platform} than the builder reported"
                    ));
                }
            }
        }
        Ok(format!("{tag} is {actual} in the registry"))
    }

    async fn raw_manifest(&self, tag: &str) -> Result<Vec<u8>, String> {
        let registry = tag.split('/').next().unwrap_or_default();
        let mut command = tokio::process::Command::new("skopeo");
        command.arg("inspect").arg("--raw");
        if self.insecure.contains(registry) {
            command.arg("--tls-verify=false");
        }
        if let Some(file) = &self.auth_file {
            command.arg("--authfile").arg(file);
        }
        command.arg(format!("docker://{tag}")).kill_on_drop(true);
        let output = tokio::time::timeout(QUERY_TIMEOUT, command.output())
            .await
            .map_err(|_| {
                format!(
                    "the registry did not answer about {tag} within {}s",
                    QUERY_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| {
                format!("cannot run skopeo to check the registry: {e}; install skopeo on the host")
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let reason = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            return Err(format!(
                "cannot read {tag} from the registry: {}",
                reason.trim()
            ));
        }
        Ok(output.stdout)
    }
}

/// (platform, digest) of every entry of an image index.
fn index_platforms(raw: &[u8]) -> Result<Vec<(Platform, String)>, String> {
    let value: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| format!("the registry's manifest is not JSON: {e}"))?;
    let Some(entries) = value["manifests"].as_array() else {
        return Err("it is a single image, not an index of platforms".into());
    };
    Ok(entries
        .iter()
        .filter_map(|entry| {
            let platform = &entry["platform"];
            let mut text = format!(
                "{}/{}",
                platform["os"].as_str()?,
                platform["architecture"].as_str()?
            );
            if let Some(variant) = platform["variant"].as_str().filter(|v| !v.is_empty()) {
                text = format!("{text}/{variant}");
            }
            Some((
                Platform::parse(&text).ok()?,
                entry["digest"].as_str()?.to_string(),
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_platforms_of_an_index() {
        let raw = br#"{"manifests":[
            {"digest":"sha256:aa","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:bb","platform":{"os":"linux","architecture":"arm","variant":"v7"}}]}"#;
        let listed = index_platforms(raw).unwrap();
        let names: Vec<String> = listed.iter().map(|(p, d)| format!("{p}={d}")).collect();
        assert_eq!(names, ["linux/amd64=sha256:aa", "linux/arm/v7=sha256:bb"]);
        assert!(
            index_platforms(br#"{"layers":[]}"#)
                .unwrap_err()
                .contains("single image")
        );
    }
}
