//! A run's work, step by step: the host checks the source out, the
//! builder builds it, the host pushes the image, reads the registry back
//! and attaches the build's provenance.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;

use super::Run;
use super::reuse::Reuse;
use crate::exec::{Confinement, JobValues};
use crate::job::{BuildResult, PhaseClock, PhaseName};
use crate::plugin::{Backend, BuilderError, Built, RunContext};
use crate::provenance::statement::ResourceDescriptor;
use crate::provenance::{BuildFacts, ImageRead, Provenance};
use crate::registry::{Published, Publisher, Pushed};
use crate::reuse::EarlierBuild;
use crate::rules::CheckedBuild;
use crate::service::confine::ConfineError;
use crate::service::fault::{self, Failure};
use crate::source::FromSlot;

/// What the host's checkout gives a real build's later steps.
pub(super) struct Checked {
    /// Where the image goes.
    pub image: String,
    pub commit: String,
    pub source: CheckedBuild,
}

impl Run<'_> {
    /// Checks out, builds, pushes, checks and attests, timing each step
    /// on `clock`, also when it fails.
    pub(super) async fn work(&mut self, clock: &mut PhaseClock) -> Result<BuildResult, Failure> {
        let (checked, inputs) = match self.builder.backend() {
            Backend::Simulated => {
                // Nothing to check out: its jail, if it runs programs, now.
                self.jail = self.make_jail().await?.map(Arc::new);
                (None, None)
            }
            Backend::Storage | Backend::Engine(_) => {
                // The jail is made while the source is checked out and
                // the earlier builds are looked up: a layer mounted
                // meanwhile reaches it through the shared workspace. What
                // of its making outlasts them counts in `reuse`.
                if self.checks_out_a_layer() {
                    self.dirs
                        .share_workspace()
                        .map_err(ConfineError::SharedWorkspace)?;
                }
                let (checked, jail) = tokio::join!(
                    async {
                        let checked = self.checkout().await;
                        clock.lap(PhaseName::Checkout, Utc::now());
                        let checked = checked?;
                        let reuse = self.reuse(&checked).await;
                        Ok::<_, Failure>((checked, reuse))
                    },
                    self.make_jail()
                );
                // Kept whatever the checkout did: clean-up ends it.
                let jail = jail.map(|jail| self.jail = jail.map(Arc::new));
                let (checked, reuse) = checked?;
                clock.lap(PhaseName::Reuse, Utc::now());
                jail?;
                match reuse {
                    Reuse::Reused(result, earlier) => {
                        return self.reused(clock, &checked, result, &earlier).await;
                    }
                    Reuse::Build(to_record) => (Some(checked), to_record),
                }
            }
        };
        self.confine()?;
        self.leftovers = true;
        self.ready_slot().await;
        let instantiation = OnceLock::new();
        let built = self.build(checked.as_ref(), &instantiation).await;
        let instantiated = instantiation.get().copied();
        clock.lap_split(
            PhaseName::Instantiate,
            instantiated,
            PhaseName::Build,
            Utc::now(),
        );
        let (built, checked) = match (built?, checked) {
            (Built::Simulated(result), _) => {
                self.log.push(
                    "[helix] simulated builder: no image, so nothing pushed, checked or attested \
                     (no provenance)",
                );
                return Ok(result);
            }
            (built, Some(checked)) => (built, checked),
            // Builder::run refuses an image from a simulated builder.
            (Built::Layout(_) | Built::LocalImage, None) => {
                return Err(Failure::Builder(BuilderError::Invalid {
                    builder: self.job.builder.clone(),
                    problem: "is simulated but returned an image to push".into(),
                }));
            }
        };
        // What the base images resolved to, for the provenance, asked while
        // the image is pushed.
        let provenance = self.inner.config.provenance.as_ref();
        let (digest, bases) = tokio::join!(self.push(&built, &checked), async {
            match provenance {
                Some(provenance) => self.base_images(provenance, Some(&built), &checked).await,
                None => Vec::new(),
            }
        });
        clock.lap(PhaseName::Push, Utc::now());
        let digest = digest?;
        // The image is in the registry: what the build left goes while the
        // registry is read back and the provenance attached, which need
        // only the registry, and then the jail, whose programs are done.
        // What outlasts them is clean-up's time.
        let (mut slot, jail) = (self.slot.take(), self.jail.take());
        let (result, ()) = tokio::join!(
            async {
                // The image is read for its SBOMs beside the check (which
                // reads the tag): nothing is attached before the check
                // passed, and a failed check ends the read.
                let (result, read) = tokio::try_join!(
                    async {
                        let checked_back = self.check_pushed(&checked, &digest).await;
                        clock.lap(PhaseName::RegistryCheck, Utc::now());
                        checked_back
                    },
                    async {
                        Ok(match provenance {
                            Some(provenance) => Some(
                                provenance
                                    .read(&self.registry, &checked.image, &digest, self.log)
                                    .await,
                            ),
                            None => None,
                        })
                    }
                )?;
                if let (Some(provenance), Some(read)) = (provenance, read) {
                    let attested = match read {
                        Ok(read) => {
                            self.attest(provenance, bases, &checked, &result, Some(read), None)
                                .await
                        }
                        Err(e) => Err(Failure::Attest(e)),
                    };
                    clock.lap(PhaseName::Attest, Utc::now());
                    attested?;
                }
                Ok::<_, Failure>(result)
            },
            async {
                self.tidy_after_build(slot.as_mut(), jail.as_deref()).await;
                super::end::end_jail(jail).await;
            }
        );
        (self.slot, self.leftovers) = (slot, false);
        let result = result?;
        if let Some(inputs) = &inputs {
            self.record_inputs(inputs);
        }
        Ok(result)
    }

    /// A job given the image `earlier` built of the same inputs: its
    /// provenance is attested while the jail, in which nothing ran, ends.
    async fn reused(
        &mut self,
        clock: &mut PhaseClock,
        checked: &Checked,
        result: BuildResult,
        earlier: &EarlierBuild,
    ) -> Result<BuildResult, Failure> {
        let jail = self.jail.take();
        let (attested, ()) = tokio::join!(
            async {
                let Some(provenance) = &self.inner.config.provenance else {
                    return Ok(());
                };
                let bases = self.base_images(provenance, None, checked).await;
                let reused_from = Some(earlier.job.as_str());
                let attested = self
                    .attest(provenance, bases, checked, &result, None, reused_from)
                    .await;
                clock.lap(PhaseName::Attest, Utc::now());
                attested
            },
            super::end::end_jail(jail)
        );
        attested.map(|()| result)
    }

    /// The host's checkout of a real build's source at the resolved
    /// commit, kept with the live job, and its checks of the Dockerfile.
    async fn checkout(&self) -> Result<Checked, Failure> {
        let job = self.job;
        let image = crate::job::job_image(job, self.inner.config.default_registry.as_deref())
            .ok_or(Failure::NoImage)?;
        if let Some(engine) = &self.engine {
            engine.prepare().await.map_err(Failure::Engine)?;
        }
        let workspace = self.dirs.workspace();
        let layer = self.dirs.source_layer();
        let commit = self
            .inner
            .config
            .checkout
            .fetch(
                job,
                &workspace,
                self.log,
                self.cancel,
                self.cgroup.as_deref(),
                self.slot.as_ref().map(|slot| FromSlot {
                    mirrors: slot.mirrors(),
                    layer: self.checks_out_a_layer().then_some(&layer),
                    owner: self.inner.jail_users(&self.builder),
                }),
            )
            .await?;
        if let Some(entry) = self.inner.lock().jobs.get_mut(&job.id) {
            entry.job.commit = Some(commit.clone());
        }
        let source = crate::rules::check_source(&workspace, job, &self.builder)?;
        Ok(Checked {
            image,
            commit,
            source,
        })
    }

    /// Whether the checkout is a layer of the run's own over its slot's
    /// working tree of the repository: unless it has no slot, or a
    /// workspace that may be kept must hold its files.
    fn checks_out_a_layer(&self) -> bool {
        self.slot.is_some() && !self.inner.config.keep_failed_workspaces
    }

    /// The builder's run in a fresh instance, with the job's secrets,
    /// registry settings and confinement; `instantiation` is set to how
    /// long making the instance took.
    async fn build(
        &self,
        checked: Option<&Checked>,
        instantiation: &OnceLock<Duration>,
    ) -> Result<Built, Failure> {
        let job = self.job;
        let secrets = self
            .inner
            .config
            .secrets
            .write(&job.secrets, &self.dirs.secrets())
            .map_err(Failure::Secrets)?;
        // The secrets, written since the jail (which took the checkout
        // over with the run's directory) was made.
        if let Some(jail) = &self.jail {
            let secrets_dir = self.dirs.secrets();
            if secrets_dir.exists() {
                jail.hand_over(&secrets_dir).map_err(ConfineError::from)?;
            }
        }
        let mut program_env = self.engine.as_ref().map(|e| e.env()).unwrap_or_default();
        // The run's own registry settings over the engine's client
        // settings: its `docker` gets the job's credentials.
        program_env.extend(self.dirs.program_env());
        let mut values = JobValues {
            secrets,
            registry_cache: self.builder.registry_cache_for(job),
            cgroup: self.cgroup.clone(),
            jail: self.jail.clone(),
            engine_image: self.engine_image.clone(),
            ..JobValues::default()
        };
        if let Some(checked) = checked {
            checked.source.pin(job, &mut values);
        }
        let ctx = RunContext {
            log: self.log.clone(),
            cancel: self.cancel.clone(),
            workspace: self.dirs.workspace(),
            program_env,
            commit: checked.map(|c| c.commit.clone()),
            values,
            audit: self.audit.clone(),
        };
        match self.builder.run_measured(job, ctx, instantiation).await {
            Ok(built) => Ok(built),
            Err(error) => {
                let base_images = checked.map(|c| c.source.external_images.as_slice());
                // The base images are looked up with the job's own credentials.
                Err(fault::examine(
                    error,
                    &self.publisher(),
                    base_images.unwrap_or_default(),
                    &job.platforms,
                )
                .await)
            }
        }
    }

    /// The host's push of what the builder `built`: the digest pushed.
    async fn push(&self, built: &Built, checked: &Checked) -> Result<String, Failure> {
        let env = self.dirs.program_env();
        let workspace = self.dirs.workspace();
        let pushed = match (built, &self.engine, &self.engine_image) {
            (Built::Layout(layout), _, _) => Pushed::Layout { layout, env: &env },
            (_, Some(engine), Some(name)) => Pushed::Engine { engine, name },
            _ => Pushed::Storage {
                env: &env,
                workspace: &workspace,
                several_platforms: self.job.platforms.len() > 1,
            },
        };
        let pushing = std::time::Instant::now();
        let digest = self
            .publisher()
            .push(
                pushed,
                &checked.image,
                &self.job.platforms,
                self.log,
                self.cancel,
                self.confinement(),
            )
            .await;
        self.inner
            .counts()
            .pushed(&self.job.builder, digest.is_ok(), pushing.elapsed());
        Ok(digest?)
    }

    /// The registry read back: the tag holds the pushed `digest`, with
    /// every requested platform.
    async fn check_pushed(&self, checked: &Checked, digest: &str) -> Result<BuildResult, Failure> {
        let Published { result, bytes } = Publisher::check_pushed(
            &self.registry,
            &checked.image,
            digest,
            &self.job.platforms,
            self.log,
        )
        .await?;
        self.inner
            .measured(self.job.id.as_str(), |r| r.pushed_bytes = bytes);
        Ok(result)
    }

    /// The external images the build used, with their digests (see
    /// [`Provenance::base_images`]): as the run's container storage holds
    /// them after a build there (`built`), else as the registry has them.
    async fn base_images(
        &self,
        provenance: &Provenance,
        built: Option<&Built>,
        checked: &Checked,
    ) -> Vec<ResourceDescriptor> {
        let external = &checked.source.external_images;
        let mut used = BTreeMap::new();
        if let (Some(Built::LocalImage), None) = (built, &self.engine) {
            // The storage's record answers for fully qualified names; the
            // tools for the rest.
            let record = self.dirs.storage_record();
            let mut asked = Vec::new();
            for image in external {
                match record.as_ref().and_then(|r| r.digest_of(image)) {
                    Some(digest) => {
                        used.insert(image.clone(), digest.to_string());
                    }
                    None => asked.push(image.clone()),
                }
            }
            if !asked.is_empty() {
                let publisher = self.publisher();
                let env = self.dirs.program_env();
                let (workspace, confined) = (self.dirs.workspace(), self.confinement());
                used.extend(
                    publisher
                        .storage_digests(&asked, &env, &workspace, self.log, self.cancel, confined)
                        .await,
                );
            }
        }
        provenance
            .base_images(&self.registry, external, &used)
            .await
    }

    /// Signs and attaches the provenance and SBOMs of what the builder
    /// built from `base_images` (or, for a job given its image, of the
    /// build `reused_from`), and keeps them with the job; a registry that
    /// refuses it fails the job as it would a refused push. The image is
    /// `read` for its SBOMs already where it was beside the registry
    /// check.
    async fn attest(
        &self,
        provenance: &Provenance,
        base_images: Vec<ResourceDescriptor>,
        checked: &Checked,
        result: &BuildResult,
        read: Option<ImageRead>,
        reused_from: Option<&str>,
    ) -> Result<(), Failure> {
        let (job, log) = (self.job, self.log);
        let (_, trail) = self.audit.stored();
        let registry = &self.registry;
        let facts = BuildFacts {
            job,
            commit: &checked.commit,
            result,
            builder: self.builder.info(),
            dockerfile_sha256: &checked.source.dockerfile_sha256,
            base_images,
            audit: trail.as_bytes(),
            reused_from,
        };
        let attested = match self.sboms_of(reused_from, result).await {
            Some(sboms) => {
                log.push(&format!(
                    "[helix] sbom: job {} attached this image's SBOMs (same repository, same digest): \
                     they are this job's too",
                    reused_from.unwrap_or_default()
                ));
                provenance
                    .attest_with_sboms(registry, &facts, sboms, log)
                    .await
            }
            None => match read {
                Some(read) => provenance.attest_read(registry, &facts, read, log).await,
                None => provenance.attest(registry, &facts, log).await,
            },
        };
        let crate::provenance::Attested {
            provenance: attestation,
            sboms,
        } = attested.map_err(Failure::Attest)?;
        match serde_json::to_string(&crate::provenance::sbom::JobSbom { sboms }) {
            Ok(body) => {
                self.inner
                    .config
                    .store
                    .put_record(&job.id, crate::provenance::sbom::RECORD, body)
            }
            Err(e) => tracing::error!(job = %job.id, "SBOM not kept: {e}"),
        }
        let size = attestation.envelope.payload.len() * 3 / 4;
        match serde_json::to_string(&attestation) {
            Ok(body) => {
                self.inner
                    .config
                    .store
                    .put_record(&job.id, crate::provenance::RECORD, body)
            }
            Err(e) => tracing::error!(job = %job.id, "provenance not kept: {e}"),
        }
        log.push(&format!(
            "[helix] provenance: a signed SLSA v1 statement (about {size} bytes, key {}) is \
             attached to the image as {}",
            attestation.key_id, attestation.reference
        ));
        Ok(())
    }

    /// The SBOMs job `reused_from` attached, where they are attached to
    /// `result`'s very image: in its repository, at its digest.
    async fn sboms_of(
        &self,
        reused_from: Option<&str>,
        result: &BuildResult,
    ) -> Option<Vec<crate::provenance::sbom::Sbom>> {
        use crate::provenance::sbom::{JobSbom, RECORD};
        let records = self
            .inner
            .config
            .store
            .records(reused_from?, RECORD)
            .await
            .ok()??;
        let earlier: JobSbom = records.iter().find_map(|r| serde_json::from_str(r).ok())?;
        let repository = crate::reference::repository_of(&result.image_tag);
        let digest = result.digest.as_ref()?.to_string();
        let hex = digest.strip_prefix("sha256:")?;
        // Each attached in this repository and about this digest.
        let same_image = !earlier.sboms.is_empty()
            && earlier.sboms.iter().all(|sbom| {
                sbom.reference.starts_with(&format!("{repository}@"))
                    && sbom
                        .statement
                        .subject
                        .iter()
                        .any(|s| s.digest.get("sha256").map(String::as_str) == Some(hex))
            });
        same_image.then_some(earlier.sboms)
    }

    /// Pushes and registry checks with the job's own credentials.
    pub(super) fn publisher(&self) -> Publisher {
        Publisher::new(self.registries.clone())
    }

    /// The run's control group and jail, for the host's own programs.
    fn confinement(&self) -> Confinement<'_> {
        Confinement {
            cgroup: self.cgroup.as_deref(),
            jail: self.jail.as_deref(),
        }
    }
}
