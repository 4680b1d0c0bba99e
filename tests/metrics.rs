//! `/metrics` of the real binary after simulated builds: every family
//! there with sane values (and clean for `promtool check metrics` where it
//! is installed), and why queued jobs wait on the job JSON.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::Server;

/// Submits simulated job `id` with `fields` over the defaults.
fn submit(server: &Server, id: &str, fields: Value) -> Value {
    let mut request =
        json!({"id": id, "repo_url": "https://git.example/app.git", "builder": "simulated"});
    request
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let (status, job) = server.json("POST", "/v1/jobs", Some(&request));
    assert_eq!(status, 201, "{job}");
    job
}

fn until_running(server: &Server, id: &str) {
    let running = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        server.json("GET", &format!("/v1/jobs/{id}"), None).1["state"] == "running"
    });
    assert!(running, "{id} started");
}

fn waiting_for(server: &Server, id: &str) -> Value {
    let (status, job) = server.json("GET", &format!("/v1/jobs/{id}"), None);
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("queued")),
        "{job}"
    );
    job["waiting_for"].clone()
}

/// The value of the sample `series` (name and labels, as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_cover_requests_the_process_and_jobs_and_queued_jobs_say_why_they_wait() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("helix.toml");
    std::fs::write(&config, "workers = 2\n").unwrap();
    let server = Server::start_in(dir.path(), &["--config", config.to_str().unwrap()]);
    let long = json!({"HELIX_SIMULATE_DELAY_MS": "20000"});

    // Both workers busy, one of them with group g's one place.
    submit(&server, "in-g", json!({"group": "g", "build_args": long}));
    submit(&server, "other", json!({"build_args": long}));
    until_running(&server, "in-g");
    until_running(&server, "other");
    submit(&server, "held", json!({"group": "g"}));
    assert_eq!(
        waiting_for(&server, "held"),
        json!(["workers_busy", "group_full"])
    );
    let (_, listed) = server.json("GET", "/v1/jobs?state=queued", None);
    assert_eq!(
        listed["jobs"][0]["waiting_for"],
        json!(["workers_busy", "group_full"])
    );
    // A worker free again: only the group holds it.
    server.json("POST", "/v1/jobs/other/cancel", None);
    assert_eq!(waiting_for(&server, "held"), json!(["group_full"]));
    server.json("POST", "/v1/jobs/held/cancel", None);
    server.json("POST", "/v1/jobs/in-g/cancel", None);
    let (_, running) = server.json("GET", "/v1/jobs/in-g", None);
    assert!(
        running.get("waiting_for").is_none(),
        "only queued jobs wait: {running}"
    );

    submit(&server, "ok", json!({}));
    submit(
        &server,
        "bad",
        json!({"build_args": {"HELIX_SIMULATE_FAIL": "x"}}),
    );
    for id in ["ok", "bad"] {
        server.json("GET", &format!("/v1/jobs/{id}/wait?timeout_secs=20"), None);
    }
    let (status, _) = server.request("GET", "/no/such/page", None);
    assert_eq!(status, 404);

    let (status, text) = server.request("GET", "/metrics", None);
    assert_eq!(status, 200);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.lines().any(|l| l
            .starts_with(&format!("helix_build_info{{version=\"{version}\",wit=\""))
            && l.ends_with("} 1")),
        "{text}"
    );
    // Requests by route template, never the raw path.
    let got = r#"helix_http_requests_total{method="GET",route="/v1/jobs/{id}",code="200"}"#;
    assert!(sample(&text, got).unwrap() >= 5.0, "{text}");
    let created = r#"helix_http_requests_total{method="POST",route="/v1/jobs",code="201"}"#;
    assert_eq!(sample(&text, created), Some(5.0), "{text}");
    let unmatched = r#"helix_http_requests_total{method="GET",route="unmatched",code="404"}"#;
    assert_eq!(sample(&text, unmatched), Some(1.0), "{text}");
    assert!(!text.contains("route=\"/v1/jobs/held"), "{text}");
    let latency = r#"helix_http_request_duration_seconds_count{method="GET",route="/v1/jobs/{id}/wait",status="2xx"}"#;
    assert_eq!(sample(&text, latency), Some(2.0), "{text}");
    // The process.
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&text, "process_open_fds").unwrap() >= 3.0);
    assert!(sample(&text, "process_cpu_seconds_total").unwrap() > 0.0);
    let started = sample(&text, "process_start_time_seconds").unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(started > now - 600.0 && started <= now + 1.0, "{started}");
    // Jobs: how they ended, how long they waited and ran.
    for (state, count) in [("succeeded", 1.0), ("failed", 1.0), ("cancelled", 3.0)] {
        let series =
            format!("helix_jobs_finished_total{{builder=\"simulated\",state=\"{state}\"}}");
        assert_eq!(sample(&text, &series), Some(count), "{series} in\n{text}");
    }
    let ran = r#"helix_job_duration_seconds_count{builder="simulated",outcome="cancelled"}"#;
    assert_eq!(sample(&text, ran), Some(2.0), "held never ran: {text}");
    let waited =
        r#"helix_job_queue_wait_seconds_bucket{builder="simulated",outcome="succeeded",le="+Inf"}"#;
    assert_eq!(sample(&text, waited), Some(1.0), "{text}");
    for family in [
        "helix_push_duration_seconds histogram",
        "helix_job_retries_total counter",
        "helix_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(&format!("# TYPE {family}\n")), "{family}");
    }
    promtool_accepts(&text);
}

/// `promtool check metrics` finds no problem in `text`, when promtool is
/// installed (Debian's `prometheus` package; `.ci/setup` installs it).
fn promtool_accepts(text: &str) {
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool is not installed: the text format is not checked by it");
        return;
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
