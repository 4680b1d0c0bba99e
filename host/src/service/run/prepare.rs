//! A run's first step: what it builds with, made before its first
//! program — the builder it keeps, a slot of its layer cache, a control
//! group, the workspace and the Docker Engine — and, while the source is
//! checked out, its jail.

use std::sync::Arc;

use super::Run;
use crate::cancel::CancelSignal;
use crate::docker_engine::DockerEngine;
use crate::jail::Jail;
use crate::job::Job;
use crate::layer_cache::{CacheScope, CacheSlot};
use crate::log::JobLog;
use crate::plugin::{Backend, EngineKind};
use crate::registry::oci::RegistryClient;
use crate::service::Inner;
use crate::service::confine::ConfineError;
use crate::service::fault::Failure;
use crate::workspace::{JobDirs, run_name};

impl<'a> Run<'a> {
    /// Makes everything the run of `job` builds with, each said in its
    /// log; on a failure nothing made is left behind.
    pub(super) async fn prepare(
        inner: &'a Inner,
        job: &'a Job,
        log: &'a Arc<JobLog>,
        cancel: &'a CancelSignal,
    ) -> Result<Run<'a>, Failure> {
        let Some(builder) = inner.runtime().builder(&job.builder) else {
            return Err(Failure::NotLoaded(job.builder.clone()));
        };
        let digest = builder.info().component_digest.clone();
        log.push(&format!(
            "[helix] builder '{}' is component {digest}",
            job.builder
        ));
        if let Some(entry) = inner.lock().jobs.get_mut(&job.id) {
            entry.job.component_digest = Some(digest);
            entry.job.resources = None;
        }
        let backend = builder.backend().clone();
        let simulated = matches!(backend, Backend::Simulated);
        let cache = inner.config.cache.clone();
        // A slot of the builder's layer cache, unless the job wants none; a
        // builder in the operator's Docker Engine keeps its layers in
        // BuildKit's cache there; one in managed engines builds in its
        // slot's engine (a no_cache job too: it builds with --no-cache).
        let wants_slot = match &backend {
            Backend::Simulated | Backend::Engine(EngineKind::Operator(_)) => false,
            Backend::Engine(EngineKind::Managed(_)) => true,
            Backend::Storage => !job.no_cache,
        };
        let mut slot = match wants_slot {
            false => None,
            true => cache
                .acquire(&job.builder, &CacheScope::of(job), &job.repo_url)
                .await
                .map_err(Failure::Cache)?,
        };
        // Each attempt in a directory and a control group of its own: an
        // earlier attempt's (its processes reaped when this host started)
        // is removed first, never reused.
        let run = run_name(&job.id, job.attempts);
        // Attempts count from 1: the first run has no earlier one.
        for earlier in 1..job.attempts {
            let old = inner.config.workspace_dir.join(run_name(&job.id, earlier));
            crate::layer::unmount_below(&old);
            crate::quota::release(&old, &crate::quota::image_of(&old));
            if old.exists()
                && let Err(e) = std::fs::remove_dir_all(&old)
            {
                tracing::warn!("could not remove {}: {e}", old.display());
            }
        }
        let cgroup = match &inner.config.cgroups {
            Some(cgroups) if !simulated => Some(Arc::new(
                cgroups
                    .create(&run, &builder.info().build_limits)
                    .map_err(Failure::Cgroup)?,
            )),
            _ => None,
        };
        let root = inner.config.workspace_dir.join(&run);
        let registries = inner.config.registries.for_job(job);
        // Its TLS roots are loaded and parsed while the directories are
        // made.
        let client = tokio::task::spawn_blocking({
            let registries = registries.clone();
            move || RegistryClient::new(registries)
        });
        let dirs = JobDirs::create(
            root.clone(),
            &registries,
            cache.driver(),
            slot.as_ref().map(|s| s.dir()),
            match simulated {
                true => None,
                false => builder.info().build_limits.disk_mib,
            },
        )
        .map_err(|source| Failure::Workspace { root, source })?;
        log.push(&match inner.config.queue.host() {
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
        let engine = match inner
            .engine(job, &builder, &backend, slot.as_mut(), log)
            .await
        {
            Ok(engine) => engine,
            Err(failure) => {
                dirs.remove();
                return Err(failure);
            }
        };
        for why in slot.iter().flat_map(|s| s.remade()) {
            log.push(&format!("[helix] warning: {why}"));
        }
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
        if let Backend::Storage = backend {
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
        let engine_image = engine.as_ref().map(|_| DockerEngine::image_name(&run));
        let audit =
            Arc::new(crate::audit::AuditTrail::new(job.attempts).of_project(job.project.clone()));
        // Only a panic making it fails the task: made here then, to say so.
        let registry = client
            .await
            .unwrap_or_else(|_| RegistryClient::new(registries.clone()));
        Ok(Run {
            inner,
            job,
            log,
            cancel,
            builder,
            slot,
            cgroup,
            dirs,
            registry,
            registries,
            engine,
            engine_image,
            jail: None,
            audit,
            leftovers: false,
        })
    }

    /// The run's jail, where every program of its build runs, made while
    /// the host checks the source out (`confine` hands the checkout over
    /// to it once there); none for a run that builds nothing.
    pub(super) async fn make_jail(&self) -> Result<Option<Jail>, Failure> {
        if !self.builder.runs_programs() {
            return Ok(None);
        }
        let jail = self
            .inner
            .jail(
                self.builder.as_ref(),
                self.engine.as_deref(),
                &self.dirs,
                self.slot.as_ref(),
                self.cgroup.as_deref(),
                self.dirs.written_by_checkout(),
            )
            .await
            .map_err(Failure::Jail)?;
        self.log.push(&jail.describe());
        Ok(Some(jail))
    }

    /// Hands the checkout over to the users of the run's jail, made beside
    /// it: once the run is to build.
    pub(super) fn confine(&self) -> Result<(), Failure> {
        if let Some(jail) = &self.jail {
            for written in self.dirs.written_by_checkout() {
                if written.exists() {
                    jail.hand_over(&written).map_err(ConfineError::from)?;
                }
            }
        }
        Ok(())
    }

    /// Readies the run's slot for its build (see
    /// [`CacheSlot::ready_for_build`]); an engine's slot is the engine's
    /// to keep.
    pub(super) async fn ready_slot(&mut self) {
        let (env, storage) = (self.dirs.program_env(), self.engine.is_none());
        if let Some(slot) = self.slot.as_mut().filter(|_| storage) {
            slot.ready_for_build(&env, self.jail.as_deref(), self.log)
                .await;
        }
    }

    /// Takes away what the build left: its images in the engine, or its
    /// containers and image name in the run's `slot` (see
    /// [`CacheSlot::tidy`], its programs in `jail`); the layers stay. The
    /// slot and the jail are passed apart from the run so this can go on
    /// beside the registry's steps.
    pub(super) async fn tidy_after_build(&self, slot: Option<&mut CacheSlot>, jail: Option<&Jail>) {
        match (&self.engine, &self.engine_image, slot) {
            (Some(engine), Some(name), _) => engine.remove_images(name).await,
            // An engine's slot is the engine's to keep.
            (None, _, Some(slot)) => {
                let env = self.dirs.program_env();
                slot.tidy(&env, jail, self.log).await;
            }
            _ => {}
        }
    }
}

impl Inner {
    /// The Docker Engine a run of `backend` builds in, said in its log:
    /// the operator's, or the managed one of its `slot`.
    async fn engine(
        &self,
        job: &Job,
        builder: &crate::plugin::Builder,
        backend: &Backend,
        slot: Option<&mut CacheSlot>,
        log: &JobLog,
    ) -> Result<Option<Arc<DockerEngine>>, Failure> {
        match (backend, slot) {
            (Backend::Engine(EngineKind::Operator(engine)), _) => {
                log.push(&format!(
                    "[helix] building in the Docker Engine at {} (BuildKit's layer cache is the engine's); \
                     its RUN steps run in the engine's control groups, so the job's build limits \
                     reach the docker client, not them",
                    engine.socket()
                ));
                Ok(Some(engine.clone()))
            }
            (Backend::Engine(EngineKind::Managed(settings)), Some(slot)) => {
                let engine = self
                    .managed_engine(builder, slot, settings)
                    .await
                    .map_err(Failure::ManagedEngine)?;
                log.push(&format!(
                    "[helix] building in this slot's managed Docker Engine at {} (in a jail of its own; \
                     its layer cache is in {}, its RUN steps within the builder's limits)",
                    engine.socket(),
                    slot.dir().display()
                ));
                Ok(Some(engine))
            }
            (Backend::Engine(EngineKind::Managed(_)), None) => {
                Err(Failure::NoSlot(job.builder.clone()))
            }
            (Backend::Simulated | Backend::Storage, _) => Ok(None),
        }
    }
}
