//! The lifecycle: which state changes are allowed, and the only methods
//! that make them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{FailureKind, Job, Outcome};

/// Where a job is in its life.
///
/// Allowed transitions: `queued → running | cancelled | expired`, and
/// `running → succeeded | failed | cancelled | timed_out`. Terminal states
/// never change.
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
pub enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// Waited in the queue longer than its queue TTL.
    Expired,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Queued,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
        State::TimedOut,
        State::Expired,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Queued | State::Running)
    }

    /// Whether the lifecycle allows moving from `self` to `next`.
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        matches!(
            (self, next),
            (Queued, Running | Cancelled | Expired)
                | (Running, Succeeded | Failed | Cancelled | TimedOut)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed_out",
            State::Expired => "expired",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused state change; the job is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {id} cannot go from {from} to {to}")]
pub struct TransitionError {
    pub id: String,
    pub from: State,
    pub to: State,
}

impl Job {
    fn check(&self, to: State) -> Result<(), TransitionError> {
        if self.state.can_become(to) {
            Ok(())
        } else {
            Err(TransitionError {
                id: self.id.to_string(),
                from: self.state,
                to,
            })
        }
    }

    /// `queued → running`: counts an attempt and stamps `started_at`.
    pub fn start(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        self.check(State::Running)?;
        self.state = State::Running;
        self.attempts += 1;
        self.started_at = Some(now);
        self.not_before = None;
        // Each run checks out afresh (a branch may have moved since).
        self.commit = None;
        Ok(())
    }

    /// Crash recovery only: a job found `running` when the host starts was
    /// interrupted by the host's death, not by anything it did, so it goes
    /// back to `queued` (its attempt stays counted). Any other state is
    /// refused.
    pub fn requeue_after_interruption(&mut self) -> Result<(), TransitionError> {
        if self.state != State::Running {
            return Err(TransitionError {
                id: self.id.to_string(),
                from: self.state,
                to: State::Queued,
            });
        }
        self.state = State::Queued;
        self.started_at = None;
        Ok(())
    }

    /// A running job whose run was lost with its host (the host died, or
    /// stopped renewing its lease; `what` says which): queued again, to be
    /// claimed no earlier than `not_before`, while it has attempts left
    /// (the lost attempt stays counted), else failed. Returns the log line
    /// that says which.
    pub fn recover_lost_run(
        &mut self,
        max_attempts: u32,
        what: &str,
        now: DateTime<Utc>,
        not_before: DateTime<Utc>,
    ) -> Result<String, TransitionError> {
        if self.attempts < max_attempts {
            self.requeue_after_interruption()?;
            self.not_before = Some(not_before);
            let wait = (not_before - now).num_milliseconds().max(0) as f64 / 1000.0;
            return Ok(format!(
                "[helix] {what}; queued again (attempt {} of {max_attempts}, in {wait:.1}s)",
                self.attempts + 1
            ));
        }
        let message = format!("{what}, and the job has used all {max_attempts} attempts");
        self.finish(Outcome::failed(FailureKind::Host, message), now)?;
        Ok(format!("[helix] {what}; no attempts left"))
    }

    /// Another attempt of a running job whose last one hit an
    /// infrastructure fault: counts it and stamps `started_at`.
    pub fn next_attempt(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        if self.state != State::Running {
            return Err(TransitionError {
                id: self.id.to_string(),
                from: self.state,
                to: State::Running,
            });
        }
        self.attempts += 1;
        self.started_at = Some(now);
        self.commit = None;
        Ok(())
    }

    /// Moves to the terminal state of `outcome`, recording its result or
    /// error and stamping `completed_at`.
    pub fn finish(&mut self, outcome: Outcome, now: DateTime<Utc>) -> Result<(), TransitionError> {
        self.check(outcome.state())?;
        self.state = outcome.state();
        self.error = outcome.error();
        if let Outcome::Succeeded(result) = outcome {
            self.image_tag = Some(result.image_tag);
            self.digest = result.digest;
            self.manifest = result.manifest;
        }
        self.completed_at = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::super::BuildResult;
    use super::super::fixtures::{job, request};
    use super::*;
    use crate::manifest::Digest;

    #[test]
    fn lifecycle_table() {
        use State::*;
        let allowed = [
            (Queued, Running),
            (Queued, Cancelled),
            (Queued, Expired),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Running, TimedOut),
        ];
        for from in State::ALL {
            for to in State::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn terminal_states_never_change() {
        for state in State::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(
                State::ALL.iter().all(|next| !state.can_become(*next)),
                "{state}"
            );
        }
        assert!(!State::Queued.is_terminal() && !State::Running.is_terminal());
    }

    #[test]
    fn transitions_stamp_times_and_count_attempts() {
        let mut job = job(request()).unwrap();
        assert_eq!((job.state, job.attempts), (State::Queued, 0));
        assert!(job.started_at.is_none() && job.completed_at.is_none());

        let err = job
            .finish(Outcome::Cancelled { reason: "x".into() }, Utc::now())
            .map(|_| job.state);
        assert_eq!(err, Ok(State::Cancelled));
        assert!(job.completed_at.is_some() && job.started_at.is_none());
        let refused = job.start(Utc::now()).unwrap_err();
        assert_eq!(
            (refused.from, refused.to),
            (State::Cancelled, State::Running)
        );
        assert_eq!(
            job.state,
            State::Cancelled,
            "a refused transition changes nothing"
        );

        let mut job = self::job(request()).unwrap();
        job.start(Utc::now()).unwrap();
        assert_eq!((job.state, job.attempts), (State::Running, 1));
        assert!(job.started_at.is_some());
        job.finish(
            Outcome::failed(FailureKind::Build, "RUN make failed"),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(job.state, State::Failed);
        assert_eq!(job.error.as_deref(), Some("build error: RUN make failed"));
        assert!(job.completed_at >= job.started_at);
        let before = job.clone();
        assert!(
            job.finish(
                Outcome::TimedOut {
                    message: "x".into()
                },
                Utc::now()
            )
            .is_err()
        );
        assert_eq!(job, before);
    }

    #[test]
    fn only_running_jobs_are_requeued_after_an_interruption() {
        let mut job = job(request()).unwrap();
        assert!(job.requeue_after_interruption().is_err());
        job.start(Utc::now()).unwrap();
        job.requeue_after_interruption().unwrap();
        assert_eq!(
            (job.state, job.attempts, job.started_at),
            (State::Queued, 1, None)
        );
        job.start(Utc::now()).unwrap();
        assert_eq!(job.attempts, 2);
    }

    #[test]
    fn success_records_result() {
        let mut job = job(request()).unwrap();
        job.start(Utc::now()).unwrap();
        let digest = format!("sha256:{}", "b".repeat(64));
        let result = BuildResult::validate(
            "localhost:5000/app:1".into(),
            Some(digest.clone()),
            vec![],
            &job.platforms,
        )
        .unwrap();
        job.finish(Outcome::Succeeded(result), Utc::now()).unwrap();
        assert_eq!(job.state, State::Succeeded);
        assert_eq!(job.image_tag.as_deref(), Some("localhost:5000/app:1"));
        assert_eq!(
            job.digest.as_ref().map(Digest::as_str),
            Some(digest.as_str())
        );
        assert_eq!(job.error, None);
    }

    #[test]
    fn each_run_forgets_the_commit_an_earlier_one_checked_out() {
        let mut job = job(request()).unwrap();
        job.start(Utc::now()).unwrap();
        job.commit = Some("a".repeat(40));
        job.next_attempt(Utc::now()).unwrap();
        assert_eq!(job.commit, None);
        job.commit = Some("b".repeat(40));
        job.requeue_after_interruption().unwrap();
        job.start(Utc::now()).unwrap();
        assert_eq!(job.commit, None);
    }
}
