//! What `/metrics` reports, and its Prometheus text rendering. The
//! families are listed in the README ("Metrics"); [`http`] counts
//! requests, [`jobs`] what this host saw of jobs' lives, [`process`]
//! reads the process's own numbers.

mod http;
mod jobs;
mod process;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::job::{BuildSteps, Job, PhaseName, State};
use crate::plugin::PluginRuntime;

pub use http::{HttpCounts, Requests, UNMATCHED};
pub use jobs::{JobCounts, RetryCause};
pub use process::ProcessStats;

/// Counts for `/metrics`.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Stored jobs in each state, on every host sharing the store.
    pub jobs_by_state: Vec<(State, u64)>,
    /// Jobs waiting for a worker, on every host sharing the queue.
    pub queue_depth: usize,
    /// Run time (`started_at` to `completed_at`) of the jobs this process
    /// ran to their end, in seconds, by project (`None`: jobs of none).
    /// The label is bounded: only configured projects have jobs.
    pub build_seconds: BTreeMap<Option<String>, Histogram>,
    /// Their build steps by builder, and how many came from the cache.
    pub build_steps: BTreeMap<String, BuildSteps>,
    /// How long each phase of those jobs took, in seconds, by builder
    /// and phase (both bounded: configured builders, [`PhaseName`]).
    pub phase_seconds: BTreeMap<(String, PhaseName), Histogram>,
    /// What this host saw of jobs' lives.
    pub jobs: JobCounts,
    /// The HTTP requests it answered.
    pub http: Requests,
    /// The process's own numbers.
    pub process: ProcessStats,
}

/// A Prometheus-style histogram: cumulative bucket counts, sum and count.
#[derive(Debug, Clone)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// Upper bounds of the build-duration buckets, in seconds.
const BUILD_SECONDS_BUCKETS: [f64; 10] =
    [0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0];

/// Upper bounds of the phase-duration buckets, in seconds.
const PHASE_SECONDS_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0,
];

impl Histogram {
    /// An empty histogram with buckets up to each of `bounds`.
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            buckets: bounds.iter().map(|b| (*b, 0)).collect(),
            sum: 0.0,
            count: 0,
        }
    }

    /// An empty histogram of build durations.
    pub fn build_seconds() -> Self {
        Histogram::new(&BUILD_SECONDS_BUCKETS)
    }

    /// An empty histogram of phase durations.
    pub fn phase_seconds() -> Self {
        Histogram::new(&PHASE_SECONDS_BUCKETS)
    }

    /// Counts the run time of `job`, which ended; a job that never ran
    /// has none.
    pub fn observe(&mut self, job: &Job) {
        let (Some(started), Some(completed)) = (job.started_at, job.completed_at) else {
            return;
        };
        self.record((completed - started).num_milliseconds().max(0) as f64 / 1000.0);
    }

    /// Counts one observation of `value`.
    pub fn record(&mut self, value: f64) {
        self.sum += value;
        self.count += 1;
        for (bound, count) in &mut self.buckets {
            if value <= *bound {
                *count += 1;
            }
        }
    }
}

