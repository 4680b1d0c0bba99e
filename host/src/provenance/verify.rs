//! The consumer's side of provenance: an image's attestations checked
//! against the signer's public key and a policy (`helix-build verify`).

use super::attach::{self, ENVELOPE_TYPE};
use super::dsse::{Envelope, PublicKey};
use super::statement::{SLSA_PROVENANCE, Statement};
use crate::reference::repository_of;
use crate::registry::oci::{RegistryClient, reference};

/// What [`verify`] found: an image whose attestation holds.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `repository@sha256:…` of the image.
    pub image: String,
    /// `repository@sha256:…` of the attestation that verified.
    pub attestation: String,
    pub statement: Statement,
}

/// What a consumer requires of an image's provenance besides a valid
/// signature about the image (`helix-build verify`'s policy flags): "built
/// by project X from repository Y at a protected ref by component Z".
/// Each part left empty requires nothing.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Builder component digests (`sha256:…`), any of which will do.
    pub builder_digests: Vec<String>,
    /// The repository URL it must be built from, exactly.
    pub source_repo: Option<String>,
    /// The ref it must be built from, exactly as the job named it.
    pub git_ref: Option<String>,
    /// Built from one of its project's protected refs.
    pub protected: bool,
    /// The project whose job built it.
    pub project: Option<String>,
}

impl Policy {
    /// The first requirement `statement` does not meet, naming the flag.
    fn check(&self, statement: &Statement) -> Result<(), String> {
        let build = &statement.predicate.build_definition;
        let builder = statement.builder_digest().unwrap_or_default();
        if !self.builder_digests.is_empty() && !self.builder_digests.contains(&builder) {
            return Err(format!(
                "its builder component {builder} is not one --builder-digest allows"
            ));
        }
        let parameters = &build.external_parameters;
        if let Some(want) = self
            .source_repo
            .as_ref()
            .filter(|w| **w != parameters.repository)
        {
            return Err(format!(
                "it was built from {}, not --source-repo {want}",
                parameters.repository
            ));
        }
        if let Some(want) = self.git_ref.as_ref().filter(|w| **w != parameters.git_ref) {
            return Err(format!(
                "it was built from ref {}, not --ref {want}",
                parameters.git_ref
            ));
        }
        let internal = &build.internal_parameters;
        if self.protected && !internal.protected {
            return Err(format!(
                "ref {} is not a protected ref of its project (--protected)",
                parameters.git_ref
            ));
        }
        if let Some(want) = self
            .project
            .as_ref()
            .filter(|w| internal.project.as_ref() != Some(*w))
        {
            return Err(format!(
                "it was built {}, not by --project {want}",
                match &internal.project {
                    Some(project) => format!("by project {project}"),
                    None => "by no project".to_string(),
                }
            ));
        }
        Ok(())
    }
}

/// Checks `image` (a tag or `@digest`) against its attestations: one must
/// be signed by `key`, unaltered, about this image's digest, and meet
/// `policy`. The error says which check failed.
pub async fn verify(
    registry: &RegistryClient,
    image: &str,
    key: &PublicKey,
    policy: &Policy,
) -> Result<Verified, String> {
    let given = reference(image)?;
    let repository = repository_of(image);
    let digest = match given.digest() {
        Some(digest) => digest.to_string(),
        None => {
            registry
                .manifest(&given)
                .await?
                .ok_or_else(|| format!("{image} is not in the registry"))?
                .digest
        }
    };
    let pinned = format!("{repository}@{digest}");
    let found = attach::attestations(registry, &given, &digest, None, ENVELOPE_TYPE).await?;
    if found.is_empty() {
        return Err(format!(
            "{pinned} has no provenance: no attestation refers to it (it was not built by \
             Helix with signing, or was pushed by other means)"
        ));
    }
    let mut failures = Vec::new();
    for attestation in found {
        let check = async {
            let bytes = attach::envelope(registry, &given, &attestation).await?;
            let envelope: Envelope = serde_json::from_slice(&bytes)
                .map_err(|e| format!("it is not a DSSE envelope: {e}"))?;
            let payload = key.open(&envelope).map_err(|e| e.to_string())?;
            let statement: Statement = serde_json::from_slice(&payload)
                .map_err(|e| format!("it holds no in-toto statement: {e}"))?;
            if statement.predicate_type != SLSA_PROVENANCE {
                return Err(format!(
                    "it is not SLSA provenance ({})",
                    statement.predicate_type
                ));
            }
            if !statement.names_subject(&digest) {
                let named: Vec<String> = statement
                    .subject
                    .iter()
                    .filter_map(|s| s.digest.get("sha256").map(|d| format!("sha256:{d}")))
                    .collect();
                return Err(format!(
                    "it is about {}, not {digest}: it was made for another image",
                    named.join(", ")
                ));
            }
            policy.check(&statement)?;
            Ok(statement)
        };
        match check.await {
            Ok(statement) => {
                return Ok(Verified {
                    image: pinned,
                    attestation: format!("{repository}@{attestation}"),
                    statement,
                });
            }
            Err(e) => failures.push(format!("attestation {attestation}: {e}")),
        }
    }
    Err(format!("{pinned} does not verify: {}", failures.join("; ")))
}
