//! End to end: the real `helix-build` binary, started with no config file,
//! driven over HTTP on a loopback port.

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
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("listening on http://0.0.0.0:"),
        "told --insecure-no-auth, it serves: {line:?}"
    );
}

fn plugin_check(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_helix-build"))
        .args(["plugin", "check"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn plugin_check_describes_a_builder() {
    let path =
        std::path::Path::new(env!("HELIX_TESTING_PLUGIN_DIR")).join("helix_plugin_exec.wasm");
    let output = plugin_check(&path);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "a builder for helix:build@{}",
            helix_build::plugin::WIT_VERSION
        )),
        "{stdout}"
    );
    assert!(stdout.contains("name:        testing-exec"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "helix:build/command-runner@{}",
            helix_build::plugin::WIT_VERSION
        )),
        "{stdout}"
    );
}

/// `helix-build ARGS…` run in `dir`: whether it exited 0, and what it
/// printed (stdout, then stderr).
fn helix_in<S: AsRef<std::ffi::OsStr>>(dir: &std::path::Path, args: &[S]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_helix-build"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `helix-build plugin test ARGS…`: whether it exited 0, and its output.
fn plugin_test(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let all: Vec<&std::ffi::OsStr> = ["plugin".as_ref(), "test".as_ref()]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    helix_in(std::path::Path::new("."), &all)
}

#[test]
fn plugin_test_dry_runs_a_policy_builder_under_the_podman_grants() {
    let component = std::path::Path::new(env!("HELIX_TESTING_PLUGIN_DIR"))
        .join("helix_example_user_policy.wasm");
    let repo = tempfile::tempdir().unwrap();
    fixtures::git(repo.path(), &["init", "-q", "-b", "main"]);
    let dockerfile = repo.path().join("Dockerfile");
    std::fs::write(&dockerfile, "FROM scratch\nCOPY app /app\nUSER root\n").unwrap();
    std::fs::write(repo.path().join("app"), "app").unwrap();
    fixtures::git(repo.path(), &["add", "-A"]);
    fixtures::git(repo.path(), &["commit", "-qm", "as root"]);
    let job = repo.path().join("job.json");
    std::fs::write(
        &job,
        json!({"repo_url": format!("file://{}", repo.path().display()), "ref": "main"}).to_string(),
    )
    .unwrap();
    let args = [
        component.as_os_str(),
        "--job".as_ref(),
        job.as_os_str(),
        "--grants-of".as_ref(),
        "podman".as_ref(),
        "--dry-run".as_ref(),
    ];

    let (ok, out) = plugin_test(&args);
    assert!(!ok, "{out}");
    assert!(
        out.contains("calls (dry run: none was run):\n  (none)"),
        "{out}"
    );
    assert!(
        out.contains("result: failed: invalid job: Dockerfile would run as root"),
        "{out}"
    );

    std::fs::write(&dockerfile, "FROM scratch\nCOPY app /app\nUSER 1000\n").unwrap();
    fixtures::git(repo.path(), &["commit", "-qam", "as a user"]);
    let (ok, out) = plugin_test(&args);
    assert!(ok, "{out}");
    assert!(
        out.contains("allowed by `podman --cgroup-manager cgroupfs build --isolation oci"),
        "{out}"
    );
    assert!(out.contains("[helix] dry run: podman"), "{out}");
    assert!(out.contains("result: succeeded"), "{out}");

    // Without grants every program is refused, and the try says so.
    let (ok, out) = plugin_test(&args[..3]);
    assert!(!ok, "{out}");
    assert!(out.contains("REFUSED: denied: builder 'trial'"), "{out}");
}

#[test]
fn plugin_test_answers_each_program_from_canned_output() {
    let dir = tempfile::tempdir().unwrap();
    let component =
        std::path::Path::new(env!("HELIX_TESTING_PLUGIN_DIR")).join("helix_plugin_exec.wasm");
    let job = dir.path().join("job.json");
    std::fs::write(
        &job,
        json!({"repo_url": "https://git.example/app.git",
               "build_args": {"EXEC_0": "sh\n-c\necho from the real sh"}})
        .to_string(),
    )
    .unwrap();
    let grants = dir.path().join("grants.toml");
    std::fs::write(
        &grants,
        "[[programs]]\ncommand = \"sh\"\nargs = [\"-c\", \"*\"]\n",
    )
    .unwrap();
    let canned = dir.path().join("canned.toml");
    std::fs::write(&canned, "[programs.sh]\nstdout = \"canned hello\\n\"\n").unwrap();
    let args = [
        component.as_os_str(),
        "--job".as_ref(),
        job.as_os_str(),
        "--grants".as_ref(),
        grants.as_os_str(),
        "--canned".as_ref(),
        canned.as_os_str(),
    ];
    let (ok, out) = plugin_test(&args);
    assert!(ok, "{out}");
    assert!(out.contains("last stdout line: canned hello"), "{out}");
    assert!(!out.contains("last stdout line: from the real sh"), "{out}");
    // Run for real, the same job prints what sh printed.
    let (ok, out) = plugin_test(&args[..5]);
    assert!(ok, "{out}");
    assert!(out.contains("last stdout line: from the real sh"), "{out}");
}

#[test]
fn plugin_new_makes_rust_and_python_builders_that_build_and_run_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let helix = |args: &[&str]| helix_in(dir.path(), args);
    for (name, lang) in [("team-rust", "rust"), ("team-python", "python")] {
        let (ok, out) = helix(&["plugin", "new", name, "--lang", lang]);
        assert!(ok, "{out}");
        let project = dir.path().join(name);
        // Dependencies compiled once per test target dir, not per run.
        let build = Command::new(project.join("build.sh"))
            .env(
                "CARGO_TARGET_DIR",
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffolded"),
            )
            .output()
            .unwrap();
        assert!(build.status.success(), "{name}: {build:?}");
        let (ok, out) = helix(&["plugin", "check", &format!("{name}/{name}.wasm")]);
        assert!(ok, "{out}");
        assert!(out.contains(&format!("name:        {name} 0.1.0")), "{out}");
        // The README's `plugin test` line, run as written in the project.
        let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
        let documented = readme
            .lines()
            .find(|line| line.starts_with("helix-build plugin test"))
            .expect("the README shows plugin test");
        let words: Vec<&str> = documented.split_whitespace().skip(1).collect();
        let (ok, out) = helix_in(&project, &words);
        assert!(ok, "{name}: `{documented}` fails as generated:\n{out}");
        assert!(out.contains("result: succeeded"), "{out}");
    }
    let (ok, out) = helix(&["plugin", "new", "team-rust", "--lang", "rust"]);
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = helix(&["plugin", "new", "Not_A_Name", "--lang", "rust"]);
    assert!(!ok && out.contains("is not a builder name"), "{out}");

    // The README's way: the generated server config, a real job.
    let registry = fixtures::Registry::start(false);
    let project = dir.path().join("team-rust");
    let mut config = std::fs::read_to_string(project.join("helix.toml")).unwrap();
    config.insert_str(0, "allow_file_repos = true\n");
    config.push_str(&format!(
        "\n[registries.\"{}\"]\ntls_verify = false\n",
        registry.address
    ));
    std::fs::write(project.join("helix.toml"), config).unwrap();
    let server = Server::start_in_dir(&project, &["--config", "helix.toml"]);
    let repo = fixtures::Repo::new();
    let job = json!({
        "repo_url": repo.url(),
        "ref": "v1",
        "image": format!("{}/team/app:1", registry.address),
    });
    let (status, job) = server.json("POST", "/v1/jobs", Some(&job));
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let (_, job) = server.json("GET", &format!("/v1/jobs/{id}/wait?timeout_secs=120"), None);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["builder"], "team-rust");
}

