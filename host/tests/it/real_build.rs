//! Real builds end to end: real git repositories, real podman, buildah
//! and BuildKit (in a dockerd each test starts) run by the built-in
//! builder components, a real registry on loopback
//! (Debian's docker-registry), and images read back from it by digest.
//! Needs root, podman, buildah, docker.io, skopeo, git, docker-registry
//! and busybox-static, as `.ci/run` installs them.

use crate::common;
use crate::common::LogText as _;

use helix_fixtures::{Registry, Repo};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{
    image_name, pull, pull_as, push_base_image, start, until_logged, until_running,
};
use helix_build::job::{Job, JobRequest, State};
use helix_build::secrets::SecretSource;
use helix_build::service::Service;
use helix_build::workspace::run_name;
use helix_fixtures::config::plain_http;

fn job(repo: &Repo, builder: &str, git_ref: &str) -> JobRequest {
    JobRequest {
        repo_url: repo.url(),
        git_ref: Some(git_ref.into()),
        builder: Some(builder.into()),
        build_args: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
        ..JobRequest::default()
    }
}

async fn run(service: &Service, request: JobRequest) -> Job {
    common::run_logged(service, request).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_builds_copy_run_and_build_args_and_the_image_pulls_back_by_digest() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&common::real_config(&dir, &registry.address)).await;

    let job = run(&service, job(&repo, "podman", "v1")).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    let tag = job.image_tag.clone().unwrap();
    assert_eq!(
        tag,
        format!("{}/team/{}:{}", registry.address, repo_name(&repo), job.id)
    );
    let digest = job.digest.clone().unwrap();
    let (hello, config) = pull(&format!("{}@{digest}", image_name(&tag)), "hello");
    assert_eq!(hello, "hello-amd64\n");
    assert_eq!(config["config"]["Labels"]["greeting"], "hello");
    let logs = service.logs(job.id.as_str()).await.unwrap().texts();
    assert!(
        logs.iter().any(|l| l.starts_with("[helix] verified:")),
        "{logs:?}"
    );
    // Provenance is on by default: the build is attested.
    assert_eq!(
        common::phase_names(&job),
        [
            "queue_wait",
            "prepare",
            "checkout",
            "reuse",
            "instantiate",
            "build",
            "push",
            "registry_check",
            "attest",
            "clean_up"
        ]
    );
    // What the run cost, from its control group and its push.
    let used = job.resources.expect("a real run is measured");
    assert!(used.cpu_seconds > 0.0, "{used:?}");
    assert!(used.peak_memory_bytes > 1024 * 1024, "{used:?}");
    assert!(used.pushed_bytes > 1024, "{used:?}");
    let metrics = service.metrics().await.unwrap().render(&service.runtime());
    for line in [
        "helix_push_duration_seconds_count{builder=\"podman\",outcome=\"succeeded\"} 1",
        "helix_jobs_finished_total{builder=\"podman\",state=\"succeeded\"} 1",
        "helix_job_duration_seconds_count{builder=\"podman\",outcome=\"succeeded\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

fn repo_name(repo: &Repo) -> String {
    repo.dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_sha_and_an_explicit_image_are_honoured() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&common::real_config(&dir, &registry.address)).await;
    let request = JobRequest {
        image: Some(format!("{}/other/app:pinned", registry.address)),
        ..job(&repo, "podman", &repo.first_commit)
    };
    let job = run(&service, request).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    assert_eq!(job.commit.as_deref(), Some(repo.first_commit.as_str()));
    assert_eq!(
        job.image_tag.unwrap(),
        format!("{}/other/app:pinned", registry.address)
    );
    let logs = service.logs(job.id.as_str()).await.unwrap().texts();
    assert!(
        logs.iter()
            .any(|l| l.contains(&format!("checked out commit {}", repo.first_commit))),
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_platforms_give_an_index_with_both_and_arch_specific_content() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&common::real_config(&dir, &registry.address)).await;
    // Twice each: the second build runs from the layer cache, which must
    // never hand one platform's layer to another (buildah 1.28 can, for
    // `FROM scratch` builds, without the platform in its cache key).
    for builder in ["podman", "buildah", "podman", "buildah"] {
        let request = JobRequest {
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            ..job(&repo, builder, "main")
        };
        let job = run(&service, request).await;
        assert_eq!(job.state, State::Succeeded, "{builder}: {:?}", job.error);
        let platforms: Vec<String> = job.manifest.platforms().map(|p| p.to_string()).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{builder}");
        let name = image_name(job.image_tag.as_deref().unwrap()).to_string();
        for (platform, digest) in job.manifest.iter() {
            let (hello, config) = pull(&format!("{name}@{digest}"), "hello");
            assert_eq!(hello, format!("hello-{}\n", platform.arch()), "{builder}");
            assert_eq!(config["architecture"], platform.arch(), "{builder}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildah_builds_and_pushes_the_same_way() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&common::real_config(&dir, &registry.address)).await;
    let job = run(&service, job(&repo, "buildah", "v1")).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    let tag = job.image_tag.clone().unwrap();
    let (hello, config) = pull(
        &format!("{}@{}", image_name(&tag), job.digest.unwrap()),
        "hello",
    );
    assert_eq!(hello, "hello-amd64\n");
    assert_eq!(config["config"]["Labels"]["greeting"], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_whose_fault_they_are() {
    let registry = Registry::start(false);
    let read_only = Registry::start(true);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    config
        .registries
        .extend([plain_http(&read_only.address), plain_http(&closed_port)]);
    let service = start(&config).await;

    let cases = [
        (
            job(&repo, "podman", "no-such-branch"),
            "source error: ref \"no-such-branch\" was not found in file://",
        ),
        (
            job(&repo, "buildah", "0123456789abcdef0123456789abcdef01234567"),
            "source error: ref \"0123456789abcdef0123456789abcdef01234567\" was not found",
        ),
        (
            JobRequest {
                dockerfile_path: Some("missing/Dockerfile".into()),
                ..job(&repo, "podman", "main")
            },
            "invalid job: dockerfile_path \"missing/Dockerfile\" (in context \".\") does not exist in the checkout",
        ),
        (
            JobRequest {
                dockerfile_path: Some("failing/Dockerfile".into()),
                ..job(&repo, "podman", "main")
            },
            "build error: podman build failed: building at STEP \"RUN /bin/busybox false\": while running runtime: exit status 1",
        ),
        (
            JobRequest {
                image: Some(format!("{closed_port}/team/app:x")),
                ..job(&repo, "podman", "main")
            },
            "registry error: pushing",
        ),
        (
            JobRequest {
                image: Some(format!("{}/team/app:x", read_only.address)),
                ..job(&repo, "podman", "main")
            },
            "registry error: pushing",
        ),
    ];
    for (request, expected) in cases {
        let job = run(&service, request).await;
        assert_eq!(job.state, State::Failed);
        let error = job.error.unwrap();
        assert!(
            error.starts_with(expected),
            "expected {expected:?}, got {error:?}"
        );
    }
}

/// Processes whose working directory is inside `dir`.
fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(dir) && !common::process_gone(pid) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_long_build_leaves_no_process_and_no_build_state_behind() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let config = common::real_config(&dir, &registry.address);
    let service = start(&config).await;
    for builder in ["podman", "buildah"] {
        let request = JobRequest {
            dockerfile_path: Some("slow/Dockerfile".into()),
            ..job(&repo, builder, "main")
        };
        let job = service.submit(request).await.unwrap();
        until_running(&service, &job.id).await;
        until_logged(&service, &job.id, |l| l.contains("STEP 3/3")).await;
        let workspace: PathBuf = config.workspace_dir().join(run_name(&job.id, 1));
        assert!(
            !processes_in(&workspace).is_empty(),
            "{builder}: the build is not running"
        );

        let cancelled = service.cancel(job.id.as_str()).await.unwrap();
        assert_eq!(cancelled.state, State::Cancelled, "{builder}");
        let mut left = processes_in(&workspace);
        for _ in 0..250 {
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            left = processes_in(&workspace);
        }
        assert_eq!(left, Vec::new(), "{builder}: processes outlived the job");
        // The build's containers and layers lived in the job's storage.
        for _ in 0..250 {
            if !workspace.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !workspace.exists(),
            "{builder}: build state left in {}",
            workspace.display()
        );
    }
}

/// `app/Dockerfile`, three stages: `tested` reads the build secret `token`
/// in a `RUN --mount=type=secret` step (and prints it, as a careless build
/// might), the last stage overwrites `/stage`.
const STAGED_DOCKERFILE: &str = r#"FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "echo base > /stage"]
FROM base AS tested
RUN --mount=type=secret,id=token ["/bin/busybox", "sh", "-c", "test \"$(/bin/busybox cat /run/secrets/token)\" = s3cr3t-value && echo seen > /secret-check && echo printed: $(/bin/busybox cat /run/secrets/token)"]
RUN ["/bin/busybox", "sh", "-c", "echo tested > /stage"]
FROM tested AS last
RUN ["/bin/busybox", "sh", "-c", "echo last > /stage"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_target_labels_and_a_build_secret_reach_the_build_and_the_secret_nothing_else() {
    let registry = Registry::start(false);
    let repo = tempfile::tempdir().unwrap();
    let app = repo.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::copy("/bin/busybox", app.join("busybox")).unwrap();
    std::fs::write(app.join("Dockerfile"), STAGED_DOCKERFILE).unwrap();
    std::os::unix::fs::symlink("/etc", repo.path().join("escape")).unwrap();
    helix_fixtures::git(repo.path(), &["init", "-q", "-b", "main"]);
    helix_fixtures::git(repo.path(), &["add", "-A"]);
    helix_fixtures::git(repo.path(), &["commit", "-qm", "staged"]);

    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("token");
    std::fs::write(&secret_file, "s3cr3t-value").unwrap();
    let engine = helix_fixtures::Dockerd::start();
    let mut config = common::with_engine(common::real_config(&dir, &registry.address), &engine);
    config.secrets.insert(
        "token".into(),
        SecretSource {
            env: None,
            file: Some(secret_file),
        },
    );
    let service = start(&config.validated().unwrap()).await;
    let request = |builder: &str| JobRequest {
        repo_url: format!("file://{}", repo.path().display()),
        builder: Some(builder.into()),
        context: Some("app".into()),
        target: Some("tested".into()),
        labels: BTreeMap::from([("org.example.team".to_string(), "platform".to_string())]),
        no_cache: true,
        secrets: vec!["token".into()],
        ..JobRequest::default()
    };

    for builder in ["podman", "buildah", "buildkit"] {
        let (job, logs) = common::run_logged(&service, request(builder)).await;
        assert_eq!(job.state, State::Succeeded, "{builder}: {:?}", job.error);
        assert_eq!(job.secrets, ["token"]);
        let program = match builder {
            "buildkit" => helix_fixtures::DOCKER_CLIENT,
            tool => tool,
        };
        let reference = format!(
            "{}@{}",
            image_name(job.image_tag.as_deref().unwrap()),
            job.digest.clone().unwrap()
        );
        let (stage, config) = pull(&reference, "stage");
        // Each layer that wrote /stage holds its own copy; the last wins.
        assert_eq!(
            stage, "base\ntested\n",
            "{builder}: built up to the target stage"
        );
        assert_eq!(pull(&reference, "secret-check").0, "seen\n", "{builder}");
        assert_eq!(
            pull(&reference, "run/secrets/token").0,
            "",
            "{builder}: the secret is in no layer"
        );
        assert_eq!(config["config"]["Labels"]["org.example.team"], "platform");
        let text = logs.join("\n");
        assert!(!text.contains("s3cr3t-value"), "{builder}: {text}");
        assert!(text.contains("printed: ***"), "{builder}: {text}");
        let stored = serde_json::to_string(&job).unwrap();
        assert!(!stored.contains("s3cr3t-value"));
        let audit = service.audit(job.id.as_str()).await.unwrap();
        let build = audit
            .entries
            .iter()
            .find(|call| {
                call.program == program && call.args.iter().any(|a| a.starts_with("--secret"))
            })
            .unwrap_or_else(|| panic!("{builder}: no build in the audit: {audit:?}"));
        assert!(build.allowed && build.exit_code == Some(0), "{build:?}");
        assert!(
            build.grant.as_deref().unwrap().starts_with(program),
            "{build:?}"
        );
        let audit = serde_json::to_string(&audit).unwrap();
        assert!(!audit.contains("s3cr3t-value"), "{builder}: {audit}");
    }

    for (context, problem) in [
        (
            "missing",
            "context \"missing\" does not exist in the checkout",
        ),
        (
            "escape",
            "context \"escape\" is a symbolic link leading out",
        ),
    ] {
        let job = run(
            &service,
            JobRequest {
                context: Some(context.into()),
                ..request("podman")
            },
        )
        .await;
        assert_eq!(job.state, State::Failed);
        let error = job.error.unwrap();
        assert!(error.starts_with("invalid job: "), "{error}");
        assert!(error.contains(problem), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_base_image_is_pulled_and_the_result_pushed_with_the_operators_credentials() {
    const PASSWORD: &str = "pr1vate-Passw0rd";
    let registry = helix_fixtures::Registry::with_password("helix", PASSWORD);
    let creds = format!("helix:{PASSWORD}");
    let base = format!("{}/platform/busybox:1", registry.address);
    push_base_image(&base, Some(&creds), &["linux/amd64"]);

    let repo = helix_fixtures::dockerfile_repo(&format!(
        "FROM {base}\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo on-the-private-base > /proof\"]\n"
    ));

    let dir = tempfile::tempdir().unwrap();
    let engine = helix_fixtures::Dockerd::start();
    let mut config = common::with_engine(common::real_config(&dir, &registry.address), &engine);
    let request = |builder: &str| JobRequest {
        repo_url: format!("file://{}", repo.path().display()),
        builder: Some(builder.into()),
        ..JobRequest::default()
    };

    // Without credentials the pull is refused, and the job says it was
    // the registry.
    let service = start(&config).await;
    let job = run(&service, request("podman")).await;
    assert_eq!(job.state, State::Failed);
    let error = job.error.unwrap();
    assert!(error.starts_with("registry error: "), "{error}");
    service.stop(Duration::from_secs(5)).await;

    // As an operator would write it: `skopeo login` (as `podman login`).
    let auth = dir.path().join("auth.json");
    helix_fixtures::run(
        dir.path(),
        "skopeo",
        &[
            "login",
            "--tls-verify=false",
            "--authfile",
            &auth.display().to_string(),
            "--username",
            "helix",
            "--password",
            PASSWORD,
            &registry.address,
        ],
    );
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&auth).unwrap()).unwrap();
    let encoded = stored["auths"][&registry.address]["auth"]
        .as_str()
        .unwrap()
        .to_string();
    config.registry_auth_file = Some(auth);
    let service = start(&config.validated().unwrap()).await;
    for builder in ["podman", "buildah", "buildkit"] {
        let (job, logs) = common::run_logged(&service, request(builder)).await;
        assert_eq!(job.state, State::Succeeded, "{builder}: {:?}", job.error);
        let reference = format!(
            "{}@{}",
            image_name(job.image_tag.as_deref().unwrap()),
            job.digest.clone().unwrap()
        );
        let (proof, _) = pull_as(Some(&creds), &reference, "proof");
        assert_eq!(proof, "on-the-private-base\n", "{builder}");
        let everything = format!(
            "{}\n{}",
            logs.join("\n"),
            serde_json::to_string(&job).unwrap()
        );
        for secret in [PASSWORD, encoded.as_str()] {
            assert!(!everything.contains(secret), "{builder}: {everything}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_platforms_run_their_steps_under_emulation_from_a_multi_arch_base() {
    let registry = Registry::start(false);
    let base = format!("{}/platform/busybox:multi", registry.address);
    push_base_image(&base, None, &["linux/amd64", "linux/arm64"]);
    let repo = helix_fixtures::dockerfile_repo(&format!(
        "FROM {base}\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox uname -m > /arch\"]\n"
    ));

    let dir = tempfile::tempdir().unwrap();
    let engine = helix_fixtures::Dockerd::start();
    let config = common::with_engine(common::real_config(&dir, &registry.address), &engine);
    let service = start(&config).await;
    for builder in ["podman", "buildah", "buildkit"] {
        let request = JobRequest {
            repo_url: format!("file://{}", repo.path().display()),
            builder: Some(builder.into()),
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            ..JobRequest::default()
        };
        let job = run(&service, request).await;
        assert_eq!(job.state, State::Succeeded, "{builder}: {:?}", job.error);
        let name = image_name(job.image_tag.as_deref().unwrap()).to_string();
        let machines: Vec<(String, String)> = job
            .manifest
            .iter()
            .map(|(platform, digest)| {
                let (arch, _) = pull(&format!("{name}@{digest}"), "arch");
                (platform.to_string(), arch.trim().to_string())
            })
            .collect();
        assert_eq!(
            machines,
            [
                ("linux/amd64".to_string(), "x86_64".to_string()),
                ("linux/arm64".to_string(), "aarch64".to_string())
            ],
            "{builder}"
        );
    }

    // A platform no emulator is registered for is refused at submit,
    // naming the ones this host can build.
    let here = helix_build::platform::buildable_here();
    let unavailable = [
        "linux/s390x",
        "linux/ppc64le",
        "linux/riscv64",
        "linux/mips64le",
    ]
    .into_iter()
    .find(|p| !here.iter().any(|h| h.to_string() == *p))
    .expect("some platform has no emulator here");
    let refused = service
        .submit(JobRequest {
            repo_url: format!("file://{}", repo.path().display()),
            builder: Some("podman".into()),
            platforms: vec![unavailable.into()],
            ..JobRequest::default()
        })
        .await;
    match refused {
        Err(helix_build::service::ServiceError::Invalid(e)) => {
            assert_eq!(e.field, "platforms");
            assert!(e.message.contains(unavailable), "{e}");
            assert!(e.message.contains("linux/arm64"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let runtime = service.runtime();
    let builders = runtime.builders().map(|b| b.info().clone());
    let podman = builders.into_iter().find(|b| b.name == "podman").unwrap();
    assert_eq!(podman.platforms, Some(here));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_is_retried_and_a_failing_step_is_not() {
    let mut registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&common::real_config(&dir, &registry.address)).await;

    // The registry is down for the first attempt's push, back before the
    // second.
    registry.stop();
    let pushed = service.submit(job(&repo, "podman", "main")).await.unwrap();
    let logs = common::until_logged(&service, &pushed.id, |l| l.contains("starts in")).await;
    let announced = logs.iter().find(|l| l.contains("starts in")).unwrap();
    assert!(
        announced.starts_with("[helix] attempt 1 of 2 failed: registry error: ")
            && announced.contains("an infrastructure fault, so attempt 2 starts in"),
        "{announced}"
    );
    registry.resume();
    let retried = common::finished(&service, &pushed.id).await;
    assert_eq!(retried.state, State::Succeeded, "{:?}", retried.error);
    assert_eq!(retried.attempts, 2, "each attempt is counted on the job");
    let metrics = service.metrics().await.unwrap().render(&service.runtime());
    let line = "helix_job_retries_total{builder=\"podman\",cause=\"infrastructure\"} 1";
    assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    let logs = service.logs(pushed.id.as_str()).await.unwrap().texts();
    assert_eq!(
        logs.iter()
            .filter(|l| l.starts_with("[helix] checking out"))
            .count(),
        2,
        "the second attempt starts afresh: {logs:?}"
    );

    // The user's own failure is not retried.
    let failing = JobRequest {
        dockerfile_path: Some("failing/Dockerfile".into()),
        ..job(&repo, "podman", "main")
    };
    let failed = run(&service, failing).await;
    assert_eq!(failed.state, State::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .starts_with("build error:")
    );
    assert_eq!(failed.attempts, 1);
}
