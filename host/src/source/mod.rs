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
//!
//! A job with a cache slot checks out from its repository's mirror there
//! ([`mirror`]); one without (`no_cache`) clones directly.

mod mirror;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cancel::CancelSignal;
use crate::cgroup::RunCgroup;
use crate::exec::{CommandOutput, HostCommand, RunError, SOURCE_DIR};
use crate::jail::IdRange;
use crate::job::Job;
use crate::log::JobLog;

/// Why a job's context or Dockerfile is not usable in its checkout.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The host's own checkout disappeared under it.
    #[error("the checkout is gone: {0}")]
    Gone(#[source] std::io::Error),
    /// The job names a path the repository does not have as asked.
    #[error("{what} {problem} of the repository at this commit")]
    Invalid { what: String, problem: String },
    #[error("{what} is unreadable: {source}")]
    Unreadable {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why the host could not check a job's ref out.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("cancelled: {reason}")]
    Cancelled { reason: String },
    /// git could not fetch the repository; `said` is git's own error.
    #[error("cannot clone {url}: {said}")]
    Clone { url: String, said: String },
    /// Neither the clone nor the server (`git ls-remote`) knows the ref.
    #[error("ref {git_ref:?} was not found in {url}: it names no branch, tag or commit there")]
    RefNotFound { url: String, git_ref: String },
    /// The server lists the ref, but git could not resolve it in the clone.
    #[error("ref {git_ref:?} of {url} is listed by the server but git cannot check it out: {said}")]
    Unresolved {
        url: String,
        git_ref: String,
        said: String,
    },
    /// The ref resolved but its files could not be written.
    #[error("cannot check out {git_ref:?} ({commit}) of {url}: {said}")]
    Checkout {
        url: String,
        git_ref: String,
        commit: String,
        said: String,
    },
    /// The job pins a commit its ref does not reach.
    #[error(
        "commit {commit} is not on ref {git_ref:?} of {url} (which is at {tip}): a job's `commit` must be reachable from its ref"
    )]
    NotOnRef {
        url: String,
        git_ref: String,
        commit: String,
        tip: String,
    },
    #[error("git cannot name the tree {spec}: {said}")]
    Tree { spec: String, said: String },
    #[error("{url} at {git_ref:?} has no commit to build")]
    NoCommit { url: String, git_ref: String },
    #[error("git did not finish within {}s; is the repository reachable?", GIT_TIMEOUT.as_secs())]
    TimedOut,
    #[error("cannot run git for the checkout: {0}; install git on the build host")]
    Git(#[source] RunError),
    /// The host could not keep the repository's mirror in its cache slot.
    #[error("cannot use the repository's mirror in the build cache: {0}")]
    Mirror(#[source] std::io::Error),
    /// The mirror was damaged again after it was fetched anew.
    #[error(
        "the repository's mirror in the build cache is damaged even after a fresh fetch: {said}"
    )]
    MirrorDamaged { said: String },
}

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
) -> Result<CheckedSource, ContextError> {
    let source = workspace
        .join(SOURCE_DIR)
        .canonicalize()
        .map_err(ContextError::Gone)?;
    let invalid = |what: String, problem: &str| ContextError::Invalid {
        what,
        problem: problem.to_string(),
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
    let text = std::fs::read_to_string(&dockerfile)
        .map_err(|source| ContextError::Unreadable { what, source })?;
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
    /// Checks `job`'s ref out into `<workspace>/src` (its pinned commit,
    /// once found on the ref) and returns the commit. With `slot` (the
    /// job's cache slot), from the repository's mirror there, fetching
    /// into it what it lacks; else by a shallow
    /// clone where the server allows it, else a full clone and a checkout
    /// of what the ref names there (commit shas, and servers that refuse
    /// `--depth`, such as dumb HTTP ones).
    pub async fn fetch(
        &self,
        job: &Job,
        workspace: &Path,
        log: &JobLog,
        cancel: &CancelSignal,
        cgroup: Option<&RunCgroup>,
        slot: Option<FromSlot<'_>>,
    ) -> Result<String, CheckoutError> {
        let git = Git {
            workspace,
            log,
            cancel,
            cgroup,
            allow_file: self.allow_file_repos,
        };
        let url = job.repo_url.as_str();
        let git_ref = job.git_ref.as_str();
        let pinned = job.pinned_commit.as_deref();
        match pinned {
            Some(commit) => log.push(&format!(
                "[helix] checking out {url} at commit {commit} of {git_ref}"
            )),
            None => log.push(&format!("[helix] checking out {url} at {git_ref}")),
        }
        let wanted = Wanted { git_ref, pinned };
        let commit = match slot {
            Some(slot) => from_mirror(&git, &slot, url, &wanted).await?,
            None => git.clone_wanted(url, &wanted).await?,
        };
        log.push(&format!("[helix] checked out commit {commit}"));
        Ok(commit)
    }
}

impl Git<'_> {
    /// Clones `wanted` of `url` into `<workspace>/src`: the commit
    /// checked out.
    async fn clone_wanted(&self, url: &str, wanted: &Wanted<'_>) -> Result<String, CheckoutError> {
        let (git_ref, pinned) = (wanted.git_ref, wanted.pinned);
        if is_commit(git_ref) || pinned.is_some() {
            // A commit's branch is not known, and a pinned one must be
            // found in the ref's history: both need the whole history.
            self.clone(url, &[]).await?;
            self.detach(url, wanted).await?;
        } else {
            // `clone --branch` takes a short name only: a branch named in
            // full (what a protected ref is) is cloned by its short name
            // and then resolved as the branch it must be, never a tag of
            // that name.
            let full_branch = git_ref.strip_prefix("refs/heads/");
            let mut shallow = vec!["--depth", "1"];
            if git_ref != "HEAD" {
                shallow.extend(["--branch", full_branch.unwrap_or(git_ref)]);
            }
            let cloned = self.clone(url, &shallow).await;
            let cloned = match (cloned, full_branch) {
                (Ok(()), Some(_)) => self.detach(url, wanted).await,
                (cloned, _) => cloned,
            };
            if let Err(refused) = cloned {
                if matches!(refused, CheckoutError::Cancelled { .. }) {
                    return Err(refused);
                }
                self.log
                    .push("[helix] shallow clone failed; trying a full clone");
                remove_partial(self.workspace);
                self.clone(url, &[]).await?;
                if git_ref != "HEAD" {
                    self.detach(url, wanted).await?;
                }
            }
        }
        let head = self
            .run(&["-C", SOURCE_DIR, "rev-parse", "--verify", "HEAD^{commit}"])
            .await?;
        let commit = head.stdout.trim().to_string();
        if head.exit_code != 0 || !is_commit(&commit) {
            return Err(CheckoutError::NoCommit {
                url: url.to_string(),
                git_ref: git_ref.to_string(),
            });
        }
        Ok(commit)
    }
}

