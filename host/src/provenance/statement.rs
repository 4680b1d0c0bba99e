//! The SLSA v1 provenance statement of a build, as an in-toto v1
//! statement: what was built (the pushed digests), from what (repository,
//! commit, Dockerfile, parameters, base images), by what (the builder
//! component's digest and the digest of the grants it ran under), where
//! and when.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
/// What a Helix build is: a Dockerfile built from a git checkout.
pub const BUILD_TYPE: &str = "urn:helix-build:buildtype:dockerfile:v1";

/// An in-toto v1 statement whose predicate is SLSA v1 provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Provenance,
}

/// An in-toto resource descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Algorithm → hex value (`sha256`, `gitCommit`).
    #[serde(default)]
    pub digest: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: ExternalParameters,
    pub internal_parameters: InternalParameters,
    /// The source commit, then each base image with its digest.
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// What the job asked for. Build secrets appear by name only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExternalParameters {
    pub repository: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub context: String,
    pub dockerfile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub platforms: Vec<String>,
    pub secrets: Vec<String>,
    pub no_cache: bool,
}

/// What the operator decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InternalParameters {
    /// The builder's name in the host's config.
    pub builder: String,
    /// `sha256:` digest of the grants the builder ran under (as `GET
    /// /v1/builders` shows them).
    pub grants_digest: String,
    /// The project whose job it was; absent for a job of no project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Whether the ref built is one of the project's protected refs (the
    /// job named it in full and the project protects it).
    #[serde(default)]
    pub protected: bool,
    /// The job whose image this one was given instead of a build, its
    /// inputs being the same (see `crate::reuse`); absent for a build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: SlsaBuilder,
    pub metadata: BuildMetadata,
    /// The audit trail of every program the builder ran.
    pub byproducts: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlsaBuilder {
    /// `urn:helix-build:host:<host>:builder:<name>`.
    pub id: String,
    /// `helix-build`, `component`, `wit` versions.
    pub version: BTreeMap<String, String>,
    /// The builder component, with its sha256 digest.
    pub builder_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    /// The job id.
    pub invocation_id: String,
    pub started_on: Option<DateTime<Utc>>,
    pub finished_on: DateTime<Utc>,
}

/// The name of the builder component among `builder_dependencies`.
pub const COMPONENT: &str = "component";

/// The hex of a `sha256:` digest.
pub fn sha256_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

impl Statement {
    /// The sha256 digest (`sha256:…`) of the builder component.
    pub fn builder_digest(&self) -> Option<String> {
        self.predicate
            .run_details
            .builder
            .builder_dependencies
            .iter()
            .find(|d| d.name.as_deref() == Some(COMPONENT))
            .and_then(|d| d.digest.get("sha256"))
            .map(|hex| format!("sha256:{hex}"))
    }

    /// The commit built.
    pub fn commit(&self) -> Option<&str> {
        self.predicate
            .build_definition
            .resolved_dependencies
            .iter()
            .find_map(|d| d.digest.get("gitCommit"))
            .map(String::as_str)
    }

    /// Whether `digest` (`sha256:…`) is one of the subjects.
    pub fn names_subject(&self, digest: &str) -> bool {
        self.subject
            .iter()
            .any(|s| s.digest.get("sha256").map(String::as_str) == Some(sha256_hex(digest)))
    }
}
