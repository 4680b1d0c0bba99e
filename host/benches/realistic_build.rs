//! A realistic application build through the service with each real
//! builder (podman, buildah, buildkit), against what its team would
//! otherwise run by hand: `git clone`, then `podman build` with podman's
//! default storage (overlay) and its layer cache and `podman push`, with
//! the same step isolation (OCI, runc); or `docker build` with BuildKit
//! and `docker push`, in a Docker Engine of its own.
//!
//! The fixture: a base image of about 110 MB (busybox and 100 MB of data)
//! in a loopback registry, and a multi-stage Dockerfile with a slow
//! dependency step (3 s) and a source `COPY`. Two scenarios, alternating
//! rounds, medians, each Helix builder against both floors:
//!
//! - cold: nothing cached on any side (the base image is pulled; the
//!   engines are emptied first);
//! - rebuild: after a one-file source change, with the previous build's
//!   layers at hand on every side.
//!
//! Needs git, podman, buildah, docker.io, skopeo, docker-registry and
//! busybox-static. Run with `cargo bench -p helix-build --bench
//! realistic_build`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{REAL_BUILDERS, buildkit_by_hand, empty_engine, three_way_rows, through_service};
use helix_build::app;
use helix_build::job::JobRequest;
use helix_fixtures::{Dockerd, Registry, git, run as sh};

const ROUNDS: usize = 5;

fn main() {
    common::block_on(bench());
}

async fn bench() {
    let registry = Registry::start(false);
    let base = format!("{}/bench/base:1", registry.address);
    helix_fixtures::push_base_image(&base, 100);
    let repo = tempfile::tempdir().unwrap();
    helix_fixtures::realistic_repo(repo.path(), &base, 3);
    let url = format!("file://{}", repo.path().display());

    // Helix's engine and the hand-run one apart: neither finds the
    // other's layers in its cache.
    let helix_engine = Dockerd::start();
    let hand_engine = Dockerd::start();
    let data = tempfile::tempdir().unwrap();
    let config = common::real_build_config(&data, &registry.address, Some(&helix_engine));
    let service = app::start(&config).await.unwrap();

    let mut cold: Vec<(&str, Vec<Duration>)> = REAL_BUILDERS.map(|b| (b, Vec::new())).to_vec();
    let mut warm = cold.clone();
    let (mut cold_podman, mut cold_buildkit) = (Vec::new(), Vec::new());
    let (mut warm_podman, mut warm_buildkit) = (Vec::new(), Vec::new());
    // One storage by hand for the whole run, as a developer's machine has.
    let hand = tempfile::tempdir().unwrap();
    for round in 0..ROUNDS {
        let image = |side: &str| format!("{}/bench/{side}:{round}", registry.address);
        let job = |builder: &str, no_cache: bool| JobRequest {
            repo_url: url.clone(),
            builder: Some(builder.into()),
            image: Some(image(builder)),
            no_cache,
            ..JobRequest::default()
        };
        // Cold: the service in a storage of the job's own (no_cache) or
        // an emptied engine, by hand in an empty storage or engine.
        empty_engine(&helix_engine);
        empty_engine(&hand_engine);
        for (builder, times) in cold.iter_mut() {
            times.push(through_service(&service, job(builder, true)).await);
        }
        let empty = tempfile::tempdir().unwrap();
        cold_podman.push(by_hand(&url, &image("podman-hand"), empty.path()));
        cold_buildkit.push(buildkit_by_hand(
            &hand_engine,
            &url,
            &[],
            &image("buildkit-hand"),
            true,
        ));

        // Rebuild: every side has built the current commit before this round.
        for builder in REAL_BUILDERS {
            through_service(&service, job(builder, false)).await;
        }
        by_hand(&url, &image("podman-hand"), hand.path());
        buildkit_by_hand(&hand_engine, &url, &[], &image("buildkit-hand"), false);
        std::fs::write(
            repo.path().join("src/main.txt"),
            format!("source, revision {round}\n"),
        )
        .unwrap();
        git(repo.path(), &["commit", "-qam", "one-file change"]);
        for (builder, times) in warm.iter_mut() {
            times.push(through_service(&service, job(builder, false)).await);
        }
        warm_podman.push(by_hand(&url, &image("podman-hand"), hand.path()));
        warm_buildkit.push(buildkit_by_hand(
            &hand_engine,
            &url,
            &[],
            &image("buildkit-hand"),
            false,
        ));
    }
    println!("cores: {}", common::cores());
    three_way_rows(
        "realistic cold",
        &mut cold,
        &mut cold_podman,
        &mut cold_buildkit,
        |builder, floor| match (builder, floor) {
            ("podman", "podman") | ("buildkit", "BuildKit") => Some(1.15),
            _ => None,
        },
    );
    three_way_rows(
        "realistic rebuild",
        &mut warm,
        &mut warm_podman,
        &mut warm_buildkit,
        |builder, floor| match (builder, floor) {
            ("podman", "podman") => Some(1.3),
            ("buildkit", "BuildKit") => Some(1.5),
            _ => None,
        },
    );
    service.stop(Duration::from_secs(5)).await;
}

/// `git clone`, `podman build` and `podman push`, as a developer runs
/// them, with podman's default driver (overlay) rooted in `storage`.
fn by_hand(url: &str, image: &str, storage: &Path) -> Duration {
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let root = format!("--root={}", storage.join("graph").display());
    let runroot = format!("--runroot={}", storage.join("run").display());
    let global = [
        root.as_str(),
        runroot.as_str(),
        "--storage-driver=overlay",
        "--cgroup-manager=cgroupfs",
    ];
    sh(
        work.path(),
        "git",
        &["clone", "-q", "--depth", "1", "--", url, "src"],
    );
    let podman = |args: &[&str]| {
        let all: Vec<&str> = global.iter().chain(args).copied().collect();
        sh(work.path(), "podman", &all);
    };
    podman(&[
        "build",
        "-q",
        "--isolation=oci",
        "--runtime=runc",
        "--tls-verify=false",
        "-t",
        "localhost/app",
        "src",
    ]);
    let destination = format!("docker://{image}");
    podman(&[
        "push",
        "-q",
        "--tls-verify=false",
        "localhost/app",
        &destination,
    ]);
    started.elapsed()
}
