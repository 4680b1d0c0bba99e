//! Durable job storage: every accepted job, its state changes and its log
//! lines are written here, so a restart — even after `kill -9` — shows the
//! same history and loses no accepted job.
//!
//! The service keeps only live jobs (queued and running) in memory; the
//! store is where finished jobs are read from, so memory does not grow with
//! history. Writes are ordered when they are *made* and made durable in
//! batches (group commit): the returned [`Commit`] resolves once the write,
//! and every write made before it, is durable.
//!
//! Where jobs wait to run lives beside it ([`queue`]): a queue claims
//! jobs from the store it is built on.

mod postgres;
pub mod queue;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use helix_core::job::{Job, JobId, State};
use helix_core::log::{LogLine, LogSink};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Which jobs a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<State>,
    /// Only jobs of this concurrency group.
    pub group: Option<String>,
    /// Only jobs for this builder.
    pub builder: Option<String>,
    /// Only jobs whose id, repository URL or image contains this text.
    pub text: Option<String>,
    /// Only jobs of this project (never those of no project).
    pub project: Option<String>,
}

/// A job as stored, with the log lines kept for it (oldest first).
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub job: Job,
    pub log: Vec<LogLine>,
}

/// A notification owed because a job ended, as [`JobStore::owed_notifications`]
/// hands it out. The stores owe one for every job that reaches an end
/// state, in the same transaction as that state (a database trigger), so
/// no way of ending a job can skip it and no crash can lose it.
#[derive(Debug, Clone)]
pub struct OwedNotification {
    /// The job as it ended.
    pub job: Job,
    /// The targets (their URLs) already told.
    pub delivered: Vec<String>,
    /// Deliveries begun, this one included.
    pub attempts: u32,
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
    Database(#[source] DatabaseError),
    /// The database file fails SQLite's integrity check, or is no database.
    #[error(
        "job store {path} is damaged ({detail}); the server does not start on it. Stop it, copy \
         the last `helix-build backup FILE` over {path} (deleting {path}-wal and {path}-shm), and \
         start again; or move {path} aside to start with an empty store"
    )]
    Damaged { path: String, detail: String },
    /// An empty database where one was in use: its jobs are gone.
    #[error(
        "job store {path} is empty, but this data dir was in use (a truncated or replaced file?); \
         the server does not start on it. Copy the last `helix-build backup FILE` over {path}, or \
         delete {path} to start with an empty store on purpose"
    )]
    Emptied { path: String },
}

/// What the database (or the store's use of it) failed with: the driver's
/// error as the source where there is one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DatabaseError {
    message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl DatabaseError {
    /// `source` with `context` (what the store was doing) before its text.
    pub fn with_context(
        context: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        DatabaseError {
            message: format!("{context}: {source}"),
            source: Some(Arc::new(source)),
        }
    }
}

impl From<String> for DatabaseError {
    fn from(message: String) -> Self {
        DatabaseError {
            message,
            source: None,
        }
    }
}

impl From<&str> for DatabaseError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// A driver's error as the source of its own message.
macro_rules! database_error_from {
    ($($error:ty),*) => {$(
        impl From<$error> for DatabaseError {
            fn from(source: $error) -> Self {
                DatabaseError {
                    message: source.to_string(),
                    source: Some(Arc::new(source)),
                }
            }
        }
    )*};
}
database_error_from!(
    rusqlite::Error,
    tokio_postgres::Error,
    serde_json::Error,
    std::io::Error,
    helix_core::job::InvalidJob,
    helix_core::job::TransitionError
);

/// Selects the finished jobs [`JobStore::prune`] deletes, in both stores'
/// SQL: `$1` the cutoff as RFC 3339 text (NULL: none), `$2` how many of the
/// newest finished jobs to keep whatever their age.
pub(crate) const PRUNED_JOBS: &str = "
    SELECT id FROM jobs WHERE state NOT IN ('queued', 'running') AND (
        COMPLETED_AT < CUTOFF
        OR seq <= (SELECT seq FROM jobs WHERE state NOT IN ('queued', 'running')
                   ORDER BY seq DESC LIMIT 1 OFFSET $2)
    )";

