//! The build service: accepts jobs into a bounded queue, runs them on a pool
//! of workers through their builders, and lets callers get, list, cancel and
//! wait for them.
//!
//! The service keeps its live jobs (queued and running) in memory and
//! writes each accepted job, state change and log line through to its
//! [`JobStore`]; a submission is acknowledged once it is durable, and a job
//! leaves memory once its end is. Finished jobs are read from the store.
//! At start the service reads the live jobs back and recovers those an
//! earlier process left running.
//!
//! With a [`SharedQueue`] (PostgreSQL) the queue is not in memory: workers
//! claim jobs from the database, a heartbeat keeps this host's leases and
//! recovers jobs of hosts that stopped renewing theirs, and notifications
//! from other hosts wake idle workers, cancel jobs running here, and tell
//! waiters and followers of jobs running elsewhere that they changed.
//!
//! Every state change goes through [`Job::start`] / [`Job::finish`], so the
//! lifecycle rules hold whatever the order of events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, Semaphore, broadcast, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::cancel::CancelSignal;
use crate::job::{FailureKind, InvalidJob, Job, JobId, JobRequest, Outcome, State, SubmitPolicy};
use crate::log::{JobLog, Redactor};
use crate::plugin::{Built, PluginRuntime, RunContext};
use crate::registry::Publisher;
use crate::secrets::BuildSecrets;
use crate::source::Checkout;
use crate::store::{
    CancelRequest, Heartbeat, JobStore, Notice, SharedQueue, StoreError, StoredJob,
};
use crate::workspace::JobDirs;

/// How the service runs jobs.
#[derive(Clone)]
pub struct ServiceConfig {
    pub workers: usize,
    pub queue_capacity: usize,
    /// What a submission may contain, the builders it may name included.
    pub submit_policy: SubmitPolicy,
    pub log_cap_lines: usize,
    /// Parent of the per-job workspace directories.
    pub workspace_dir: PathBuf,
    /// Leave the workspace of a job that did not succeed in place.
    pub keep_failed_workspaces: bool,
    /// Pushes what real builders built and confirms it in the registry.
    pub publisher: Publisher,
    /// Checks out real builders' sources.
    pub checkout: Checkout,
    /// Where images of jobs that name none go (`host[:port][/namespace]`).
    pub default_registry: Option<String>,
    /// Where jobs outlive this process.
    pub store: Arc<dyn JobStore>,
    /// The operator's build secrets, handed to the jobs that name them.
    pub secrets: BuildSecrets,
    /// Runs a job may start before an interruption (the host dying while
    /// it ran) fails it instead of queueing it again.
    pub max_attempts: u32,
    /// Set when the queue is shared with other hosts; else this host's
    /// queue lives in its memory (and its store).
    pub shared: Option<Shared>,
}

/// Running against a queue other hosts share.
#[derive(Clone)]
pub struct Shared {
    pub queue: Arc<dyn SharedQueue>,
    /// This host's name in the queue's leases.
    pub host: String,
    /// How long a claimed job stays this host's without a heartbeat; a
    /// heartbeat renews it every third of that.
    pub lease: Duration,
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
    #[error("the job store is unavailable, so nothing was read or changed ({0}); retry later")]
    Store(String),
    #[error("cursor '{0}' names no job; start again without a cursor")]
    UnknownCursor(String),
}

/// One page of [`Service::list_page`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What `/metrics` reports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub jobs_by_state: Vec<(State, u64)>,
    pub queue_depth: usize,
    /// Run time (`started_at` to `completed_at`) of jobs that ended since
    /// this process started, in seconds: cumulative bucket counts, sum and
    /// count.
    pub build_seconds: Histogram,
}

/// A Prometheus-style histogram.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// Upper bounds of the build-duration buckets, in seconds.
const BUILD_SECONDS_BUCKETS: [f64; 10] =
    [0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0];

/// How long `cancel` waits for a running job's worker to record the
/// cancellation before returning the job as it then is.
const CANCEL_SETTLE: Duration = Duration::from_secs(5);