#[test]
fn builders_reload_without_a_restart_and_a_broken_component_keeps_the_old_one() {
    let data = tempfile::tempdir().unwrap();
    let plugins = std::path::Path::new(env!("HELIX_TESTING_PLUGIN_DIR"));
    let component = data.path().join("swap.wasm");
    let use_plugin = |stem: &str| {
        std::fs::copy(plugins.join(format!("{stem}.wasm")), &component).unwrap();
    };
    use_plugin("helix_plugin_simulated");
    let config = data.path().join("helix.toml");
    std::fs::write(
        &config,
        format!(
            "workers = 2\ndefault_builder = \"swap\"\n[builders.swap]\ncomponent = \"{}\"\n",
            component.display()
        ),
    )
    .unwrap();
    let server = Server::start_in(data.path(), &["--config", config.to_str().unwrap()]);
    let digest_now = || {
        let (_, builders) = server.json("GET", "/v1/builders", None);
        let swap = builders
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == "swap");
        swap.unwrap()["component_digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let old = digest_now();

    // Two running, twenty waiting: a reload loses none of them.
    let ids: Vec<String> = (0..22).map(|i| format!("swap-{i}")).collect();
    for id in &ids {
        submit_to(
            &server,
            "swap",
            id,
            json!({"HELIX_SIMULATE_DELAY_MS": "400"}),
        );
    }
    let (running, _) = until_running(&server, "swap-1", 200);
    assert!(running);
    use_plugin("helix_plugin_exec");
    let (status, reloaded) = server.json("POST", "/v1/builders/reload", None);
    assert_eq!(status, 200, "{reloaded}");
    let new = digest_now();
    assert_ne!(old, new, "the new component is in use");
    let mut ran_on = std::collections::BTreeMap::new();
    for id in &ids {
        let (_, job) = server.json("GET", &format!("/v1/jobs/{id}/wait?timeout_secs=60"), None);
        assert_eq!(job["state"], "succeeded", "{job}");
        let digest = job["component_digest"].as_str().unwrap().to_string();
        *ran_on.entry(digest).or_insert(0) += 1;
    }
    assert_eq!(
        ran_on.keys().cloned().collect::<Vec<_>>().len(),
        2,
        "{ran_on:?}"
    );
    assert!(
        ran_on[&old] >= 2,
        "the running ones finished on the old one: {ran_on:?}"
    );
    assert!(ran_on[&new] >= 1, "{ran_on:?}");
    let (_, metrics) = server.request("GET", "/metrics", None);
    assert!(
        metrics.contains(&format!(
            "helix_builder_info{{builder=\"swap\",digest=\"{new}\""
        )),
        "{metrics}"
    );

    // A component that does not load: refused, the one in use stays.
    std::fs::write(&component, b"not a component").unwrap();
    let (status, refused) = server.json("POST", "/v1/builders/reload", None);
    assert_eq!(status, 422, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("builders not reloaded, the ones loaded stay in use"),
        "{message}"
    );
    assert!(message.contains("swap"), "{message}");
    assert_eq!(digest_now(), new);
    submit_to(&server, "swap", "after-refusal", json!({}));
    let (_, job) = server.json("GET", "/v1/jobs/after-refusal/wait?timeout_secs=30", None);
    assert_eq!(
        (job["state"].as_str(), job["component_digest"].as_str()),
        (Some("succeeded"), Some(new.as_str()))
    );

    // SIGHUP reloads too.
    use_plugin("helix_plugin_simulated");
    // SAFETY: signals the server this test started.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) };
    let back = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        digest_now() == old
    });
    assert!(back, "SIGHUP reloaded the builders");
}

#[test]
fn plugin_check_says_which_contract_a_builder_targets() {
    let path = std::path::Path::new(env!("HELIX_TESTING_PLUGIN_DIR"))
        .join("helix_plugin_contract_0_2.wasm");
    let output = plugin_check(&path);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("a builder for helix:build@0.2.0 (an older contract this host"),
        "{stdout}"
    );
}

#[test]
fn plugin_check_refuses_what_is_not_a_builder() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    for (path, expected) in [
        (junk, "not a valid WebAssembly component"),
        (dir.path().join("missing.wasm"), "cannot read"),
    ] {
        let output = plugin_check(&path);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("helix-build: ") && stderr.contains(expected),
            "{stderr}"
        );
    }
}

