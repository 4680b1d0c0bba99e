//! The layer cache between jobs, with real podman and buildah: a rebuild
//! reuses the unchanged steps, and a cancelled or failed build leaves
//! nothing behind in the shared storage (checked with the tools' own
//! listings). Needs what the real-build tests need (see real_build.rs).

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use helix_build::job::{Job, JobRequest, State};
use helix_build::layer_cache::{StorageDriver, storage_conf};
use helix_build::service::Service;
use helix_fixtures::{Registry, git};

const DOCKERFILE: &str = "FROM scratch\n\
COPY busybox /bin/busybox\n\
RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox sleep 2; echo dependencies > /deps\"]\n\
COPY app.txt /app.txt\n";

/// A repository with a slow dependency step, then the source copied in.
fn repo(app: &str) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", repo.path().join("busybox")).unwrap();
    std::fs::write(repo.path().join("Dockerfile"), DOCKERFILE).unwrap();
    for (name, text) in [
        ("app.txt", app),
        (
            "slow.Dockerfile",
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"300\"]\n",
        ),
        (
            "failing.Dockerfile",
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"false\"]\n",
        ),
    ] {
        std::fs::write(repo.path().join(name), text).unwrap();
    }
    git(repo.path(), &["init", "-q", "-b", "main"]);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-qm", "app"]);
    repo
}

/// The storage the job's log says it used, when it was a cache slot.
fn slot_of(logs: &[String]) -> Option<PathBuf> {
    logs.iter().find_map(|l| {
        let rest = l.strip_prefix("[helix] container storage: ")?;
        let (path, kind) = rest.split_once(" (")?;
        kind.starts_with("the builder's layer cache")
            .then(|| PathBuf::from(path))
    })
}

/// `program args…` against the slot's storage; its stdout.
fn in_slot(slot: &Path, program: &str, args: &[&str]) -> String {
    let conf = slot.join("inspect-storage.conf");
    let driver = StorageDriver::for_dir(slot.parent().unwrap());
    std::fs::write(&conf, storage_conf(driver, slot)).unwrap();
    helix_fixtures::run_with(slot, &[("CONTAINERS_STORAGE_CONF", &conf)], program, args)
}

/// Nothing a build left in the slot: no build containers, no mounts under
/// it, no image under the build's name.
fn assert_clean(slot: &Path, what: &str) {
    let containers = in_slot(slot, "podman", &["ps", "--all", "--external", "--quiet"]);
    assert_eq!(containers.trim(), "", "{what}: containers left");
    let images = in_slot(slot, "podman", &["images", "--format", "{{.Repository}}"]);
    assert!(!images.contains("helix-image"), "{what}: {images}");
    // The slot is a file system of its own; nothing may be mounted inside.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let inside = format!("{}/", slot.display());
    let left: Vec<&str> = mounts
        .lines()
        .filter_map(|m| m.split(' ').nth(1))
        .filter(|point| point.starts_with(&inside))
        .collect();
    assert_eq!(left, Vec::<&str>::new(), "{what}: mounts left in the slot");
}

