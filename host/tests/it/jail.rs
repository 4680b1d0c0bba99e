//! The jail every program of a job's build runs in, with real bubblewrap,
//! namespaces, podman, buildah and a real registry on loopback:
//!
//! - a program in a jail sees none of the host's files but its run's, no
//!   host process, no host service on loopback or any host address, and
//!   reaches the configured registry through the host's forwarder;
//! - `RUN --mount=type=cache` data lives in the run's quota (or its cache
//!   slot), never in the host's `/var/tmp`: a write past the quota fails
//!   naming the limit, and a `no_cache` job does not read what a cached
//!   job left;
//! - root in the jail, and in a `RUN` step, is a host user of the
//!   jail's range, which owns what the jail writes;
//! - a workspace shared with the jail (so the checkout can be mounted
//!   while the jail is made) passes the host's later mounts in and none
//!   of the jail's out;
//! - twenty cancels during `RUN` steps leave no uplink, CNI lease, NAT
//!   chain or control group of those runs.
//!
//! Needs root, bubblewrap, iptables, podman, buildah, runc,
//! busybox-static and docker-registry, as `.ci/run` has.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common;
use crate::common::LogText as _;
use helix_build::cancel::CancelSignal;
use helix_build::exec::{CommandOutput, HostCommand};
use helix_build::jail::{DROPPED_CAPABILITIES, IdRange, Jail, JailSpec};

use helix_build::job::{JobRequest, State};
use helix_build::log::JobLog;
use helix_build::network::BuildNetwork;
use helix_fixtures::{Registry, busybox_repo};

mod users;

/// A TCP service on every host address, counting the connections it
/// accepts, answering each with `HTTP/1.0 200` and a body.
fn host_service() -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 256];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nhost-service-secret\n");
        }
    });
    (port, accepted)
}

/// An address of this host that is not loopback (the one of its default
/// route), as a build on it would know it.
fn host_address() -> String {
    let route = helix_fixtures::run(Path::new("/"), "ip", &["-4", "route", "get", "1.1.1.1"]);
    let words: Vec<&str> = route.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "src")
        .expect("a source address");
    words[at + 1].to_string()
}

const PROBE: &str = r#"B=/bin/busybox
echo "pids: $($B ls /proc | $B grep -c '^[0-9]')"
for f in "$CANARY" /etc/shadow "$HOST_TMP"; do
  if $B test -e "$f"; then echo "seen: $f"; else echo "absent: $f"; fi
