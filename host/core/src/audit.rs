//! The audit trail: every program a job's builder asked the host to run,
//! allowed or refused, with the grant that allowed it.
//!
//! A builder reaches programs only through the host's `command-runner`,
//! so this is a complete record of what its logic did outside its
//! sandbox. Arguments are kept with the job's secrets redacted, as in the
//! log. A trail holds at most [`MAX_ENTRIES`] calls per run; past that it
//! counts what it dropped.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Calls kept per job run.
pub const MAX_ENTRIES: usize = 10_000;

/// One `command-runner` call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// The run (attempt) of the job that made the call, from 1.
    pub attempt: u32,
    /// The program as the builder named it.
    pub program: String,
    /// Its arguments as the builder gave them, secrets redacted.
    pub args: Vec<String>,
    /// The working directory asked for (inside the workspace); `None`:
    /// the workspace itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The grant that allowed the call (its program and argument
    /// patterns); `None` when no grant did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Whether the grants allowed the call.
    pub allowed: bool,
    pub started_at: DateTime<Utc>,
    /// How long the call took, refusals included.
    pub duration_ms: u64,
    /// The program's exit code, when it ran to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it did not run or did not end: the refusal, a program not
    /// installed, a timeout, a cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The store keeps each run's trail as a job record named this and the run,
/// zero-padded so that names sort in run order.
pub const RECORD_PREFIX: &str = "audit.";

/// A job's audit trail as stored: every run's calls, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobAudit {
    /// The project whose job made the calls; absent for a job of no
    /// project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub entries: Vec<AuditEntry>,
    /// Calls not kept, past [`MAX_ENTRIES`] in a run.
    pub dropped: u64,
}

impl JobAudit {
    /// The trail of a job from its runs' stored records, in run order.
    pub fn from_runs(records: &[String]) -> Result<Self, serde_json::Error> {
        let mut audit = JobAudit::default();
        for record in records {
            let run: JobAudit = serde_json::from_str(record)?;
            audit.project = run.project.or(audit.project);
            audit.entries.extend(run.entries);
            audit.dropped += run.dropped;
        }
        Ok(audit)
    }
}

/// The calls of one job run, as they are made.
#[derive(Debug)]
pub struct AuditTrail {
    attempt: u32,
    project: Option<String>,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    entries: Vec<AuditEntry>,
    dropped: u64,
}

impl AuditTrail {
    /// An empty trail for run `attempt` of a job.
    pub fn new(attempt: u32) -> Self {
        AuditTrail {
            attempt,
            project: None,
            kept: Mutex::default(),
        }
    }

    /// The trail of a run of a job of `project`, which it records too.
    pub fn of_project(self, project: Option<String>) -> Self {
        AuditTrail { project, ..self }
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Records `entry`, unless the trail is full.
    pub fn record(&self, entry: AuditEntry) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.entries.len() < MAX_ENTRIES {
            kept.entries.push(entry);
        } else {
            kept.dropped += 1;
        }
    }

    /// The calls recorded so far, oldest first, and how many were dropped
    /// past [`MAX_ENTRIES`].
    pub fn entries(&self) -> (Vec<AuditEntry>, u64) {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        (kept.entries.clone(), kept.dropped)
    }

    /// The name and body of the job record that stores this run's trail.
    pub fn stored(&self) -> (String, String) {
        let (entries, dropped) = self.entries();
        let body = serde_json::to_string(&JobAudit {
            project: self.project.clone(),
            entries,
            dropped,
        })
        .expect("an audit trail is plain data");
        (format!("{RECORD_PREFIX}{:06}", self.attempt), body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(program: &str) -> AuditEntry {
        AuditEntry {
            attempt: 2,
            program: program.into(),
            args: vec![],
            working_dir: None,
            grant: None,
            allowed: false,
            started_at: Utc::now(),
            duration_ms: 0,
            exit_code: None,
            error: Some("denied".into()),
        }
    }

    #[test]
    fn a_trail_counts_what_it_cannot_keep() {
        let trail = AuditTrail::new(2);
        for _ in 0..MAX_ENTRIES + 3 {
            trail.record(entry("curl"));
        }
        let (entries, dropped) = trail.entries();
        assert_eq!((entries.len(), dropped), (MAX_ENTRIES, 3));
    }

    #[test]
    fn a_trail_names_its_jobs_project() {
        let trail = AuditTrail::new(1).of_project(Some("team-a".into()));
        trail.record(entry("podman"));
        let (name, body) = trail.stored();
        assert_eq!(name, "audit.000001");
        let audit = JobAudit::from_runs(&[body]).unwrap();
        assert_eq!(audit.project.as_deref(), Some("team-a"));
        assert_eq!(audit.entries.len(), 1);
    }
}
