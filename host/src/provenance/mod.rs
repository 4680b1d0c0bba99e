//! Provenance: evidence a consumer of an image can check.
//!
//! For every real build that succeeds, the host writes a SLSA v1
//! provenance statement ([`statement`]) about the digests it pushed,
//! signs it with the operator's Ed25519 key in a DSSE envelope ([`dsse`])
//! and pushes it next to the image as an OCI artifact referring to it
//! ([`attach`]), and again as a Sigstore bundle ([`bundle`]) for cosign;
//! then, per platform of the image, an SPDX SBOM of the packages in it
//! ([`sbom`]), signed and attached the same two ways. The job succeeds
//! only once the registry lists them all.
//! [`verify`] is the consumer's side: find the attestation of an image,
//! check the signature and that it is about that image.
//!
//! Everything in the statement comes from the host, not the builder: the
//! host checked the source out (the commit), pushed the image (the
//! digests), loaded the component (its digest) and ran every program the
//! builder asked for (the audit trail's digest).

pub mod attach;
pub mod bundle;
pub mod dsse;
pub mod layers;
pub mod packages;
pub mod sbom;
pub mod statement;
mod verify;

use std::collections::BTreeMap;
use std::time::Duration;

use oci_client::Reference;
use serde::{Deserialize, Serialize};

pub use verify::{Policy, Verified, verify};

use crate::backoff::Backoff;
use crate::job::{BuildResult, Job};
use crate::log::JobLog;
use crate::plugin::{BuilderInfo, WIT_VERSION};
use crate::reference::repository_of;
use crate::registry::oci::{RawManifest, RegistryClient, digest_of, reference};
use attach::{Artifact, ENVELOPE_TYPE};
use bundle::BUNDLE_TYPE;
use dsse::{Envelope, IN_TOTO_PAYLOAD, SigningKey};
use sbom::{About, ImagePackages, PlatformImage, SPDX_DOCUMENT, Sbom};
use statement::{
    BUILD_TYPE, BuildDefinition, BuildMetadata, COMPONENT, ExternalParameters, InternalParameters,
    ResourceDescriptor, RunDetails, SLSA_PROVENANCE, STATEMENT_TYPE, SlsaBuilder, Statement,
    sha256_hex,
};

/// Tries of an attach before the job fails, and the waits between them
/// (up to 0.5, 1 and 2 s, jittered).
pub const ATTACH_TRIES: u32 = 4;
const ATTACH_RETRY: Backoff = Backoff {
    first: Duration::from_millis(500),
    max: Duration::from_secs(4),
};

/// Attaches `artifacts` to the image `pinned` (in `repository`; its
/// manifest `subject` where it was just read), their uploads side by side
/// and then listed in their order, and checks the registry lists each:
/// the attestations' digests.
async fn attach_listed(
    registry: &RegistryClient,
    repository: &Reference,
    pinned: &Reference,
    subject: Option<&RawManifest>,
    artifacts: &[Artifact<'_>],
) -> Result<Vec<String>, String> {
    let read;
    let subject = match subject {
        Some(subject) => subject,
        None => {
            read = registry
                .manifest(pinned)
                .await?
                .ok_or_else(|| format!("{pinned} is not in the registry"))?;
            &read
        }
    };
    // How the registry lists them is asked while they are uploaded.
    let (pushed, listing) = tokio::try_join!(
        attach::push(registry, repository, subject, artifacts),
        attach::listing(registry, repository, &subject.digest)
    )?;
    attach::list(registry, repository, &subject.digest, &pushed, listing).await?;
    Ok(pushed.into_iter().map(|p| p.digest).collect())
}

/// `attempt`'s result once it succeeds, tried [`ATTACH_TRIES`] times in
/// all with backoff while it fails, each retry said in `log` as `what`
/// failing.
async fn retried<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    log: &JobLog,
    mut attempt: impl FnMut() -> F,
) -> Result<T, String> {
    let mut tries = 1;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) if tries < ATTACH_TRIES => {
                let wait = ATTACH_RETRY.delay(tries);
                log.push(&format!(
                    "[helix] provenance: {what} failed ({e}); trying again in {:.1}s",
                    wait.as_secs_f64()
                ));
                tokio::time::sleep(wait).await;
                tries += 1;
            }
            Err(e) => return Err(format!("{e} (tried {ATTACH_TRIES} times)")),
        }
    }
}

