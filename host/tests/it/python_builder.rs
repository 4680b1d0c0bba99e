//! A builder written in Python (`plugins/examples/python-user-policy`),
//! built here from source with componentize-py (as `.ci/setup` installs
//! it), loaded by the service like any component, and running real podman
//! builds under the built-in podman builder's grants.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use helix_build::config::BuilderConfig;
use helix_build::job::{JobRequest, State};
use helix_build::network::BuildNetwork;
use helix_build::plugin::{CacheUse, ComponentCache, PluginRuntime, PoolSizing};
use helix_fixtures::{Registry, git};

/// Builds the Python builder into the test target dir; its path.
fn build_component() -> PathBuf {
    let source =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples/python-user-policy");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python_user_policy.wasm");
    let started = Instant::now();
    let output = Command::new("componentize-py")
        .args([
            "-d",
            "../../../wit/current",
            "-w",
            "builder",
            "componentize",
            "app",
            "-o",
        ])
        .arg(&out)
        .current_dir(&source)
        .output()
        .expect("componentize-py is installed (.ci/setup installs it from PyPI)");
    assert!(output.status.success(), "componentize-py: {output:?}");
    println!(
        "python builder: {} bytes, built by componentize-py in {} ms",
        std::fs::metadata(&out).unwrap().len(),
        started.elapsed().as_millis()
    );
    out
}

/// A repository whose Dockerfile ends with `last`.
fn repo(last: &str) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", repo.path().join("busybox")).unwrap();
    std::fs::write(
        repo.path().join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"true\"]\n{last}\n"
        ),
    )
    .unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-qm", "app"]);
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_builder_refuses_root_images_and_builds_the_others_with_podman() {
    let component = build_component();
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    config.builders.insert(
        "python".into(),
        BuilderConfig {
            component: Some(component),
            grants: Some(helix_build::builtin::default_grants(
                "podman",
                BuildNetwork::Private,
                helix_build::docker_engine::DEFAULT_ENGINE_CLIENT,
            )),
            memory_mib: 256,
            timeout_secs: 600,
            ..BuilderConfig::default()
        },
    );
    let config = config.validated().unwrap();
    let service = common::start(&config).await;
    let first = service
        .runtime()
        .load_reports()
        .iter()
        .find(|r| r.builder == "python")
        .cloned()
        .unwrap();
    println!(
        "python builder, first load: {:?} in {:?}",
        first.cache, first.elapsed
    );
    // A second host (or a restart) loads it from the compile cache.
    let sources: Vec<_> = config
        .builder_sources()
        .unwrap()
        .into_iter()
        .filter(|s| s.name == "python")
        .collect();
    let sizing = PoolSizing {
        instances: 1,
        max_memory_bytes: 256 << 20,
    };
    let again = PluginRuntime::load(sources, &ComponentCache::new(config.cache_dir()), sizing)
        .await
        .unwrap();
    let cached = &again.load_reports()[0];
    assert_eq!(cached.cache, CacheUse::Loaded, "from the compile cache");
    println!(
        "python builder, load from the compile cache: {:?}",
        cached.elapsed
    );

    let user = repo("USER 1000");
    let request = |repo: &tempfile::TempDir| JobRequest {
        repo_url: format!("file://{}", repo.path().display()),
        builder: Some("python".into()),
        ..JobRequest::default()
    };
    let (job, logs) = common::run_logged(&service, request(&user)).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    assert!(
        logs.iter().any(|l| l.starts_with("[python] building")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|l| l.starts_with("[helix] verified:")),
        "{logs:?}"
    );
    let audit = service.audit(job.id.as_str()).await.unwrap();
    assert_eq!(audit.entries.len(), 1, "one podman build: {audit:?}");
    assert!(audit.entries[0].allowed);

    let (instances, seconds) = service
        .runtime()
        .builder("python")
        .unwrap()
        .instantiations()
        .read();
    println!(
        "python builder: {instances} fresh instance(s), {:.1} ms each",
        seconds * 1e3 / instances.max(1) as f64
    );

    let root = repo("USER root");
    let (job, _) = common::run_logged(&service, request(&root)).await;
    assert_eq!(job.state, State::Failed);
    let error = job.error.unwrap();
    assert!(
        error.starts_with("invalid job: Dockerfile would run as root"),
        "{error}"
    );
}
