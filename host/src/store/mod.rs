//! Durable job storage: every accepted job, its state changes and its log
//! lines are written here, so a restart — even after `kill -9` — shows the
//! same history and loses no accepted job.
//!
//! The service keeps only live jobs (queued and running) in memory; the
//! store is where finished jobs are read from, so memory does not grow with
//! history. Writes are ordered when they are *made* and made durable in
//! batches (group commit): the returned [`Commit`] resolves once the write,
//! and every write made before it, is durable.

mod postgres;
mod sqlite;

use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, oneshot};

use crate::job::{Job, JobId, State};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A job as stored, with the log lines kept for it (oldest first).
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub job: Job,
    pub log: Vec<String>,
}

/// Why the store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("a job with id '{0}' is already stored")]
    Duplicate(JobId),
    #[error(
        "job '{0}' is no longer held by this host (its lease ran out and another run took it over)"
    )]
    Lost(JobId),
    #[error("job store: {0}")]
    Database(String),
}

/// Stores trim a job's stored log every this many lines, not on every line.
const TRIM_EVERY: u64 = 256;

/// Jobs whose log line count a store's writer remembers; beyond this it
/// forgets them all and starts counting (or asking the database) again.
const REMEMBERED_LOGS: usize = 16 * 1024;

/// Resolves once a write is durable.
pub type Commit = BoxFuture<'static, Result<(), StoreError>>;

/// A read from the store.
pub type Read<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Where jobs live between restarts.
pub trait JobStore: Send + Sync + 'static {
    /// Records a newly accepted job; the commit fails with
    /// [`StoreError::Duplicate`] on an id that is already stored.
    fn insert(&self, job: &Job) -> Commit;
    /// Records a job's new state and result.
    fn update(&self, job: &Job) -> Commit;
    /// Appends one log line to job `id`, keeping at most about `cap` lines.
    /// Ordered with the other writes; nobody waits for it.
    fn append_log(&self, id: &JobId, line: &str, cap: usize);

    /// Job `id` as last committed.
    fn get<'a>(&'a self, id: &'a str) -> Read<'a, Option<Job>>;
    /// Job `id`'s stored log lines, oldest first.
    fn log<'a>(&'a self, id: &'a str) -> Read<'a, Vec<String>>;
    /// Up to `limit` jobs, newest first, optionally only those in `state`,
    /// submitted before job `before`. `None` when `before` names no job.
    fn page<'a>(
        &'a self,
        state: Option<State>,
        limit: usize,
        before: Option<&'a str>,
    ) -> Read<'a, Option<Vec<Job>>>;
    /// How many jobs are stored in each state.
    fn count_by_state(&self) -> Read<'_, Vec<(State, u64)>>;
    /// Every queued or running job in submission order, with its log: what
    /// a starting host must pick up again.
    fn load_unfinished(&self) -> Read<'_, Vec<StoredJob>>;
}

/// A queue several hosts share (PostgreSQL). Each host claims jobs from it
/// and holds a lease on every job it runs, renewed by heartbeat; a job
/// whose lease ran out goes back to the queue. This host's name in the
/// leases is fixed when the queue is opened.
pub trait SharedQueue: Send + Sync + 'static {
    /// Claims the oldest queued job for one of `builders` (those this host
    /// has loaded): it becomes running on this host with a lease of
    /// `lease`, its log so far alongside. `None` when no such job is queued.
    fn claim<'a>(&'a self, lease: Duration, builders: &'a [String]) -> Read<'a, Option<StoredJob>>;
    /// Renews this host's leases on `running`, the jobs it still runs (a
    /// job it no longer runs — its end could not be stored — is left to
    /// expire and be recovered).
    fn heartbeat<'a>(&'a self, lease: Duration, running: &'a [JobId]) -> Read<'a, Heartbeat>;
    /// Queues again — or fails, after `max_attempts` — running jobs whose
    /// lease ran out, and with `own_too` also this host's (at start, when
    /// any run of this host's is a leftover). Returns how many.
    fn recover_lost(&self, max_attempts: u32, own_too: bool) -> Read<'_, usize>;
    /// Cancels job `id` if it is queued, or asks the host running it to.
    fn request_cancel<'a>(&'a self, id: &'a str, reason: &'a str) -> Read<'a, CancelRequest>;
    /// How many jobs wait in the queue.
    fn queued(&self) -> Read<'_, u64>;
    /// What other hosts announce: new work, cancellations.
    fn notices(&self) -> broadcast::Receiver<Notice>;
}

/// What a heartbeat found.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// Jobs of those asked about that this host still holds.
    pub held: Vec<JobId>,
    /// Held jobs someone asked to cancel, with the reason given.
    pub cancel: Vec<(JobId, String)>,
}

/// What [`SharedQueue::request_cancel`] did.
#[derive(Debug)]
pub enum CancelRequest {
    /// The job was queued and is now cancelled.
    Cancelled(Box<Job>),
    /// The job runs on some host, which is told to stop it.
    Asked,
    /// The job had already ended.
    Ended(Box<Job>),
    NotFound,
}

/// What hosts announce to each other through the shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// New jobs are queued (or may be: sent after a lost connection too).
    Queued,
    /// Someone asked for job `id` to be cancelled.
    Cancel(String),
    /// Job `id`'s state or log changed.
    Changed(String),
}

/// A write waiting for its batch, in the order it was made.
enum Write {
    Job {
        id: JobId,
        state: State,
        builder: String,
        /// The job as JSON.
        body: String,
        /// Attempts the job has started, which a shared store checks so a
        /// host that lost a job cannot overwrite its new run.
        attempts: u32,
        insert: bool,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Log {
        id: JobId,
        line: String,
        cap: usize,
    },
}

impl Write {
    /// The write of `job` and its commit; no write when the job cannot be
    /// serialized (the commit then says so).
    fn job(job: &Job, insert: bool) -> (Option<Write>, Commit) {
        let (done, committed) = oneshot::channel();
        let write = match serde_json::to_string(job) {
            Ok(body) => Some(Write::Job {
                id: job.id.clone(),
                state: job.state,
                builder: job.builder.clone(),
                body,
                attempts: job.attempts,
                insert,
                done,
            }),
            Err(e) => {
                let _ = done.send(Err(db_error(e)));
                None
            }
        };
        let commit = async move {
            committed
                .await
                .unwrap_or_else(|_| Err(db_error("the store's writer has stopped")))
        }
        .boxed();
        (write, commit)
    }
}

/// Tells each job write of a committed (or failed) batch how it went.
fn acknowledge(batch: Vec<Write>, results: Vec<Result<(), StoreError>>) {
    for (write, result) in batch.into_iter().zip(results) {
        if let Write::Job { done, .. } = write {
            let _ = done.send(result);
        }
    }
}

fn db_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}
