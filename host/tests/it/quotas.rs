//! Sharing workers between projects, and the queue TTL at claim, through
//! the service (simulated builder) on SQLite and on PostgreSQL with two
//! hosts: a project that floods the queue does not hold another's few
//! jobs back, and a job past its TTL never starts, however soon a worker
//! is free.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use helix_build::access::Project;
use helix_build::config::{Config, ProjectConfig};
use helix_build::job::{JobId, JobRequest, State};
use helix_build::service::Service;
use helix_fixtures::Postgres;

use crate::common::LogText as _;
use crate::common::{self, finished, simulated, until_running};

fn project(name: &str) -> Arc<Project> {
    Arc::new(Project::named(name))
}

/// The test config with `workers` workers and projects `a` and `b`,
/// on `store_url` (none: SQLite in `dir`).
fn with_projects(dir: &tempfile::TempDir, workers: usize, store_url: Option<String>) -> Config {
    let mut config = common::config(dir, workers, 1000);
    config.store_url = store_url;
    config.host_id = Some(format!("host-{}", dir.path().display()).replace('/', "-"));
    config.projects = BTreeMap::from([
        ("a".to_string(), ProjectConfig::default()),
        ("b".to_string(), ProjectConfig::default()),
    ]);
    config.validated().expect("the projects' config is valid")
}

/// When job `id` started, if it has.
async fn started_at(service: &Service, id: &JobId) -> Option<DateTime<Utc>> {
    service.get(id.as_str()).await.unwrap().started_at
}

