//! What a job's run cost ([`Resources`]) and why a queued job is not
//! running yet ([`WaitReason`], worked out by [`waiting_for`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Job, State};

/// What a job's last run used: every process of it together (the build
/// tools and their `RUN` steps, as its control group counted them), and
/// what its push put in the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    /// CPU time (user and system), in seconds.
    #[schema(minimum = 0)]
    pub cpu_seconds: f64,
    /// The highest memory use at any moment, in bytes.
    #[schema(minimum = 0)]
    pub peak_memory_bytes: u64,
    /// The size of what its push left at the tag: manifests, image
    /// configurations and compressed layers, each blob once (layers the
    /// registry already held count too, though they were not sent again);
    /// 0 when nothing was pushed.
    #[schema(minimum = 0)]
    pub pushed_bytes: u64,
}

/// Why a queued job has not started; a job can wait for several at once.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// Every worker of the host answering is running a job.
    WorkersBusy,
    /// Its concurrency group runs `max_running` jobs already.
    GroupFull,
    /// Its project runs its `max_running` jobs already
    /// (`[projects.NAME] max_running`).
    ProjectMaxRunning,
    /// No loaded builder of its name can build all its platforms here.
    NoBuilderForPlatform,
    /// It is in its backoff before another attempt (`not_before`).
    RetryBackoff,
}

/// What holds a queued job back, from the jobs running on every host.
#[derive(Debug, Clone, Copy)]
pub struct Waits<'a> {
    /// The jobs running now.
    pub running: &'a [Job],
    /// Whether every worker of the host answering is busy.
    pub workers_busy: bool,
    /// Each project's most jobs running at once.
    pub project_max_running: &'a BTreeMap<String, u32>,
    pub now: DateTime<Utc>,
}

/// Why `job` is waiting, in [`WaitReason`]'s order; empty for a job that
/// is not queued, and for one the next free worker takes. `can_build`:
/// whether a loaded builder of its name builds every platform it asks for.
pub fn waiting_for(job: &Job, can_build: bool, waits: &Waits<'_>) -> Vec<WaitReason> {
    if job.state != State::Queued {
        return Vec::new();
    }
    let running_of = |same: &dyn Fn(&Job) -> bool| waits.running.iter().filter(|j| same(j)).count();
    let group_full = job.group.as_ref().is_some_and(|group| {
        running_of(&|j| j.group.as_ref() == Some(group)) >= job.max_running as usize
    });
    let project_full = job.project.as_ref().is_some_and(|project| {
        waits.project_max_running.get(project).is_some_and(|most| {
            running_of(&|j| j.project.as_ref() == Some(project)) >= *most as usize
        })
    });
    [
        (waits.workers_busy, WaitReason::WorkersBusy),
        (group_full, WaitReason::GroupFull),
        (project_full, WaitReason::ProjectMaxRunning),
        (!can_build, WaitReason::NoBuilderForPlatform),
        (
            job.not_before.is_some_and(|at| at > waits.now),
            WaitReason::RetryBackoff,
        ),
    ]
    .into_iter()
    .filter_map(|(holds, reason)| holds.then_some(reason))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobRequest;
    use crate::job::fixtures::{job, request};

    fn grouped(group: &str, project: Option<&str>) -> Job {
        let mut job = job(JobRequest {
            group: Some(group.into()),
            ..request()
        })
        .unwrap();
        job.project = project.map(String::from);
        job
    }

    fn running(mut job: Job) -> Job {
        job.start(Utc::now()).unwrap();
        job
    }

    #[test]
    fn a_queued_job_says_what_holds_it() {
        let quotas = BTreeMap::from([("team".to_string(), 1)]);
        let busy = [running(grouped("deploy", Some("team")))];
        let waits = Waits {
            running: &busy,
            workers_busy: true,
            project_max_running: &quotas,
            now: Utc::now(),
        };
        let queued = grouped("deploy", Some("team"));
        assert_eq!(
            waiting_for(&queued, false, &waits),
            [
                WaitReason::WorkersBusy,
                WaitReason::GroupFull,
                WaitReason::ProjectMaxRunning,
                WaitReason::NoBuilderForPlatform
            ]
        );
        let free = Waits {
            running: &[],
            workers_busy: false,
            ..waits
        };
        assert!(waiting_for(&queued, true, &free).is_empty());
        let other_group = grouped("test", None);
        assert!(
            waiting_for(
                &other_group,
                true,
                &Waits {
                    workers_busy: false,
                    ..waits
                }
            )
            .is_empty()
        );
        let mut backing_off = grouped("test", None);
        backing_off.not_before = Some(waits.now + chrono::Duration::seconds(5));
        assert_eq!(
            waiting_for(&backing_off, true, &free),
            [WaitReason::RetryBackoff]
        );
        assert!(
            waiting_for(&busy[0], false, &waits).is_empty(),
            "only queued jobs wait"
        );
    }
}
