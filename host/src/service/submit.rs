//! Accepting a job: validated, within capacity, durable once acknowledged; a job that cancels its group's older runs does so here.

use std::sync::Arc;

use chrono::Utc;

use super::{Service, ServiceError};
use crate::access::Project;
use crate::job::{Job, JobRequest, SubmitPolicy};
use crate::store::{DatabaseError, StoreError};

impl Service {
    /// Validates `request`, stores it and queues it. On any error nothing
    /// is stored; once it returns the job is durable.
    pub async fn submit(&self, request: JobRequest) -> Result<Job, ServiceError> {
        self.submit_for(request, None).await
    }

    /// [`Service::submit`] for `project`: the job is that project's and
    /// must meet its rules — its repositories, images, builders, and the
    /// secrets it may use (refusals name only what the project may use).
    /// `None`: a job of no project, which may name any secret the server
    /// defines.
    pub async fn submit_for(
        &self,
        request: JobRequest,
        project: Option<&Arc<Project>>,
    ) -> Result<Job, ServiceError> {
        if self.is_stopping() {
            return Err(ServiceError::ShuttingDown);
        }
        self.data_disk_has_room()?;
        let policy = self.inner.policy();
        let job = match project {
            None => Job::from_request(request, &policy, Utc::now())?,
            Some(project) => {
                let own = SubmitPolicy {
                    project: Some(project.clone()),
                    ..(*policy).clone()
                };
                Job::from_request(request, &own, Utc::now())?
            }
        };
        let capacity = self.inner.config.queue_capacity;
        let queue = &self.inner.config.queue;
        let waiting = queue.depth().await?;
        let quotas = self.inner.projects().quotas;
        let project_quota = match job.project.as_deref() {
            Some(name) => match quotas.max_queued.get(name) {
                Some(most) => Some((name, *most, queue.depth_of(name).await?)),
                None => None,
            },
            None => None,
        };
        {
            let mut table = self.inner.lock();
            if table.jobs.contains_key(&job.id) || table.pending.contains_key(&job.id) {
                return Err(ServiceError::Duplicate(job.id));
            }
            if waiting + table.pending.len() >= capacity {
                return Err(ServiceError::QueueFull { capacity });
            }
            if let Some((name, most, waiting)) = project_quota {
                let pending = table
                    .pending
                    .values()
                    .filter(|p| p.as_deref() == Some(name))
                    .count();
                if waiting + pending >= most {
                    return Err(ServiceError::ProjectQueueFull {
                        project: name.to_string(),
                        max_queued: most,
                    });
                }
            }
            table.pending.insert(job.id.clone(), job.project.clone());
        }
        // Finished in its own task: once the job is on its way into the
        // queue, it must end up queued (or refused) even if this caller
        // goes away.
        let inner = self.inner.clone();
        let job = tokio::spawn(async move {
            let queued = inner.config.queue.enqueue(&job).await;
            inner.lock().pending.remove(&job.id);
            queued?;
            tracing::debug!(job = %job.id, builder = %job.builder, "job queued");
            Ok::<_, ServiceError>(job)
        })
        .await
        .map_err(|e| {
            ServiceError::Store(StoreError::Database(DatabaseError::with_context(
                "storing a job was interrupted",
                e,
            )))
        })??;
        if job.cancel_in_progress {
            self.supersede(&job).await;
        }
        Ok(job)
    }

    /// Cancels the queued and running jobs of `newer`'s group submitted
    /// before it: a newer push supersedes their builds.
    async fn supersede(&self, newer: &Job) {
        let Some(group) = &newer.group else {
            return;
        };
        let older = match self.inner.config.store.unfinished_in_group(group).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(job = %newer.id, "cannot find the jobs it supersedes: {e}");
                return;
            }
        };
        let reason = format!("superseded by job {} in group '{group}'", newer.id);
        // Groups are per project: a push never supersedes another
        // project's builds.
        for job in older.iter().filter(|j| {
            j.id != newer.id && j.created_at <= newer.created_at && j.project == newer.project
        }) {
            // One that ended meanwhile needs nothing.
            let _ = self.cancel_because(job.id.as_str(), &reason).await;
        }
    }

    /// Refuses a submission while the data disk (where jobs' workspaces,
    /// logs and the SQLite store live) has less than 16 MiB or 1% free: a
    /// job accepted then would fail writing its first files. Asked anew
    /// each time, so the server takes jobs again once space returns.
    fn data_disk_has_room(&self) -> Result<(), ServiceError> {
        let dir = &self.inner.config.workspace_dir;
        match crate::quota::space(dir) {
            Some((free, total)) if free < (total / 100).max(16 * 1024 * 1024) => {
                tracing::warn!(
                    dir = %dir.display(),
                    free_mib = free / (1024 * 1024),
                    "data disk full: submissions refused until space is freed"
                );
                Err(ServiceError::DataDiskFull)
            }
            _ => Ok(()),
        }
    }
}