#[test]
fn kill_9_during_builds_loses_no_accepted_job_and_runs_none_twice_at_once() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("helix.toml");
    std::fs::write(&config, "workers = 2\n").unwrap();
    let config = config.to_str().unwrap();
    let mut server = Server::start_in(data.path(), &["--config", config]);
    let ids: Vec<String> = (0..5).map(|i| format!("crash-{i}")).collect();
    for id in &ids {
        let request = json!({
            "builder": "simulated",
            "id": id,
            "repo_url": "https://git.example/app.git",
            "build_args": {"HELIX_SIMULATE_DELAY_MS": "1500"},
        });
        assert_eq!(server.json("POST", "/v1/jobs", Some(&request)).0, 201);
    }
    // Two are running, three queued: kill the host without warning.
    let (_, job) = server.json("GET", "/v1/jobs/crash-1/wait?timeout_secs=1", None);
    assert_eq!(job["state"], "running");
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let server = Server::start_in(data.path(), &["--config", config]);
    let (_, jobs) = server.json("GET", "/v1/jobs", None);
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 5, "{jobs}");
    for id in &ids {
        let (_, job) = server.json("GET", &format!("/v1/jobs/{id}/wait?timeout_secs=30"), None);
        assert_eq!(job["state"], "succeeded", "{job}");
        let (_, logs) = server.request("GET", &format!("/v1/jobs/{id}/logs"), None);
        let runs = logs.matches("running on builder").count();
        assert_eq!(
            job["attempts"].as_u64().unwrap() as usize,
            runs,
            "{id}: {logs}"
        );
        let expected = if id == "crash-0" || id == "crash-1" {
            2
        } else {
            1
        };
        assert_eq!(runs, expected, "{id}: {logs}");
    }
}