/// How long an idle worker of a shared queue, or a host waiting for or
/// following a job that lives on another host, waits for a notification
/// before looking at the store anyway (a notification can be lost while
/// the database connection is down).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// A handle to the service; clones share it.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServiceConfig,
    runtime: Arc<PluginRuntime>,
    table: Mutex<Table>,
    /// One permit per queued job; closed on stop.
    ready: Semaphore,
    stopping: AtomicBool,
    /// Wakes idle workers of a shared queue (new work, or stopping).
    work: Notify,
    workers: tokio::sync::Mutex<JoinSet<()>>,
}

/// The live jobs. A job leaves the table once its end is stored; from
/// then on it is read from the store, so memory does not grow with
/// history.
#[derive(Default)]
struct Table {
    jobs: HashMap<JobId, Entry>,
    /// Ids of accepted jobs whose insert is not yet committed: taken for
    /// duplicates and capacity, invisible to readers.
    pending: HashSet<JobId>,
    /// Ids of queued jobs, oldest first.
    queue: VecDeque<JobId>,
    /// Stored jobs in each terminal state (counted at start, then kept up).
    ended: HashMap<State, u64>,
    /// Run times of jobs that ended since this process started.
    build_seconds: Histogram,
}

struct Entry {
    job: Job,
    log: Arc<JobLog>,
    /// Publishes every state change to waiters.
    state: watch::Sender<State>,
    /// Present while the job runs.
    cancel: Option<CancelSignal>,
}

impl Table {
    /// Adds a live job, queueing it if it is queued.
    fn add(&mut self, entry: Entry) {
        let id = entry.job.id.clone();
        if entry.job.state == State::Queued {
            self.queue.push_back(id.clone());
        }
        self.jobs.insert(id, entry);
    }

    /// Counts a job that ended.
    fn count_ended(&mut self, job: &Job) {
        *self.ended.entry(job.state).or_default() += 1;
        let (Some(started), Some(completed)) = (job.started_at, job.completed_at) else {
            return;
        };
        let seconds = (completed - started).num_milliseconds().max(0) as f64 / 1000.0;
        let histogram = &mut self.build_seconds;
        histogram.sum += seconds;
        histogram.count += 1;
        for (bound, count) in &mut histogram.buckets {
            if seconds <= *bound {
                *count += 1;
            }
        }
    }
}

impl Service {
    /// Reads back the stored live jobs (recovering those an earlier
    /// process left running) and starts `config.workers` workers on the
    /// current tokio runtime.
    pub async fn start(
        config: ServiceConfig,
        runtime: Arc<PluginRuntime>,
    ) -> Result<Self, StoreError> {
        let table = Table {
            build_seconds: Histogram {
                buckets: BUILD_SECONDS_BUCKETS.iter().map(|b| (*b, 0)).collect(),
                ..Histogram::default()
            },
            ..Table::default()
        };
        let inner = Arc::new(Inner {
            runtime,
            table: Mutex::new(table),
            ready: Semaphore::new(0),
            stopping: AtomicBool::new(false),
            work: Notify::new(),
            workers: tokio::sync::Mutex::new(JoinSet::new()),
            config,
        });
        let mut workers = JoinSet::new();
        match inner.config.shared.clone() {
            None => {
                inner.restore().await?;
                for _ in 0..inner.config.workers {
                    workers.spawn(worker(inner.clone()));
                }
            }
            Some(shared) => {
                // Runs this host left behind when it last stopped.
                shared
                    .queue
                    .recover_lost(inner.config.max_attempts, true)
                    .await?;
                for _ in 0..inner.config.workers {
                    workers.spawn(shared_worker(inner.clone(), shared.clone()));
                }
                tokio::spawn(keep_leases(Arc::downgrade(&inner), shared.clone()));
                tokio::spawn(relay_notices(Arc::downgrade(&inner), shared));
            }
        }
        *inner
            .workers
            .try_lock()
            .expect("nobody else holds the new service") = workers;
        Ok(Service { inner })
    }

    pub fn runtime(&self) -> &PluginRuntime {
        &self.inner.runtime
    }

    /// Validates `request`, stores it and queues it. On any error nothing
    /// is stored; once it returns the job is durable.
    pub async fn submit(&self, request: JobRequest) -> Result<Job, ServiceError> {
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(ServiceError::ShuttingDown);
        }
        let job = Job::from_request(request, &self.inner.config.submit_policy, Utc::now())?;

