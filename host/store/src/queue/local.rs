//! One host's queue: the queued jobs in memory (by project and priority,
//! oldest first in each), every change written through to the host's own
//! store, so a restart finds them again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::broadcast;

use super::{ClaimRules, Heartbeat, JobQueue, LostRun, Notice, Start};
use crate::{JobStore, StoreCall, StoreError, StoredJob};
use helix_core::job::{Job, JobId, State, effective_priority};
use helix_core::log::LogLine;

/// A queue only this host uses.
pub struct LocalQueue {
    store: Arc<dyn JobStore>,
    /// Queued jobs.
    waiting: Mutex<Waiting>,
    /// The jobs this queue handed out that still run: what counts against
    /// their groups' and projects' places.
    running: Mutex<HashMap<JobId, Place>>,
    /// Runs the store showed running when the queue opened: an earlier
    /// process died running them.
    leftovers: Mutex<Vec<Job>>,
    notices: broadcast::Sender<Notice>,
}

/// The queued jobs by project and priority, each bucket oldest first.
/// Within a bucket the oldest job that may start always comes first (it
/// has waited longest, so its aged priority is the highest, and it is the
/// oldest), so a claim looks at the head of each bucket, not at every
/// waiting job: with thousands waiting, a scan of them all under the lock
/// submissions take was most of a busy server's CPU.
#[derive(Default)]
struct Waiting {
    buckets: BTreeMap<(Option<String>, i32), VecDeque<Job>>,
    len: usize,
}

impl Waiting {
    /// Adds `job` in submission order among its bucket's.
    fn push(&mut self, job: Job) {
        let bucket = self
            .buckets
            .entry((job.project.clone(), job.priority))
            .or_default();
        let at = bucket
            .iter()
            .rposition(|waiting| waiting.created_at <= job.created_at)
            .map_or(0, |before| before + 1);
        bucket.insert(at, job);
        self.len += 1;
    }

    /// Removes job `at` of bucket `key`.
    fn take(&mut self, key: &(Option<String>, i32), at: usize) -> Option<Job> {
        let bucket = self.buckets.get_mut(key)?;
        let job = bucket.remove(at)?;
        if bucket.is_empty() {
            self.buckets.remove(key);
        }
        self.len -= 1;
        Some(job)
    }

    /// Removes job `id`, wherever it waits.
    fn remove(&mut self, id: &JobId) -> Option<Job> {
        let (key, at) = self.buckets.iter().find_map(|(key, bucket)| {
            let at = bucket.iter().position(|job| job.id == *id)?;
            Some((key.clone(), at))
        })?;
        self.take(&key, at)
    }

    fn iter(&self) -> impl Iterator<Item = &Job> {
        self.buckets.values().flatten()
    }
}

/// Where a running job counts: its group and its project.
struct Place {
    group: Option<String>,
    project: Option<String>,
}

impl LocalQueue {
    /// The queue as `store` left it: its queued jobs waiting in the order
    /// they were submitted, its running ones reported as lost runs.
    pub async fn open(store: Arc<dyn JobStore>) -> Result<Self, StoreError> {
        let mut waiting = Waiting::default();
        let mut leftovers = Vec::new();
        for stored in store.load_unfinished().await? {
            match stored.job.state {
                State::Running => leftovers.push(stored.job),
                _ => waiting.push(stored.job),
            }
        }
        if waiting.len > 0 {
            tracing::info!(jobs = waiting.len, "queued jobs restored from the store");
        }
        Ok(LocalQueue {
            store,
            waiting: Mutex::new(waiting),
            running: Mutex::default(),
            leftovers: Mutex::new(leftovers),
            notices: broadcast::channel(1024).0,
        })
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        // Every change is one push or removal: a panic cannot leave the
        // queue half-changed.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running(&self) -> MutexGuard<'_, HashMap<JobId, Place>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the waiting job `rules` say runs next and counts it
    /// running, all under one lock so two claims cannot both take a
    /// group's or a project's last place.
    fn take_first(&self, rules: &ClaimRules<'_>) -> Option<Job> {
        let now = chrono::Utc::now();
        let mut running = self.running();
        let mut in_group: HashMap<&str, usize> = HashMap::new();
        // A few entries at most (one per project running here): a scan
        // is cheaper than hashing once per waiting job.
        let mut in_project: Vec<(Option<&str>, usize)> = Vec::new();
        for place in running.values() {
            if let Some(group) = &place.group {
                *in_group.entry(group).or_default() += 1;
            }
            let project = place.project.as_deref();
            match in_project.iter_mut().find(|(p, _)| *p == project) {
                Some((_, count)) => *count += 1,
                None => in_project.push((project, 1)),
            }
        }
        let may_start = |job: &Job| {
            let group_has_room = job
                .group
                .as_deref()
                .is_none_or(|g| in_group.get(g).copied().unwrap_or(0) < job.max_running as usize);
            group_has_room
                && job.not_before.is_none_or(|at| at <= now)
                && !job.is_overdue(rules.default_ttl, now)
        };
        let mut waiting = self.waiting();
        let mut best = None;
        for ((project, _), bucket) in &waiting.buckets {
            let project_running = in_project
                .iter()
                .find(|(p, _)| *p == project.as_deref())
                .map_or(0, |(_, count)| *count);
            let project_has_room = project
                .as_ref()
                .and_then(|p| rules.max_running.get(p))
                .is_none_or(|most| project_running < *most as usize);
            if !project_has_room {
                continue;
            }
            let Some((at, job)) = bucket.iter().enumerate().find(|(_, job)| may_start(job)) else {
                continue;
            };
            let waited = (now - job.created_at).num_seconds();
            let order = (
                std::cmp::Reverse(project_running),
                effective_priority(job.priority, waited),
                std::cmp::Reverse(job.created_at),
            );
            if best.as_ref().is_none_or(|(_, _, better)| order > *better) {
                best = Some(((project.clone(), job.priority), at, order));
            }
        }
        let (key, at, _) = best?;
        let job = waiting.take(&key, at)?;
        running.insert(
            job.id.clone(),
            Place {
                group: job.group.clone(),
                project: job.project.clone(),
            },
        );
        Some(job)
    }

    fn announce(&self, notice: Notice) {
        // Nobody listening is fine.
        let _ = self.notices.send(notice);
    }
}

impl JobQueue for LocalQueue {
    fn host(&self) -> Option<&str> {
        None
    }

