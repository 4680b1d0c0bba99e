//! The build service: accepts jobs into its [`JobQueue`], runs them on a
//! pool of workers through their builders, and lets callers get, list,
//! cancel, follow and wait for them.
//!
//! - this module: the facade's construction, reload and shutdown, its
//!   errors, and the state its parts share;
//! - [`submit`]: accepting a job, and cancelling the ones it supersedes;
//! - [`query`]: reading jobs, their logs, audit trail and provenance, and
//!   waiting for them to end;
//! - [`cancel`]: cancelling a queued or running job, here or elsewhere;
//! - [`table`]: the jobs this host runs, live in memory;
//! - [`run`]: the run of one job, from claim to stored end;
//! - [`fault`]: whose fault a failed run is, decided in one place;
//! - [`background`]: the workers, and the tasks that keep leases, relay
//!   the queue's news and follow jobs running elsewhere;
//! - [`metrics`]: what `/metrics` reports.
//!
//! Every accepted job, state change and log line is written through to the
//! [`JobStore`]; a submission is acknowledged once it is durable. Jobs
//! that are not running here (queued, finished, or running on another host
//! sharing the queue) are read from the store. Every state change goes
//! through the lifecycle's methods ([`Job::start`], [`Job::finish`],
//! [`Job::recover_lost_run`]), decided here once whichever queue is used.

mod background;
mod cancel;
mod confine;
pub(crate) mod fault;
mod metrics;
mod query;
mod run;
mod settle;
mod submit;
mod table;
mod waiting;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;

use crate::access::Access;
use crate::cgroup::Cgroups;
use crate::hooks::Webhooks;
use crate::jail::IdRange;
use crate::job::{InvalidJob, Job, JobId, State, SubmitPolicy};
use crate::layer_cache::BuildCache;
use crate::log::{LogLine, OutputCaps};
use crate::notify::Notifications;
use crate::plugin::PluginRuntime;
use crate::provenance::Provenance;
use crate::queue::{JobQueue, LostRun};
use crate::registry::RegistryAccess;
use crate::reuse::ReuseKey;
use crate::secrets::BuildSecrets;
use crate::source::Checkout;
use crate::store::{JobStore, StoreError};
use background::Changes;
use table::{Entry, Table};

pub use metrics::{Histogram, HttpCounts, Metrics, UNMATCHED};
pub use query::JobPage;

/// How the service runs jobs.
#[derive(Clone)]
pub struct ServiceConfig {
    pub workers: usize,
    pub queue_capacity: usize,
    pub log_cap_lines: usize,
    /// How much output a job may log, in bytes.
    pub log_output_caps: OutputCaps,
    /// Parent of the per-job workspace directories.
    pub workspace_dir: PathBuf,
    /// Where each real job run's processes go and what they may use;
    /// `None` only where no builder runs programs.
    pub cgroups: Option<Arc<Cgroups>>,
    /// Leave the workspace of a job that did not succeed in place.
    pub keep_failed_workspaces: bool,
    /// Which ended jobs are deleted, with their logs.
    pub retention: Retention,
    /// How long a job waits in the queue before it expires, unless it says.
    pub queue_ttl: Option<Duration>,
    /// Where each job's end is told.
    pub notifications: Arc<Notifications>,
    /// Signs and attaches the provenance of real builds; `None`: off.
    pub provenance: Option<Arc<Provenance>>,
    /// Gives jobs the images of earlier builds of the same inputs; `None`:
    /// off (see [`crate::reuse`]).
    pub reuse: Option<Arc<ReuseKey>>,
    /// How each job's builds, pushes and registry checks reach
    /// registries, with whose credentials.
    pub registries: RegistryAccess,
    /// Checks out real builders' sources.
    pub checkout: Checkout,
    /// Where images of jobs that name none go (`host[:port][/namespace]`).
    pub default_registry: Option<String>,
    /// Where jobs outlive this process.
    pub store: Arc<dyn JobStore>,
    /// Where accepted jobs wait; shared with other hosts or not.
    pub queue: Arc<dyn JobQueue>,
    /// The operator's build secrets, handed to the jobs that name them.
    pub secrets: BuildSecrets,
    /// Layers real builds reuse between jobs.
    pub cache: Arc<BuildCache>,
    /// Runs a job may start before an interruption (its host dying while
    /// it ran) fails it instead of queueing it again.
    pub max_attempts: u32,
    /// The host ids a run's jail maps its users to (`jail_uid_range`).
    pub jail_users: IdRange,
    /// Where builders are loaded from again on a reload; `None`: reloads
    /// are refused.
    pub reload: Option<Arc<dyn BuilderReload>>,
}

