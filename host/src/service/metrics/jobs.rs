//! What this host saw of jobs' lives: how long they waited and ran, how
//! long their pushes took, how they ended and how often they were tried
//! again. Labels are bounded: builders come from the config, states and
//! outcomes from the lifecycle.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::{BUILD_SECONDS_BUCKETS, Histogram, label_set, write_histogram};
use crate::job::{Job, State};

/// Upper bounds of the queue-wait buckets, in seconds (up to a day, the
/// default queue TTL).
const QUEUE_WAIT_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0,
];

/// Upper bounds of the push-duration buckets, in seconds.
const PUSH_BUCKETS: [f64; 11] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Why a job was tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RetryCause {
    /// Its run ended in a registry or host fault.
    Infrastructure,
    /// Its host was lost (or stopped) while it ran.
    Lost,
}

impl RetryCause {
    fn as_str(self) -> &'static str {
        match self {
            RetryCause::Infrastructure => "infrastructure",
            RetryCause::Lost => "lost",
        }
    }
}

/// Counts of the jobs this host ran, ended or retried, since it started.
#[derive(Debug, Clone, Default)]
pub struct JobCounts {
    /// Submission to the start of its last run, by builder and end state.
    queue_wait: BTreeMap<(String, State), Histogram>,
    /// Its last run's start to its end, by builder and end state.
    duration: BTreeMap<(String, State), Histogram>,
    /// Each push with its registry check, by builder and whether it succeeded.
    push: BTreeMap<(String, bool), Histogram>,
    /// Jobs that ended, by builder and state.
    finished: BTreeMap<(String, State), u64>,
    /// Attempts started again, by builder and cause.
    retries: BTreeMap<(String, RetryCause), u64>,
}

impl JobCounts {
    /// Counts `job`, which has just ended here: a run, a cancellation or
    /// expiry in the queue, a lost run failed.
    pub fn ended(&mut self, job: &Job) {
        let key = (job.builder.clone(), job.state);
        *self.finished.entry(key.clone()).or_default() += 1;
        let Some(started) = job.started_at else {
            return;
        };
        let seconds = |d: chrono::Duration| d.num_milliseconds().max(0) as f64 / 1000.0;
        self.queue_wait
            .entry(key.clone())
            .or_insert_with(|| Histogram::new(&QUEUE_WAIT_BUCKETS))
            .record(seconds(started - job.created_at));
        if let Some(completed) = job.completed_at {
            self.duration
                .entry(key)
                .or_insert_with(|| Histogram::new(&BUILD_SECONDS_BUCKETS))
                .record(seconds(completed - started));
        }
    }

    /// Counts a push (with its check) of a `builder` job that took `took`.
    pub fn pushed(&mut self, builder: &str, succeeded: bool, took: Duration) {
        self.push
            .entry((builder.to_string(), succeeded))
            .or_insert_with(|| Histogram::new(&PUSH_BUCKETS))
            .record(took.as_secs_f64());
    }

    /// Counts another attempt of a `builder` job.
    pub fn retried(&mut self, builder: &str, cause: RetryCause) {
        *self
            .retries
            .entry((builder.to_string(), cause))
            .or_default() += 1;
    }

    pub fn write(&self, text: &mut String) -> std::fmt::Result {
        let by_outcome = [
            (
                "helix_job_queue_wait_seconds",
                "Time jobs this host ran waited, from submission to the start of their last run, by builder and end state.",
                &self.queue_wait,
            ),
            (
                "helix_job_duration_seconds",
                "Run time of the jobs this host ran (their last run), by builder and end state.",
                &self.duration,
            ),
        ];
        for (name, help, histograms) in by_outcome {
            writeln!(text, "# HELP {name} {help}")?;
            writeln!(text, "# TYPE {name} histogram")?;
            for ((builder, state), histogram) in histograms {
                let state = state.to_string();
                let labels = [("builder", builder.as_str()), ("outcome", &state)];
                write_histogram(text, name, &labels, histogram)?;
            }
        }
        let name = "helix_push_duration_seconds";
        writeln!(
            text,
            "# HELP {name} Pushes of built images with their registry check, by builder and outcome."
        )?;
        writeln!(text, "# TYPE {name} histogram")?;
        for ((builder, succeeded), histogram) in &self.push {
            let outcome = if *succeeded { "succeeded" } else { "failed" };
            write_histogram(
                text,
                name,
                &[("builder", builder), ("outcome", outcome)],
                histogram,
            )?;
        }
        writeln!(
            text,
            "# HELP helix_jobs_finished_total Jobs that ended on this host, by builder and end state."
        )?;
        writeln!(text, "# TYPE helix_jobs_finished_total counter")?;
        for ((builder, state), count) in &self.finished {
            let state = state.to_string();
            let labels = label_set(&[("builder", builder), ("state", &state)]);
            writeln!(text, "helix_jobs_finished_total{{{labels}}} {count}")?;
        }
        writeln!(
            text,
            "# HELP helix_job_retries_total Attempts started again, by builder and cause (infrastructure: a registry or host fault; lost: its host stopped or died)."
        )?;
        writeln!(text, "# TYPE helix_job_retries_total counter")?;
        for ((builder, cause), count) in &self.retries {
            let labels = label_set(&[("builder", builder), ("cause", cause.as_str())]);
            writeln!(text, "helix_job_retries_total{{{labels}}} {count}")?;
        }
        Ok(())
    }
}
