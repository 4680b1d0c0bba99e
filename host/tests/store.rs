//! The job store contract, run against both stores — SQLite and a real
//! PostgreSQL server — and the shared queue's claims and leases, on
//! PostgreSQL with two hosts.

#[allow(dead_code)]
#[path = "common/fixtures.rs"]
mod fixtures;

use std::time::Duration;

use chrono::Utc;
use helix_build::job::{Job, JobId, JobRequest, State, SubmitPolicy};
use helix_build::store::{
    CancelRequest, JobStore, PostgresStore, SharedQueue, SqliteStore, StoreError,
};

fn job(id: &str) -> Job {
    let request = JobRequest {
        repo_url: "https://git.example/a.git".into(),
        platforms: vec!["linux/arm64".into(), "linux/amd64".into()],
        ..JobRequest::default()
    };
    Job::from_request(
        JobRequest {
            id: Some(id.into()),
            ..request
        },
        &SubmitPolicy::for_builders("simulated", ["simulated"]),
        Utc::now(),
    )
    .unwrap()
}

/// The builders a claiming host has in these tests.
fn simulated() -> Vec<String> {
    vec!["simulated".to_string()]
}

/// Starts the oldest queued job, as a host does: by claiming it from a
/// shared queue, else by starting it and storing that.
async fn start_next(store: &dyn JobStore, queue: Option<&dyn SharedQueue>, mut job: Job) -> Job {
    match queue {
        Some(queue) => {
            let claimed = queue
                .claim(Duration::from_secs(30), &simulated())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(claimed.job.id, job.id, "the oldest queued job is claimed");
            claimed.job
        }
        None => {
            job.start(Utc::now()).unwrap();
            store.update(&job).await.unwrap();
            job
        }
    }
}

/// What every store guarantees.
async fn contract(store: &dyn JobStore, queue: Option<&dyn SharedQueue>) {
    for i in 0..5 {
        store.insert(&job(&format!("j{i}"))).await.unwrap();
    }
    assert!(matches!(
        store.insert(&job("j1")).await,
        Err(StoreError::Duplicate(_))
    ));

    // Started jobs keep their state, result and log, in order.
    let mut j0 = start_next(store, queue, job("j0")).await;
    assert_eq!(j0.attempts, 1);
    store.append_log(&j0.id, "first", 100);
    store.append_log(&j0.id, "second", 100);
    j0.finish(
        helix_build::job::Outcome::failed(helix_build::job::FailureKind::Build, "RUN false"),
        Utc::now(),
    )
    .unwrap();
    store.update(&j0).await.unwrap();
    let stored = store.get("j0").await.unwrap().unwrap();
    assert_eq!(stored.state, State::Failed);
    assert_eq!(stored.error.as_deref(), Some("build error: RUN false"));
    assert_eq!(stored.platforms, job("x").platforms);
    assert_eq!(store.log("j0").await.unwrap(), ["first", "second"]);
    assert!(store.get("nope").await.unwrap().is_none());
    assert!(store.log("j1").await.unwrap().is_empty());

    // Pages: newest first, by state, from a cursor; an unknown cursor is None.
    let _j1 = start_next(store, queue, job("j1")).await;
    let ids = |jobs: Vec<Job>| {
        jobs.into_iter()
            .map(|j| j.id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.page(None, 2, None).await.unwrap().unwrap()),
        ["j4", "j3"]
    );
    assert_eq!(
        ids(store.page(None, 10, Some("j3")).await.unwrap().unwrap()),
        ["j2", "j1", "j0"]
    );
    assert_eq!(
        ids(store
            .page(Some(State::Queued), 10, None)
            .await
            .unwrap()
            .unwrap()),
        ["j4", "j3", "j2"]
    );
    assert!(store.page(None, 2, Some("gone")).await.unwrap().is_none());
    let counts = store.count_by_state().await.unwrap();
    for expected in [(State::Queued, 3), (State::Running, 1), (State::Failed, 1)] {
        assert!(counts.contains(&expected), "{counts:?}");
    }

    // Logs keep about the last `cap` lines.
    let j1 = JobId::parse("j1").unwrap();
    for i in 0..1000 {
        store.append_log(&j1, &format!("line {i}"), 100);
    }
    store.insert(&job("after-the-log")).await.unwrap();
    let log = store.log("j1").await.unwrap();
    assert!((100..=356).contains(&log.len()), "{}", log.len());
    assert_eq!(log.last().map(String::as_str), Some("line 999"));
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("helix.db")).unwrap();
    contract(&store, None).await;
}