/// What the config says of projects, read with the builders and swapped
/// with them whole on a reload: who may call (tokens with their scopes
/// and expiry, each project's repositories, images, secrets and
/// builders), the webhooks and the quotas. Jobs already accepted keep
/// what they were accepted with.
#[derive(Debug, Clone, Default)]
pub struct Projects {
    pub access: Arc<Access>,
    /// Incoming git webhooks and what they build.
    pub webhooks: Arc<Webhooks>,
    /// Each project's limits on its running and waiting jobs.
    pub quotas: Arc<Quotas>,
    /// Which CI systems' ID tokens become project tokens; `None`: none.
    pub exchange: Option<Arc<crate::oidc::TokenExchange>>,
}

/// Projects' limits (`[projects.NAME]` `max_running`, `max_queued`); a
/// project not named in one has no such limit.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    /// Most jobs of the project running at once, on every host.
    pub max_running: BTreeMap<String, u32>,
    /// Most jobs of the project waiting; past it submissions are refused.
    pub max_queued: BTreeMap<String, usize>,
}

/// What a reload loads: the builders, what submissions may name with
/// them, and the projects.
pub struct Reloaded {
    pub runtime: PluginRuntime,
    pub policy: SubmitPolicy,
    pub projects: Projects,
}

/// Loads the builders and projects anew, for [`Service::reload_builders`].
pub trait BuilderReload: Send + Sync {
    fn load(&self) -> BoxFuture<'_, Result<Reloaded, String>>;
}

/// Why a request to the service was refused. Nothing is changed when one
/// is returned.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid job: {0}")]
    Invalid(#[from] InvalidJob),
    #[error("a job with id '{0}' already exists")]
    Duplicate(JobId),
    #[error("build queue is full ({capacity} jobs waiting); retry later")]
    QueueFull { capacity: usize },
    #[error(
        "project {project} has {max_queued} jobs waiting, its limit (projects.{project}.max_queued); retry once some have started"
    )]
    ProjectQueueFull { project: String, max_queued: usize },
    #[error("no job with id '{0}'")]
    NotFound(String),
    #[error("job '{id}' already ended ({state}); only queued or running jobs can be cancelled")]
    AlreadyEnded { id: JobId, state: State },
    #[error(
        "the server is stopping and accepts no new jobs; retry shortly (on another host, or here once it is back)"
    )]
    ShuttingDown,
    /// The detail (the source) goes to the server's log, not to clients.
    #[error("the job store is unavailable, so nothing was read or changed; retry later")]
    Store(#[source] StoreError),
    /// Refused before anything is stored; details in the server's log.
    #[error(
        "the server's data disk is full, so the job was not accepted; retry once space is freed"
    )]
    DataDiskFull,
    #[error("cursor '{0}' names no job; start again without a cursor")]
    UnknownCursor(String),
    #[error("job '{id}' has no provenance: {reason}")]
    NoProvenance { id: String, reason: String },
    /// Nothing changed: the builders in use stay.
    #[error("builders not reloaded, the ones loaded stay in use: {0}")]
    Reload(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate(id) => ServiceError::Duplicate(id),
            other => ServiceError::Store(other),
        }
    }
}

/// A handle to the service; clones share it.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServiceConfig,
    /// The builders and what submissions may name; a reload swaps both at
    /// once. A job runs on the builder it started with.
    loaded: std::sync::RwLock<Loaded>,
    table: Mutex<Table>,
    stopping: AtomicBool,
    /// Wakes idle workers: new work, or stopping.
    work: Notify,
    /// Tells those waiting for a job that was not running here that a
    /// worker of this host claimed it (its id).
    adopted: broadcast::Sender<JobId>,
    workers: tokio::sync::Mutex<JoinSet<()>>,
    /// What `/metrics` says of jobs' lives here.
    counts: Mutex<metrics::JobCounts>,
    /// The HTTP requests answered, counted by the API's layer.
    http: HttpCounts,
}

#[derive(Clone)]
struct Loaded {
    runtime: Arc<PluginRuntime>,
    policy: Arc<SubmitPolicy>,
    projects: Projects,
}

/// How long, and how many, ended jobs are kept with their logs; the rest
/// are deleted every [`background::PRUNE_EVERY`], by every host sharing
/// the store alike.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    pub max_age: Option<chrono::Duration>,
    pub keep: Option<usize>,
}