/// When job `id` started, waiting for it (at most 30 s).
async fn when_started(service: &Service, id: &JobId) -> DateTime<Utc> {
    for _ in 0..300 {
        if let Some(at) = started_at(service, id).await {
            return at;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} never started");
}

/// Project a submits 200 jobs through `hosts[0]`, then project b 5
/// through the last host, with two workers in all: every one of b's
/// starts before a's tenth does. a's first two jobs hold both workers
/// until b has submitted (then they are cancelled), so however long 200
/// submissions take on a loaded machine, no more of a's start meanwhile.
/// Fair sharing gives each project one worker then; b's are quick checks
/// (a tenth of a's time), so how the two workers' runs interleave on a
/// loaded machine does not decide the count.
async fn a_flood_does_not_hold_back_another_projects_jobs(hosts: &[&Service]) {
    let (a, b) = (project("a"), project("b"));
    let submit = |host: &Service, project: &Arc<Project>, delay_ms: u64| {
        let (host, project) = (host.clone(), project.clone());
        async move {
            host.submit_for(simulated(delay_ms), Some(&project))
                .await
                .unwrap()
                .id
        }
    };
    let mut a_jobs = Vec::new();
    for _ in 0..2 {
        let holding = submit(hosts[0], &a, 60_000).await;
        when_started(hosts[0], &holding).await;
        a_jobs.push(holding);
    }
    let holding = a_jobs.clone();
    a_jobs
        .extend(futures_util::future::join_all((2..200).map(|_| submit(hosts[0], &a, 1000))).await);
    let last = hosts[hosts.len() - 1];
    let b_jobs = futures_util::future::join_all((0..5).map(|_| submit(last, &b, 100))).await;
    for id in &holding {
        hosts[0].cancel(id.as_str()).await.unwrap();
    }

    let mut b_started = Vec::new();
    for id in &b_jobs {
        b_started.push(when_started(hosts[0], id).await);
    }
    let b_done = *b_started.iter().max().unwrap();
    let mut a_started = Vec::new();
    for id in &a_jobs {
        if let Some(at) = started_at(hosts[0], id).await {
            a_started.push(at);
        }
    }
    let a_before = a_started.iter().filter(|at| **at <= b_done).count();
    assert!(
        a_before < 10,
        "{a_before} of a's jobs started before b's fifth ({} of a's started in all)",
        a_started.len()
    );
    let a_job = hosts[0].get(a_jobs[0].as_str()).await.unwrap();
    assert_eq!(a_job.project.as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_does_not_hold_back_another_projects_jobs_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&with_projects(&dir, 2, None)).await;
    a_flood_does_not_hold_back_another_projects_jobs(&[&service]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_does_not_hold_back_another_projects_jobs_on_two_hosts() {
    let postgres = Postgres::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let first = common::start(&with_projects(&dirs[0], 1, Some(postgres.url()))).await;
    let second = common::start(&with_projects(&dirs[1], 1, Some(postgres.url()))).await;
    a_flood_does_not_hold_back_another_projects_jobs(&[&first, &second]).await;
}

/// `max_running` holds with workers to spare, counted across hosts: one
/// of `a`'s jobs runs on the first host, the next waits although the last
/// host has free workers, and `b`'s runs there meanwhile.
async fn a_project_at_its_max_running_waits(hosts: &[&Service]) {
    let (a, b) = (project("a"), project("b"));
    let (first_host, last_host) = (hosts[0], hosts[hosts.len() - 1]);
    let first = first_host
        .submit_for(simulated(3000), Some(&a))
        .await
        .unwrap();
    until_running(first_host, &first.id).await;
    let second = last_host.submit_for(simulated(0), Some(&a)).await.unwrap();
    let other = last_host.submit_for(simulated(0), Some(&b)).await.unwrap();
    assert_eq!(finished(last_host, &other.id).await.state, State::Succeeded);
    let waiting = last_host.get(second.id.as_str()).await.unwrap();
    assert_eq!(
        waiting.state,
        State::Queued,
        "a's second waits for its first"
    );
    let (first, second) = (
        finished(first_host, &first.id).await,
        finished(last_host, &second.id).await,
    );
    assert_eq!(second.state, State::Succeeded);
    assert!(second.started_at.unwrap() >= first.completed_at.unwrap());
}

fn at_most_one_of_a(mut config: Config) -> Config {
    config.projects.get_mut("a").unwrap().max_running = Some(1);
    config.validated().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_at_its_max_running_waits_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&at_most_one_of_a(with_projects(&dir, 3, None))).await;
    a_project_at_its_max_running_waits(&[&service]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_at_its_max_running_waits_on_two_hosts() {
    let postgres = Postgres::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let config = |dir| at_most_one_of_a(with_projects(dir, 3, Some(postgres.url())));
    let first = common::start(&config(&dirs[0])).await;
    let second = common::start(&config(&dirs[1])).await;
    a_project_at_its_max_running_waits(&[&first, &second]).await;
}

/// A job left queued past its one-second TTL by a host that stopped is
/// never started by the next host, although its worker is free at once
/// (before the first sweep): it ends `expired`, as the sweep ends one.
async fn a_job_past_its_ttl_is_never_claimed(config: Config) {
    let mut config = config;
    // A run cut short by the stop is not run again.
    config.max_attempts = 1;
    let before = common::start(&config).await;
    let busy = before.submit(simulated(60_000)).await.unwrap();
    until_running(&before, &busy.id).await;
    let hurried = before
        .submit(JobRequest {
            queue_ttl_secs: Some(1),
            ..simulated(0)
        })
        .await
        .unwrap();
    before.stop(Duration::ZERO).await;
    drop(before);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let after = common::start(&config).await;
    let expired = finished(&after, &hurried.id).await;
    assert_eq!(expired.state, State::Expired, "{:?}", expired.error);
    assert!(expired.started_at.is_none() && expired.attempts == 0);
    let error = expired.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("expired: waited ") && error.contains("past its queue TTL of 1s"),
        "{error}"
    );
    let logs = after.logs(hurried.id.as_str()).await.unwrap().texts();
    assert!(
        !logs.iter().any(|l| l.contains("running on builder")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.starts_with("[helix] expired: waited")),
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_ttl_is_never_claimed_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_job_past_its_ttl_is_never_claimed(common::config(&dir, 1, 10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_ttl_is_never_claimed_on_postgres() {
    let postgres = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(&dir, 1, 10);
    config.store_url = Some(postgres.url());
    config.host_id = Some("ttl-host".into());
    a_job_past_its_ttl_is_never_claimed(config).await;
}