/// A checkout from the job's cache slot.
pub struct FromSlot<'a> {
    /// The slot's repository mirrors.
    pub mirrors: &'a Path,
    /// Where the job's own layer over the slot's working tree of the
    /// repository is kept (see [`mirror`]); `None`: the files are written
    /// into the workspace.
    pub layer: Option<&'a Path>,
    /// Whose the working tree's files are made: the jail's root, if the
    /// run's jail has a user namespace.
    pub owner: Option<IdRange>,
}

/// What a job checks out: its ref, or a commit pinned on it.
struct Wanted<'a> {
    git_ref: &'a str,
    pinned: Option<&'a str>,
}

impl Wanted<'_> {
    /// The commit to check out, given where the ref is (`tip`) and
    /// `ancestry`, what `git merge-base --is-ancestor <pinned> <tip>` said
    /// (asked only for a pinned commit): the pinned commit when the ref
    /// reaches it. A commit missing from a history holding every branch
    /// and tag is on none of them, so any failure is "not on the ref".
    fn commit(
        &self,
        url: &str,
        tip: String,
        ancestry: Option<&CommandOutput>,
    ) -> Result<String, CheckoutError> {
        match (self.pinned, ancestry) {
            (Some(pinned), Some(ancestry)) if ancestry.exit_code == 0 => Ok(pinned.to_string()),
            (Some(pinned), _) => Err(CheckoutError::NotOnRef {
                url: url.to_string(),
                git_ref: self.git_ref.to_string(),
                commit: pinned.to_string(),
                tip,
            }),
            (None, _) => Ok(tip),
        }
    }
}