impl Retention {
    fn prunes(&self) -> bool {
        self.max_age.is_some() || self.keep.is_some()
    }
}

impl Service {
    /// Recovers the runs an earlier process of this host left behind, then
    /// starts `config.workers` workers and the queue's background tasks on
    /// the current tokio runtime. `policy` says what a submission may
    /// contain with `runtime`'s builders; a reload replaces them and
    /// `projects`.
    pub async fn start(
        config: ServiceConfig,
        runtime: Arc<PluginRuntime>,
        policy: SubmitPolicy,
        projects: Projects,
    ) -> Result<Self, StoreError> {
        let loaded = Loaded {
            runtime,
            policy: Arc::new(policy),
            projects,
        };
        let inner = Arc::new(Inner {
            loaded: std::sync::RwLock::new(loaded),
            table: Mutex::new(Table::new()),
            stopping: AtomicBool::new(false),
            work: Notify::new(),
            adopted: broadcast::channel(1024).0,
            workers: tokio::sync::Mutex::new(JoinSet::new()),
            counts: Mutex::default(),
            http: HttpCounts::default(),
            config,
        });
        inner.recover_lost(true).await?;
        let mut workers = JoinSet::new();
        for _ in 0..inner.config.workers {
            workers.spawn(background::worker(inner.clone()));
        }
        use background::{
            ENGINE_IDLE_CHECK_EVERY, EXPIRE_EVERY, NOTIFY_EVERY, PRUNE_EVERY, every,
            expire_waiting, keep_leases, prune_ended, send_notifications, stop_idle_engines,
        };
        let weak = || Arc::downgrade(&inner);
        if let Some(lease) = inner.config.queue.lease() {
            tokio::spawn(every(lease / 3, weak(), keep_leases));
        }
        tokio::spawn(every(EXPIRE_EVERY, weak(), expire_waiting));
        if inner.config.retention.prunes() {
            tokio::spawn(every(PRUNE_EVERY, weak(), prune_ended));
        }
        tokio::spawn(every(ENGINE_IDLE_CHECK_EVERY, weak(), stop_idle_engines));
        if !inner.config.notifications.is_empty() {
            tokio::spawn(every(NOTIFY_EVERY, weak(), send_notifications));
        }
        tokio::spawn(background::relay_notices(
            Arc::downgrade(&inner),
            inner.config.queue.notices(),
        ));
        *inner
            .workers
            .try_lock()
            .expect("nobody else holds the new service") = workers;
        Ok(Service { inner })
    }

    /// What a submission may contain now (the builders it may name, the
    /// secrets the operator defined…).
    pub fn submit_policy(&self) -> Arc<SubmitPolicy> {
        self.inner.policy()
    }

    /// Where the API counts the requests it answers.
    pub fn http_counts(&self) -> &HttpCounts {
        &self.inner.http
    }

    /// The projects in force now: tokens, webhooks, quotas.
    pub fn projects(&self) -> Projects {
        self.inner.projects()
    }

    /// The builders in use now.
    pub fn runtime(&self) -> Arc<PluginRuntime> {
        self.inner.runtime()
    }

    /// Loads the builders and the projects again (from the config file
    /// the server started with) and uses them for requests and jobs that
    /// start from now on; running jobs finish on the builder they started
    /// with. When the file or any component fails to load or check,
    /// nothing changes and the error says why.
    pub async fn reload_builders(&self) -> Result<Arc<PluginRuntime>, ServiceError> {
        let reload =
            self.inner.config.reload.as_ref().ok_or_else(|| {
                ServiceError::Reload("this service has no config to reload".into())
            })?;
        let Reloaded {
            runtime,
            policy,
            projects,
        } = reload.load().await.map_err(ServiceError::Reload)?;
        let runtime = Arc::new(runtime);
        *self.inner.loaded.write().unwrap_or_else(|e| e.into_inner()) = Loaded {
            runtime: runtime.clone(),
            policy: Arc::new(policy),
            projects,
        };
        let digests: Vec<String> = runtime
            .builders()
            .map(|b| format!("{} {}", b.info().name, b.info().component_digest))
            .collect();
        tracing::info!(builders = %digests.join(", "), "builders reloaded");
        // Workers claim for the builders they have: let them look again.
        self.inner.work.notify_waiters();
        Ok(runtime)
    }

