//! Why queued jobs wait: worked out when they are read, from the jobs
//! running on every host, this host's workers, the groups' and projects'
//! limits and the builders loaded here (see [`crate::job::waiting_for`]).

use chrono::Utc;

use super::{Service, ServiceError};
use crate::job::{Job, State, Waits, waiting_for};
use crate::store::JobFilter;

impl Service {
    /// Fills in `waiting_for` of each queued job of `jobs`.
    pub(super) async fn explain_waits(&self, jobs: &mut [Job]) -> Result<(), ServiceError> {
        if !jobs.iter().any(|j| j.state == State::Queued) {
            return Ok(());
        }
        let inner = &self.inner;
        let running = JobFilter {
            state: Some(State::Running),
            ..JobFilter::default()
        };
        // Running jobs are few: at most every host's workers.
        let running = inner
            .config
            .store
            .page(&running, usize::MAX, None)
            .await?
            .unwrap_or_default();
        let busy_here = inner
            .lock()
            .jobs
            .values()
            .filter(|e| !e.job.state.is_terminal())
            .count();
        let quotas = inner.projects().quotas;
        let waits = Waits {
            running: &running,
            workers_busy: busy_here >= inner.config.workers,
            project_max_running: &quotas.max_running,
            now: Utc::now(),
        };
        let runtime = inner.runtime();
        for job in jobs.iter_mut().filter(|j| j.state == State::Queued) {
            let can_build = runtime.builder(&job.builder).is_some_and(|b| {
                b.info()
                    .platforms
                    .as_ref()
                    .is_none_or(|here| job.platforms.iter().all(|p| here.contains(p)))
            });
            job.waiting_for = waiting_for(job, can_build, &waits);
        }
        Ok(())
    }
}
