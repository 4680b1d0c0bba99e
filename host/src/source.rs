//! Checking out a job's source: the host's own git, hardened, before the
//! builder runs, so no builder ever runs git or chooses what is fetched.
//!
//! Hardening: git reads no system or global config and runs no hooks and
//! no fsmonitor (`core.hooksPath=/dev/null`, `core.fsmonitor=false`); only
//! the https, http, ssh and git transports are enabled (file too when the
//! operator allows `file://` repositories), so `ext::`, local paths and
//! other helpers are refused by git itself; it never prompts and gets an
//! environment of `PATH` and an empty `HOME` alone. Every git command runs
//! before the builder is instantiated, on a directory only the host has
//! written, so a `.git` a guest wrote is never read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cancel::CancelSignal;
use crate::cgroup::RunCgroup;
use crate::exec::{CommandOutput, HostCommand, RunError, SOURCE_DIR};
use crate::job::{FailureKind, Job, Outcome};
use crate::log::JobLog;

/// The job's context and Dockerfile in its checkout, as the host checked
/// them.
#[derive(Debug, Clone)]
pub struct CheckedSource {
    /// The context directory, canonical.
    pub context: PathBuf,
    /// The Dockerfile, canonical: the only one a builder may build.
    pub dockerfile: PathBuf,
    /// The Dockerfile's text as checked out.
    pub text: String,
}

/// Checks that the job's context is a directory and its Dockerfile a file
/// of the checkout in `workspace`, symbolic links followed: a link in the
/// repository must not lead the build to the host's files.
pub fn check_context(
    workspace: &Path,
    context: &str,
    dockerfile: &str,
) -> Result<CheckedSource, Outcome> {
    let source = workspace
        .join(SOURCE_DIR)
        .canonicalize()
        .map_err(|e| Outcome::failed(FailureKind::Host, format!("the checkout is gone: {e}")))?;
    let invalid = |what: String, problem: &str| {
        Outcome::failed(
            FailureKind::InvalidJob,
            format!("{what} {problem} of the repository at this commit"),
        )
    };
    let resolve = |what: String, path: PathBuf, want_dir: bool| match path.canonicalize() {
        Err(_) => Err(invalid(what, "does not exist in the checkout")),
        Ok(resolved) if !resolved.starts_with(&source) => {
            Err(invalid(what, "is a symbolic link leading out"))
        }
        Ok(resolved) if resolved.is_dir() != want_dir => {
            let kind = if want_dir { "a directory" } else { "a file" };
            Err(invalid(what, &format!("is not {kind}")))
        }
        Ok(resolved) => Ok(resolved),
    };
    let context_dir = resolve(format!("context {context:?}"), source.join(context), true)?;
    let what = format!("dockerfile_path {dockerfile:?} (in context {context:?})");
    let dockerfile = resolve(what.clone(), context_dir.join(dockerfile), false)?;
    let text = std::fs::read_to_string(&dockerfile).map_err(|e| {
        Outcome::failed(
            FailureKind::InvalidJob,
            format!("{what} is unreadable: {e}"),
        )
    })?;
    Ok(CheckedSource {
        context: context_dir,
        dockerfile,
        text,
    })
}

/// How long one git command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Fetches sources the way the operator allows.
#[derive(Debug, Clone, Default)]
pub struct Checkout {
    /// Whether `file://` repositories may be cloned.
    pub allow_file_repos: bool,
}

impl Checkout {
    /// Checks `job`'s ref out into `<workspace>/src` and returns the commit:
    /// a shallow clone where the server allows it, else a full clone and a
    /// checkout (commit shas, and servers that refuse `--depth`). Failures
    /// are the job's outcome: an unknown repository or ref is a source
    /// error, a cancel is a cancel.
    pub async fn fetch(
        &self,
        job: &Job,
        workspace: &Path,
        log: &JobLog,
        cancel: &CancelSignal,
        cgroup: Option<&RunCgroup>,
    ) -> Result<String, Outcome> {
        let git = Git {
            workspace,
            log,
            cancel,
            cgroup,
            allow_file: self.allow_file_repos,
        };
        let url = job.repo_url.as_str();
        let git_ref = job.git_ref.as_str();
        log.push(&format!("[helix] checking out {url} at {git_ref}"));
        if is_commit(git_ref) {
            git.clone(url, &[]).await?;
            git.detach(url, git_ref).await?;
        } else {
            let mut shallow = vec!["--depth", "1"];
            if git_ref != "HEAD" {
                shallow.extend(["--branch", git_ref]);
            }
            if let Err(refused) = git.clone(url, &shallow).await {
                if matches!(refused, Outcome::Cancelled { .. }) {
                    return Err(refused);
                }
                log.push("[helix] shallow clone failed; trying a full clone");
                remove_partial(workspace);
                git.clone(url, &[]).await?;
                if git_ref != "HEAD" {
                    // A branch named in full (what a protected ref is) is
                    // the clone's remote-tracking ref, never a tag.
                    let branch = git_ref
                        .strip_prefix("refs/heads/")
                        .map(|b| format!("refs/remotes/origin/{b}"));
                    git.detach(url, branch.as_deref().unwrap_or(git_ref))
                        .await?;
                }
            }
        }
        let head = git
            .run(&["-C", SOURCE_DIR, "rev-parse", "--verify", "HEAD^{commit}"])
            .await?;
        let commit = head.stdout.trim().to_string();
        if head.exit_code != 0 || !is_commit(&commit) {
            return Err(Outcome::failed(
                FailureKind::Source,
                format!("{url} at {git_ref:?} has no commit to build"),
            ));
        }
        log.push(&format!("[helix] checked out commit {commit}"));
        Ok(commit)
    }
}

