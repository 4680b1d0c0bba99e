//! A bare git mirror per repository in a cache slot, so a job fetches only
//! what earlier jobs of its slot have not, and checks out locally.
//!
//! Mirrors live in the slot's own file system beside it (see
//! `layer_cache`): scoped like the slot (never shared across projects,
//! nor between protected and unprotected refs), within its size, emptied
//! with it, and never shown to a jail, so only the host ever writes a
//! mirror and git never reads a config, hook or attribute a build tool
//! wrote. Each mirror is `<hash of the URL>.git` with a lock file beside
//! it: a job holds the lock (an `flock`) from its fetch to the end of its
//! checkout, so a second process on the same data directory waits rather
//! than reading a mirror being fetched into or rebuilt.
//!
//! What is fetched: a commit id already in the mirror needs no network at
//! all; for a branch, tag or `HEAD` (a ref can move) the mirror fetches,
//! which asks the server where its refs are and brings only the objects
//! the mirror lacks: none when nothing moved, one request and no second
//! program. A fetch takes every branch and tag with `+` refspecs and
//! `--prune`, so force-pushed and deleted branches follow the server.
//!
//! Beside each mirror the slot keeps a working tree of the repository
//! (`<hash>.tree`), at the commit its last job built: a job's checkout
//! moves it to the job's commit, which writes only the files that
//! changed, and is then a layer of the job's own over it
//! (`helix_sandbox::layer`), so a large repository is not written out
//! anew for every job. Only the host writes the tree, and never while a
//! layer is mounted over it (a slot holds one job at a time); what a
//! build writes in its checkout lands in its own layer. Jobs whose
//! workspace may be kept after a failure (`keep_failed_workspaces`) get
//! their files written into the workspace instead, as do jobs without a
//! slot.
//!
//! A mirror is not trusted when it fails: a fetch or checkout that fails
//! is followed by `git fsck`, and a mirror it finds damaged is removed
//! and fetched again once, with a warning in the job's log.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::{CheckoutError, Git, VERIFY_COMMIT, Wanted, commit_spec, is_commit, verified_commit};
use crate::exec::{CommandOutput, SOURCE_DIR};
use crate::jail::IdRange;

/// Every branch and tag, replacing what a force push replaced.
const REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// The mirror of one repository.
pub(super) struct Mirror {
    dir: PathBuf,
    lock: PathBuf,
}

/// Why a checkout from the mirror did not happen: the mirror's fault (so
/// it is rebuilt) or the job's.
pub(super) enum MirrorFault {
    Damaged(String),
    Checkout(CheckoutError),
}

impl From<CheckoutError> for MirrorFault {
    fn from(e: CheckoutError) -> Self {
        MirrorFault::Checkout(e)
    }
}

/// Where a job's checkout from the slot's working tree goes.
pub(super) struct Layer<'a> {
    /// Where the job's own layer over the tree is kept.
    pub dir: &'a Path,
    /// Whose the tree's files are made: the jail's root, if the run's
    /// jail has a user namespace.
    pub owner: Option<IdRange>,
}

/// The mirror's lock, held until dropped (closing the file releases it).
pub(super) struct Held {
    _file: std::fs::File,
}

