//! The queue: where accepted jobs wait for a worker, which host runs which,
//! and what happens to a run whose host went away.
//!
//! [`JobQueue`] has two implementations: [`LocalQueue`], one host's queue
//! in memory over its SQLite store, and the PostgreSQL store, a queue
//! several hosts share with a lease per running job. The queue only stores
//! and hands out; the lifecycle decisions (a queued job ends cancelled, a
//! lost run is queued again or failed, the log lines that say so) are the
//! service's, made once for both.

mod local;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::{JobStore, StoreCall, StoreError, StoredJob};
use helix_core::job::{Job, JobId, TransitionError};
use helix_core::log::LogLine;

pub use local::LocalQueue;

/// The lifecycle's step from queued to running, applied by a claim.
pub type Start = dyn Fn(&mut Job) -> Result<(), TransitionError> + Send + Sync;

/// Where accepted jobs wait, and who runs them.
pub trait JobQueue: Send + Sync + 'static {
    /// This host's name when other hosts share the queue.
    fn host(&self) -> Option<&str>;

    /// How long a job this host claimed stays its own without a heartbeat;
    /// `None` when no other host could take a job over.
    fn lease(&self) -> Option<Duration>;

    /// Stores a newly accepted, queued job and queues it; resolves once
    /// that is durable. [`StoreError::Duplicate`](crate::StoreError)
    /// when the id is taken.
    fn enqueue<'a>(&'a self, job: &'a Job) -> StoreCall<'a, ()>;

    /// Claims the next queued job `rules` allow (see [`ClaimRules`] for
    /// the order). `start` makes it running, and the job is stored as
    /// `start` left it in the same write as the claim. Returns it with its
    /// log so far; `None` when no job may start.
    fn claim<'a>(
        &'a self,
        rules: &'a ClaimRules<'a>,
        start: &'a Start,
    ) -> StoreCall<'a, Option<StoredJob>>;

    /// Tells the queue that job `id`, which this host claimed, no longer
    /// runs here: its end is stored (or it went back to the queue).
    fn ended(&self, id: &JobId);

    /// Stores `ended` in place of queued job `ended.id` if that job is
    /// still queued (it ended before it started), and `line` in its log,
    /// both durable when it returns; `false` when a worker claimed it, or
    /// it ended, meanwhile.
    fn withdraw<'a>(&'a self, ended: &'a Job, line: &'a str) -> StoreCall<'a, bool>;

    /// Asks the host running job `id` to cancel it for `reason`; `false`
    /// when no other host runs it.
    fn ask_cancel<'a>(&'a self, id: &'a str, reason: &'a str) -> StoreCall<'a, bool>;

    /// Running jobs whose host is gone: every other host's whose lease ran
    /// out, and with `own_too` this host's own (when it starts or stops,
    /// and any run of its own is a leftover).
    fn lost_runs(&self, own_too: bool) -> StoreCall<'_, Vec<LostRun>>;

    /// Stores `recovered` (queued again, or ended) in place of `lost`,
    /// and `line` in its log, both durable before a worker can claim it,
    /// unless someone renewed or recovered that run meanwhile; queued
    /// again, it waits for a worker. `false` when someone did.
    fn replace_lost<'a>(
        &'a self,
        lost: &'a LostRun,
        recovered: &'a Job,
        line: &'a str,
    ) -> StoreCall<'a, bool>;

    /// Renews this host's leases on `running`, the jobs it still runs.
    fn heartbeat<'a>(&'a self, running: &'a [JobId]) -> StoreCall<'a, Heartbeat>;

    /// How many jobs wait, on every host.
    fn depth(&self) -> StoreCall<'_, usize>;

    /// How many jobs of project `project` wait, on every host.
    fn depth_of<'a>(&'a self, project: &'a str) -> StoreCall<'a, usize>;

    /// The waiting jobs, on every host, that have waited past their
    /// queue TTL (their own, else `default_ttl`) at `now`, oldest first.
    fn overdue(&self, default_ttl: Option<Duration>, now: DateTime<Utc>)
    -> StoreCall<'_, Vec<Job>>;

    /// Records that this host starts another attempt of `job`, which it
    /// runs (`next` is the job with the attempt counted); false when the
    /// host no longer holds the job.
    fn next_attempt<'a>(&'a self, job: &'a Job, next: &'a Job) -> StoreCall<'a, bool>;

    /// News: jobs queued, cancellations asked for, jobs changed.
    fn notices(&self) -> broadcast::Receiver<Notice>;
}

/// Which queued job a free worker claims, the same on both queues.
///
/// Fair sharing between projects: the worker takes from the project with
/// the fewest jobs running (on every host of a shared queue; the jobs of
/// no project count as one more project); among projects equally busy,
/// and within a project, the highest effective priority
/// ([`helix_core::job::effective_priority`]) first, the oldest among
/// equals. Never a job whose group or project is at its `max_running`,
/// one still in its retry backoff, or one past its queue TTL (the TTL
/// sweep ends those).
#[derive(Debug, Clone, Copy)]
pub struct ClaimRules<'a> {
    /// The builders this host has; a shared queue hands out only their
    /// jobs (a queue no other host shares hands out every job: no one
    /// else could run it).
    pub builders: &'a [String],
    /// Most jobs of each project that may run at once, on every host; a
    /// project not named has no such limit.
    pub max_running: &'a BTreeMap<String, u32>,
    /// The queue TTL of jobs that set none; `None`: no limit.
    pub default_ttl: Option<Duration>,
}

/// What a claimed job's log continues: the lines of its earlier runs
/// (only a job that ran before has any).
pub(crate) async fn earlier_log(
    store: &dyn JobStore,
    job: &Job,
) -> Result<Vec<LogLine>, StoreError> {
    match job.attempts {
        0 | 1 => Ok(Vec::new()),
        _ => store.log(job.id.as_str()).await,
    }
}

/// A running job whose host is gone, as the queue held it.
#[derive(Debug, Clone)]
pub struct LostRun {
    pub job: Job,
    /// The host that ran it, in a shared queue.
    pub owner: Option<String>,
}

/// What a heartbeat found.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// Jobs of those asked about that this host still holds.
    pub held: Vec<JobId>,
    /// Held jobs someone asked to cancel, with the reason given.
    pub cancel: Vec<(JobId, String)>,
}

/// What a queue announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// New jobs are queued (or may be: sent after a lost connection too).
    Queued,
    /// Someone asked for job `id` to be cancelled.
    Cancel { id: String, reason: String },
    /// Job `id`'s state or log changed.
    Changed(String),
}
