//! The `buildkit` builder end to end: a real Docker Engine (Debian's
//! dockerd 20.10, started by each test with its own data root and unix
//! socket), the built-in component driving `docker build` with BuildKit,
//! a real registry on loopback, images read back from it by digest.
//! Needs root, docker.io, podman, buildah, skopeo, git, docker-registry
//! and busybox-static, as `.ci/run` installs them.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;

use crate::common::{LogText as _, image_name, pull, start, with_engine};
use helix_build::job::{Job, JobRequest, State};
use helix_fixtures::{Dockerd, Registry, Repo};

/// The digests of the layers of image `reference`.
fn layers(reference: &str) -> Vec<String> {
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(raw.status.success(), "skopeo inspect {reference}");
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| layer["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The job's image by digest.
fn by_digest(job: &Job) -> String {
    let name = image_name(job.image_tag.as_deref().unwrap());
    format!("{name}@{}", job.digest.clone().unwrap())
}

/// Images the host left in the engine under a job's name.
fn leftovers(engine: &Dockerd) -> Vec<String> {
    engine
        .images()
        .into_iter()
        .filter(|image| image.starts_with("helix.local/") || image.starts_with("127.0.0.1"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_stage_build_on_a_registry_base_pushes_pulls_back_and_rebuilds_from_the_cache() {
    let registry = Registry::start(false);
    let engine = Dockerd::start();
    let base = format!("{}/base/debianish:1", registry.address);
    helix_fixtures::push_base_image(&base, 4);
    // In the operator's engine, then in the engines the host runs (the
    // rebuild lands in the slot, so the engine, of the first build).
    for operators in [true, false] {
        let repo = tempfile::tempdir().unwrap();
        helix_fixtures::realistic_repo(repo.path(), &base, 1);
        let dir = tempfile::tempdir().unwrap();
        let config = common::real_config(&dir, &registry.address);
        let config = match operators {
            true => with_engine(config, &engine),
            false => common::with_managed_engine(config),
        };
        let service = start(&config).await;
        let leftovers = || match operators {
            true => leftovers(&engine),
            false => Vec::new(),
        };
        let request = JobRequest {
            repo_url: format!("file://{}", repo.path().display()),
            builder: Some("buildkit".into()),
            labels: BTreeMap::from([("org.example.team".to_string(), "platform".to_string())]),
            ..JobRequest::default()
        };

        let (job, logs) = common::run_logged(&service, request.clone()).await;
        assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
        let (app, config) = pull(&by_digest(&job), "app");
        assert_eq!(app, "dependencies\nsource, revision initial\nlibrary\n");
        assert_eq!(config["config"]["Labels"]["org.example.team"], "platform");
        assert_eq!(config["architecture"], "amd64");
        // The base image's layers came from the registry and went back as
        // they were: the same blobs, under the app's.
        let base_layers = layers(&base);
        let app_layers = layers(&by_digest(&job));
        assert_eq!(app_layers.len(), base_layers.len() + 1, "{app_layers:?}");
        assert_eq!(app_layers[..base_layers.len()], base_layers[..]);
        let text = logs.join("\n");
        let building_in = match operators {
            true => "[helix] building in the Docker Engine at unix://",
            false => "[helix] building in this slot's managed Docker Engine at unix:///run/hxe/",
        };
        assert!(text.contains(building_in), "{text}");
        assert!(text.contains("[helix] verified:"), "{text}");
        assert_eq!(
            leftovers(),
            Vec::<String>::new(),
            "the run's images are removed"
        );

        std::fs::write(repo.path().join("src/main.txt"), "source, revision 2\n").unwrap();
        helix_fixtures::git(repo.path(), &["commit", "-qam", "one-file change"]);
        let (rebuilt, logs) = common::run_logged(&service, request).await;
        assert_eq!(rebuilt.state, State::Succeeded, "{:?}", rebuilt.error);
        assert_ne!(rebuilt.digest, job.digest);
        assert_eq!(
            pull(&by_digest(&rebuilt), "app").0,
            "dependencies\nsource, revision 2\nlibrary\n"
        );
        // The dependency step came from BuildKit's cache, the source step not.
        let text = logs.join("\n");
        let step = |name: &str| {
            let line = logs.iter().find(|l| l.contains(name)).expect(name);
            let number = line
                .split_whitespace()
                .find(|w| w.starts_with('#'))
                .unwrap();
            logs.iter()
                .any(|l| l.ends_with(&format!("{number} CACHED")))
        };
        assert!(step("[deps 2/2]"), "{text}");
        assert!(!step("[build 2/2]"), "{text}");
        assert_eq!(leftovers(), Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_platforms_give_an_index_with_each_platforms_own_image() {
    let registry = Registry::start(false);
    let engine = Dockerd::start();
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let config = with_engine(common::real_config(&dir, &registry.address), &engine);
    let service = start(&config).await;
    let request = JobRequest {
        repo_url: repo.url(),
        builder: Some("buildkit".into()),
        platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
        build_args: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
        ..JobRequest::default()
    };
    let (job, _) = common::run_logged(&service, request).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    let platforms: Vec<String> = job.manifest.platforms().map(|p| p.to_string()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let tag = job.image_tag.as_deref().unwrap();
    let name = tag.rsplit_once(':').unwrap().0;
    for (platform, digest) in job.manifest.iter() {
        let (hello, config) = pull(&format!("{name}@{digest}"), "hello");
        assert_eq!(hello, format!("hi-{}\n", platform.arch()));
        assert_eq!(config["architecture"], platform.arch());
    }
    // The tag names the index, which names both.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{tag}"))
        .output()
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    assert_eq!(leftovers(&engine), Vec::<String>::new());
}

/// The job as stored, without what differs between any two runs (id,
/// times, digests) and the builder that was asked for.
fn comparable(job: &Job) -> serde_json::Value {
    let mut value = serde_json::to_value(job).unwrap();
    let fields = value.as_object_mut().unwrap();
    for varying in [
        "id",
        "builder",
        "component_digest",
        "digest",
        "manifest",
        "image_tag",
        "created_at",
        "started_at",
        "completed_at",
        // How many steps each tool counts, and caches, is its own.
        "steps",
        // As are how long each phase took and what each run used.
        "phases",
        "resources",
    ] {
        fields.remove(varying);
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_builder_between_podman_buildah_and_buildkit_changes_nothing_else() {
    let registry = Registry::start(false);
    let engine = Dockerd::start();
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let config = with_engine(common::real_config(&dir, &registry.address), &engine);
    let service = start(&config).await;
    let request = |builder: &str| JobRequest {
        repo_url: repo.url(),
        git_ref: Some("v1".into()),
        builder: Some(builder.into()),
        build_args: BTreeMap::from([("GREETING".to_string(), "swap".to_string())]),
        labels: BTreeMap::from([("org.example.build".to_string(), "same".to_string())]),
        platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
        ..JobRequest::default()
    };
    let mut seen: Option<(serde_json::Value, Vec<(String, serde_json::Value)>)> = None;
    for builder in ["podman", "buildah", "buildkit"] {
        let (job, _) = common::run_logged(&service, request(builder)).await;
        assert_eq!(job.state, State::Succeeded, "{builder}: {:?}", job.error);
        assert_eq!(job.builder, builder);
        let tag = job.image_tag.clone().unwrap();
        assert!(tag.ends_with(&format!(":{}", job.id)), "{builder}: {tag}");
        let name = tag.rsplit_once(':').unwrap().0.to_string();
        let images: Vec<(String, serde_json::Value)> = job
            .manifest
            .iter()
            .map(|(platform, digest)| {
                let (hello, mut config) = pull(&format!("{name}@{digest}"), "hello");
                // podman and buildah stamp their version on every image.
                let labels = config["config"]["Labels"].as_object_mut().unwrap();
                labels.remove("io.buildah.version");
                let summary = serde_json::json!({
                    "platform": platform.to_string(),
                    "architecture": config["architecture"],
                    "os": config["os"],
                    "labels": config["config"]["Labels"],
                });
                (hello, summary)
            })
            .collect();
        assert_eq!(images.len(), 2, "{builder}");
        let this = (comparable(&job), images);
        match &seen {
            None => seen = Some(this),
            Some(first) => assert_eq!(&this, first, "{builder} differs from podman"),
        }
    }
}

/// The error of a `buildkit` job of `repo` through a service with `config`.
async fn buildkit_job_error(config: &helix_build::config::Config, repo: &Repo) -> String {
    let service = start(config).await;
    let (job, _) = common::run_logged(
        &service,
        JobRequest {
            repo_url: repo.url(),
            builder: Some("buildkit".into()),
            ..JobRequest::default()
        },
    )
    .await;
    assert_eq!(job.state, State::Failed);
    job.error.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_engine_or_with_one_that_does_not_answer_the_job_says_which_and_what_to_set() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let config = common::real_config(&dir, &registry.address);

    // Without one, buildkit is not offered: its job is refused at submit.
    let refused = start(&config)
        .await
        .submit(JobRequest {
            repo_url: repo.url(),
            builder: Some("buildkit".into()),
            ..JobRequest::default()
        })
        .await;
    match refused {
        Err(helix_build::service::ServiceError::Invalid(e)) => {
            assert_eq!(e.field, "builder", "{e}");
            assert!(e.message.contains("builders.buildkit.engine"), "{e}");
        }
        other => panic!("expected a refusal naming the setting, got {other:?}"),
    }

    let socket = format!("unix://{}/nobody.sock", dir.path().display());
    let error = buildkit_job_error(&common::with_engine_at(config, &socket), &repo).await;
    assert!(error.starts_with("host error: "), "{error}");
    assert!(
        error.contains(&socket) && error.contains("does not answer"),
        "{error}"
    );
}

/// Host processes whose command line holds `marker`: pid and command.
fn processes_running(marker: &str) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_string_lossy().parse::<u32>().ok()?, e)))
        .filter_map(|(pid, e)| Some((pid, std::fs::read(e.path().join("cmdline")).ok()?)))
        .map(|(pid, c)| (pid, String::from_utf8_lossy(&c).replace('\0', " ")))
        .filter(|(_, c)| c.contains(marker))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_build_stops_its_step_in_the_engine_and_leaves_no_image() {
    let registry = Registry::start(false);
    let engine = Dockerd::start();
    // A duration no other test sleeps, to find this step among processes.
    let marker = "sleep 287";
    let repo = helix_fixtures::repo_running(&format!("echo step started; /bin/busybox {marker}"));
    let dir = tempfile::tempdir().unwrap();
    let config = with_engine(common::real_config(&dir, &registry.address), &engine);
    let service = start(&config).await;
    let job = service
        .submit(common::on_repo(repo.path(), "buildkit"))
        .await
        .unwrap();
    common::until_logged(&service, &job.id, |l| l.ends_with("step started")).await;
    let mut running = processes_running(marker);
    for _ in 0..100 {
        if !running.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        running = processes_running(marker);
    }
    assert!(!running.is_empty(), "the step is not running");

    let cancelled = service.cancel(job.id.as_str()).await.unwrap();
    assert_eq!(cancelled.state, State::Cancelled);
    // BuildKit stops the solve once the client's session is gone.
    for _ in 0..300 {
        if processes_running(marker).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let left = processes_running(marker);
    assert!(left.is_empty(), "the step outlived the job: {left:?}");
    assert_eq!(leftovers(&engine), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_chooses_buildkits_frontend_is_refused_before_the_engine_fetches_it() {
    let registry = Registry::start(false);
    let engine = Dockerd::start();
    // A frontend "registry" on the host: the engine must never ask it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let frontend = format!("{}/evil/frontend:1", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = with_engine(common::real_config(&dir, &registry.address), &engine);
    let service = start(&config).await;
    // Every spelling of the directive some BuildKit reads, each on its line.
    let mut repos = Vec::new();
    for (header, line) in [
        (format!("# syntax={frontend}\n"), 1),
        (format!("#  SYNTAX = {frontend}\n"), 1),
        (format!("// syntax={frontend}\n"), 1),
        (format!("#!/usr/bin/env buildctl\n# syntax={frontend}\n"), 2),
        (format!("# check=skip=all\n# syntax={frontend}\n"), 2),
        (format!("# escape=`\n# syntax={frontend}\n"), 2),
        (format!("\u{feff}# syntax={frontend}\n"), 1),
    ] {
        let repo = helix_fixtures::repo_running("echo built");
        let dockerfile = repo.path().join("Dockerfile");
        let text = std::fs::read_to_string(&dockerfile).unwrap();
        std::fs::write(&dockerfile, format!("{header}{text}")).unwrap();
        helix_fixtures::git(repo.path(), &["commit", "-qam", "choose a frontend"]);
        let request = JobRequest {
            repo_url: format!("file://{}", repo.path().display()),
            builder: Some("buildkit".into()),
            ..JobRequest::default()
        };
        let (job, _) = common::run_logged(&service, request).await;
        assert_eq!(job.state, State::Failed, "{header:?}");
        let error = job.error.unwrap();
        assert!(error.starts_with("invalid job: "), "{header:?}: {error}");
        assert!(
            error.contains(&format!("line {line}:")) && error.contains("rule `frontend`"),
            "{header:?}: {error}"
        );
        repos.push(repo);
    }
    // A frontend named in a build arg never reaches a queue.
    let plain = helix_fixtures::repo_running("echo built");
    for name in [
        "BUILDKIT_SYNTAX",
        "buildkit_syntax",
        "BUILDKIT_FRONTEND_IMAGE",
    ] {
        let refused = service
            .submit(JobRequest {
                repo_url: format!("file://{}", plain.path().display()),
                builder: Some("buildkit".into()),
                build_args: BTreeMap::from([(name.to_string(), frontend.clone())]),
                ..JobRequest::default()
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("build_args") && refused.contains("BUILDKIT_*"),
            "{name}: {refused}"
        );
    }
    assert!(
        listener.accept().is_err(),
        "the engine asked for the frontend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_managed_engine_is_stopped_with_its_processes_and_the_next_job_starts_one() {
    let registry = Registry::start(false);
    let repo = helix_fixtures::repo_running("echo step started; /bin/busybox sleep 1");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::with_managed_engine(common::real_config(&dir, &registry.address));
    let buildkit = config.builders.get_mut("buildkit").unwrap();
    buildkit.engine_idle_secs = Some(1);
    // The second job is the first again: built, not reused.
    config.reuse_builds = false;
    let service = start(&config).await;
    let request = common::on_repo(repo.path(), "buildkit");
    // This service's engines: their data roots are in its data dir.
    let marker = format!("--data-root={}/", dir.path().display());
    // The engine building a job, and the job's log.
    let engine_while_building = async |request: JobRequest| {
        let job = service.submit(request).await.unwrap();
        let building = "[helix] run: /usr/bin/docker build";
        common::until_logged(&service, &job.id, |l| l.starts_with(building)).await;
        let engines = processes_running(&marker);
        let job = common::finished(&service, &job.id).await;
        let logs = service.logs(job.id.as_str()).await.unwrap().texts();
        let logs = logs.join("\n");
        assert_eq!(job.state, State::Succeeded, "{:?}: {logs}", job.error);
        assert_eq!(engines.len(), 1, "one engine built it: {engines:?}");
        (engines[0].0, logs)
    };
    // The step's output, not the log of its command.
    let ran_the_step = |logs: &str| logs.lines().any(|l| l.ends_with(" step started"));
    let (first, logs) = engine_while_building(request.clone()).await;
    assert!(ran_the_step(&logs), "{logs}");
    let group = std::fs::read_to_string(format!("/proc/{first}/cgroup")).unwrap();
    let memory = group
        .lines()
        .find_map(|l| l.split_once(":memory:"))
        .map(|(_, path)| std::path::Path::new("/sys/fs/cgroup/memory").join(&path[1..]))
        .unwrap();
    assert!(memory.is_dir(), "{}", memory.display());

    // Idle for a second, it is stopped (checked every two), with every
    // process of its group and the group itself.
    let mut stopped = false;
    for _ in 0..300 {
        stopped = processes_running(&marker).is_empty() && !memory.exists();
        if stopped {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        stopped,
        "the idle engine still runs: {:?}",
        processes_running(&marker)
    );

    let (second, logs) = engine_while_building(request).await;
    assert_ne!(second, first, "a new engine for the next job");
    // Stopped cleanly, its layer cache is the new engine's.
    assert!(!ran_the_step(&logs), "{logs}");
    assert!(logs.contains("CACHED"), "{logs}");
}
