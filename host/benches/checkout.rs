//! The host's checkout of a 50,000-file repository (250 directories of
//! 200 small files, one commit): a job's first checkout, which fills its
//! slot's empty git mirror from the server (here `file://`, through git's
//! upload-pack as over a network, without the network's latency), against
//! a later job's from the warm mirror — the same commit, asked by branch
//! (one `ls-remote`, no objects fetched). The first writes the 50,000
//! files into the slot's working tree; the second moves that tree to its
//! commit (nothing to write) and, like the first, mounts a layer of its
//! own over it and hands the tree over to the jail's root.
//! Run with `bench/run checkout`.

use std::time::{Duration, Instant};

use crate::common::{self, median, ms, row};

use helix_build::cancel::CancelSignal;
use helix_build::jail::IdRange;
use helix_build::job::{Job, JobRequest, SubmitPolicy};
use helix_build::log::JobLog;
use helix_build::source::{Checkout, FromSlot};

const ROUNDS: usize = 3;
const DIRS: usize = 250;
const FILES_PER_DIR: usize = 200;

pub fn main() {
    common::block_on(run());
}

async fn run() {
    let repo = tempfile::tempdir().unwrap();
    let made = Instant::now();
    for d in 0..DIRS {
        let dir = repo.path().join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..FILES_PER_DIR {
            std::fs::write(dir.join(format!("f{f}.txt")), format!("file {d}/{f}\n")).unwrap();
        }
    }
    std::fs::write(repo.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    helix_fixtures::git(repo.path(), &["init", "-q", "-b", "main"]);
    helix_fixtures::git(repo.path(), &["add", "-A"]);
    helix_fixtures::git(repo.path(), &["commit", "-qm", "50,000 files"]);
    eprintln!(
        "made a repository of {} files in {:.1}s",
        DIRS * FILES_PER_DIR,
        made.elapsed().as_secs_f64()
    );
    let policy = SubmitPolicy {
        allow_file_repos: true,
        ..SubmitPolicy::for_builders("podman", ["podman"])
    };
    let request = JobRequest {
        repo_url: format!("file://{}", repo.path().display()),
        git_ref: Some("main".into()),
        ..JobRequest::default()
    };
    let job = Job::from_request(request, &policy, chrono::Utc::now()).unwrap();
    let checkout = Checkout {
        allow_file_repos: true,
    };
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let mirrors = tempfile::tempdir().unwrap();
        first.push(timed(&checkout, &job, mirrors.path()).await);
        second.push(timed(&checkout, &job, mirrors.path()).await);
    }
    let (first, second) = (median(&mut first), median(&mut second));
    let ratio = ms(second) / ms(first);
    row(
        "checkout of 50,000 files: second job (warm mirror) vs first",
        &format!("{:.0} ms", ms(second)),
        &format!("{:.0} ms", ms(first)),
        &format!("{ratio:.2}×"),
        "≤ 0.10×",
        Some(ratio <= 0.10),
    );
}

/// One job's checkout into a fresh workspace, from the mirrors in
/// `mirrors`, as a service makes it: a layer over the slot's working
/// tree, handed over to the jail's root.
async fn timed(checkout: &Checkout, job: &Job, mirrors: &std::path::Path) -> Duration {
    let run = tempfile::tempdir().unwrap();
    let (workspace, layer) = (run.path().join("workspace"), run.path().join("layer"));
    std::fs::create_dir(&workspace).unwrap();
    let log = JobLog::new(1000);
    // The last workspace's files were just removed: their writeback
    // would land in this one's time.
    helix_fixtures::run(run.path(), "sync", &[]);
    let started = Instant::now();
    checkout
        .fetch(
            job,
            &workspace,
            &log,
            &CancelSignal::new(),
            None,
            Some(FromSlot {
                mirrors,
                layer: Some(&layer),
                owner: Some(IdRange::DEFAULT),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", log.snapshot()));
    let took = started.elapsed();
    helix_build::layer::unmount_below(run.path());
    took
}
