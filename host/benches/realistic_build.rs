//! A realistic application build through the service with each real
//! builder (podman, buildah, buildkit), against what its team would
//! otherwise run by hand: `git clone`, then `podman build` with podman's
//! default storage (overlay) and its layer cache and `podman push`, with
//! the same step isolation (OCI, runc); or `docker build` with BuildKit
//! and `docker push`, in a Docker Engine of its own.
//!
//! The fixture: a base image of about 110 MB (busybox and 100 MB of data)
//! in a loopback registry, and a multi-stage Dockerfile with a slow
//! dependency step (3 s) and a source `COPY`. Two scenarios in each
//! round, every side first in one round, medians, each Helix builder
//! against both floors:
//!
//! - cold: nothing cached on any side (the base image is pulled; the
//!   engines are emptied first);
//! - rebuild: after a one-file source change, with the previous build's
//!   layers at hand on every side.
//!
//! Beside them, podman by hand a second time in a jail made as Helix makes
//! one per run: what the jail costs (target on the rebuild: <= 1.05x);
//! and, for each builder's rebuild, its job's phases beside the same steps
//! by hand (podman's for podman and buildah, BuildKit's for buildkit).
//!
//! Needs git, podman, buildah, docker.io, skopeo, docker-registry and
//! busybox-static. Run with `bench/run realistic_build`.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    ByHand, REAL_BUILDERS, buildkit_by_hand, empty_engine, job_through_service, median, ms,
    print_phase_table, row, three_way_rows, through_service,
};
use helix_build::app;
use helix_build::cancel::CancelSignal;
use helix_build::cgroup::{BuildLimits, Cgroups};
use helix_build::exec::HostCommand;
use helix_build::jail::{IdRange, Jail, JailSpec};
use helix_build::job::{JobRequest, Phase, PhaseName};
use helix_build::log::JobLog;
use helix_build::network::BuildNetwork;
use helix_fixtures::{Dockerd, Registry, git, run as sh};

/// One round per side, so that each goes first once.
const ROUNDS: usize = Side::ALL.len();

/// One measured side of a round.
#[derive(Clone, Copy)]
enum Side {
    /// Through the service, with `REAL_BUILDERS[i]`.
    Helix(usize),
    PodmanByHand,
    /// podman by hand in a jail made as Helix makes one.
    PodmanJailed,
    BuildkitByHand,
}

impl Side {
    const ALL: [Side; 6] = [
        Side::Helix(0),
        Side::Helix(1),
        Side::Helix(2),
        Side::PodmanByHand,
        Side::PodmanJailed,
        Side::BuildkitByHand,
    ];
}