    /// Whether [`Service::stop`] was called: submissions are refused.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// Stops gracefully: no new jobs are accepted or started, running jobs
    /// get `grace` to finish, then are cancelled — or, when another host
    /// can take them over, stopped and queued again for it (the run counts
    /// as an attempt). Returns when every worker has exited. Queued jobs
    /// stay queued.
    pub async fn stop(&self, grace: Duration) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.work.notify_waiters();
        let mut workers = self.inner.workers.lock().await;
        let drained = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            if self.inner.config.queue.lease().is_some() {
                // Dropping a run kills its processes; its lease is this
                // host's, so it goes back to the queue at once.
                workers.abort_all();
                while workers.join_next().await.is_some() {}
                self.inner.lock().jobs.clear();
                if let Err(e) = self.inner.recover_lost(true).await {
                    tracing::warn!("could not give unfinished jobs back to the queue: {e}");
                }
            } else {
                self.inner.lock().cancel_all(&format!(
                    "the host shut down and the job did not finish within {}s",
                    grace.as_secs()
                ));
                while workers.join_next().await.is_some() {}
            }
        }
        // No worker runs: the cache slots' mounts go with the service
        // (a later start mounts them again).
        self.inner.config.cache.release().await;
        crate::quota::remove_spares(&self.inner.config.workspace_dir);
        tracing::info!("service stopped");
    }
}

impl Inner {
    /// The builders in use now.
    fn runtime(&self) -> Arc<PluginRuntime> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .runtime
            .clone()
    }

    /// What submissions may contain now.
    fn policy(&self) -> Arc<SubmitPolicy> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .policy
            .clone()
    }

    /// The projects in force now.
    fn projects(&self) -> Projects {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .projects
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave a job half-changed
        // (each change is a single assignment), so a poisoned lock is safe
        // to keep using.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counts of jobs' lives, to add to.
    fn counts(&self) -> MutexGuard<'_, metrics::JobCounts> {
        // Each count is one addition: a poisoned lock is safe to keep using.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what live job `id`'s run used (its `resources`), with `f`.
    fn measured(&self, id: &str, f: impl FnOnce(&mut crate::job::Resources)) {
        if let Some(entry) = self.lock().jobs.get_mut(id) {
            f(entry.job.resources.get_or_insert_default());
        }
    }

    /// `f` of live job `id`, if it runs here.
    fn live<T>(&self, id: &str, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        self.lock().jobs.get(id).map(f)
    }

    /// News of changes to jobs that are not running here, from now on.
    fn changes(&self) -> Changes {
        Changes::new(self.config.queue.notices(), self.adopted.subscribe())
    }

    /// Job `id` from the store.
    async fn stored(&self, id: &str) -> Result<Job, ServiceError> {
        self.config
            .store
            .get(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))
    }

    async fn stored_log(&self, id: &str) -> Result<Vec<LogLine>, ServiceError> {
        Ok(self.config.store.log(id).await?)
    }

    /// Queues again — or fails, after `max_attempts` — the runs whose host
    /// is gone (with `own_too`, this host's own leftovers as well), each
    /// with a log line saying why. Returns how many it recovered.
    async fn recover_lost(&self, own_too: bool) -> Result<usize, StoreError> {
        let queue = &self.config.queue;
        let mut recovered = 0;
        for lost in queue.lost_runs(own_too).await? {
            let what = lost_run_cause(&lost, queue.host());
            let mut job = lost.job.clone();
            let now = Utc::now();
            let backoff =
                chrono::Duration::from_std(run::RETRY.delay(job.attempts)).unwrap_or_default();
            let line =
                match job.recover_lost_run(self.config.max_attempts, &what, now, now + backoff) {
                    Ok(line) => line,
                    Err(e) => {
                        tracing::error!(job = %job.id, "cannot recover: {e}");
                        continue;
                    }
                };
            if queue.replace_lost(&lost, &job, &line).await? {
                tracing::warn!(job = %job.id, state = %job.state, "{what}");
                match job.state {
                    State::Queued => self
                        .counts()
                        .retried(&job.builder, metrics::RetryCause::Lost),
                    _ => self.counts().ended(&job),
                }
                recovered += 1;
            }
        }
        if recovered > 0 {
            self.work.notify_waiters();
        }
        Ok(recovered)
    }
}

/// Why a run was lost, for its log and error.
fn lost_run_cause(lost: &LostRun, this_host: Option<&str>) -> String {
    match lost.owner.as_deref() {
        Some(owner) if Some(owner) != this_host => {
            format!("host lost: '{owner}' stopped renewing its lease on the job")
        }
        _ => "interrupted: this host stopped while the job ran".to_string(),
    }
}