/// The image attestations are attached to: the digest pushed.
struct Target {
    /// As the job names it: `registry/path:tag`.
    image: String,
    /// `registry/path`.
    name: String,
    /// The pushed digest.
    digest: String,
    repository: Reference,
    pinned: Reference,
}

impl Target {
    fn of(result: &BuildResult) -> Result<Self, String> {
        let image = &result.image_tag;
        let digest = result
            .digest
            .as_ref()
            .ok_or_else(|| format!("{image} was pushed without a digest"))?;
        Target::new(image, digest.as_str())
    }

    fn new(image: &str, digest: &str) -> Result<Self, String> {
        let name = repository_of(image).to_string();
        Ok(Target {
            image: image.to_string(),
            repository: reference(image)?,
            pinned: reference(&format!("{name}@{digest}"))?,
            name,
            digest: digest.to_string(),
        })
    }
}

/// A pushed image as the registry holds it, read for its SBOMs (see
/// [`Provenance::read`]).
pub struct ImageRead {
    target: Target,
    /// Its manifest (or index), at the pushed digest.
    subject: RawManifest,
    /// Each platform image's packages, and what could not be read.
    packages: Vec<(PlatformImage, ImagePackages)>,
}

/// A statement signed, in the two forms it is attached in.
struct Signed {
    envelope: Envelope,
    predicate_type: &'static str,
    dsse: Vec<u8>,
    bundle: Vec<u8>,
}

/// A signed statement once attached: where its envelope and its bundle are.
struct Attached {
    envelope: Envelope,
    reference: String,
    bundle: String,
}

/// The name of the resolved dependency that is the Dockerfile built.
pub const DOCKERFILE: &str = "dockerfile";

/// The name of the job record holding a job's provenance.
pub const RECORD: &str = "provenance";

/// A build's attestation as the host keeps it with the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attestation {
    /// Where it is in the registry: `repository@sha256:…`.
    pub reference: String,
    /// The id of the key that signed it.
    /// Where the same envelope is as a Sigstore bundle:
    /// `repository@sha256:…` (none for one attested before bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    pub key_id: String,
    pub envelope: Envelope,
    /// The envelope's payload, decoded.
    pub statement: Statement,
}

/// What [`Provenance::attest`] attached: the provenance, and the SBOM of
/// each platform.
#[derive(Debug, Clone)]
pub struct Attested {
    pub provenance: Attestation,
    pub sboms: Vec<Sbom>,
}

/// What a build's statement is made from.
pub struct BuildFacts<'a> {
    pub job: &'a Job,
    /// The commit the host checked out.
    pub commit: &'a str,
    /// What the host pushed and confirmed.
    pub result: &'a BuildResult,
    pub builder: &'a BuilderInfo,
    /// The sha256 (hex) of the Dockerfile the host checked and pinned the
    /// build tool to.
    pub dockerfile_sha256: &'a str,
    /// The external images the build used, with their digests
    /// ([`Provenance::base_images`]).
    pub base_images: Vec<ResourceDescriptor>,
    /// The job's audit trail so far (every program the builder ran).
    pub audit: &'a [u8],
    /// The earlier job whose image this one was given instead of a build.
    pub reused_from: Option<&'a str>,
}

/// Signs and attaches the provenance of this host's builds, through the
/// registry client each call is given (with the job's credentials).
pub struct Provenance {
    key: SigningKey,
    host: String,
    packages: sbom::PackagesRead,
}

impl Provenance {
    pub fn new(key: SigningKey, host: String) -> Self {
        Provenance {
            key,
            host,
            packages: sbom::PackagesRead::default(),
        }
    }

    pub fn key_id(&self) -> String {
        self.key.id()
    }

