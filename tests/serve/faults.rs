//! Faults the server survives: kill -9 during builds (no accepted job
//! lost, none run twice at once, the jail dies with it), a host lost or
//! restarted under its name on a shared store, a backup under load, and a
//! data dir whose store is emptied or damaged or whose disk is full.

use super::*;

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
    // Two are running, three queued: kill the host without warning, once
    // what it said of running them is stored (its log lines are written
    // behind).
    let (_, job) = server.json("GET", "/v1/jobs/crash-1/wait?timeout_secs=1", None);
    assert_eq!(job["state"], "running");
    let db = rusqlite::Connection::open(data.path().join("helix.db")).unwrap();
    let said = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        let stored: Result<i64, _> = db.query_row(
            "SELECT count(*) FROM job_logs WHERE job_id IN ('crash-0', 'crash-1') \
             AND line LIKE '%running on builder%'",
            [],
            |row| row.get(0),
        );
        stored.is_ok_and(|n| n == 2)
    });
    assert!(said, "the two runs are in the store");
    drop(db);
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
    // Jobs still running when a test stops the host are cancelled a
    // second into its stop.
    std::fs::write(
        &path,
        format!(
            "workers = {workers}\nlease_secs = {lease_secs}\nhost_id = '{name}'\nstore_url = '{}'\nstop_grace_secs = 1\n",
            postgres.url()
        ),
    )
    .unwrap();
    path
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
    // A runs the first two and dies without warning, once what it said of
    // running them is stored (its log lines are written behind); B starts
    // after.
    for id in &ids[..2] {
        assert!(until_running(&a, id, 100).0, "{id} never ran on a");
        let stored = format!(
            "SELECT count(*) FROM job_logs WHERE job_id = '{id}' \
             AND line LIKE '%running on builder%on host ''a''%'"
        );
        let said = (0..250).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            postgres.query(&stored) == "1"
        });
        assert!(said, "{id}'s run on a is in the store");
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
    let submitted = std::sync::atomic::AtomicUsize::new(0);
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
                    submitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            accepted
        });
        // The backup begins once the load has committed jobs, however
        // slowly a loaded machine takes them.
        let loading = std::time::Instant::now();
        while submitted.load(std::sync::atomic::Ordering::SeqCst) <= 20
            && loading.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
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
