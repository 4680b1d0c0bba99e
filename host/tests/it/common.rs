//! Helpers shared by the integration tests: services built from real
//! components (the built-in ones and the misbehaving ones in
//! plugins/testing/), each in its own temporary data directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use helix_build::app;
use helix_build::config::{BuilderConfig, Config};
use helix_build::exec::{Grants, ProgramGrant};
use helix_build::job::{Job, JobRequest, State};
use helix_build::service::Service;
use helix_fixtures::config::{ConfigBuilder, plain_http};

/// A testing plugin's component file, built by host/build.rs.
pub fn testing_plugin(stem: &str) -> PathBuf {
    PathBuf::from(env!("HELIX_TESTING_PLUGIN_DIR")).join(format!("helix_plugin_{stem}.wasm"))
}

/// Every testing plugin, by the builder name tests use (its crate's stem).
pub const TESTING_PLUGINS: [&str; 8] = [
    "empty-tag",
    "escape",
    "exec",
    "hog",
    "panic",
    "shell",
    "spin",
    "ungranted",
];

/// A program grant.
pub fn program(command: &str, args: &[&str]) -> ProgramGrant {
    ProgramGrant {
        command: command.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        options: Default::default(),
    }
}

/// A config for tests: data in `dir`, `simulated` the default builder,
/// and every testing plugin loaded beside the built-in builders, with a 2 s time limit and 64 MiB of
/// memory. `exec` may run `sh -c <one script>`; `shell` only
/// `sh -c "echo hello"`. Compiled components
/// are cached in one directory shared by all tests, so each is compiled once
/// per test run; tests of the cache itself use [`own_cache`].
pub fn config(dir: &tempfile::TempDir, workers: usize, queue_capacity: usize) -> Config {
    test_config(dir, workers, queue_capacity).build()
}

/// [`config`], still to be finished.
fn test_config(dir: &tempfile::TempDir, workers: usize, queue_capacity: usize) -> ConfigBuilder {
    let mut config = ConfigBuilder::new(dir.path())
        .workers(workers)
        .queue_capacity(queue_capacity)
        .compiled_components_in(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("helix-compiled"))
        // Jobs that name no builder are simulated here, whatever this
        // host could run (the default when unset is a real builder).
        .default_builder("simulated");
    for name in TESTING_PLUGINS {
        let programs = match name {
            "exec" => vec![program("sh", &["-c", "*"])],
            "shell" => vec![program("sh", &["-c", "echo hello"])],
            _ => Vec::new(),
        };
        let builder = BuilderConfig {
            component: Some(testing_plugin(&name.replace('-', "_"))),
            timeout_secs: 2,
            memory_mib: 64,
            grants: Some(Grants {
                programs,
                ..Grants::default()
            }),
            ..BuilderConfig::default()
        };
        config = config.builder(name, builder);
    }
    config
}

/// `config` for real builds: `file://` repositories allowed, images going
/// to `<registry>/team` unless a job names one, that registry reached over
/// plain HTTP.
pub fn real_config(dir: &tempfile::TempDir, registry: &str) -> Config {
    test_config(dir, 4, 50)
        .file_repos()
        .plain_http_registry(registry)
        .default_repository(format!("{registry}/team"))
        .build()
}

/// Submits `request` and waits for it to end; prints its log (shown when a
/// test fails) and returns the job with it.
pub async fn run_logged(service: &Service, request: JobRequest) -> (Job, Vec<String>) {
    let job = service.submit(request).await.unwrap();
    let job = finished(service, &job.id).await;
    let logs = service.logs(job.id.as_str()).await.unwrap().texts();
    eprintln!(
        "--- {} ({}): {:?}\n{}",
        job.id,
        job.state,
        job.error,
        logs.join("\n")
    );
    (job, logs)
}

/// The text of log lines, for tests about what was logged.
pub trait LogText {
    fn texts(self) -> Vec<String>;
}

impl LogText for Vec<helix_build::log::LogLine> {
    fn texts(self) -> Vec<String> {
        self.into_iter().map(|line| line.text).collect()
    }
}

/// `config` with the compile cache inside its own data dir.
pub fn own_cache(mut config: Config) -> Config {
    config.cache_dir = None;
    config
}

pub async fn start(config: &Config) -> Service {
    app::start(config).await.expect("service starts")
}

/// A service on the test config with `workers` workers and room for
/// `queue_capacity` queued jobs, in a data directory of its own (kept as
/// long as the returned directory lives).
pub async fn service(workers: usize, queue_capacity: usize) -> (tempfile::TempDir, Service) {
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config(&dir, workers, queue_capacity)).await;
    (dir, service)
}

