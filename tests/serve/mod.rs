//! End to end: the real `helix-build` binary, started with or without a
//! config file, driven over HTTP on a loopback port: here the server's
//! life (start, stop, its grace, refusals at start), the API's answers,
//! HTTPS and the systemd unit; `cli` the client commands, `plugin` the
//! builder tools (`plugin check|test|new`) and reloading builders,
//! `faults` kill -9, hosts lost and restarted, backups and a damaged or
//! full data dir, `hooks` webhooks in and notifications out.

mod cli;
mod faults;
mod hooks;
mod plugin;

use crate::common::Server;
use helix_fixtures as fixtures;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

#[test]
fn serves_with_no_config_and_runs_a_simulated_job() {
    let server = Server::start(&[]);
    assert_eq!(
        server.json("GET", "/healthz", None),
        (200, json!({"status": "ok"}))
    );

    let (status, builders) = server.json("GET", "/v1/builders", None);
    assert_eq!(status, 200);
    let names: Vec<&str> = builders
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    // No engine configured: the buildkit builder is not offered, and its
    // jobs are refused naming the setting.
    assert_eq!(names, ["buildah", "podman", "simulated"]);
    assert_eq!(builders[2]["simulated"], true);
    assert_eq!(builders[1]["simulated"], false);
    assert_eq!(builders[1]["network"], "private");
    let buildkit = json!({"repo_url": "https://git.example/app.git", "builder": "buildkit"});
    let (status, body) = server.json("POST", "/v1/jobs", Some(&buildkit));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "builder");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("builders.buildkit.engine"), "{message}");
    // A job naming no builder gets a real one where one can run (this
    // server has control groups: it runs as root).
    let podman_here = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join("podman").is_file());
    let plain = json!({"repo_url": "https://git.example/app.git"});
    let (status, body) = server.json("POST", "/v1/jobs", Some(&plain));
    assert_eq!(status, 201, "{body}");
    let default = if podman_here { "podman" } else { "simulated" };
    assert_eq!(body["builder"], default, "{body}");
    let podman_grants = &builders[1]["grants"]["programs"];
    assert_eq!(podman_grants[0]["command"], "podman");
    assert!(
        podman_grants[0]["args"]
            .as_array()
            .unwrap()
            .contains(&json!("oci")),
        "{podman_grants}"
    );

    let request = json!({
        "builder": "simulated",
        "id": "e2e-1",
        "repo_url": "https://git.example/team/app.git",
        "ref": "main",
        "platforms": ["linux/amd64", "Linux/AArch64"],
        "build_args": {"HELIX_SIMULATE_DELAY_MS": "50"},
    });
    let (status, job) = server.json("POST", "/v1/jobs", Some(&request));
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["platforms"], json!(["linux/amd64", "linux/arm64"]));

    let (status, job) = server.json("GET", "/v1/jobs/e2e-1/wait?timeout_secs=20", None);
    assert_eq!(status, 200);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["image_tag"], "simulated.invalid/helix-simulated:e2e-1");
    assert_eq!(job["attempts"], 1);
    assert!(
        job["manifest"]["linux/arm64"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    let (status, logs) = server.request("GET", "/v1/jobs/e2e-1/logs", None);
    assert_eq!(status, 200);
    assert!(
        logs.contains("[simulated] building https://git.example/team/app.git at main"),
        "{logs}"
    );
    assert!(logs.contains("[helix] job succeeded"), "{logs}");

    let (status, error) = server.json("POST", "/v1/jobs", Some(&request));
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "duplicate_id");

    let (status, error) = server.json("POST", "/v1/jobs/e2e-1/cancel", None);
    assert_eq!(status, 409);
    assert_eq!(error["error"]["code"], "already_ended");

    let (status, error) = server.json("GET", "/v1/jobs/nope", None);
    assert_eq!(status, 404);
    assert!(error["error"]["message"].as_str().unwrap().contains("nope"));
}