async fn run(service: &Service, request: JobRequest) -> (Job, Vec<String>) {
    common::run_logged(service, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_reuses_unchanged_steps_and_builds_the_change() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&common::real_config(&dir, &registry.address)).await;
    for builder in ["podman", "buildah"] {
        let repo = repo("version 1");
        let (cold, logs) = run(&service, common::on_repo(repo.path(), builder)).await;
        assert_eq!(cold.state, State::Succeeded, "{builder}: {:?}", cold.error);
        let slot = slot_of(&logs).expect("a cache slot");
        assert!(
            !logs.iter().any(|l| l.contains("Using cache")),
            "{builder}: cold"
        );

        std::fs::write(repo.path().join("app.txt"), "version 2").unwrap();
        git(repo.path(), &["commit", "-qam", "change the source"]);
        let (warm, logs) = run(&service, common::on_repo(repo.path(), builder)).await;
        assert_eq!(warm.state, State::Succeeded, "{builder}: {:?}", warm.error);
        assert_eq!(slot_of(&logs).as_ref(), Some(&slot), "{builder}: same slot");
        let reused = logs.iter().filter(|l| l.contains("Using cache")).count();
        assert_eq!(reused, 2, "{builder}: COPY busybox and the slow RUN");
        assert_eq!(
            (
                cold.steps.total,
                cold.steps.cached,
                warm.steps.total,
                warm.steps.cached
            ),
            (4, 0, 4, 2),
            "{builder}: the jobs record their steps and cache hits"
        );
        let counted = service.metrics().await.unwrap().build_steps[builder];
        assert!(
            counted.cached >= 2 && counted.total >= 8,
            "{builder}: {counted:?}"
        );
        assert_clean(&slot, builder);

        // A job that wants no cache builds in a storage of its own.
        let (fresh, logs) = run(
            &service,
            JobRequest {
                no_cache: true,
                ..common::on_repo(repo.path(), builder)
            },
        )
        .await;
        assert_eq!(
            fresh.state,
            State::Succeeded,
            "{builder}: {:?}",
            fresh.error
        );
        assert_eq!(slot_of(&logs), None);
        assert!(!logs.iter().any(|l| l.contains("Using cache")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_failed_builds_leave_nothing_in_the_cache() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    config.workers = 1;
    let service = common::start(&config).await;
    let repo = repo("v1");
    for builder in ["podman", "buildah"] {
        let (failed, logs) = run(
            &service,
            JobRequest {
                dockerfile_path: Some("failing.Dockerfile".into()),
                ..common::on_repo(repo.path(), builder)
            },
        )
        .await;
        assert_eq!(failed.state, State::Failed, "{builder}");
        let slot = slot_of(&logs).unwrap();
        assert_clean(&slot, &format!("{builder}, failed"));

        let slow = service
            .submit(JobRequest {
                dockerfile_path: Some("slow.Dockerfile".into()),
                ..common::on_repo(repo.path(), builder)
            })
            .await
            .unwrap();
        common::until_logged(&service, &slow.id, |l| {
            l.contains("STEP") && l.contains("sleep")
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cancelled = service.cancel(slow.id.as_str()).await.unwrap();
        assert_eq!(cancelled.state, State::Cancelled, "{builder}");
        assert_clean(&slot, &format!("{builder}, cancelled"));
    }
}

/// A build of several platforms names a manifest list in the slot; it
/// goes with the job like a single image's name, and the slot's next
/// build, of one platform, finds it clean too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_list_leaves_the_cache_with_its_job() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    config.workers = 1;
    let service = common::start(&config).await;
    let base = format!("{}/platform/busybox:multi", registry.address);
    common::push_base_image(&base, None, &["linux/amd64", "linux/arm64"]);
    let repo = repo("v1");
    let dockerfile = format!("FROM {base}\nCOPY app.txt /app.txt\n");
    std::fs::write(repo.path().join("copy.Dockerfile"), dockerfile).unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-qm", "copy only"]);
    for builder in ["podman", "buildah"] {
        for platforms in [vec!["linux/amd64", "linux/arm64"], vec!["linux/amd64"]] {
            let request = JobRequest {
                dockerfile_path: Some("copy.Dockerfile".into()),
                platforms: platforms.iter().map(|p| p.to_string()).collect(),
                ..common::on_repo(repo.path(), builder)
            };
            let (job, logs) = run(&service, request).await;
            assert_eq!(
                job.state,
                State::Succeeded,
                "{builder} {platforms:?}: {:?}",
                job.error
            );
            let slot = slot_of(&logs).unwrap();
            assert_clean(&slot, &format!("{builder} {platforms:?}"));
        }
    }
}

/// A host of its own (data directory, layer cache) whose podman and
/// buildah builders keep their layers in `registry`'s cache too.
async fn host_with_registry_cache(dir: &tempfile::TempDir, registry: &str) -> Service {
    let mut config = common::real_config(dir, registry);
    for builder in ["podman", "buildah"] {
        config
            .builders
            .entry(builder.into())
            .or_default()
            .registry_cache = Some(format!("{registry}/helix-cache/{builder}"));
    }
    common::start(&config.validated().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_host_starts_from_the_layers_another_left_in_the_registry_cache() {
    let registry = Registry::start(false);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = host_with_registry_cache(&dirs[0], &registry.address).await;
    let second = host_with_registry_cache(&dirs[1], &registry.address).await;
    let third = host_with_registry_cache(&dirs[2], &registry.address).await;
    for builder in ["podman", "buildah"] {
        let source = repo("version 1");
        let (cold, logs) = run(&first, common::on_repo(source.path(), builder)).await;
        assert_eq!(cold.state, State::Succeeded, "{builder}: {:?}", cold.error);
        assert_eq!(cold.steps.cached, 0, "{builder}: the first build is cold");
        let cache = logs
            .iter()
            .find_map(|l| l.strip_prefix("[builder] layer cache in the registry: "))
            .unwrap_or_else(|| panic!("{builder}: no registry cache logged"))
            .to_string();
        assert!(cache.starts_with(&format!("{}/helix-cache/{builder}/", registry.address)));

        // Another host, with nothing in its own storage, after a source
        // change: the unchanged steps come from the registry.
        std::fs::write(source.path().join("app.txt"), "version 2").unwrap();
        git(source.path(), &["commit", "-qam", "change the source"]);
        let (warm, logs) = run(&second, common::on_repo(source.path(), builder)).await;
        assert_eq!(warm.state, State::Succeeded, "{builder}: {:?}", warm.error);
        assert_eq!(
            (warm.steps.total, warm.steps.cached),
            (4, 2),
            "{builder}: COPY busybox and the slow RUN from the registry"
        );
        assert!(
            logs.iter().any(|l| l.contains(&cache)),
            "{builder}: the same repository, the same cache"
        );

        // The same Dockerfile in another repository has a cache of its own:
        // one repository's jobs cannot seed another's.
        let other = repo("version 1");
        let (elsewhere, logs) = run(&third, common::on_repo(other.path(), builder)).await;
        assert_eq!(elsewhere.state, State::Succeeded, "{builder}");
        assert_eq!(elsewhere.steps.cached, 0, "{builder}: {logs:?}");
        assert!(!logs.iter().any(|l| l.contains(&cache)), "{builder}");
    }
}
