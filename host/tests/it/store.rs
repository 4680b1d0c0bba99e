//! The job store and the queue, each contract run against both
//! implementations — SQLite (with the local queue) and a real PostgreSQL
//! server — and the shared queue's claims and leases with two hosts.

use crate::common::LogText as _;
use helix_build::log::{LogLine, LogSink as _};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use helix_build::job::{
    FailureKind, Job, JobId, JobRequest, Outcome, Phase, PhaseName, State, SubmitPolicy,
};
use helix_build::queue::{ClaimRules, JobQueue, LocalQueue, Notice};
use helix_build::store::{
    JobFilter, JobStore, OwedNotification, PostgresStore, SqliteStore, StoreError,
};
use helix_fixtures::Postgres;

const LEASE: Duration = Duration::from_secs(30);

fn job(id: &str) -> Job {
    let request = JobRequest {
        id: Some(id.into()),
        repo_url: "https://git.example/a.git".into(),
        platforms: vec!["linux/arm64".into(), "linux/amd64".into()],
        ..JobRequest::default()
    };
    let policy = SubmitPolicy::for_builders("simulated", ["simulated"]);
    Job::from_request(request, &policy, Utc::now()).unwrap()
}

/// The builders a claiming host has in these tests.
fn simulated() -> Vec<String> {
    vec!["simulated".to_string()]
}

/// Claims for `builders`, no project limited, no default queue TTL.
fn rules(builders: &[String]) -> ClaimRules<'_> {
    static UNLIMITED: BTreeMap<String, u32> = BTreeMap::new();
    ClaimRules {
        builders,
        max_running: &UNLIMITED,
        default_ttl: None,
    }
}

fn start_now(job: &mut Job) -> Result<(), helix_build::job::TransitionError> {
    job.start(Utc::now())
}

fn ids(jobs: Vec<Job>) -> Vec<String> {
    jobs.into_iter().map(|j| j.id.to_string()).collect()
}

fn sqlite() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("helix.db")).unwrap());
    (dir, store)
}

/// A SQLite store and the local queue over it.
async fn sqlite_with_queue() -> (tempfile::TempDir, Arc<SqliteStore>, LocalQueue) {
    let (dir, store) = sqlite();
    let queue = LocalQueue::open(store.clone()).await.unwrap();
    (dir, store, queue)
}

async fn postgres(server: &Postgres, host: &str) -> Arc<PostgresStore> {
    PostgresStore::connect(&server.url(), host, LEASE)
        .await
        .unwrap()
}

/// Ends queued `job` cancelled through `queue`; whether it was still
/// queued.
async fn cancel_queued(queue: &dyn JobQueue, job: &mut Job) -> bool {
    let reason = "by request".to_string();
    job.finish(Outcome::Cancelled { reason }, Utc::now())
        .unwrap();
    queue.withdraw(job, "[test] withdrawn").await.unwrap()
}

// The store's contract, one behaviour each.

/// `job(id)` for builder `builder`, queued and claimed through `queue`:
/// a stored job becomes running only by a claim.
async fn running(queue: &dyn JobQueue, id: &str, builder: &str) -> Job {
    let mut queued = job(id);
    queued.builder = builder.into();
    queue.enqueue(&queued).await.unwrap();
    let claimed = queue
        .claim(&rules(&[builder.to_string()]), &start_now)
        .await
        .unwrap();
    claimed.unwrap().job
}

async fn keeps_state_result_commit_and_log_in_order(store: &dyn JobStore, queue: &dyn JobQueue) {
    let mut j = running(queue, "kept", "kept").await;
    let first = LogLine::new("first");
    std::thread::sleep(Duration::from_millis(2));
    let second = LogLine::new("second");
    store.append_log(&j.id, &first, 100);
    store.append_log(&j.id, &second, 100);
    let commit = "0123456789abcdef0123456789abcdef01234567";
    j.commit = Some(commit.into());
    j.phases = vec![
        Phase {
            name: PhaseName::Checkout,
            ms: 12,
        },
        Phase {
            name: PhaseName::Build,
            ms: 3_456,
        },
    ];
    let used = helix_build::job::Resources {
        cpu_seconds: 1.25,
        peak_memory_bytes: 64 << 20,
        pushed_bytes: 12_345,
    };
    j.resources = Some(used);
    j.finish(Outcome::failed(FailureKind::Build, "RUN false"), Utc::now())
        .unwrap();
    store.update(&j).await.unwrap();
    let stored = store.get("kept").await.unwrap().unwrap();
    assert_eq!(stored.state, State::Failed);
    assert_eq!(stored.error.as_deref(), Some("build error: RUN false"));
    assert_eq!(stored.platforms, j.platforms);
    assert_eq!(stored.commit.as_deref(), Some(commit));
    assert_eq!(stored.phases, j.phases);
    assert_eq!(stored.resources, Some(used), "what the run used");
    assert_eq!(
        store.log("kept").await.unwrap(),
        [first, second],
        "each line with the time it was taken"
    );
    assert!(store.get("nope").await.unwrap().is_none());
    assert!(store.log("nope").await.unwrap().texts().is_empty());
}

