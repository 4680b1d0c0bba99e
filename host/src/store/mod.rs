//! Durable job storage: every accepted job, its state changes and its log
//! lines are written here, so a restart — even after `kill -9` — shows the
//! same history and loses no accepted job.
//!
//! The service keeps only live jobs (queued and running) in memory; the
//! store is where finished jobs are read from, so memory does not grow with
//! history. Writes are ordered when they are *made* and made durable in
//! batches (group commit): the returned [`Commit`] resolves once the write,
//! and every write made before it, is durable.

mod sqlite;

use futures_util::future::BoxFuture;

use crate::job::{Job, JobId, State};

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
    #[error("job store: {0}")]
    Database(String),
}

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
