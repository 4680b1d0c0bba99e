//! The run of one job on this host, from its claim to its stored end, as
//! one [`Run`] whose steps are methods, in the order they run:
//!
//! - [`prepare`]: the builder, its cache slot, the run's control group,
//!   workspace, engine and jail;
//! - [`steps`]: the host's checkout, the builder's build, the host's push
//!   and registry check, and the build's provenance;
//! - [`end`]: the run accounted (its audit trail, the limit a failure is
//!   blamed on) and cleaned up.
//!
//! Each step says in the job's log what it did and returns a typed
//! [`fault::Failure`], which `fault` alone classifies; the host times each
//! ([`PhaseClock`]). The outcome is recorded by `settle`; what confines
//! a run is in `confine`.

mod end;
mod prepare;
mod reuse;
mod steps;

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;

use super::Inner;
use super::fault;
use super::table::Entry;
use crate::audit::AuditTrail;
use crate::backoff::Backoff;
use crate::cancel::CancelSignal;
use crate::cgroup::RunCgroup;
use crate::docker_engine::DockerEngine;
use crate::jail::Jail;
use crate::job::{Job, Outcome, PhaseClock, PhaseName};
use crate::layer_cache::CacheSlot;
use crate::log::JobLog;
use crate::plugin::Builder;
use crate::registry::RegistrySettings;
use crate::registry::oci::RegistryClient;
use crate::store::StoredJob;
use crate::workspace::JobDirs;

/// What a worker holds of the job it runs.
pub(super) struct Claimed {
    pub job: Job,
    pub log: Arc<JobLog>,
    pub cancel: CancelSignal,
}

/// One run (attempt) of a job, once [`Run::prepare`] made what it builds
/// with: then [`Run::checkout`], [`Run::build`], [`Run::push`],
/// [`Run::check_pushed`] and [`Run::attest`] (while the build's leftovers
/// are taken away, [`Run::tidy_after_build`]), [`Run::account`] and
/// [`Run::clean_up`].
struct Run<'a> {
    inner: &'a Inner,
    job: &'a Job,
    log: &'a Arc<JobLog>,
    cancel: &'a CancelSignal,
    /// The component it runs, whatever a reload loads meanwhile.
    builder: Arc<Builder>,
    /// A slot of the builder's layer cache, if it builds in one.
    slot: Option<CacheSlot>,
    cgroup: Option<Arc<RunCgroup>>,
    dirs: JobDirs,
    /// How the run reaches registries, with the job's credentials.
    registries: Arc<RegistrySettings>,
    /// The host's own registry requests of the run (its reuse lookup, the
    /// base images, the provenance) through one client: one connection
    /// pool and one token per registry for all of them.
    registry: RegistryClient,
    /// The Docker Engine it builds in, if it builds in one.
    engine: Option<Arc<DockerEngine>>,
    /// The run's image name in that engine.
    engine_image: Option<String>,
    /// Where every program of the run runs, if it runs any.
    jail: Option<Arc<Jail>>,
    audit: Arc<AuditTrail>,
    /// Whether the build step ran and what it may have left (images in
    /// the engine, containers and its image's name in the slot) is not
    /// yet taken away.
    leftovers: bool,
}

impl Inner {
    /// Makes a job this host claimed live here: in the table, with its log
    /// (continuing the lines an earlier run left) and its cancel signal.
    pub(super) fn adopt(&self, stored: StoredJob) -> Claimed {
        let StoredJob { job, log } = stored;
        let log = Arc::new(
            JobLog::persistent(
                self.config.log_cap_lines,
                self.config.secrets.redactor(&job.secrets),
                job.id.clone(),
                self.config.store.clone(),
                log,
            )
            .with_output_caps(self.config.log_output_caps),
        );
        let cancel = CancelSignal::new();
        let (state, _) = watch::channel(job.state);
        let claimed = Claimed {
            job: job.clone(),
            log: log.clone(),
            cancel: cancel.clone(),
        };
        let id = job.id.clone();
        self.lock().jobs.insert(
            job.id.clone(),
            Entry {
                job,
                log,
                state,
                cancel: Some(cancel),
            },
        );
        // Nobody waiting is fine.
        let _ = self.adopted.send(id);
        claimed
    }

    /// Runs a claimed job to its end and records it. A run that ends in an
    /// infrastructure fault (the registry's or the host's, see `fault`) is
    /// tried again, after a backoff, while attempts are left. Nothing else
    /// is retried.
    pub(super) async fn run(self: &Arc<Self>, claimed: Claimed) {
        let mut job = claimed.job.clone();
        loop {
            let outcome = self.execute(&job, &claimed.log, &claimed.cancel).await;
            let max = self.config.max_attempts;
            let fault = match &outcome {
                outcome if fault::is_infrastructure(outcome) && job.attempts < max => {
                    outcome.error().unwrap_or_default()
                }
                _ => return self.record(&job.id, outcome).await,
            };
            let delay = RETRY.delay(job.attempts);
            claimed.log.push(&format!(
                "[helix] attempt {} of {max} failed: {fault}; an infrastructure fault, so attempt {} starts in {:.1}s",
                job.attempts,
                job.attempts + 1,
                delay.as_secs_f64()
            ));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = claimed.cancel.cancelled() => {
                    let reason = claimed.cancel.reason();
                    return self.record(&job.id, Outcome::Cancelled { reason }).await;
                }
            }
            let mut next = job.clone();
            if next.next_attempt(Utc::now()).is_err() {
                return self.record(&job.id, outcome).await;
            }
            match self.config.queue.next_attempt(&job, &next).await {
                Ok(true) => self
                    .counts()
                    .retried(&job.builder, super::metrics::RetryCause::Infrastructure),
                Ok(false) => {
                    // Another host has it now; this run is over.
                    return self.record(&job.id, outcome).await;
                }
                Err(e) => {
                    tracing::warn!(job = %job.id, "cannot record another attempt: {e}");
                    return self.record(&job.id, outcome).await;
                }
            }
            if let Some(entry) = self.lock().jobs.get_mut(&job.id) {
                entry.job.clone_from(&next);
            }
            job = next;
        }
    }

    /// Runs `job` through the steps of a [`Run`], timing each, and keeps
    /// their phases with the live job. The workspace is removed afterwards
    /// unless the job failed and the operator keeps failed workspaces.
    async fn execute(&self, job: &Job, log: &Arc<JobLog>, cancel: &CancelSignal) -> Outcome {
        let mut clock = PhaseClock::start(job, Utc::now());
        let prepared = Run::prepare(self, job, log, cancel).await;
        clock.lap(PhaseName::Prepare, Utc::now());
        let outcome = match prepared {
            Ok(mut run) => {
                let built = run.work(&mut clock).await;
                let outcome = run.account(built);
                run.clean_up(&outcome).await;
                clock.lap(PhaseName::CleanUp, Utc::now());
                outcome
            }
            Err(failure) => fault::outcome(failure, None, log),
        };
        if let Some(entry) = self.lock().jobs.get_mut(&job.id) {
            entry.job.phases = clock.phases().to_vec();
        }
        outcome
    }
}

/// The wait between attempts after an infrastructure fault.
pub(super) const RETRY: Backoff = Backoff {
    first: std::time::Duration::from_secs(2),
    max: std::time::Duration::from_secs(60),
};
