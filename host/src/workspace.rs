//! A job's directories on the host: the workspace the builder sees, and
//! the state its container tools keep where the builder cannot reach.
//!
//! `<workspaces>/<job id>/` holds:
//! - `workspace/` — the builder's `/workspace`, read-only to its own code:
//!   the host's checkout and what granted programs write there. Programs
//!   run in it and every path argument must resolve inside it.
//! - `state/` — where the job's container storage is (`storage.conf`:
//!   its own `storage/` and `run/`, or a slot of the builder's layer cache,
//!   see [`crate::layer_cache`]), the registry settings builds use
//!   (`registries.conf`), the job's build secrets (`secrets/`), the
//!   scratch space its programs see as `/tmp` and `/var/tmp` (`tmp/`),
//!   the files of its jail (`jail/`, see [`crate::jail`]) and, when its
//!   checkout is a layer over its cache slot's working tree of the
//!   repository, what the build writes there (`source-layer/`).
//!   Every program of the job gets `CONTAINERS_STORAGE_CONF` pointing at
//!   it, so podman and buildah keep images and layers per job, and no
//!   builder can plant links in, or point a tool at, storage it made up.
//!
//! Both go when the job ends, so a cancelled build leaves nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::job::JobId;
use crate::layer_cache::{STORAGE, StorageDriver, StorageRecord, storage_conf};
use crate::quota::DiskQuota;
use crate::registry::RegistrySettings;

/// The run's copy of the registry credentials, in its state directory.
pub const RUN_AUTH_FILE: &str = "auth.json";
/// The run's Docker client directory (`DOCKER_CONFIG`: the same
/// credentials as its `config.json`), in its state directory.
pub const RUN_DOCKER_CONFIG: &str = "docker";

/// The job's state directory, in its directory.
const STATE: &str = "state";

/// What one attempt of a job is called on this host: its directory under
/// the workspaces and its control group. Attempts never share one.
pub fn run_name(id: &JobId, attempt: u32) -> String {
    format!("{id}.{attempt}")
}

/// One job's directories, created fresh.
#[derive(Debug)]
pub struct JobDirs {
    root: PathBuf,
    /// Where the run's container storage is: a directory the jail cannot
    /// replace (the slot's, or `root`), the storage below it, its driver.
    storage: (PathBuf, PathBuf, StorageDriver),
    /// What every program of the job gets, over its grants.
    program_env: BTreeMap<String, String>,
    /// The file system `root` is, when its size is limited.
    quota: Option<DiskQuota>,
}

impl JobDirs {
    /// Creates `root` with an empty workspace, and container state that
    /// reaches registries as `registries` says and keeps images in
    /// `shared` (a cache slot) or else in a storage of the job's own, with
    /// `driver` (what an earlier attempt left in `root` is removed first).
    /// With `quota_mib`, `root` is a file system of that size of its own.
    pub fn create(
        root: PathBuf,
        registries: &RegistrySettings,
        driver: StorageDriver,
        shared: Option<&Path>,
        quota_mib: Option<u64>,
    ) -> std::io::Result<Self> {
        let quota = match quota_mib {
            Some(mib) => Some(DiskQuota::fresh(&root, mib)?),
            None => {
                match std::fs::remove_dir_all(&root) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                None
            }
        };
        let storage = match shared {
            Some(slot) => (slot.to_path_buf(), PathBuf::from(STORAGE), driver),
            None => (root.clone(), Path::new(STATE).join(STORAGE), driver),
        };
        let mut dirs = JobDirs {
            storage,
            root,
            quota,
            program_env: BTreeMap::new(),
        };
        std::fs::create_dir_all(dirs.workspace())?;
        let state = dirs.state();
        std::fs::create_dir_all(&state)?;
        std::fs::write(
            dirs.storage_conf(),
            storage_conf(driver, shared.unwrap_or(&state)),
        )?;
        dirs.program_env = registries.write_for_run(&state)?;
        dirs.program_env.insert(
            "CONTAINERS_STORAGE_CONF".into(),
            dirs.storage_conf().display().to_string(),
        );
        Ok(dirs)
    }

    /// The builder's `/workspace`.
    pub fn workspace(&self) -> PathBuf {
        self.root.join("workspace")
    }

    fn state(&self) -> PathBuf {
        self.root.join(STATE)
    }

    /// What the run's container storage recorded it holds, if readable.
    pub fn storage_record(&self) -> Option<StorageRecord> {
        let (base, storage, driver) = &self.storage;
        StorageRecord::read(base, storage, *driver)
    }

    /// Where the job's build secrets are written: outside the workspace,
    /// so the builder's own code cannot read them.
    pub fn secrets(&self) -> PathBuf {
        self.state().join("secrets")
    }

    fn storage_conf(&self) -> PathBuf {
        self.state().join("storage.conf")
    }

    /// The scratch directory of the run's programs: their `/tmp`.
    pub fn scratch(&self) -> PathBuf {
        self.state().join("tmp")
    }

    /// What the host's checkout writes in the run's directory: the
    /// source, and its layer when it is one.
    pub fn written_by_checkout(&self) -> Vec<PathBuf> {
        vec![
            self.workspace().join(crate::exec::SOURCE_DIR),
            self.source_layer(),
        ]
    }

    /// Makes the workspace a directory whose later mounts reach a jail
    /// made before them (see `layer::share`): for a checkout that is a
    /// layer, mounted while the jail is made.
    pub fn share_workspace(&self) -> std::io::Result<()> {
        crate::layer::share(&self.workspace())
    }

    /// Where the run's own layer over its cache slot's working tree of
    /// the repository is kept, when its checkout is one (see
    /// `source::mirror`): beside the workspace, within its quota.
    pub fn source_layer(&self) -> PathBuf {
        self.state().join("source-layer")
    }

    /// Where the host writes the files of the run's jail.
    pub fn jail_files(&self) -> PathBuf {
        self.state().join("jail")
    }

    /// Variables every program of the job gets, over anything the grants
    /// or the builder set: its container storage and registry settings.
    pub fn program_env(&self) -> BTreeMap<String, String> {
        self.program_env.clone()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The size limit of the job's directory, if it has one.
    pub fn quota(&self) -> Option<&DiskQuota> {
        self.quota.as_ref()
    }

    /// Removes the run's build secrets and its copies of the registry
    /// credentials, which outlive no run.
    pub fn remove_secrets(&self) -> std::io::Result<()> {
        let gone = |result: std::io::Result<()>| match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        gone(std::fs::remove_dir_all(self.secrets()))?;
        gone(std::fs::remove_dir_all(
            self.state().join(RUN_DOCKER_CONFIG),
        ))?;
        gone(std::fs::remove_file(self.state().join(RUN_AUTH_FILE)))
    }

    /// Leaves everything where it is, for a person to look at.
    pub fn keep(self) {
        if let Some(quota) = self.quota {
            quota.keep_mounted();
        }
    }

    /// Removes everything. Processes of a cancelled job may still be
    /// exiting (they get SIGKILL after a grace period) and writing, so a
    /// failed removal is retried once they are surely gone.
    pub fn remove(self) {
        // The run's layer over its slot's working tree, if its checkout
        // is one: before the directory goes and the slot's next job
        // changes the tree.
        crate::layer::unmount_below(&self.root);
        if self.quota.is_some() {
            // Unmounting takes it all at once, lazily while in use.
            return;
        }
        let dir = self.root;
        if std::fs::remove_dir_all(&dir).is_ok() || !dir.exists() {
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(crate::exec::KILL_GRACE + Duration::from_secs(1)).await;
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("could not remove job directory {}: {e}", dir.display());
            }
        });
    }
}
