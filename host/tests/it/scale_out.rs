//! Several hosts — services with their own data directories and workers —
//! sharing one real PostgreSQL database: the queue drains with every job
//! run exactly once, a job running on one host is cancelled through
//! another, and a database restart loses no job.

use crate::common;
use crate::common::LogText as _;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::{config, finished, simulated, start, until_running};
use helix_build::job::{JobId, JobRequest, State};
use helix_build::service::{Service, ServiceError};
use helix_fixtures::Postgres;

/// A host on `postgres`, called `name`, with its own data directory.
async fn host(postgres: &Postgres, name: &str, workers: usize, dir: &tempfile::TempDir) -> Service {
    host_with_lease(postgres, name, workers, dir, 5).await
}

async fn host_with_lease(
    postgres: &Postgres,
    name: &str,
    workers: usize,
    dir: &tempfile::TempDir,
    lease_secs: u64,
) -> Service {
    let mut config = config(dir, workers, 10_000);
    config.store_url = Some(postgres.url());
    config.host_id = Some(name.into());
    config.lease_secs = lease_secs;
    config.max_attempts = 3;
    start(&config).await
}

/// The hosts that ran job `id`, one entry per run, read from its log.
async fn runs(service: &Service, id: &JobId) -> Vec<String> {
    service
        .logs(id.as_str())
        .await
        .unwrap()
        .texts()
        .iter()
        .filter_map(|line| line.split_once("[helix] running on builder 'simulated' on host '"))
        .map(|(_, host)| host.trim_end_matches('\'').to_string())
        .collect()
}