    /// The statement about `facts`' build, finished now.
    pub fn statement(&self, facts: &BuildFacts<'_>) -> Statement {
        let job = facts.job;
        let result = facts.result;
        let repository = repository_of(&result.image_tag);
        let descriptor = |digest: &str, platform: Option<String>| ResourceDescriptor {
            name: Some(repository.to_string()),
            digest: BTreeMap::from([("sha256".into(), sha256_hex(digest).to_string())]),
            annotations: platform
                .map(|p| BTreeMap::from([("platform".to_string(), p)]))
                .unwrap_or_default(),
            ..Default::default()
        };
        let mut subject: Vec<ResourceDescriptor> = result
            .digest
            .iter()
            .map(|d| descriptor(d.as_str(), None))
            .collect();
        subject.extend(
            result
                .manifest
                .iter()
                .map(|(platform, digest)| descriptor(digest.as_str(), Some(platform.to_string()))),
        );
        let mut dependencies = vec![ResourceDescriptor {
            uri: Some(format!("git+{}", job.repo_url)),
            digest: BTreeMap::from([("gitCommit".into(), facts.commit.to_string())]),
            annotations: BTreeMap::from([("ref".to_string(), job.git_ref.clone())]),
            ..Default::default()
        }];
        dependencies.push(ResourceDescriptor {
            name: Some(DOCKERFILE.into()),
            uri: Some(match job.context.as_str() {
                "." => format!("git+{}#{}", job.repo_url, job.dockerfile_path),
                context => format!("git+{}#{context}/{}", job.repo_url, job.dockerfile_path),
            }),
            digest: BTreeMap::from([("sha256".into(), facts.dockerfile_sha256.to_string())]),
            ..Default::default()
        });
        dependencies.extend(facts.base_images.iter().cloned());
        let builder = facts.builder;
        let grants = serde_json::to_vec(&builder.grants).unwrap_or_default();
        Statement {
            statement_type: STATEMENT_TYPE.into(),
            subject,
            predicate_type: SLSA_PROVENANCE.into(),
            predicate: statement::Provenance {
                build_definition: BuildDefinition {
                    build_type: BUILD_TYPE.into(),
                    external_parameters: ExternalParameters {
                        repository: job.repo_url.clone(),
                        git_ref: job.git_ref.clone(),
                        context: job.context.clone(),
                        dockerfile: job.dockerfile_path.clone(),
                        target: job.target.clone(),
                        build_args: job.build_args.clone(),
                        labels: job.labels.clone(),
                        platforms: job.platforms.iter().map(ToString::to_string).collect(),
                        secrets: job.secrets.clone(),
                        no_cache: job.no_cache,
                    },
                    internal_parameters: InternalParameters {
                        builder: builder.name.clone(),
                        grants_digest: digest_of(&grants),
                        project: job.project.clone(),
                        protected: job.protected,
                        reused_from: facts.reused_from.map(String::from),
                    },
                    resolved_dependencies: dependencies,
                },
                run_details: RunDetails {
                    builder: SlsaBuilder {
                        id: format!(
                            "urn:helix-build:host:{}:builder:{}",
                            self.host, builder.name
                        ),
                        version: BTreeMap::from([
                            ("helix-build".into(), env!("CARGO_PKG_VERSION").into()),
                            ("component".into(), builder.version.clone()),
                            ("wit".into(), format!("helix:build@{WIT_VERSION}")),
                        ]),
                        builder_dependencies: vec![ResourceDescriptor {
                            name: Some(COMPONENT.into()),
                            uri: Some(format!("urn:helix-build:component:{}", builder.plugin_name)),
                            digest: BTreeMap::from([(
                                "sha256".into(),
                                sha256_hex(&builder.component_digest).to_string(),
                            )]),
                            ..Default::default()
                        }],
                    },
                    metadata: BuildMetadata {
                        invocation_id: job.id.to_string(),
                        started_on: job.started_at,
                        finished_on: chrono::Utc::now(),
                    },
                    byproducts: vec![ResourceDescriptor {
                        name: Some("audit".into()),
                        uri: Some(format!("/v1/jobs/{}/audit", job.id)),
                        digest: BTreeMap::from([(
                            "sha256".into(),
                            sha256_hex(&digest_of(facts.audit)).to_string(),
                        )]),
                        ..Default::default()
                    }],
                },
            },
        }
    }