/// Writes a config for host `name` on `postgres` into `dir`; returns its
/// path.
fn shared_host_config(
    dir: &tempfile::TempDir,
    postgres: &fixtures::Postgres,
    name: &str,
    workers: usize,
    lease_secs: u64,
) -> std::path::PathBuf {
    let path = dir.path().join("helix.toml");
    std::fs::write(
        &path,
        format!(
            "workers = {workers}\nlease_secs = {lease_secs}\nhost_id = '{name}'\nstore_url = '{}'\n",
            postgres.url()
        ),
    )
    .unwrap();
    path
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

#[test]
fn a_host_killed_mid_build_leaves_its_jobs_to_another_host() {
    let postgres = fixtures::Postgres::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config_a = shared_host_config(&dir_a, &postgres, "a", 2, 3);
    let mut a = Server::start_in(dir_a.path(), &["--config", config_a.to_str().unwrap()]);
    let ids: Vec<String> = (0..6).map(|i| format!("lost-{i}")).collect();
    for id in &ids {
        submit(&a, id, json!({"HELIX_SIMULATE_DELAY_MS": "3000"}));
    }
    // A runs the first two and dies without warning; B starts after.
    for id in &ids[..2] {
        assert!(until_running(&a, id, 100).0, "{id} never ran on a");
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let config_b = shared_host_config(&dir_b, &postgres, "b", 2, 3);
    let b = Server::start_in(dir_b.path(), &["--config", config_b.to_str().unwrap()]);

    for id in &ids {
        let (_, job) = b.json("GET", &format!("/v1/jobs/{id}/wait?timeout_secs=60"), None);
        assert_eq!(job["state"], "succeeded", "{job}");
        let (_, logs) = b.request("GET", &format!("/v1/jobs/{id}/logs"), None);
        let hosts: Vec<&str> = logs
            .lines()
            .filter_map(|l| l.strip_prefix("[helix] running on builder 'simulated' on host "))
            .collect();
        if id == "lost-0" || id == "lost-1" {
            assert_eq!(hosts, ["'a'", "'b'"], "{id}: {logs}");
            assert!(
                logs.contains("host lost: 'a' stopped renewing its lease"),
                "{logs}"
            );
            assert_eq!(job["attempts"], 2, "{job}");
        } else {
            assert_eq!(hosts.len(), 1, "{id} ran once: {logs}");
        }
    }
}

#[test]
fn a_host_restarting_under_its_name_takes_its_runs_back_without_waiting_for_the_lease() {
    let postgres = fixtures::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    // A lease far longer than the test may wait.
    let config = shared_host_config(&dir, &postgres, "a", 1, 600);
    let args = ["--config", config.to_str().unwrap()];
    let mut a = Server::start_in(dir.path(), &args);
    submit(&a, "comeback", json!({"HELIX_SIMULATE_DELAY_MS": "60000"}));
    assert!(until_running(&a, "comeback", 100).0);
    a.child.kill().unwrap();
    a.child.wait().unwrap();

    let a = Server::start_in(dir.path(), &args);
    let (rerun, job) = until_running(&a, "comeback", 250);
    assert!(rerun, "not run again within 5 s: {job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let (_, logs) = a.request("GET", "/v1/jobs/comeback/logs", None);
    assert!(
        logs.contains("interrupted: this host stopped while the job ran; queued again"),
        "{logs}"
    );
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
fn cli_submit_wait_and_follow_exit_zero_only_when_the_job_succeeds() {
    let server = Server::start(&[]);
    let repo = [
        "submit",
        "--repo",
        "https://git.example/app.git",
        "--builder",
        "simulated",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        repo.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| {
        cli(
            &server,
            None,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };

    let (ok, out, err) = run(with(&["--id", "c1", "--wait"]));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("c1 succeeded: simulated.invalid/helix-simulated:c1"),
        "{out}"
    );

    let (ok, out, _) = run(with(&[
        "--id",
        "c2",
        "--wait",
        "--build-arg",
        "HELIX_SIMULATE_FAIL=nope",
    ]));
    assert!(!ok);
    assert!(
        out.contains("c2 failed: build error: simulated failure: nope"),
        "{out}"
    );

    let (ok, out, err) = run(with(&[
        "--id",
        "c3",
        "--follow",
        "--platform",
        "linux/amd64,linux/arm64",
        "--build-arg",
        "HELIX_SIMULATE_DELAY_MS=300",
    ]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("[simulated] working for 300 ms"), "{out}");
    assert!(
        !out.lines().any(|l| l == "running" || l == "queued"),
        "states are not log lines: {out}"
    );
    assert!(out.contains("linux/arm64 sha256:"), "{out}");

    let (ok, out, _) = run(with(&[
        "--id",
        "c4",
        "--follow",
        "--build-arg",
        "HELIX_SIMULATE_FAIL=x",
    ]));
    assert!(!ok);
    assert!(out.contains("[helix] job failed"), "{out}");

    let (ok, out, _) = run(with(&["--id", "c5"]));
    assert!(ok);
    assert_eq!(out.trim(), "c5");
    let (ok, out, err) = run(with(&["--id", "c5"]));
    assert!(!ok);
    assert!(
        err.contains("helix-build: a job with id 'c5' already exists"),
        "{out}{err}"
    );
}

#[test]
fn cli_lists_shows_cancels_and_reads_logs() {
    let server = Server::start(&[]);
    submit(&server, "long", json!({"HELIX_SIMULATE_DELAY_MS": "60000"}));
    submit(&server, "short", json!({}));
    server.json("GET", "/v1/jobs/short/wait?timeout_secs=20", None);
    // A generated id: 36 characters.
    let generated = json!({
        "builder": "simulated",
        "repo_url": "https://h/r",
        "build_args": {"HELIX_SIMULATE_DELAY_MS": "60000"}
    });
    let (status, _) = server.json("POST", "/v1/jobs", Some(&generated));
    assert_eq!(status, 201);

    // The simulated builder runs no program: an empty trail.
    let (ok, out, _) = cli(&server, None, &["audit", "short"]);
    assert!(ok && out.starts_with("RUN"), "{out}");
    let (ok, out, _) = cli(&server, None, &["--json", "audit", "short"]);
    assert!(ok, "{out}");
    let audit: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(audit, json!({"entries": [], "dropped": 0}));
    let (ok, _, err) = cli(&server, None, &["audit", "no-such-job"]);
    assert!(!ok && err.contains("no job with id 'no-such-job'"), "{err}");
    let (ok, _, err) = cli(&server, None, &["provenance", "short"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("job 'short' has no provenance: builder 'simulated' is simulated"),
        "{err}"
    );

    let (ok, out, _) = cli(&server, None, &["jobs"]);
    assert!(ok);
    assert!(out.starts_with("ID"), "{out}");
    let state_column = out.find("STATE").unwrap();
    for line in out.lines().skip(1) {
        let state = line.get(state_column..).unwrap_or_default();
        assert!(
            ["queued", "running", "succeeded"]
                .iter()
                .any(|s| state.starts_with(s)),
            "columns line up: {out}"
        );
    }
    // The simulated builder checks nothing out: no commit.
    let commit_column = out.find("COMMIT").unwrap();
    for line in out.lines().skip(1) {
        assert!(
            line.get(commit_column..)
                .is_some_and(|c| c.starts_with("- ")),
            "no commit: {out}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("short") && l.contains("succeeded")),
        "{out}"
    );
    // Submitted and listed by group, a name with a space and a colon.
    let (ok, out, err) = cli(
        &server,
        None,
        &[
            "submit",
            "--repo",
            "https://h/grouped",
            "--builder",
            "simulated",
            "--group",
            "team app:main",
            "--priority",
            "-5",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let grouped: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (grouped["group"].as_str(), grouped["priority"].as_i64()),
        (Some("team app:main"), Some(-5))
    );
    let (ok, out, _) = cli(
        &server,
        None,
        &["jobs", "--json", "--group", "team app:main"],
    );
    assert!(ok);
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 1, "{out}");
    assert_eq!(listed[0]["id"], grouped["id"]);
    let (ok, out, _) = cli(&server, None, &["jobs", "--json", "--state", "succeeded"]);
    assert!(ok);
    let jobs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 1);

    let (ok, out, _) = cli(&server, None, &["get", "short"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["state"],
        "succeeded"
    );
    let (ok, out, _) = cli(&server, None, &["logs", "short"]);
    assert!(ok && out.contains("[helix] job succeeded"), "{out}");
    for flags in [
        &["logs", "-t", "short"][..],
        &["logs", "--follow", "--timestamps", "short"],
    ] {
        let (ok, timed, _) = cli(&server, None, flags);
        assert!(ok, "{flags:?}: {timed}");
        assert_timestamped(&timed, &out);
    }
    let (code, out, _) = cli_exit(&server, None, &["wait", "long", "--timeout", "1"]);
    assert_eq!(
        code,
        Some(124),
        "the timeout passed, the job still running: {out}"
    );
    assert!(out.contains("long running"), "{out}");
    let (ok, out, _) = cli(&server, None, &["cancel", "long"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "long cancelled by request");
    let (code, out, _) = cli_exit(&server, None, &["wait", "long", "--timeout", "1"]);
    assert_eq!(code, Some(1), "ended, not succeeded: {out}");
    let (ok, _, err) = cli(&server, None, &["cancel", "long"]);
    assert!(!ok && err.contains("already ended"), "{err}");
    let (ok, out, _) = cli(&server, None, &["builders"]);
    assert!(ok && out.lines().any(|l| l.starts_with("podman")), "{out}");
    let (ok, _, err) = cli(&server, None, &["get", "missing"]);
    assert!(!ok && err.contains("no job with id 'missing'"), "{err}");
}

#[test]
fn cli_submit_takes_dockers_flags_and_jobs_filters_by_builder_and_text() {
    let server = Server::start(&[]);
    let output = Command::new(env!("CARGO_BIN_EXE_helix-build"))
        .args([
            "submit",
            "https://git.example/app.git#v2:services/api",
            "--builder",
            "simulated",
            "-t",
            "registry.example/team/api:2",
            "--build-arg",
            "FROM_ENV",
            "--build-arg",
            "UNSET_HERE",
            "--build-arg",
            "PLAIN=1",
            "--json",
        ])
        .env("HELIX_SERVER", format!("http://{}", server.address))
        .env("FROM_ENV", "from the client")
        .env_remove("UNSET_HERE")
        .env_remove("HELIX_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    let job: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(job["repo_url"], "https://git.example/app.git");
    assert_eq!(job["ref"], "v2");
    assert_eq!(job["context"], "services/api");
    assert_eq!(job["image"], "registry.example/team/api:2");
    assert_eq!(
        job["build_args"],
        json!({"FROM_ENV": "from the client", "PLAIN": "1"}),
        "a NAME alone takes the client's value, and is skipped when it has none"
    );

    // `--tag` is `-t`, not clap's guess `--target`; docker's secret form
    // names the secret itself, so the server's error names `npm`.
    let (ok, _, err) = cli(
        &server,
        None,
        &[
            "submit",
            "--repo",
            "https://git.example/app.git",
            "--builder",
            "simulated",
            "--tag",
            "r.example/a:1",
            "--secret",
            "id=npm",
        ],
    );
    assert!(
        !ok && err.contains("secret 'npm'") && !err.contains("id=npm"),
        "{err}"
    );
    let (ok, _, err) = cli(
        &server,
        None,
        &[
            "submit",
            "https://git.example/app.git",
            "--secret",
            "id=npm,src=./npmrc",
        ],
    );
    assert!(!ok && err.contains("only id=NAME"), "{err}");
    let (ok, _, err) = cli(&server, None, &["submit"]);
    assert!(
        !ok && err.contains("REPO"),
        "a submit without a repository says so: {err}"
    );

    let (ok, _, err) = cli(
        &server,
        None,
        &[
            "submit",
            "https://git.example/other.git",
            "--builder",
            "simulated",
        ],
    );
    assert!(ok, "{err}");
    let listed = |args: &[&str]| -> Vec<String> {
        let args: Vec<&str> = ["jobs", "--json"].iter().chain(args).copied().collect();
        let (ok, out, err) = cli(&server, None, &args);
        assert!(ok, "{err}");
        let jobs: Vec<Value> = serde_json::from_str(&out).unwrap();
        jobs.iter()
            .map(|j| j["repo_url"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        listed(&["--search", "team/api"]),
        ["https://git.example/app.git"]
    );
    assert_eq!(listed(&["--builder", "simulated"]).len(), 2);
    assert!(listed(&["--builder", "podman"]).is_empty());
}

#[test]
fn help_names_the_token_without_its_value_and_server_options_only_on_serve() {
    let help = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_helix-build"))
            .args(args)
            .arg("--help")
            .env("HELIX_TOKEN", "a-secret-token-value")
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let submit = help(&["submit"]);
    assert!(
        submit.contains("--token") && submit.contains("HELIX_TOKEN"),
        "{submit}"
    );
    assert!(!submit.contains("a-secret-token-value"), "{submit}");
    assert!(!submit.contains("--log-format"), "{submit}");
    assert!(
        submit.contains("-t, --image") && submit.contains("--tag"),
        "{submit}"
    );
    assert!(help(&["serve"]).contains("--log-format"));
    let wait = help(&["wait"]);
    assert!(wait.contains("exit 124"), "{wait}");
}

#[test]
fn cli_sends_the_token_and_says_when_the_server_is_unreachable() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("helix.toml");
    std::fs::write(&config, "token = \"correct-horse-battery-staple\"\n").unwrap();
    let server = Server::start_in(data.path(), &["--config", config.to_str().unwrap()]);
    let (ok, _, err) = cli(&server, None, &["jobs"]);
    assert!(!ok && err.contains("bearer token"), "{err}");
    let (ok, out, err) = cli(
        &server,
        Some("correct-horse-battery-staple"),
        &["jobs", "--json"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "[]");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_helix-build"))
        .args(["jobs", "--server", &format!("http://{closed}")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach the server"));
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
    assert_eq!(checked, 18, "every route of the router is documented");
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_stores_nothing() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("helix.toml");
    std::fs::write(&config, "workers = 1\nqueue_capacity = 1\n").unwrap();
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

/// `timed` is `plain` with each line preceded by its time (RFC 3339, UTC)
/// and a space, the times in order.
fn assert_timestamped(timed: &str, plain: &str) {
    let mut last = None;
    let mut texts = Vec::new();
    for line in timed.lines() {
        let (time, text) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let time = chrono::DateTime::parse_from_rfc3339(time)
            .unwrap_or_else(|e| panic!("{line:?} does not start with a time: {e}"));
        assert_eq!(time.offset().local_minus_utc(), 0, "{line:?} is not in UTC");
        assert!(last <= Some(time), "times out of order at {line:?}");
        last = Some(time);
        texts.push(text);
    }
    assert_eq!(texts, plain.lines().collect::<Vec<_>>());
}

/// The processes in the control groups of job `id`'s first run, wherever
/// this host's server keeps them.
fn run_processes(id: &str) -> Vec<u32> {
    fn collect(dir: &std::path::Path, into: &mut Vec<u32>) {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            into.extend(procs.lines().filter_map(|l| l.parse::<u32>().ok()));
        }
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                collect(&entry.path(), into);
            }
        }
    }
    let mut pids = Vec::new();
    for server in std::fs::read_dir("/sys/fs/cgroup/pids/helix")
        .unwrap()
        .flatten()
    {
        collect(&server.path().join(format!("{id}.1")), &mut pids);
    }
    pids
}

/// Whether process `pid` still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn after_kill_9_mid_build_the_jail_dies_with_the_server_and_the_retry_succeeds() {
    let registry = fixtures::Registry::start(false);
    let repo = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", repo.path().join("busybox")).unwrap();
    std::fs::write(
        repo.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo step started; /bin/busybox sleep 15\"]\n",
    )
    .unwrap();
    fixtures::git(repo.path(), &["init", "-q", "-b", "main"]);
    fixtures::git(repo.path(), &["add", "-A"]);
    fixtures::git(repo.path(), &["commit", "-qm", "slow"]);

    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("helix.toml");
    std::fs::write(
        &config,
        format!(
            "workers = 1\nallow_file_repos = true\ndefault_registry = \"{0}/team\"\n\
             [registries.\"{0}\"]\ntls_verify = false\n",
            registry.address
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let mut server = Server::start_in(data.path(), &["--config", config]);
    let request = json!({
        "id": "slow-build",
        "repo_url": format!("file://{}", repo.path().display()),
        "builder": "podman",
    });
    assert_eq!(server.json("POST", "/v1/jobs", Some(&request)).0, 201);
    let started = (0..1500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        let (_, logs) = server.request("GET", "/v1/jobs/slow-build/logs", None);
        logs.contains("step started")
    });
    assert!(started, "the RUN step never started");
    // The step's own process too, not only the build tool.
    let mut pids = Vec::new();
    let in_group = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        pids = run_processes("slow-build");
        pids.iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.contains("sleep"))
        })
    });
    assert!(
        in_group,
        "the RUN step is in the run's control group: {pids:?}"
    );

    let group = helix_build::cgroup::server_group(data.path());
    let first_run: Vec<std::path::PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|hierarchy| hierarchy.path().join(&group).join("slow-build.1"))
        .filter(|dir| dir.exists())
        .collect();
    assert!(first_run.len() >= 3, "the run's groups: {first_run:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let data_dir = format!(" {}/", data.path().canonicalize().unwrap().display());
    assert!(
        mounts.contains(&data_dir),
        "the run's file systems are mounted"
    );

    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // The jail's processes die with the server that started them (and
    // the restart would reap any that did not).
    let outlived = |pids: &[u32]| {
        pids.iter()
            .copied()
            .filter(|&pid| alive(pid))
            .collect::<Vec<u32>>()
    };
    let mut left = outlived(&pids);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        left = outlived(&pids);
    }
    assert_eq!(
        left, [0u32; 0],
        "build processes outlived the killed server"
    );

    let server = Server::start_in(data.path(), &["--config", config]);
    let survivors: Vec<u32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
    assert_eq!(
        survivors, [0u32; 0],
        "build processes alive after the restart"
    );
    let (_, job) = server.json("GET", "/v1/jobs/slow-build/wait?timeout_secs=120", None);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let left: Vec<_> = first_run.iter().filter(|dir| dir.exists()).collect();
    assert!(left.is_empty(), "the killed run's groups: {left:?}");
    // What the killed run mounted and grouped, the restarted server
    // released: nothing is left once it stops.
    drop(server);
    crate::common::assert_nothing_left(data.path());
}

#[test]
fn backup_under_load_holds_every_job_committed_before_it_and_opens() {
    let server = Server::start(&[]);
    let data = server._data.as_ref().unwrap().path().to_path_buf();
    let copy = data.join("copy.db");
    let stop = std::sync::atomic::AtomicBool::new(false);
    // A steady stream of submissions while the backup runs.
    let (accepted, began, backup) = std::thread::scope(|scope| {
        let submitter = scope.spawn(|| {
            let mut accepted = Vec::new();
            for i in 0..2000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let id = format!("load-{i}");
                let request = json!({"builder": "simulated", "id": id, "repo_url": "https://git.example/app.git"});
                if server.json("POST", "/v1/jobs", Some(&request)).0 == 201 {
                    accepted.push((id, std::time::Instant::now()));
                }
            }
            accepted
        });
        std::thread::sleep(Duration::from_millis(500));
        let began = std::time::Instant::now();
        let backup = Command::new(env!("CARGO_BIN_EXE_helix-build"))
            .args(["backup", copy.to_str().unwrap()])
            .env("HELIX_DATA_DIR", &data)
            .env_remove("HELIX_CONFIG")
            .output()
            .unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (submitter.join().unwrap(), began, backup)
    });
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let before: Vec<&String> = accepted
        .iter()
        .filter(|(_, at)| *at < began)
        .map(|(id, _)| id)
        .collect();
    assert!(
        before.len() > 10,
        "the load ran before the backup: {}",
        before.len()
    );

    let db = rusqlite::Connection::open(&copy).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let stored: std::collections::HashSet<String> = db
        .prepare("SELECT id FROM jobs")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let missing: Vec<&&String> = before.iter().filter(|id| !stored.contains(**id)).collect();
    assert!(
        missing.is_empty(),
        "committed before the backup, not in it: {missing:?}"
    );
    assert!(
        String::from_utf8_lossy(&backup.stdout).contains("a consistent copy of"),
        "{}",
        String::from_utf8_lossy(&backup.stdout)
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

/// The hex HMAC-SHA256 of `body` with `secret`, as GitHub and Gitea sign.
fn hmac_hex(secret: &str, body: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A push of `git_ref` at commit `after` to `url`, with the fields each
/// forge's documentation gives its push event (GitHub and Gitea name the
/// URL `repository.clone_url`, GitLab `repository.git_http_url`).
fn push_payload(forge: &str, git_ref: &str, after: &str, url: &str) -> String {
    let url_field = if forge == "gitlab" {
        "git_http_url"
    } else {
        "clone_url"
    };
    json!({
        "ref": git_ref,
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "repository": { "name": "app", url_field: url },
        "commits": [],
    })
    .to_string()
}

/// The header lines `forge` sends with `body` (signed with `secret`) as
/// delivery `delivery`.
fn forge_headers(forge: &str, secret: &str, body: &str, delivery: &str) -> String {
    match forge {
        "github" => format!(
            "X-GitHub-Event: push\r\nX-GitHub-Delivery: {delivery}\r\nX-Hub-Signature-256: sha256={}\r\n",
            hmac_hex(secret, body)
        ),
        "gitea" => format!(
            "X-Gitea-Event: push\r\nX-Gitea-Delivery: {delivery}\r\nX-Gitea-Signature: {}\r\n",
            hmac_hex(secret, body)
        ),
        _ => format!(
            "X-Gitlab-Event: Push Hook\r\nX-Gitlab-Event-UUID: {delivery}\r\nX-Gitlab-Token: {secret}\r\n"
        ),
    }
}

#[test]
fn webhooks_build_signed_pushes_once_and_refuse_bad_signatures_and_other_branches() {
    let data = tempfile::tempdir().unwrap();
    let secret_file = |forge: &str| {
        let path = data.path().join(format!("{forge}.secret"));
        std::fs::write(&path, format!("{forge}-hook-secret")).unwrap();
        path
    };
    let config = data.path().join("helix.toml");
    std::fs::write(
        &config,
        format!(
            "token = \"a-token-the-forges-never-send\"\n\
             [webhooks]\n\
             github = {{ file = \"{}\" }}\n\
             gitea = {{ file = \"{}\" }}\n\
             gitlab = {{ file = \"{}\" }}\n\
             [[webhook_rules]]\n\
             repository = \"https://git.example/team/*\"\n\
             refs = [\"refs/heads/main\"]\n\
             builder = \"simulated\"\n",
            secret_file("github").display(),
            secret_file("gitea").display(),
            secret_file("gitlab").display()
        ),
    )
    .unwrap();
    let server = Server::start_in(data.path(), &["--config", config.to_str().unwrap()]);
    let commit = "4f5c8d0e3a2b1c9d8e7f6a5b4c3d2e1f0a9b8c7d";
    let url = "https://git.example/team/app.git";
    for forge in ["github", "gitea", "gitlab"] {
        let secret = format!("{forge}-hook-secret");
        let path = format!("/v1/hooks/{forge}");
        let delivery = format!("72d3162e-cc78-11e3-81ab-4c9367dc09{}", forge.len());
        let body = push_payload(forge, "refs/heads/main", commit, url);

        let (status, answer) = server.raw(
            "POST",
            &path,
            &body,
            &forge_headers(forge, &secret, &body, &delivery),
        );
        assert_eq!(status, 202, "{forge}: {answer}");
        let job: Value = serde_json::from_str(&answer).unwrap();
        let id = job["id"].as_str().unwrap().to_string();
        assert!(id.starts_with(&format!("hook-{forge}-")), "{forge}: {id}");
        assert_eq!(job["ref"], "refs/heads/main");
        assert_eq!(
            job["pinned_commit"], commit,
            "{forge}: the pushed commit is built"
        );
        assert_eq!(job["repo_url"], url);
        assert_eq!(job["group"], format!("{url}:main"));
        assert_eq!(job["cancel_in_progress"], true);

        let (status, answer) = server.raw(
            "POST",
            &path,
            &body,
            &forge_headers(forge, &secret, &body, &delivery),
        );
        assert_eq!(status, 200, "{forge}: a redelivery: {answer}");
        assert!(
            answer.contains(&format!("made job {id} before")),
            "{answer}"
        );
        let replayed = forge_headers(forge, &secret, &body, "a-new-delivery-id");
        let (status, answer) = server.raw("POST", &path, &body, &replayed);
        assert_eq!(status, 200, "{forge}: a replay: {answer}");

        let forged = forge_headers(forge, "not-the-secret", &body, "another-delivery");
        let (status, answer) = server.raw("POST", &path, &body, &forged);
        assert_eq!(status, 401, "{forge}: a wrong signature: {answer}");
        let unsigned = forge_headers(forge, &secret, &body, "yet-another")
            .lines()
            .filter(|l| !l.contains("Signature") && !l.contains("Token"))
            .map(|l| format!("{l}\r\n"))
            .collect::<String>();
        let (status, answer) = server.raw("POST", &path, &body, &unsigned);
        assert_eq!(status, 401, "{forge}: no signature: {answer}");
        assert!(answer.contains("not signed"), "{answer}");

        let feature = push_payload(forge, "refs/heads/feature", commit, url);
        let headers = forge_headers(forge, &secret, &feature, &format!("feature-{forge}"));
        let (status, answer) = server.raw("POST", &path, &feature, &headers);
        assert_eq!(status, 204, "{forge}: a branch no rule builds: {answer}");
    }
    let (status, _) = server.raw("POST", "/v1/hooks/bitbucket", "{}", "");
    assert_eq!(status, 404);
}

/// One request a [`Receiver`] took.
#[derive(Debug, Clone)]
struct Received {
    /// Header names in lower case.
    headers: std::collections::HashMap<String, String>,
    body: String,
}

/// A webhook receiver on a loopback port: records each request and
/// answers it with the next status of its script (then 200s).
struct Receiver {
    address: SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(listener: std::net::TcpListener, script: Vec<u16>) -> Receiver {
        let address = listener.local_addr().unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut headers = std::collections::HashMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    match line.trim_end().split_once(": ") {
                        Some((name, value)) => {
                            headers.insert(name.to_ascii_lowercase(), value.to_string())
                        }
                        None => break,
                    };
                }
                let length = headers["content-length"].parse().unwrap();
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let status = script.next().unwrap_or(200);
                log.lock().unwrap().push(Received {
                    headers,
                    body: String::from_utf8(body).unwrap(),
                });
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { address, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The requests taken so far, once there are at least `count` (waits
    /// up to `secs` seconds for them).
    fn wait_for(&self, count: usize, secs: u64) -> Vec<Received> {
        for _ in 0..secs * 10 {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= count {
                return received;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{count} notification(s) expected, got {:?}",
            self.received.lock().unwrap()
        );
    }
}

/// Checks one notification: signed with `secret`, about `id` ending in
/// `state`; returns its delivery id.
fn assert_notified(received: &Received, secret: &str, id: &str, state: &str) -> String {
    assert_eq!(
        received.headers["x-helix-signature-256"],
        format!("sha256={}", hmac_hex(secret, &received.body)),
        "signed with the target's secret"
    );
    assert_eq!(received.headers["x-helix-event"], format!("job.{state}"));
    assert_eq!(received.headers["content-type"], "application/json");
    let job: Value = serde_json::from_str(&received.body).unwrap();
    assert_eq!(
        (job["id"].as_str(), job["state"].as_str()),
        (Some(id), Some(state))
    );
    received.headers["x-helix-delivery"].clone()
}

fn notification_config(data: &std::path::Path, targets: &[(String, &str)]) -> String {
    let secret = data.join("notify.secret");
    std::fs::write(&secret, "notify-secret").unwrap();
    let mut config = String::from("workers = 2\n");
    for (url, states) in targets {
        config.push_str(&format!(
            "[[notifications]]\nurl = \"{url}\"\nsecret = {{ file = \"{}\" }}\n{states}\n",
            secret.display()
        ));
    }
    let path = data.join("helix.toml");
    std::fs::write(&path, config).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn job_ends_are_notified_signed_retried_and_filtered_by_state() {
    let data = tempfile::tempdir().unwrap();
    // The first request fails: the notification is sent again.
    let all = Receiver::start(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![500],
    );
    let failures = Receiver::start(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), vec![]);
    let config = notification_config(
        data.path(),
        &[
            (all.url("/all"), ""),
            (failures.url("/failures"), "states = [\"failed\"]"),
        ],
    );
    let server = Server::start_in(data.path(), &["--config", &config]);
    submit(&server, "notify-ok", json!({}));
    let (_, job) = server.json("GET", "/v1/jobs/notify-ok/wait?timeout_secs=30", None);
    assert_eq!(job["state"], "succeeded", "{job}");
    let received = all.wait_for(2, 30);
    assert_eq!(received.len(), 2, "refused once, then taken: {received:?}");
    let first = assert_notified(&received[0], "notify-secret", "notify-ok", "succeeded");
    let second = assert_notified(&received[1], "notify-secret", "notify-ok", "succeeded");
    assert_eq!(first, second, "a retry keeps its delivery id");

    submit(
        &server,
        "notify-bad",
        json!({"HELIX_SIMULATE_FAIL": "RUN make: exit 2"}),
    );
    let (_, job) = server.json("GET", "/v1/jobs/notify-bad/wait?timeout_secs=30", None);
    assert_eq!(job["state"], "failed", "{job}");
    let told = failures.wait_for(1, 30);
    assert_eq!(told.len(), 1, "only the failure: {told:?}");
    let delivery = assert_notified(&told[0], "notify-secret", "notify-bad", "failed");
    assert_ne!(delivery, first, "each job's notification has its own id");
    let received = all.wait_for(3, 30);
    assert_notified(&received[2], "notify-secret", "notify-bad", "failed");
}

#[test]
fn a_notification_owed_when_the_server_is_killed_is_sent_after_the_restart() {
    let data = tempfile::tempdir().unwrap();
    // Nothing listens at the receiver's address yet: every try is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = port.local_addr().unwrap();
    drop(port);
    let config = notification_config(data.path(), &[(format!("http://{address}/hook"), "")]);
    let mut server = Server::start_in(data.path(), &["--config", &config]);
    submit(&server, "owed", json!({}));
    let (_, job) = server.json("GET", "/v1/jobs/owed/wait?timeout_secs=30", None);
    assert_eq!(job["state"], "succeeded", "{job}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let receiver = Receiver::start(std::net::TcpListener::bind(address).unwrap(), vec![]);
    let _server = Server::start_in(data.path(), &["--config", &config]);
    // Due within the first retry's wait (at most 5 s), or the lease (120 s)
    // if the kill came while a try was in flight.
    let received = receiver.wait_for(1, 150);
    assert_eq!(received.len(), 1, "{received:?}");
    assert_notified(&received[0], "notify-secret", "owed", "succeeded");
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

/// `helix-build serve` on `data` when it is expected not to start: its
/// exit status and stderr.
fn refused_start(data: &std::path::Path) -> (std::process::ExitStatus, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_helix-build"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HELIX_DATA_DIR", data)
        .env_remove("HELIX_CONFIG")
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A data dir a server used: `jobs` simulated jobs with long logs, ended,
/// the server stopped and the database checkpointed into its main file.
fn used_data_dir(jobs: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &[]);
    for i in 0..jobs {
        submit(
            &server,
            &format!("used-{i}"),
            json!({"HELIX_SIMULATE_LOG_LINES": "400"}),
        );
    }
    let (_, job) = server.json(
        "GET",
        &format!("/v1/jobs/used-{}/wait?timeout_secs=60", jobs - 1),
        None,
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    assert!(server.child.wait().unwrap().success());
    let db = data.path().join("helix.db");
    let connection = rusqlite::Connection::open(&db).unwrap();
    connection
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(connection);
    (data, db)
}

#[test]
fn an_emptied_or_damaged_store_in_a_used_data_dir_is_refused_by_name() {
    // A fresh data dir starts.
    let fresh = tempfile::tempdir().unwrap();
    let server = Server::start_in(fresh.path(), &[]);
    assert_eq!(server.raw("GET", "/readyz", "", "").0, 200);
    drop(server);

    // Emptied: the file truncated (its WAL gone with it).
    let (data, db) = used_data_dir(2);
    std::fs::write(&db, b"").unwrap();
    let _ = std::fs::remove_file(data.path().join("helix.db-wal"));
    let (status, stderr) = refused_start(data.path());
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("job store {} is empty", db.display())),
        "{stderr}"
    );
    assert!(stderr.contains("helix-build backup"), "{stderr}");
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "nothing written to it"
    );

    // Damaged: blocks of noise written over the middle of the file.
    let (data, db) = used_data_dir(20);
    let mut bytes = std::fs::read(&db).unwrap();
    let pages = bytes.len() / 4096;
    assert!(pages > 20, "a store of {pages} pages");
    let mut noise = 0x9e37_79b9_7f4a_7c15_u64;
    for page in [pages / 3, pages / 2, 2 * pages / 3] {
        for byte in &mut bytes[page * 4096..(page + 1) * 4096] {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            *byte = noise as u8;
        }
    }
    std::fs::write(&db, &bytes).unwrap();
    let (status, stderr) = refused_start(data.path());
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("job store {} is damaged", db.display())),
        "{stderr}"
    );
    assert!(stderr.contains("helix-build backup"), "{stderr}");
}

#[test]
fn while_the_data_disk_is_full_submissions_get_503_and_the_server_takes_jobs_again_after() {
    // The data dir on a file system of its own of 32 MiB (a loop mount),
    // unmounted after the server (declared first, dropped last).
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let _disk = helix_build::quota::DiskQuota::fresh(&data, 32).unwrap();
    let server = Server::start_in(&data, &[]);
    let filler = data.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 1024 * 1024];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);
    refused_for_now(&server, "while-full", "data_disk_full", "data disk is full");
    assert_eq!(server.json("GET", "/v1/jobs/while-full", None).0, 404);

    std::fs::remove_file(&filler).unwrap();
    submit(&server, "after", json!({}));
    let (_, job) = server.json("GET", "/v1/jobs/after/wait?timeout_secs=30", None);
    assert_eq!(job["state"], "succeeded", "{job}");
}