/// `id` run through `queue` and ended `ago` before now, with a log line.
async fn ended(store: &dyn JobStore, queue: &dyn JobQueue, id: &str, ago: chrono::Duration) -> Job {
    let mut j = running(queue, id, "pruning").await;
    store.append_log(&j.id, &LogLine::new("built"), 100);
    j.finish(
        Outcome::failed(FailureKind::Build, "RUN false"),
        Utc::now() - ago,
    )
    .unwrap();
    store.update(&j).await.unwrap();
    j
}

async fn prunes_ended_jobs_and_their_logs_never_live_ones(
    store: &dyn JobStore,
    queue: &dyn JobQueue,
) {
    let days = chrono::Duration::days;
    ended(store, queue, "old", days(40)).await;
    ended(store, queue, "recent", days(0)).await;
    running(queue, "live", "pruning").await;

    let pruned = store
        .prune(Some(Utc::now() - days(30)), None)
        .await
        .unwrap();
    assert!(pruned >= 1, "{pruned}");
    assert!(
        store.get("old").await.unwrap().is_none(),
        "ended 40 days ago"
    );
    assert!(
        store.log("old").await.unwrap().is_empty(),
        "its log goes with it"
    );
    assert!(store.get("recent").await.unwrap().is_some());
    assert_eq!(store.log("recent").await.unwrap().texts(), ["built"]);

    // By count: only the newest ended job stays, and every live one.
    ended(store, queue, "newest", days(0)).await;
    store.prune(None, Some(1)).await.unwrap();
    assert!(store.get("recent").await.unwrap().is_none());
    assert!(store.log("recent").await.unwrap().is_empty());
    assert!(store.get("newest").await.unwrap().is_some());
    let live = store.get("live").await.unwrap().unwrap();
    assert_eq!(live.state, State::Running, "a live job is never pruned");
    assert_eq!(
        store.prune(None, Some(1)).await.unwrap(),
        0,
        "nothing more to prune"
    );
}

/// The ids of `owed`, sorted, with how many deliveries each has begun.
fn owed_ids(owed: &[OwedNotification]) -> Vec<(String, u32)> {
    let mut ids: Vec<_> = owed
        .iter()
        .map(|o| (o.job.id.to_string(), o.attempts))
        .collect();
    ids.sort();
    ids
}

