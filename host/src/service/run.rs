//! The run of one job on this host, from its claim to its stored end: a
//! fresh workspace, the host's checkout, the builder's run, the host's
//! push and registry check, and the outcome recorded (see `settle`);
//! what confines it is in `confine`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;

use super::Inner;
use super::confine::limit_reached;
use super::fault::{self, Failure};
use super::table::Entry;
use crate::audit::AuditTrail;
use crate::backoff::Backoff;
use crate::cancel::CancelSignal;
use crate::cgroup::RunCgroup;
use crate::docker_engine::DockerEngine;
use crate::exec::{Confinement, JobValues};
use crate::jail::Jail;
use crate::job::{BuildResult, Job, Outcome};
use crate::layer_cache::{CacheScope, CacheSlot};
use crate::log::JobLog;
use crate::plugin::{Builder, Built, RunContext};
use crate::provenance::{BuildFacts, Provenance};
use crate::registry::oci::RegistryClient;
use crate::registry::{Publisher, Pushed, RegistrySettings};
use crate::store::StoredJob;
use crate::workspace::{JobDirs, run_name};

/// What a worker holds of the job it runs.
pub(super) struct Claimed {
    pub job: Job,
    pub log: Arc<JobLog>,
    pub cancel: CancelSignal,
}

/// What one run (attempt) of a job builds with and records into.
struct Attempt<'a> {
    dirs: &'a JobDirs,
    log: &'a Arc<JobLog>,
    cancel: &'a CancelSignal,
    cgroup: Option<Arc<RunCgroup>>,
    jail: Option<Arc<Jail>>,
    /// The Docker Engine it builds in, if it builds in one.
    engine: Option<&'a Arc<DockerEngine>>,
    audit: &'a Arc<AuditTrail>,
    /// The run's image name in its builder's Docker Engine, if it has one.
    engine_image: Option<&'a str>,
    /// How the run reaches registries, with the job's credentials.
    registries: &'a Arc<RegistrySettings>,
}

impl Inner {
    /// Makes a job this host claimed live here: in the table, with its log
    /// (continuing the lines an earlier run left) and its cancel signal.
    pub(super) fn adopt(&self, stored: StoredJob) -> Claimed {
        let StoredJob { job, log } = stored;
        let log = Arc::new(
            JobLog::persistent(
                self.config.log_cap_lines,
                self.config.secrets.redactor(&job.secrets),
                job.id.clone(),
                self.config.store.clone(),
                log,
            )
            .with_output_caps(self.config.log_output_caps),
        );
        let cancel = CancelSignal::new();
        let (state, _) = watch::channel(job.state);
        let claimed = Claimed {
            job: job.clone(),
            log: log.clone(),
            cancel: cancel.clone(),
        };
        let id = job.id.clone();
        self.lock().jobs.insert(
            job.id.clone(),
            Entry {
                job,
                log,
                state,
                cancel: Some(cancel),
            },
        );
        // Nobody waiting is fine.
        let _ = self.adopted.send(id);
        claimed
    }