/// [`JobStore::put_record`] in SQLite's and PostgreSQL's parameters.
pub(crate) const PUT_RECORD: &str = "INSERT INTO job_records (job_id, name, body) \
     VALUES (?1, ?2, ?3) ON CONFLICT (job_id, name) DO UPDATE SET body = excluded.body";
pub(crate) const PUT_RECORD_PG: &str = "INSERT INTO job_records (job_id, name, body) \
     VALUES ($1, $2, $3) ON CONFLICT (job_id, name) DO UPDATE SET body = excluded.body";

/// Stores trim a job's stored log every this many lines, not on every line.
pub(crate) const TRIM_EVERY: u64 = 256;

/// Jobs whose log line count a store's writer remembers; beyond this it
/// forgets them all and starts counting (or asking the database) again.
pub(crate) const REMEMBERED_LOGS: usize = 16 * 1024;

/// Resolves once a write is durable.
pub type Commit = BoxFuture<'static, Result<(), StoreError>>;

/// A call into the store (a read, or a write whose answer is wanted).
pub type StoreCall<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Where jobs live between restarts; job logs are written through its
/// [`LogSink`] side.
pub trait JobStore: LogSink + Send + Sync + 'static {
    /// Records a newly accepted job; the commit fails with
    /// [`StoreError::Duplicate`] on an id that is already stored.
    fn insert(&self, job: &Job) -> Commit;
    /// Records a job's new state and result.
    fn update(&self, job: &Job) -> Commit;

    /// Stores document `name` of job `id` (a run's audit trail, the
    /// job's provenance), replacing one of that name; pruned with the
    /// job. Ordered with the other writes, so one written before the job's
    /// end is durable with it; nobody waits for it.
    fn put_record(&self, id: &JobId, name: &str, body: String);
    /// The bodies of job `id`'s documents whose names start with
    /// `prefix`, in name order; `None` when no job has that id.
    fn records<'a>(&'a self, id: &'a str, prefix: &'a str) -> StoreCall<'a, Option<Vec<String>>>;
    /// The ids of up to `limit` jobs holding a document named exactly
    /// `name`, the newest job first.
    fn jobs_with_record<'a>(&'a self, name: &'a str, limit: usize) -> StoreCall<'a, Vec<String>>;

    /// Job `id` as last committed.
    fn get<'a>(&'a self, id: &'a str) -> StoreCall<'a, Option<Job>>;
    /// Job `id`'s stored log lines, oldest first.
    fn log<'a>(&'a self, id: &'a str) -> StoreCall<'a, Vec<LogLine>>;
    /// Where job `id` is in submission order; `None` when no job has it.
    fn position<'a>(&'a self, id: &'a str) -> StoreCall<'a, Option<i64>>;
    /// Up to `limit` jobs submitted before position `before`, newest
    /// first, only those `filter` lets through.
    fn before<'a>(
        &'a self,
        filter: &'a JobFilter,
        before: i64,
        limit: usize,
    ) -> StoreCall<'a, Vec<Job>>;
    /// How many jobs are stored in each state.
    fn count_by_state(&self) -> StoreCall<'_, Vec<(State, u64)>>;
    /// Every queued or running job in submission order, with its log.
    fn load_unfinished(&self) -> StoreCall<'_, Vec<StoredJob>>;
    /// The queued and running jobs of concurrency group `group`, in
    /// submission order.
    fn unfinished_in_group<'a>(&'a self, group: &'a str) -> StoreCall<'a, Vec<Job>>;
    /// Deletes the finished jobs, with their logs, that ended before
    /// `ended_before` or are older than the newest `keep` finished ones;
    /// how many it deleted. Queued and running jobs are never touched.
    fn prune(&self, ended_before: Option<DateTime<Utc>>, keep: Option<usize>)
    -> StoreCall<'_, u64>;

    /// Takes up to `limit` of the owed notifications that are due, oldest
    /// first, for `lease`: until then no one else (no other host, no later
    /// process) is handed them, and after it they are handed out again, so
    /// one whose sender died is still sent.
    fn owed_notifications(
        &self,
        lease: Duration,
        limit: usize,
    ) -> StoreCall<'_, Vec<OwedNotification>>;
    /// Records how delivering job `id`'s notification went: `retry_in`
    /// `None` when it is settled (every target told, or given up), else
    /// the targets told so far and how long until the rest are tried again.
    fn settle_notification<'a>(
        &'a self,
        id: &'a str,
        delivered: &'a [String],
        retry_in: Option<Duration>,
    ) -> StoreCall<'a, ()>;

    /// Up to `limit` jobs, newest first, only those `filter` lets through,
    /// submitted before job `cursor`. `None` when `cursor` names no job.
    fn page<'a>(
        &'a self,
        filter: &'a JobFilter,
        limit: usize,
        cursor: Option<&'a str>,
    ) -> StoreCall<'a, Option<Vec<Job>>> {
        async move {
            let before = match cursor {
                None => i64::MAX,
                Some(id) => match self.position(id).await? {
                    Some(position) => position,
                    None => return Ok(None),
                },
            };
            self.before(filter, before, limit).await.map(Some)
        }
        .boxed()
    }
}

