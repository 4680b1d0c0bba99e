//! The build service: accepts jobs into its [`JobQueue`], runs them on a
//! pool of workers through their builders, and lets callers get, list,
//! cancel, follow and wait for them.
//!
//! - this module: the facade and its errors;
//! - [`table`]: the jobs this host runs, live in memory;
//! - [`run`]: the run of one job, from claim to stored end;
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
mod metrics;
mod run;
mod table;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;

use crate::audit::JobAudit;
use crate::cache::BuildCache;
use crate::cgroup::Cgroups;
use crate::hooks::Webhooks;
use crate::job::{InvalidJob, Job, JobId, JobRequest, Outcome, State, SubmitPolicy};
use crate::log::{JobLog, LogLine, OutputCaps, Redactor};
use crate::notify::Notifications;
use crate::plugin::PluginRuntime;
use crate::provenance::{Attestation, Provenance};
use crate::queue::{JobQueue, LostRun};
use crate::registry::{Publisher, RegistrySettings};
use crate::secrets::BuildSecrets;
use crate::source::Checkout;
use crate::store::{JobFilter, JobStore, StoreError};
use background::Changes;
use table::{Entry, Table};

pub use metrics::{Histogram, Metrics};

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
    /// Incoming git webhooks and what they build.
    pub webhooks: Arc<Webhooks>,
    /// Where each job's end is told.
    pub notifications: Arc<Notifications>,
    /// Signs and attaches the provenance of real builds; `None`: off.
    pub provenance: Option<Arc<Provenance>>,
    /// Pushes what real builders built and confirms it in the registry.
    pub publisher: Publisher,
    /// How builds reach registries (for their base images).
    pub registries: Arc<RegistrySettings>,
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
    /// Where builders are loaded from again on a reload; `None`: reloads
    /// are refused.
    pub reload: Option<Arc<dyn BuilderReload>>,
}

/// Loads the builders anew, for [`Service::reload_builders`]: the
/// runtime, and what submissions may name with it.
pub trait BuilderReload: Send + Sync {
    fn load(&self) -> BoxFuture<'_, Result<(PluginRuntime, SubmitPolicy), String>>;
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
    #[error("no job with id '{0}'")]
    NotFound(String),
    #[error("job '{id}' already ended ({state}); only queued or running jobs can be cancelled")]
    AlreadyEnded { id: JobId, state: State },
    #[error("the service is shutting down and accepts no new jobs")]
    ShuttingDown,
    /// The detail goes to the server's log, not to clients.
    #[error("the job store is unavailable, so nothing was read or changed; retry later")]
    Store,
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
            other => {
                tracing::error!("job store: {other}");
                ServiceError::Store
            }
        }
    }
}

/// One page of [`Service::list_page`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// How long `cancel` waits for a running job's worker to record the
/// cancellation before returning the job as it then is.
const CANCEL_SETTLE: Duration = Duration::from_secs(5);

/// How often `cancel` looks again at a job that changed under it (claimed
/// or ended between two reads) before giving up.
const CANCEL_RETRIES: usize = 100;

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
}

