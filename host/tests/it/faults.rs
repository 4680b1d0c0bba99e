//! Faults in the right class (issue 30): a branch checked out from a git
//! server that refuses shallow fetches, base images the registry shows
//! missing or lacking a platform (the job's own fault, not retried), and
//! a checkout that fills the job's disk (named with its setting). Real
//! git servers, registry, podman and loop-mounted quotas.

use crate::common;
use crate::common::LogText as _;

use helix_fixtures::{DumbHttpGit, Registry, Repo};

use helix_build::job::{JobRequest, State};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_tag_and_commit_check_out_from_a_dumb_http_server_and_a_missing_ref_is_not_found()
{
    let registry = Registry::start(false);
    let repo = Repo::new();
    // A branch other than the default, at the first commit.
    helix_fixtures::git(repo.dir.path(), &["branch", "feature", &repo.first_commit]);
    let server = DumbHttpGit::serve(repo.dir.path());
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&common::real_config(&dir, &registry.address)).await;

    // no_cache: the direct clone (a job with a cache slot checks out from
    // its mirror, see mirror.rs); the missing ref below goes through one.
    for git_ref in ["feature", "v1", repo.first_commit.as_str()] {
        let request = JobRequest {
            repo_url: server.url.clone(),
            git_ref: Some(git_ref.into()),
            builder: Some("podman".into()),
            no_cache: true,
            ..JobRequest::default()
        };
        let (job, logs) = common::run_logged(&service, request).await;
        assert_eq!(job.state, State::Succeeded, "{git_ref}: {:?}", job.error);
        // A commit is fetched by a full clone at once.
        let shallow_refused = logs
            .iter()
            .any(|l| l.starts_with("[helix] shallow clone failed"));
        assert_eq!(
            shallow_refused,
            git_ref != repo.first_commit,
            "{git_ref}: the server refuses shallow fetches: {logs:?}"
        );
        let checked_out = format!("[helix] checked out commit {}", repo.first_commit);
        assert!(logs.contains(&checked_out), "{git_ref}: {logs:?}");
    }

    let request = JobRequest {
        repo_url: server.url.clone(),
        git_ref: Some("no-such-branch".into()),
        builder: Some("podman".into()),
        ..JobRequest::default()
    };
    let (job, _) = common::run_logged(&service, request).await;
    assert_eq!(job.state, State::Failed);
    assert_eq!(
        job.error.as_deref(),
        Some(
            format!(
                "source error: ref \"no-such-branch\" was not found in {}: it names no branch, tag or commit there",
                server.url
            )
            .as_str()
        )
    );
}