/// A submission for the simulated builder.
pub fn simulated(delay_ms: u64) -> JobRequest {
    let mut build_args = BTreeMap::new();
    build_args.insert("HELIX_SIMULATE_DELAY_MS".to_string(), delay_ms.to_string());
    JobRequest {
        repo_url: "https://git.example/team/app.git".into(),
        build_args,
        builder: Some("simulated".into()),
        ..JobRequest::default()
    }
}

/// A submission building the `file://` repository at `repo` with
/// `builder`.
pub fn on_repo(repo: &std::path::Path, builder: &str) -> JobRequest {
    JobRequest {
        repo_url: format!("file://{}", repo.display()),
        builder: Some(builder.into()),
        ..JobRequest::default()
    }
}

/// A submission for builder `builder`.
pub fn on_builder(builder: &str) -> JobRequest {
    JobRequest {
        builder: Some(builder.into()),
        ..simulated(0)
    }
}

/// The names of `job`'s phases, after checking that they come in the
/// documented order, that its queue wait is `created_at` to `started_at`,
/// and that the others add up to its run (`started_at` to
/// `completed_at`) within 5% (and the timestamps' own millisecond).
pub fn phase_names(job: &Job) -> Vec<&'static str> {
    use helix_build::job::PhaseName;
    let names: Vec<PhaseName> = job.phases.iter().map(|p| p.name).collect();
    let mut documented = PhaseName::ALL.iter();
    assert!(
        names.iter().all(|name| documented.any(|d| d == name)),
        "out of order or repeated: {names:?}"
    );
    let (started, completed) = (job.started_at.unwrap(), job.completed_at.unwrap());
    let ms = |d: chrono::Duration| d.num_milliseconds();
    let waited = job
        .phases
        .first()
        .filter(|p| p.name == PhaseName::QueueWait);
    let waited = waited.expect("a queue wait first").ms as i64;
    assert!(
        (waited - ms(started - job.created_at)).abs() <= 1,
        "{job:?}"
    );
    let run = ms(completed - started);
    let phases: i64 = job.phases[1..].iter().map(|p| p.ms as i64).sum();
    assert!(
        ((run - phases).abs() as f64) <= run as f64 * 0.05 + 1.0,
        "phases add up to {phases} ms, the run took {run} ms: {:?}",
        job.phases
    );
    names.into_iter().map(PhaseName::as_str).collect()
}

/// Waits (at most 60 s: a test's jobs queue behind each other on a
/// loaded 2-core machine) for the job to end and returns it.
pub async fn finished(service: &Service, id: &helix_build::job::JobId) -> Job {
    let job = service
        .wait(id.as_str(), Duration::from_secs(60))
        .await
        .expect("job exists");
    assert!(
        job.state.is_terminal(),
        "job {} still {} after 60s",
        job.id,
        job.state
    );
    job
}

/// Polls the job's log until a line satisfies `found` (at most 10 s).
pub async fn until_logged(
    service: &Service,
    id: &helix_build::job::JobId,
    found: impl Fn(&str) -> bool,
) -> Vec<String> {
    for _ in 0..1000 {
        let lines = service.logs(id.as_str()).await.unwrap().texts();
        if lines.iter().any(|l| found(l)) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "job {id} never logged the expected line: {:?}",
        service.logs(id.as_str()).await
    );
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The host's pids of processes a job's programs know as `jailed` (pids
/// in their jail's PID namespace): those working inside `run_dir` whose
/// innermost pid is one of them.
pub fn host_pids(jailed: &[u32], run_dir: &std::path::Path) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let inside =
            std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(run_dir));
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let innermost = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|ids| ids.split_whitespace().last()?.parse::<u32>().ok());
        if inside && innermost.is_some_and(|p| jailed.contains(&p)) {
            found.push(pid);
        }
    }
    found
}