/// Checks `wanted` out from the mirror of `url` in `slot`; a mirror
/// found damaged is removed and fetched anew, once.
async fn from_mirror(
    git: &Git<'_>,
    slot: &FromSlot<'_>,
    url: &str,
    wanted: &Wanted<'_>,
) -> Result<String, CheckoutError> {
    let mirror = mirror::Mirror::of(slot.mirrors, url);
    let _held = mirror.lock().await?;
    let mut rebuilt = false;
    loop {
        let layer = slot.layer.map(|dir| mirror::Layer {
            dir,
            owner: slot.owner,
        });
        match mirror.check_out(git, url, wanted, layer).await {
            Ok(commit) => return Ok(commit),
            Err(mirror::MirrorFault::Checkout(e)) => return Err(e),
            Err(mirror::MirrorFault::Damaged(said)) if rebuilt => {
                return Err(CheckoutError::MirrorDamaged { said });
            }
            Err(mirror::MirrorFault::Damaged(said)) => {
                tracing::warn!(mirror = %mirror.dir().display(), "damaged git mirror rebuilt: {said}");
                git.log.push(&format!(
                    "[helix] warning: the repository's mirror {} is damaged ({said}): removed, fetching it anew",
                    mirror.dir().display()
                ));
                mirror.remove()?;
                remove_partial(git.workspace);
                rebuilt = true;
            }
        }
    }
}

