//! What one job's build may use, with real podman, buildah and buildkit
//! (in an engine the host runs, one per cache slot): a memory
//! hog and a fork bomb in `RUN` steps end their jobs `failed` naming the
//! limit, while a job beside them builds. Needs what the real-build tests
//! need (see real_build.rs), as root: the limits are control groups.

use crate::common;
use crate::common::LogText as _;

use std::path::Path;

use helix_build::job::{JobRequest, State};
use helix_fixtures::{Registry, repo_running};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_and_a_fork_bomb_fail_naming_the_limit_while_a_job_beside_them_builds() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    // buildkit in engines the host runs (one per cache slot, with the
    // builder's limits): its steps are bounded as podman's are. The engine
    // itself (dockerd, containerd) needs some hundred threads.
    let mut config = common::with_managed_engine(common::real_config(&dir, &registry.address));
    for (builder, pids) in [("podman", 128), ("buildah", 128), ("buildkit", 512)] {
        let limits = config.builders.entry(builder.into()).or_default();
        limits.build_memory_mib = 256;
        limits.build_pids = pids;
    }
    let service = common::start(&config.validated().unwrap()).await;

    // dd holds a 512 MiB block in memory; the loop starts far more
    // processes than the limit allows, each living a minute.
    let hog = repo_running("/bin/busybox dd if=/dev/zero of=/dev/null bs=512M count=1");
    let bomb = repo_running(
        "i=0; while [ $i -lt 1000 ]; do /bin/busybox sleep 60 & i=$((i+1)); done; wait",
    );
    let fine = repo_running("/bin/busybox echo built > /built");
    for (builder, pids) in [("podman", 128), ("buildah", 128), ("buildkit", 512)] {
        let hog_job = service
            .submit(common::on_repo(hog.path(), builder))
            .await
            .unwrap();
        let bomb_job = service
            .submit(common::on_repo(bomb.path(), builder))
            .await
            .unwrap();
        let (fine_job, logs) =
            common::run_logged(&service, common::on_repo(fine.path(), builder)).await;
        assert_eq!(fine_job.state, State::Succeeded, "{builder}: {logs:?}");

        for (id, limit) in [
            (
                &hog_job.id,
                "memory limit of 256 MiB (builders.{}.build_memory_mib)",
            ),
            (
                &bomb_job.id,
                "process limit of {pids} (builders.{}.build_pids)",
            ),
        ] {
            let job = common::finished(&service, id).await;
            let error = job.error.clone().unwrap_or_default();
            let limit = limit
                .replace("{}", builder)
                .replace("{pids}", &pids.to_string());
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

/// Bytes of the host's disk held by what a run can leave behind: the data
/// directory (its slots' and jobs' file system images as the host stores
/// them, not what is mounted from them) and the host's `/var/tmp`. Not the
/// disk's free space: other tests write to the disk meanwhile.
fn held_bytes(dir: &Path) -> u64 {
    let out = helix_fixtures::run(dir, "du", &["-s", "-x", "-B1", ".", "/var/tmp"]);
    out.lines()
        .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_filling_its_disk_fails_naming_the_limit_and_leaves_the_host_space_as_it_was() {
    let _alone = common::DISK_FILLERS.lock().await;
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    // Four slots of 128 MiB; 128 MiB for a job's own storage.
    config.build_cache_mib = 512;
    for builder in ["podman", "buildah"] {
        config
            .builders
            .entry(builder.into())
            .or_default()
            .build_disk_mib = 128;
    }
    let service = common::start(&config.validated().unwrap()).await;
    let filler = repo_running("/bin/busybox dd if=/dev/zero of=/filler bs=1M count=400");
    let fine = repo_running("/bin/busybox echo built > /built");
    // Warm up: the slots' file systems exist before the space is measured.
    for builder in ["podman", "buildah"] {
        let (job, _) = common::run_logged(&service, common::on_repo(fine.path(), builder)).await;
        assert_eq!(job.state, State::Succeeded, "{builder}");
    }
    let held_before = held_bytes(dir.path());
    for builder in ["podman", "buildah"] {
        for (no_cache, limit) in [
            (
                false,
                "disk limit of 128 MiB (its layer cache slot".to_string(),
            ),
            (
                true,
                format!("disk limit of 128 MiB (builders.{builder}.build_disk_mib)"),
            ),
        ] {
            let request = JobRequest {
                no_cache,
                ..common::on_repo(filler.path(), builder)
            };
            let (job, logs) = common::run_logged(&service, request).await;
            let error = job.error.clone().unwrap_or_default();
            assert_eq!(job.state, State::Failed, "{builder}: {logs:?}");
            assert!(
                error.starts_with(&format!("limit exceeded: the build reached its {limit}")),
                "{builder} (no_cache {no_cache}): {error}"
            );
        }
        let (job, _) = common::run_logged(&service, common::on_repo(fine.path(), builder)).await;
        assert_eq!(
            job.state,
            State::Succeeded,
            "{builder}: a full slot is emptied"
        );
    }
    let lost = held_bytes(dir.path()).saturating_sub(held_before);
    assert!(
        lost < 32 * 1024 * 1024,
        "the host lost {} MiB of free space",
        lost / (1024 * 1024)
    );
}