/// `name="value",…` with each value escaped as the text format wants.
fn label_set(labels: &[(&str, &str)]) -> String {
    let escaped = |value: &str| {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escaped(value)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `_bucket`, `_sum` and `_count` lines of one histogram of family
/// `name` with `labels`.
fn write_histogram(
    text: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    histogram: &Histogram,
) -> std::fmt::Result {
    let labels = label_set(labels);
    let (prefix, braces) = match labels.is_empty() {
        true => (String::new(), String::new()),
        false => (format!("{labels},"), format!("{{{labels}}}")),
    };
    for (bound, count) in &histogram.buckets {
        writeln!(text, "{name}_bucket{{{prefix}le=\"{bound}\"}} {count}")?;
    }
    writeln!(
        text,
        "{name}_bucket{{{prefix}le=\"+Inf\"}} {}",
        histogram.count
    )?;
    writeln!(text, "{name}_sum{braces} {}", histogram.sum)?;
    writeln!(text, "{name}_count{braces} {}", histogram.count)
}

impl Metrics {
    /// The Prometheus text exposition of these metrics and of `runtime`'s
    /// instantiation timings.
    pub fn render(&self, runtime: &PluginRuntime) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut text, runtime);
        text
    }

    fn write(&self, text: &mut String, runtime: &PluginRuntime) -> std::fmt::Result {
        writeln!(
            text,
            "# HELP helix_build_info This server's version and the WIT contract its builders implement."
        )?;
        writeln!(text, "# TYPE helix_build_info gauge")?;
        let version = label_set(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("wit", crate::plugin::WIT_VERSION),
        ]);
        writeln!(text, "helix_build_info{{{version}}} 1")?;
        self.process.write(text)?;
        self.http.write(text)?;
        self.jobs.write(text)?;
        writeln!(text, "# HELP helix_jobs Jobs known to this host, by state.")?;
        writeln!(text, "# TYPE helix_jobs gauge")?;
        for (state, count) in &self.jobs_by_state {
            writeln!(text, "helix_jobs{{state=\"{state}\"}} {count}")?;
        }
        writeln!(text, "# HELP helix_queue_depth Jobs waiting for a worker.")?;
        writeln!(text, "# TYPE helix_queue_depth gauge")?;
        writeln!(text, "helix_queue_depth {}", self.queue_depth)?;
        writeln!(
            text,
            "# HELP helix_build_seconds Run time of jobs that ran."
        )?;
        writeln!(text, "# TYPE helix_build_seconds histogram")?;
        for (project, histogram) in &self.build_seconds {
            // Jobs of no project carry no `project` label.
            let labels: Vec<(&str, &str)> =
                project.iter().map(|p| ("project", p.as_str())).collect();
            write_histogram(text, "helix_build_seconds", &labels, histogram)?;
        }
        writeln!(
            text,
            "# HELP helix_build_steps_total Build steps of the jobs this process ran, by builder and whether the layer cache had them."
        )?;
        writeln!(text, "# TYPE helix_build_steps_total counter")?;
        for (builder, steps) in &self.build_steps {
            let missed = steps.total.saturating_sub(steps.cached);
            writeln!(
                text,
                "helix_build_steps_total{{builder=\"{builder}\",cache=\"hit\"}} {}",
                steps.cached
            )?;
            writeln!(
                text,
                "helix_build_steps_total{{builder=\"{builder}\",cache=\"miss\"}} {missed}"
            )?;
        }
        writeln!(
            text,
            "# HELP helix_builder_info The component each builder runs now (by its sha256 digest)."
        )?;
        writeln!(text, "# TYPE helix_builder_info gauge")?;
        for builder in runtime.builders() {
            let info = builder.info();
            writeln!(
                text,
                "helix_builder_info{{builder=\"{}\",digest=\"{}\",version=\"{}\"}} 1",
                info.name, info.component_digest, info.version
            )?;
        }
        self.write_phase_seconds(text)?;
        writeln!(
            text,
            "# HELP helix_plugin_instantiation_seconds Making a fresh builder instance for a job."
        )?;
        writeln!(text, "# TYPE helix_plugin_instantiation_seconds summary")?;
        for builder in runtime.builders() {
            let (count, seconds) = builder.instantiations().read();
            let name = &builder.info().name;
            writeln!(
                text,
                "helix_plugin_instantiation_seconds_sum{{builder=\"{name}\"}} {seconds}"
            )?;
            writeln!(
                text,
                "helix_plugin_instantiation_seconds_count{{builder=\"{name}\"}} {count}"
            )?;
        }
        Ok(())
    }

    fn write_phase_seconds(&self, text: &mut String) -> std::fmt::Result {
        writeln!(
            text,
            "# HELP helix_job_phase_seconds How long each phase of the jobs this process ran took, by builder and phase."
        )?;
        writeln!(text, "# TYPE helix_job_phase_seconds histogram")?;
        for ((builder, phase), histogram) in &self.phase_seconds {
            let labels = [("builder", builder.as_str()), ("phase", phase.as_str())];
            write_histogram(text, "helix_job_phase_seconds", &labels, histogram)?;
        }
        Ok(())
    }
}
