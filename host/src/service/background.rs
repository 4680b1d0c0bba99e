//! The service's tasks: the workers, and those that keep this host's
//! leases, pass the queue's news on, and relay jobs that are not running
//! here to the callers following them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use super::Inner;
use crate::job::{Job, JobId, Outcome, State};
use crate::log::JobLog;
use crate::queue::{ClaimRules, Notice};

/// How long an idle worker, or a task waiting for a job that is not
/// running here, waits for news before looking anyway (news can be lost,
/// for example while the database connection is down).
pub(super) const IDLE_POLL: Duration = Duration::from_secs(1);

/// A worker: claims jobs while there are any, runs each to its end, and
/// otherwise waits for news of work (or polls). Exits when the service
/// stops.
pub(super) async fn worker(inner: Arc<Inner>) {
    let start = |job: &mut Job| job.start(chrono::Utc::now());
    while !inner.stopping.load(Ordering::SeqCst) {
        // Jobs for builders this host lacks are left to hosts that have
        // them; asked each time, as a reload may change them.
        let builders: Vec<String> = inner
            .runtime()
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        let quotas = inner.projects().quotas;
        let rules = ClaimRules {
            builders: &builders,
            max_running: &quotas.max_running,
            default_ttl: inner.config.queue_ttl,
        };
        // Registered before looking, so news arriving meanwhile is kept.
        let news = inner.work.notified();
        match inner.config.queue.claim(&rules, &start).await {
            Ok(Some(stored)) => {
                let claimed = inner.adopt(stored);
                let span = tracing::info_span!("job", id = %claimed.job.id, builder = %claimed.job.builder);
                inner.run(claimed).instrument(span).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot claim work from the queue: {e}"),
        }
        let _ = tokio::time::timeout(IDLE_POLL, news).await;
    }
}

/// What a periodic task wants after a round.
pub(super) enum Next {
    /// The next round after the period.
    Wait,
    /// Another round at once: there is more to do.
    Now,
}

/// Runs `task` at once and then every `period` (at once again when it
/// says [`Next::Now`]) for as long as the service lives.
pub(super) async fn every(
    period: Duration,
    inner: Weak<Inner>,
    mut task: impl AsyncFnMut(&Inner) -> Next,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Next::Now = task(&inner).await {
            tick.reset_immediately();
        }
    }
}

/// How often slots' managed engines are checked for idleness.
pub(super) const ENGINE_IDLE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Stops the managed engines idle past their builder's `engine_idle_secs`.
pub(super) async fn stop_idle_engines(inner: &Inner) -> Next {
    inner.config.cache.stop_idle_engines().await;
    Next::Wait
}