pub fn main() {
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
    // The rebuilds' phases, by builder, and the same steps by hand.
    let mut warm_phases: Vec<(&str, Vec<Vec<Phase>>)> =
        REAL_BUILDERS.map(|b| (b, Vec::new())).to_vec();
    let (mut podman_steps, mut buildkit_steps) = (Vec::new(), Vec::new());
    let (mut cold_podman, mut cold_buildkit) = (Vec::new(), Vec::new());
    let (mut warm_podman, mut warm_buildkit) = (Vec::new(), Vec::new());
    // podman by hand again, in a jail as Helix makes one per run: what
    // the jail costs, beside the same commands on the host.
    let (mut cold_jailed, mut warm_jailed) = (Vec::new(), Vec::new());
    // One storage by hand for the whole run, as a developer's machine has.
    let hand = tempfile::tempdir().unwrap();
    let hand_jailed = tempfile::tempdir().unwrap();
    let cgroups = Cgroups::detect(data.path()).expect("control groups");
    let jailed = Some((registry.address.as_str(), &cgroups));
    for round in 0..ROUNDS {
        let image = |side: &str| format!("{}/bench/{side}:{round}", registry.address);
        let job = |builder: &str, no_cache: bool| JobRequest {
            repo_url: url.clone(),
            builder: Some(builder.into()),
            image: Some(image(builder)),
            no_cache,
            ..JobRequest::default()
        };
        // Each side goes first in one round: none always runs after the
        // same neighbour (whose engine may still be busy).
        let mut sides = Side::ALL;
        sides.rotate_left(round % Side::ALL.len());
        // Cold: the service in a storage of the job's own (no_cache) or
        // an emptied engine, by hand in an empty storage or engine.
        empty_engine(&helix_engine);
        empty_engine(&hand_engine);
        for side in sides {
            let empty = tempfile::tempdir().unwrap();
            match side {
                Side::Helix(i) => {
                    let (builder, times) = &mut cold[i];
                    times.push(through_service(&service, job(builder, true)).await);
                }
                Side::PodmanByHand => cold_podman.push(
                    by_hand(&url, &image("podman-hand"), empty.path(), None)
                        .await
                        .total,
                ),
                Side::PodmanJailed => cold_jailed.push(
                    by_hand(&url, &image("podman-jailed"), empty.path(), jailed)
                        .await
                        .total,
                ),
                Side::BuildkitByHand => cold_buildkit.push(
                    buildkit_by_hand(&hand_engine, &url, &[], &image("buildkit-hand"), true).total,
                ),
            }
        }

        // Rebuild: every side has built the current commit before this round.
        for builder in REAL_BUILDERS {
            through_service(&service, job(builder, false)).await;
        }
        by_hand(&url, &image("podman-hand"), hand.path(), None).await;
        by_hand(&url, &image("podman-jailed"), hand_jailed.path(), jailed).await;
        buildkit_by_hand(&hand_engine, &url, &[], &image("buildkit-hand"), false);
        std::fs::write(
            repo.path().join("src/main.txt"),
            format!("source, revision {round}\n"),
        )
        .unwrap();
        git(repo.path(), &["commit", "-qam", "one-file change"]);
        for side in sides {
            match side {
                Side::Helix(i) => {
                    let ((builder, times), (_, phases)) = (&mut warm[i], &mut warm_phases[i]);
                    let (took, ended) = job_through_service(&service, job(builder, false)).await;
                    times.push(took);
                    phases.push(ended.phases);
                }
                Side::PodmanByHand => {
                    let podman = by_hand(&url, &image("podman-hand"), hand.path(), None).await;
                    warm_podman.push(podman.total);
                    podman_steps.push(podman);
                }
                Side::PodmanJailed => warm_jailed.push(
                    by_hand(&url, &image("podman-jailed"), hand_jailed.path(), jailed)
                        .await
                        .total,
                ),
                Side::BuildkitByHand => {
                    let buildkit =
                        buildkit_by_hand(&hand_engine, &url, &[], &image("buildkit-hand"), false);
                    warm_buildkit.push(buildkit.total);
                    buildkit_steps.push(buildkit);
                }
            }
        }
    }
    println!("cores: {}", common::cores());
    for (builder, phases) in &warm_phases {
        let (hand_name, hand) = match *builder {
            "buildkit" => ("BuildKit", &buildkit_steps),
            _ => ("podman", &podman_steps),
        };
        print_phase_table("realistic rebuild", builder, phases, hand_name, hand);
    }
    three_way_rows(
        "realistic cold",
        &mut cold,
        &mut cold_podman,
        &mut cold_buildkit,
        |builder, floor| match (builder, floor) {
            ("podman", "podman") | ("buildkit", "BuildKit") => Some(1.05),
            _ => None,
        },
    );
    three_way_rows(
        "realistic rebuild",
        &mut warm,
        &mut warm_podman,
        &mut warm_buildkit,
        |builder, floor| match (builder, floor) {
            ("podman", "podman") | ("buildkit", "BuildKit") => Some(1.0),
            _ => None,
        },
    );
    for (scenario, jailed, on_host, target) in [
        ("realistic cold", &mut cold_jailed, &mut cold_podman, None),
        (
            "realistic rebuild",
            &mut warm_jailed,
            &mut warm_podman,
            Some(1.05),
        ),
    ] {
        let (jailed, on_host) = (median(jailed), median(on_host));
        let ratio = jailed.as_secs_f64() / on_host.as_secs_f64();
        println!(
            "{scenario}: podman by hand in a jail {:.0} ms, on the host {:.0} ms, {ratio:.2}x",
            ms(jailed),
            ms(on_host)
        );
        row(
            &format!("{scenario}, podman by hand in Helix's jail / on the host"),
            &format!("{:.0} ms in the jail", ms(jailed)),
            &format!("{:.0} ms on the host", ms(on_host)),
            &format!("{ratio:.2}x"),
            &target.map_or("reported (no target)".into(), |t: f64| {
                format!("<= {t:.2}x")
            }),
            target.map(|t| ratio <= t),
        );
    }
    service.stop(Duration::from_secs(5)).await;
}

