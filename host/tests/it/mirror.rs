//! The git mirror per repository in a cache slot: a later job fetches
//! only what the mirror lacks (nothing for a commit it has, not even with
//! the server gone), force-pushed branches follow the server, a damaged
//! mirror is rebuilt, no hook in it ever runs, concurrent jobs of one
//! repository both build, a merge request's ref (outside branches and
//! tags) builds its commit, and a job's checkout is its own layer over the
//! slot's working tree, which a later commit's job writes only where it
//! changed.

use std::path::{Path, PathBuf};

use super::common;
use helix_fixtures::{DumbHttpGit, Registry, Repo};

use helix_build::job::{JobRequest, State};

fn on(url: &str, git_ref: &str) -> JobRequest {
    JobRequest {
        repo_url: url.to_string(),
        git_ref: Some(git_ref.into()),
        builder: Some("podman".into()),
        ..JobRequest::default()
    }
}

/// The one mirror the podman builder's slots hold under data dir `data`.
fn the_mirror(data: &Path) -> PathBuf {
    let slots = data.join("build-cache/podman");
    let mirrors: Vec<PathBuf> = std::fs::read_dir(&slots)
        .unwrap()
        .flatten()
        .filter(|slot| slot.path().extension().is_some_and(|e| e == "git"))
        .flat_map(|slot| std::fs::read_dir(slot.path()).unwrap().flatten())
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "git"))
        .collect();
    assert_eq!(mirrors.len(), 1, "one repository, one mirror: {mirrors:?}");
    mirrors[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_job_fetches_no_object_the_mirror_has_and_a_commit_it_has_needs_no_server() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let head = helix_fixtures::git(repo.dir.path(), &["rev-parse", "HEAD"]);
    let server = DumbHttpGit::serve(repo.dir.path());
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&common::real_config(&dir, &registry.address)).await;

    let (job, logs) = common::run_logged(&service, on(&server.url, "main")).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    assert!(
        logs.iter()
            .any(|l| l.contains("fetching what the repository's mirror lacks"))
    );
    let first = server.requested().len();
    assert!(server.requested().iter().any(|p| p.contains("/objects/")));

    let (job, logs) = common::run_logged(&service, on(&server.url, "main")).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    let again = server.requested()[first..].to_vec();
    assert!(
        !again.iter().any(|p| p.contains("/objects/")),
        "the second job asks only where the branch is: {again:?}"
    );
    assert!(
        logs.contains(&format!(
            "[helix] main is at {head} in the repository's mirror"
        )),
        "{logs:?}"
    );
    assert_eq!(job.commit.as_deref(), Some(head.as_str()));

    drop(server);
    let (job, logs) = common::run_logged(&service, on(&job.repo_url, &head)).await;
    assert_eq!(
        job.state,
        State::Succeeded,
        "no server needed: {:?}",
        job.error
    );
    assert!(logs.contains(&format!(
        "[helix] commit {head} is in the repository's mirror: nothing fetched"
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_pushed_branch_builds_its_new_commit_a_damaged_mirror_is_rebuilt_and_no_hook_runs()
{
    let registry = Registry::start(false);
    let repo = Repo::new();
    let url = repo.url();
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&common::real_config(&dir, &registry.address)).await;
    let (job, _) = common::run_logged(&service, on(&url, "main")).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    let old = job.commit.clone().unwrap();

    // Hooks planted in the mirror (and every hook git would run in a
    // fetch, a ref update or a checkout) never run.
    let mirror = the_mirror(dir.path());
    let marker = dir.path().join("a-hook-ran");
    for hook in [
        "reference-transaction",
        "post-checkout",
        "pre-auto-gc",
        "post-index-change",
    ] {
        let path = mirror.join("hooks").join(hook);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
        helix_fixtures::run(dir.path(), "chmod", &["755", &path.display().to_string()]);
    }

    // The branch rewritten: its old commit is no ancestor of the new.
    helix_fixtures::git(repo.dir.path(), &["commit", "--amend", "-qm", "rewritten"]);
    let new = helix_fixtures::git(repo.dir.path(), &["rev-parse", "HEAD"]);
    let (job, _) = common::run_logged(&service, on(&url, "main")).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    assert_eq!(job.commit.as_deref(), Some(new.as_str()), "not {old}");
    assert!(!marker.exists(), "a hook in the mirror ran");

    // A next commit in the mirror (fetched as a job would), the blob of
    // its changed Dockerfile overwritten there: the checkout that moves
    // the slot's working tree to it needs that blob.
    let dockerfile = repo.dir.path().join("Dockerfile");
    let changed = std::fs::read_to_string(&dockerfile).unwrap() + "# changed\n";
    std::fs::write(&dockerfile, changed).unwrap();
    helix_fixtures::git(
        repo.dir.path(),
        &["commit", "-qam", "the Dockerfile changed"],
    );
    let new = helix_fixtures::git(repo.dir.path(), &["rev-parse", "HEAD"]);
    let git_dir = format!("--git-dir={}", mirror.display());
    let refspec = "+refs/heads/*:refs/heads/*";
    let fetch = [
        "-c",
        "protocol.file.allow=always",
        "-c",
        "core.hooksPath=/dev/null",
        &git_dir,
        "fetch",
        "-q",
        &url,
        refspec,
    ];
    helix_fixtures::run(dir.path(), "git", &fetch);
    let blob = helix_fixtures::run(
        dir.path(),
        "git",
        &[&git_dir, "rev-parse", &format!("{new}:Dockerfile")],
    );
    let object = mirror.join("objects").join(&blob[..2]).join(&blob[2..]);
    assert!(object.is_file(), "a small fetch leaves loose objects");
    std::fs::remove_file(&object).unwrap();
    std::fs::write(&object, b"not a git object").unwrap();
    let (job, logs) = common::run_logged(&service, on(&url, "main")).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    assert_eq!(job.commit.as_deref(), Some(new.as_str()));
    assert!(
        logs.iter().any(
            |l| l.starts_with("[helix] warning: the repository's mirror")
                && l.contains("is damaged")
        ),
        "{logs:?}"
    );
    assert!(!marker.exists(), "a hook in the mirror ran");
}

/// A job's `commit` (a webhook's pushed commit) is built when its ref
/// reaches it, though the ref has moved on, and refused as the source's
/// fault when it does not (a commit of another branch named with a
/// protected one): from the slot's mirror and by a plain clone alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_commit_is_built_only_where_its_ref_reaches_it() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let path = repo.dir.path();
    helix_fixtures::git(path, &["checkout", "-qb", "feature"]);
    helix_fixtures::git(path, &["commit", "--allow-empty", "-qm", "elsewhere"]);
    let elsewhere = helix_fixtures::git(path, &["rev-parse", "HEAD"]);
    helix_fixtures::git(path, &["checkout", "-q", "main"]);
    let server = DumbHttpGit::serve(path);
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&common::real_config(&dir, &registry.address)).await;
    for no_cache in [false, true] {
        let pinned = |commit: &str| JobRequest {
            commit: Some(commit.to_string()),
            no_cache,
            ..on(&server.url, "refs/heads/main")
        };
        let (job, logs) = common::run_logged(&service, pinned(&repo.first_commit)).await;
        assert_eq!(
            job.state,
            State::Succeeded,
            "no_cache {no_cache}: {:?}",
            job.error
        );
        assert_eq!(job.commit.as_deref(), Some(repo.first_commit.as_str()));
        assert!(logs.contains(&format!(
            "[helix] checking out {} at commit {} of refs/heads/main",
            server.url, repo.first_commit
        )));

        let (job, _) = common::run_logged(&service, pinned(&elsewhere)).await;
        assert_eq!(job.state, State::Failed, "no_cache {no_cache}");
        let error = job.error.unwrap();
        assert!(
            error.starts_with("source error: ")
                && error.contains(&format!(
                    "commit {elsewhere} is not on ref \"refs/heads/main\""
                )),
            "no_cache {no_cache}: {error}"
        );
        assert_eq!(job.attempts, 1, "the source's fault is not retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_of_one_repository_both_build() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&common::real_config(&dir, &registry.address)).await;
    let (a, b) = tokio::join!(
        common::run_logged(&service, on(&repo.url(), "main")),
        common::run_logged(&service, on(&repo.url(), "v1")),
    );
    assert_eq!(a.0.state, State::Succeeded, "{:?}", a.0.error);
    assert_eq!(b.0.state, State::Succeeded, "{:?}", b.0.error);
    assert_eq!(b.0.commit.as_deref(), Some(repo.first_commit.as_str()));
}

/// Layers (overlay mounts) mounted under `dir`.
fn layers_under(dir: &Path) -> Vec<String> {
    let dir = format!(" {}/", dir.canonicalize().unwrap().display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" - overlay ") && l.contains(&dir))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_is_a_layer_over_the_slots_tree_which_a_later_commit_writes_only_where_it_changed()
 {
    let registry = Registry::start(false);
    let repo = helix_fixtures::busybox_repo(
        "COPY src/ /ctx/\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo files: $(/bin/busybox ls /ctx); echo changed: $(/bin/busybox cat /ctx/changed)\"]\n",
    );
    let path = repo.path();
    std::fs::create_dir(path.join("src")).unwrap();
    for (file, text) in [
        ("unchanged", "same"),
        ("changed", "first"),
        ("gone", "first"),
    ] {
        std::fs::write(path.join("src").join(file), text).unwrap();
    }
    helix_fixtures::git(path, &["add", "-A"]);
    helix_fixtures::git(path, &["commit", "-qm", "first"]);
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&common::real_config(&dir, &registry.address)).await;
    let request = common::on_repo(path, "podman");
    let layered = "[helix] the checkout is a layer of the job's own over the slot's working tree";

    let (job, logs) = common::run_logged(&service, request.clone()).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    let said = |logs: &[String], text: &str| logs.iter().any(|l| l.contains(text));
    assert!(said(&logs, layered), "{logs:?}");
    assert!(said(&logs, "files: changed gone unchanged"), "{logs:?}");
    assert!(said(&logs, "changed: first"), "{logs:?}");
    assert_eq!(layers_under(dir.path()), Vec::<String>::new());
    let tree = the_mirror(dir.path()).with_extension("tree");
    use std::os::unix::fs::MetadataExt as _;
    let written = |file: &str| {
        let meta = std::fs::metadata(tree.join("src").join(file)).unwrap();
        (meta.ino(), meta.mtime_nsec(), meta.mtime())
    };
    let unchanged = written("unchanged");

    std::fs::write(path.join("src/changed"), "second").unwrap();
    std::fs::remove_file(path.join("src/gone")).unwrap();
    std::fs::write(path.join("src/added"), "new").unwrap();
    helix_fixtures::git(path, &["add", "-A"]);
    helix_fixtures::git(path, &["commit", "-qm", "second"]);
    let (job, logs) = common::run_logged(&service, request).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    assert!(said(&logs, layered), "{logs:?}");
    assert!(said(&logs, "files: added changed unchanged"), "{logs:?}");
    assert!(said(&logs, "changed: second"), "{logs:?}");
    assert_eq!(
        written("unchanged"),
        unchanged,
        "an unchanged file is not written again"
    );
    assert!(!tree.join("src/gone").exists());
    assert_eq!(layers_under(dir.path()), Vec::<String>::new());
}

/// A merge request's ref (outside branches and tags, as GitLab's
/// `refs/merge-requests/N/head` and GitHub's `refs/pull/N/head` are)
/// builds its commit, over dumb HTTP too; one the server lacks is the
/// source's fault, named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_requests_ref_builds_its_commit_and_a_missing_one_is_the_sources_fault() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let path = repo.dir.path();
    helix_fixtures::git(path, &["checkout", "-q", "--detach"]);
    helix_fixtures::git(path, &["commit", "--allow-empty", "-qm", "proposed"]);
    let proposed = helix_fixtures::git(path, &["rev-parse", "HEAD"]);
    helix_fixtures::git(
        path,
        &["update-ref", "refs/merge-requests/7/head", &proposed],
    );
    helix_fixtures::git(path, &["checkout", "-q", "main"]);
    let server = DumbHttpGit::serve(path);
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&common::real_config(&dir, &registry.address)).await;

    let (job, logs) =
        common::run_logged(&service, on(&server.url, "refs/merge-requests/7/head")).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    assert_eq!(job.commit.as_deref(), Some(proposed.as_str()));
    assert!(
        logs.contains(&format!(
            "[helix] refs/merge-requests/7/head is at {proposed} in the repository's mirror"
        )),
        "{logs:?}"
    );

    let (job, _) =
        common::run_logged(&service, on(&server.url, "refs/merge-requests/8/head")).await;
    assert_eq!(job.state, State::Failed);
    let error = job.error.unwrap();
    assert!(
        error.starts_with("source error: ") && error.contains("refs/merge-requests/8/head"),
        "{error}"
    );
    assert_eq!(job.attempts, 1, "the source's fault is not retried");
}
