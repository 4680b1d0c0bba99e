//! Untrusted parties against the host, with real components, real podman
//! and runc, real git and a real registry on loopback:
//!
//! - a user's Dockerfile whose `RUN` step tries to see host processes,
//!   reach services on the host (its loopback and the build network's
//!   gateway address), read a file on the host, and break out of a
//!   `chroot(2)` — every attempt fails and the build itself succeeds;
//! - a third-party builder granted exactly what the built-in podman
//!   builder is granted, trying one way out per job — each call is refused
//!   with a `denied` naming the rule, while a normal build beside them
//!   succeeds.
//!
//! The same probes run under the `buildkit` builder, in a Docker Engine
//! the test starts and in one the host manages (their steps get no
//! network at all).
//!
//! Needs root, podman, runc, iptables, skopeo, git, docker-registry,
//! busybox-static, docker.io and rustc (for the breakout helper), as
//! `.ci/run` has.

use crate::common;
use crate::common::LogText as _;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{finished, start};
use helix_build::config::BuilderConfig;
use helix_build::job::{JobRequest, State};
use helix_build::network::BuildNetwork;
use helix_build::secrets::SecretSource;
use helix_fixtures::{Registry, Repo, git};

/// The private build network's gateway: the host as a build step sees it.
const GATEWAY: &str = "10.213.77.1";

/// Escapes a `chroot(2)` the classic way (chroot into a subdirectory while
/// the working directory stays outside it, climb, chroot again), then
/// tries to read the canary file and counts the processes it can see.
const BREAKOUT: &str = r#"
fn main() {
    let canary = std::env::args().nth(1).unwrap();
    let _ = std::fs::create_dir("/breakout-jail");
    if let Err(e) = std::os::unix::fs::chroot("/breakout-jail") {
        println!("breakout: chroot refused: {e}");
        return;
    }
    for _ in 0..64 {
        let _ = std::env::set_current_dir("..");
    }
    if let Err(e) = std::os::unix::fs::chroot(".") {
        println!("breakout: second chroot refused: {e}");
        return;
    }
    match std::fs::read_to_string(&canary) {
        Ok(text) => println!("breakout: read the canary: {text}"),
        Err(e) => println!("breakout: no canary after the escape: {e}"),
    }
}
"#;

const PROBE: &str = "B=/bin/busybox; \
echo \"probe pids: $($B ls /proc | $B grep -c '^[0-9]')\"; \
for a in 127.0.0.1 $GATEWAY; do \
  if echo x | $B nc -w 2 $a $HOST_PORT; then echo \"probe reached $a\"; else echo \"probe blocked $a\"; fi; \
done; \
if $B cat $CANARY; then echo 'probe canary read'; else echo 'probe canary absent'; fi; \
/bin/breakout $CANARY";

/// A repository whose Dockerfile runs the probe, with a static breakout
/// helper compiled here.
fn probe_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::write(path.join("breakout.rs"), BREAKOUT).unwrap();
    let status = std::process::Command::new("rustc")
        .args([
            "--edition",
            "2021",
            "-O",
            "-C",
            "target-feature=+crt-static",
        ])
        .arg(path.join("breakout.rs"))
        .arg("-o")
        .arg(path.join("breakout"))
        .status()
        .expect("rustc is installed");
    assert!(status.success(), "compiling the breakout helper");
    std::fs::remove_file(path.join("breakout.rs")).unwrap();
    std::fs::copy("/bin/busybox", path.join("busybox")).expect("busybox-static is installed");
    let script = serde_json::to_string(PROBE).unwrap();
    std::fs::write(
        path.join("Dockerfile"),
        format!(
            "FROM scratch\nARG HOST_PORT\nARG CANARY\nARG GATEWAY\n\
             COPY busybox /bin/busybox\nCOPY breakout /bin/breakout\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", {script}]\n"
        ),
    )
    .unwrap();
    git(path, &["init", "-q", "-b", "main"]);
    git(path, &["add", "-A"]);
    git(path, &["commit", "-qm", "probe"]);
    dir
}

/// A TCP listener on every host address, counting the connections it
/// accepts: the stand-in for the API, PostgreSQL, or any host service.
fn host_service() -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 16];
            let _ = (&stream).read(&mut buf);
        }
    });
    (port, accepted)
}