    /// Writes, signs and attaches the statement about `facts`' build
    /// through `registry`, then each platform's SBOM, and checks the
    /// registry lists each as referring to the image: [`Provenance::read`]
    /// and then [`Provenance::attest_read`].
    pub async fn attest(
        &self,
        registry: &RegistryClient,
        facts: &BuildFacts<'_>,
        log: &JobLog,
    ) -> Result<Attested, String> {
        let target = Target::of(facts.result)?;
        let read = self
            .read(registry, &target.image, &target.digest, log)
            .await?;
        self.attest_read(registry, facts, read, log).await
    }

    /// The image pushed as `digest` under `image`, as the registry holds
    /// it, read for its SBOMs: its manifest and each platform image's
    /// packages, read from their layers (the platforms side by side).
    /// Needs nothing but the push, so it can go on beside the registry
    /// check.
    pub async fn read(
        &self,
        registry: &RegistryClient,
        image: &str,
        digest: &str,
        log: &JobLog,
    ) -> Result<ImageRead, String> {
        const READING: &str = "reading the image for its SBOM";
        let target = Target::new(image, digest)?;
        let (subject, images) = retried(READING, log, || async {
            let pushed = registry
                .manifest(&target.pinned)
                .await?
                .ok_or_else(|| format!("{} is not in the registry", target.pinned))?;
            let images = sbom::platform_images(registry, &target.repository, &pushed)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((pushed, images))
        })
        .await?;
        let read = images.into_iter().map(async |image| {
            let packages = retried(READING, log, || {
                self.packages.of(registry, &target.repository, &image)
            })
            .await?;
            Ok::<_, String>((image, packages))
        });
        let packages = futures_util::future::try_join_all(read).await?;
        Ok(ImageRead {
            target,
            subject,
            packages,
        })
    }

    /// As [`Provenance::attest`], with the image already `read` (at the
    /// digest `facts`' result names: else an error, nothing attached).
    pub async fn attest_read(
        &self,
        registry: &RegistryClient,
        facts: &BuildFacts<'_>,
        read: ImageRead,
        log: &JobLog,
    ) -> Result<Attested, String> {
        let ImageRead {
            target,
            subject,
            packages: read,
        } = read;
        let checked = Target::of(facts.result)?;
        if (&checked.name, &checked.digest) != (&target.name, &target.digest) {
            return Err(format!(
                "the image read for its SBOM is {}@{}, but the build's result is {}@{}",
                target.name, target.digest, checked.name, checked.digest
            ));
        }
        let statement = self.statement(facts);
        let sboms: Vec<_> = read
            .iter()
            .map(|(image, (packages, notes))| {
                let about = About {
                    repository: &target.name,
                    pushed: &target.digest,
                    image,
                    job: facts.job.id.as_str(),
                    host: &self.host,
                };
                sbom::statement(&about, sbom::document(&about, packages, notes))
            })
            .collect();
        let mut signed = vec![self.sign(&statement, SLSA_PROVENANCE)?];
        for sbom in &sboms {
            signed.push(self.sign(sbom, SPDX_DOCUMENT)?);
        }
        // The provenance first, then each platform's SBOM: one upload side
        // by side and one update of the image's referrers, in that order.
        let mut attached = self
            .publish(registry, &target, Some(&subject), signed, log)
            .await?
            .into_iter();
        let provenance = self.attestation(statement, attached.next())?;
        let sboms = read
            .into_iter()
            .zip(sboms)
            .zip(attached)
            .map(|(((image, (packages, notes)), statement), attached)| {
                log.push(&format!(
                    "[helix] sbom: {}: {} packages in a signed SPDX 2.3 document, attached as {}",
                    image.platform,
                    packages.len(),
                    attached.reference
                ));
                for note in &notes {
                    log.push(&format!("[helix] sbom: {}: {note}", image.platform));
                }
                Sbom {
                    platform: image.platform.clone(),
                    image: format!("{}@{}", target.name, image.digest),
                    reference: attached.reference,
                    bundle: attached.bundle,
                    key_id: self.key.id(),
                    envelope: attached.envelope,
                    statement,
                }
            })
            .collect();
        Ok(Attested { provenance, sboms })
    }

