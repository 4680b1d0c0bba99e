//! Reading jobs: snapshots, pages, logs, audit trails, provenance and counts, from the live table or the store, and waiting for a job to end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Metrics, Service, ServiceError, background};
use crate::audit::JobAudit;
use crate::job::{Job, State};
use crate::log::{JobLog, LogLine, Redactor};
use crate::provenance::Attestation;
use crate::provenance::sbom::JobSbom;
use crate::store::{DatabaseError, JobFilter, StoreError};

/// One page of [`Service::list_page`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl Service {
    /// A snapshot of job `id`; a queued one says what it waits for.
    pub async fn get(&self, id: &str) -> Result<Job, ServiceError> {
        if let Some(job) = self.inner.live(id, |entry| entry.job.clone()) {
            return Ok(job);
        }
        let mut job = self.inner.stored(id).await?;
        self.explain_waits(std::slice::from_mut(&mut job)).await?;
        Ok(job)
    }

    /// Job `id`'s audit trail: the calls of its ended runs.
    pub async fn audit(&self, id: &str) -> Result<JobAudit, ServiceError> {
        let runs = self
            .inner
            .config
            .store
            .records(id, crate::audit::RECORD_PREFIX)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
        JobAudit::from_runs(&runs).map_err(|e| {
            ServiceError::from(StoreError::Database(DatabaseError::with_context(
                format!("the audit trail of job '{id}' is unreadable"),
                e,
            )))
        })
    }

    /// Job `id`'s signed provenance, as attached to its image.
    pub async fn provenance(&self, id: &str) -> Result<Attestation, ServiceError> {
        self.attested(id, crate::provenance::RECORD, "provenance")
            .await
    }

    /// Job `id`'s signed SBOMs (one per platform), as attached to its
    /// image.
    pub async fn sbom(&self, id: &str) -> Result<JobSbom, ServiceError> {
        self.attested(id, crate::provenance::sbom::RECORD, "SBOM")
            .await
    }

    /// Job `id`'s record `name` (its `what`), or why it has none.
    async fn attested<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        name: &str,
        what: &str,
    ) -> Result<T, ServiceError> {
        let store = &self.inner.config.store;
        let records = store
            .records(id, name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
        if let Some(record) = records.first() {
            return serde_json::from_str(record).map_err(|e| {
                ServiceError::from(StoreError::Database(DatabaseError::with_context(
                    format!("the {what} of job '{id}' is unreadable"),
                    e,
                )))
            });
        }
        let job = self.get(id).await?;
        let simulated = self
            .inner
            .runtime()
            .builder(&job.builder)
            .is_some_and(|b| b.info().simulated);
        let reason = if simulated {
            format!(
                "builder '{}' is simulated: it builds no image, so there is nothing to attest",
                job.builder
            )
        } else if job.state != State::Succeeded {
            format!("it {} (only a build that succeeds is attested)", job.state)
        } else if name != crate::provenance::RECORD
            && store
                .records(id, crate::provenance::RECORD)
                .await?
                .is_some_and(|r| !r.is_empty())
        {
            format!("it was attested by a version of Helix that wrote no {what}")
        } else {
            "provenance was off (`provenance = false`) when it was built".to_string()
        };
        Err(ServiceError::NoProvenance {
            id: id.to_string(),
            reason,
        })
    }

    /// Up to `limit` jobs, newest first, only those `filter` lets
    /// through, starting after job `cursor` (the previous page's
    /// `next_cursor`).
    pub async fn list_page(
        &self,
        filter: &JobFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<JobPage, ServiceError> {
        let mut jobs = self
            .inner
            .config
            .store
            .page(filter, limit.saturating_add(1), cursor)
            .await?
            .ok_or_else(|| ServiceError::UnknownCursor(cursor.unwrap_or_default().into()))?;
        let more = jobs.len() > limit;
        jobs.truncate(limit);
        {
            // A live job's latest state may not be committed yet.
            let table = self.inner.lock();
            for job in &mut jobs {
                if let Some(entry) = table.jobs.get(&job.id) {
                    job.clone_from(&entry.job);
                }
            }
        }
        self.explain_waits(&mut jobs).await?;
        let next_cursor = more
            .then(|| jobs.last().map(|j| j.id.to_string()))
            .flatten();
        Ok(JobPage { jobs, next_cursor })
    }

    /// Every job, newest first.
    pub async fn list(&self) -> Result<Vec<Job>, ServiceError> {
        Ok(self
            .list_page(&JobFilter::default(), usize::MAX, None)
            .await?
            .jobs)
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
            // Queued, or running elsewhere: relay what changes.
            tokio::spawn(background::relay(
                Arc::downgrade(&self.inner),
                job.id,
                log.clone(),
                state,
                seen,
            ));
        }
        Ok((log, states))
    }

    /// Counts for `/metrics`, of every host sharing the store.
    pub async fn metrics(&self) -> Result<Metrics, ServiceError> {
        let jobs_by_state = self.inner.config.store.count_by_state().await?;
        let queue_depth = self.inner.config.queue.depth().await?;
        let table = self.inner.lock();
        Ok(Metrics {
            jobs_by_state,
            queue_depth,
            build_seconds: table.build_seconds.clone(),
            build_steps: table.build_steps.clone(),
            phase_seconds: table.phase_seconds.clone(),
            jobs: self.inner.counts().clone(),
            http: self.inner.http.snapshot(),
            process: super::metrics::ProcessStats::read(),
        })
    }

    /// Whether this host takes submissions now: not stopping, and its store
    /// answers a read (counting jobs by state reads the whole jobs table,
    /// so a damaged one is found).
    pub async fn ready(&self) -> Result<(), ServiceError> {
        if self.is_stopping() {
            return Err(ServiceError::ShuttingDown);
        }
        self.inner.config.store.count_by_state().await?;
        Ok(())
    }

    /// The job's log lines so far.
    pub async fn logs(&self, id: &str) -> Result<Vec<LogLine>, ServiceError> {
        if let Some(lines) = self.inner.live(id, |entry| entry.log.lines()) {
            return Ok(lines);
        }
        self.inner.stored(id).await?;
        self.inner.stored_log(id).await
    }

    /// Waits until job `id` ends or `timeout` passes, then returns its
    /// snapshot (terminal, or its current state at the timeout).
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Job, ServiceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.inner.changes();
        loop {
            if let Some(mut state) = self.inner.live(id, |entry| entry.state.subscribe()) {
                let _ =
                    tokio::time::timeout_at(deadline, state.wait_for(|s| s.is_terminal())).await;
                return self.get(id).await;
            }
            // Queued, finished, or running elsewhere: read the store until
            // it ends (or, claimed by this host meanwhile, becomes live).
            let job = self.inner.stored(id).await?;
            if job.state.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            let _ = tokio::time::timeout_at(deadline, changes.next(id)).await;
        }
    }

    /// Number of jobs waiting for a worker, on every host.
    pub async fn queue_depth(&self) -> Result<usize, ServiceError> {
        Ok(self.inner.config.queue.depth().await?)
    }
}
