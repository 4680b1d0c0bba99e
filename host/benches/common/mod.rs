//! Helpers shared by the benches.

mod phases;

use std::ops::Range;
use std::time::{Duration, Instant};

use helix_build::config::{BuilderConfig, Config, ProjectConfig};
use helix_build::job::{BuildResult, Job, JobRequest, PhaseName, State};
use helix_build::log::JobLog;
use helix_build::service::Service;
use helix_fixtures::config::{ConfigBuilder, token};

pub use phases::{ByHand, print_phase_table};

/// The median of `samples` (sorts them).
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Runs `body` on a multi-threaded tokio runtime, as the server does.
pub fn block_on<F: std::future::Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(body)
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// One row of the summary table. `bench/run` collects these lines from
/// every bench and prints them as one table; each bench also prints its
/// details above.
/// `met` is `None` for a row reported without a target.
pub fn row(name: &str, measured: &str, floor: &str, ratio: &str, target: &str, met: Option<bool>) {
    let verdict = match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "-",
    };
    println!("ROW\t{name}\t{measured}\t{floor}\t{ratio}\t{target}\t{verdict}");
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Projects the rows "with projects" spread their jobs over.
pub const PROJECTS: usize = 10;

/// Project `i`'s token (every project scope), of [`with_projects`].
pub fn project_token(i: usize) -> String {
    format!("team-{i}-bench-token-0123456789")
}

/// `config` with [`PROJECTS`] projects, `team-0`…, each with one token
/// ([`project_token`]) of every scope, and an admin token, as a server of
/// many teams runs.
pub fn with_projects(config: Config) -> Config {
    let scopes = ["jobs:submit", "jobs:read", "jobs:cancel"];
    let mut config = ConfigBuilder::from(config).admin_token("bench-admin-token-0123456789");
    for i in 0..PROJECTS {
        let project = ProjectConfig {
            tokens: vec![token(&project_token(i), &scopes)],
            ..ProjectConfig::default()
        };
        config = config.project(&format!("team-{i}"), project);
    }
    config.unvalidated()
}

/// A config with data in `data`, one worker per core and room for
/// `queue_capacity` queued jobs.
pub fn config(data: &tempfile::TempDir, queue_capacity: usize) -> Config {
    ConfigBuilder::new(data.path())
        .workers(cores().max(1))
        .queue_capacity(queue_capacity)
        .unvalidated()
}

/// A config for real builds with the podman, buildah and (with `engine`)
/// buildkit builders: one worker, file:// repositories, and `registry`
/// (loopback, plain HTTP).
pub fn real_build_config(
    data: &tempfile::TempDir,
    registry: &str,
    engine: Option<&helix_fixtures::Dockerd>,
) -> Config {
    let config = ConfigBuilder::new(data.path())
        .workers(1)
        .file_repos()
        .plain_http_registry(registry)
        .builder("podman", BuilderConfig::default());
    match engine {
        Some(engine) => config.buildkit_in(&engine.socket),
        None => config,
    }
    .build()
}

/// The real builders, each compared with both floors.
pub const REAL_BUILDERS: [&str; 3] = ["podman", "buildah", "buildkit"];

/// Runs `request` through `service` to success; how long it took.
pub async fn through_service(service: &Service, request: JobRequest) -> Duration {
    job_through_service(service, request).await.0
}

/// Writes out what the page cache holds dirty before a measured run
/// starts: a run then never pays for the writeback of the one before it
/// (a cold build leaves hundreds of MiB), whichever side that was, so
/// the order the sides run in does not weigh on their ratio.
pub fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// [`through_service`], with the job as it ended.
pub async fn job_through_service(service: &Service, request: JobRequest) -> (Duration, Job) {
    settle();
    let started = Instant::now();
    let job = service.submit(request).await.unwrap();
    let job = service
        .wait(job.id.as_str(), Duration::from_secs(900))
        .await
        .unwrap();
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    (started.elapsed(), job)
}

