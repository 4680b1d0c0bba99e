//! What confines a run and what it ran into: its jail, the managed
//! Docker Engine of its cache slot, and the limit a failed build reached
//! (named with the setting that raises it).

use std::sync::Arc;

use super::Inner;
use crate::cgroup::{LimitHit, RunCgroup};
use crate::docker_engine::DockerEngine;
use crate::jail::{IdRange, Jail, JailError, JailSpec};
use crate::job::Job;
use crate::layer_cache::CacheSlot;
use crate::log::JobLog;
use crate::managed_engine::{EngineSettings, ManagedEngine};
use crate::plugin::{Backend, Builder, BuilderInfo, EngineKind};
use crate::workspace::JobDirs;

/// Why a run's jail could not be made, or handed what the host wrote
/// after it was made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfineError {
    #[error("cannot make the cache slot's cache mounts: {0}")]
    CacheMounts(#[source] std::io::Error),
    #[error("cannot make the Docker client's settings directory: {0}")]
    ClientSettings(#[source] std::io::Error),
    #[error("cannot share the run's workspace with its jail: {0}")]
    SharedWorkspace(#[source] std::io::Error),
    #[error(transparent)]
    Jail(#[from] JailError),
}

impl Inner {
    /// The managed Docker Engine of `slot`, started for `builder` if the
    /// slot runs none: the builder's limits, the configured registries.
    pub(super) async fn managed_engine(
        &self,
        builder: &Builder,
        slot: &mut CacheSlot,
        settings: &EngineSettings,
    ) -> Result<Arc<DockerEngine>, String> {
        let Some(cgroups) = &self.config.cgroups else {
            return Err(
                "a managed Docker Engine needs control groups, which this host has none of".into(),
            );
        };
        let name = format!(
            "engine-{}-{}",
            builder.info().name,
            slot.dir().file_name().unwrap_or_default().to_string_lossy()
        );
        let limits = builder.info().build_limits;
        let registries = self.config.registries.operator().endpoints();
        let users = self.config.jail_users;
        slot.engine(|dir| async move {
            ManagedEngine::start(cgroups, &name, &dir, &limits, registries, users, settings).await
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// Who root in the jail of a run of `builder` is: a user namespace's
    /// range. A Docker client of the operator's engine speaks to its
    /// socket, the host root's, so it runs as that root (`None`); a
    /// managed engine's socket is its jail's root's, the same host user.
    pub(super) fn jail_users(&self, builder: &Builder) -> Option<IdRange> {
        match builder.backend() {
            Backend::Engine(EngineKind::Operator(_)) => None,
            _ => Some(self.config.jail_users),
        }
    }

    /// The jail of a run of `builder` in `dirs`: its directories and
    /// cache slot, the engine's socket, the builder's network and the
    /// configured registries; `written_later`, what the host is writing
    /// there meanwhile (see [`JailSpec::written_later`]).
    pub(super) async fn jail(
        &self,
        builder: &Builder,
        engine: Option<&DockerEngine>,
        dirs: &JobDirs,
        slot: Option<&CacheSlot>,
        cgroup: Option<&RunCgroup>,
        written_later: Vec<std::path::PathBuf>,
    ) -> Result<Jail, ConfineError> {
        let cache_mounts = slot
            .map(CacheSlot::cache_mounts)
            .transpose()
            .map_err(ConfineError::CacheMounts)?;
        let readable = engine
            .map(DockerEngine::jail_paths)
            .transpose()
            .map_err(ConfineError::ClientSettings)?;
        Ok(Jail::create(JailSpec {
            writable: std::iter::once(dirs.root().to_path_buf())
                .chain(slot.map(|s| s.dir().to_path_buf()))
                .collect(),
            written_later,
            readable: readable.unwrap_or_default(),
            scratch: dirs.scratch(),
            cache_mounts,
            blob_info_cache: slot.map(CacheSlot::blob_info_cache),
            files: dirs.jail_files(),
            network: builder.network(),
            registries: self.config.registries.operator().endpoints(),
            cgroup,
            cgroup_namespace: false,
            users: self.jail_users(builder),
        })
        .await?)
    }
}

/// The limit a run reached, if it reached one: `hit` in its control
/// groups (or its engine's), else a disk it filled.
pub(super) fn limit_reached(
    job: &Job,
    builder: &BuilderInfo,
    hit: Option<LimitHit>,
    dirs: &JobDirs,
    slot: Option<&CacheSlot>,
    log: &JobLog,
) -> Option<String> {
    let limits = &builder.build_limits;
    match hit {
        Some(LimitHit::Memory) => Some(format!(
            "memory limit of {} MiB (builders.{}.build_memory_mib)",
            limits.memory_mib.unwrap_or_default(),
            job.builder
        )),
        Some(LimitHit::Pids) => Some(format!(
            "process limit of {} (builders.{}.build_pids)",
            limits.pids.unwrap_or_default(),
            job.builder
        )),
        None => disk_filled(job, dirs, slot, log),
    }
}

/// The disk limit a build filled, if it filled one: its workspace's, or
/// the layer cache slot it built in.
/// A tool that ran out of space may have freed it again before it
/// exited (podman removes a failed step's container), so what it printed
/// counts too.
fn disk_filled(
    job: &Job,
    dirs: &JobDirs,
    slot: Option<&CacheSlot>,
    log: &JobLog,
) -> Option<String> {
    let said_so = log.lines().iter().rev().take(200).any(|line| {
        line.text
            .to_ascii_lowercase()
            .contains("no space left on device")
    });
    let own = dirs.quota();
    let shared = slot.and_then(CacheSlot::disk);
    // Where the build's layers were written is where it most likely ran
    // out, when neither is full any more.
    let disk = [own, shared]
        .into_iter()
        .flatten()
        .find(|disk| disk.is_full())
        .or_else(|| said_so.then(|| shared.or(own)).flatten())?;
    Some(match shared.is_some_and(|s| std::ptr::eq(s, disk)) {
        true => format!(
            "disk limit of {} MiB (its layer cache slot: build_cache_mib shared by the workers)",
            disk.mib()
        ),
        false => format!(
            "disk limit of {} MiB (builders.{}.build_disk_mib)",
            disk.mib(),
            job.builder
        ),
    })
}