    /// Runs a claimed job to its end and records it. A run that ends in an
    /// infrastructure fault (the registry's or the host's, see `fault`) is
    /// tried again, after a backoff, while attempts are left. Nothing else
    /// is retried.
    pub(super) async fn run(self: &Arc<Self>, claimed: Claimed) {
        let mut job = claimed.job.clone();
        loop {
            let outcome = self.execute(&job, &claimed.log, &claimed.cancel).await;
            let max = self.config.max_attempts;
            let fault = match &outcome {
                outcome if fault::is_infrastructure(outcome) && job.attempts < max => {
                    outcome.error().unwrap_or_default()
                }
                _ => return self.record(&job.id, outcome).await,
            };
            let delay = RETRY.delay(job.attempts);
            claimed.log.push(&format!(
                "[helix] attempt {} of {max} failed: {fault}; an infrastructure fault, so attempt {} starts in {:.1}s",
                job.attempts,
                job.attempts + 1,
                delay.as_secs_f64()
            ));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = claimed.cancel.cancelled() => {
                    let reason = claimed.cancel.reason();
                    return self.record(&job.id, Outcome::Cancelled { reason }).await;
                }
            }
            let mut next = job.clone();
            if next.next_attempt(Utc::now()).is_err() {
                return self.record(&job.id, outcome).await;
            }
            match self.config.queue.next_attempt(&job, &next).await {
                Ok(true) => {}
                Ok(false) => {
                    // Another host has it now; this run is over.
                    return self.record(&job.id, outcome).await;
                }
                Err(e) => {
                    tracing::warn!(job = %job.id, "cannot record another attempt: {e}");
                    return self.record(&job.id, outcome).await;
                }
            }
            if let Some(entry) = self.lock().jobs.get_mut(&job.id) {
                entry.job.clone_from(&next);
            }
            job = next;
        }
    }

    /// Runs `job` in a fresh workspace: for a real builder the host checks
    /// the source out, the builder builds it, and the host pushes and
    /// confirms the image. The workspace is removed afterwards unless the
    /// job failed and the operator keeps failed workspaces.
    async fn execute(&self, job: &Job, log: &Arc<JobLog>, cancel: &CancelSignal) -> Outcome {
        let failed = |failure| fault::outcome(failure, None, log);
        let Some(builder) = self.runtime().builder(&job.builder) else {
            return failed(Failure::NotLoaded(job.builder.clone()));
        };
        // This run keeps this component whatever a reload loads meanwhile.
        let digest = builder.info().component_digest.clone();
        log.push(&format!(
            "[helix] builder '{}' is component {digest}",
            job.builder
        ));
        if let Some(entry) = self.lock().jobs.get_mut(&job.id) {
            entry.job.component_digest = Some(digest);
        }
        let simulated = builder.info().simulated;
        let cache = self.config.cache.clone();
        let operator_engine = builder.engine().cloned();
        let managed = builder.managed_engine().cloned();
        // A slot of the builder's layer cache, unless the job wants none; a
        // builder in the operator's Docker Engine keeps its layers in
        // BuildKit's cache there; one in managed engines builds in its
        // slot's engine (a no_cache job too: it builds with --no-cache).
        let wants_slot = match (&operator_engine, &managed) {
            (Some(_), _) => false,
            (None, Some(_)) => true,
            (None, None) => !job.no_cache,
        };
        let mut slot = match simulated || !wants_slot {
            true => None,
            false => match cache
                .acquire(&job.builder, &CacheScope::of(job), &job.repo_url)
                .await
            {
                Ok(slot) => slot,
                Err(e) => return failed(Failure::Cache(e)),
            },
        };
        // Each attempt in a directory and a control group of its own: an
        // earlier attempt's (its processes reaped when this host started)
        // is removed first, never reused.
        let run = run_name(&job.id, job.attempts);
        // Attempts count from 1: the first run has no earlier one.
        for earlier in 1..job.attempts {
            let old = self.config.workspace_dir.join(run_name(&job.id, earlier));
            crate::quota::release(&old, &crate::quota::image_of(&old));
            if old.exists()
                && let Err(e) = std::fs::remove_dir_all(&old)
            {
                tracing::warn!("could not remove {}: {e}", old.display());
            }
        }
        let cgroup = match &self.config.cgroups {
            Some(cgroups) if !simulated => {
                match cgroups.create(&run, &builder.info().build_limits) {
                    Ok(cgroup) => Some(Arc::new(cgroup)),
                    Err(e) => return failed(Failure::Cgroup(e)),
                }
            }
            _ => None,
        };
        let root = self.config.workspace_dir.join(&run);
        let registries = self.config.registries.for_job(job);
        let dirs = match JobDirs::create(
            root.clone(),
            &registries,
            cache.driver(),
            slot.as_ref().map(|s| s.dir()),
            match simulated {
                true => None,
                false => builder.info().build_limits.disk_mib,
            },
        ) {
            Ok(dirs) => dirs,
            Err(source) => return failed(Failure::Workspace { root, source }),
        };
        log.push(&match self.config.queue.host() {
            Some(host) => format!(
                "[helix] running on builder '{}' on host '{host}'",
                job.builder
            ),
            None => format!("[helix] running on builder '{}'", job.builder),
        });
        if let (Some(project), false) = (&job.project, simulated) {
            log.push(&match registries.auth_file() {
                Some(_) => format!(
                    "[helix] registry credentials: project {project}'s own (its registry_auth)"
                ),
                None => format!(
                    "[helix] registry credentials: none; project {project} has no registry_auth, \
                     so its pulls and pushes are anonymous"
                ),
            });
        }
        let engine = match (operator_engine, &managed, slot.as_mut()) {
            (Some(engine), _, _) => {
                log.push(&format!(
                    "[helix] building in the Docker Engine at {} (BuildKit's layer cache is the engine's); \
                     its RUN steps run in the engine's control groups, so the job's build limits \
                     reach the docker client, not them",
                    engine.socket()
                ));
                Some(engine)
            }
            (None, Some(settings), Some(slot)) => {
                match self.managed_engine(builder.as_ref(), slot, settings).await {
                    Ok(engine) => {
                        log.push(&format!(
                        "[helix] building in this slot's managed Docker Engine at {} (in a jail of its own; \
                         its layer cache is in {}, its RUN steps within the builder's limits)",
                        engine.socket(),
                        slot.dir().display()
                    ));
                        Some(engine)
                    }
                    Err(e) => {
                        dirs.remove();
                        return failed(Failure::ManagedEngine(e));
                    }
                }
            }
            (None, Some(_), None) => {
                dirs.remove();
                return failed(Failure::NoSlot(job.builder.clone()));
            }
            (None, None, _) => None,
        };
        if let Some(slot) = &slot
            && let Some(emptied) = slot.emptied()
        {
            log.push(&format!(
                "[helix] build cache slot {} held the layers of {}: emptied for {}",
                slot.dir().display(),
                emptied.describe(),
                CacheScope::of(job).describe()
            ));
        }
        if engine.is_some() {
        } else if !simulated {
            log.push(&match &slot {
                Some(slot) => format!(
                    "[helix] container storage: {} (the builder's layer cache, {})",
                    slot.dir().display(),
                    slot.driver().as_str()
                ),
                None => format!(
                    "[helix] container storage: the job's own ({}), removed with it{}",
                    cache.driver().as_str(),
                    if job.no_cache { " (no_cache)" } else { "" }
                ),
            });
        }
        // Every program of the run runs in its jail, made before the first.
        let jail = match builder.runs_programs() {
            false => None,
            true => match self
                .jail(
                    builder.as_ref(),
                    engine.as_deref(),
                    &dirs,
                    slot.as_ref(),
                    cgroup.as_deref(),
                )
                .await
            {
                Ok(jail) => Some(Arc::new(jail)),
                Err(e) => {
                    dirs.remove();
                    return failed(Failure::Jail(e));
                }
            },
        };
        if let Some(jail) = &jail {
            log.push(&jail.describe());
        }
        let cleanup_env = dirs.program_env();
        if let Some(slot) = slot.as_ref().filter(|_| engine.is_none()) {
            slot.clean(&cleanup_env, log, jail.as_deref()).await;
        }
        let audit = Arc::new(AuditTrail::new(job.attempts).of_project(job.project.clone()));
        let engine_image = engine.as_ref().map(|_| DockerEngine::image_name(&run));
        let attempt = Attempt {
            dirs: &dirs,
            log,
            cancel,
            cgroup: cgroup.clone(),
            jail: jail.clone(),
            engine: engine.as_ref(),
            audit: &audit,
            engine_image: engine_image.as_deref(),
            registries: &registries,
        };
        let built = self.build_and_publish(job, &builder, attempt).await;
        if let (Some(engine), Some(name)) = (&engine, &engine_image) {
            engine.remove_images(name).await;
        }
        // Written before the run's end, so the end is never stored without it.
        let (name, body) = audit.stored();
        self.config.store.put_record(&job.id, &name, body);
        let engine_hit = slot.as_mut().and_then(CacheSlot::engine_limit_hit);
        let reached = cgroup.as_ref().and_then(|c| c.limit_hit()).or(engine_hit);
        // A checkout writes only into the job's own disk, never the slot.
        let written = slot
            .as_ref()
            .filter(|_| !matches!(built, Err(Failure::Checkout(_))));
        let reached = limit_reached(job, builder.info(), reached, &dirs, written, log);
        let outcome = match built {
            Ok(result) => Outcome::Succeeded(result),
            Err(failure) => fault::outcome(failure, reached.as_deref(), log),
        };
        if let Some(slot) = slot.as_ref().filter(|_| engine.is_none()) {
            slot.clean(&cleanup_env, log, jail.as_deref()).await;
        }
        drop(jail);
        drop(cgroup);
        let failed = !matches!(outcome, Outcome::Succeeded(_));
        if failed && self.config.keep_failed_workspaces {
            // Never the secrets or credentials: they outlive no job.
            if let Err(e) = dirs.remove_secrets() {
                tracing::error!(job = %job.id, "could not remove the job's build secrets: {e}");
            }
            log.push(&format!(
                "[helix] workspace kept for debugging (without its build secrets and credentials): {}",
                dirs.root().display()
            ));
            dirs.keep();
        } else {
            dirs.remove();
        }
        outcome
    }

    async fn build_and_publish(
        &self,
        job: &Job,
        builder: &Builder,
        attempt: Attempt<'_>,
    ) -> Result<BuildResult, Failure> {
        let Attempt {
            dirs,
            log,
            cancel,
            cgroup,
            jail,
            engine,
            audit,
            engine_image,
            registries,
        } = attempt;
        let confined = Confinement {
            cgroup: cgroup.as_deref(),
            jail: jail.as_deref(),
        };
        let workspace = dirs.workspace();
        let simulated = builder.info().simulated;
        let (image, commit, source) = if simulated {
            (None, None, None)
        } else {
            let Some(image) = crate::job::job_image(job, self.config.default_registry.as_deref())
            else {
                return Err(Failure::NoImage);
            };
            if let Some(engine) = engine {
                engine.prepare().await.map_err(Failure::Engine)?;
            }
            let commit = self
                .config
                .checkout
                .fetch(job, &workspace, log, cancel, cgroup.as_deref())
                .await?;
            if let Some(entry) = self.lock().jobs.get_mut(&job.id) {
                entry.job.commit = Some(commit.clone());
            }
            let source = crate::rules::check_source(&workspace, job, builder)?;
            (Some(image), Some(commit), Some(source))
        };
        let secrets = self
            .config
            .secrets
            .write(&job.secrets, &dirs.secrets())
            .map_err(Failure::Secrets)?;
        let workspace_dir = workspace.clone();
        let mut program_env = engine.map(|e| e.env()).unwrap_or_default();
        // The run's own registry settings over the engine's client
        // settings: its `docker` gets the job's credentials.
        program_env.extend(dirs.program_env());
        let mut values = JobValues {
            secrets,
            registry_cache: builder.registry_cache_for(job),
            cgroup: cgroup.clone(),
            jail: jail.clone(),
            engine_image: engine_image.map(String::from),
            ..JobValues::default()
        };
        if let Some(source) = &source {
            source.pin(job, &mut values);
        }
        let ctx = RunContext {
            log: log.clone(),
            cancel: cancel.clone(),
            workspace,
            program_env,
            commit: commit.clone(),
            values,
            audit: audit.clone(),
        };
        let built = match builder.run(job, ctx).await {
            Ok(built) => built,
            Err(error) => {
                let base_images = source.as_ref().map(|s| s.external_images.as_slice());
                // The base images are looked up with the job's own credentials.
                let publisher = Publisher::new(registries.clone());
                return Err(fault::examine(
                    error,
                    &publisher,
                    base_images.unwrap_or_default(),
                    &job.platforms,
                )
                .await);
            }
        };
        match (built, image) {
            (Built::Simulated(result), _) => {
                log.push(
                    "[helix] simulated builder: no image, so nothing pushed, checked or attested \
                     (no provenance)",
                );
                Ok(result)
            }
            (built @ (Built::Layout(_) | Built::LocalImage), Some(image)) => {
                let env = dirs.program_env();
                let pushed = match (&built, engine, engine_image) {
                    (Built::Layout(layout), _, _) => Pushed::Layout { layout, env: &env },
                    (_, Some(engine), Some(name)) => Pushed::Engine { engine, name },
                    _ => Pushed::Storage {
                        env: &env,
                        workspace: &workspace_dir,
                        several_platforms: job.platforms.len() > 1,
                    },
                };
                let publisher = Publisher::new(registries.clone());
                let result = publisher
                    .publish(pushed, &image, &job.platforms, log, cancel, confined)
                    .await?;
                if let Some(provenance) = &self.config.provenance
                    && let Some(source) = &source
                {
                    let used = match (&built, engine) {
                        (Built::LocalImage, None) => {
                            publisher
                                .storage_digests(
                                    &source.external_images,
                                    &env,
                                    &workspace_dir,
                                    log,
                                    cancel,
                                    confined,
                                )
                                .await
                        }
                        _ => BTreeMap::new(),
                    };
                    let (_, trail) = audit.stored();
                    let registry = RegistryClient::new(registries.clone());
                    let facts = BuildFacts {
                        job,
                        commit: commit.as_deref().unwrap_or_default(),
                        result: &result,
                        builder: builder.info(),
                        dockerfile_sha256: &source.dockerfile_sha256,
                        base_images: provenance
                            .base_images(&registry, &source.external_images, &used)
                            .await,
                        audit: trail.as_bytes(),
                    };
                    self.attest(provenance, &registry, &facts, log).await?;
                }
                Ok(result)
            }
            // Builder::run refuses an image from a simulated builder.
            (Built::Layout(_) | Built::LocalImage, None) => {
                Err(Failure::Builder(crate::plugin::BuilderError::Invalid {
                    builder: job.builder.clone(),
                    problem: "is simulated but returned an image to push".into(),
                }))
            }
        }
    }

    /// Signs and attaches the provenance and SBOMs of the build `facts`
    /// describe, and keeps them with the job; a registry that refuses it fails the job
    /// as it would a refused push.
    async fn attest(
        &self,
        provenance: &Provenance,
        registry: &RegistryClient,
        facts: &BuildFacts<'_>,
        log: &JobLog,
    ) -> Result<(), Failure> {
        let crate::provenance::Attested {
            provenance: attestation,
            sboms,
        } = provenance
            .attest(registry, facts, log)
            .await
            .map_err(Failure::Attest)?;
        match serde_json::to_string(&crate::provenance::sbom::JobSbom { sboms }) {
            Ok(body) => {
                self.config
                    .store
                    .put_record(&facts.job.id, crate::provenance::sbom::RECORD, body)
            }
            Err(e) => tracing::error!(job = %facts.job.id, "SBOM not kept: {e}"),
        }
        let size = attestation.envelope.payload.len() * 3 / 4;
        match serde_json::to_string(&attestation) {
            Ok(body) => {
                self.config
                    .store
                    .put_record(&facts.job.id, crate::provenance::RECORD, body)
            }
            Err(e) => tracing::error!(job = %facts.job.id, "provenance not kept: {e}"),
        }
        log.push(&format!(
            "[helix] provenance: a signed SLSA v1 statement (about {size} bytes, key {}) is \
             attached to the image as {}",
            attestation.key_id, attestation.reference
        ));
        Ok(())
    }
}

/// The wait between attempts after an infrastructure fault.
pub(super) const RETRY: Backoff = Backoff {
    first: std::time::Duration::from_secs(2),
    max: std::time::Duration::from_secs(60),
};