        let capacity = self.inner.config.queue_capacity;
        let elsewhere = match &self.inner.config.shared {
            Some(shared) => shared.queue.queued().await.map_err(store_error)?,
            None => 0,
        };
        let committed = {
            let mut table = self.inner.lock();
            if table.jobs.contains_key(&job.id) || table.pending.contains(&job.id) {
                return Err(ServiceError::Duplicate(job.id));
            }
            let queued = table.queue.len() + table.pending.len() + elsewhere as usize;
            if queued >= capacity {
                return Err(ServiceError::QueueFull { capacity });
            }
            table.pending.insert(job.id.clone());
            self.inner.config.store.insert(&job)
        };
        // Finished in its own task: once the insert is on its way, the job
        // must end up queued (or refused) even if this caller goes away.
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let committed = committed.await;
            let mut table = inner.lock();
            table.pending.remove(&job.id);
            committed.map_err(store_error)?;
            if inner.config.shared.is_some() {
                // Whichever host claims it runs it.
                return Ok(job);
            }
            let entry = inner.entry(job.clone(), Vec::new());
            table.add(entry);
            drop(table);
            inner.ready.add_permits(1);
            tracing::debug!(job = %job.id, builder = %job.builder, "job queued");
            Ok(job)
        })
        .await
        .map_err(|e| ServiceError::Store(format!("storing the job was interrupted: {e}")))?
    }

    /// A snapshot of job `id`.
    pub async fn get(&self, id: &str) -> Result<Job, ServiceError> {
        if let Some(job) = self.inner.live(id, |entry| entry.job.clone()) {
            return Ok(job);
        }
        self.inner.stored(id).await
    }

    /// Snapshots of every job, newest first.
    pub async fn list(&self) -> Vec<Job> {
        self.list_page(None, usize::MAX, None)
            .await
            .map(|page| page.jobs)
            .unwrap_or_default()
    }

    /// Up to `limit` jobs, newest first, optionally only those in `state`,
    /// starting after job `cursor` (the previous page's `next_cursor`).
    pub async fn list_page(
        &self,
        state: Option<State>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<JobPage, ServiceError> {
        let mut jobs = self
            .inner
            .config
            .store
            .page(state, limit.saturating_add(1), cursor)
            .await
            .map_err(store_error)?
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
            // It lives on another host: relay what the store shows.
            tokio::spawn(relay_remote(self.clone(), job.id, log.clone(), state, seen));
        }
        Ok((log, states))
    }

    /// Counts for `/metrics`: with a shared queue, of every host's jobs.
    pub async fn metrics(&self) -> Result<Metrics, ServiceError> {
        if self.inner.config.shared.is_some() {
            let jobs_by_state = self
                .inner
                .config
                .store
                .count_by_state()
                .await
                .map_err(store_error)?;
            let queue_depth = jobs_by_state
                .iter()
                .find(|(state, _)| *state == State::Queued)
                .map_or(0, |(_, count)| *count as usize);
            return Ok(Metrics {
                jobs_by_state,
                queue_depth,
                build_seconds: self.inner.lock().build_seconds.clone(),
            });
        }
        let table = self.inner.lock();
        let jobs_by_state = State::ALL
            .iter()
            .map(|state| {
                let count = if state.is_terminal() {
                    table.ended.get(state).copied().unwrap_or(0)
                } else {
                    table
                        .jobs
                        .values()
                        .filter(|e| e.job.state == *state)
                        .count() as u64
                };
                (*state, count)
            })
            .collect();
        Ok(Metrics {
            jobs_by_state,
            queue_depth: table.queue.len(),
            build_seconds: table.build_seconds.clone(),
        })
    }

    /// The job's log lines so far.
    pub async fn logs(&self, id: &str) -> Result<Vec<String>, ServiceError> {
        if let Some(lines) = self.inner.live(id, |entry| entry.log.snapshot()) {
            return Ok(lines);
        }
        self.inner.stored(id).await?;
        self.inner.stored_log(id).await
    }

    /// Cancels job `id`. A queued job ends `cancelled` at once; a running
    /// job's builder is stopped (its instance dropped) and the job returned
    /// once its worker has recorded the cancellation. A job that already
    /// ended is an error.
    pub async fn cancel(&self, id: &str) -> Result<Job, ServiceError> {
        enum Found {
            Stored,
            Ended(Box<Job>),
            Settling(tokio::task::JoinHandle<()>),
            Running,
        }
        let found = {
            let mut table = self.inner.lock();
            let table = &mut *table;
            match table.jobs.get_mut(id) {
                None => Found::Stored,
                Some(entry) if entry.job.state.is_terminal() => {
                    Found::Ended(Box::new(entry.job.clone()))
                }
                Some(entry) if entry.job.state == State::Queued => {
                    entry
                        .job
                        .finish(
                            Outcome::Cancelled {
                                reason: "cancelled by request before it started".into(),
                            },
                            Utc::now(),
                        )
                        .expect("queued → cancelled is allowed");
                    entry.log.push("[helix] cancelled before it started");
                    table.queue.retain(|queued| queued.as_str() != id);
                    tracing::info!(job = %id, "queued job cancelled");
                    Found::Settling(self.inner.settle(&entry.job))
                }
                Some(entry) => {
                    if let Some(cancel) = &entry.cancel {
                        cancel.cancel("cancelled by request");
                    }
                    tracing::info!(job = %id, "running job cancelled");
                    Found::Running
                }
            }
        };
        let ended = match found {
            Found::Settling(settled) => {
                let _ = settled.await;
                return self.get(id).await;
            }
            Found::Running => return self.wait(id, CANCEL_SETTLE).await,
            Found::Ended(job) => *job,
            Found::Stored => match &self.inner.config.shared {
                None => self.inner.stored(id).await?,
                Some(shared) => {
                    match shared
                        .queue
                        .request_cancel(id, "cancelled by request")
                        .await
                        .map_err(store_error)?
                    {
                        CancelRequest::Cancelled(job) => return Ok(*job),
                        CancelRequest::Asked => return self.wait(id, CANCEL_SETTLE).await,
                        CancelRequest::Ended(job) => *job,
                        CancelRequest::NotFound => {
                            return Err(ServiceError::NotFound(id.to_string()));
                        }
                    }
                }
            },
        };
        Err(ServiceError::AlreadyEnded {
            id: ended.id,
            state: ended.state,
        })
    }

    /// Waits until job `id` ends or `timeout` passes, then returns its
    /// snapshot (terminal, or its current state at the timeout).
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Job, ServiceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.inner.remote_changes();
        loop {
            if let Some(mut state) = self.inner.live(id, |entry| entry.state.subscribe()) {
                let _ =
                    tokio::time::timeout_at(deadline, state.wait_for(|s| s.is_terminal())).await;
                return self.get(id).await;
            }
            // Finished, or live on another host: read the store until it
            // ends (or, claimed by this host meanwhile, becomes live here).
            let job = self.inner.stored(id).await?;
            if job.state.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            let _ = tokio::time::timeout_at(deadline, changes.next(id)).await;
        }
    }

    /// Number of jobs waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Stops gracefully: no new jobs are accepted or started, running jobs
    /// get `grace` to finish, then are cancelled — or, with a shared queue,
    /// stopped and queued again for another host (the run counts as an
    /// attempt). Returns when every worker has exited. Queued jobs stay
    /// queued.
    pub async fn stop(&self, grace: Duration) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.ready.close();
        self.inner.work.notify_waiters();
        let mut workers = self.inner.workers.lock().await;
        let drained = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            match &self.inner.config.shared {
                None => {
                    self.inner.cancel_running(&format!(
                        "the host shut down and the job did not finish within {}s",
                        grace.as_secs()
                    ));
                    while workers.join_next().await.is_some() {}
                }
                Some(shared) => {
                    // Another host can finish them: stop them here (dropping
                    // a run kills its processes) and give them back.
                    workers.abort_all();
                    while workers.join_next().await.is_some() {}
                    self.inner.lock().jobs.clear();
                    if let Err(e) = shared
                        .queue
                        .recover_lost(self.inner.config.max_attempts, true)
                        .await
                    {
                        tracing::warn!("could not give unfinished jobs back to the queue: {e}");
                    }
                }
            }
        }
        tracing::info!("service stopped");
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave a job half-changed
        // (each change is a single assignment), so a poisoned lock is safe
        // to keep using.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `f` of live job `id`, if it is live.
    fn live<T>(&self, id: &str, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        self.lock().jobs.get(id).map(f)
    }

    /// Job `id` from the store.
    async fn stored(&self, id: &str) -> Result<Job, ServiceError> {
        self.config
            .store
            .get(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))
    }

    async fn stored_log(&self, id: &str) -> Result<Vec<String>, ServiceError> {
        self.config.store.log(id).await.map_err(store_error)
    }

    /// A table entry for `job` with its log (continuing `earlier` lines).
    fn entry(&self, job: Job, earlier: Vec<String>) -> Entry {
        let log = JobLog::persistent(
            self.config.log_cap_lines,
            self.config.secrets.redactor(&job.secrets),
            job.id.clone(),
            self.config.store.clone(),
            earlier,
        );
        let (state, _) = watch::channel(job.state);
        Entry {
            job,
            log: Arc::new(log),
            state,
            cancel: None,
        }
    }

    /// Writes a live job's new state through to the store without waiting:
    /// the store applies writes in order, and a job's end is waited for
    /// (see [`Inner::settle`]).
    fn persist(&self, job: &Job) {
        let commit = self.config.store.update(job);
        let id = job.id.clone();
        tokio::spawn(async move {
            if let Err(e) = commit.await {
                tracing::error!(job = %id, "job state not stored: {e}");
            }
        });
    }

    /// Stores a job that has just ended; once that is durable, tells its
    /// waiters and drops it from the table (it is read from the store from
    /// then on). Runs to completion even if the caller goes away. With a
    /// shared queue a failed write is retried for as long as a lease lasts
    /// (the heartbeat keeps renewing it meanwhile), so a short database
    /// outage does not cost the job a second run. If the store still fails,
    /// it keeps the job as it last had it (running, for a job that ran), so
    /// recovery runs it again: its end is lost, the job is not.
    fn settle(self: &Arc<Self>, job: &Job) -> tokio::task::JoinHandle<()> {
        let commit = self.config.store.update(job);
        let inner = self.clone();
        let job = job.clone();
        tokio::spawn(async move {
            let mut stored = commit.await;
            if let Some(shared) = &inner.config.shared {
                let give_up = tokio::time::Instant::now() + shared.lease;
                while matches!(stored, Err(StoreError::Database(_)))
                    && tokio::time::Instant::now() < give_up
                {
                    tokio::time::sleep(IDLE_POLL).await;
                    stored = inner.config.store.update(&job).await;
                }
            }
            let id = job.id;
            if let Err(e) = stored {
                tracing::error!(job = %id, "job end not stored: {e}");
            }
            let mut table = inner.lock();
            if let Some(entry) = table.jobs.remove(&id) {
                table.count_ended(&entry.job);
                entry.state.send_replace(entry.job.state);
            }
        })
    }

    /// Loads the live stored jobs. Queued ones are queued again; running
    /// ones were interrupted by the previous process's death: they are
    /// queued again while attempts remain, else failed as interrupted.
    async fn restore(self: &Arc<Self>) -> Result<(), StoreError> {
        let store = &self.config.store;
        let counts = store.count_by_state().await?;
        let stored = store.load_unfinished().await?;
        let mut settling = Vec::new();
        {
            let mut table = self.lock();
            table.ended = counts
                .into_iter()
                .filter(|(state, _)| state.is_terminal())
                .collect();
            for item in stored {
                let mut entry = self.entry(item.job, item.log);
                if entry.job.state == State::Running {
                    self.recover_interrupted(&mut entry);
                }
                if entry.job.state.is_terminal() {
                    settling.push(self.settle(&entry.job));
                } else if entry.job.state == State::Queued {
                    self.ready.add_permits(1);
                }
                table.add(entry);
            }
        }
        for settled in settling {
            let _ = settled.await;
        }
        let queued = self.lock().queue.len();
        if queued > 0 {
            tracing::info!(jobs = queued, "queued jobs restored from the store");
        }
        Ok(())
    }

    fn recover_interrupted(&self, entry: &mut Entry) {
        let line = entry
            .job
            .recover_lost_run(
                self.config.max_attempts,
                "interrupted: the host stopped while the job ran",
                Utc::now(),
            )
            .expect("the job is running");
        entry.log.push(&line);
        if entry.job.state == State::Queued {
            self.persist(&entry.job);
        }
    }

    /// Makes a job this host claimed from a shared queue live here.
    fn adopt(&self, stored: StoredJob) -> (Job, Arc<JobLog>, CancelSignal) {
        let mut entry = self.entry(stored.job, stored.log);
        let cancel = CancelSignal::new();
        entry.cancel = Some(cancel.clone());
        let claimed = (entry.job.clone(), entry.log.clone(), cancel);
        self.lock().add(entry);
        claimed
    }

    /// Stops the jobs this host runs that someone asked to cancel, and
    /// those of `asked` (the jobs the heartbeat renewed) whose lease it
    /// lost: another host may run them now.
    fn apply_heartbeat(&self, beat: &Heartbeat, asked: &[JobId]) {
        let table = self.lock();
        for id in asked {
            let Some(cancel) = table.jobs.get(id).and_then(|e| e.cancel.as_ref()) else {
                continue;
            };
            if !beat.held.contains(id) {
                cancel.cancel(
                    "this host lost its lease on the job (it could not renew it in time); \
                     it is queued again for another run",
                );
            } else if let Some((_, reason)) = beat.cancel.iter().find(|(held, _)| held == id) {
                cancel.cancel(reason);
            }
        }
    }

    fn remote_changes(&self) -> RemoteChanges {
        RemoteChanges {
            notices: self.config.shared.as_ref().map(|s| s.queue.notices()),
        }
    }

    /// Ids of the jobs this host holds in a shared queue: every live one
    /// (running, or ended with its end not yet stored).
    fn held_here(&self) -> Vec<JobId> {
        self.lock().jobs.keys().cloned().collect()
    }

    fn cancel_live(&self, id: &str, reason: &str) {
        if let Some(cancel) = self.lock().jobs.get(id).and_then(|e| e.cancel.as_ref()) {
            cancel.cancel(reason);
        }
    }

    fn cancel_running(&self, reason: &str) {
        for entry in self.lock().jobs.values() {
            if let Some(cancel) = &entry.cancel {
                cancel.cancel(reason);
            }
        }
    }

    /// Takes the oldest queued job and marks it running.
    fn claim_next(&self) -> Option<(Job, Arc<JobLog>, CancelSignal)> {
        let mut table = self.lock();
        let id = table.queue.pop_front()?;
        let entry = table.jobs.get_mut(&id)?;
        entry.job.start(Utc::now()).ok()?;
        let cancel = CancelSignal::new();
        entry.cancel = Some(cancel.clone());
        self.persist(&entry.job);
        entry.state.send_replace(entry.job.state);
        Some((entry.job.clone(), entry.log.clone(), cancel))
    }

    async fn record(self: &Arc<Self>, id: &JobId, outcome: Outcome) {
        let settled = {
            let mut table = self.lock();
            let Some(entry) = table.jobs.get_mut(id) else {
                return;
            };
            let state = outcome.state();
            let error = outcome.error();
            if let Err(e) = entry.job.finish(outcome, Utc::now()) {
                tracing::error!(job = %id, "dropping outcome: {e}");
                return;
            }
            entry.cancel = None;
            entry.log.push(&match &error {
                Some(error) => format!("[helix] job {state}: {error}"),
                None => format!("[helix] job {state}"),
            });
            tracing::info!(job = %id, %state, error = error.as_deref().unwrap_or(""), "job ended");
            self.settle(&entry.job)
        };
        let _ = settled.await;
    }

    async fn run(self: &Arc<Self>, job: Job, log: Arc<JobLog>, cancel: CancelSignal) {
        let outcome = self.execute(&job, log, cancel).await;
        self.record(&job.id, outcome).await;
    }

    /// Runs `job` in a fresh workspace: for a real builder the host checks
    /// the source out, the builder builds it, and the host pushes and
    /// confirms the image. The workspace is removed afterwards unless the
    /// job failed and the operator keeps failed workspaces.
    async fn execute(&self, job: &Job, log: Arc<JobLog>, cancel: CancelSignal) -> Outcome {
        let Some(builder) = self.runtime.builder(&job.builder) else {
            return Outcome::failed(
                FailureKind::Host,
                format!("builder '{}' is not loaded on this host", job.builder),
            );
        };
        let root = self.config.workspace_dir.join(job.id.as_str());
        let dirs = match JobDirs::create(root.clone()) {
            Ok(dirs) => dirs,
            Err(e) => {
                return Outcome::failed(
                    FailureKind::Host,
                    format!("could not create the job workspace {}: {e}", root.display()),
                );
            }
        };
        log.push(&match &self.config.shared {
            Some(shared) => format!(
                "[helix] running on builder '{}' on host '{}'",
                job.builder, shared.host
            ),
            None => format!("[helix] running on builder '{}'", job.builder),
        });
        let outcome = self
            .build_and_publish(job, &builder, &dirs, &log, &cancel)
            .await
            .unwrap_or_else(|ended| ended);
        let failed = !matches!(outcome, Outcome::Succeeded(_));
        if failed && self.config.keep_failed_workspaces {
            log.push(&format!(
                "[helix] workspace kept for debugging: {}",
                dirs.root().display()
            ));
        } else {
            dirs.remove();
        }
        outcome
    }

    async fn build_and_publish(
        &self,
        job: &Job,
        builder: &crate::plugin::Builder,
        dirs: &JobDirs,
        log: &Arc<JobLog>,
        cancel: &CancelSignal,
    ) -> Result<Outcome, Outcome> {
        let workspace = dirs.workspace();
        let simulated = builder.info().simulated;
        let (image, commit) = if simulated {
            (None, None)
        } else {
            let Some(image) =
                crate::reference::job_image(job, self.config.default_registry.as_deref())
            else {
                return Err(Outcome::failed(
                    FailureKind::InvalidJob,
                    "the job names no image and the operator configured no default registry; set `image`",
                ));
            };
            builder.network().prepare().await.map_err(|e| {
                Outcome::failed(
                    FailureKind::Host,
                    format!("{e}; or set builders.{}.network = \"none\"", job.builder),
                )
            })?;
            let commit = self
                .config
                .checkout
                .fetch(job, &workspace, log, cancel)
                .await?;
            crate::source::check_context(&workspace, &job.context, &job.dockerfile_path)?;
            (Some(image), Some(commit))
        };
        let secrets = self
            .config
            .secrets
            .write(&job.secrets, &dirs.secrets())
            .map_err(|e| {
                Outcome::failed(
                    FailureKind::Host,
                    format!("could not hand the job its build secrets: {e}"),
                )
            })?;
        let ctx = RunContext {
            log: log.clone(),
            cancel: cancel.clone(),
            workspace,
            program_env: dirs.program_env(),
            commit,
            secrets,
        };
        match (builder.run(job, ctx).await?, image) {
            (Built::Simulated(result), _) => {
                log.push("[helix] simulated builder: no image, so nothing pushed or checked");
                Ok(Outcome::Succeeded(result))
            }
            (Built::Layout(layout), Some(image)) => self
                .config
                .publisher
                .publish(&layout, &image, &job.platforms, log, cancel)
                .await
                .map(Outcome::Succeeded)
                .map_err(|outcome| outcome.redacted(|text| log.redact(text))),
            // Builder::run refuses a layout from a simulated builder.
            (Built::Layout(_), None) => Err(Outcome::failed(
                FailureKind::Plugin,
                format!(
                    "simulated builder '{}' returned an image to push",
                    job.builder
                ),
            )),
        }
    }
}