/// What a team on BuildKit runs by hand: `git clone`, `docker build` with
/// BuildKit in `engine` (steps with no network, as Helix gives them;
/// `no_cache` as asked) and `docker push`; how long each took.
pub fn buildkit_by_hand(
    engine: &helix_fixtures::Dockerd,
    url: &str,
    build_args: &[&str],
    image: &str,
    no_cache: bool,
) -> ByHand {
    let mut hand = ByHand::start();
    let work = tempfile::tempdir().unwrap();
    hand.step(PhaseName::Checkout, || {
        helix_fixtures::run(
            work.path(),
            "git",
            &["clone", "-q", "--depth", "1", "--", url, "src"],
        )
    });
    let mut build = vec!["build", "-q", "--network=none", "-t", image];
    for arg in build_args {
        build.extend(["--build-arg", arg]);
    }
    if no_cache {
        build.push("--no-cache");
    }
    let src = work.path().join("src").display().to_string();
    build.push(&src);
    for (phase, args) in [
        (PhaseName::Build, build),
        (PhaseName::Push, vec!["push", "-q", image]),
    ] {
        let out = hand.step(phase, || engine.docker(&args));
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    hand.finish()
}

/// Empties `engine`: its images and BuildKit's cache, for a cold build.
pub fn empty_engine(engine: &helix_fixtures::Dockerd) {
    for args in [&["image", "prune", "-af"][..], &["builder", "prune", "-af"]] {
        assert!(engine.docker(args).status.success(), "docker {args:?}");
    }
}

/// The rows of one scenario: each real builder through Helix against
/// podman and BuildKit by hand, all measured in the same rounds. `target`
/// gives the ratio a (builder, floor) pair must meet, if it has one.
pub fn three_way_rows(
    scenario: &str,
    helix: &mut [(&str, Vec<Duration>)],
    podman_by_hand: &mut [Duration],
    buildkit_by_hand: &mut [Duration],
    target: impl Fn(&str, &str) -> Option<f64>,
) {
    let floors = [
        ("podman", median(podman_by_hand)),
        ("BuildKit", median(buildkit_by_hand)),
    ];
    for (builder, times) in helix.iter_mut() {
        let measured = median(times);
        for (floor, by_hand) in floors {
            let ratio = measured.as_secs_f64() / by_hand.as_secs_f64();
            let goal = target(builder, floor);
            println!(
                "{scenario}: {builder} via Helix {:.0} ms, {floor} by hand {:.0} ms, {ratio:.2}x",
                ms(measured),
                ms(by_hand)
            );
            row(
                &format!("{scenario}, {builder} / {floor} by hand"),
                &format!("{:.0} ms Helix {builder}", ms(measured)),
                &format!("{:.0} ms {floor} by hand", ms(by_hand)),
                &format!("{ratio:.2}x"),
                &goal.map_or("reported (no target)".into(), |t| format!("<= {t:.2}x")),
                goal.map(|t| ratio <= t),
            );
        }
    }
}

/// The name the benches give the native no-op builder.
pub const NATIVE: &str = "native-no-op";

/// What the simulated builder does at zero delay — two log lines, a tag
/// and a digest derived from the job id — as native Rust in the host
/// process: the floor of the plugin boundary.
pub fn native_no_op(job: &Job, log: &JobLog) -> BuildResult {
    use sha2::Digest as _;
    log.push(&format!(
        "[native] building {} at {} ({}); no image will be produced",
        job.repo_url, job.git_ref, job.dockerfile_path
    ));
    let tag = format!("simulated.invalid/helix-native:{}", job.id);
    let digest = format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(job.id.as_str()))
    );
    log.push(&format!("[native] done: {tag} (not a real image)"));
    match BuildResult::validate(tag, Some(digest), Vec::new(), &job.platforms) {
        Ok(result) => result,
        Err(message) => panic!("the native no-op builder's result is invalid: {message}"),
    }
}

/// A service as `app::start` makes it from `config`, plus the native
/// no-op builder.
pub async fn service_with_native(config: &Config) -> Service {
    let config = config.clone().validated().expect("a valid bench config");
    helix_build::app::start_with(&config, |runtime| runtime.add_native(NATIVE, native_no_op))
        .await
        .expect("the bench service starts")
}

/// Resident memory of this process, from `/proc/self/status`.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// Concurrent clients of the load benches.
pub const CLIENTS: usize = 64;

/// Submits jobs `{prefix}-{i}` for every `i` in `ids` — for `builder`, or
/// the default one; with `projects`, job `i` for project `team-{i % PROJECTS}`
/// of [`with_projects`] — spread over `services`, from `CLIENTS` tasks. With
/// `finish`, each task waits for each of its jobs to succeed (through the
/// first service) before submitting the next, so at most `CLIENTS` jobs
/// are in flight. Returns the time from the first submission to the end.
pub async fn submit_all(
    services: &[Service],
    prefix: &str,
    ids: Range<usize>,
    builder: Option<&str>,
    finish: bool,
    projects: bool,
) -> Duration {
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let services = services.to_vec();
        let ids = ids.clone();
        let prefix = prefix.to_string();
        let builder = builder.map(str::to_string);
        clients.spawn(async move {
            for i in ids.skip(client).step_by(CLIENTS) {
                let request = JobRequest {
                    id: Some(format!("{prefix}-{i}")),
                    repo_url: "https://git.example/app.git".into(),
                    builder: builder.clone(),
                    ..JobRequest::default()
                };
                let service = &services[i % services.len()];
                let project = projects.then(|| {
                    let name = format!("team-{}", i % PROJECTS);
                    service
                        .projects()
                        .access
                        .project(&name)
                        .cloned()
                        .expect("a bench project")
                });
                let job = service
                    .submit_for(request, project.as_ref())
                    .await
                    .expect("accepted");
                if finish {
                    let job = services[0]
                        .wait(job.id.as_str(), Duration::from_secs(120))
                        .await
                        .unwrap();
                    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
                }
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    started.elapsed()
}
