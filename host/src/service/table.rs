//! The live table: the jobs this host runs, each with its log, its state
//! published to waiters, and its cancel signal. A job joins the table when
//! a worker claims it and leaves once its end is stored; before and after,
//! it is read from the store, so memory does not grow with history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::watch;

use super::metrics::Histogram;
use crate::cancel::CancelSignal;
use crate::job::{BuildSteps, Job, JobId, PhaseName, State};
use crate::log::JobLog;

pub(super) struct Table {
    pub jobs: HashMap<JobId, Entry>,
    /// Ids of accepted jobs whose enqueue is not yet durable, with their
    /// projects: taken for duplicates, capacity and quotas, invisible to
    /// readers.
    pub pending: HashMap<JobId, Option<String>>,
    /// Run times of the jobs this process ran to their end, by project.
    pub build_seconds: BTreeMap<Option<String>, Histogram>,
    /// Their build steps, and cache hits, by builder.
    pub build_steps: BTreeMap<String, BuildSteps>,
    /// Their phases' durations, by builder and phase.
    pub phase_seconds: BTreeMap<(String, PhaseName), Histogram>,
}

/// One job this host runs.
pub(super) struct Entry {
    pub job: Job,
    pub log: Arc<JobLog>,
    /// Publishes every state change to waiters.
    pub state: watch::Sender<State>,
    /// Stops the run; `None` once the job has ended.
    pub cancel: Option<CancelSignal>,
}

impl Table {
    pub fn new() -> Self {
        Table {
            jobs: HashMap::new(),
            pending: HashMap::new(),
            // Jobs of no project are always counted, none ended or not.
            build_seconds: BTreeMap::from([(None, Histogram::build_seconds())]),
            build_steps: BTreeMap::new(),
            phase_seconds: BTreeMap::new(),
        }
    }

    /// Cancels job `id` if it runs here.
    pub fn cancel(&self, id: &str, reason: &str) {
        if let Some(cancel) = self.jobs.get(id).and_then(|e| e.cancel.as_ref()) {
            cancel.cancel(reason);
        }
    }

    /// Cancels every job that runs here.
    pub fn cancel_all(&self, reason: &str) {
        for cancel in self.jobs.values().filter_map(|e| e.cancel.as_ref()) {
            cancel.cancel(reason);
        }
    }

    /// Drops job `id`, whose end is stored, telling its waiters.
    pub fn remove_ended(&mut self, id: &JobId) {
        if let Some(entry) = self.jobs.remove(id) {
            self.build_seconds
                .entry(entry.job.project.clone())
                .or_insert_with(Histogram::build_seconds)
                .observe(&entry.job);
            let steps = self
                .build_steps
                .entry(entry.job.builder.clone())
                .or_default();
            steps.total += entry.job.steps.total;
            steps.cached += entry.job.steps.cached;
            for phase in &entry.job.phases {
                self.phase_seconds
                    .entry((entry.job.builder.clone(), phase.name))
                    .or_insert_with(Histogram::phase_seconds)
                    .record(phase.ms as f64 / 1000.0);
            }
            entry.state.send_replace(entry.job.state);
        }
    }
}
