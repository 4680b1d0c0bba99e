//! Root in a jail, in a `RUN` step and in a managed Docker Engine is a
//! host user of the jail's range (`jail_uid_range`), which owns what the
//! jail writes: seen from the host, with real bubblewrap, podman, buildah
//! and dockerd.

use std::collections::BTreeMap;

use super::{jail_in, run_cgroups, sh};
use crate::common;
use helix_build::jail::IdRange;
use helix_build::job::{JobRequest, State};
use helix_fixtures::{Registry, busybox_repo};

/// The host users (real uids) of the host processes whose command line
/// holds `marker`.
fn users_of(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains(marker))
        })
        .filter_map(|entry| {
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let ids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            ids.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_in_the_jail_is_the_first_host_user_of_its_range_and_owns_what_it_writes() {
    let registry = Registry::start(false);
    let run = tempfile::tempdir().unwrap();
    let jail = jail_in(run.path(), &registry.address, None).await;
    let marker = "7123458";
    let env = BTreeMap::new();
    let script =
        format!("/bin/busybox id -u; echo mine > written; /bin/busybox sleep 2; : {marker}");
    let program = sh(Some(&jail), run.path(), &env, &script);
    // The program, seen from the host while it runs.
    let seen = async {
        loop {
            let users = users_of(marker);
            if !users.is_empty() {
                return users;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let (said, users) = tokio::join!(program, seen);
    assert_eq!(said.stdout.trim(), "0", "{}", said.stderr);
    assert!(
        users.iter().all(|u| *u == IdRange::DEFAULT.first),
        "{users:?}"
    );
    use std::os::unix::fs::MetadataExt as _;
    let written = std::fs::metadata(run.path().join("written")).unwrap();
    assert_eq!(
        (written.uid(), written.gid()),
        (IdRange::DEFAULT.first, IdRange::DEFAULT.first)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_step_is_root_in_its_build_and_an_unprivileged_host_user_on_the_host() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let config = common::with_managed_engine(common::real_config(&dir, &registry.address));
    let service = common::start(&config).await;
    let marker = "7123459";
    let repo = busybox_repo(&format!(
        "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo step-uid-$(/bin/busybox id -u); /bin/busybox sleep 2; : {marker}\"]\n"
    ));
    for (builder, no_cache) in [("podman", false), ("buildah", true), ("buildkit", false)] {
        let request = JobRequest {
            no_cache,
            ..common::on_repo(repo.path(), builder)
        };
        let job = service.submit(request).await.unwrap();
        common::until_logged(&service, &job.id, |l| l.contains("step-uid-0")).await;
        let step = users_of(marker);
        assert!(!step.is_empty(), "{builder}: the step runs");
        for uid in step {
            let range = IdRange::DEFAULT;
            assert!(
                (range.first..range.first + range.count).contains(&uid),
                "{builder}: the step runs as host user {uid}"
            );
        }
        if builder == "buildkit" {
            // The slot's engine too, and its containerd.
            let engine = users_of(&format!("--data-root={}/", dir.path().display()));
            assert!(!engine.is_empty(), "the engine runs");
            assert!(
                engine.iter().all(|u| *u == IdRange::DEFAULT.first),
                "the engine runs as {engine:?}"
            );
        }
        let job = common::finished(&service, &job.id).await;
        assert_eq!(job.state, State::Succeeded, "{builder}: {:?}", job.error);
        assert_eq!(run_cgroups(&[job.id]), Vec::<String>::new(), "{builder}");
    }
}