#[derive(Clone)]
struct Loaded {
    runtime: Arc<PluginRuntime>,
    policy: Arc<SubmitPolicy>,
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
    /// contain with `runtime`'s builders; a reload replaces both.
    pub async fn start(
        config: ServiceConfig,
        runtime: Arc<PluginRuntime>,
        policy: SubmitPolicy,
    ) -> Result<Self, StoreError> {
        let loaded = Loaded {
            runtime,
            policy: Arc::new(policy),
        };
        let inner = Arc::new(Inner {
            loaded: std::sync::RwLock::new(loaded),
            table: Mutex::new(Table::new()),
            stopping: AtomicBool::new(false),
            work: Notify::new(),
            adopted: broadcast::channel(1024).0,
            workers: tokio::sync::Mutex::new(JoinSet::new()),
            config,
        });
        inner.recover_lost(true).await?;
        let mut workers = JoinSet::new();
        for _ in 0..inner.config.workers {
            workers.spawn(background::worker(inner.clone()));
        }
        use background::{
            EXPIRE_EVERY, NOTIFY_EVERY, PRUNE_EVERY, every, expire_waiting, keep_leases,
            prune_ended, send_notifications,
        };
        let weak = || Arc::downgrade(&inner);
        if let Some(lease) = inner.config.queue.lease() {
            tokio::spawn(every(lease / 3, weak(), keep_leases));
        }
        tokio::spawn(every(EXPIRE_EVERY, weak(), expire_waiting));
        if inner.config.retention.prunes() {
            tokio::spawn(every(PRUNE_EVERY, weak(), prune_ended));
        }
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

    /// The webhook settings.
    pub fn webhooks(&self) -> &Webhooks {
        &self.inner.config.webhooks
    }

    /// The builders in use now.
    pub fn runtime(&self) -> Arc<PluginRuntime> {
        self.inner.runtime()
    }

    /// Loads the builders again (from the config file the server started
    /// with) and uses them for jobs that start from now on; running jobs
    /// finish on the builder they started with. When any component fails
    /// to load or check, nothing changes and the error says why.
    pub async fn reload_builders(&self) -> Result<Arc<PluginRuntime>, ServiceError> {
        let reload =
            self.inner.config.reload.as_ref().ok_or_else(|| {
                ServiceError::Reload("this service has no config to reload".into())
            })?;
        let (runtime, policy) = reload.load().await.map_err(ServiceError::Reload)?;
        let runtime = Arc::new(runtime);
        *self.inner.loaded.write().unwrap_or_else(|e| e.into_inner()) = Loaded {
            runtime: runtime.clone(),
            policy: Arc::new(policy),
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

    /// Validates `request`, stores it and queues it. On any error nothing
    /// is stored; once it returns the job is durable.
    pub async fn submit(&self, request: JobRequest) -> Result<Job, ServiceError> {
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(ServiceError::ShuttingDown);
        }
        let job = Job::from_request(request, &self.inner.policy(), Utc::now())?;
        let capacity = self.inner.config.queue_capacity;
        let waiting = self.inner.config.queue.depth().await?;
        {
            let mut table = self.inner.lock();
            if table.jobs.contains_key(&job.id) || table.pending.contains(&job.id) {
                return Err(ServiceError::Duplicate(job.id));
            }
            if waiting + table.pending.len() >= capacity {
                return Err(ServiceError::QueueFull { capacity });
            }
            table.pending.insert(job.id.clone());
        }
        // Finished in its own task: once the job is on its way into the
        // queue, it must end up queued (or refused) even if this caller
        // goes away.
        let inner = self.inner.clone();
        let job = tokio::spawn(async move {
            let queued = inner.config.queue.enqueue(&job).await;
            inner.lock().pending.remove(&job.id);
            queued?;
            tracing::debug!(job = %job.id, builder = %job.builder, "job queued");
            Ok::<_, ServiceError>(job)
        })
        .await
        .map_err(|e| {
            tracing::error!("storing a job was interrupted: {e}");
            ServiceError::Store
        })??;
        if job.cancel_in_progress {
            self.supersede(&job).await;
        }
        Ok(job)
    }

    /// Cancels the queued and running jobs of `newer`'s group submitted
    /// before it: a newer push supersedes their builds.
    async fn supersede(&self, newer: &Job) {
        let Some(group) = &newer.group else {
            return;
        };
        let older = match self.inner.config.store.unfinished_in_group(group).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(job = %newer.id, "cannot find the jobs it supersedes: {e}");
                return;
            }
        };
        let reason = format!("superseded by job {} in group '{group}'", newer.id);
        for job in older
            .iter()
            .filter(|j| j.id != newer.id && j.created_at <= newer.created_at)
        {
            // One that ended meanwhile needs nothing.
            let _ = self.cancel_because(job.id.as_str(), &reason).await;
        }
    }