/// How often waiting jobs are checked against their queue TTL.
pub(super) const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// Ends `expired` every waiting job older than its queue TTL. On a shared
/// queue every host does it; the store lets one of them end each job.
pub(super) async fn expire_waiting(inner: &Inner) -> Next {
    let now = chrono::Utc::now();
    let default_ttl = inner.config.queue_ttl;
    let overdue = match inner.config.queue.overdue(default_ttl, now).await {
        Ok(overdue) => overdue,
        Err(e) => {
            tracing::warn!("cannot look for expired jobs: {e}");
            return Next::Wait;
        }
    };
    for job in overdue {
        let ttl = job.queue_ttl(default_ttl).unwrap_or_default();
        let waited = (now - job.created_at).to_std().unwrap_or_default();
        let mut ended = job;
        let message = format!(
            "waited {} in the queue, past its queue TTL of {} (queue_ttl_secs): no worker \
             for builder '{}' was free in time; submit it again, or give it a longer TTL",
            human_duration(waited),
            human_duration(ttl),
            ended.builder
        );
        if ended.finish(Outcome::Expired { message }, now).is_err() {
            continue;
        }
        let line = format!("[helix] {}", ended.error.as_deref().unwrap_or("expired"));
        match inner.config.queue.withdraw(&ended, &line).await {
            Ok(true) => {
                tracing::info!(job = %ended.id, "queued job expired");
                inner.counts().ended(&ended);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(job = %ended.id, "cannot expire a queued job: {e}"),
        }
    }
    Next::Wait
}

/// How often the store is asked for notifications that are due.
pub(super) const NOTIFY_EVERY: Duration = Duration::from_secs(1);

/// Notifications taken from the store at once, and sent at once.
const NOTIFY_BATCH: usize = 16;

/// How long notifications taken from the store are this host's to send
/// (it takes them again after that if it died or hung meanwhile).
const NOTIFY_LEASE: Duration = Duration::from_secs(120);

/// Sends the notifications owed for ended jobs (whichever host ended
/// them) that are due, and records in the store how each went; what a
/// process had not sent when it stopped is sent by the next.
pub(super) async fn send_notifications(inner: &Inner) -> Next {
    let store = &inner.config.store;
    let owed = match store.owed_notifications(NOTIFY_LEASE, NOTIFY_BATCH).await {
        Ok(owed) => owed,
        Err(e) => {
            tracing::warn!("cannot read the notifications owed: {e}");
            return Next::Wait;
        }
    };
    let sends = owed.iter().map(|owed| async {
        let delivery = inner.config.notifications.deliver(owed).await;
        let id = owed.job.id.as_str();
        if let Err(e) = store
            .settle_notification(id, &delivery.delivered, delivery.retry_in)
            .await
        {
            tracing::warn!(job = %id, "cannot record a notification's delivery: {e}");
        }
    });
    futures_util::future::join_all(sends).await;
    match owed.len() == NOTIFY_BATCH {
        true => Next::Now,
        false => Next::Wait,
    }
}

/// `d` for a person: `45s`, `3m 20s`, `2h 5m`.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// How often ended jobs past the retention are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Deletes the ended jobs the retention no longer keeps.
pub(super) async fn prune_ended(inner: &Inner) -> Next {
    let retention = inner.config.retention;
    let cutoff = retention.max_age.map(|age| chrono::Utc::now() - age);
    match inner.config.store.prune(cutoff, retention.keep).await {
        Ok(0) => {}
        Ok(pruned) => {
            tracing::info!("deleted {pruned} ended jobs past the retention, with their logs")
        }
        Err(e) => tracing::warn!("cannot delete ended jobs past the retention: {e}"),
    }
    Next::Wait
}

/// Renews this host's leases (run every third of a lease), stops the
/// jobs whose lease it lost or that someone asked to cancel, and recovers
/// jobs of hosts that stopped renewing theirs.
pub(super) async fn keep_leases(inner: &Inner) -> Next {
    // Every live job: running, or ended with its end not yet stored.
    let held: Vec<JobId> = inner.lock().jobs.keys().cloned().collect();
    match inner.config.queue.heartbeat(&held).await {
        Ok(beat) => {
            let table = inner.lock();
            for id in &held {
                if !beat.held.contains(id) {
                    table.cancel(
                        id.as_str(),
                        "this host lost its lease on the job (it could not renew it in time); \
                         it is queued again for another run",
                    );
                } else if let Some((_, reason)) = beat.cancel.iter().find(|(j, _)| j == id) {
                    table.cancel(id.as_str(), reason);
                }
            }
        }
        Err(e) => tracing::warn!("cannot renew this host's leases: {e}"),
    }
    if let Err(e) = inner.recover_lost(false).await {
        tracing::warn!("cannot look for jobs of lost hosts: {e}");
    }
    Next::Wait
}

/// Passes the queue's news on: wakes idle workers when jobs are queued,
/// stops a job running here when someone asked for it to be cancelled.
pub(super) async fn relay_notices(inner: Weak<Inner>, mut notices: broadcast::Receiver<Notice>) {
    loop {
        let notice = notices.recv().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match notice {
            Ok(Notice::Queued) | Err(broadcast::error::RecvError::Lagged(_)) => {
                inner.work.notify_waiters();
            }
            Ok(Notice::Cancel { id, reason }) => inner.lock().cancel(&id, &reason),
            Ok(Notice::Changed(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Follows a job that is not running here into `log` and `state`, from
/// its `seen`-th line on, until it ends or nobody follows any more: from
/// the store while it waits or runs elsewhere, from its live log once this
/// host claims it.
pub(super) async fn relay(
    inner: Weak<Inner>,
    id: JobId,
    log: Arc<JobLog>,
    state: watch::Sender<State>,
    mut seen: usize,
) {
    let Some(mut changes) = inner.upgrade().map(|i| i.changes()) else {
        return;
    };
    while !state.is_closed() {
        let Some(service) = inner.upgrade() else {
            return;
        };
        if let Some((live, states)) =
            service.live(id.as_str(), |e| (e.log.clone(), e.state.subscribe()))
        {
            drop(service);
            return relay_live(&live, states, &log, &state, seen as u64).await;
        }
        let read = async {
            let job = service.stored(id.as_str()).await.ok()?;
            let lines = service.stored_log(id.as_str()).await.ok()?;
            Some((job, lines))
        };
        if let Some((job, lines)) = read.await {
            let count = lines.len();
            for line in lines.into_iter().skip(seen) {
                log.push_line(line);
            }
            seen = seen.max(count);
            state.send_if_modified(|current| std::mem::replace(current, job.state) != job.state);
            if job.state.is_terminal() {
                return;
            }
        }
        drop(service);
        changes.next(id.as_str()).await;
    }
}

/// Copies a live job's lines after the first `seen` and its state changes
/// until it ends.
async fn relay_live(
    live: &JobLog,
    mut states: watch::Receiver<State>,
    log: &JobLog,
    state: &watch::Sender<State>,
    mut seen: u64,
) {
    let mut pushed = live.subscribe();
    loop {
        // The state before the lines, so no line written before the end is
        // missed.
        let current = *states.borrow_and_update();
        let (lines, next) = live.since(seen);
        seen = next;
        for line in lines {
            log.push_line(line);
        }
        state.send_if_modified(|s| std::mem::replace(s, current) != current);
        if current.is_terminal() || state.is_closed() {
            return;
        }
        tokio::select! {
            changed = pushed.changed() => if changed.is_err() { return },
            changed = states.changed() => if changed.is_err() { return },
        }
    }
}

/// News of changes to jobs that are not running here.
pub(super) struct Changes {
    notices: broadcast::Receiver<Notice>,
    /// Ids of jobs a worker of this host claimed.
    adopted: broadcast::Receiver<JobId>,
}

impl Changes {
    pub(super) fn new(
        notices: broadcast::Receiver<Notice>,
        adopted: broadcast::Receiver<JobId>,
    ) -> Self {
        Changes { notices, adopted }
    }

    /// Returns when job `id` may have changed: the queue said so, a worker
    /// here claimed it, or `IDLE_POLL` passed without a word.
    pub(super) async fn next(&mut self, id: &str) {
        let adopted = async {
            loop {
                match self.adopted.recv().await {
                    Ok(adopted) if adopted.as_str() == id => return,
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                    Ok(_) => {}
                }
            }
        };
        let changed = async {
            loop {
                match self.notices.recv().await {
                    Ok(Notice::Changed(changed)) if changed == id => return,
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(IDLE_POLL, async {
            tokio::select! {
                () = changed => {}
                () = adopted => {}
            }
        })
        .await;
    }
}
