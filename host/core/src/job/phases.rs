//! Where a job's time went: the phases of its last run, measured by the
//! host back to back, so that they add up to the run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Job;

/// A phase of a job. Every phase but `queue_wait` lies between the job's
/// `started_at` and `completed_at` (its last run); a phase a run did not
/// reach, or that its builder has none of (a simulated one checks nothing
/// out and pushes nothing), is left out.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PhaseName {
    /// From `created_at` to `started_at`: waiting for a worker, and for
    /// the earlier runs of a job that was run again.
    QueueWait,
    /// The run's workspace, cache slot, control group, engine and jail.
    Prepare,
    /// The host's checkout of the source at the resolved commit, and its
    /// checks of the Dockerfile.
    Checkout,
    /// Naming the build's inputs and looking for an earlier build of them
    /// (`reuse_builds`); for a job given that build's image, storing it
    /// under the job's name and reading it back.
    Reuse,
    /// Making the builder's fresh instance.
    Instantiate,
    /// The builder's run, less its instantiation.
    Build,
    /// The host's push of what was built.
    Push,
    /// The host reading the registry back after the push.
    RegistryCheck,
    /// Signing and attaching the build's provenance.
    Attest,
    /// Recording the run and removing its workspace and leftovers.
    CleanUp,
}

impl PhaseName {
    /// Every phase, in the order a run goes through them.
    pub const ALL: [PhaseName; 10] = [
        PhaseName::QueueWait,
        PhaseName::Prepare,
        PhaseName::Checkout,
        PhaseName::Reuse,
        PhaseName::Instantiate,
        PhaseName::Build,
        PhaseName::Push,
        PhaseName::RegistryCheck,
        PhaseName::Attest,
        PhaseName::CleanUp,
    ];

    /// Its name in JSON and in metrics' `phase` label.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::QueueWait => "queue_wait",
            PhaseName::Prepare => "prepare",
            PhaseName::Checkout => "checkout",
            PhaseName::Reuse => "reuse",
            PhaseName::Instantiate => "instantiate",
            PhaseName::Build => "build",
            PhaseName::Push => "push",
            PhaseName::RegistryCheck => "registry_check",
            PhaseName::Attest => "attest",
            PhaseName::CleanUp => "clean_up",
        }
    }
}

/// How long one phase of a job took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Phase {
    pub name: PhaseName,
    /// Milliseconds.
    pub ms: u64,
}

/// Times a run's phases back to back from its `started_at`: each ends
/// where the next begins, and each is the difference of whole
/// milliseconds since the start, so they add up to the run exactly.
#[derive(Debug, Clone)]
pub struct PhaseClock {
    started: DateTime<Utc>,
    /// Milliseconds from `started` to the end of the last phase.
    done_ms: u64,
    phases: Vec<Phase>,
}

impl PhaseClock {
    /// A clock for the run of `job` that started at its `started_at`
    /// (else at `now`), which holds its `queue_wait` already.
    pub fn start(job: &Job, now: DateTime<Utc>) -> Self {
        let started = job.started_at.unwrap_or(now);
        PhaseClock {
            started,
            done_ms: 0,
            phases: vec![Phase {
                name: PhaseName::QueueWait,
                ms: millis(started - job.created_at),
            }],
        }
    }

    /// Ends phase `name` at `now`.
    pub fn lap(&mut self, name: PhaseName, now: DateTime<Utc>) {
        let until = millis(now - self.started).max(self.done_ms);
        self.phases.push(Phase {
            name,
            ms: until - self.done_ms,
        });
        self.done_ms = until;
    }

    /// Ends, at `now`, a phase of which the first `first_took` was phase
    /// `first` and the rest phase `rest`.
    pub fn lap_split(
        &mut self,
        first: PhaseName,
        first_took: Option<std::time::Duration>,
        rest: PhaseName,
        now: DateTime<Utc>,
    ) {
        let until = millis(now - self.started).max(self.done_ms);
        let first_ms = first_took.map_or(0, |took| {
            u64::try_from(took.as_millis())
                .unwrap_or(u64::MAX)
                .min(until - self.done_ms)
        });
        if first_took.is_some() {
            self.phases.push(Phase {
                name: first,
                ms: first_ms,
            });
        }
        self.phases.push(Phase {
            name: rest,
            ms: until - self.done_ms - first_ms,
        });
        self.done_ms = until;
    }

    /// The phases timed so far.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }
}

fn millis(duration: chrono::Duration) -> u64 {
    u64::try_from(duration.num_milliseconds()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::fixtures::{job, request};

    #[test]
    fn phases_add_up_to_the_run_and_split_one_phase_in_two() {
        let created = Utc::now();
        let at = |ms: i64| created + chrono::Duration::milliseconds(ms);
        let job = Job {
            created_at: created,
            started_at: Some(at(40)),
            ..job(request()).unwrap()
        };
        let mut clock = PhaseClock::start(&job, at(0));
        clock.lap(PhaseName::Prepare, at(50));
        let instantiate = std::time::Duration::from_millis(7);
        clock.lap_split(
            PhaseName::Instantiate,
            Some(instantiate),
            PhaseName::Build,
            at(100),
        );
        // A clock that went backwards ends a phase of nothing.
        clock.lap(PhaseName::CleanUp, at(90));
        let got: Vec<(&str, u64)> = clock
            .phases()
            .iter()
            .map(|p| (p.name.as_str(), p.ms))
            .collect();
        assert_eq!(
            got,
            [
                ("queue_wait", 40),
                ("prepare", 10),
                ("instantiate", 7),
                ("build", 43),
                ("clean_up", 0)
            ]
        );
        let json = serde_json::to_value(&clock.phases()[2]).unwrap();
        assert_eq!(json, serde_json::json!({"name": "instantiate", "ms": 7}));
    }
}