/// `git clone`, `podman build` and `podman push`, as a developer runs
/// them, with podman's default driver (overlay) rooted in `storage`; with
/// `jailed` (the registry it pushes to), podman runs in a jail made as
/// Helix makes one for a run (its `private` network, that registry
/// forwarded), made (as its `prepare`) and removed within the time
/// measured.
pub(crate) async fn by_hand(
    url: &str,
    image: &str,
    storage: &Path,
    jailed: Option<(&str, &Cgroups)>,
) -> ByHand {
    let mut hand = ByHand::start();
    let prepared = Instant::now();
    let work = tempfile::tempdir().unwrap();
    // As for a run: the jail shows only its own control groups writable.
    let cgroup = jailed.map(|(_, cgroups)| {
        cgroups
            .create("bench-by-hand", &BuildLimits::default())
            .unwrap()
    });
    let jail = match jailed {
        Some((registry, _)) => Some(
            Jail::create(JailSpec {
                writable: vec![work.path().to_path_buf(), storage.to_path_buf()],
                written_later: Vec::new(),
                readable: Vec::new(),
                scratch: work.path().join("tmp"),
                cache_mounts: None,
                // As a host's podman keeps it, with the storage.
                blob_info_cache: Some(storage.join("blob-info-cache")),
                files: work.path().join("jail"),
                network: BuildNetwork::Private,
                registries: vec![registry.to_string()],
                cgroup: cgroup.as_ref(),
                cgroup_namespace: false,
                users: Some(IdRange::DEFAULT),
            })
            .await
            .unwrap(),
        ),
        None => None,
    };
    let root = format!("--root={}", storage.join("graph").display());
    let runroot = format!("--runroot={}", storage.join("run").display());
    let global = [
        root.as_str(),
        runroot.as_str(),
        "--storage-driver=overlay",
        "--cgroup-manager=cgroupfs",
    ];
    if jailed.is_some() {
        hand.steps.push((PhaseName::Prepare, prepared.elapsed()));
    }
    hand.step(PhaseName::Checkout, || {
        sh(
            work.path(),
            "git",
            &["clone", "-q", "--depth", "1", "--", url, "src"],
        )
    });
    // As a run's checkout, the clone is the jail's root's.
    if let Some(jail) = &jail {
        jail.hand_over(&work.path().join("src")).unwrap();
    }
    let env = std::collections::BTreeMap::from([(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_default(),
    )]);
    let podman = |args: Vec<&str>| {
        let all: Vec<String> = global.iter().chain(&args).map(|a| a.to_string()).collect();
        let (env, jail, cgroup, cwd) = (&env, jail.as_ref(), cgroup.as_ref(), work.path());
        async move {
            let log = JobLog::new(10);
            let output = HostCommand {
                program: "podman",
                args: &all,
                env,
                cwd,
                timeout: None,
                log: &log,
                cancel: &CancelSignal::new(),
                cgroup,
                jail,
            }
            .run()
            .await
            .unwrap();
            assert_eq!(output.exit_code, 0, "podman {all:?}: {}", output.stderr);
        }
    };
    // In the jail, the build's network is the one a jail holds, and its
    // steps go in the run's group, the only writable one.
    let (network, parent) = match &cgroup {
        Some(cgroup) => (
            "--network=helix-private",
            format!("--cgroup-parent={}", cgroup.steps_path()),
        ),
        None => ("--network=podman", "--cgroup-parent=".to_string()),
    };
    let mut build = vec![
        "build",
        "-q",
        "--isolation=oci",
        "--runtime=runc",
        network,
        "--tls-verify=false",
        "-t",
        "localhost/app",
        "src",
    ];
    if cgroup.is_some() {
        build.insert(1, &parent);
    }
    hand.step_async(PhaseName::Build, podman(build)).await;
    let destination = format!("docker://{image}");
    let push = podman(vec![
        "push",
        "-q",
        "--tls-verify=false",
        "localhost/app",
        &destination,
    ]);
    hand.step_async(PhaseName::Push, push).await;
    drop(jail);
    drop(cgroup);
    hand.finish()
}