/// A repository whose Dockerfile builds `FROM base`.
fn repo_from(base: &str) -> tempfile::TempDir {
    helix_fixtures::dockerfile_repo(&format!("FROM {base}\nRUN [\"/bin/busybox\", \"true\"]\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_image_missing_or_lacking_a_platform_is_the_jobs_own_fault_and_not_retried() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let config = common::real_config(&dir, &registry.address);
    assert!(config.max_attempts > 1, "a retry would be possible");
    let service = common::start(&config).await;
    let base = format!("{}/platform/busybox:amd64-only", registry.address);
    common::push_base_image(&base, None, &["linux/amd64"]);
    let missing = format!("{}/platform/no-such-image:1", registry.address);

    for builder in ["podman", "buildah"] {
        let one_arch = repo_from(&base);
        let request = JobRequest {
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            ..common::on_repo(one_arch.path(), builder)
        };
        let (job, _) = common::run_logged(&service, request).await;
        assert_eq!(job.state, State::Failed, "{builder}");
        assert_eq!(
            job.error.as_deref(),
            Some(
                format!(
                    "invalid job: base image {base} has no image for linux/arm64; it has only linux/amd64"
                )
                .as_str()
            ),
            "{builder}"
        );
        assert_eq!(
            job.attempts, 1,
            "{builder}: the job's own fault is not retried"
        );

        let nowhere = repo_from(&missing);
        let (job, _) = common::run_logged(&service, common::on_repo(nowhere.path(), builder)).await;
        assert_eq!(job.state, State::Failed, "{builder}");
        assert_eq!(
            job.error.as_deref(),
            Some(
                format!(
                    "invalid job: base image {missing} does not exist in its registry (manifest unknown); check its name and tag"
                )
                .as_str()
            ),
            "{builder}"
        );
        assert_eq!(
            job.attempts, 1,
            "{builder}: the job's own fault is not retried"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_that_fills_the_jobs_disk_names_build_disk_mib() {
    let _alone = common::DISK_FILLERS.lock().await;
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    config.build_cache_mib = 512;
    config
        .builders
        .entry("podman".into())
        .or_default()
        .build_disk_mib = 64;
    let service = common::start(&config.validated().unwrap()).await;
    // 96 MiB that git cannot compress: the clone cannot fit in 64 MiB.
    // Written a MiB at a time: tests beside this one measure the process's
    // peak memory.
    let repo = helix_fixtures::busybox_repo("");
    let mut noise =
        std::io::BufWriter::new(std::fs::File::create(repo.path().join("noise")).unwrap());
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..96 {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        std::io::Write::write_all(&mut noise, &chunk).unwrap();
    }
    std::io::Write::flush(&mut noise).unwrap();
    drop(noise);
    helix_fixtures::git(repo.path(), &["add", "-A"]);
    helix_fixtures::git(repo.path(), &["commit", "-qm", "noise"]);

    let (job, _) = common::run_logged(&service, common::on_repo(repo.path(), "podman")).await;
    assert_eq!(job.state, State::Failed);
    let error = job.error.unwrap_or_default();
    assert!(
        error.starts_with(
            "limit exceeded: the build reached its disk limit of 64 MiB (builders.podman.build_disk_mib); cannot clone "
        ),
        "{error}"
    );
    assert_eq!(job.attempts, 1, "a limit is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_prints_a_made_up_tool_crash_is_still_the_users_build_error() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(
        &common::real_config(&dir, &registry.address)
            .validated()
            .unwrap(),
    )
    .await;
    // What podman prints when its disk fails under it, from a RUN step.
    let repo = helix_fixtures::repo_running(
        "/bin/busybox echo 'panic: open /var/lib/containers/storage/x.lock: read-only file system' >&2; \
         /bin/busybox echo 'goroutine 1 [running]:' >&2; exit 1",
    );
    for builder in ["podman", "buildah"] {
        let (job, _) = common::run_logged(&service, common::on_repo(repo.path(), builder)).await;
        assert_eq!(job.state, State::Failed);
        let error = job.error.unwrap_or_default();
        assert!(error.starts_with("build error: "), "{builder}: {error}");
        assert_eq!(
            job.attempts, 1,
            "{builder}: the user's fault is not retried"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_slot_turned_read_only_is_a_host_fault_and_retried_not_the_users_build_error() {
    let _alone = common::DISK_FILLERS.lock().await;
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    config.build_cache_mib = 512;
    let max_attempts = config.max_attempts;
    let service = common::start(&config.validated().unwrap()).await;
    let repo = helix_fixtures::repo_running("/bin/busybox echo built > /built");
    let (job, _) = common::run_logged(&service, common::on_repo(repo.path(), "podman")).await;
    assert_eq!(job.state, State::Succeeded, "the slots exist");

    // Every slot's file system turns read-only while a step runs, as ext4
    // does on an I/O error, in each attempt (a slot found read-only
    // before a run is made anew, see `slots::`).
    let slot_mounts = || {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let slots: Vec<String> = std::fs::read_dir(dir.path().join("build-cache/podman"))
            .unwrap()
            .flatten()
            .map(|e| e.path().display().to_string())
            .filter(|p| mounts.contains(&format!(" {p} ")))
            .collect();
        assert!(!slots.is_empty());
        slots
    };
    let remount = |mode: &str| {
        for slot in slot_mounts() {
            helix_fixtures::run(
                dir.path(),
                "mount",
                &["-o", &format!("remount,{mode}"), &slot],
            );
        }
    };
    // The marker is the step's output, never its command line.
    let slow = helix_fixtures::repo_running(
        "/bin/busybox echo step-$((1+1)); /bin/busybox sleep 3; /bin/busybox echo built > /built",
    );
    let submitted = service
        .submit(common::on_repo(slow.path(), "podman"))
        .await
        .unwrap();
    // Each time a step has started that the slots have not yet failed, they
    // turn read-only; an attempt that fails before its step (say, on a
    // slot it found read-only) counts the same.
    let mut failed_steps = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !service
        .get(submitted.id.as_str())
        .await
        .unwrap()
        .state
        .is_terminal()
    {
        let logs = service.logs(submitted.id.as_str()).await.unwrap();
        let steps = logs.iter().filter(|l| l.text.ends_with("step-2")).count();
        if steps > failed_steps {
            remount("ro");
            failed_steps = steps;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not end: {:?}",
            logs.texts()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let job = common::finished(&service, &submitted.id).await;
    remount("rw");
    assert_eq!(job.state, State::Failed);
    let error = job.error.unwrap_or_default();
    assert!(
        error.starts_with("host error: the host's disk failed the run; tell its operator: ")
            && error.contains("read-only file system"),
        "{error}"
    );
    assert_eq!(
        job.attempts, max_attempts,
        "an infrastructure fault is retried"
    );
}