async fn worker(inner: Arc<Inner>) {
    loop {
        match inner.ready.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_closed) => return,
        }
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        // A permit whose job was cancelled while queued finds nothing.
        if let Some((job, log, cancel)) = inner.claim_next() {
            let span = tracing::info_span!("job", id = %job.id, builder = %job.builder);
            inner.run(job, log, cancel).instrument(span).await;
        }
    }
}

fn store_error(e: StoreError) -> ServiceError {
    match e {
        StoreError::Duplicate(id) => ServiceError::Duplicate(id),
        other => ServiceError::Store(other.to_string()),
    }
}

/// A worker of a shared queue: claims jobs while there are any, else waits
/// for news of some (or polls, in case a notification was lost).
async fn shared_worker(inner: Arc<Inner>, shared: Shared) {
    // Jobs for builders this host lacks are left to hosts that have them.
    let builders: Vec<String> = inner
        .runtime
        .names()
        .into_iter()
        .map(String::from)
        .collect();
    while !inner.stopping.load(Ordering::SeqCst) {
        // Registered before looking, so news arriving meanwhile is kept.
        let news = inner.work.notified();
        match shared.queue.claim(shared.lease, &builders).await {
            Ok(Some(stored)) => {
                let (job, log, cancel) = inner.adopt(stored);
                let span = tracing::info_span!("job", id = %job.id, builder = %job.builder);
                inner.run(job, log, cancel).instrument(span).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot claim work from the shared queue: {e}"),
        }
        let _ = tokio::time::timeout(IDLE_POLL, news).await;
    }
}

/// Renews this host's leases every third of the lease, applies what the
/// heartbeat says, and recovers jobs of hosts that stopped renewing
/// theirs. Ends with the service.
async fn keep_leases(inner: std::sync::Weak<Inner>, shared: Shared) {
    let mut tick = tokio::time::interval(shared.lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let held = inner.held_here();
        match shared.queue.heartbeat(shared.lease, &held).await {
            Ok(beat) => inner.apply_heartbeat(&beat, &held),
            Err(e) => tracing::warn!("cannot renew this host's leases: {e}"),
        }
        if let Err(e) = shared
            .queue
            .recover_lost(inner.config.max_attempts, false)
            .await
        {
            tracing::warn!("cannot look for jobs of lost hosts: {e}");
        }
    }
}

/// Passes other hosts' news to this one: wakes idle workers when jobs are
/// queued, stops a job here when someone asked for it to be cancelled.
async fn relay_notices(inner: std::sync::Weak<Inner>, shared: Shared) {
    let mut notices = shared.queue.notices();
    loop {
        let notice = notices.recv().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match notice {
            Ok(Notice::Queued) | Err(broadcast::error::RecvError::Lagged(_)) => {
                inner.work.notify_waiters();
            }
            Ok(Notice::Cancel(id)) => inner.cancel_live(&id, "cancelled by request"),
            Ok(Notice::Changed(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Follows a job that lives on another host by reading the store, into
/// `log` and `state`, until the job ends or nobody follows any more.
async fn relay_remote(
    service: Service,
    id: JobId,
    log: Arc<JobLog>,
    state: watch::Sender<State>,
    mut seen: usize,
) {
    let mut changes = service.inner.remote_changes();
    while !state.is_closed() {
        changes.next(id.as_str()).await;
        let Ok(job) = service.inner.stored(id.as_str()).await else {
            continue;
        };
        let Ok(lines) = service.inner.stored_log(id.as_str()).await else {
            continue;
        };
        for line in lines.iter().skip(seen) {
            log.push(line);
        }
        seen = seen.max(lines.len());
        state.send_if_modified(|current| std::mem::replace(current, job.state) != job.state);
        if job.state.is_terminal() {
            return;
        }
    }
}

/// News of changes to jobs that live on other hosts.
struct RemoteChanges {
    /// `None` without a shared queue (then nothing changes elsewhere).
    notices: Option<broadcast::Receiver<Notice>>,
}

impl RemoteChanges {
    /// Returns when job `id` may have changed: the store said so, or
    /// `IDLE_POLL` passed without a word.
    async fn next(&mut self, id: &str) {
        let Some(notices) = &mut self.notices else {
            tokio::time::sleep(IDLE_POLL).await;
            return;
        };
        let changed = async {
            loop {
                match notices.recv().await {
                    Ok(Notice::Changed(changed)) if changed == id => return,
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(IDLE_POLL, changed).await;
    }
}