impl Mirror {
    /// The mirror of `url` under `root`.
    pub(super) fn of(root: &Path, url: &str) -> Mirror {
        let name = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..16]);
        Mirror {
            dir: root.join(format!("{name}.git")),
            lock: root.join(format!("{name}.lock")),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for the mirror's lock (in a blocking thread: `flock` blocks).
    pub(super) async fn lock(&self) -> Result<Held, CheckoutError> {
        let path = self.lock.clone();
        let locked = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            // SAFETY: flock on a descriptor this function owns.
            match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } {
                0 => Ok(Held { _file: file }),
                _ => Err(std::io::Error::last_os_error()),
            }
        })
        .await
        .map_err(|e| CheckoutError::Mirror(std::io::Error::other(e)))?;
        locked.map_err(CheckoutError::Mirror)
    }

    /// Removes the mirror and its working tree (held under its lock).
    pub(super) fn remove(&self) -> Result<(), CheckoutError> {
        for dir in [self.dir.clone(), self.tree()] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CheckoutError::Mirror(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks `wanted` of `url` out into the workspace from the mirror,
    /// fetching into it first what it lacks; with `layer`, as a layer
    /// over the slot's working tree of the repository, moved to the
    /// commit. The commit checked out.
    pub(super) async fn check_out(
        &self,
        git: &Git<'_>,
        url: &str,
        wanted: &Wanted<'_>,
        layer: Option<Layer<'_>>,
    ) -> Result<String, MirrorFault> {
        let git_ref = wanted.git_ref;
        if !self.dir.join("objects").is_dir() || !self.dir.join("HEAD").is_file() {
            if self.dir.exists() {
                return Err(MirrorFault::Damaged("it is not a git repository".into()));
            }
            self.git(git, &["init", "--quiet", "--bare"]).await?;
        }
        let tip = self.commit(git, url, git_ref).await?;
        let ancestry = match wanted.pinned {
            Some(pinned) => {
                let said = self
                    .git(git, &["merge-base", "--is-ancestor", pinned, &tip])
                    .await?;
                if said.exit_code != 0 {
                    // Not on the ref, unless the mirror is damaged.
                    self.verify(git, &["--connectivity-only"]).await?;
                }
                Some(said)
            }
            None => None,
        };
        let commit = wanted.commit(url, tip, ancestry.as_ref())?;
        if let Some(layer) = layer {
            match self.layered(git, &commit, &layer).await {
                Ok(()) => return Ok(commit),
                Err(why) => {
                    git.log.push(&format!(
                        "[helix] warning: the slot's working tree of the repository could not \
                         be used ({why}): removed, checking out into the workspace"
                    ));
                    let _ = std::fs::remove_dir_all(self.tree());
                }
            }
        }
        let source = git.workspace.join(SOURCE_DIR);
        let output = self.check_out_into(git, &source, &commit).await?;
        if output.exit_code == 0 {
            return Ok(commit);
        }
        self.verify(git, &[]).await?;
        Err(MirrorFault::Checkout(CheckoutError::Checkout {
            url: url.to_string(),
            git_ref: git_ref.to_string(),
            commit,
            said: output.error_line(),
        }))
    }

    /// The slot's working tree of the repository: a checkout beside the
    /// mirror, kept at the commit its last job built.
    fn tree(&self) -> PathBuf {
        self.dir.with_extension("tree")
    }

    /// Checks `commit` out at `dir` (new, or a checkout of the mirror),
    /// borrowing the mirror's objects (an alternate), so nothing is
    /// copied; it gets a `.git` of its own. Only files that differ are
    /// written: git's index compares size and time alone
    /// (`core.checkStat=minimal`), as a hand-over changes owners.
    async fn check_out_into(
        &self,
        git: &Git<'_>,
        dir: &Path,
        commit: &str,
    ) -> Result<CommandOutput, CheckoutError> {
        let dir = dir.display().to_string();
        if !Path::new(&dir).join(".git").is_dir() {
            git.run(&["init", "--quiet", "--", &dir]).await?;
            let alternates = Path::new(&dir).join(".git/objects/info");
            std::fs::create_dir_all(&alternates)
                .and_then(|()| {
                    let line = format!("{}\n", self.dir.join("objects").display());
                    std::fs::write(alternates.join("alternates"), line)
                })
                .map_err(CheckoutError::Mirror)?;
        }
        // A slot's working tree is the jail's root's once handed over;
        // only the host ever writes it.
        let safe = format!("safe.directory={dir}");
        git.run(&[
            "-C",
            &dir,
            "-c",
            &safe,
            "-c",
            "core.checkStat=minimal",
            "checkout",
            "--quiet",
            "--force",
            "--detach",
            commit,
            "--",
        ])
        .await
    }

    /// The job's checkout as its own layer over the slot's working tree,
    /// moved to `commit` first (writing only what changed since its last
    /// job) and handed over to the jail's root; why not, if it cannot be.
    async fn layered(&self, git: &Git<'_>, commit: &str, layer: &Layer<'_>) -> Result<(), String> {
        let tree = self.tree();
        let output = self
            .check_out_into(git, &tree, commit)
            .await
            .map_err(|e| e.to_string())?;
        if output.exit_code != 0 {
            return Err(output.error_line());
        }
        if let Some(owner) = layer.owner {
            owner.hand_over(&tree).map_err(|e| e.to_string())?;
        }
        let target = git.workspace.join(SOURCE_DIR);
        std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        crate::layer::mount(&tree, layer.dir, &target).map_err(|e| e.to_string())?;
        git.log.push(&format!(
            "[helix] the checkout is a layer of the job's own over the slot's working tree \
             of the repository ({}), which only the files that changed were written to",
            tree.display()
        ));
        Ok(())
    }

    /// The commit `git_ref` names, in the mirror once this returns.
    async fn commit(&self, git: &Git<'_>, url: &str, git_ref: &str) -> Result<String, MirrorFault> {
        let not_found = || CheckoutError::RefNotFound {
            url: url.to_string(),
            git_ref: git_ref.to_string(),
        };
        if is_commit(git_ref) {
            if let Some(commit) = self.local(git, git_ref).await? {
                git.log.push(&format!(
                    "[helix] commit {commit} is in the repository's mirror: nothing fetched"
                ));
                return Ok(commit);
            }
            return Ok(self
                .fetched(git, url, None, &[git_ref.to_string()])
                .await?
                .ok_or_else(not_found)?);
        }
        // A ref can move, so the server is asked where it is, in the fetch
        // itself: what the mirror has is not sent again.
        let local = LocalRef::of(git_ref);
        let commit = self
            .fetched(git, url, local.refspec.as_deref(), &local.names)
            .await?
            .ok_or_else(not_found)?;
        git.log.push(&format!(
            "[helix] {git_ref} is at {commit} in the repository's mirror"
        ));
        Ok(commit)
    }

    /// The commit the first of `names` in the mirror names after a fetch
    /// (with `refspec`, of one ref more); `None` when the mirror is sound
    /// and still lacks them all.
    async fn fetched(
        &self,
        git: &Git<'_>,
        url: &str,
        refspec: Option<&str>,
        names: &[String],
    ) -> Result<Option<String>, MirrorFault> {
        self.fetch(git, url, refspec).await?;
        for name in names {
            if let Some(commit) = self.local(git, name).await? {
                return Ok(Some(commit));
            }
        }
        // Missing from a damaged mirror is not missing.
        self.verify(git, &["--connectivity-only"]).await?;
        Ok(None)
    }

    /// The commit `name` (an id, maybe abbreviated) names in the mirror.
    async fn local(&self, git: &Git<'_>, name: &str) -> Result<Option<String>, CheckoutError> {
        let spec = commit_spec(name);
        let args: Vec<&str> = VERIFY_COMMIT.into_iter().chain([spec.as_str()]).collect();
        Ok(verified_commit(&self.git(git, &args).await?))
    }

    /// Fetches every branch and tag of `url` the mirror lacks, and with
    /// `refspec` one ref more; a failure the mirror's damage explains is
    /// that damage.
    async fn fetch(
        &self,
        git: &Git<'_>,
        url: &str,
        refspec: Option<&str>,
    ) -> Result<(), MirrorFault> {
        git.log
            .push("[helix] fetching what the repository's mirror lacks");
        let mut args = vec!["fetch", "--quiet", "--prune", "--no-tags", "--", url];
        args.extend(REFSPECS);
        args.extend(refspec);
        let output = self.git(git, &args).await?;
        if output.exit_code == 0 {
            return Ok(());
        }
        self.verify(git, &["--connectivity-only"]).await?;
        Err(MirrorFault::Checkout(CheckoutError::Clone {
            url: url.to_string(),
            said: output.error_line(),
        }))
    }

    /// `git fsck` of the mirror: `Damaged` with what it said when it fails.
    async fn verify(&self, git: &Git<'_>, options: &[&str]) -> Result<(), MirrorFault> {
        let mut args = vec!["fsck", "--no-progress", "--no-dangling"];
        args.extend(options);
        let output = self.git(git, &args).await?;
        match output.exit_code {
            0 => Ok(()),
            _ => Err(MirrorFault::Damaged(output.error_line())),
        }
    }

    /// git, hardened, on the mirror (no work tree).
    async fn git(&self, git: &Git<'_>, args: &[&str]) -> Result<CommandOutput, CheckoutError> {
        let git_dir = format!("--git-dir={}", self.dir.display());
        // Only the host maintains a mirror: no automatic gc, which could
        // detach into the background and outlive the job.
        let mut all = vec!["-c", "gc.auto=0", "-c", "maintenance.auto=false", &git_dir];
        all.extend(args);
        git.run(&all).await
    }
}

/// Where the mirror keeps a ref after a fetch, resolved the way a clone
/// resolves it: `refs/heads/X` only as a branch and `refs/tags/X` only
/// as a tag, a short name as a branch before a tag, a tag peeled to its
/// commit. `HEAD` and refs outside branches and tags (a merge request's
/// `refs/pull/1/head`) are fetched by a refspec of their own.
struct LocalRef {
    /// Each name the ref may be in the mirror, in the order looked at.
    names: Vec<String>,
    refspec: Option<String>,
}

/// Where the one ref a fetch brings beside branches and tags is kept.
const FETCHED_REF: &str = "refs/helix/fetched";

impl LocalRef {
    fn of(git_ref: &str) -> LocalRef {
        let (names, refspec) = if ["refs/heads/", "refs/tags/"]
            .iter()
            .any(|prefix| git_ref.starts_with(prefix))
        {
            (vec![git_ref.to_string()], None)
        } else if git_ref == "HEAD" || git_ref.starts_with("refs/") {
            let refspec = format!("+{git_ref}:{FETCHED_REF}");
            (vec![FETCHED_REF.to_string()], Some(refspec))
        } else {
            let names = ["heads", "tags"].map(|kind| format!("refs/{kind}/{git_ref}"));
            (names.to_vec(), None)
        };
        LocalRef { names, refspec }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_for_the_first_to_let_go() {
        let root = tempfile::tempdir().unwrap();
        let mirror = Mirror::of(root.path(), "https://example.invalid/r.git");
        let first = mirror.lock().await.unwrap();
        let again = Mirror::of(root.path(), "https://example.invalid/r.git");
        let second = tokio::spawn(async move { again.lock().await.map(|_| ()) });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "the lock is held by the first");
        drop(first);
        second.await.unwrap().unwrap();
    }

    #[test]
    fn each_repository_has_its_own_mirror() {
        let root = Path::new("/m");
        let a = Mirror::of(root, "https://example.invalid/a.git");
        let b = Mirror::of(root, "https://example.invalid/b.git");
        assert_ne!(a.dir(), b.dir());
        assert!(a.dir().starts_with(root));
    }
}
