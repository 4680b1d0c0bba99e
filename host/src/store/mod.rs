//! Durable job storage: every accepted job, its state changes and its log
//! lines are written here before anyone is told about them, so a restart —
//! even after `kill -9` — shows the same history and loses no accepted job.
//!
//! The service keeps its working copy in memory and writes through this
//! trait; it reads the store back only at start-up. The trait is shaped so
//! that a shared database (PostgreSQL) can implement it later.

mod sqlite;

use crate::job::{Job, JobId};

pub use sqlite::SqliteStore;

/// A job as stored, with the log lines kept for it (oldest first).
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub job: Job,
    pub log: Vec<String>,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a job with id '{0}' is already stored")]
    Duplicate(JobId),
    #[error("job store: {0}")]
    Database(String),
}

/// Where jobs live between restarts.
pub trait JobStore: Send + Sync + 'static {
    /// Records a newly accepted job; fails on an id that is already stored.
    fn insert(&self, job: &Job) -> Result<(), StoreError>;
    /// Records a job's new state and result.
    fn update(&self, job: &Job) -> Result<(), StoreError>;
    /// Appends one log line to job `id`, keeping at most `cap` lines.
    fn append_log(&self, id: &JobId, line: &str, cap: usize) -> Result<(), StoreError>;
    /// Every stored job in submission order, with its log.
    fn load(&self) -> Result<Vec<StoredJob>, StoreError>;
}