fn host_processes() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_step_cannot_see_reach_or_escape_to_the_host() {
    let registry = Registry::start(false);
    let repo = probe_repo();
    let dir = tempfile::tempdir().unwrap();
    let engine = helix_fixtures::Dockerd::start();
    let config = common::with_engine(common::real_config(&dir, &registry.address), &engine);
    let service = start(&config).await;
    let managed_dir = tempfile::tempdir().unwrap();
    let managed = common::with_managed_engine(common::real_config(&managed_dir, &registry.address));
    let managed = start(&managed).await;
    let (port, accepted) = host_service();
    let canary_dir = tempfile::tempdir().unwrap();
    let canary = canary_dir.path().join("canary");
    let secret = format!("canary-{}", uuid_like());
    std::fs::write(&canary, &secret).unwrap();

    // buildkit in the test's engine and in one the host manages.
    for (service, builder) in [
        (&service, "podman"),
        (&service, "buildah"),
        (&service, "buildkit"),
        (&managed, "buildkit"),
    ] {
        let request = JobRequest {
            repo_url: format!("file://{}", repo.path().display()),
            builder: Some(builder.into()),
            build_args: BTreeMap::from([
                ("HOST_PORT".to_string(), port.to_string()),
                ("CANARY".to_string(), canary.display().to_string()),
                ("GATEWAY".to_string(), GATEWAY.to_string()),
            ]),
            ..JobRequest::default()
        };
        let (job, logs) = common::run_logged(service, request).await;
        assert_eq!(job.state, State::Succeeded, "{builder}: {:?}", job.error);
        let said = |text: &str| logs.iter().any(|l| l.contains(text));

        let pids: usize = logs
            .iter()
            .find_map(|l| l.split("probe pids: ").nth(1)?.trim().parse().ok())
            .expect("the probe counted processes");
        assert!(
            pids < 10 && pids < host_processes(),
            "{builder}: a RUN step sees {pids} processes"
        );
        for address in ["127.0.0.1", GATEWAY] {
            assert!(
                said(&format!("probe blocked {address}")),
                "{builder}: {address}"
            );
            assert!(
                !said(&format!("probe reached {address}")),
                "{builder}: {address}"
            );
        }
        assert!(said("probe canary absent"), "{builder}");
        assert!(said("breakout: no canary after the escape"), "{builder}");
        assert!(
            !logs.iter().any(|l| l.contains(&secret)),
            "{builder}: canary read"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a RUN step connected to a service on the host"
    );
}

/// A unique enough suffix without another dependency.
fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_with_the_podman_grants_is_refused_every_way_out() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    config.builders.insert(
        "attack".into(),
        BuilderConfig {
            component: Some(common::testing_plugin("attack")),
            grants: Some(helix_build::builtin::default_grants(
                "podman",
                BuildNetwork::Private,
                helix_build::docker_engine::DEFAULT_ENGINE_CLIENT,
            )),
            registry_cache: Some(format!("{}/helix-cache/attack", registry.address)),
            ..BuilderConfig::default()
        },
    );
    // Defined by the operator, named by no job here.
    let key = dir.path().join("deploy-key");
    std::fs::write(&key, "deploy-key-value").unwrap();
    config.secrets.insert(
        "deploy_key".into(),
        SecretSource {
            env: None,
            file: Some(key),
        },
    );
    let config = config.validated().unwrap();
    let service = start(&config).await;
    let pwned = dir.path().join("pwned-by-git-hooks");

    let cases: &[(&str, &str)] = &[
        ("host-context", "\"/etc\" is not the job's build context"),
        ("volume", "option --volume is not granted"),
        ("build-context", "option --build-context is not granted"),
        (
            "name-another-image",
            "option --tag is pinned by the grant and may not be given again",
        ),
        (
            "secret-src",
            "option --secret: \"id=s,src=/etc/shadow\" must be id=NAME",
        ),
        (
            "cache-elsewhere",
            "\"127.0.0.1:5000/team/app\" is not the job's registry cache",
        ),
        (
            "secret-not-the-jobs",
            "secret 'deploy_key' is not one of the job's secrets",
        ),
        ("capabilities", "option --cap-add is not granted"),
        ("duplicate-isolation", "option --isolation is pinned"),
        ("storage-root", "option --root is not granted"),
        ("runtime", "option --runtime is pinned"),
        ("network-host", "option --network is pinned"),
        ("write-iidfile", "option --iidfile is not granted"),
        // No export is granted: the host pushes from the job's storage.
        ("write-push", "expected \"build\", got \"push\""),
        (
            "dockerfile-outside",
            "\"/etc/shadow\" is not the job's Dockerfile",
        ),
        (
            "dockerfile-url",
            "\"http://127.0.0.1:1/Dockerfile\" is not the job's Dockerfile",
        ),
        (
            "dockerfile-other",
            "\"src/failing/Dockerfile\" is not the job's Dockerfile",
        ),
        ("dockerfile-again", "option -f is pinned"),
        (
            "dockerfile-omitted",
            "the grant requires \"-f\" before --tag",
        ),
        (
            "context-url",
            "\"http://127.0.0.1:1/context.tar\" is not the job's build context",
        ),
        (
            "context-git",
            "\"git://127.0.0.1:1/repo.git\" is not the job's build context",
        ),
        (
            "build-arg-from-env",
            "build arg \"REGISTRY_AUTH_FILE\" has no value",
        ),
        (
            "build-arg-frontend",
            "BUILDKIT_* names are BuildKit's own options",
        ),
        (
            "build-arg-not-the-jobs",
            "build arg http_proxy: proxy build args",
        ),
        (
            "build-arg-changed",
            "build arg \"ATTACK\" is not one of the job's build args",
        ),
        ("authfile", "option --authfile is not granted"),
        (
            "credentials-env",
            "environment variable REGISTRY_AUTH_FILE is not granted",
        ),
        ("clone-local", "program `git` is not granted"),
        ("exfiltrate-inspect", "program `skopeo` is not granted"),
        ("exfiltrate-push", "expected \"build\", got \"push\""),
        ("export-over-checkout", "expected \"build\", got \"push\""),
        (
            "storage-env",
            "environment variable CONTAINERS_STORAGE_CONF is not granted",
        ),
    ];
    let mut submitted = Vec::new();
    for (case, _) in cases {
        let request = JobRequest {
            repo_url: format!("file://{}", repo.dir.path().display()),
            builder: Some("attack".into()),
            build_args: BTreeMap::from([("ATTACK".to_string(), case.to_string())]),
            ..JobRequest::default()
        };
        submitted.push(service.submit(request).await.unwrap().id);
    }
    let normal = JobRequest {
        repo_url: format!("file://{}", repo.dir.path().display()),
        builder: Some("podman".into()),
        ..JobRequest::default()
    };
    let (normal, _) = common::run_logged(&service, normal).await;
    assert_eq!(normal.state, State::Succeeded, "{:?}", normal.error);

    for ((case, rule), id) in cases.iter().zip(&submitted) {
        let job = finished(&service, id).await;
        let error = job.error.clone().unwrap_or_default();
        assert_eq!(job.state, State::Failed, "{case}: {error}");
        assert!(
            error.starts_with("denied: builder 'attack': ") && error.contains(rule),
            "{case}: expected a denial naming {rule:?}, got {error:?}"
        );
        let logs = service.logs(id.as_str()).await.unwrap().texts();
        assert!(
            logs.iter().any(|l| l.starts_with("[helix] denied: ")),
            "{case}: the denial is logged"
        );
    }

    // The workspace is read-only to the builder's own code (so it can
    // plant no link for podman to follow, and no git config — the host
    // never runs git on it again anyway), and a layout outside the
    // workspace is the plugin's fault.
    for (case, error) in [
        ("write-workspace", "denied: the workspace is read-only"),
        (
            "git-hooks",
            "plugin fault: builder 'attack': writing /workspace/src/.git/config",
        ),
        (
            "layout-outside",
            "plugin fault: builder 'attack' named its image \"../../..\"",
        ),
    ] {
        let request = JobRequest {
            repo_url: format!("file://{}", repo.dir.path().display()),
            builder: Some("attack".into()),
            build_args: BTreeMap::from([
                ("ATTACK".to_string(), case.to_string()),
                ("PWNED".to_string(), pwned.display().to_string()),
            ]),
            ..JobRequest::default()
        };
        let (job, _) = common::run_logged(&service, request).await;
        assert_eq!(job.state, State::Failed, "{case}");
        let message = job.error.unwrap();
        assert!(message.starts_with(error), "{case}: {message}");
    }
    assert!(!Path::new(&pwned).exists(), "a git hook ran");
}