#[test]
fn bad_submissions_get_a_400_naming_the_problem_and_store_nothing() {
    let server = Server::start(&[]);
    let cases = [
        (json!({"repo_url": "ext::sh -c id"}), "repo_url"),
        (
            json!({"repo_url": "https://h/r", "ref": "--upload-pack=x"}),
            "ref",
        ),
        (
            json!({"repo_url": "https://h/r", "dockerfile_path": "../../etc/passwd"}),
            "dockerfile_path",
        ),
        (
            json!({"repo_url": "https://h/r", "platforms": ["linux/"]}),
            "platforms",
        ),
        (
            json!({"repo_url": "https://h/r", "builder": "docker"}),
            "builder",
        ),
        (
            json!({"repo_url": "https://h/r", "colour": "blue"}),
            "colour",
        ),
        (json!({"ref": "main"}), "repo_url"),
        (
            json!({"repo_url": "http://127.0.0.1:99999/x"}),
            "repo_url: \"http://127.0.0.1:99999/x\" is not a valid URL: invalid port number",
        ),
        (
            json!({"repo_url": "HTTP://h/r"}),
            "repo_url: transport \"HTTP\" must be written in lowercase",
        ),
        (
            json!({"repo_url": "https://h/r.git#main:app"}),
            "name the branch, tag or commit in `ref` and the directory in `context`",
        ),
        (
            json!({"repo_url": "https://h/r", "ref": "main\u{202e}x"}),
            "ref: contains U+202E (a bidirectional control)",
        ),
        (
            json!({"repo_url": "https://h/r", "context": "\u{feff}app"}),
            "context: contains U+FEFF (a zero-width character)",
        ),
    ];
    for (body, named) in cases {
        let (status, error) = server.json("POST", "/v1/jobs", Some(&body));
        assert_eq!(status, 400, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{body}: {message}");
    }
    let (status, malformed) = server.request("POST", "/v1/jobs", None);
    assert_eq!(status, 400, "{malformed}");
    assert_eq!(
        server.json("GET", "/v1/jobs", None),
        (200, json!({"jobs": [], "next_cursor": null}))
    );
}

#[test]
fn cancelling_a_running_job_over_http() {
    let server = Server::start(&[]);
    let request = json!({
        "builder": "simulated",
        "id": "long",
        "repo_url": "https://git.example/app.git",
        "build_args": {"HELIX_SIMULATE_DELAY_MS": "60000"},
    });
    assert_eq!(server.json("POST", "/v1/jobs", Some(&request)).0, 201);
    let (_, job) = server.json("GET", "/v1/jobs/long/wait?timeout_secs=1", None);
    assert_eq!(job["state"], "running");
    let (status, job) = server.json("POST", "/v1/jobs/long/cancel", None);
    assert_eq!(status, 200);
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["error"], "cancelled by request");
    let (_, log) = server.request("GET", "/v1/jobs/long/logs", None);
    assert!(log.ends_with("[helix] job cancelled by request\n"), "{log}");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut server = Server::start(&[]);
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn during_the_stop_grace_reads_waits_and_follows_answer_and_submissions_get_503() {
    let mut server = Server::start(&[]);
    submit(
        &server,
        "finishing",
        json!({"HELIX_SIMULATE_DELAY_MS": "3000"}),
    );
    assert!(until_running(&server, "finishing", 500).0);
    assert_eq!(server.raw("GET", "/readyz", "", "").0, 200);
    let pid = server.child.id() as i32;
    // SAFETY: signalling the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopping = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        server.raw("GET", "/readyz", "", "").0 == 503
    });
    assert!(stopping, "/readyz never said the server is stopping");

    refused_for_now(&server, "late", "shutting_down", "the server is stopping");
    assert_eq!(server.raw("GET", "/healthz", "", "").0, 200);
    let (status, job) = server.json("GET", "/v1/jobs/finishing", None);
    assert_eq!((status, job["state"].as_str()), (200, Some("running")));
    assert_eq!(server.json("GET", "/v1/jobs/late", None).0, 404);

    // A wait and a follow started during the grace answer at the job's end.
    let (waited, (status, followed)) = std::thread::scope(|scope| {
        let waiter =
            scope.spawn(|| server.json("GET", "/v1/jobs/finishing/wait?timeout_secs=30", None));
        let followed = server.request("GET", "/v1/jobs/finishing/logs?follow=true", None);
        (waiter.join().unwrap(), followed)
    });
    assert_eq!(
        (waited.0, waited.1["state"].as_str()),
        (200, Some("succeeded"))
    );
    assert_eq!(status, 200);
    assert!(
        followed.contains("data: [helix] job succeeded"),
        "{followed}"
    );
    assert!(followed.contains("event: end"), "{followed}");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn a_config_with_an_unknown_field_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("helix.toml");
    std::fs::write(&path, "workers = 2\nqueue_capcity = 5\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_helix-build"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("HELIX_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("helix-build: config file") && stderr.contains("queue_capcity"),
        "{stderr}"
    );
}