/// The sending end of a store's writer: every write of the store goes
/// through here, in the order it is made.
pub(crate) struct Writes {
    send: Box<dyn Fn(Write) + Send + Sync>,
}

impl Writes {
    pub(crate) fn new(send: impl Fn(Write) + Send + Sync + 'static) -> Self {
        Writes {
            send: Box::new(send),
        }
    }

    /// Queues the write of `job` (an insert or an update).
    pub(crate) fn job(&self, job: &Job, insert: bool) -> Commit {
        let (write, committed) = Write::job(job, insert);
        if let Some(write) = write {
            // Fails only once the writer is gone; the commit reports it.
            (self.send)(write);
        }
        committed
    }

    pub(crate) fn record(&self, id: &JobId, name: &str, body: String) {
        (self.send)(Write::Record {
            id: id.clone(),
            name: name.to_string(),
            body,
        });
    }

    pub(crate) fn log(&self, id: &JobId, line: &LogLine, cap: usize) {
        (self.send)(Write::Log {
            id: id.clone(),
            line: line.clone(),
            cap,
        });
    }
}

/// How the targets already told are kept in the outbox's `delivered`
/// column: one URL per line (URLs hold no line breaks).
pub(crate) fn delivered_column(delivered: &[String]) -> String {
    delivered.join("\n")
}

pub(crate) fn delivered_from_column(column: &str) -> Vec<String> {
    column.lines().map(String::from).collect()
}

/// A job read back from its stored body.
pub(crate) fn parse_job(body: String) -> Result<Job, StoreError> {
    serde_json::from_str(&body).map_err(|e| db_error(format!("a stored job is unreadable: {e}")))
}

/// A write waiting for its batch, in the order it was made.
pub(crate) enum Write {
    Job {
        id: JobId,
        state: State,
        builder: String,
        /// Claims take higher first (a shared queue's column).
        priority: i32,
        /// Its concurrency group and how many of it may run (columns too).
        group: Option<String>,
        max_running: u32,
        /// Its project (a shared store's column).
        project: Option<String>,
        /// When it was submitted, and its own queue TTL: a shared queue's
        /// claims skip a job past its TTL.
        created_at: DateTime<Utc>,
        queue_ttl_secs: Option<u64>,
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
        line: LogLine,
        cap: usize,
    },
    /// A document of a job, by name.
    Record {
        id: JobId,
        name: String,
        body: String,
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
                priority: job.priority,
                group: job.group.clone(),
                max_running: job.max_running,
                project: job.project.clone(),
                created_at: job.created_at,
                queue_ttl_secs: job.queue_ttl_secs,
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
pub(crate) fn acknowledge(batch: Vec<Write>, results: Vec<Result<(), StoreError>>) {
    for (write, result) in batch.into_iter().zip(results) {
        if let Write::Job { done, .. } = write {
            let _ = done.send(result);
        }
    }
}

pub(crate) fn db_error(e: impl Into<DatabaseError>) -> StoreError {
    StoreError::Database(e.into())
}