    fn lease(&self) -> Option<Duration> {
        None
    }

    fn enqueue<'a>(&'a self, job: &'a Job) -> StoreCall<'a, ()> {
        async move {
            self.store.insert(job).await?;
            self.waiting().push(job.clone());
            self.announce(Notice::Queued);
            Ok(())
        }
        .boxed()
    }

    fn claim<'a>(
        &'a self,
        rules: &'a ClaimRules<'a>,
        start: &'a Start,
    ) -> StoreCall<'a, Option<StoredJob>> {
        async move {
            let Some(mut job) = self.take_first(rules) else {
                return Ok(None);
            };
            start(&mut job).map_err(crate::db_error)?;
            // Not waited for: writes are applied in order, and a host that
            // dies before this one lands finds the job queued, as it was.
            let commit = self.store.update(&job);
            let id = job.id.clone();
            tokio::spawn(async move {
                if let Err(e) = commit.await {
                    tracing::error!(job = %id, "job state not stored: {e}");
                }
            });
            let log = super::earlier_log(self.store.as_ref(), &job).await?;
            Ok(Some(StoredJob { job, log }))
        }
        .boxed()
    }

    fn ended(&self, id: &JobId) {
        self.running().remove(id);
    }

    fn withdraw<'a>(&'a self, ended: &'a Job, line: &'a str) -> StoreCall<'a, bool> {
        async move {
            let taken = self.waiting().remove(&ended.id);
            if taken.is_none() {
                return Ok(false);
            }
            // Writes are applied in order: the update's commit covers both.
            self.store
                .append_log(&ended.id, &LogLine::new(line), usize::MAX);
            self.store.update(ended).await?;
            self.announce(Notice::Changed(ended.id.to_string()));
            Ok(true)
        }
        .boxed()
    }

    fn ask_cancel<'a>(&'a self, _id: &'a str, _reason: &'a str) -> StoreCall<'a, bool> {
        // Every run of this queue's jobs is this host's own.
        std::future::ready(Ok(false)).boxed()
    }

    fn lost_runs(&self, own_too: bool) -> StoreCall<'_, Vec<LostRun>> {
        let lost = match own_too {
            true => std::mem::take(&mut *self.leftovers.lock().unwrap_or_else(|e| e.into_inner())),
            false => Vec::new(),
        };
        let lost = lost
            .into_iter()
            .map(|job| LostRun { job, owner: None })
            .collect();
        std::future::ready(Ok(lost)).boxed()
    }

    fn replace_lost<'a>(
        &'a self,
        _lost: &'a LostRun,
        recovered: &'a Job,
        line: &'a str,
    ) -> StoreCall<'a, bool> {
        async move {
            self.store
                .append_log(&recovered.id, &LogLine::new(line), usize::MAX);
            self.store.update(recovered).await?;
            if recovered.state == State::Queued {
                // In submission order among the waiting jobs.
                self.waiting().push(recovered.clone());
                self.announce(Notice::Queued);
            }
            Ok(true)
        }
        .boxed()
    }

    fn heartbeat<'a>(&'a self, running: &'a [JobId]) -> StoreCall<'a, Heartbeat> {
        // No lease to lose: everything this host runs stays its own.
        let beat = Heartbeat {
            held: running.to_vec(),
            cancel: Vec::new(),
        };
        std::future::ready(Ok(beat)).boxed()
    }

    fn depth(&self) -> StoreCall<'_, usize> {
        std::future::ready(Ok(self.waiting().len)).boxed()
    }

    fn depth_of<'a>(&'a self, project: &'a str) -> StoreCall<'a, usize> {
        let waiting = self.waiting();
        let count = waiting
            .iter()
            .filter(|job| job.project.as_deref() == Some(project))
            .count();
        std::future::ready(Ok(count)).boxed()
    }

    fn next_attempt<'a>(&'a self, _job: &'a Job, next: &'a Job) -> StoreCall<'a, bool> {
        async move {
            self.store.update(next).await?;
            Ok(true)
        }
        .boxed()
    }

    fn overdue(
        &self,
        default_ttl: Option<Duration>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreCall<'_, Vec<Job>> {
        let overdue = self
            .waiting()
            .iter()
            .filter(|job| job.is_overdue(default_ttl, now))
            .cloned()
            .collect();
        std::future::ready(Ok(overdue)).boxed()
    }

    fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}