#[test]
fn a_public_address_without_a_token_is_refused_unless_told_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_helix-build"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("HELIX_DATA_DIR", dir.path())
        .env_remove("HELIX_CONFIG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to serve 0.0.0.0:0 without a token")
            && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_helix-build"))
        .args(["serve", "--listen", "0.0.0.0:0", "--insecure-no-auth"])
        .env("HELIX_DATA_DIR", dir.path())
        .env_remove("HELIX_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // Stopped as an operator stops it, so it leaves nothing behind (a
    // kill left its control groups on the machine).
    // SAFETY: signals the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    crate::common::assert_nothing_left(dir.path());
    assert!(
        line.starts_with("listening on http://0.0.0.0:"),
        "told --insecure-no-auth, it serves: {line:?}"
    );
}

/// Polls job `id` on `server` every 20 ms, at most `tries` times, until
/// it is running; returns the job as last read, and whether it ran.
fn until_running(server: &Server, id: &str, tries: usize) -> (bool, Value) {
    let mut job = Value::Null;
    let running = (0..tries).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        job = server.json("GET", &format!("/v1/jobs/{id}"), None).1;
        job["state"] == "running"
    });
    (running, job)
}

/// Submits job `id` for the simulated builder.
fn submit(server: &Server, id: &str, args: Value) -> Value {
    submit_to(server, "simulated", id, args)
}

fn submit_to(server: &Server, builder: &str, id: &str, args: Value) -> Value {
    let request = json!({"builder": builder, "id": id, "repo_url": "https://git.example/app.git", "build_args": args});
    let (status, job) = server.json("POST", "/v1/jobs", Some(&request));
    assert_eq!(status, 201, "{job}");
    job
}

#[test]
fn a_configured_token_guards_every_v1_route_but_not_health() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("helix.toml");
    std::fs::write(&config, "token = \"correct-horse-battery-staple\"\n").unwrap();
    let server = Server::start_in(data.path(), &["--config", config.to_str().unwrap()]);
    for path in ["/v1/jobs", "/v1/builders", "/v1/jobs/x", "/v1/jobs/x/logs"] {
        let (status, body) = server.raw("GET", path, "", "");
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("unauthorized"), "{body}");
        let (status, _) = server.raw(
            "GET",
            path,
            "",
            "Authorization: Bearer wrong-token-of-some-length\r\n",
        );
        assert_eq!(status, 401, "{path}");
    }
    let good = "Authorization: Bearer correct-horse-battery-staple\r\n";
    assert_eq!(server.raw("GET", "/v1/jobs", "", good).0, 200);
    let (status, _) = server.raw("POST", "/v1/jobs", r#"{"repo_url":"https://h/r"}"#, "");
    assert_eq!(status, 401, "an unauthorised submission is refused");
    assert_eq!(
        server.raw("GET", "/v1/jobs", "", good).1,
        r#"{"jobs":[],"next_cursor":null}"#
    );
    assert_eq!(server.raw("GET", "/healthz", "", "").0, 200);
}

