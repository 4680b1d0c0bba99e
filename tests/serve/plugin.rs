//! The builder tools of the binary: `plugin check`, `plugin test` (a
//! builder dry-run under a grant policy, or against canned output),
//! `plugin new` (Rust and Python builders that build and run), and
//! reloading builders without a restart.

use super::*;

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