done
get() { printf 'GET /v2/ HTTP/1.0\r\n\r\n' | $B nc -w 3 "$1" "$2" 2>&1; }
echo "registry: $(get "${REGISTRY%:*}" "${REGISTRY##*:}" | $B head -n 1)"
for a in 127.0.0.1 "$HOST_ADDRESS" 169.254.169.254; do
  echo "service at $a: $(get "$a" "$SERVICE" | $B tr '\r\n' '  ')"
done
echo scratch > /tmp/written && echo "tmp: writable"
if $B awk '$5 == "/usr" { print $6 }' /proc/self/mountinfo | $B grep -q '^ro'; then echo "usr: read-only"; else echo "usr: writable"; fi
$B grep -E '^(CapBnd|CapEff|NoNewPrivs):' /proc/self/status
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_in_the_jail_sees_only_its_run_and_reaches_only_the_registries() {
    let registry = Registry::start(false);
    let (service_port, accepted) = host_service();
    let outside = tempfile::tempdir().unwrap();
    let canary = outside.path().join("canary");
    std::fs::write(&canary, "host-canary").unwrap();
    let host_tmp = tempfile::Builder::new()
        .prefix("helix-jail-probe")
        .tempdir_in("/var/tmp")
        .unwrap();
    let env = BTreeMap::from([
        ("CANARY".to_string(), canary.display().to_string()),
        (
            "HOST_TMP".to_string(),
            host_tmp.path().display().to_string(),
        ),
        ("REGISTRY".to_string(), registry.address.clone()),
        ("HOST_ADDRESS".to_string(), host_address()),
        ("SERVICE".to_string(), service_port.to_string()),
    ]);
    // The probe finds all of it on the host.
    let said = probe(None, outside.path(), &env).await;
    assert!(
        said.contains("seen: ") && said.contains("registry: HTTP/1.0 200 OK"),
        "{said}"
    );
    assert_eq!(said.matches("host-service-secret").count(), 2, "{said}");
    let reached_from_the_host = accepted.load(Ordering::SeqCst);
    for network in [BuildNetwork::None, BuildNetwork::Private] {
        let run = tempfile::tempdir().unwrap();
        let jail = Jail::create(JailSpec {
            writable: vec![run.path().to_path_buf()],
            written_later: Vec::new(),
            readable: Vec::new(),
            scratch: run.path().join("tmp"),
            cache_mounts: None,
            blob_info_cache: None,
            files: run.path().join("jail"),
            network,
            registries: vec![registry.address.clone()],
            cgroup: None,
            cgroup_namespace: false,
            users: Some(IdRange::DEFAULT),
        })
        .await
        .unwrap();
        let uplink = uplink_in(&jail.describe());
        assert_eq!(
            uplink.is_some(),
            network == BuildNetwork::Private,
            "{}",
            jail.describe()
        );
        let said = probe(Some(&jail), run.path(), &env).await;
        eprintln!("{network:?}:\n{said}");
        let pids: usize = said
            .lines()
            .find_map(|l| l.strip_prefix("pids: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap();
        assert!(pids < 10, "{network:?}: the jail sees {pids} processes");
        for absent in [
            canary.display().to_string(),
            "/etc/shadow".into(),
            host_tmp.path().display().to_string(),
        ] {
            assert!(
                said.contains(&format!("absent: {absent}")),
                "{network:?}: {said}"
            );
        }
        assert!(
            said.contains("registry: HTTP/1.0 200 OK"),
            "{network:?}: the registry answers through the forwarder: {said}"
        );
        for address in [
            "127.0.0.1".to_string(),
            host_address(),
            "169.254.169.254".into(),
        ] {
            assert!(
                said.contains(&format!("service at {address}: "))
                    && !said.contains("host-service-secret"),
                "{network:?}: {said}"
            );
        }
        assert!(said.contains("tmp: writable"), "{network:?}: {said}");
        assert!(
            run.path().join("tmp/written").exists(),
            "{network:?}: /tmp is the run's scratch"
        );
        assert!(said.contains("usr: read-only"), "{network:?}: {said}");
        for set in ["CapBnd", "CapEff"] {
            let caps = capabilities(&said, set);
            for (name, number) in DROPPED_CAPABILITIES {
                assert_eq!(caps & (1 << number), 0, "{network:?}: {name} in {set}");
            }
        }
        assert!(said.contains("NoNewPrivs:\t1"), "{network:?}: {said}");
        drop(jail);
        if let Some(uplink) = uplink {
            assert!(
                !interfaces().contains(&uplink),
                "{network:?}: uplink {uplink} left"
            );
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        reached_from_the_host,
        "the host service was contacted from a jail"
    );
}

/// The capability set `set` (`CapBnd`, ...) a `/proc/<pid>/status` in
/// `text` shows.
fn capabilities(text: &str, set: &str) -> u64 {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:")))
        .unwrap_or_else(|| panic!("no {set} in {text}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// What [`PROBE`] says, run in `jail` (or on the host) in `cwd`.
async fn probe(jail: Option<&Jail>, cwd: &Path, env: &BTreeMap<String, String>) -> String {
    sh(jail, cwd, env, PROBE).await.stdout
}

/// `script` run by busybox's shell in `jail` (or on the host), in `cwd`.
pub(crate) async fn sh(
    jail: Option<&Jail>,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    script: &str,
) -> CommandOutput {
    run_in(jail, cwd, env, "/bin/busybox", &["sh", "-c", script]).await
}

async fn run_in(
    jail: Option<&Jail>,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    program: &str,
    args: &[&str],
) -> CommandOutput {
    let log = JobLog::new(100);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    HostCommand {
        program,
        args: &args,
        env,
        cwd,
        timeout: Some(std::time::Duration::from_secs(120)),
        log: &log,
        cancel: &CancelSignal::new(),
        cgroup: None,
        jail,
    }
    .run()
    .await
    .unwrap()
}

/// A jail as a run's, in `run` (with the registry at `registry`), on
/// network `none`; its blob info cache in `blob_info_cache`.
pub(crate) async fn jail_in(run: &Path, registry: &str, blob_info_cache: Option<&Path>) -> Jail {
    Jail::create(JailSpec {
        writable: vec![run.to_path_buf()],
        written_later: Vec::new(),
        readable: Vec::new(),
        scratch: run.join("tmp"),
        cache_mounts: None,
        blob_info_cache: blob_info_cache.map(Path::to_path_buf),
        files: run.join("jail"),
        network: BuildNetwork::None,
        registries: vec![registry.to_string()],
        cgroup: None,
        cgroup_namespace: false,
        users: Some(IdRange::DEFAULT),
    })
    .await
    .unwrap()
}

/// The mount points listed in the host's mount table at or below `dir`.
fn host_mounts_below(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_string))
        .filter(|point| Path::new(point).starts_with(dir))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_workspace_passes_the_hosts_later_mounts_into_the_jail_and_none_of_the_jails_out()
{
    let registry = Registry::start(false);
    let run = tempfile::tempdir().unwrap();
    let run_dir = run.path().canonicalize().unwrap();
    let workspace = run_dir.join("workspace");
    std::fs::create_dir_all(workspace.join("from-host")).unwrap();
    helix_build::layer::share(&workspace).unwrap();
    let jail = jail_in(&run_dir, &registry.address, None).await;
    let env = BTreeMap::new();

    // What the host mounts in the workspace once the jail is made (as a
    // checkout's layer is) is there in the jail.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "helix-from-host"])
        .arg(workspace.join("from-host"))
        .status()
        .unwrap();
    assert!(mounted.success());
    std::fs::write(workspace.join("from-host/mark"), "host").unwrap();
    let seen = sh(
        Some(&jail),
        &workspace,
        &env,
        "/bin/busybox cat from-host/mark",
    )
    .await;
    assert_eq!(seen.stdout, "host", "{}", seen.stderr);

    // Root in the jail can mount there (a build tool does), but the mount
    // stays in the jail: the host never sees it, nor what is written on it.
    let in_jail = sh(
        Some(&jail),
        &workspace,
        &env,
        "/bin/busybox mkdir from-jail && \
         /bin/busybox mount -t tmpfs helix-from-jail from-jail && \
         echo jail > from-jail/mark && /bin/busybox cat from-jail/mark",
    )
    .await;
    assert_eq!(in_jail.stdout.trim(), "jail", "{}", in_jail.stderr);
    assert!(!workspace.join("from-jail/mark").exists());
    assert_eq!(
        host_mounts_below(&run_dir),
        [
            workspace.display().to_string(),
            workspace.join("from-host").display().to_string()
        ],
        "a mount made in the jail reached the host"
    );

    drop(jail);
    let unmounted = std::process::Command::new("umount")
        .arg(workspace.join("from-host"))
        .status()
        .unwrap();
    assert!(unmounted.success());
    helix_build::layer::unmount_below(&run_dir);
    assert_eq!(host_mounts_below(&run_dir), Vec::<String>::new());
}

/// Host processes whose command line holds `marker`.
fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains(marker))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_programs_of_a_run_share_its_jail_and_nothing_in_it_outlives_it() {
    let registry = Registry::start(false);
    let (one, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let jail = jail_in(one.path(), &registry.address, None).await;
    let env = BTreeMap::new();
    // A process that left its program's group (which is killed when the
    // program exits) lives on in the jail, until the jail ends.
    let marker = "6123457";
    let first = sh(
        Some(&jail),
        one.path(),
        &env,
        &format!(
            "echo kept > /run/mark; /bin/busybox setsid /bin/busybox sleep {marker} </dev/null >/dev/null 2>&1 &
             until /bin/busybox ps -o args | /bin/busybox grep -q '^/bin/busybox sleep {marker}'; do :; done"
        ),
    )
    .await;
    assert_eq!(first.exit_code, 0, "{}", first.stderr);
    let look =
        "/bin/busybox cat /run/mark; /bin/busybox ps -o args | /bin/busybox grep -c '[6]123457'";
    let second = sh(Some(&jail), one.path(), &env, look).await;
    assert_eq!(second.stdout.trim(), "kept\n1", "{}", second.stderr);
    assert_eq!(processes_with(marker), 1);
    let elsewhere = jail_in(other.path(), &registry.address, None).await;
    let third = sh(Some(&elsewhere), other.path(), &env, look).await;
    assert_eq!(third.stdout.trim(), "0", "another jail: {}", third.stderr);
    // A failing program fails as it would on the host.
    let failed = sh(Some(&jail), one.path(), &env, "exit 3").await;
    assert_eq!(failed.exit_code, 3);
    drop(jail);
    drop(elsewhere);
    assert_eq!(
        processes_with(marker),
        0,
        "a process of the jail outlived it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_from_a_later_jail_sends_only_the_layers_the_registry_lacks() {
    let registry = Registry::start(false);
    let run = tempfile::tempdir().unwrap();
    let context = run.path().join("context");
    std::fs::create_dir(&context).unwrap();
    std::fs::copy("/bin/busybox", context.join("busybox")).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\n",
    )
    .unwrap();
    let storage = run.path().join("storage");
    let blob_info_cache = storage.join("blob-info-cache");
    let (root, runroot) = (
        format!("--root={}", storage.join("graph").display()),
        format!("--runroot={}", storage.join("run").display()),
    );
    let env = BTreeMap::new();
    let podman = async |jail: &Jail, args: &[&str]| {
        let all: Vec<&str> = [root.as_str(), runroot.as_str(), "--storage-driver=vfs"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let output = run_in(Some(jail), run.path(), &env, "podman", &all).await;
        assert_eq!(output.exit_code, 0, "podman {args:?}: {}", output.stderr);
        output.stderr
    };
    // Its debug log says which layers it did not send.
    let push = |tag: &str| {
        [
            "--log-level=debug".to_string(),
            "push".into(),
            "--tls-verify=false".into(),
            "localhost/layered".into(),
            format!("docker://{}/jail/layered:{tag}", registry.address),
        ]
    };
    let first = jail_in(run.path(), &registry.address, Some(&blob_info_cache)).await;
    let context_arg = context.display().to_string();
    podman(
        &first,
        &[
            "build",
            "-q",
            "--isolation=chroot",
            "-t",
            "localhost/layered",
            &context_arg,
        ],
    )
    .await;
    let sent_again = |said: &str| !said.contains("(already present)");
    let said = podman(&first, &push("1").each_ref().map(String::as_str)).await;
    assert!(sent_again(&said), "{said}");
    drop(first);
    // The next run's jail knows what the registry holds for the layer.
    let later = jail_in(run.path(), &registry.address, Some(&blob_info_cache)).await;
    let said = podman(&later, &push("2").each_ref().map(String::as_str)).await;
    assert!(!sent_again(&said), "{said}");
    drop(later);
    // Without the cache the layer would be compressed and sent again.
    let forgetful = jail_in(run.path(), &registry.address, None).await;
    let said = podman(&forgetful, &push("3").each_ref().map(String::as_str)).await;
    assert!(sent_again(&said), "{said}");
}

/// The host's network interfaces now.
fn interfaces() -> Vec<String> {
    helix_fixtures::run(Path::new("/"), "ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect()
}

/// The uplink a jail's description (as logged) names.
fn uplink_in(text: &str) -> Option<String> {
    let at = text.find("through uplink ")? + "through uplink ".len();
    Some(text[at..].split_whitespace().next()?.to_string())
}

/// Entries of the host's `/var/tmp/buildah-cache` (the cache mounts'
/// home outside a jail).
fn host_cache_mounts() -> Vec<String> {
    std::fs::read_dir("/var/tmp/buildah-cache")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_mounts_stay_in_the_run_or_its_slot_and_a_write_past_the_quota_names_it() {
    let _alone = common::DISK_FILLERS.lock().await;
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    config.build_cache_mib = 512;
    for builder in ["podman", "buildah"] {
        config
            .builders
            .entry(builder.into())
            .or_default()
            .build_disk_mib = 128;
    }
    let service = common::start(&config.validated().unwrap()).await;
    let before = host_cache_mounts();
    let mark = "RUN --mount=type=cache,id=shared,target=/cache [\"/bin/busybox\", \"sh\", \"-c\", \"echo job-one > /cache/mark\"]\n";
    let look = "RUN --mount=type=cache,id=shared,target=/cache [\"/bin/busybox\", \"sh\", \"-c\", \"if /bin/busybox test -e /cache/mark; then echo cache-mark-seen; else echo cache-mark-absent; fi\"]\n";
    let fill = "RUN --mount=type=cache,id=shared,target=/cache [\"/bin/busybox\", \"dd\", \"if=/dev/zero\", \"of=/cache/filler\", \"bs=1M\", \"count=400\"]\n";
    let (marker, looker, filler) = (busybox_repo(mark), busybox_repo(look), busybox_repo(fill));
    for builder in ["podman", "buildah"] {
        let (job, _) = common::run_logged(&service, common::on_repo(marker.path(), builder)).await;
        assert_eq!(job.state, State::Succeeded, "{builder}");
        // A job of the same builder and repository slot reads its cache
        // mounts; a no_cache job has its own, empty.
        for (no_cache, expected) in [(true, "cache-mark-absent"), (false, "cache-mark-seen")] {
            let request = JobRequest {
                no_cache,
                ..common::on_repo(looker.path(), builder)
            };
            let (job, logs) = common::run_logged(&service, request).await;
            assert_eq!(job.state, State::Succeeded, "{builder}");
            assert!(
                logs.iter()
                    .any(|l| l.contains(expected) && !l.contains("echo")),
                "{builder} (no_cache {no_cache}): expected {expected}: {logs:?}"
            );
        }
        for (no_cache, limit) in [
            (
                true,
                format!("disk limit of 128 MiB (builders.{builder}.build_disk_mib)"),
            ),
            (
                false,
                "disk limit of 128 MiB (its layer cache slot".to_string(),
            ),
        ] {
            let request = JobRequest {
                no_cache,
                ..common::on_repo(filler.path(), builder)
            };
            let (job, logs) = common::run_logged(&service, request).await;
            let error = job.error.clone().unwrap_or_default();
            assert_eq!(job.state, State::Failed, "{builder}: {logs:?}");
            assert!(
                error.starts_with(&format!("limit exceeded: the build reached its {limit}")),
                "{builder} (no_cache {no_cache}): {error}"
            );
        }
    }
    assert_eq!(
        host_cache_mounts(),
        before,
        "the host's /var/tmp/buildah-cache changed"
    );
}

/// Names of the host's NAT chains made by CNI.
fn cni_chains() -> Vec<String> {
    helix_fixtures::run(Path::new("/"), "iptables", &["-w", "-t", "nat", "-S"])
        .lines()
        .filter(|l| l.starts_with("-N CNI-"))
        .map(String::from)
        .collect()
}

/// Leases of the private build network on the host.
fn host_leases() -> Vec<String> {
    std::fs::read_dir("/var/lib/cni/networks/helix-private")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The control group directories of runs of `jobs`, in every hierarchy
/// (`/sys/fs/cgroup/<hierarchy>/helix/<server>/<job id>.<attempt>`).
pub(crate) fn run_cgroups(jobs: &[helix_build::job::JobId]) -> Vec<String> {
    let dirs = |dir: std::path::PathBuf| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
    };
    dirs("/sys/fs/cgroup".into())
        .flat_map(|hierarchy| dirs(hierarchy.join("helix")))
        .flat_map(dirs)
        .filter(|run| {
            let name = run.file_name().unwrap_or_default().to_string_lossy();
            jobs.iter().any(|id| name.starts_with(&format!("{id}.")))
        })
        .map(|run| run.display().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_cancels_during_run_steps_leave_no_lease_rule_uplink_or_cgroup() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let config = common::real_config(&dir, &registry.address);
    let service = common::start(&config).await;
    let (chains, leases) = (cni_chains(), host_leases());
    let repo = busybox_repo(
        "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo step-running; /bin/busybox sleep 60\"]\n",
    );
    let mut ids = Vec::new();
    for round in 0..5 {
        let mut running = Vec::new();
        for n in 0..4 {
            let builder = ["podman", "buildah"][(round + n) % 2];
            let job = service
                .submit(common::on_repo(repo.path(), builder))
                .await
                .unwrap();
            running.push(job.id);
        }
        for id in &running {
            common::until_logged(&service, id, |l| {
                l.contains("step-running") && !l.contains("echo")
            })
            .await;
        }
        for id in running {
            let cancelled = service.cancel(id.as_str()).await.unwrap();
            assert_eq!(cancelled.state, State::Cancelled);
            ids.push(id);
        }
    }
    assert_eq!(ids.len(), 20);
    let mut uplinks = Vec::new();
    for id in &ids {
        let logs = service.logs(id.as_str()).await.unwrap().texts();
        uplinks.extend(logs.iter().find_map(|l| uplink_in(l)));
    }
    assert_eq!(uplinks.len(), 20, "every run had an uplink");
    // Everything goes with the runs: wait for the last to be cleaned up.
    let left = || {
        let interfaces = interfaces();
        let uplinks: Vec<String> = uplinks
            .iter()
            .filter(|u| interfaces.contains(u))
            .cloned()
            .collect();
        (uplinks, run_cgroups(&ids))
    };
    let mut now = left();
    for _ in 0..300 {
        if now.0.is_empty() && now.1.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        now = left();
    }
    assert_eq!(now.0, Vec::<String>::new(), "uplinks left");
    assert_eq!(now.1, Vec::<String>::new(), "control groups left");
    assert_eq!(cni_chains(), chains, "CNI NAT chains left on the host");
    assert_eq!(host_leases(), leases, "CNI leases left on the host");
}