#[test]
fn jobs_list_filters_by_state_and_pages_with_a_cursor() {
    let server = Server::start(&[]);
    for i in 0..5 {
        submit(&server, &format!("ok-{i}"), json!({}));
    }
    submit(&server, "bad", json!({"HELIX_SIMULATE_FAIL": "no"}));
    for id in ["ok-0", "ok-1", "ok-2", "ok-3", "ok-4", "bad"] {
        server.json("GET", &format!("/v1/jobs/{id}/wait?timeout_secs=20"), None);
    }
    let (_, failed) = server.json("GET", "/v1/jobs?state=failed", None);
    let ids: Vec<&str> = failed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bad"]);

    let mut seen = Vec::new();
    let mut path = "/v1/jobs?state=succeeded&limit=2".to_string();
    loop {
        let (status, page) = server.json("GET", &path, None);
        assert_eq!(status, 200, "{page}");
        for job in page["jobs"].as_array().unwrap() {
            seen.push(job["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/jobs?state=succeeded&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["ok-4", "ok-3", "ok-2", "ok-1", "ok-0"],
        "newest first, each once"
    );

    for bad in [
        "/v1/jobs?state=sleeping",
        "/v1/jobs?cursor=nope",
        "/v1/jobs?limit=many",
        "/v1/jobs?colour=1",
        "/v1/jobs/ok-0/wait?timeout_secs=soon",
        "/v1/jobs/ok-0/wait?timeout=5",
        "/v1/jobs/ok-0/logs?follow=maybe",
    ] {
        let (status, error) = server.json("GET", bad, None);
        assert_eq!(status, 400, "{bad}: {error}");
        assert!(error["error"]["message"].as_str().is_some());
    }
}

#[test]
fn an_oversized_body_is_refused_with_413_and_nothing_stored() {
    let server = Server::start(&[]);
    let huge = format!(
        r#"{{"repo_url":"https://h/r","build_args":{{"A":"{}"}}}}"#,
        "x".repeat(10 * 1024 * 1024)
    );
    let (status, _) = server.raw("POST", "/v1/jobs", &huge, "");
    assert_eq!(status, 413);
    assert_eq!(server.json("GET", "/v1/jobs", None).1["jobs"], json!([]));
}

#[test]
fn following_logs_streams_lines_until_the_job_ends() {
    let server = Server::start(&[]);
    submit(
        &server,
        "followed",
        json!({"HELIX_SIMULATE_DELAY_MS": "700"}),
    );
    let (status, body) = server.request("GET", "/v1/jobs/followed/logs?follow=true", None);
    assert_eq!(status, 200);
    let events: Vec<&str> = body.lines().filter(|l| l.starts_with("event:")).collect();
    assert_eq!(events.last(), Some(&"event: end"), "{body}");
    assert!(body.contains("event: state\ndata: running"), "{body}");
    assert!(
        body.contains("data: [simulated] working for 700 ms"),
        "{body}"
    );
    assert!(body.contains("data: [helix] job succeeded"), "{body}");
    let end = body.lines().rev().find(|l| l.starts_with("data:")).unwrap();
    let job: Value = serde_json::from_str(end.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(job["state"], "succeeded");
    assert_eq!(
        server
            .request("GET", "/v1/jobs/nope/logs?follow=true", None)
            .0,
        404
    );
}

#[test]
fn metrics_count_jobs_by_state_and_build_time() {
    let server = Server::start(&[]);
    submit(&server, "m1", json!({}));
    submit(&server, "m2", json!({"HELIX_SIMULATE_FAIL": "x"}));
    server.json("GET", "/v1/jobs/m1/wait?timeout_secs=20", None);
    server.json("GET", "/v1/jobs/m2/wait?timeout_secs=20", None);
    let (status, text) = server.request("GET", "/metrics", None);
    assert_eq!(status, 200);
    for line in [
        "helix_jobs{state=\"succeeded\"} 1",
        "helix_jobs{state=\"failed\"} 1",
        "helix_jobs{state=\"queued\"} 0",
        "helix_queue_depth 0",
        "helix_build_seconds_count 2",
        "helix_build_seconds_bucket{le=\"+Inf\"} 2",
        "helix_plugin_instantiation_seconds_count{builder=\"simulated\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// Runs a client command against `server` (HELIX_TOKEN as given).
fn cli(server: &Server, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = cli_exit(server, token, args);
    (code == Some(0), out, err)
}

/// [`cli`] with the exit code.
fn cli_exit(server: &Server, token: Option<&str>, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_helix-build"));
    command
        .args(args)
        .env(
            "HELIX_SERVER",
            format!("{}://{}", server.scheme, server.address),
        )
        .env_remove("HELIX_CA_FILE")
        .env_remove("HELIX_TOKEN");
    if let Some(token) = token {
        command.env("HELIX_TOKEN", token);
    }
    let output = command.output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_documented_operation_exists_and_answers_a_documented_status() {
    let server = Server::start(&[]);
    submit(&server, "doc", json!({}));
    server.json("GET", "/v1/jobs/doc/wait?timeout_secs=20", None);
    let (status, doc) = server.json("GET", "/v1/openapi.json", None);
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            let concrete = path.replace("{id}", "doc");
            let body = if method == "POST" && path == "/v1/jobs" {
                json!({"builder": "simulated", "repo_url": "https://git.example/app.git"})
                    .to_string()
            } else {
                String::new()
            };
            let (status, answer) = server.raw(&method, &concrete, &body, "");
            let documented: Vec<&String> =
                operation["responses"].as_object().unwrap().keys().collect();
            assert!(
                documented
                    .iter()
                    .any(|code| code.as_str() == status.to_string()),
                "{method} {path} answered {status}, documented {documented:?}: {answer}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 19, "every route of the router is documented");
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_stores_nothing() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("helix.toml");
    // The running job is cancelled a second into the server's stop.
    std::fs::write(
        &config,
        "workers = 1\nqueue_capacity = 1\nstop_grace_secs = 1\n",
    )
    .unwrap();
    let server = Server::start_in(data.path(), &["--config", config.to_str().unwrap()]);
    submit(
        &server,
        "running",
        json!({"HELIX_SIMULATE_DELAY_MS": "60000"}),
    );
    server.json("GET", "/v1/jobs/running/wait?timeout_secs=1", None);
    submit(&server, "waiting", json!({}));
    refused_for_now(&server, "refused", "queue_full", "build queue is full");
    assert_eq!(server.json("GET", "/v1/jobs/refused", None).0, 404);
}

/// Submits job `id` and checks it is refused for now: 503 with
/// `Retry-After`, the error `code` and a message containing `message`.
fn refused_for_now(server: &Server, id: &str, code: &str, message: &str) {
    let body = json!({"builder": "simulated", "id": id, "repo_url": "https://git.example/app.git"})
        .to_string();
    let (status, head, answer) = server.exchange("POST", "/v1/jobs", &body, "");
    assert_eq!(status, 503, "{answer}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    let error: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(error["error"]["code"], code, "{answer}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(message),
        "{answer}"
    );
}

/// A new CA named `name`, and a certificate for 127.0.0.1 it signed:
/// the CA's PEM, the certificate's and its key's.
fn test_ca(name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

#[test]
fn the_server_speaks_https_reloads_its_certificate_on_sighup_and_the_cli_trusts_a_given_ca() {
    let data = tempfile::tempdir().unwrap();
    let file = |name: &str| data.path().join(name);
    let (first_ca, cert, key) = test_ca("helix test CA one");
    for (name, pem) in [
        ("ca1.pem", &first_ca),
        ("cert.pem", &cert),
        ("key.pem", &key),
    ] {
        std::fs::write(file(name), pem).unwrap();
    }
    std::fs::write(
        file("helix.toml"),
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            file("cert.pem").display(),
            file("key.pem").display()
        ),
    )
    .unwrap();
    let server = Server::start_in(
        data.path(),
        &["--config", file("helix.toml").to_str().unwrap()],
    );
    assert_eq!(server.scheme, "https");
    let ca_flag = |name: &str| format!("--ca-file={}", file(name).display());

    let (ok, out, err) = cli(&server, None, &["jobs", &ca_flag("ca1.pem")]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = cli(&server, None, &["jobs"]);
    assert!(!ok, "a certificate from an unknown CA is refused");
    assert!(err.contains("certificate"), "{err}");

    // A renewed certificate from another CA, read again on SIGHUP.
    let (second_ca, cert, key) = test_ca("helix test CA two");
    for (name, pem) in [
        ("ca2.pem", &second_ca),
        ("cert.pem", &cert),
        ("key.pem", &key),
    ] {
        std::fs::write(file(name), pem).unwrap();
    }
    let hup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let reloaded = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        cli(&server, None, &["jobs", &ca_flag("ca2.pem")]).0
    });
    assert!(reloaded, "the new certificate is served after SIGHUP");
    let (ok, _, err) = cli(&server, None, &["jobs", &ca_flag("ca1.pem")]);
    assert!(!ok && err.contains("certificate"), "{err}");
}

#[test]
fn the_systemd_unit_verifies_with_the_built_binary() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/helix-build.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/helix-build serve"));
    // As installed, with this build's binary where the unit expects it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("helix-build.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/helix-build",
            env!("CARGO_BIN_EXE_helix-build"),
        ),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .expect("systemd-analyze is installed (.ci/setup)");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{complaints}");
    assert!(
        !complaints.contains("helix-build.service"),
        "systemd has something to say about the unit: {complaints}"
    );
}

/// Writes `head` to `to` one byte a second (from another thread) until
/// the server closes the connection, which `closed` waits for; returns
/// how long that took and what `closed` read.
fn trickle(
    mut to: impl Write + Send + 'static,
    head: &'static [u8],
    closed: impl FnOnce() -> String,
) -> (Duration, String) {
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        for byte in head {
            if to.write_all(&[*byte]).and_then(|()| to.flush()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let read = closed();
    (started.elapsed(), read)
}

#[test]
fn a_client_trickling_its_headers_or_idling_is_cut_off_after_the_header_timeout() {
    const HEAD: &[u8] =
        b"GET /healthz HTTP/1.1\r\nHost: helix\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let cut_off = |elapsed: Duration, read: &str| {
        assert!(
            (Duration::from_millis(1500)..Duration::from_secs(8)).contains(&elapsed),
            "closed after {elapsed:?}"
        );
        assert!(!read.contains("200 OK"), "{read}");
    };
    let data = tempfile::tempdir().unwrap();
    let file = |name: &str| data.path().join(name);
    let (ca, cert, key) = test_ca("helix timeout CA");
    for (name, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(file(name), pem).unwrap();
    }
    std::fs::write(file("plain.toml"), "request_header_timeout_secs = 2\n").unwrap();
    let plain = Server::start_in(
        &file("plain"),
        &["--config", file("plain.toml").to_str().unwrap()],
    );

    let stream = std::net::TcpStream::connect(plain.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = stream.try_clone().unwrap();
    let (elapsed, read) = trickle(stream, HEAD, move || {
        let mut read = String::new();
        let _ = reader.read_to_string(&mut read);
        read
    });
    cut_off(elapsed, &read);

    // A normal client, kept alive: two requests answered, then closed
    // once it idled past the timeout.
    let mut stream = std::net::TcpStream::connect(plain.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: helix\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 512];
        let n = stream.read(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");
    }
    let idle = std::time::Instant::now();
    assert_eq!(stream.read(&mut [0u8; 16]).unwrap_or(0), 0);
    cut_off(idle.elapsed(), "");

    // HTTPS: the same, after the TLS handshake.
    std::fs::write(
        file("tls.toml"),
        format!(
            "request_header_timeout_secs = 2\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            file("cert.pem").display(),
            file("key.pem").display()
        ),
    )
    .unwrap();
    let tls = Server::start_in(
        &file("tls"),
        &["--config", file("tls.toml").to_str().unwrap()],
    );
    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(file("ca.pem"))
        .args(["-connect", &tls.address.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = client.stdin.take().unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let (elapsed, read) = trickle(stdin, HEAD, move || {
        let mut read = String::new();
        let _ = stdout.read_to_string(&mut read);
        read
    });
    let _ = client.kill();
    let _ = client.wait();
    cut_off(elapsed, &read);
    let (ok, out, err) = cli(
        &tls,
        None,
        &["jobs", &format!("--ca-file={}", file("ca.pem").display())],
    );
    assert!(ok, "{out}{err}");
}
