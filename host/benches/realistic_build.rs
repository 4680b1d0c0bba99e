//! A realistic application build through the service with the podman
//! builder, against what its team would otherwise run by hand: `git
//! clone`, `podman build` with podman's default storage (overlay) and its
//! layer cache, `podman push`, with the same step isolation (OCI, runc).
//!
//! The fixture: a base image of about 110 MB (busybox and 100 MB of data)
//! in a loopback registry, and a multi-stage Dockerfile with a slow
//! dependency step (3 s) and a source `COPY`. Two rows, alternating
//! rounds, medians:
//!
//! - cold: nothing cached on either side (the base image is pulled);
//! - rebuild: after a one-file source change, with the previous build's
//!   layers at hand on both sides.
//!
//! Needs git, podman, skopeo, docker-registry and busybox-static.
//! Run with `cargo bench -p helix-build --bench realistic_build`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{median, ms, row};
use helix_build::app;
use helix_build::job::{JobRequest, State};
use helix_build::service::Service;
use helix_fixtures::{Registry, git, run as sh};

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

    let data = tempfile::tempdir().unwrap();
    let config = common::real_build_config(&data, &registry.address);
    let service = app::start(&config).await.unwrap();

    let (mut cold_service, mut cold_hand) = (Vec::new(), Vec::new());
    let (mut warm_service, mut warm_hand) = (Vec::new(), Vec::new());
    // One storage by hand for the whole run, as a developer's machine has.
    let hand = tempfile::tempdir().unwrap();
    for round in 0..ROUNDS {
        let image = |side: &str| format!("{}/bench/{side}:{round}", registry.address);
        // Cold: the service in a storage of the job's own (no_cache), by
        // hand in an empty one.
        cold_service.push(through_service(&service, &url, &image("service"), true).await);
        let empty = tempfile::tempdir().unwrap();
        cold_hand.push(by_hand(&url, &image("hand"), empty.path()));

        // Rebuild: both have built the current commit before this round.
        through_service(&service, &url, &image("service"), false).await;
        by_hand(&url, &image("hand"), hand.path());
        std::fs::write(
            repo.path().join("src/main.txt"),
            format!("source, revision {round}\n"),
        )
        .unwrap();
        git(repo.path(), &["commit", "-qam", "one-file change"]);
        warm_service.push(through_service(&service, &url, &image("service"), false).await);
        warm_hand.push(by_hand(&url, &image("hand"), hand.path()));
    }
    println!("cores: {}", common::cores());
    for (name, service, hand, target) in [
        ("realistic cold", &mut cold_service, &mut cold_hand, 1.15),
        ("realistic rebuild", &mut warm_service, &mut warm_hand, 1.3),
    ] {
        let (service, hand) = (median(service), median(hand));
        let ratio = service.as_secs_f64() / hand.as_secs_f64();
        println!(
            "{name}: {:.0} ms via service, {:.0} ms by hand, {ratio:.2}x",
            ms(service),
            ms(hand)
        );
        row(
            name,
            &format!("{:.0} ms via service", ms(service)),
            &format!("{:.0} ms podman by hand", ms(hand)),
            &format!("{ratio:.2}x"),
            &format!("<= {target:.2}x"),
            Some(ratio <= target),
        );
    }
    service.stop(Duration::from_secs(5)).await;
}

/// Runs one job of the repository at `url` to `image`; how long it took.
async fn through_service(service: &Service, url: &str, image: &str, no_cache: bool) -> Duration {
    let started = Instant::now();
    let job = service
        .submit(JobRequest {
            repo_url: url.into(),
            builder: Some("podman".into()),
            image: Some(image.into()),
            no_cache,
            ..JobRequest::default()
        })
        .await
        .unwrap();
    let job = service
        .wait(job.id.as_str(), Duration::from_secs(900))
        .await
        .unwrap();
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    started.elapsed()
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
