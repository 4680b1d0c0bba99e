//! A small real build (`FROM scratch`, COPY, RUN, a build arg; one
//! platform) through the service with each real builder (podman, buildah,
//! buildkit) and no layer cache (`no_cache`: a fresh storage of the job's
//! own, or BuildKit's `--no-cache`), against the same work by hand —
//! `git clone`, `podman build` in a fresh storage and `podman push`; or
//! `docker build --no-cache` with BuildKit and `docker push` — side by
//! side, each side first in one round, medians over the rounds. The service's figure
//! includes what the hand-run floors do not: a fresh wasm instance, grant
//! checks, log streaming, the private build network, the registry read
//! back before the job may succeed, and the provenance.
//!
//! A second row prices the provenance: the same build through a second
//! service with `provenance = false`, against the first, which signs a
//! SLSA statement and the image's SBOM and attaches them to the image (the
//! default). The podman builder's phases with and without it are printed
//! beside podman by hand's steps.
//!
//! A third row prices the isolation itself: the same hand-run build with
//! every `RUN` step in an OCI container under runc, against `--isolation
//! chroot` (what the builders used before; not a sandbox).
//!
//! Needs git, podman, buildah, docker.io, skopeo, docker-registry and
//! busybox-static.
//! Run with `bench/run real_build`.

use crate::common;

use helix_fixtures as fixtures;
use std::time::Duration;

use common::{
    ByHand, REAL_BUILDERS, buildkit_by_hand, job_through_service, median, ms, print_phase_table,
    row, three_way_rows,
};

use helix_build::app;
use helix_build::job::{JobRequest, PhaseName};

/// One round per side, so that each goes first once.
const ROUNDS: usize = Side::ALL.len();

pub fn main() {
    common::block_on(run());
}

async fn run() {
    let registry = fixtures::Registry::start(false);
    let repo = fixtures::Repo::new();
    let helix_engine = fixtures::Dockerd::start();
    let hand_engine = fixtures::Dockerd::start();
    let data = tempfile::tempdir().unwrap();
    let config = common::real_build_config(&data, &registry.address, Some(&helix_engine));
    let service = app::start(&config).await.unwrap();
    let unattested_data = tempfile::tempdir().unwrap();
    let mut unattested = common::real_build_config(&unattested_data, &registry.address, None);
    unattested.provenance = false;
    let unattested = app::start(&unattested).await.unwrap();

    let mut helix: Vec<(&str, Vec<Duration>)> = REAL_BUILDERS.map(|b| (b, Vec::new())).to_vec();
    let mut without_provenance = Vec::new();
    // The podman builder's phases with provenance and without, and podman
    // by hand's steps: where the provenance's price is paid.
    let (mut attested_phases, mut unattested_phases) = (Vec::new(), Vec::new());
    let mut hand_steps = Vec::new();
    let mut by_hand = Vec::new();
    let mut by_hand_chroot = Vec::new();
    let mut buildkit_hand = Vec::new();
    for round in 0..ROUNDS {
        let request = |builder: &str, side: &str| JobRequest {
            repo_url: repo.url(),
            git_ref: Some("v1".into()),
            builder: Some(builder.into()),
            image: Some(format!("{}/bench/{side}:{round}", registry.address)),
            build_args: [("GREETING".to_string(), "hello".to_string())].into(),
            no_cache: true,
            ..JobRequest::default()
        };
        // Each side goes first in one round: none always runs after the
        // same neighbour (whose engine may still be busy).
        let mut sides = Side::ALL;
        sides.rotate_left(round % Side::ALL.len());
        for side in sides {
            match side {
                Side::Helix(i) => {
                    let (builder, times) = &mut helix[i];
                    let (took, job) =
                        job_through_service(&service, request(builder, builder)).await;
                    times.push(took);
                    if *builder == "podman" {
                        attested_phases.push(job.phases);
                    }
                }
                Side::Unattested => {
                    let (took, job) =
                        job_through_service(&unattested, request("podman", "unattested")).await;
                    without_provenance.push(took);
                    unattested_phases.push(job.phases);
                }
                Side::ByHand(isolation) => {
                    let image = format!("{}/bench/by-hand:{round}", registry.address);
                    let hand = build_by_hand(&repo.url(), &image, isolation);
                    match isolation {
                        Isolation::Oci => {
                            by_hand.push(hand.total);
                            hand_steps.push(hand);
                        }
                        Isolation::Chroot => by_hand_chroot.push(hand.total),
                    }
                }
                Side::BuildkitByHand => buildkit_hand.push(
                    buildkit_by_hand(
                        &hand_engine,
                        &repo.url(),
                        &["GREETING=hello"],
                        &format!("{}/bench/buildkit-by-hand:{round}", registry.address),
                        true,
                    )
                    .total,
                ),
            }
        }
    }
    println!("cores: {}", common::cores());
    let podman_median = median(&mut helix[0].1.clone());
    let hand_median = median(&mut by_hand);
    let chroot_median = median(&mut by_hand_chroot);
    three_way_rows(
        "real build",
        &mut helix,
        &mut by_hand,
        &mut buildkit_hand,
        |builder, floor| (builder, floor).eq(&("podman", "podman")).then_some(1.05),
    );
    for (provenance, phases) in [("on", &attested_phases), ("off", &unattested_phases)] {
        let scenario = format!("small build, provenance {provenance}");
        print_phase_table(&scenario, "podman", phases, "podman", &hand_steps);
    }
    let unattested_median = median(&mut without_provenance);
    let attesting = podman_median.as_secs_f64() / unattested_median.as_secs_f64();
    println!("  with provenance / without = {attesting:.2}x");
    row(
        "provenance",
        &format!("{:.0} ms signed + attached", ms(podman_median)),
        &format!("{:.0} ms without", ms(unattested_median)),
        &format!("{attesting:.2}x"),
        "<= 1.03x",
        Some(attesting <= 1.03),
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

/// One measured side of a round.
#[derive(Clone, Copy)]
enum Side {
    /// Through the service, with `REAL_BUILDERS[i]`.
    Helix(usize),
    /// The podman builder through the service without provenance.
    Unattested,
    ByHand(Isolation),
    BuildkitByHand,
}

impl Side {
    const ALL: [Side; 7] = [
        Side::Helix(0),
        Side::Helix(1),
        Side::Helix(2),
        Side::Unattested,
        Side::ByHand(Isolation::Oci),
        Side::ByHand(Isolation::Chroot),
        Side::BuildkitByHand,
    ];
}

#[derive(Clone, Copy)]
enum Isolation {
    Oci,
    Chroot,
}

/// What the service runs (checkout, build in a fresh storage, push),
/// typed in by hand, with `isolation` for the `RUN` steps; each step timed.
fn build_by_hand(url: &str, image: &str, isolation: Isolation) -> ByHand {
    let mut hand = ByHand::start();
    let dir = tempfile::tempdir().unwrap();
    let driver = format!(
        "--storage-driver={}",
        helix_build::layer_cache::StorageDriver::for_dir(dir.path()).as_str()
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
    let steps: [(PhaseName, &str, Vec<&str>); 3] = [
        (
            PhaseName::Checkout,
            "git",
            vec!["clone", "--depth", "1", "--branch", "v1", "--", url, "src"],
        ),
        (PhaseName::Build, "podman", build),
        (PhaseName::Push, "podman", push),
    ];
    for (phase, program, args) in steps {
        hand.step(phase, || fixtures::run(dir.path(), program, &args));
    }
    hand.finish()
}
