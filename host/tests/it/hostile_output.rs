//! A build that prints without end cannot take the server's memory or fill
//! its store: output is bounded in bytes where it is read. Its own test
//! binary, so the peak resident memory it measures is this scenario's
//! alone. Needs what the real-build tests need (see real_build.rs).

use crate::common;
use crate::common::LogText as _;

use std::time::Duration;

use helix_build::job::State;
use helix_fixtures::{Registry, repo_running};

/// Peak resident memory of this process so far, in MiB (`VmHWM`).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_output_is_clipped_where_it_is_read_and_memory_stays_bounded() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let config = common::real_config(&dir, &registry.address);
    let service = common::start(&config).await;
    let cases = [
        // 300 MB without a newline.
        (
            "one endless line",
            "/bin/busybox head -c 314572800 /dev/zero | /bin/busybox tr '\\\\0' x",
        ),
        // A million short lines, about 6.9 MB.
        ("a million lines", "/bin/busybox seq 1000000"),
    ];
    // A podman build of a repository running `script`, to its end.
    let build = async |script: &str| {
        let repo = repo_running(script);
        let job = service
            .submit(common::on_repo(repo.path(), "podman"))
            .await
            .unwrap();
        service
            .wait(job.id.as_str(), Duration::from_secs(600))
            .await
            .unwrap()
    };
    // A job of quiet output first: what the first real build costs the
    // host once (its compiled builder, jail, SBOM and provenance work)
    // is not what the endless output may grow it by.
    let warm_up = build("echo quiet").await;
    assert_eq!(warm_up.state, State::Succeeded, "{:?}", warm_up.error);
    let before = peak_rss_mib();
    for (case, script) in cases {
        let job = build(script).await;
        assert_eq!(job.state, State::Succeeded, "{case}: {:?}", job.error);
        // The end of the job is still there, after the clip.
        let logs = service.logs(job.id.as_str()).await.unwrap().texts();
        let bytes: usize = logs.iter().map(|l| l.len() + 1).sum();
        let (step_cap, job_cap) = (config.log_step_cap_bytes, config.log_cap_bytes);
        assert!(
            bytes <= step_cap.max(job_cap) + 64 * 1024,
            "{case}: {bytes} bytes of log stored"
        );
        assert!(
            logs.iter()
                .any(|l| l.contains("[helix] output of `podman` clipped")),
            "{case}: {:?}",
            &logs[logs.len().saturating_sub(5)..]
        );
        assert!(
            logs.last().unwrap().starts_with("[helix] job succeeded"),
            "{case}"
        );
        println!("{case}: {bytes} bytes of log stored");
    }
    let grown = peak_rss_mib().saturating_sub(before);
    println!("peak resident memory grew by {grown} MiB (from {before} MiB)");
    assert!(grown <= 64, "peak resident memory grew by {grown} MiB");
}
