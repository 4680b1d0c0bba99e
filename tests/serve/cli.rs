//! The client commands against a real server: submit with docker's
//! flags, wait and follow (exit codes), list, show, cancel and logs, the
//! token and an unreachable server, and `--help`.

use super::*;

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
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("helix.toml");
    // The job still running at the end is cancelled a second into the
    // server's stop.
    std::fs::write(&config, "stop_grace_secs = 1\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
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
