//! The cache slots' file systems over a service's life: unmounted (their
//! loop devices detached) when it stops, orphans of servers that never
//! stopped swept, a slot that turned read-only made anew before the next
//! job, and what a slot's file system says it holds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::common;
use helix_fixtures::{Registry, Repo};

use helix_build::job::State;

/// Mount points under `dir`, from this process's mount table.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(point.replace("\\040", " ")))
        .filter(|point| point.starts_with(&dir))
        .collect()
}

/// Loop devices whose file is under `dir`.
fn loop_devices_under(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap().display().to_string();
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|device| {
            let file = std::fs::read_to_string(device.path().join("loop/backing_file")).ok()?;
            file.starts_with(&dir)
                .then(|| format!("{}: {}", device.file_name().display(), file.trim()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_leaves_no_mount_or_loop_device_and_orphans_are_swept() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&common::real_config(&dir, &registry.address)).await;
    let (job, _) = common::run_logged(&service, common::on_repo(repo.dir.path(), "podman")).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    assert!(
        mounts_under(dir.path()).len() >= 2,
        "the slot and its mirrors are mounted"
    );
    assert!(!loop_devices_under(dir.path()).is_empty());
    service.stop(Duration::from_secs(5)).await;
    assert_eq!(mounts_under(dir.path()), Vec::<PathBuf>::new());
    assert_eq!(loop_devices_under(dir.path()), Vec::<String>::new());

    // A quota left mounted, its file deleted (a killed server's, its
    // data dir removed) is swept at the next start.
    let orphan = dir.path().join("orphan");
    helix_build::quota::DiskQuota::persistent(&orphan, 16)
        .unwrap()
        .keep_mounted();
    std::fs::remove_file(helix_build::quota::image_of(&orphan)).unwrap();
    assert_eq!(mounts_under(dir.path()).len(), 1);
    let again = tempfile::tempdir().unwrap();
    drop(common::start(&common::config(&again, 1, 10)).await);
    assert_eq!(mounts_under(dir.path()), Vec::<PathBuf>::new());
    assert_eq!(loop_devices_under(dir.path()), Vec::<String>::new());
}

/// A slot's file system says how much it holds (what keeps a slot within
/// its bounds after each build, with no walk of every layer's files).
#[test]
fn a_disk_quota_counts_what_is_written_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = dir.path().join("fs");
    let quota = helix_build::quota::DiskQuota::fresh(&mounted, 64).unwrap();
    let empty = quota.used_bytes().unwrap();
    let file = std::fs::File::create(mounted.join("data")).unwrap();
    std::io::Write::write_all(&mut &file, &vec![1u8; 20 << 20]).unwrap();
    file.sync_all().unwrap();
    let used = quota.used_bytes().unwrap() - empty;
    assert!((20 << 20..=21 << 20).contains(&used), "{used} bytes");
}

/// A run's file system is the spare one made after the last run's (no
/// `mkfs` while the run waits): empty, never another run's, and made
/// again for the next.
#[test]
fn a_fresh_quota_takes_the_spare_file_system_which_is_empty_and_made_again() {
    use helix_build::quota::{DiskQuota, image_of, remove_spares, spare_of};
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let spare_made = |run: &std::path::Path| {
        let spare = spare_of(run, 16);
        for _ in 0..500 {
            if spare.exists() {
                return std::fs::metadata(&spare).unwrap().ino();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no spare made at {}", spare.display());
    };
    let first = dir.path().join("run.1");
    let quota = DiskQuota::fresh(&first, 16).unwrap();
    let empty = quota.used_bytes().unwrap();
    std::fs::write(first.join("secret"), vec![7u8; 1 << 20]).unwrap();
    for run in ["run.2", "run.3"] {
        let run = dir.path().join(run);
        let spare = spare_made(&run);
        let next = DiskQuota::fresh(&run, 16).unwrap();
        assert_eq!(
            std::fs::metadata(image_of(&run)).unwrap().ino(),
            spare,
            "the spare is the run's file"
        );
        let held: Vec<_> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name != "lost+found")
            .collect();
        assert!(held.is_empty(), "{held:?}");
        assert_eq!(next.used_bytes().unwrap(), empty);
        std::fs::write(run.join("secret"), b"of this run").unwrap();
        drop(next);
        assert!(!image_of(&run).exists());
    }
    drop(quota);
    spare_made(&first);
    remove_spares(dir.path());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_turned_read_only_is_made_anew_before_the_next_job() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    // One slot: the next job gets the one made read-only.
    config.workers = 1;
    let service = common::start(&config).await;
    let request = || common::on_repo(repo.dir.path(), "podman");
    let (job, _) = common::run_logged(&service, request()).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    for point in mounts_under(dir.path()) {
        let point = point.display().to_string();
        helix_fixtures::run(dir.path(), "mount", &["-o", "remount,ro", &point]);
    }
    let (job, logs) = common::run_logged(&service, request()).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    let remade = logs
        .iter()
        .filter(|l| l.starts_with("[helix] warning: the build cache file system"))
        .count();
    assert_eq!(remade, 2, "the slot and its mirrors: {logs:?}");
}
