//! The durable store under the service: history survives a restart, and
//! jobs an earlier process left running are recovered. Real SQLite files.

use crate::common::LogText as _;
use helix_build::log::{LogLine, LogSink as _};

use std::time::Duration;

use crate::common::{config, finished, simulated, start, until_running};
use chrono::Utc;
use helix_build::config::StoreLocation;
use helix_build::job::{Job, JobId, JobRequest, State, SubmitPolicy};
use helix_build::service::ServiceError;
use helix_build::store::{JobStore, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_shows_the_same_history_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir, 2, 10);
    let service = start(&config).await;
    let ok = service.submit(simulated(0)).await.unwrap();
    let mut failing = simulated(0);
    failing
        .build_args
        .insert("HELIX_SIMULATE_FAIL".into(), "boom".into());
    let failed = service.submit(failing).await.unwrap();
    let long = service.submit(simulated(60_000)).await.unwrap();
    finished(&service, &ok.id).await;
    finished(&service, &failed.id).await;
    until_running(&service, &long.id).await;
    service.cancel(long.id.as_str()).await.unwrap();
    let before = service.list().await.unwrap();
    let logs_before = service.logs(ok.id.as_str()).await.unwrap().texts();
    service.stop(Duration::from_secs(5)).await;
    drop(service);

    let again = start(&config).await;
    assert_eq!(again.list().await.unwrap(), before);
    assert_eq!(
        again.logs(ok.id.as_str()).await.unwrap().texts(),
        logs_before
    );
    let states: Vec<State> = again
        .list()
        .await
        .unwrap()
        .iter()
        .map(|j| j.state)
        .collect();
    assert_eq!(states, [State::Cancelled, State::Failed, State::Succeeded]);
    // Ids stay taken across restarts.
    let duplicate = again
        .submit(JobRequest {
            id: Some(ok.id.to_string()),
            ..simulated(0)
        })
        .await;
    assert!(
        matches!(&duplicate, Err(ServiceError::Duplicate(id)) if *id == ok.id),
        "{duplicate:?}"
    );
}

/// A job left `running` in the store, as a process killed mid-build leaves it.
async fn interrupted_job(config: &helix_build::config::Config, id: &str, attempts: u32) {
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let StoreLocation::Sqlite(path) = config.store().unwrap() else {
        panic!("the test config uses SQLite");
    };
    let store = SqliteStore::open(&path).unwrap();
    let mut job = Job::from_request(
        JobRequest {
            id: Some(id.into()),
            ..simulated(0)
        },
        &SubmitPolicy::for_builders("simulated", ["simulated"]),
        Utc::now(),
    )
    .unwrap();
    store.insert(&job).await.unwrap();
    for _ in 0..attempts {
        job.start(Utc::now()).unwrap();
        if job.attempts < attempts {
            job.requeue_after_interruption().unwrap();
        }
    }
    store.append_log(
        &job.id,
        &LogLine::new("[helix] running on builder 'simulated'"),
        100,
    );
    store.update(&job).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_jobs_run_again_while_attempts_remain() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir, 1, 10);
    interrupted_job(&config, "was-running", 1).await;
    let restarted = Utc::now();
    let service = start(&config).await;
    let job = finished(&service, &JobId::parse("was-running").unwrap()).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    assert_eq!(job.attempts, 2);
    // A run lost with its host is retried after a backoff of at least a
    // second (2 s at most, with jitter).
    let waited = job.started_at.unwrap() - restarted;
    assert!(waited >= chrono::Duration::milliseconds(1000), "{waited}");
    let logs = service.logs("was-running").await.unwrap().texts();
    assert!(
        logs.iter()
            .any(|l| l.contains("queued again (attempt 2 of 2, in ")),
        "{logs:?}"
    );
    let runs = logs
        .iter()
        .filter(|l| l.contains("running on builder"))
        .count();
    assert_eq!(runs, 2, "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_jobs_without_attempts_left_fail_as_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir, 1, 10);
    interrupted_job(&config, "out-of-attempts", 2).await;
    let service = start(&config).await;
    let job = service.get("out-of-attempts").await.unwrap();
    assert_eq!(job.state, State::Failed);
    assert_eq!(job.attempts, 2);
    let error = job.error.unwrap();
    assert!(error.starts_with("host error: interrupted:"), "{error}");
    assert!(job.completed_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_past_the_retention_are_deleted_with_their_logs_once_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir, 1, 10);
    config.retention_days = 7;
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let StoreLocation::Sqlite(path) = config.store().unwrap() else {
        panic!("the test config uses SQLite");
    };
    {
        let store = SqliteStore::open(&path).unwrap();
        let policy = SubmitPolicy::for_builders("simulated", ["simulated"]);
        for (id, days_ago) in [("last-month", 30), ("yesterday", 1)] {
            let ended = Utc::now() - chrono::Duration::days(days_ago);
            let request = JobRequest {
                id: Some(id.into()),
                ..simulated(0)
            };
            let mut job = Job::from_request(request, &policy, ended).unwrap();
            store.insert(&job).await.unwrap();
            job.start(ended).unwrap();
            store.append_log(&job.id, &LogLine::new("built"), 100);
            job.finish(
                helix_build::job::Outcome::failed(
                    helix_build::job::FailureKind::Build,
                    "RUN false",
                ),
                ended,
            )
            .unwrap();
            store.update(&job).await.unwrap();
        }
    }
    let service = start(&config).await;
    let mut gone = false;
    for _ in 0..500 {
        if service.get("last-month").await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        gone,
        "a job that ended 30 days ago outlives a 7-day retention"
    );
    assert!(service.logs("last-month").await.is_err());
    assert_eq!(service.get("yesterday").await.unwrap().state, State::Failed);
    assert_eq!(service.logs("yesterday").await.unwrap().texts(), ["built"]);
}