    /// As [`Provenance::attest`], for an image whose SBOMs are already
    /// attached to it (`sboms`, by the build it was reused from, in its
    /// repository at its digest): only the provenance is new.
    pub async fn attest_with_sboms(
        &self,
        registry: &RegistryClient,
        facts: &BuildFacts<'_>,
        sboms: Vec<Sbom>,
        log: &JobLog,
    ) -> Result<Attested, String> {
        let target = Target::of(facts.result)?;
        let statement = self.statement(facts);
        let signed = vec![self.sign(&statement, SLSA_PROVENANCE)?];
        let attached = self.publish(registry, &target, None, signed, log).await?;
        let provenance = self.attestation(statement, attached.into_iter().next())?;
        Ok(Attested { provenance, sboms })
    }

    /// The provenance `statement` as kept with the job, once `attached`.
    fn attestation(
        &self,
        statement: Statement,
        attached: Option<Attached>,
    ) -> Result<Attestation, String> {
        let attached = attached.ok_or("the provenance was not attached")?;
        Ok(Attestation {
            reference: attached.reference,
            bundle: Some(attached.bundle),
            key_id: self.key.id(),
            envelope: attached.envelope,
            statement,
        })
    }

    /// `statement` (about `predicate_type`) signed, as the DSSE envelope
    /// and the Sigstore bundle it is attached as.
    fn sign(
        &self,
        statement: &impl Serialize,
        predicate_type: &'static str,
    ) -> Result<Signed, String> {
        let payload = serde_json::to_vec(statement).map_err(|e| e.to_string())?;
        let envelope = self.key.sign(IN_TOTO_PAYLOAD, &payload);
        let dsse = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
        let bundle = serde_json::to_vec(&bundle::bundle(&envelope, &self.key.id()))
            .map_err(|e| e.to_string())?;
        Ok(Signed {
            envelope,
            predicate_type,
            dsse,
            bundle,
        })
    }

    /// Attaches each of the `signed` statements to `target` (its manifest
    /// `subject`, where read already) as its envelope and its bundle,
    /// listed in their order: where each is.
    async fn publish(
        &self,
        registry: &RegistryClient,
        target: &Target,
        subject: Option<&RawManifest>,
        signed: Vec<Signed>,
        log: &JobLog,
    ) -> Result<Vec<Attached>, String> {
        let artifacts: Vec<Artifact> = signed
            .iter()
            .flat_map(|s| {
                [(ENVELOPE_TYPE, &s.dsse), (BUNDLE_TYPE, &s.bundle)].map(|(media_type, bytes)| {
                    Artifact {
                        media_type,
                        bytes,
                        predicate_type: s.predicate_type,
                    }
                })
            })
            .collect();
        let digests = retried("attaching", log, || {
            attach_listed(
                registry,
                &target.repository,
                &target.pinned,
                subject,
                &artifacts,
            )
        })
        .await?;
        let mut references = digests.iter().map(|d| format!("{}@{d}", target.name));
        Ok(signed
            .into_iter()
            .map(|s| Attached {
                envelope: s.envelope,
                reference: references.next().unwrap_or_default(),
                bundle: references.next().unwrap_or_default(),
            })
            .collect())
    }

    /// Each of `images` (the external images the parsed Dockerfile uses)
    /// with its digest: the one the build tool used where the host could
    /// ask it (`used`: the job's container storage after the build),
    /// else the one `registry` gives now. The annotation `resolvedBy`
    /// says which (`build-tool` or `registry`).
    pub async fn base_images(
        &self,
        registry: &RegistryClient,
        images: &[String],
        used: &BTreeMap<String, String>,
    ) -> Vec<ResourceDescriptor> {
        let mut resolved = Vec::new();
        for image in images {
            let mut descriptor = ResourceDescriptor {
                uri: Some(image.clone()),
                ..Default::default()
            };
            let digest = match used.get(image) {
                Some(digest) => Some((digest.clone(), "build-tool")),
                None => match reference(image) {
                    Ok(reference) => match registry.manifest(&reference).await {
                        Ok(Some(manifest)) => Some((manifest.digest, "registry")),
                        _ => None,
                    },
                    Err(_) => None,
                },
            };
            if let Some((digest, by)) = digest {
                descriptor.digest =
                    BTreeMap::from([("sha256".into(), sha256_hex(&digest).to_string())]);
                descriptor.annotations = BTreeMap::from([("resolvedBy".into(), by.into())]);
            }
            resolved.push(descriptor);
        }
        resolved
    }
}
