//! Putting the parts together: from a [`Config`] to a running service.

use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::Cgroups;
use crate::config::{Config, ConfigError, StoreLocation};
use crate::job::SubmitPolicy;
use crate::plugin::{ComponentCache, PluginError, PluginRuntime, PoolSizing};
use crate::provenance::Provenance;
use crate::queue::{JobQueue, LocalQueue};
use crate::service::{BuilderReload, Projects, Reloaded, Service, ServiceConfig};
use crate::source::Checkout;
use crate::store::{JobStore, PostgresStore, SqliteStore, StoreError};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

/// Builder instances allowed beyond one per worker: load-time `info` calls
/// and `plugin check` need their own.
const SPARE_INSTANCES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{0}; real builders need control groups for their limits and for cleaning up after a crash (run the server as root on a host with cgroups mounted)"
    )]
    Cgroups(#[source] crate::cgroup::CgroupError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

/// Loads every configured builder and starts the service's workers.
pub async fn start(config: &Config) -> Result<Service, StartError> {
    start_with(config, |_| {}).await
}

/// [`start`], letting `extend` add to the loaded builders first (the
/// benchmarks add a native one).
pub async fn start_with(
    config: &Config,
    extend: impl FnOnce(&mut PluginRuntime),
) -> Result<Service, StartError> {
    // Quota mounts of servers that never stopped, their files removed
    // since: nothing else would ever unmount them or free their loop
    // devices.
    for dir in crate::quota::sweep_orphans() {
        tracing::warn!(dir = %dir.display(), "unmounted a quota file system whose file was deleted");
    }
    // Runs' layers over slots' working trees that a crash left mounted:
    // no run of this data dir is live yet, and a slot's next job changes
    // the tree.
    crate::layer::unmount_below(&config.workspace_dir());
    crate::quota::remove_spares(&config.workspace_dir());
    let used = data_dir_used(config);
    for dir in [config.data_dir.clone(), config.workspace_dir()] {
        std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let (store, queue): (Arc<dyn JobStore>, Arc<dyn JobQueue>) = match config.store()? {
        StoreLocation::Sqlite(path) => {
            if used && !path.exists() {
                tracing::warn!(
                    store = %path.display(),
                    "this data dir was in use but holds no store: starting an empty one"
                );
            }
            let open = if used {
                SqliteStore::open_used
            } else {
                SqliteStore::open
            };
            let store: Arc<dyn JobStore> = Arc::new(open(&path)?);
            let queue = Arc::new(LocalQueue::open(store.clone()).await?);
            (store, queue)
        }
        StoreLocation::Postgres(url) => {
            let lease = Duration::from_secs(config.lease_secs);
            let store = PostgresStore::connect(&url, &config.host_id(), lease).await?;
            (store.clone(), store)
        }
    };
    let mut runtime = load_builders(config).await?;
    extend(&mut runtime);
    let cgroups = control_groups(config, &runtime)?;
    let has_cgroups = cgroups.is_some();
    let secrets = config.build_secrets()?;
    let policy = submit_policy(config, &runtime, secrets.names(), has_cgroups);
    let projects = projects(config)?;
    let notifications = Arc::new(config.notifications()?);
    let provenance = config
        .provenance_key()?
        .map(|key| Arc::new(Provenance::new(key, config.host_id())));
    let service_config = ServiceConfig {
        workers: config.workers,
        queue_capacity: config.queue_capacity,
        log_cap_lines: config.log_cap_lines,
        log_output_caps: config.output_caps(),
        workspace_dir: config.workspace_dir(),
        cgroups,
        keep_failed_workspaces: config.keep_failed_workspaces,
        retention: config.retention(),
        notifications,
        provenance,
        reuse: config.reuse_key()?.map(Arc::new),
        queue_ttl: (config.queue_ttl_secs > 0).then(|| Duration::from_secs(config.queue_ttl_secs)),
        store,
        queue,
        secrets,
        cache: Arc::new(config.build_cache()),
        max_attempts: config.max_attempts,
        jail_users: config.jail_uid_range,
        registries: config.registry_access(),
        checkout: Checkout {
            allow_file_repos: config.allow_file_repos,
        },
        default_registry: config.default_registry.clone(),
        reload: Some(Arc::new(ConfigReload {
            config: config.clone(),
            secrets: policy.secrets.clone(),
            cgroups: has_cgroups,
        })),
    };
    Ok(Service::start(service_config, Arc::new(runtime), policy, projects).await?)
}

/// The projects `config` defines: its tokens (read now from their
/// sources), webhooks, quotas and the OIDC token exchange.
fn projects(config: &Config) -> Result<Projects, ConfigError> {
    Ok(Projects {
        access: Arc::new(config.access()?),
        webhooks: Arc::new(config.webhooks()?),
        quotas: Arc::new(config.quotas()),
        exchange: config.token_exchange()?.map(Arc::new),
    })
}

/// Whether a server ran on `config`'s data dir before: every start makes
/// its workspace directory.
fn data_dir_used(config: &Config) -> bool {
    config.workspace_dir().is_dir()
}

/// Every configured builder, compiled (or loaded from the compile cache).
async fn load_builders(config: &Config) -> Result<PluginRuntime, StartError> {
    let sources = config.builder_sources()?;
    let sizing = PoolSizing {
        instances: u32::try_from(config.workers + SPARE_INSTANCES).unwrap_or(u32::MAX),
        max_memory_bytes: sources
            .iter()
            .map(|s| s.limits.memory_bytes)
            .max()
            .unwrap_or(0),
    };
    Ok(PluginRuntime::load(sources, &ComponentCache::new(config.cache_dir()), sizing).await?)
}

/// The builders a config's absent `default_builder` stands for, first
/// that can run here first.
const REAL_DEFAULTS: [&str; 2] = ["podman", "buildah"];

/// The builder of jobs that name none when the config says nothing: the
/// first of [`REAL_DEFAULTS`] loaded, real, with its program installed
/// and control groups here (`cgroups`); `simulated` when none can run.
fn default_builder(runtime: &PluginRuntime, cgroups: bool) -> String {
    REAL_DEFAULTS
        .into_iter()
        .find(|name| {
            cgroups
                && runtime.builder(name).is_some_and(|b| !b.info().simulated)
                && crate::exec::is_installed(name)
        })
        .unwrap_or("simulated")
        .to_string()
}

/// What a submission may contain with `runtime`'s builders.
fn submit_policy(
    config: &Config,
    runtime: &PluginRuntime,
    secrets: std::collections::BTreeSet<String>,
    cgroups: bool,
) -> SubmitPolicy {
    SubmitPolicy {
        allow_file_repos: config.allow_file_repos,
        default_builder: config
            .default_builder
            .clone()
            .unwrap_or_else(|| default_builder(runtime, cgroups)),
        builders: runtime
            .builders()
            .map(|b| (b.info().name.clone(), b.info().platforms.clone()))
            .collect(),
        unavailable: config.unavailable_builders(),
        secrets,
        registries: config.push_registries(),
        default_registry: config.default_registry.clone(),
        shared_cache_builders: runtime
            .builders()
            .filter(|b| b.engine().is_some())
            .map(|b| b.info().name.clone())
            .collect(),
        project: None,
    }
}

/// Reloads the builders and the projects from the config file the server
/// started with (the builder sections, `default_builder`, `token` and
/// `[projects.*]` with their webhooks and quotas; the rest, the server's
/// own secrets among it, takes a restart).
struct ConfigReload {
    config: Config,
    secrets: std::collections::BTreeSet<String>,
    /// Whether this server has control groups, which real builders need.
    cgroups: bool,
}

impl BuilderReload for ConfigReload {
    fn load(&self) -> BoxFuture<'_, Result<Reloaded, String>> {
        async move {
            let config = match &self.config.file {
                Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
                None => self.config.clone(),
            };
            let projects = projects(&config).map_err(|e| e.to_string())?;
            let runtime = load_builders(&config).await.map_err(|e| e.to_string())?;
            if !self.cgroups && runtime.builders().any(|b| !b.info().simulated) {
                return Err(
                    "a real builder needs the control groups this server started without; restart it"
                        .into(),
                );
            }
            let policy = submit_policy(&config, &runtime, self.secrets.clone(), self.cgroups);
            Ok(Reloaded {
                runtime,
                policy,
                projects,
            })
        }
        .boxed()
    }
}

/// This server's control groups, with what a run cut short by a crash
/// left in them killed: before any job runs, so no old attempt works
/// beside a new one. Required once a builder can run programs.
fn control_groups(
    config: &Config,
    runtime: &PluginRuntime,
) -> Result<Option<Arc<Cgroups>>, StartError> {
    let real = runtime.builders().any(|b| !b.info().simulated);
    match Cgroups::detect(&config.data_dir) {
        Ok(cgroups) => {
            let killed = cgroups.reap();
            if killed > 0 {
                tracing::warn!(
                    "killed {killed} processes left by job runs this server was executing when it stopped"
                );
            }
            let released = crate::jail::sweep_uplinks();
            if released > 0 {
                tracing::warn!("released {released} jail uplinks of servers that stopped");
            }
            Ok(Some(Arc::new(cgroups)))
        }
        Err(e) if real => Err(StartError::Cgroups(e)),
        Err(e) => {
            tracing::info!("no control groups ({e}); only simulated builders are loaded");
            Ok(None)
        }
    }
}

/// How long running jobs get on shutdown.
pub fn stop_grace(config: &Config) -> Duration {
    Duration::from_secs(config.stop_grace_secs)
}