#[tokio::test]
async fn the_sqlite_store_keeps_what_was_written_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("helix.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        let mut a = job("a");
        store.insert(&a).await.unwrap();
        store.insert(&job("b")).await.unwrap();
        a.start(Utc::now()).unwrap();
        store.append_log(&a.id, "first", 100);
        store.update(&a).await.unwrap();
        a.finish(
            helix_build::job::Outcome::failed(helix_build::job::FailureKind::Build, "RUN false"),
            Utc::now(),
        )
        .unwrap();
        // Not waited for: dropping the store commits what is queued.
        drop(store.update(&a));
        store.append_log(&a.id, "second", 100);
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.get("a").await.unwrap().unwrap().state, State::Failed);
    assert_eq!(store.log("a").await.unwrap(), ["first", "second"]);
    let unfinished = store.load_unfinished().await.unwrap();
    let ids: Vec<&str> = unfinished.iter().map(|s| s.job.id.as_str()).collect();
    assert_eq!(ids, ["b"], "only live jobs are loaded at start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_keeps_the_contract() {
    let postgres = fixtures::Postgres::start();
    let store = PostgresStore::connect(&postgres.url(), "host-a")
        .await
        .unwrap();
    contract(store.as_ref(), Some(store.as_ref())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_claim_each_job_once_and_take_over_lost_leases() {
    let postgres = fixtures::Postgres::start();
    let a = PostgresStore::connect(&postgres.url(), "host-a")
        .await
        .unwrap();
    let b = PostgresStore::connect(&postgres.url(), "host-b")
        .await
        .unwrap();
    for i in 0..40 {
        a.insert(&job(&format!("q{i}"))).await.unwrap();
    }
    // Both hosts claim at once; every job goes to exactly one of them.
    let lease = Duration::from_secs(30);
    let claim_all = |queue: std::sync::Arc<PostgresStore>| async move {
        let mut ids = Vec::new();
        while let Some(stored) = queue.claim(lease, &simulated()).await.unwrap() {
            ids.push(stored.job.id.to_string());
        }
        ids
    };
    let (by_a, by_b) = tokio::join!(claim_all(a.clone()), claim_all(b.clone()));
    let mut all: Vec<_> = by_a.iter().chain(&by_b).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40, "a: {by_a:?}\nb: {by_b:?}");
    assert_eq!(by_a.len() + by_b.len(), 40, "no job claimed twice");

    // Host A's heartbeat holds its jobs; a lease that ran out is taken
    // over: queued again with the attempt counted.
    let ids = |claimed: &[String]| -> Vec<JobId> {
        claimed.iter().map(|id| JobId::parse(id).unwrap()).collect()
    };
    let (held_by_a, held_by_b) = (ids(&by_a), ids(&by_b));
    let beat = a.heartbeat(lease, &held_by_a).await.unwrap();
    assert_eq!(beat.held.len(), by_a.len());
    let beat = a.heartbeat(lease, &held_by_b).await.unwrap();
    assert!(beat.held.is_empty(), "a cannot renew b's leases");
    let lost = a.heartbeat(Duration::ZERO, &held_by_a).await.unwrap();
    assert_eq!(lost.held.len(), by_a.len());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(b.recover_lost(2, false).await.unwrap(), by_a.len());
    let taken = a.get(&by_a[0]).await.unwrap().unwrap();
    assert_eq!((taken.state, taken.attempts), (State::Queued, 1));
    let log = a.log(&by_a[0]).await.unwrap();
    assert!(
        log.iter()
            .any(|l| l.contains("host lost: 'host-a' stopped renewing")),
        "{log:?}"
    );
    assert!(
        a.heartbeat(lease, &held_by_a)
            .await
            .unwrap()
            .held
            .is_empty()
    );

    // A's late write about a job it lost changes nothing.
    let mut stale = taken.clone();
    stale.start(Utc::now()).unwrap();
    stale.attempts = 1;
    assert!(a.update(&stale).await.is_err());
    assert_eq!(a.get(&by_a[0]).await.unwrap().unwrap().state, State::Queued);

    // Cancelling: a queued job ends at once; a running one is asked for.
    match a
        .request_cancel(&by_a[0], "cancelled by request")
        .await
        .unwrap()
    {
        CancelRequest::Cancelled(job) => assert_eq!(job.state, State::Cancelled),
        other => panic!("{other:?}"),
    }
    let mut notices = b.notices();
    assert!(matches!(
        a.request_cancel(&by_b[0], "cancelled by request")
            .await
            .unwrap(),
        CancelRequest::Asked
    ));
    let notice = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(helix_build::store::Notice::Cancel(id)) = notices.recv().await {
                return id;
            }
        }
    })
    .await
    .expect("the cancel notice arrives");
    assert_eq!(notice, by_b[0]);
    let beat = b.heartbeat(lease, &held_by_b).await.unwrap();
    assert!(beat.cancel.iter().any(|(id, _)| id.as_str() == by_b[0]));
    assert!(matches!(
        a.request_cancel("nope", "x").await.unwrap(),
        CancelRequest::NotFound
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_its_host_never_recorded_goes_back_to_the_queue() {
    let postgres = fixtures::Postgres::start();
    let a = PostgresStore::connect(&postgres.url(), "host-a")
        .await
        .unwrap();
    a.insert(&job("half")).await.unwrap();
    // Host C claimed the job and died before recording the claim in the
    // job itself; its lease has run out.
    let (client, connection) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE jobs SET state = 'running', owner = 'host-c', attempts = attempts + 1, \
             lease_until = now() - interval '1 second' WHERE id = 'half'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(a.recover_lost(2, false).await.unwrap(), 1);
    let back = a.get("half").await.unwrap().unwrap();
    assert_eq!((back.state, back.attempts), (State::Queued, 0));
    let claimed = a
        .claim(Duration::from_secs(30), &simulated())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (claimed.job.state, claimed.job.attempts),
        (State::Running, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_claims_only_jobs_for_builders_it_has() {
    let postgres = fixtures::Postgres::start();
    let store = PostgresStore::connect(&postgres.url(), "host-a")
        .await
        .unwrap();
    let mut podman = job("needs-podman");
    podman.builder = "podman".into();
    store.insert(&podman).await.unwrap();
    store.insert(&job("simulated-one")).await.unwrap();
    let lease = Duration::from_secs(30);
    let claimed = store.claim(lease, &simulated()).await.unwrap().unwrap();
    assert_eq!(
        claimed.job.id.as_str(),
        "simulated-one",
        "the older job needs podman"
    );
    assert!(store.claim(lease, &simulated()).await.unwrap().is_none());
    let podman_host = vec!["podman".to_string(), "buildah".to_string()];
    let claimed = store.claim(lease, &podman_host).await.unwrap().unwrap();
    assert_eq!(claimed.job.id.as_str(), "needs-podman");
}
