//! A run's end: recorded in the table once, then stored durably (retried
//! through a short database outage) before its waiters hear of it.

use chrono::Utc;
use std::sync::Arc;

use super::Inner;
use super::background::IDLE_POLL;
use crate::job::{Job, JobId, Outcome};
use crate::store::StoreError;

impl Inner {
    /// Ends live job `id` with `outcome` and stores it.
    pub(super) async fn record(self: &Arc<Self>, id: &JobId, outcome: Outcome) {
        let ended = {
            let mut table = self.lock();
            let Some(entry) = table.jobs.get_mut(id) else {
                return;
            };
            let state = outcome.state();
            let error = outcome.error();
            entry.job.steps = entry.log.steps();
            if let Err(e) = entry.job.finish(outcome, Utc::now()) {
                tracing::error!(job = %id, "dropping outcome: {e}");
                return;
            }
            entry.cancel = None;
            entry
                .log
                .push(&format!("[helix] job {}", entry.job.summary()));
            tracing::info!(job = %id, %state, error = error.as_deref().unwrap_or(""), "job ended");
            entry.job.clone()
        };
        // In its own task, so the end is stored even if this run is
        // dropped meanwhile.
        let inner = self.clone();
        let _ = tokio::spawn(async move { inner.settle(ended).await }).await;
    }

    /// Stores a job that has just ended; once that is durable, drops it
    /// from the table and tells its waiters (it is read from the store from
    /// then on). When another host could take the job over, a failed write
    /// is retried for as long as a lease lasts (the heartbeat keeps renewing
    /// it meanwhile), so a short database outage does not cost the job a
    /// second run. If the store still fails, the job stays stored as it last
    /// was (running), so recovery runs it again: its end is lost, the job
    /// is not.
    async fn settle(&self, job: Job) {
        let mut stored = self.config.store.update(&job).await;
        if let Some(lease) = self.config.queue.lease() {
            let give_up = tokio::time::Instant::now() + lease;
            while matches!(stored, Err(StoreError::Database(_)))
                && tokio::time::Instant::now() < give_up
            {
                tokio::time::sleep(IDLE_POLL).await;
                stored = self.config.store.update(&job).await;
            }
        }
        if let Err(e) = stored {
            tracing::error!(job = %job.id, "job end not stored: {e}");
        }
        self.counts().ended(&job);
        self.lock().remove_ended(&job.id);
        self.config.queue.ended(&job.id);
    }
}