/// Waits up to `within` for every pid to be gone; returns those still alive.
pub async fn survivors(pids: &[u32], within: Duration) -> Vec<u32> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| !process_gone(*p)).collect();
        if alive.is_empty() || std::time::Instant::now() > deadline {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until the job is running (at most 10 s).
pub async fn until_running(service: &Service, id: &helix_build::job::JobId) {
    for _ in 0..1000 {
        if service.get(id.as_str()).await.unwrap().state == State::Running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never started running");
}

/// With `service`'s only worker busy, a job asking for a one-second queue
/// TTL ends `expired` saying how long it waited, and one without stays
/// queued; both stores share this check.
pub async fn expires_jobs_waiting_past_their_ttl(service: &Service) {
    let busy = service.submit(simulated(30_000)).await.unwrap();
    until_running(service, &busy.id).await;
    let hurried = service
        .submit(JobRequest {
            queue_ttl_secs: Some(1),
            ..simulated(0)
        })
        .await
        .unwrap();
    let patient = service.submit(simulated(0)).await.unwrap();
    let expired = finished(service, &hurried.id).await;
    assert_eq!(expired.state, helix_build::job::State::Expired);
    let error = expired.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("expired: waited ") && error.contains("past its queue TTL of 1s"),
        "{error}"
    );
    assert!(expired.started_at.is_none() && expired.attempts == 0);
    let logs = service.logs(hurried.id.as_str()).await.unwrap().texts();
    assert!(
        logs.iter()
            .any(|l| l.starts_with("[helix] expired: waited")),
        "{logs:?}"
    );
    let patient = service.get(patient.id.as_str()).await.unwrap();
    assert_eq!(patient.state, helix_build::job::State::Queued);
    service.cancel(busy.id.as_str()).await.unwrap();
}

/// With `service`'s only worker busy, waiting jobs start highest priority
/// first, in submission order within one priority; both stores share
/// this check.
pub async fn claims_take_the_highest_priority_first(service: &Service) {
    let busy = service.submit(simulated(1500)).await.unwrap();
    until_running(service, &busy.id).await;
    let mut submitted = Vec::new();
    for (name, priority) in [
        ("low", -5),
        ("plain", 0),
        ("urgent", 50),
        ("urgent-too", 50),
    ] {
        let job = service
            .submit(JobRequest {
                priority: Some(priority),
                ..simulated(50)
            })
            .await
            .unwrap();
        submitted.push((name, job.id));
    }
    let mut started = Vec::new();
    for (name, id) in &submitted {
        let job = finished(service, id).await;
        assert_eq!(job.state, helix_build::job::State::Succeeded, "{name}");
        started.push((job.started_at.unwrap(), *name));
    }
    started.sort();
    let order: Vec<&str> = started.into_iter().map(|(_, name)| name).collect();
    assert_eq!(order, ["urgent", "urgent-too", "plain", "low"]);
}

/// A submission to concurrency group `group`.
pub fn in_group(group: &str, delay_ms: u64) -> JobRequest {
    JobRequest {
        group: Some(group.into()),
        ..simulated(delay_ms)
    }
}

/// Ten pushes to one branch, each cancelling the group's earlier jobs:
/// only the last one succeeds, the others end `cancelled` naming a later
/// job of the ten. `hosts` take the submissions in turn.
pub async fn only_the_last_of_ten_pushes_builds(hosts: &[&Service]) {
    let mut ids = Vec::new();
    for i in 0..10 {
        let request = JobRequest {
            cancel_in_progress: true,
            ..in_group("team/app:main", 400)
        };
        ids.push(hosts[i % hosts.len()].submit(request).await.unwrap().id);
    }
    for (i, id) in ids.iter().enumerate() {
        let job = finished(hosts[0], id).await;
        if i == ids.len() - 1 {
            assert_eq!(
                job.state,
                helix_build::job::State::Succeeded,
                "{:?}",
                job.error
            );
            continue;
        }
        let error = job.error.clone().unwrap_or_default();
        assert_eq!(
            job.state,
            helix_build::job::State::Cancelled,
            "push {i}: {error}"
        );
        let by = ids[i + 1..].iter().find(|later| {
            error.contains(&format!(
                "superseded by job {later} in group 'team/app:main'"
            ))
        });
        assert!(by.is_some(), "push {i}: {error}");
    }
}

/// Fifty jobs of a group allowing two at once, submitted together to
/// `hosts` with more workers than that: never more than two run at once,
/// and all succeed.
pub async fn a_group_never_runs_more_than_max_running(hosts: &[&Service]) {
    let submits = (0..50).map(|i| {
        let host = hosts[i % hosts.len()];
        async move {
            host.submit(JobRequest {
                max_running: Some(2),
                ..in_group("nightly", 60)
            })
            .await
            .unwrap()
            .id
        }
    });
    let ids = futures_util::future::join_all(submits).await;
    let mut spans = Vec::new();
    for id in &ids {
        let job = finished(hosts[0], id).await;
        assert_eq!(
            job.state,
            helix_build::job::State::Succeeded,
            "{:?}",
            job.error
        );
        spans.push((job.started_at.unwrap(), job.completed_at.unwrap()));
    }
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap();
    assert!(most <= 2, "{most} of the group ran at once");
    assert_eq!(most, 2, "the group used both places");
}

/// `config` with the `buildkit` builder building in `engine`.
pub fn with_engine(config: Config, engine: &helix_fixtures::Dockerd) -> Config {
    with_engine_at(config, &engine.socket)
}

/// Held by the tests that fill disks up to a quota or measure the host's
/// free space: one fills while the other measures would fail the
/// measurement (under `cargo test` the tests of this binary run side by
/// side in one process; under nextest, test group `disk-fillers` in
/// `.config/nextest.toml` keeps them apart).
pub static DISK_FILLERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `config` with the `buildkit` builder in engines the host runs itself.
pub fn with_managed_engine(config: Config) -> Config {
    with_engine_at(config, helix_build::plugin::MANAGED_ENGINE)
}

/// `config` with the `buildkit` builder pointed at the engine `socket`.
pub fn with_engine_at(config: Config, socket: &str) -> Config {
    ConfigBuilder::from(config)
        .buildkit_in(socket)
        .unvalidated()
}

/// Copies `reference` (by digest) out of the registry into a directory and
/// returns what its layers hold at `path`, and its config.
pub fn pull(reference: &str, path: &str) -> (String, serde_json::Value) {
    pull_as(None, reference, path)
}

/// [`pull`] with `user:password` credentials.
pub fn pull_as(creds: Option<&str>, reference: &str, path: &str) -> (String, serde_json::Value) {
    let out = tempfile::tempdir().unwrap();
    let mut copy = std::process::Command::new("skopeo");
    copy.args(["copy", "--src-tls-verify=false"]);
    if let Some(creds) = creds {
        copy.arg(format!("--src-creds={creds}"));
    }
    let status = copy
        .arg(format!("docker://{reference}"))
        .arg(format!("dir:{}", out.path().display()))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "skopeo copy {reference}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    let blob = |digest: &str| out.path().join(digest.trim_start_matches("sha256:"));
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let mut content = String::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let output = std::process::Command::new("tar")
            .arg("-xzOf")
            .arg(blob(layer["digest"].as_str().unwrap()))
            .arg(path)
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap();
        content.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    (content, config)
}

pub fn image_name(tag: &str) -> &str {
    tag.rsplit_once(':').map_or(tag, |(name, _)| name)
}

/// Builds `FROM scratch` + busybox for each of `platforms` (one image
/// index) and pushes it to `reference`, with `creds` when given, from a
/// container storage of its own: the test makes the base image a team
/// would keep in its registry.
pub fn push_base_image(reference: &str, creds: Option<&str>, platforms: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    for platform in platforms {
        let arch = platform.rsplit('/').next().unwrap();
        std::fs::copy(
            helix_fixtures::busybox(arch),
            dir.path().join(format!("busybox-{arch}")),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nCOPY busybox-${TARGETARCH} /bin/busybox\n",
    )
    .unwrap();
    let root = dir.path().join("storage");
    let storage = [
        format!("--root={}", root.join("graph").display()),
        format!("--runroot={}", root.join("run").display()),
        "--storage-driver=vfs".to_string(),
    ];
    let podman = |args: &[&str]| {
        let all: Vec<&str> = storage
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        helix_fixtures::run(dir.path(), "podman", &all);
    };
    let platforms = platforms.join(",");
    podman(&[
        "build",
        "-q",
        "--platform",
        &platforms,
        "--manifest",
        "localhost/base",
        ".",
    ]);
    let creds = creds.map(|c| format!("--creds={c}"));
    let mut push = vec!["manifest", "push", "--all", "--tls-verify=false"];
    push.extend(creds.as_deref());
    let destination = format!("docker://{reference}");
    push.extend(["localhost/base", destination.as_str()]);
    podman(&push);
}

/// A client of the host's for the test registry `registry` (plain HTTP),
/// with the credentials in `auth_file` if given.
pub fn registry_client(
    registry: &str,
    auth_file: Option<PathBuf>,
) -> helix_build::registry::oci::RegistryClient {
    let registries = BTreeMap::from([plain_http(registry)]);
    let settings = helix_build::registry::RegistrySettings::new(registries, auth_file);
    helix_build::registry::oci::RegistryClient::new(std::sync::Arc::new(settings))
}
