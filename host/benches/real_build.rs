//! A small real build (`FROM scratch`, COPY, RUN, a build arg; one
//! platform) through the service with the podman builder, with no layer
//! cache (`no_cache`: a fresh storage of the job's own), against the same
//! work by hand — `git clone`, `podman build` in a fresh storage, `podman
//! push` — alternating, side by side, medians over several rounds. The
//! service's figure includes what the hand-run floor does not: a fresh
//! wasm instance, grant checks, log streaming, the private build network,
//! and the registry check (`skopeo inspect`) before the job may succeed.
//!
//! A second row prices the provenance: the same build through a second
//! service with `provenance = false`, against the first, which signs a
//! SLSA statement and attaches it to the image (the default).
//!
//! A third row prices the isolation itself: the same hand-run build with
//! every `RUN` step in an OCI container under runc, against `--isolation
//! chroot` (what the builders used before; not a sandbox).
//!
//! Needs git, podman, skopeo, docker-registry and busybox-static.
//! Run with `cargo bench -p helix-build --bench real_build`.

mod common;

use helix_fixtures as fixtures;
use std::time::{Duration, Instant};

use common::{median, ms, row};

use helix_build::app;
use helix_build::job::{JobRequest, State};

const ROUNDS: usize = 7;

fn main() {
    common::block_on(run());
}

async fn run() {
    let registry = fixtures::Registry::start(false);
    let repo = fixtures::Repo::new();
    let data = tempfile::tempdir().unwrap();
    let config = common::real_build_config(&data, &registry.address);
    let service = app::start(&config).await.unwrap();
    let unattested_data = tempfile::tempdir().unwrap();
    let mut unattested = common::real_build_config(&unattested_data, &registry.address);
    unattested.provenance = false;
    let unattested = app::start(&unattested).await.unwrap();

    let mut through_service = Vec::new();
    let mut without_provenance = Vec::new();
    let mut by_hand = Vec::new();
    let mut by_hand_chroot = Vec::new();
    for round in 0..ROUNDS {
        for (service, times, name) in [
            (&service, &mut through_service, "service"),
            (&unattested, &mut without_provenance, "unattested"),
        ] {
            let request = JobRequest {
                repo_url: repo.url(),
                git_ref: Some("v1".into()),
                builder: Some("podman".into()),
                image: Some(format!("{}/bench/{name}:{round}", registry.address)),
                build_args: [("GREETING".to_string(), "hello".to_string())].into(),
                no_cache: true,
                ..JobRequest::default()
            };
            let started = Instant::now();
            let job = service.submit(request).await.unwrap();
            let job = service
                .wait(job.id.as_str(), Duration::from_secs(300))
                .await
                .unwrap();
            times.push(started.elapsed());
            assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
        }

        for (isolation, times) in [
            (Isolation::Oci, &mut by_hand),
            (Isolation::Chroot, &mut by_hand_chroot),
        ] {
            let image = format!("{}/bench/by-hand:{round}", registry.address);
            let started = Instant::now();
            build_by_hand(&repo.url(), &image, isolation);
            times.push(started.elapsed());
        }
    }
    let (service_median, hand_median) = (median(&mut through_service), median(&mut by_hand));
    let chroot_median = median(&mut by_hand_chroot);
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
    let unattested_median = median(&mut without_provenance);
    let attesting = service_median.as_secs_f64() / unattested_median.as_secs_f64();
    println!("  with provenance / without = {attesting:.2}x");
    row(
        "provenance",
        &format!("{:.0} ms signed + attached", ms(service_median)),
        &format!("{:.0} ms without", ms(unattested_median)),
        &format!("{attesting:.2}x"),
        "<= 1.05x",
        Some(attesting <= 1.05),
    );
    let cost = hand_median.as_secs_f64() / chroot_median.as_secs_f64();
    row(
        "RUN isolation",
        &format!("{:.0} ms oci+runc", ms(hand_median)),
        &format!("{:.0} ms chroot", ms(chroot_median)),
        &format!("{cost:.2}x"),
        "reported (no target)",
        None,
    );
}

#[derive(Clone, Copy)]
enum Isolation {
    Oci,
    Chroot,
}

/// What the service runs (checkout, build in a fresh storage, push),
/// typed in by hand, with `isolation` for the `RUN` steps.
fn build_by_hand(url: &str, image: &str, isolation: Isolation) {
    let dir = tempfile::tempdir().unwrap();
    let driver = format!(
        "--storage-driver={}",
        helix_build::cache::StorageDriver::for_dir(dir.path()).as_str()
    );
    let global = [
        "--root",
        "storage",
        "--runroot",
        "run",
        driver.as_str(),
        "--cgroup-manager",
        "cgroupfs",
    ];
    let isolation: &[&str] = match isolation {
        Isolation::Oci => &["--isolation", "oci", "--runtime", "runc"],
        Isolation::Chroot => &["--isolation", "chroot"],
    };
    let destination = format!("docker://{image}");
    let build: Vec<&str> = global
        .iter()
        .chain(&["build"])
        .chain(isolation)
        .chain(&[
            "-f",
            "src/Dockerfile",
            "--build-arg",
            "GREETING=hello",
            "--platform",
            "linux/amd64",
            "-t",
            "localhost/helix-image",
            "src",
        ])
        .copied()
        .collect();
    let push: Vec<&str> = global
        .iter()
        .chain(&[
            "push",
            "--quiet",
            "--tls-verify=false",
            "localhost/helix-image",
            destination.as_str(),
        ])
        .copied()
        .collect();
    let steps: [(&str, Vec<&str>); 3] = [
        (
            "git",
            vec!["clone", "--depth", "1", "--branch", "v1", "--", url, "src"],
        ),
        ("podman", build),
        ("podman", push),
    ];
    for (program, args) in steps {
        fixtures::run(dir.path(), program, &args);
    }
}
