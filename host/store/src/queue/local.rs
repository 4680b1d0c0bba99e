//! One host's queue: the queued jobs in memory, oldest first, every change
//! written through to the host's own store, so a restart finds them again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::broadcast;

use super::{Heartbeat, JobQueue, LostRun, Notice, Start};
use crate::{JobStore, Read, StoreError, StoredJob};
use helix_core::job::{Job, JobId, State, effective_priority};
use helix_core::log::LogLine;

/// A queue only this host uses.
pub struct LocalQueue {
    store: Arc<dyn JobStore>,
    /// Queued jobs, oldest first.
    waiting: Mutex<VecDeque<Job>>,
    /// Runs of concurrency groups this queue started (job and attempt),
    /// by group, until the store shows them over.
    running_in_group: Mutex<HashMap<String, Vec<(JobId, u32)>>>,
    /// Runs the store showed running when the queue opened: an earlier
    /// process died running them.
    leftovers: Mutex<Vec<Job>>,
    notices: broadcast::Sender<Notice>,
}

impl LocalQueue {
    /// The queue as `store` left it: its queued jobs waiting in the order
    /// they were submitted, its running ones reported as lost runs.
    pub async fn open(store: Arc<dyn JobStore>) -> Result<Self, StoreError> {
        let mut waiting = VecDeque::new();
        let mut leftovers = Vec::new();
        for stored in store.load_unfinished().await? {
            match stored.job.state {
                State::Running => leftovers.push(stored.job),
                _ => waiting.push_back(stored.job),
            }
        }
        if !waiting.is_empty() {
            tracing::info!(jobs = waiting.len(), "queued jobs restored from the store");
        }
        Ok(LocalQueue {
            store,
            waiting: Mutex::new(waiting),
            running_in_group: Mutex::default(),
            leftovers: Mutex::new(leftovers),
            notices: broadcast::channel(1024).0,
        })
    }

    fn waiting(&self) -> MutexGuard<'_, VecDeque<Job>> {
        // Every change is one push or removal: a panic cannot leave the
        // queue half-changed.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the grouped runs the store shows over: the job ended, or
    /// is queued again after that attempt (a claim's own write may not
    /// have landed yet, so a job queued at an earlier attempt still runs).
    async fn forget_ended_runs(&self) -> Result<(), StoreError> {
        let tracked: Vec<(JobId, u32)> = self
            .running_in_group
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect();
        let mut over = Vec::new();
        for (id, attempt) in tracked {
            let job = self.store.get(id.as_str()).await?;
            let done = job.is_none_or(|job| {
                job.state.is_terminal() || (job.state == State::Queued && job.attempts >= attempt)
            });
            if done {
                over.push(id);
            }
        }
        let mut running = self
            .running_in_group
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for runs in running.values_mut() {
            runs.retain(|(id, _)| !over.contains(id));
        }
        running.retain(|_, runs| !runs.is_empty());
        Ok(())
    }

    /// Removes the waiting job to run next — the highest effective
    /// priority, the oldest among equals, among those whose group has
    /// room — and counts it running in its group, all under one lock so
    /// two claims cannot both take a group's last place.
    fn take_first(&self) -> Option<Job> {
        let now = chrono::Utc::now();
        let mut running = self
            .running_in_group
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let has_room = |job: &Job| {
            job.group
                .as_ref()
                .is_none_or(|g| running.get(g).map_or(0, Vec::len) < job.max_running as usize)
        };
        let mut waiting = self.waiting();
        let at = waiting
            .iter()
            .enumerate()
            .filter(|(_, job)| has_room(job) && job.not_before.is_none_or(|at| at <= now))
            .max_by_key(|(at, job)| {
                let waited = (now - job.created_at).num_seconds();
                (
                    effective_priority(job.priority, waited),
                    std::cmp::Reverse(*at),
                )
            })
            .map(|(at, _)| at)?;
        let job = waiting.remove(at)?;
        if let Some(group) = &job.group {
            // Counted as the attempt the claim is about to start.
            running
                .entry(group.clone())
                .or_default()
                .push((job.id.clone(), job.attempts + 1));
        }
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

    fn enqueue<'a>(&'a self, job: &'a Job) -> Read<'a, ()> {
        async move {
            self.store.insert(job).await?;
            self.waiting().push_back(job.clone());
            self.announce(Notice::Queued);
            Ok(())
        }
        .boxed()
    }

    fn claim<'a>(
        &'a self,
        _builders: &'a [String],
        start: &'a Start,
    ) -> Read<'a, Option<StoredJob>> {
        async move {
            self.forget_ended_runs().await?;
            let Some(mut job) = self.take_first() else {
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

    fn withdraw<'a>(&'a self, ended: &'a Job, line: &'a str) -> Read<'a, bool> {
        async move {
            let taken = {
                let mut waiting = self.waiting();
                let at = waiting.iter().position(|job| job.id == ended.id);
                at.and_then(|at| waiting.remove(at))
            };
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

    fn ask_cancel<'a>(&'a self, _id: &'a str, _reason: &'a str) -> Read<'a, bool> {
        // Every run of this queue's jobs is this host's own.
        std::future::ready(Ok(false)).boxed()
    }

    fn lost_runs(&self, own_too: bool) -> Read<'_, Vec<LostRun>> {
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
    ) -> Read<'a, bool> {
        async move {
            self.store
                .append_log(&recovered.id, &LogLine::new(line), usize::MAX);
            self.store.update(recovered).await?;
            if recovered.state == State::Queued {
                // In submission order among the waiting jobs.
                let mut waiting = self.waiting();
                let at = waiting
                    .iter()
                    .position(|job| job.created_at > recovered.created_at)
                    .unwrap_or(waiting.len());
                waiting.insert(at, recovered.clone());
                drop(waiting);
                self.announce(Notice::Queued);
            }
            Ok(true)
        }
        .boxed()
    }

    fn heartbeat<'a>(&'a self, running: &'a [JobId]) -> Read<'a, Heartbeat> {
        // No lease to lose: everything this host runs stays its own.
        let beat = Heartbeat {
            held: running.to_vec(),
            cancel: Vec::new(),
        };
        std::future::ready(Ok(beat)).boxed()
    }

    fn depth(&self) -> Read<'_, usize> {
        std::future::ready(Ok(self.waiting().len())).boxed()
    }

    fn next_attempt<'a>(&'a self, _job: &'a Job, next: &'a Job) -> Read<'a, bool> {
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
    ) -> Read<'_, Vec<Job>> {
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
