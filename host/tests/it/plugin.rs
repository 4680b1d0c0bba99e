//! Loading components: the on-disk compile cache, refusing files that are
//! not builders, and what a job instance is given.

use crate::common;

use std::time::Instant;

use crate::common::{TESTING_PLUGINS, config, finished, own_cache, simulated, start};
use helix_build::app;
use helix_build::config::BuilderConfig;
use helix_build::job::State;
use helix_build::plugin::CacheUse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_start_loads_compiled_components_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = own_cache(config(&dir, 1, 10));

    let cold = Instant::now();
    let first = start(&config).await;
    let cold = cold.elapsed();
    let reports = first.runtime().load_reports().to_vec();
    // The testing plugins, simulated, podman and buildah; buildkit is not
    // loaded without an engine.
    assert_eq!(reports.len(), TESTING_PLUGINS.len() + 3);
    assert!(
        reports.iter().all(|r| r.cache == CacheUse::Compiled),
        "{reports:?}"
    );
    first.stop(std::time::Duration::ZERO).await;

    let warm = Instant::now();
    let second = start(&config).await;
    let warm = warm.elapsed();
    let reports = second.runtime().load_reports().to_vec();
    assert!(
        reports.iter().all(|r| r.cache == CacheUse::Loaded),
        "{reports:?}"
    );
    // Reported for the record, not asserted: speed belongs in benchmarks.
    eprintln!("start with compiling: {cold:?}; start from cache: {warm:?}");

    let job = second.submit(simulated(0)).await.unwrap();
    assert_eq!(finished(&second, &job.id).await.state, State::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = own_cache(config(&dir, 1, 10));
    start(&config).await.stop(std::time::Duration::ZERO).await;
    for entry in std::fs::read_dir(config.cache_dir()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not a compiled component").unwrap();
    }
    let service = start(&config).await;
    let reports = service.runtime().load_reports().to_vec();
    assert!(
        reports.iter().all(|r| r.cache == CacheUse::Compiled),
        "{reports:?}"
    );
    let job = service.submit(simulated(0)).await.unwrap();
    assert_eq!(finished(&service, &job.id).await.state, State::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_are_not_builders_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 2] = [
        (
            "garbage",
            b"hello, I am not wasm",
            "not a valid WebAssembly component",
        ),
        (
            "core-module",
            b"\0asm\x01\0\0\0",
            "not a valid WebAssembly component",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).unwrap();
        let mut config = config(&dir, 1, 10);
        config.builders.insert(
            name.to_string(),
            BuilderConfig {
                component: Some(path.clone()),
                ..BuilderConfig::default()
            },
        );
        let err = match app::start(&config).await {
            Ok(_) => panic!("{name} was accepted as a builder"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&format!("builder '{name}'")), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(expected), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builders_report_their_info_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config(&dir, 1, 10)).await;
    let infos: Vec<_> = service
        .runtime()
        .builders()
        .map(|b| b.info().clone())
        .collect();
    let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "buildah",
            "empty-tag",
            "escape",
            "exec",
            "hog",
            "panic",
            "podman",
            "shell",
            "simulated",
            "spin",
            "ungranted"
        ]
    );
    let info = |name: &str| infos.iter().find(|i| i.name == name).unwrap();
    let panic = info("panic");
    assert_eq!(panic.plugin_name, "testing-panic");
    assert!(
        panic.origin.ends_with("helix_plugin_panic.wasm"),
        "{}",
        panic.origin
    );
    assert_eq!(panic.limits.memory_bytes, 64 << 20);
    let simulated = info("simulated");
    assert_eq!(simulated.origin, "built-in");
    assert!(
        simulated.component_digest.starts_with("sha256:") && simulated.component_digest.len() == 71
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_workspaces_are_removed_when_jobs_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir, 2, 10);
    let service = start(&config).await;
    let ok = service.submit(simulated(0)).await.unwrap();
    let crashed = service.submit(common::on_builder("panic")).await.unwrap();
    finished(&service, &ok.id).await;
    finished(&service, &crashed.id).await;
    let left: Vec<_> = std::fs::read_dir(config.workspace_dir()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A real component whose `helix:build` interface versions are rewritten
/// from this host's 0.x.y to 9.x.y (same length, so the binary stays well
/// formed): a stand-in for a plugin built against a future, incompatible
/// contract.
fn future_version_component(dir: &std::path::Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(common::testing_plugin("panic")).unwrap();
    let to = format!("@{}", helix_build::plugin::WIT_VERSION);
    let (from, to) = (b"helix:build/".as_slice(), to.as_bytes());
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(from.len()).position(|w| w == from) {
        let start = i + at;
        let end = start + bytes[start..].iter().position(|b| *b == b'@').unwrap();
        if bytes[end..].starts_with(to) {
            bytes[end + 1] = b'9';
        }
        i = end;
    }
    let path = dir.join("future.wasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_the_previous_contract_still_builds_and_says_what_it_cannot_take() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir, 2, 10);
    config.builders.insert(
        "old".into(),
        BuilderConfig {
            component: Some(common::testing_plugin("contract_0_2")),
            grants: Some(helix_build::exec::Grants {
                programs: vec![common::program("echo", &["from", "0.2.0"])],
                pass_env: vec!["PATH".into()],
                ..Default::default()
            }),
            timeout_secs: 10,
            memory_mib: 64,
            ..BuilderConfig::default()
        },
    );
    let service = start(&config.validated().unwrap()).await;
    let old = service.runtime().builder("old").unwrap();
    assert_eq!(old.info().contract, "helix:build@0.2.0");
    let current = service.runtime().builder("simulated").unwrap();
    assert_eq!(
        current.info().contract,
        format!("helix:build@{}", helix_build::plugin::WIT_VERSION)
    );

    let request = |target: Option<&str>| helix_build::job::JobRequest {
        builder: Some("old".into()),
        target: target.map(String::from),
        ..simulated(0)
    };
    let (job, logs) = common::run_logged(&service, request(None)).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    assert!(
        logs.iter().any(|l| l == "[v0.2] echo said: from 0.2.0"),
        "its imports are this host's, adapted: {logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.starts_with(&format!("[v0.2] job {}", job.id)))
    );

    let job = finished(
        &service,
        &service.submit(request(Some("tested"))).await.unwrap().id,
    )
    .await;
    assert_eq!(job.state, State::Failed);
    let error = job.error.unwrap();
    assert!(
        error.contains("built against helix:build@0.2.0, which cannot pass a target"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_for_an_incompatible_contract_version_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = future_version_component(dir.path());
    let mut config = config(&dir, 1, 10);
    config.builders.insert(
        "future".into(),
        BuilderConfig {
            component: Some(path.clone()),
            ..BuilderConfig::default()
        },
    );
    let err = match app::start(&config).await {
        Ok(_) => panic!("an incompatible component was loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("builder 'future'"), "{err}");
    let host = helix_build::plugin::WIT_VERSION;
    let future = format!("helix:build@9{}", &host[1..]);
    assert!(err.contains(&format!("built against {future}")), "{err}");
    assert!(
        err.contains(&format!(
            "this host runs helix:build@{host} and @0.2.0 only"
        )),
        "{err}"
    );

    let err = helix_build::plugin::inspect(&path)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&future), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_describes_a_builder_and_its_imports() {
    let inspection = helix_build::plugin::inspect(&common::testing_plugin("exec"))
        .await
        .unwrap();
    assert_eq!(inspection.info.plugin_name, "testing-exec");
    assert!(inspection.imports.contains(&format!(
        "helix:build/command-runner@{}",
        helix_build::plugin::WIT_VERSION
    )));
    let escape = helix_build::plugin::inspect(&common::testing_plugin("escape"))
        .await
        .unwrap();
    assert!(
        escape
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:sockets/")),
        "{:?}",
        escape.imports
    );
}
