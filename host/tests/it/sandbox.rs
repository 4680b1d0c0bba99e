//! Misbehaving plugins against the sandbox, through the service: each ends
//! its own job with the right state and a cause, nothing escapes, and a
//! normal job alongside still succeeds.

use crate::common::LogText as _;
use helix_build::workspace::run_name;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::{config, finished, on_builder, simulated, start, survivors, until_running};
use helix_build::job::{JobRequest, State};

fn exec(script: &str) -> JobRequest {
    JobRequest {
        build_args: BTreeMap::from([("EXEC_0".to_string(), format!("sh\n-c\n{script}"))]),
        ..on_builder("exec")
    }
}

fn pids(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter(|l| l.starts_with("[sh stdout] pid "))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// The host pids of the `count` processes job `id` logs as `pid N` (in
/// its jail's PID namespace), once all are logged and running.
async fn host_pids_of(
    service: &helix_build::service::Service,
    config: &helix_build::config::Config,
    id: &helix_build::job::JobId,
    count: usize,
) -> Vec<u32> {
    let run_dir = config.workspace_dir().join(run_name(id, 1));
    let mut found = Vec::new();
    for _ in 0..500 {
        let jailed = pids(&service.logs(id.as_str()).await.unwrap().texts());
        found = crate::common::host_pids(&jailed, &run_dir);
        if jailed.len() == count && found.len() == count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never had {count} processes running: {found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_misbehaving_plugin_ends_its_job_with_the_cause_while_a_normal_job_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config(&dir, 8, 50)).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let escape = JobRequest {
        build_args: BTreeMap::from([(
            "ESCAPE_ADDR".to_string(),
            listener.local_addr().unwrap().to_string(),
        )]),
        ..on_builder("escape")
    };

    let submitted = [
        ("spin", service.submit(on_builder("spin")).await.unwrap().id),
        ("hog", service.submit(on_builder("hog")).await.unwrap().id),
        (
            "panic",
            service.submit(on_builder("panic")).await.unwrap().id,
        ),
        (
            "empty-tag",
            service.submit(on_builder("empty-tag")).await.unwrap().id,
        ),
        (
            "ungranted",
            service.submit(on_builder("ungranted")).await.unwrap().id,
        ),
        (
            "shell",
            service.submit(on_builder("shell")).await.unwrap().id,
        ),
        ("escape", service.submit(escape).await.unwrap().id),
    ];
    let normal = service.submit(simulated(0)).await.unwrap();
    assert_eq!(finished(&service, &normal.id).await.state, State::Succeeded);

    let expected: [(&str, State, &str); 7] = [
        (
            "spin",
            State::TimedOut,
            "timed out: builder 'spin' ran longer than its limit of 2s",
        ),
        (
            "hog",
            State::Failed,
            "limit exceeded: builder 'hog' needed more memory than its limit of 64 MiB",
        ),
        (
            "panic",
            State::Failed,
            "plugin fault: builder 'panic' crashed: ",
        ),
        (
            "empty-tag",
            State::Failed,
            "plugin fault: builder 'empty-tag' reported success without an image tag",
        ),
        (
            "ungranted",
            State::Failed,
            "denied: builder 'ungranted': `curl -s http://127.0.0.1:1/`: program `curl` is not granted",
        ),
        (
            "shell",
            State::Failed,
            "denied: builder 'shell': `sh -c id; cat /etc/passwd`: expected \"echo hello\", got \"id; cat /etc/passwd\"; granted: sh -c echo hello",
        ),
        (
            "escape",
            State::Failed,
            "denied: every escape attempt was refused",
        ),
    ];
    for ((name, id), (expected_name, state, error)) in submitted.iter().zip(expected) {
        assert_eq!(*name, expected_name);
        let job = finished(&service, id).await;
        assert_eq!(job.state, state, "{name}: {:?}", job.error);
        let got = job.error.unwrap_or_default();
        assert!(got.starts_with(error), "{name}: {got}");
    }
    assert!(
        listener.accept().is_err(),
        "the escape plugin reached the network"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_calls_are_recorded_in_the_job_log() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config(&dir, 2, 10)).await;
    let shell = service.submit(on_builder("shell")).await.unwrap();
    finished(&service, &shell.id).await;
    let logs = service.logs(shell.id.as_str()).await.unwrap().texts();
    let denials: Vec<&String> = logs
        .iter()
        .filter(|l| l.starts_with("[helix] denied:"))
        .collect();
    assert_eq!(denials.len(), 2, "{logs:?}");
    assert!(
        denials[1].contains("granted: sh -c echo hello"),
        "{}",
        denials[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_lists_each_call_with_its_grant_or_its_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config(&dir, 2, 10)).await;
    let mut request = exec("echo audited");
    request
        .build_args
        .insert("EXEC_1".into(), "curl\n-s\nhttp://127.0.0.1:1/".into());
    let job = service.submit(request).await.unwrap();
    let shell = service.submit(on_builder("shell")).await.unwrap();
    assert_eq!(finished(&service, &job.id).await.state, State::Failed);
    finished(&service, &shell.id).await;

    let audit = service.audit(job.id.as_str()).await.unwrap();
    assert_eq!(audit.entries.len(), 2, "{audit:?}");
    let (sh, curl) = (&audit.entries[0], &audit.entries[1]);
    assert_eq!((sh.program.as_str(), sh.attempt), ("sh", 1));
    assert_eq!(sh.args, ["-c", "echo audited"]);
    assert!(sh.allowed && sh.error.is_none(), "{sh:?}");
    assert_eq!(sh.grant.as_deref(), Some("sh -c *"));
    assert_eq!(sh.exit_code, Some(0));
    assert_eq!((curl.program.as_str(), curl.allowed), ("curl", false));
    assert!(curl.grant.is_none() && curl.exit_code.is_none());
    assert!(
        curl.error
            .as_deref()
            .unwrap()
            .contains("program `curl` is not granted"),
        "{curl:?}"
    );
    assert!(curl.started_at >= sh.started_at);

    let audit = service.audit(shell.id.as_str()).await.unwrap();
    let refused: Vec<_> = audit.entries.iter().map(|c| c.args[1].as_str()).collect();
    assert_eq!(refused, ["id; cat /etc/passwd", "echo hello; id"]);
    assert!(audit.entries.iter().all(|c| !c.allowed));
    assert!(
        audit.entries[0]
            .error
            .as_deref()
            .unwrap()
            .contains("granted: sh -c echo hello"),
        "{audit:?}"
    );
    assert!(matches!(
        service.audit("no-such-job").await,
        Err(helix_build::service::ServiceError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_escape_plugin_sees_no_host_files_env_or_network() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config(&dir, 1, 10)).await;
    let job = service.submit(on_builder("escape")).await.unwrap();
    finished(&service, &job.id).await;
    let logs = service.logs(job.id.as_str()).await.unwrap().texts();
    let attempts: Vec<&String> = logs.iter().filter(|l| l.starts_with("[escape]")).collect();
    assert_eq!(attempts.len(), 6, "{logs:?}");
    for line in attempts {
        assert!(line.contains(": refused ("), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_commands_run_and_stream_into_the_job_log() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config(&dir, 1, 10)).await;
    let job = service
        .submit(exec("echo hello from sh; echo warn >&2"))
        .await
        .unwrap();
    let job = finished(&service, &job.id).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    let logs = service.logs(job.id.as_str()).await.unwrap().texts();
    assert!(
        logs.contains(&"[sh stdout] hello from sh".to_string()),
        "{logs:?}"
    );
    assert!(logs.contains(&"[sh stderr] warn".to_string()), "{logs:?}");
    assert!(
        logs.contains(&"[exec] 0: last stdout line: hello from sh".to_string()),
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_kills_every_process_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir, 1, 10);
    config.builders.get_mut("exec").unwrap().timeout_secs = 600;
    let service = start(&config).await;
    let job = service
        .submit(exec(
            "sleep 300 & echo pid $!; (sleep 300 & echo pid $!; wait) & echo pid $$; wait",
        ))
        .await
        .unwrap();
    until_running(&service, &job.id).await;
    let pids = host_pids_of(&service, &config, &job.id, 3).await;

    let asked = Instant::now();
    let cancelled = service.cancel(job.id.as_str()).await.unwrap();
    assert_eq!(cancelled.state, State::Cancelled);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        asked.elapsed()
    );
    assert_eq!(
        survivors(&pids, Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_timeout_kills_every_process_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir, 1, 10);
    let service = start(&config).await;
    let job = service
        .submit(exec("sleep 300 & echo pid $!; echo pid $$; wait"))
        .await
        .unwrap();
    let pids = host_pids_of(&service, &config, &job.id, 2).await;
    let job = finished(&service, &job.id).await;
    assert_eq!(job.state, State::TimedOut, "{:?}", job.error);
    assert_eq!(
        survivors(&pids, Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_workspaces_are_kept_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir, 1, 10);
    config.keep_failed_workspaces = true;
    let secret = dir.path().join("token");
    std::fs::write(&secret, "kept-nowhere").unwrap();
    config.secrets.insert(
        "token".into(),
        helix_build::secrets::SecretSource {
            env: None,
            file: Some(secret),
        },
    );
    let service = start(&config).await;
    let failed = service
        .submit(JobRequest {
            secrets: vec!["token".into()],
            ..exec("echo debris > left-behind; exit 1")
        })
        .await
        .unwrap();
    let ok = service.submit(exec("echo fine > output")).await.unwrap();
    assert_eq!(finished(&service, &failed.id).await.state, State::Failed);
    assert_eq!(finished(&service, &ok.id).await.state, State::Succeeded);
    // The job's directory: its workspace and its container state.
    let kept = config.workspace_dir().join(run_name(&failed.id, 1));
    assert!(kept.join("state/storage.conf").is_file());
    assert!(
        !kept.join("state/secrets").exists(),
        "a kept workspace keeps no build secret"
    );
    assert_eq!(
        std::fs::read_to_string(kept.join("workspace/left-behind")).unwrap(),
        "debris\n"
    );
    assert!(!config.workspace_dir().join(run_name(&ok.id, 1)).exists());
    let logs = service.logs(failed.id.as_str()).await.unwrap().texts();
    assert!(
        logs.iter()
            .any(|l| l.starts_with("[helix] workspace kept for debugging"))
    );
}

#[test]
fn a_servers_control_group_goes_with_the_last_run_group_made_from_it() {
    use helix_build::cgroup::{BuildLimits, Cgroups};
    let data = tempfile::tempdir().unwrap();
    let cgroups = Cgroups::detect(data.path()).unwrap();
    let run = cgroups.create("trial.1", &BuildLimits::default()).unwrap();
    let servers: Vec<std::path::PathBuf> = run
        .hierarchies()
        .iter()
        .map(|(_, group)| group.parent().unwrap().to_path_buf())
        .collect();
    assert!(servers.len() >= 3, "{servers:?}");
    // As a `plugin test` trial drops them: the server's handle first.
    drop(cgroups);
    assert!(
        servers.iter().all(|dir| dir.is_dir()),
        "the run still holds it"
    );
    drop(run);
    let left: Vec<_> = servers.iter().filter(|dir| dir.exists()).collect();
    assert!(left.is_empty(), "left: {left:?}");
}
