//! The service end to end through the library: real components in wasmtime,
//! real worker pool, no test doubles.

use crate::common;
use crate::common::LogText as _;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::{config, finished, on_builder, simulated, start, until_running};
use helix_build::job::{JobRequest, State};
use helix_build::service::ServiceError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eighty_concurrent_submits_on_eight_workers_none_lost_or_duplicated() {
    let (_dir, service) = common::service(8, 100).await;

    let mut submits = tokio::task::JoinSet::new();
    for i in 0..80 {
        let service = service.clone();
        submits.spawn(async move {
            let request = JobRequest {
                id: Some(format!("job-{i:02}")),
                ..simulated(i % 5)
            };
            service.submit(request).await.map(|job| job.id)
        });
    }
    let mut ids = Vec::new();
    while let Some(result) = submits.join_next().await {
        ids.push(result.unwrap().expect("every submit is accepted"));
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 80);

    for id in &ids {
        let job = finished(&service, id).await;
        assert_eq!(job.state, State::Succeeded, "{id}: {:?}", job.error);
        assert_eq!(job.attempts, 1, "{id} ran more than once");
        let runs = service
            .logs(id.as_str())
            .await
            .unwrap()
            .texts()
            .iter()
            .filter(|l| l.contains("running on builder"))
            .count();
        assert_eq!(runs, 1, "{id} was run {runs} times");
    }
    let listed = service.list().await.unwrap();
    assert_eq!(listed.len(), 80);
    assert_eq!(
        listed.iter().map(|j| &j.id).collect::<HashSet<_>>().len(),
        80
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_id_is_refused_and_changes_nothing() {
    let (_dir, service) = common::service(1, 10).await;
    let first = service
        .submit(JobRequest {
            id: Some("same".into()),
            ..simulated(0)
        })
        .await
        .unwrap();
    let again = service
        .submit(JobRequest {
            id: Some("same".into()),
            repo_url: "https://other.example/x.git".into(),
            ..simulated(0)
        })
        .await;
    assert!(
        matches!(again, Err(ServiceError::Duplicate(ref id)) if id.as_str() == "same"),
        "{again:?}"
    );
    assert_eq!(service.list().await.unwrap().len(), 1);
    let job = finished(&service, &first.id).await;
    assert_eq!(job.repo_url, first.repo_url);
    assert_eq!(job.state, State::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_refuses_and_registers_nothing() {
    let (_dir, service) = common::service(1, 2).await;
    let running = service.submit(simulated(60_000)).await.unwrap();
    until_running(&service, &running.id).await;
    service.submit(simulated(0)).await.unwrap();
    service.submit(simulated(0)).await.unwrap();

    let refused = service
        .submit(JobRequest {
            id: Some("overflow".into()),
            ..simulated(0)
        })
        .await;
    match refused {
        Err(e @ ServiceError::QueueFull { capacity: 2 }) => {
            assert!(e.to_string().contains("build queue is full"), "{e}")
        }
        other => panic!("expected a full queue, got {other:?}"),
    }
    assert_eq!(service.list().await.unwrap().len(), 3);
    assert!(matches!(
        service.get("overflow").await,
        Err(ServiceError::NotFound(_))
    ));
    assert_eq!(service.queue_depth().await.unwrap(), 2);
    service.cancel(running.id.as_str()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_job_ends_it_without_running() {
    let (_dir, service) = common::service(1, 10).await;
    let blocker = service.submit(simulated(60_000)).await.unwrap();
    until_running(&service, &blocker.id).await;
    let queued = service.submit(simulated(0)).await.unwrap();

    let job = service.cancel(queued.id.as_str()).await.unwrap();
    assert_eq!(job.state, State::Cancelled);
    assert_eq!(job.attempts, 0);
    assert!(job.started_at.is_none() && job.completed_at.is_some());
    assert_eq!(service.queue_depth().await.unwrap(), 0);

    service.cancel(blocker.id.as_str()).await.unwrap();
    let after = service.get(queued.id.as_str()).await.unwrap();
    assert_eq!(
        after.state,
        State::Cancelled,
        "a cancelled job never starts later"
    );
    assert_eq!(after.attempts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_ends_it_within_a_second() {
    let (_dir, service) = common::service(2, 10).await;
    let job = service.submit(simulated(60_000)).await.unwrap();
    until_running(&service, &job.id).await;

    let asked = Instant::now();
    let cancelled = service.cancel(job.id.as_str()).await.unwrap();
    let took = asked.elapsed();
    assert_eq!(cancelled.state, State::Cancelled, "{:?}", cancelled.error);
    assert!(took < Duration::from_secs(1), "cancel took {took:?}");
    assert_eq!(cancelled.error.as_deref(), Some("cancelled by request"));
    assert!(cancelled.completed_at.is_some());

    // The worker carries on with new work.
    let next = service.submit(simulated(0)).await.unwrap();
    assert_eq!(finished(&service, &next.id).await.state, State::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_ended_job_is_an_error() {
    let (_dir, service) = common::service(1, 10).await;
    let job = service.submit(simulated(0)).await.unwrap();
    let done = finished(&service, &job.id).await;
    let err = service.cancel(job.id.as_str()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ServiceError::AlreadyEnded {
                state: State::Succeeded,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        service.get(job.id.as_str()).await.unwrap(),
        done,
        "refused cancel changes nothing"
    );
    assert!(matches!(
        service.cancel("no-such-job").await,
        Err(ServiceError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_current_state_at_timeout_then_terminal() {
    let (_dir, service) = common::service(1, 10).await;
    let job = service.submit(simulated(1_500)).await.unwrap();
    let early = service
        .wait(job.id.as_str(), Duration::from_millis(100))
        .await
        .unwrap();
    assert!(!early.state.is_terminal(), "still {}", early.state);
    let done = service
        .wait(job.id.as_str(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.state, State::Succeeded);
    assert!(matches!(
        service.wait("missing", Duration::from_millis(1)).await,
        Err(ServiceError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_fails_its_job_with_the_message_and_others_succeed() {
    let (_dir, service) = common::service(2, 20).await;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for _ in 0..3 {
        bad.push(service.submit(on_builder("panic")).await.unwrap().id);
        good.push(service.submit(simulated(10)).await.unwrap().id);
    }
    for id in &bad {
        let job = finished(&service, id).await;
        assert_eq!(job.state, State::Failed);
        let error = job.error.unwrap();
        assert!(
            error.starts_with("plugin fault: builder 'panic' crashed"),
            "{error}"
        );
        assert!(
            error.contains(&format!("testing-panic gave up on job {id}")),
            "{error}"
        );
        let logs = service.logs(id.as_str()).await.unwrap().texts();
        assert!(
            logs.iter()
                .any(|l| l.starts_with("[plugin stderr]") && l.contains("gave up")),
            "{logs:?}"
        );
    }
    for id in &good {
        assert_eq!(finished(&service, id).await.state, State::Succeeded);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_plugin_times_out_while_the_host_stays_responsive() {
    let (_dir, service) = common::service(3, 20).await;
    let mut spinners = Vec::new();
    for _ in 0..2 {
        spinners.push(service.submit(on_builder("spin")).await.unwrap().id);
    }
    for id in &spinners {
        until_running(&service, id).await;
    }
    // Two guests are spinning on a two-core machine; a normal job still runs.
    let normal = service.submit(simulated(0)).await.unwrap();
    assert_eq!(finished(&service, &normal.id).await.state, State::Succeeded);
    for id in &spinners {
        let job = finished(&service, id).await;
        assert_eq!(job.state, State::TimedOut, "{:?}", job.error);
        let error = job.error.unwrap();
        assert!(
            error.contains("builder 'spin' ran longer than its limit of 2s"),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_build_over_its_time_limit_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir, 1, 10);
    config
        .builders
        .entry("simulated".into())
        .or_default()
        .timeout_secs = 1;
    let service = start(&config).await;
    let job = service.submit(simulated(30_000)).await.unwrap();
    let job = finished(&service, &job.id).await;
    assert_eq!(job.state, State::TimedOut);
    assert!(job.started_at.is_some() && job.completed_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_over_its_memory_limit_fails_naming_the_limit() {
    let (_dir, service) = common::service(2, 10).await;
    let hog = service.submit(on_builder("hog")).await.unwrap();
    let normal = service.submit(simulated(0)).await.unwrap();
    let job = finished(&service, &hog.id).await;
    assert_eq!(job.state, State::Failed);
    let error = job.error.unwrap();
    assert!(
        error.starts_with("limit exceeded: builder 'hog'"),
        "{error}"
    );
    assert!(error.contains("64 MiB"), "{error}");
    assert_eq!(finished(&service, &normal.id).await.state, State::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_failure_is_reported_as_a_build_error() {
    let (_dir, service) = common::service(1, 10).await;
    let mut request = simulated(0);
    request
        .build_args
        .insert("HELIX_SIMULATE_FAIL".into(), "RUN make exited 2".into());
    let job = service.submit(request).await.unwrap();
    let job = finished(&service, &job.id).await;
    assert_eq!(job.state, State::Failed);
    assert_eq!(
        job.error.as_deref(),
        Some("build error: simulated failure: RUN make exited 2")
    );
    assert!(job.image_tag.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_output_is_marked_and_validated() {
    let (_dir, service) = common::service(1, 10).await;
    let job = service
        .submit(JobRequest {
            id: Some("sim-1".into()),
            platforms: vec!["linux/arm64".into(), "linux/amd64".into()],
            ..simulated(0)
        })
        .await
        .unwrap();
    let job = finished(&service, &job.id).await;
    assert_eq!(job.state, State::Succeeded);
    assert_eq!(
        job.image_tag.as_deref(),
        Some("simulated.invalid/helix-simulated:sim-1")
    );
    let platforms: Vec<String> = job.manifest.platforms().map(|p| p.to_string()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert!(job.digest.is_some());
    let logs = service.logs("sim-1").await.unwrap().texts();
    assert!(
        logs.iter().any(|l| l.contains("no image will be produced")),
        "{logs:?}"
    );
    let info = service
        .runtime()
        .builder("simulated")
        .unwrap()
        .info()
        .clone();
    assert!(info.simulated && info.description.contains("SIMULATION"));
}

/// The host times a job's phases, keeps them with the job (read back from
/// the store) and counts them in `/metrics` by builder and phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_jobs_phases_add_up_to_its_run_and_are_counted() {
    let (_dir, service) = common::service(1, 10).await;
    let job = service.submit(simulated(100)).await.unwrap();
    let job = finished(&service, &job.id).await;
    assert_eq!(job.state, State::Succeeded);
    assert_eq!(
        common::phase_names(&job),
        ["queue_wait", "prepare", "instantiate", "build", "clean_up"]
    );
    let build = job.phases.iter().find(|p| p.name.as_str() == "build");
    assert!(
        build.unwrap().ms >= 100,
        "the delay is the build's: {job:?}"
    );
    let text = service.metrics().await.unwrap().render(&service.runtime());
    for phase in ["prepare", "build", "clean_up"] {
        let count =
            format!("helix_job_phase_seconds_count{{builder=\"simulated\",phase=\"{phase}\"}} 1");
        assert!(text.contains(&count), "{count} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_delay_setting_is_honoured_and_invalid_values_fail_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir, 1, 10);
    let simulated_config = config.builders.entry("simulated".into()).or_default();
    simulated_config
        .settings
        .insert("delay_ms".into(), "400".into());
    let service = start(&config).await;
    let plain = JobRequest {
        repo_url: "https://git.example/a.git".into(),
        builder: Some("simulated".into()),
        ..JobRequest::default()
    };
    let job = service.submit(plain).await.unwrap();
    // Timed by the host, not by when this test happens to look: a loaded
    // machine may start the plugin late, never shorten its build.
    let job = finished(&service, &job.id).await;
    assert_eq!(job.state, State::Succeeded);
    let build = job.phases.iter().find(|p| p.name.as_str() == "build");
    assert!(
        build.unwrap().ms >= 400,
        "the 400 ms setting delays the build: {job:?}"
    );
    let logs = service.logs(job.id.as_str()).await.unwrap().texts();
    assert!(
        logs.iter().any(|l| l.contains("working for 400 ms")),
        "{logs:?}"
    );

    let mut bad = simulated(0);
    bad.build_args
        .insert("HELIX_SIMULATE_DELAY_MS".into(), "soon".into());
    let job = service.submit(bad).await.unwrap();
    let job = finished(&service, &job.id).await;
    assert_eq!(job.state, State::Failed);
    assert!(
        job.error
            .unwrap()
            .starts_with("invalid job: build arg HELIX_SIMULATE_DELAY_MS")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_submissions_store_nothing() {
    let (_dir, service) = common::service(1, 10).await;
    let cases = [
        (
            "id",
            JobRequest {
                id: Some("../etc".into()),
                ..simulated(0)
            },
        ),
        (
            "builder",
            JobRequest {
                builder: Some("docker".into()),
                ..simulated(0)
            },
        ),
        (
            "ref",
            JobRequest {
                git_ref: Some("-x".into()),
                ..simulated(0)
            },
        ),
        (
            "repo_url",
            JobRequest {
                repo_url: "ext::sh -c id".into(),
                ..simulated(0)
            },
        ),
        (
            "platforms",
            JobRequest {
                platforms: vec!["linux".into()],
                ..simulated(0)
            },
        ),
    ];
    for (field, request) in cases {
        match service.submit(request).await {
            Err(ServiceError::Invalid(e)) => assert_eq!(e.field, field, "{e}"),
            other => panic!("{field}: expected invalid, got {other:?}"),
        }
    }
    assert!(service.list().await.unwrap().is_empty());
    let err = service
        .submit(on_builder("docker"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "available: buildah, empty-tag, escape, exec, hog, panic, podman, shell, simulated, spin, ungranted"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_jobs_finish_within_grace_then_cancels_the_rest() {
    let (_dir, service) = common::service(2, 10).await;
    let quick = service.submit(simulated(300)).await.unwrap();
    let slow = service.submit(simulated(60_000)).await.unwrap();
    until_running(&service, &quick.id).await;
    until_running(&service, &slow.id).await;

    service.stop(Duration::from_secs(2)).await;
    assert_eq!(
        service.get(quick.id.as_str()).await.unwrap().state,
        State::Succeeded
    );
    let slow = service.get(slow.id.as_str()).await.unwrap();
    assert_eq!(slow.state, State::Cancelled);
    assert!(slow.error.unwrap().contains("host shut down"));
    assert!(matches!(
        service.submit(simulated(0)).await,
        Err(ServiceError::ShuttingDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_past_its_queue_ttl_expires() {
    let (_dir, service) = common::service(1, 10).await;
    common::expires_jobs_waiting_past_their_ttl(&service).await;
    let refused = service
        .submit(JobRequest {
            queue_ttl_secs: Some(0),
            ..simulated(0)
        })
        .await;
    match refused {
        Err(ServiceError::Invalid(e)) => assert_eq!(e.field, "queue_ttl_secs", "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_take_the_highest_priority_first() {
    let (_dir, service) = common::service(1, 10).await;
    common::claims_take_the_highest_priority_first(&service).await;
    let refused = service
        .submit(JobRequest {
            priority: Some(101),
            ..simulated(0)
        })
        .await;
    match refused {
        Err(ServiceError::Invalid(e)) => assert_eq!(e.field, "priority", "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_last_of_ten_pushes_to_a_branch_builds() {
    let (_dir, service) = common::service(2, 100).await;
    common::only_the_last_of_ten_pushes_builds(&[&service]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_never_runs_more_than_its_max_running() {
    let (_dir, service) = common::service(4, 100).await;
    common::a_group_never_runs_more_than_max_running(&[&service]).await;
}
