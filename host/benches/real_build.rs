//! A small real build (`FROM scratch`, COPY, RUN, a build arg; one
//! platform) through the service with the podman builder, against the same
//! git and podman commands run by hand — alternating, side by side, medians
//! over several rounds. The service's figure includes what the hand-run
//! floor does not: a fresh wasm instance, grant checks, log streaming, and
//! the registry check (`skopeo inspect`) before the job may succeed.
//!
//! Needs git, podman, skopeo, docker-registry and busybox-static.
//! Run with `cargo bench -p helix-build --bench real_build`.

// Shared with the tests; not every fixture is used here.
#[allow(dead_code)]
#[path = "../tests/common/fixtures.rs"]
mod fixtures;

mod common;

use std::time::{Duration, Instant};

use common::{median, ms, row};

use helix_build::app;
use helix_build::config::{BuilderConfig, Config, RegistryConfig};
use helix_build::job::{JobRequest, State};

const ROUNDS: usize = 7;

fn main() {
    common::block_on(run());
}

async fn run() {
    let registry = fixtures::Registry::start(false);
    let repo = fixtures::Repo::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        workers: 1,
        allow_file_repos: true,
        ..Config::default()
    };
    config.registries.insert(
        registry.address.clone(),
        RegistryConfig { tls_verify: false },
    );
    config
        .builders
        .insert("podman".into(), BuilderConfig::default());
    let service = app::start(&config.validated().unwrap()).await.unwrap();

    let mut through_service = Vec::new();
    let mut by_hand = Vec::new();
    for round in 0..ROUNDS {
        let image = format!("{}/bench/service:{round}", registry.address);
        let request = JobRequest {
            repo_url: repo.url(),
            git_ref: Some("v1".into()),
            builder: Some("podman".into()),
            image: Some(image),
            build_args: [("GREETING".to_string(), "hello".to_string())].into(),
            ..JobRequest::default()
        };
        let started = Instant::now();
        let job = service.submit(request).await.unwrap();
        let job = service
            .wait(job.id.as_str(), Duration::from_secs(300))
            .await
            .unwrap();
        through_service.push(started.elapsed());
        assert_eq!(job.state, State::Succeeded, "{:?}", job.error);

        let image = format!("{}/bench/by-hand:{round}", registry.address);
        let started = Instant::now();
        build_by_hand(&repo.url(), &image);
        by_hand.push(started.elapsed());
    }
    let (service_median, hand_median) = (median(&mut through_service), median(&mut by_hand));
    println!("cores: {}", common::cores());
    println!(
        "small real build through the service: {:>8.0} ms",
        service_median.as_secs_f64() * 1e3
    );
    println!(
        "same git + podman commands by hand:    {:>8.0} ms",
        hand_median.as_secs_f64() * 1e3
    );
    let ratio = service_median.as_secs_f64() / hand_median.as_secs_f64();
    println!("  service / by hand = {ratio:.2}x");
    row(
        "real build",
        &format!("{:.0} ms via service", ms(service_median)),
        &format!("{:.0} ms by hand", ms(hand_median)),
        &format!("{ratio:.2}x"),
        "<= 1.10x",
        Some(ratio <= 1.10),
    );
}

/// What the podman builder runs, typed in by hand.
fn build_by_hand(url: &str, image: &str) {
    let dir = tempfile::tempdir().unwrap();
    let storage = helix_build::builtin::CONTAINER_STORAGE_ARGS;
    let destination = format!("docker://{image}");
    let steps: [(&str, Vec<&str>); 3] = [
        (
            "git",
            vec!["clone", "--depth", "1", "--branch", "v1", "--", url, "src"],
        ),
        (
            "podman",
            storage
                .iter()
                .copied()
                .chain([
                    "build",
                    "--isolation",
                    "chroot",
                    "-f",
                    "src/Dockerfile",
                    "--build-arg",
                    "GREETING=hello",
                    "--platform",
                    "linux/amd64",
                    "-t",
                    image,
                    "src",
                ])
                .collect(),
        ),
        (
            "podman",
            storage
                .iter()
                .copied()
                .chain([
                    "push",
                    "--tls-verify=false",
                    "--digestfile",
                    "pushed.digest",
                    image,
                    &destination,
                ])
                .collect(),
        ),
    ];
    for (program, args) in steps {
        fixtures::run(dir.path(), program, &args);
    }
}