/// Every way a job ends owes one notification, in the write that ends
/// it: a run's end, and a queued job withdrawn. Taken, it is nobody
/// else's until its lease runs out; settled, it is gone or due again
/// with the targets already told.
async fn owes_one_notification_per_ended_job(store: &dyn JobStore, queue: &dyn JobQueue) {
    let day = Duration::from_secs(24 * 3600);
    let mut ran = running(queue, "told", "notifying").await;
    running(queue, "still-running", "notifying").await;
    let mut withdrawn = job("withdrawn");
    queue.enqueue(&withdrawn).await.unwrap();
    assert!(store.owed_notifications(day, 10).await.unwrap().is_empty());

    ran.finish(Outcome::failed(FailureKind::Build, "RUN false"), Utc::now())
        .unwrap();
    store.update(&ran).await.unwrap();
    // A second write of the same end owes nothing more.
    store.update(&ran).await.unwrap();
    assert!(cancel_queued(queue, &mut withdrawn).await);

    // A lease of nothing: handed out again at once, as after a crash.
    let owed = store.owed_notifications(Duration::ZERO, 10).await.unwrap();
    assert_eq!(
        owed_ids(&owed),
        [("told".into(), 1), ("withdrawn".into(), 1)]
    );
    let told = owed.iter().find(|o| o.job.id.as_str() == "told").unwrap();
    assert_eq!(told.job.state, State::Failed, "the job as it ended");
    assert!(told.delivered.is_empty());
    let owed = store.owed_notifications(day, 10).await.unwrap();
    assert_eq!(
        owed_ids(&owed),
        [("told".into(), 2), ("withdrawn".into(), 2)]
    );
    assert!(
        store.owed_notifications(day, 10).await.unwrap().is_empty(),
        "taken for a day"
    );

    let delivered = vec!["http://127.0.0.1:1/a".to_string()];
    store
        .settle_notification("told", &delivered, Some(Duration::ZERO))
        .await
        .unwrap();
    let owed = store.owed_notifications(day, 10).await.unwrap();
    assert_eq!(owed_ids(&owed), [("told".into(), 3)]);
    assert_eq!(owed[0].delivered, delivered);
    store
        .settle_notification("told", &delivered, None)
        .await
        .unwrap();
    store
        .settle_notification("withdrawn", &[], Some(Duration::ZERO))
        .await
        .unwrap();
    // Pruning a job drops what is owed for it.
    store.prune(None, Some(0)).await.unwrap();
    assert!(
        store
            .owed_notifications(Duration::ZERO, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A job's records (its runs' audit trails, its provenance) are kept by
/// name, rewritten whole when written again, listed by name prefix in
/// name order; an unknown job has none; pruning drops them.
async fn keeps_a_jobs_records_by_name(store: &dyn JobStore, queue: &dyn JobQueue) {
    let mut j = running(queue, "recorded", "recording").await;
    assert_eq!(store.records("recorded", "").await.unwrap(), Some(vec![]));
    store.put_record(&j.id, "audit.000002", "second run".into());
    store.put_record(&j.id, "audit.000001", "first, early".into());
    store.put_record(&j.id, "audit.000001", "first run".into());
    store.put_record(&j.id, "provenance", "{}".into());
    j.finish(Outcome::failed(FailureKind::Build, "RUN false"), Utc::now())
        .unwrap();
    store.update(&j).await.unwrap();
    assert_eq!(
        store.records("recorded", "audit.").await.unwrap().unwrap(),
        ["first run", "second run"]
    );
    assert_eq!(
        store
            .records("recorded", "provenance")
            .await
            .unwrap()
            .unwrap(),
        ["{}"]
    );
    assert!(store.records("nope", "").await.unwrap().is_none());
    store.prune(None, Some(0)).await.unwrap();
    assert!(store.records("recorded", "").await.unwrap().is_none());
}

async fn refuses_a_duplicate_id(store: &dyn JobStore) {
    store.insert(&job("once")).await.unwrap();
    let again = store.insert(&job("once")).await;
    assert!(
        matches!(&again, Err(StoreError::Duplicate(id)) if id.as_str() == "once"),
        "{again:?}"
    );
}

async fn pages_newest_first_by_state_from_a_cursor(store: &dyn JobStore, queue: &dyn JobQueue) {
    let count = |counts: &[(State, u64)], state| {
        counts
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    };
    let earlier = store.count_by_state().await.unwrap();
    running(queue, "p0", "pages").await;
    for i in 1..5 {
        store.insert(&job(&format!("p{i}"))).await.unwrap();
    }
    let all = JobFilter::default();
    let running_only = JobFilter {
        state: Some(State::Running),
        ..JobFilter::default()
    };
    assert_eq!(
        ids(store.page(&all, 2, None).await.unwrap().unwrap()),
        ["p4", "p3"]
    );
    assert_eq!(
        ids(store.page(&all, 3, Some("p3")).await.unwrap().unwrap()),
        ["p2", "p1", "p0"]
    );
    assert_eq!(
        ids(store.page(&running_only, 1, None).await.unwrap().unwrap()),
        ["p0"]
    );
    assert!(store.page(&all, 2, Some("gone")).await.unwrap().is_none());
    // By concurrency group, and by group and state together.
    let mut grouped = job("p5");
    grouped.group = Some("team/app:main".into());
    store.insert(&grouped).await.unwrap();
    let group = |state| JobFilter {
        state,
        group: Some("team/app:main".into()),
        ..JobFilter::default()
    };
    assert_eq!(
        ids(store.page(&group(None), 10, None).await.unwrap().unwrap()),
        ["p5"]
    );
    assert_eq!(
        ids(store
            .page(&group(Some(State::Queued)), 10, None)
            .await
            .unwrap()
            .unwrap()),
        ["p5"]
    );
    assert!(
        store
            .page(&group(Some(State::Running)), 10, None)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    let counts = store.count_by_state().await.unwrap();
    for (state, added) in [(State::Queued, 5), (State::Running, 1), (State::Failed, 0)] {
        let now = count(&counts, state);
        assert_eq!(now, count(&earlier, state) + added, "{state}: {counts:?}");
    }
    // By builder, and by text in the id, repository URL or image; with a
    // state too.
    let mut other = job("p6");
    other.builder = "podman".into();
    other.repo_url = "https://git.example/needle.git".into();
    store.insert(&other).await.unwrap();
    // The image asked for and the one built can differ; either is found.
    let mut pushed = job("p7");
    pushed.image = Some("registry.example/team/asked:1".into());
    pushed.image_tag = Some("registry.example/team/built:1".into());
    store.insert(&pushed).await.unwrap();
    let by = |state, builder: Option<&str>, text: Option<&str>| JobFilter {
        state,
        builder: builder.map(String::from),
        text: text.map(String::from),
        ..JobFilter::default()
    };
    for (filter, expected) in [
        (by(None, Some("podman"), None), vec!["p6"]),
        (by(None, None, Some("needle")), vec!["p6"]),
        (by(None, None, Some("p5")), vec!["p5"]),
        (
            by(Some(State::Queued), Some("podman"), Some("needle")),
            vec!["p6"],
        ),
        (by(Some(State::Running), Some("podman"), None), vec![]),
        (by(None, Some("simulated"), Some("needle")), vec![]),
        (by(None, None, Some("team/asked")), vec!["p7"]),
        (by(None, None, Some("team/built")), vec!["p7"]),
    ] {
        let page = store.page(&filter, 10, None).await.unwrap().unwrap();
        assert_eq!(ids(page), expected, "{filter:?}");
    }
}

async fn keeps_about_the_last_cap_log_lines(store: &dyn JobStore) {
    let long = job("long");
    store.insert(&long).await.unwrap();
    for i in 0..1000 {
        store.append_log(&long.id, &LogLine::new(format!("line {i}")), 100);
    }
    // A write waited for: every line before it is stored too.
    store.insert(&job("after-the-log")).await.unwrap();
    let log = store.log("long").await.unwrap().texts();
    assert!((100..=356).contains(&log.len()), "{}", log.len());
    assert_eq!(log.last().map(String::as_str), Some("line 999"));
}

#[tokio::test]
async fn sqlite_keeps_state_result_commit_and_log_in_order() {
    let (_dir, store, queue) = sqlite_with_queue().await;
    keeps_state_result_commit_and_log_in_order(store.as_ref(), &queue).await;
}

#[tokio::test]
async fn sqlite_prunes_ended_jobs_and_their_logs_never_live_ones() {
    let (_dir, store, queue) = sqlite_with_queue().await;
    prunes_ended_jobs_and_their_logs_never_live_ones(store.as_ref(), &queue).await;
}

#[tokio::test]
async fn sqlite_owes_one_notification_per_ended_job() {
    let (_dir, store, queue) = sqlite_with_queue().await;
    owes_one_notification_per_ended_job(store.as_ref(), &queue).await;
}

#[tokio::test]
async fn sqlite_keeps_a_jobs_records_by_name() {
    let (_dir, store, queue) = sqlite_with_queue().await;
    keeps_a_jobs_records_by_name(store.as_ref(), &queue).await;
}

#[tokio::test]
async fn sqlite_refuses_a_duplicate_id() {
    refuses_a_duplicate_id(sqlite().1.as_ref()).await;
}

#[tokio::test]
async fn sqlite_pages_newest_first_by_state_from_a_cursor() {
    let (_dir, store, queue) = sqlite_with_queue().await;
    pages_newest_first_by_state_from_a_cursor(store.as_ref(), &queue).await;
}

#[tokio::test]
async fn sqlite_keeps_about_the_last_cap_log_lines() {
    keeps_about_the_last_cap_log_lines(sqlite().1.as_ref()).await;
}

/// One server for the whole contract: starting PostgreSQL takes seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_store_contract() {
    let server = Postgres::start();
    let store = postgres(&server, "host-a").await;
    // First: it takes every notification owed.
    owes_one_notification_per_ended_job(store.as_ref(), store.as_ref()).await;
    keeps_a_jobs_records_by_name(store.as_ref(), store.as_ref()).await;
    keeps_state_result_commit_and_log_in_order(store.as_ref(), store.as_ref()).await;
    refuses_a_duplicate_id(store.as_ref()).await;
    pages_newest_first_by_state_from_a_cursor(store.as_ref(), store.as_ref()).await;
    keeps_about_the_last_cap_log_lines(store.as_ref()).await;
    // Last: it prunes what the others left too.
    prunes_ended_jobs_and_their_logs_never_live_ones(store.as_ref(), store.as_ref()).await;
}

#[tokio::test]
async fn sqlite_keeps_what_was_written_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("helix.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        let mut a = job("a");
        store.insert(&a).await.unwrap();
        store.insert(&job("b")).await.unwrap();
        a.start(Utc::now()).unwrap();
        store.append_log(&a.id, &LogLine::new("first"), 100);
        store.update(&a).await.unwrap();
        a.finish(Outcome::failed(FailureKind::Build, "RUN false"), Utc::now())
            .unwrap();
        // Not waited for: dropping the store commits what is queued.
        drop(store.update(&a));
        store.append_log(&a.id, &LogLine::new("second"), 100);
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.get("a").await.unwrap().unwrap().state, State::Failed);
    assert_eq!(store.log("a").await.unwrap().texts(), ["first", "second"]);
    let unfinished = store.load_unfinished().await.unwrap();
    let ids: Vec<&str> = unfinished.iter().map(|s| s.job.id.as_str()).collect();
    assert_eq!(ids, ["b"], "only live jobs are loaded at start");
}

// The queue's contract.

/// Claims the oldest job first, started and stored as started; a queued
/// job is withdrawn once, a claimed one not at all.
async fn hands_out_the_oldest_and_withdraws_only_queued(
    queue: &dyn JobQueue,
    store: &dyn JobStore,
) {
    for id in ["q0", "q1", "q2"] {
        queue.enqueue(&job(id)).await.unwrap();
    }
    assert_eq!(queue.depth().await.unwrap(), 3);
    let claimed = queue
        .claim(&rules(&simulated()), &start_now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.job.id.as_str(), "q0");
    assert_eq!(
        (claimed.job.state, claimed.job.attempts),
        (State::Running, 1)
    );
    assert!(claimed.log.is_empty());

    let mut cancelled = job("q1");
    assert!(cancel_queued(queue, &mut cancelled).await);
    assert_eq!(
        store.log("q1").await.unwrap().texts(),
        ["[test] withdrawn"],
        "the line is durable when withdraw returns"
    );
    assert!(
        !queue.withdraw(&cancelled, "again").await.unwrap(),
        "only once"
    );
    let mut running = claimed.job.clone();
    running
        .finish(Outcome::Cancelled { reason: "x".into() }, Utc::now())
        .unwrap();
    assert!(
        !queue.withdraw(&running, "x").await.unwrap(),
        "q0 was claimed"
    );
    assert_eq!(queue.depth().await.unwrap(), 1);
    let next = queue
        .claim(&rules(&simulated()), &start_now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.job.id.as_str(), "q2", "q1 was withdrawn");
    assert!(
        queue
            .claim(&rules(&simulated()), &start_now)
            .await
            .unwrap()
            .is_none()
    );
    // What the queue wrote is what the store reads (the local queue's
    // claim is written in order with later writes).
    store.insert(&job("barrier")).await.unwrap();
    assert_eq!(
        store.get("q1").await.unwrap().unwrap().state,
        State::Cancelled
    );
    assert_eq!(
        store.get("q2").await.unwrap().unwrap().state,
        State::Running
    );
}

/// `job(id)` of project `project` (none: no project), with `priority`.
fn of_project(id: &str, project: Option<&str>, priority: i32) -> Job {
    Job {
        project: project.map(str::to_string),
        priority,
        ..job(id)
    }
}

/// Ids of what `queue` hands out under `rules`, claim after claim, until
/// it hands out nothing.
async fn claim_all(queue: &dyn JobQueue, rules: &ClaimRules<'_>) -> Vec<Job> {
    let mut claimed = Vec::new();
    while let Some(stored) = queue.claim(rules, &start_now).await.unwrap() {
        claimed.push(stored.job);
    }
    claimed
}

/// Stores the end of `running`, which `queue` handed out, and tells the
/// queue, as a run's end does.
async fn end_run(queue: &dyn JobQueue, store: &dyn JobStore, running: &Job) {
    let mut ended = running.clone();
    ended
        .finish(Outcome::failed(FailureKind::Build, "ended"), Utc::now())
        .unwrap();
    store.update(&ended).await.unwrap();
    queue.ended(&ended.id);
}

/// A free worker takes from the project with the fewest running jobs
/// (no project counting as one), by priority and then age among equals
/// and within a project.
async fn shares_workers_between_projects(queue: &dyn JobQueue) {
    for (id, project, priority) in [
        ("a1", Some("a"), 0),
        ("a2", Some("a"), 0),
        ("a3", Some("a"), 50),
        ("b1", Some("b"), 0),
        ("n1", None, 0),
        ("b2", Some("b"), 0),
    ] {
        queue
            .enqueue(&of_project(id, project, priority))
            .await
            .unwrap();
    }
    assert_eq!(queue.depth_of("a").await.unwrap(), 3);
    assert_eq!(queue.depth_of("b").await.unwrap(), 2);
    assert_eq!(
        ids(claim_all(queue, &rules(&simulated())).await),
        ["a3", "b1", "n1", "a1", "b2", "a2"]
    );
}

#[tokio::test]
async fn the_local_queue_shares_workers_between_projects() {
    let (_dir, _store, queue) = sqlite_with_queue().await;
    shares_workers_between_projects(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_queue_shares_workers_between_projects() {
    let server = Postgres::start();
    let store = postgres(&server, "host-a").await;
    shares_workers_between_projects(store.as_ref()).await;
}

/// A project at its `max_running` gets no more until one of its runs
/// ends; other projects' jobs start meanwhile.
async fn holds_a_projects_max_running(queue: &dyn JobQueue, store: &dyn JobStore) {
    for (id, project) in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")] {
        queue
            .enqueue(&of_project(id, Some(project), 0))
            .await
            .unwrap();
    }
    let limits = BTreeMap::from([("a".to_string(), 2)]);
    let builders = simulated();
    let limited = ClaimRules {
        max_running: &limits,
        ..rules(&builders)
    };
    let claimed = claim_all(queue, &limited).await;
    assert_eq!(ids(claimed.clone()), ["a1", "b1", "a2"]);
    end_run(queue, store, &claimed[0]).await;
    assert_eq!(ids(claim_all(queue, &limited).await), ["a3"]);
}

#[tokio::test]
async fn the_local_queue_holds_a_projects_max_running() {
    let (_dir, store, queue) = sqlite_with_queue().await;
    holds_a_projects_max_running(&queue, store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_queue_holds_a_projects_max_running() {
    let server = Postgres::start();
    let store = postgres(&server, "host-a").await;
    holds_a_projects_max_running(store.as_ref(), store.as_ref()).await;
}

/// A job past its queue TTL (its own, or the default) is never claimed;
/// it stays for the sweep, which finds it overdue.
async fn never_claims_a_job_past_its_queue_ttl(queue: &dyn JobQueue) {
    let two_seconds_ago = Utc::now() - chrono::Duration::seconds(2);
    let own_ttl = Job {
        queue_ttl_secs: Some(1),
        created_at: two_seconds_ago,
        ..job("own-ttl")
    };
    let default_ttl = Job {
        created_at: two_seconds_ago,
        ..job("default-ttl")
    };
    let patient = Job {
        queue_ttl_secs: Some(3600),
        created_at: two_seconds_ago,
        ..job("patient")
    };
    for waiting in [&own_ttl, &default_ttl, &patient, &job("fresh")] {
        queue.enqueue(waiting).await.unwrap();
    }
    let builders = simulated();
    let one_second = ClaimRules {
        default_ttl: Some(Duration::from_secs(1)),
        ..rules(&builders)
    };
    assert_eq!(
        ids(claim_all(queue, &one_second).await),
        ["patient", "fresh"]
    );
    let overdue = queue
        .overdue(Some(Duration::from_secs(1)), Utc::now())
        .await
        .unwrap();
    assert_eq!(ids(overdue), ["own-ttl", "default-ttl"]);
}

#[tokio::test]
async fn the_local_queue_never_claims_a_job_past_its_queue_ttl() {
    let (_dir, _store, queue) = sqlite_with_queue().await;
    never_claims_a_job_past_its_queue_ttl(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_queue_never_claims_a_job_past_its_queue_ttl() {
    let server = Postgres::start();
    let store = postgres(&server, "host-a").await;
    never_claims_a_job_past_its_queue_ttl(store.as_ref()).await;
}

/// Two hosts claiming at once never run more of a project than its
/// `max_running` between them: the count and the claim are one step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_claiming_at_once_hold_a_projects_max_running() {
    let server = Postgres::start();
    let a = postgres(&server, "host-a").await;
    let b = postgres(&server, "host-b").await;
    for i in 0..30 {
        a.enqueue(&of_project(&format!("p{i}"), Some("p"), 0))
            .await
            .unwrap();
    }
    let limits = BTreeMap::from([("p".to_string(), 3)]);
    let builders = simulated();
    let limited = ClaimRules {
        max_running: &limits,
        ..rules(&builders)
    };
    let mut ran = 0;
    while ran < 30 {
        let claims = (0..8).map(|i| {
            let host = if i % 2 == 0 { a.clone() } else { b.clone() };
            async move {
                let claimed = host.claim(&limited, &start_now).await.unwrap();
                claimed.map(|stored| (host, stored.job))
            }
        });
        let claimed: Vec<_> = futures_util::future::join_all(claims)
            .await
            .into_iter()
            .flatten()
            .collect();
        let running = a
            .count_by_state()
            .await
            .unwrap()
            .into_iter()
            .find(|(state, _)| *state == State::Running)
            .map_or(0, |(_, n)| n);
        assert!(
            running <= 3 && claimed.len() as u64 == running,
            "{running} running, {} claimed",
            claimed.len()
        );
        assert!(running > 0, "one of the claims holds the project's lock");
        ran += claimed.len();
        for (host, job) in claimed {
            end_run(host.as_ref(), host.as_ref(), &job).await;
        }
    }
    assert_eq!(ran, 30);
}

#[tokio::test]
async fn the_local_queue_hands_out_the_oldest_and_withdraws_only_queued() {
    let (_dir, store, queue) = sqlite_with_queue().await;
    hands_out_the_oldest_and_withdraws_only_queued(&queue, store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_queue_hands_out_the_oldest_and_withdraws_only_queued() {
    let server = Postgres::start();
    let store = postgres(&server, "host-a").await;
    hands_out_the_oldest_and_withdraws_only_queued(store.as_ref(), store.as_ref()).await;
}

#[tokio::test]
async fn the_local_queue_reopens_with_its_queue_and_its_lost_runs() {
    let (_dir, store) = sqlite();
    {
        let queue = LocalQueue::open(store.clone()).await.unwrap();
        for id in ["first", "second", "third"] {
            queue.enqueue(&job(id)).await.unwrap();
        }
        queue
            .claim(&rules(&simulated()), &start_now)
            .await
            .unwrap()
            .unwrap();
    }
    store.insert(&job("barrier")).await.unwrap();
    let queue = LocalQueue::open(store.clone()).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), 3, "second, third, barrier");
    let lost = queue.lost_runs(true).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].job.id.as_str(), "first");
    assert!(
        queue.lost_runs(true).await.unwrap().is_empty(),
        "reported once"
    );
    let mut again = lost[0].job.clone();
    again.requeue_after_interruption().unwrap();
    assert!(
        queue
            .replace_lost(&lost[0], &again, "[test] back")
            .await
            .unwrap()
    );
    let next = queue
        .claim(&rules(&simulated()), &start_now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.job.id.as_str(), "first", "back in submission order");
    assert_eq!(next.job.attempts, 2);
    assert_eq!(
        next.log.texts(),
        ["[test] back"],
        "the claim continues the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_claim_each_job_once() {
    let server = Postgres::start();
    let a = postgres(&server, "host-a").await;
    let b = postgres(&server, "host-b").await;
    for i in 0..40 {
        a.enqueue(&job(&format!("q{i}"))).await.unwrap();
    }
    let claim_all = |queue: Arc<PostgresStore>| async move {
        let mut ids = Vec::new();
        while let Some(stored) = queue.claim(&rules(&simulated()), &start_now).await.unwrap() {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_ran_out_is_taken_over_and_the_old_host_cannot_write() {
    let server = Postgres::start();
    let short = PostgresStore::connect(&server.url(), "host-a", Duration::ZERO)
        .await
        .unwrap();
    let b = postgres(&server, "host-b").await;
    short.enqueue(&job("taken")).await.unwrap();
    let claimed = short
        .claim(&rules(&simulated()), &start_now)
        .await
        .unwrap()
        .unwrap();
    let held = [claimed.job.id.clone()];
    assert!(
        b.heartbeat(&held).await.unwrap().held.is_empty(),
        "b cannot renew a's lease"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;

    let lost = b.lost_runs(false).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].owner.as_deref(), Some("host-a"));
    let mut again = lost[0].job.clone();
    again.requeue_after_interruption().unwrap();
    assert!(
        b.replace_lost(&lost[0], &again, "[test] taken over")
            .await
            .unwrap()
    );
    assert_eq!(b.log("taken").await.unwrap().texts(), ["[test] taken over"]);
    assert!(
        !b.replace_lost(&lost[0], &again, "twice").await.unwrap(),
        "recovered once"
    );
    let taken = b.get("taken").await.unwrap().unwrap();
    assert_eq!((taken.state, taken.attempts), (State::Queued, 1));

    // A's late write about the run it lost changes nothing.
    let mut stale = claimed.job.clone();
    stale
        .finish(Outcome::failed(FailureKind::Build, "late"), Utc::now())
        .unwrap();
    let late = short.update(&stale).await;
    assert!(
        matches!(&late, Err(StoreError::Lost(id)) if id.as_str() == "taken"),
        "{late:?}"
    );
    assert_eq!(b.get("taken").await.unwrap().unwrap().state, State::Queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_asked_to_cancel_through_its_host() {
    let server = Postgres::start();
    let a = postgres(&server, "host-a").await;
    let b = postgres(&server, "host-b").await;
    a.enqueue(&job("long")).await.unwrap();
    let claimed = b
        .claim(&rules(&simulated()), &start_now)
        .await
        .unwrap()
        .unwrap();
    let mut notices = b.notices();
    assert!(a.ask_cancel("long", "superseded by job x").await.unwrap());
    let notice = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Notice::Cancel { id, reason }) = notices.recv().await {
                return (id, reason);
            }
        }
    })
    .await
    .expect("the cancel notice arrives");
    assert_eq!(
        notice,
        ("long".to_string(), "superseded by job x".to_string())
    );
    let beat = b
        .heartbeat(std::slice::from_ref(&claimed.job.id))
        .await
        .unwrap();
    assert_eq!(beat.held, [JobId::parse("long").unwrap()]);
    assert_eq!(
        beat.cancel,
        [(
            JobId::parse("long").unwrap(),
            "superseded by job x".to_string()
        )]
    );
    assert!(
        !a.ask_cancel("nope", "x").await.unwrap(),
        "no such running job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_claims_only_jobs_for_builders_it_has() {
    let server = Postgres::start();
    let store = postgres(&server, "host-a").await;
    let mut podman = job("needs-podman");
    podman.builder = "podman".into();
    store.enqueue(&podman).await.unwrap();
    store.enqueue(&job("simulated-one")).await.unwrap();
    let claimed = store
        .claim(&rules(&simulated()), &start_now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        claimed.job.id.as_str(),
        "simulated-one",
        "the older job needs podman"
    );
    assert!(
        store
            .claim(&rules(&simulated()), &start_now)
            .await
            .unwrap()
            .is_none()
    );
    let podman_host = vec!["podman".to_string(), "buildah".to_string()];
    let claimed = store
        .claim(&rules(&podman_host), &start_now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.job.id.as_str(), "needs-podman");
}

/// Writes the store makes on its reader connection (handing out owed
/// notifications, pruning) while the writer commits: no batch of the
/// writer may fail for it, so no log line and no state is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_loses_no_write_to_its_own_other_writes() {
    let (_dir, store, queue) = sqlite_with_queue().await;
    let mut ended = Vec::new();
    for n in 0..20 {
        let mut j = running(&queue, &format!("busy-{n}"), "busy").await;
        j.finish(Outcome::failed(FailureKind::Build, "RUN false"), Utc::now())
            .unwrap();
        store.update(&j).await.unwrap();
        ended.push(j);
    }
    let other = {
        let store = store.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            for _ in 0..300 {
                let owed = runtime
                    .block_on(store.owed_notifications(Duration::ZERO, 20))
                    .unwrap();
                for o in &owed {
                    runtime
                        .block_on(store.settle_notification(
                            o.job.id.as_str(),
                            &[],
                            Some(Duration::ZERO),
                        ))
                        .unwrap();
                }
            }
        })
    };
    // Each job's first line makes the writer read before it writes.
    let mut live = Vec::new();
    for n in 0..200 {
        let j = running(&queue, &format!("busy-live-{n}"), "busy").await;
        store.append_log(&j.id, &LogLine::new("first"), 100);
        store.append_log(&j.id, &LogLine::new("second"), 100);
        live.push(j);
    }
    for j in &live {
        store.update(j).await.unwrap();
    }
    other.join().unwrap();
    for j in &live {
        let lines = store.log(j.id.as_str()).await.unwrap().texts();
        assert_eq!(lines, ["first", "second"], "{}", j.id);
    }
}