    /// A snapshot of job `id`.
    pub async fn get(&self, id: &str) -> Result<Job, ServiceError> {
        if let Some(job) = self.inner.live(id, |entry| entry.job.clone()) {
            return Ok(job);
        }
        self.inner.stored(id).await
    }

    /// Job `id`'s audit trail: the calls of its ended runs.
    pub async fn audit(&self, id: &str) -> Result<JobAudit, ServiceError> {
        let runs = self
            .inner
            .config
            .store
            .records(id, crate::audit::RECORD_PREFIX)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
        JobAudit::from_runs(&runs).map_err(|e| {
            ServiceError::from(StoreError::Database(format!(
                "the audit trail of job '{id}' is unreadable: {e}"
            )))
        })
    }

    /// Job `id`'s signed provenance, as attached to its image.
    pub async fn provenance(&self, id: &str) -> Result<Attestation, ServiceError> {
        let store = &self.inner.config.store;
        let records = store
            .records(id, crate::provenance::RECORD)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
        if let Some(record) = records.first() {
            return serde_json::from_str(record).map_err(|e| {
                ServiceError::from(StoreError::Database(format!(
                    "the provenance of job '{id}' is unreadable: {e}"
                )))
            });
        }
        let job = self.get(id).await?;
        let simulated = self
            .inner
            .runtime()
            .builder(&job.builder)
            .is_some_and(|b| b.info().simulated);
        let reason = if simulated {
            format!(
                "builder '{}' is simulated: it builds no image, so there is nothing to attest",
                job.builder
            )
        } else if job.state != State::Succeeded {
            format!("it {} (only a build that succeeds is attested)", job.state)
        } else {
            "provenance was off (`provenance = false`) when it was built".to_string()
        };
        Err(ServiceError::NoProvenance {
            id: id.to_string(),
            reason,
        })
    }