impl Checkout {
    /// The git id of the tree `dir` (a directory of the checkout in
    /// `workspace`, canonical) has at the checked-out commit: what the
    /// build reads of the source, by content.
    pub async fn tree_of(
        &self,
        workspace: &Path,
        dir: &Path,
        log: &JobLog,
        cancel: &CancelSignal,
    ) -> Result<String, CheckoutError> {
        let git = Git {
            workspace,
            log,
            cancel,
            cgroup: None,
            allow_file: self.allow_file_repos,
        };
        let source = workspace.join(SOURCE_DIR);
        let root = source.canonicalize().unwrap_or(source);
        let relative = dir.strip_prefix(&root).unwrap_or(dir).to_string_lossy();
        let spec = format!("HEAD:{relative}");
        let output = git
            .run(&[
                "-C",
                SOURCE_DIR,
                "rev-parse",
                "--verify",
                "--end-of-options",
                &spec,
            ])
            .await?;
        let tree = output.stdout.trim();
        match output.exit_code == 0 && is_commit(tree) {
            true => Ok(tree.to_string()),
            false => Err(CheckoutError::Tree {
                spec,
                said: output.error_line(),
            }),
        }
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
    async fn clone(&self, url: &str, options: &[&str]) -> Result<(), CheckoutError> {
        let mut args = vec!["clone"];
        args.extend(options);
        args.extend(["--", url, SOURCE_DIR]);
        let output = self.run(&args).await?;
        if output.exit_code == 0 {
            return Ok(());
        }
        Err(CheckoutError::Clone {
            url: url.to_string(),
            said: output.error_line(),
        })
    }

    /// Detaches the clone's HEAD at what the ref names on the server (a
    /// branch, a remote-tracking one after a full clone, a tag or a
    /// commit), or at the pinned commit once the ref is found to reach
    /// it. Resolved first, so git never turns a branch name into a new
    /// local branch of its own.
    async fn detach(&self, url: &str, wanted: &Wanted<'_>) -> Result<(), CheckoutError> {
        let git_ref = wanted.git_ref;
        let tip = self.resolve(url, git_ref).await?;
        let ancestry = match wanted.pinned {
            Some(pinned) => Some(
                self.run(&[
                    "-C",
                    SOURCE_DIR,
                    "merge-base",
                    "--is-ancestor",
                    pinned,
                    &tip,
                ])
                .await?,
            ),
            None => None,
        };
        let commit = wanted.commit(url, tip, ancestry.as_ref())?;
        let output = self
            .run(&[
                "-C", SOURCE_DIR, "checkout", "--quiet", "--detach", &commit, "--",
            ])
            .await?;
        if output.exit_code == 0 {
            return Ok(());
        }
        Err(CheckoutError::Checkout {
            url: url.to_string(),
            git_ref: git_ref.to_string(),
            commit,
            said: output.error_line(),
        })
    }

    /// The commit `git_ref` names in the clone; "not found" only when the
    /// server does not list it either.
    async fn resolve(&self, url: &str, git_ref: &str) -> Result<String, CheckoutError> {
        // A ref named in full is only what it says: a branch named so
        // (what a protected ref is) is the clone's remote-tracking ref,
        // never a tag, and a tag never a branch.
        let candidates = if is_commit(git_ref) {
            vec![git_ref.to_string()]
        } else if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
            vec![format!("refs/remotes/origin/{branch}")]
        } else if git_ref.starts_with("refs/tags/") {
            vec![git_ref.to_string()]
        } else {
            vec![
                format!("refs/remotes/origin/{git_ref}"),
                format!("refs/tags/{git_ref}"),
            ]
        };
        for candidate in candidates {
            let spec = commit_spec(&candidate);
            let args: Vec<&str> = ["-C", SOURCE_DIR]
                .into_iter()
                .chain(VERIFY_COMMIT)
                .chain([spec.as_str()])
                .collect();
            if let Some(commit) = verified_commit(&self.run(&args).await?) {
                return Ok(commit);
            }
        }
        let listed = self
            .run(&["-C", SOURCE_DIR, "ls-remote", "origin", git_ref])
            .await?;
        if listed.exit_code == 0 && listed.stdout.trim().is_empty() {
            return Err(CheckoutError::RefNotFound {
                url: url.to_string(),
                git_ref: git_ref.to_string(),
            });
        }
        Err(CheckoutError::Unresolved {
            url: url.to_string(),
            git_ref: git_ref.to_string(),
            said: match listed.exit_code {
                0 => format!("the server lists {}", listed.stdout.trim()),
                _ => listed.error_line(),
            },
        })
    }

    async fn run(&self, args: &[&str]) -> Result<CommandOutput, CheckoutError> {
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
        // The checkout may be the jail's root's already (a layer over a
        // slot's working tree, which the host wrote and handed over):
        // git runs there only before the jail does.
        all.push("-c".into());
        all.push(format!(
            "safe.directory={}",
            self.workspace.join(SOURCE_DIR).display()
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
            RunError::Cancelled => CheckoutError::Cancelled {
                reason: self.cancel.reason(),
            },
            RunError::TimedOut => CheckoutError::TimedOut,
            other => CheckoutError::Git(other),
        })
    }
}

/// A full clone goes where a failed shallow one may have left files.
fn remove_partial(workspace: &Path) {
    let _ = std::fs::remove_dir_all(workspace.join(SOURCE_DIR));
}

/// `git rev-parse` resolving one name to a commit, or to nothing (never
/// an option, never another object).
const VERIFY_COMMIT: [&str; 4] = ["rev-parse", "--verify", "--quiet", "--end-of-options"];

/// The name `VERIFY_COMMIT` resolves: `name`'s commit.
fn commit_spec(name: &str) -> String {
    format!("{name}^{{commit}}")
}

/// The commit a `VERIFY_COMMIT` run printed, if it found one.
fn verified_commit(output: &CommandOutput) -> Option<String> {
    let commit = output.stdout.trim();
    (output.exit_code == 0 && is_commit(commit)).then(|| commit.to_string())
}

fn is_commit(git_ref: &str) -> bool {
    (7..=64).contains(&git_ref.len()) && git_ref.bytes().all(|b| b.is_ascii_hexdigit())
}