/// git with the hardening described in the module docs.
struct Git<'a> {
    workspace: &'a Path,
    log: &'a JobLog,
    cancel: &'a CancelSignal,
    cgroup: Option<&'a RunCgroup>,
    allow_file: bool,
}

impl Git<'_> {
    async fn clone(&self, url: &str, options: &[&str]) -> Result<(), Outcome> {
        let mut args = vec!["clone"];
        args.extend(options);
        args.extend(["--", url, SOURCE_DIR]);
        let output = self.run(&args).await?;
        if output.exit_code == 0 {
            return Ok(());
        }
        Err(Outcome::failed(
            FailureKind::Source,
            format!("cannot clone {url}: {}", output.error_line()),
        ))
    }

    async fn detach(&self, url: &str, git_ref: &str) -> Result<(), Outcome> {
        let output = self
            .run(&[
                "-C", SOURCE_DIR, "checkout", "--quiet", "--detach", git_ref, "--",
            ])
            .await?;
        if output.exit_code == 0 {
            return Ok(());
        }
        Err(Outcome::failed(
            FailureKind::Source,
            format!(
                "ref {git_ref:?} was not found in {url}: it names no branch, tag or commit there"
            ),
        ))
    }

    async fn run(&self, args: &[&str]) -> Result<CommandOutput, Outcome> {
        let mut all: Vec<String> = [
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "protocol.allow=never",
            "-c",
            "protocol.https.allow=always",
            "-c",
            "protocol.http.allow=always",
            "-c",
            "protocol.ssh.allow=always",
            "-c",
            "protocol.git.allow=always",
            "-c",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        all.push(format!(
            "protocol.file.allow={}",
            if self.allow_file { "always" } else { "never" }
        ));
        all.extend(args.iter().map(|a| a.to_string()));
        let env = BTreeMap::from([
            ("HOME".to_string(), "/nonexistent".to_string()),
            ("GIT_CONFIG_NOSYSTEM".to_string(), "1".to_string()),
            ("GIT_CONFIG_GLOBAL".to_string(), "/dev/null".to_string()),
            ("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()),
            ("GIT_PROTOCOL_FROM_USER".to_string(), "0".to_string()),
        ]);
        HostCommand {
            program: "git",
            args: &all,
            env: &env,
            cwd: self.workspace,
            timeout: Some(GIT_TIMEOUT),
            log: self.log,
            cancel: self.cancel,
            cgroup: self.cgroup,
            // The host's own checkout stays on the host: git runs with no
            // config, hooks or helpers of the repository's.
            jail: None,
        }
        .run()
        .await
        .map_err(|e| match e {
            RunError::Cancelled => Outcome::Cancelled {
                reason: self.cancel.reason(),
            },
            RunError::TimedOut => Outcome::failed(
                FailureKind::Source,
                format!(
                    "git did not finish within {}s; is the repository reachable?",
                    GIT_TIMEOUT.as_secs()
                ),
            ),
            other => Outcome::failed(
                FailureKind::Host,
                format!("cannot run git for the checkout: {other}; install git on the build host"),
            ),
        })
    }
}

/// A full clone goes where a failed shallow one may have left files.
fn remove_partial(workspace: &Path) {
    let _ = std::fs::remove_dir_all(workspace.join(SOURCE_DIR));
}

fn is_commit(git_ref: &str) -> bool {
    (7..=64).contains(&git_ref.len()) && git_ref.bytes().all(|b| b.is_ascii_hexdigit())
}
