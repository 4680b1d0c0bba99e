//! What one job's build may use, with real podman and buildah: a memory
//! hog and a fork bomb in `RUN` steps end their jobs `failed` naming the
//! limit, while a job beside them builds. Needs what the real-build tests
//! need (see real_build.rs), as root: the limits are control groups.

mod common;
use common::LogText as _;

use std::path::Path;

use helix_build::job::{JobRequest, State};
use helix_fixtures::{Registry, git};

/// A repository whose Dockerfile runs `script` with busybox's shell.
fn repo(script: &str) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", repo.path().join("busybox")).unwrap();
    std::fs::write(
        repo.path().join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"{script}\"]\n"
        ),
    )
    .unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-qm", "app"]);
    repo
}

fn request(repo: &Path, builder: &str) -> JobRequest {
    JobRequest {
        repo_url: format!("file://{}", repo.display()),
        builder: Some(builder.into()),
        ..JobRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_and_a_fork_bomb_fail_naming_the_limit_while_a_job_beside_them_builds() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    for builder in ["podman", "buildah"] {
        let limits = config.builders.entry(builder.into()).or_default();
        limits.build_memory_mib = 256;
        limits.build_pids = 128;
    }
    let service = common::start(&config.validated().unwrap()).await;

    // dd holds a 512 MiB block in memory; the loop starts far more
    // processes than the limit allows, each living a minute.
    let hog = repo("/bin/busybox dd if=/dev/zero of=/dev/null bs=512M count=1");
    let bomb =
        repo("i=0; while [ $i -lt 1000 ]; do /bin/busybox sleep 60 & i=$((i+1)); done; wait");
    let fine = repo("/bin/busybox echo built > /built");
    for builder in ["podman", "buildah"] {
        let hog_job = service.submit(request(hog.path(), builder)).await.unwrap();
        let bomb_job = service.submit(request(bomb.path(), builder)).await.unwrap();
        let (fine_job, logs) = common::run_logged(&service, request(fine.path(), builder)).await;
        assert_eq!(fine_job.state, State::Succeeded, "{builder}: {logs:?}");

        for (id, limit) in [
            (
                &hog_job.id,
                "memory limit of 256 MiB (builders.{}.build_memory_mib)",
            ),
            (
                &bomb_job.id,
                "process limit of 128 (builders.{}.build_pids)",
            ),
        ] {
            let job = common::finished(&service, id).await;
            let error = job.error.clone().unwrap_or_default();
            let limit = limit.replace("{}", builder);
            let logs = service.logs(id.as_str()).await.unwrap().texts();
            eprintln!("--- {id}\n{}", logs.join("\n"));
            assert_eq!(job.state, State::Failed, "{builder}: {error}");
            assert!(
                error.starts_with(&format!("limit exceeded: the build reached its {limit}")),
                "{builder}: {error}"
            );
        }
    }
}