/// A repository with busybox, a link `hostroot` to the host's `/` and
/// `dockerfile`.
fn rule_repo(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap();
    std::os::unix::fs::symlink("/", dir.path().join("hostroot")).unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "rules"]);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerfiles_that_break_a_host_rule_are_refused_before_any_build() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let engine = helix_fixtures::Dockerd::start();
    let config = common::with_engine(common::real_config(&dir, &registry.address), &engine);
    let service = start(&config).await;
    let (port, contacted) = host_service();
    let url = format!("http://127.0.0.1:{port}/loot");
    let base = "FROM scratch\nCOPY busybox /bin/busybox\n";
    let cases: Vec<(String, &str, usize)> = vec![
        // CVE-2024-1753: a link of the checkout, resolved on the host.
        (
            format!(
                "{base}RUN --mount=type=bind,source=hostroot/etc,target=/h /bin/busybox ls /h\n"
            ),
            "bind-mount",
            3,
        ),
        (
            format!("{base}RUN --mount=type=bind,source=../../..,target=/h /bin/busybox true\n"),
            "bind-mount",
            3,
        ),
        // An image's files cannot be checked for such links.
        (
            format!(
                "{base}RUN --mount=type=bind,from={}/any/image:1,source=/,target=/h true\n",
                registry.address
            ),
            "bind-mount",
            3,
        ),
        (
            format!(
                "FROM scratch AS stage\n{base}RUN --mount=from=stage,source=/../..,target=/h true\n"
            ),
            "bind-mount",
            4,
        ),
        // CVE-2024-9675: a cache id climbing out of buildah's cache dir.
        (
            format!(
                "{base}RUN \\\n  --mount=type=cache,id=../../../../tmp/x,target=/c \\\n  /bin/busybox true\n"
            ),
            "cache-mount",
            3,
        ),
        (
            format!("{base}ARG ID=../../x\nRUN --mount=type=cache,id=$ID,target=/c true\n"),
            "mount-variable",
            4,
        ),
        // Fetched by the tool on the host's network.
        (format!("{base}ADD {url} /loot\n"), "remote-source", 3),
        (
            format!("{base}ADD --chmod=644 \\\n    {url} /loot\n"),
            "remote-source",
            3,
        ),
        (format!("{base}COPY {url} /loot\n"), "remote-source", 3),
        // podman and buildah 1.28 read a heredoc's lines as instructions.
        (
            format!("{base}RUN <<EOF\nADD {url} /loot\nEOF\n"),
            "remote-source",
            4,
        ),
        // A step choosing the host's network, or a privileged one.
        (
            format!("{base}RUN --network=host /bin/busybox wget -q {url}\n"),
            "run-options",
            3,
        ),
        (
            format!("{base}RUN --security=insecure /bin/busybox true\n"),
            "run-options",
            3,
        ),
        ("FORM scratch\n".to_string(), "parse", 1),
        (
            format!("{base}RUN --mount=type=host,target=/h true\n"),
            "parse",
            3,
        ),
    ];
    let repos: Vec<_> = cases.iter().map(|(text, _, _)| rule_repo(text)).collect();
    for builder in ["podman", "buildah", "buildkit"] {
        for ((text, rule, line), repo) in cases.iter().zip(&repos) {
            let request = JobRequest {
                repo_url: format!("file://{}", repo.path().display()),
                builder: Some(builder.into()),
                ..JobRequest::default()
            };
            let (job, logs) = common::run_logged(&service, request).await;
            let error = job.error.clone().unwrap_or_default();
            assert_eq!(job.state, State::Failed, "{builder} {text:?}");
            assert!(
                error.starts_with(&format!("invalid job: Dockerfile line {line}: "))
                    && (*rule == "parse") != error.contains(&format!("(rule `{rule}`)")),
                "{builder} {text:?}: expected rule {rule} at line {line}, got {error:?}"
            );
            assert!(
                !logs
                    .iter()
                    .any(|l| l.contains("STEP ") || l.contains("#1 ")),
                "{builder} {text:?}: a build started"
            );
        }
    }
    assert_eq!(
        contacted.load(Ordering::SeqCst),
        0,
        "the host service was contacted"
    );

    // The same features, used within the rules, build.
    let honest = rule_repo(
        "FROM scratch AS tools\nCOPY busybox /bin/busybox\n\
         FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN --mount=type=cache,id=pip-cache,target=/cache \\\n    \
         --mount=type=bind,source=.,target=/ctx \\\n    \
         --mount=type=bind,from=tools,source=/bin,target=/tools \\\n    \
         [\"/bin/busybox\", \"test\", \"-f\", \"/ctx/Dockerfile\"]\n",
    );
    for builder in ["podman", "buildah"] {
        let request = JobRequest {
            repo_url: format!("file://{}", honest.path().display()),
            builder: Some(builder.into()),
            ..JobRequest::default()
        };
        let (job, _) = common::run_logged(&service, request).await;
        assert_eq!(job.state, State::Succeeded, "{builder}: {:?}", job.error);
    }
}
