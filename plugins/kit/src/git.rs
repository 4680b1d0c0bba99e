//! Fetching the job's source with git.

use crate::image::Settings;
use crate::{BuildError, Job, SOURCE_DIR, log, run};

/// Refuses sources git could read as options, and transports other than
/// https, http, ssh, git (and file where the operator allows it). The host
/// validated the job already; a builder checks again because it is the one
/// handing these strings to git.
pub(crate) fn check_source(job: &Job, settings: &Settings) -> Result<(), BuildError> {
    if job.repo_url.starts_with('-') || job.git_ref.starts_with('-') {
        return Err(BuildError::InvalidJob("repo_url and ref may not start with '-'".into()));
    }
    let url = job.repo_url.as_str();
    let transport = url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    let allowed = match transport.as_deref() {
        Some("https" | "http" | "ssh" | "git") => true,
        Some("file") => settings.allow_file_repos,
        Some(_) => false,
        // scp-like `user@host:path`
        None => url.contains(':') && !url.contains("::"),
    };
    if allowed {
        Ok(())
    } else {
        Err(BuildError::InvalidJob(format!("repository URL {url:?} uses a transport this builder does not allow")))
    }
}

fn is_commit(git_ref: &str) -> bool {
    (7..=64).contains(&git_ref.len()) && git_ref.bytes().all(|b| b.is_ascii_hexdigit())
}

fn git(args: &[&str]) -> Result<crate::bindings::helix::build::command_runner::Output, BuildError> {
    run::run("git", args.iter().map(|a| a.to_string()).collect())
}

/// Checks out `git_ref` of `url` into the source directory: a shallow
/// clone where the server allows it, else a full clone and a checkout
/// (commit shas, and servers that refuse `--depth`).
pub(crate) fn checkout(url: &str, git_ref: &str) -> Result<(), BuildError> {
    let shallow = if git_ref == "HEAD" {
        git(&["clone", "--depth", "1", "--", url, SOURCE_DIR])?
    } else if is_commit(git_ref) {
        full_clone(url)?;
        return detach(url, git_ref);
    } else {
        git(&["clone", "--depth", "1", "--branch", git_ref, "--", url, SOURCE_DIR])?
    };
    if shallow.exit_code == 0 {
        return log_commit();
    }
    log(&format!(
        "shallow clone failed ({}); trying a full clone",
        run::error_line(&shallow.stderr)
    ));
    full_clone(url)?;
    if git_ref == "HEAD" { log_commit() } else { detach(url, git_ref) }
}

fn full_clone(url: &str) -> Result<(), BuildError> {
    let output = git(&["clone", "--", url, SOURCE_DIR])?;
    if output.exit_code != 0 {
        return Err(BuildError::Source(format!(
            "cannot clone {url}: {}",
            run::error_line(&output.stderr)
        )));
    }
    Ok(())
}

fn detach(url: &str, git_ref: &str) -> Result<(), BuildError> {
    let output = git(&["-C", SOURCE_DIR, "checkout", "--detach", git_ref])?;
    if output.exit_code != 0 {
        return Err(BuildError::Source(format!(
            "ref {git_ref:?} was not found in {url}: it names no branch, tag or commit there"
        )));
    }
    log_commit()
}

fn log_commit() -> Result<(), BuildError> {
    let output = git(&["-C", SOURCE_DIR, "rev-parse", "HEAD"])?;
    if output.exit_code == 0 {
        log(&format!("checked out commit {}", output.stdout.trim()));
    }
    Ok(())
}