/// Submits `jobs` simulated jobs spread over `hosts`, waits for every one
/// through the first host, and checks each succeeded after exactly one
/// run. Returns how many jobs each host ran.
async fn drain(hosts: &[Service], jobs: usize) -> HashMap<String, usize> {
    let mut ids = Vec::new();
    for i in 0..jobs {
        let job = hosts[i % hosts.len()].submit(simulated(0)).await.unwrap();
        ids.push(job.id);
    }
    let mut ran = HashMap::new();
    for id in &ids {
        let job = hosts[0]
            .wait(id.as_str(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(job.state, State::Succeeded, "{id}: {:?}", job.error);
        let on = runs(&hosts[0], id).await;
        assert_eq!(on.len(), 1, "{id} ran {} times: {on:?}", on.len());
        assert_eq!(job.attempts, 1, "{id}");
        *ran.entry(on[0].clone()).or_insert(0) += 1;
    }
    ran
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_drain_500_jobs_running_each_exactly_once() {
    let postgres = Postgres::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let hosts = [
        host(&postgres, "a", 2, &dirs[0]).await,
        host(&postgres, "b", 2, &dirs[1]).await,
    ];
    let ran = drain(&hosts, 500).await;
    assert_eq!(ran.values().sum::<usize>(), 500);
    assert!(ran.len() == 2, "both hosts ran jobs: {ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_drain_500_jobs_running_each_exactly_once() {
    let postgres = Postgres::start();
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let hosts = [
        host(&postgres, "a", 2, &dirs[0]).await,
        host(&postgres, "b", 2, &dirs[1]).await,
        host(&postgres, "c", 2, &dirs[2]).await,
    ];
    let ran = drain(&hosts, 500).await;
    assert_eq!(ran.values().sum::<usize>(), 500);
    assert!(ran.len() == 3, "every host ran jobs: {ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_on_one_host_is_cancelled_through_another() {
    let postgres = Postgres::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let b = host(&postgres, "b", 1, &dirs[1]).await;
    let long = b.submit(simulated(60_000)).await.unwrap();
    until_running(&b, &long.id).await;
    // Host A joins after the job runs on B, so it holds nothing itself.
    let a = host(&postgres, "a", 1, &dirs[0]).await;
    assert_eq!(a.get(long.id.as_str()).await.unwrap().state, State::Running);

    let asked = Instant::now();
    let cancelled = a.cancel(long.id.as_str()).await.unwrap();
    assert_eq!(cancelled.state, State::Cancelled, "{cancelled:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?}",
        asked.elapsed()
    );
    let logs = b.logs(long.id.as_str()).await.unwrap().texts();
    assert!(
        logs.iter()
            .any(|l| l.starts_with("[helix] job cancelled") && l.contains("cancelled by request")),
        "{logs:?}"
    );
    assert!(matches!(
        a.cancel(long.id.as_str()).await,
        Err(ServiceError::AlreadyEnded { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_while_jobs_run_loses_no_job_and_runs_none_twice() {
    let postgres = Postgres::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // Leases outlast the outage: no job loses its host, so none runs twice.
    let hosts = [
        host_with_lease(&postgres, "a", 2, &dirs[0], 20).await,
        host_with_lease(&postgres, "b", 2, &dirs[1], 20).await,
    ];
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(hosts[i % 2].submit(simulated(700)).await.unwrap().id);
    }
    until_running(&hosts[0], &ids[0]).await;
    postgres.pause();
    // Meanwhile new work is refused with a store error (503 over HTTP).
    let refused = hosts[0].submit(simulated(0)).await;
    assert!(
        matches!(refused, Err(ServiceError::Store(_))),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.resume();

    for id in &ids {
        let job = hosts[1]
            .wait(id.as_str(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(job.state, State::Succeeded, "{id}: {:?}", job.error);
        assert_eq!(
            job.attempts, 1,
            "{id} ran once: its end was stored after the outage"
        );
    }
    let after = hosts[1].submit(simulated(0)).await.unwrap();
    assert_eq!(finished(&hosts[1], &after.id).await.state, State::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_written_while_the_database_is_down_are_stored_once_it_is_back() {
    let postgres = Postgres::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = host_with_lease(&postgres, "a", 1, &dirs[0], 30).await;
    let mut request = simulated(3_000);
    request
        .build_args
        .insert("HELIX_SIMULATE_LOG_LINES".into(), "30".into());
    let job = a.submit(request).await.unwrap();
    until_running(&a, &job.id).await;
    let (log, _) = a.follow(job.id.as_str()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = log.snapshot().len();
    postgres.pause();
    let down = a.ready().await;
    assert!(matches!(down, Err(ServiceError::Store(_))), "{down:?}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let during = log.snapshot().len();
    postgres.resume();
    let ended = finished(&a, &job.id).await;
    assert_eq!(ended.state, State::Succeeded, "{:?}", ended.error);
    a.ready().await.expect("ready once the database answers");

    // Another host reads the log from the database alone.
    let b = host(&postgres, "b", 1, &dirs[1]).await;
    let stored = b.logs(job.id.as_str()).await.unwrap().texts();
    let written = log.snapshot();
    assert!(
        during > before + 5,
        "lines were written during the outage: {before} before, {during} by its end"
    );
    assert_eq!(stored, written, "every line stored, in order");
    assert!(
        stored.iter().any(|l| l.contains("[helix] job succeeded")),
        "{stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_host_answers_reads_and_follows_jobs_of_another() {
    let postgres = Postgres::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let b = host(&postgres, "b", 1, &dirs[1]).await;
    let job = b
        .submit(JobRequest {
            id: Some("followed".into()),
            ..simulated(1_500)
        })
        .await
        .unwrap();
    until_running(&b, &job.id).await;
    let a = host(&postgres, "a", 1, &dirs[0]).await;
    let (log, mut state) = a.follow("followed").await.unwrap();
    state
        .wait_for(|s| s.is_terminal())
        .await
        .expect("the relay reports the end");
    assert_eq!(*state.borrow(), State::Succeeded);
    let lines = log.snapshot();
    assert!(
        lines.iter().any(|l| l.contains("[helix] job succeeded")),
        "{lines:?}"
    );
    let listed = a.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, job.id);
    let metrics = a.metrics().await.unwrap();
    assert!(metrics.jobs_by_state.contains(&(State::Succeeded, 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_shutting_down_gives_its_unfinished_jobs_to_another() {
    let postgres = Postgres::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let b = host(&postgres, "b", 1, &dirs[1]).await;
    let job = b.submit(simulated(1_500)).await.unwrap();
    until_running(&b, &job.id).await;
    let a = host(&postgres, "a", 1, &dirs[0]).await;
    b.stop(Duration::ZERO).await;

    let done = finished(&a, &job.id).await;
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    assert_eq!(done.attempts, 2);
    assert_eq!(runs(&a, &job.id).await, ["b", "a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_past_its_queue_ttl_expires_on_a_shared_queue() {
    let postgres = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let a = host(&postgres, "host-a", 1, &dir).await;
    common::expires_jobs_waiting_past_their_ttl(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_take_the_highest_priority_first_on_a_shared_queue() {
    let postgres = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let a = host(&postgres, "host-a", 1, &dir).await;
    common::claims_take_the_highest_priority_first(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_hold_across_hosts_and_a_push_to_one_supersedes_a_job_on_another() {
    let postgres = Postgres::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(&postgres, "host-a", 3, &da).await;
    let b = host(&postgres, "host-b", 3, &db).await;
    common::a_group_never_runs_more_than_max_running(&[&a, &b]).await;
    common::only_the_last_of_ten_pushes_builds(&[&a, &b]).await;

    // A job running on host A, superseded by a push arriving at host B.
    let first = a
        .submit(JobRequest {
            cancel_in_progress: true,
            ..common::in_group("team/app:release", 30_000)
        })
        .await
        .unwrap();
    until_running(&a, &first.id).await;
    let second = b
        .submit(JobRequest {
            cancel_in_progress: true,
            ..common::in_group("team/app:release", 0)
        })
        .await
        .unwrap();
    let ended = finished(&b, &first.id).await;
    assert_eq!(ended.state, State::Cancelled);
    let error = ended.error.unwrap_or_default();
    assert!(
        error.contains(&format!(
            "superseded by job {} in group 'team/app:release'",
            second.id
        )),
        "{error}"
    );
    assert_eq!(finished(&a, &second.id).await.state, State::Succeeded);
}