    /// Up to `limit` jobs, newest first, only those `filter` lets
    /// through, starting after job `cursor` (the previous page's
    /// `next_cursor`).
    pub async fn list_page(
        &self,
        filter: &JobFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<JobPage, ServiceError> {
        let mut jobs = self
            .inner
            .config
            .store
            .page(filter, limit.saturating_add(1), cursor)
            .await?
            .ok_or_else(|| ServiceError::UnknownCursor(cursor.unwrap_or_default().into()))?;
        let more = jobs.len() > limit;
        jobs.truncate(limit);
        // A live job's latest state may not be committed yet.
        let table = self.inner.lock();
        for job in &mut jobs {
            if let Some(entry) = table.jobs.get(&job.id) {
                job.clone_from(&entry.job);
            }
        }
        drop(table);
        let next_cursor = more
            .then(|| jobs.last().map(|j| j.id.to_string()))
            .flatten();
        Ok(JobPage { jobs, next_cursor })
    }

    /// Every job, newest first.
    pub async fn list(&self) -> Result<Vec<Job>, ServiceError> {
        Ok(self
            .list_page(&JobFilter::default(), usize::MAX, None)
            .await?
            .jobs)
    }

    /// The job's log and a receiver of its state changes, for following
    /// it as it runs. A finished job's receiver already holds its end.
    pub async fn follow(
        &self,
        id: &str,
    ) -> Result<(Arc<JobLog>, watch::Receiver<State>), ServiceError> {
        if let Some(live) = self
            .inner
            .live(id, |entry| (entry.log.clone(), entry.state.subscribe()))
        {
            return Ok(live);
        }
        let job = self.inner.stored(id).await?;
        let lines = self.inner.stored_log(id).await?;
        let seen = lines.len();
        let log = Arc::new(JobLog::restored(
            self.inner.config.log_cap_lines,
            Redactor::default(),
            lines,
        ));
        let (state, states) = watch::channel(job.state);
        if !job.state.is_terminal() {
            // Queued, or running elsewhere: relay what changes.
            tokio::spawn(background::relay(
                Arc::downgrade(&self.inner),
                job.id,
                log.clone(),
                state,
                seen,
            ));
        }
        Ok((log, states))
    }

    /// Counts for `/metrics`, of every host sharing the store.
    pub async fn metrics(&self) -> Result<Metrics, ServiceError> {
        let jobs_by_state = self.inner.config.store.count_by_state().await?;
        let queue_depth = self.inner.config.queue.depth().await?;
        let table = self.inner.lock();
        Ok(Metrics {
            jobs_by_state,
            queue_depth,
            build_seconds: table.build_seconds.clone(),
            build_steps: table.build_steps.clone(),
        })
    }

    /// The job's log lines so far.
    pub async fn logs(&self, id: &str) -> Result<Vec<LogLine>, ServiceError> {
        if let Some(lines) = self.inner.live(id, |entry| entry.log.lines()) {
            return Ok(lines);
        }
        self.inner.stored(id).await?;
        self.inner.stored_log(id).await
    }

    /// Cancels job `id`. A queued job ends `cancelled` at once; a running
    /// job's builder is stopped (its instance dropped, its programs killed)
    /// and the job returned once its worker has recorded the cancellation.
    /// A job that already ended is an error.
    pub async fn cancel(&self, id: &str) -> Result<Job, ServiceError> {
        self.cancel_because(id, "cancelled by request").await
    }

    /// [`Service::cancel`], saying `reason` in the job's error.
    async fn cancel_because(&self, id: &str, reason: &str) -> Result<Job, ServiceError> {
        for _ in 0..CANCEL_RETRIES {
            let running_here = self.inner.live(id, |entry| {
                if let Some(cancel) = &entry.cancel {
                    cancel.cancel(reason);
                }
                entry.job.state
            });
            match running_here {
                Some(state) if state.is_terminal() => break,
                Some(_) => {
                    tracing::info!(job = %id, "running job cancelled");
                    return self.wait(id, CANCEL_SETTLE).await;
                }
                None => {}
            }
            let job = self.inner.stored(id).await?;
            match job.state {
                State::Queued => {
                    let mut ended = job;
                    let outcome = Outcome::Cancelled {
                        reason: format!("{reason} before it started"),
                    };
                    ended
                        .finish(outcome, Utc::now())
                        .expect("queued → cancelled is allowed");
                    let line = "[helix] cancelled before it started";
                    if self.inner.config.queue.withdraw(&ended, line).await? {
                        tracing::info!(job = %id, "queued job cancelled");
                        return Ok(ended);
                    }
                }
                State::Running => {
                    if self.inner.config.queue.ask_cancel(id, reason).await? {
                        return self.wait(id, CANCEL_SETTLE).await;
                    }
                }
                _ => break,
            }
            // Claimed or ended meanwhile: look again.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ended = self.get(id).await?;
        Err(ServiceError::AlreadyEnded {
            id: ended.id,
            state: ended.state,
        })
    }

    /// Waits until job `id` ends or `timeout` passes, then returns its
    /// snapshot (terminal, or its current state at the timeout).
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Job, ServiceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.inner.changes();
        loop {
            if let Some(mut state) = self.inner.live(id, |entry| entry.state.subscribe()) {
                let _ =
                    tokio::time::timeout_at(deadline, state.wait_for(|s| s.is_terminal())).await;
                return self.get(id).await;
            }
            // Queued, finished, or running elsewhere: read the store until
            // it ends (or, claimed by this host meanwhile, becomes live).
            let job = self.inner.stored(id).await?;
            if job.state.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            let _ = tokio::time::timeout_at(deadline, changes.next(id)).await;
        }
    }

    /// Number of jobs waiting for a worker, on every host.
    pub async fn queue_depth(&self) -> Result<usize, ServiceError> {
        Ok(self.inner.config.queue.depth().await?)
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

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave a job half-changed
        // (each change is a single assignment), so a poisoned lock is safe
        // to keep using.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
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
