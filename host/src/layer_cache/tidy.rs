//! What a build leaves in its slot, taken away after it (and before the
//! next where it could not be), and how much a slot may hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{
    BLOB_INFO_CACHE, CACHE_MOUNTS, CacheSlot, LOCAL_IMAGE, NameHolder, STORAGE, StorageRecord,
};
use crate::cancel::CancelSignal;
use crate::exec::{CommandOutput, HostCommand};
use crate::jail::Jail;
use crate::log::JobLog;
use crate::quota::DiskQuota;

/// How long one clean-up command may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);

impl CacheSlot {
    /// Readies the slot for a build: takes away what an earlier one left
    /// ([`CacheSlot::tidy`]) unless the slot's last run did so after
    /// itself; the build about to run may leave anything.
    pub async fn ready_for_build(
        &mut self,
        env: &BTreeMap<String, String>,
        jail: Option<&Jail>,
        log: &JobLog,
    ) {
        if !std::mem::take(&mut self.held.tidy) {
            self.tidy(env, jail, log).await;
            self.held.tidy = false;
        }
    }

    /// Takes away what one build may leave in the slot — build
    /// containers (with their mounts), the manifest list of its image's
    /// name and the name itself — keeping the layers, and then keeps the
    /// layers within bounds. Run after every build, whatever its outcome,
    /// and before one where the slot's last run could not; a tool is
    /// started only for what the storage's record ([`StorageRecord`])
    /// says is there. The slot counts as tidy once no container and no
    /// image of that name is left.
    pub async fn tidy(
        &mut self,
        env: &BTreeMap<String, String>,
        jail: Option<&Jail>,
        log: &JobLog,
    ) {
        let cancel = CancelSignal::new();
        let remove = |program: &'static str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let (dir, cancel) = (&self.dir, &cancel);
            async move {
                // Output goes to a log of its own: "no such image" is the
                // usual answer and nothing the job's reader needs.
                let quiet = JobLog::new(20);
                HostCommand {
                    program,
                    args: &args,
                    env,
                    cwd: dir,
                    timeout: Some(CLEANUP_TIMEOUT),
                    log: &quiet,
                    cancel,
                    cgroup: None,
                    jail,
                }
                .run()
                .await
                .ok()
            }
        };
        // Only what the storage's record says is there, a tool's start
        // each; all of it where the record cannot be read.
        let record = StorageRecord::read(&self.dir, Path::new(STORAGE), self.driver);
        let containers_left = record.as_ref().is_none_or(StorageRecord::holds_containers);
        let holder = record.as_ref().and_then(|r| r.holder_of(LOCAL_IMAGE));
        let gone = format!("{LOCAL_IMAGE}: image not known");
        let succeeded = |out: Option<CommandOutput>| out.is_some_and(|out| out.exit_code == 0);
        let untagged = |out: Option<CommandOutput>| {
            out.is_some_and(|out| out.exit_code == 0 || out.stderr.contains(&gone))
        };
        let (containers, name) = tokio::join!(
            async {
                match containers_left {
                    true => succeeded(remove("buildah", &["rm", "--all"]).await),
                    false => true,
                }
            },
            async {
                match holder {
                    Some(NameHolder::Nothing) => true,
                    Some(NameHolder::ManifestList) => {
                        succeeded(remove("podman", &["manifest", "rm", LOCAL_IMAGE]).await)
                    }
                    Some(NameHolder::Image) => {
                        untagged(remove("podman", &["untag", LOCAL_IMAGE]).await)
                    }
                    // A manifest list goes first, always: untagging one
                    // untags the image for this host's platform in it, and
                    // the list keeps the name.
                    None => {
                        remove("podman", &["manifest", "rm", LOCAL_IMAGE]).await;
                        untagged(remove("podman", &["untag", LOCAL_IMAGE]).await)
                    }
                }
            }
        );
        self.keep_layers_within_bounds(log);
        self.held.tidy = containers && name;
    }

    /// Empties the slot's layers where they have grown past three
    /// quarters of its file system.
    fn keep_layers_within_bounds(&self, log: &JobLog) {
        let size = self
            .held
            .disk
            .as_ref()
            .and_then(DiskQuota::used_bytes)
            .unwrap_or_else(|| {
                dir_size(&self.dir.join(STORAGE)) + dir_size(&self.dir.join(CACHE_MOUNTS))
            });
        if size > self.max_bytes / 4 * 3 {
            log.push(&format!(
                "[helix] build cache slot {} holds {} MiB, most of its {} MiB: emptied",
                self.dir.display(),
                size / (1024 * 1024),
                self.max_bytes / (1024 * 1024)
            ));
            for part in [STORAGE, CACHE_MOUNTS, BLOB_INFO_CACHE] {
                match std::fs::remove_dir_all(self.dir.join(part)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        tracing::warn!("could not empty build cache {}: {e}", self.dir.display());
                    }
                    _ => {}
                }
            }
        }
    }

    /// Empties the slot's repository mirrors (and their working trees)
    /// where they have grown past three quarters of their file system.
    /// Run after every job, once no layer of the job's is mounted over a
    /// working tree.
    pub fn keep_mirrors_within_bounds(&self, log: &JobLog) {
        let (mirrors, quota) = (self.mirrors(), self.held.mirrors.as_ref());
        let mib = quota.map_or(0, DiskQuota::mib);
        let used = quota.and_then(DiskQuota::used_bytes);
        if used.unwrap_or_else(|| dir_size(mirrors)) > mib * 1024 * 1024 / 4 * 3 {
            log.push(&format!(
                "[helix] the repository mirrors of build cache slot {} hold most of their {mib} MiB: emptied",
                self.dir.display(),
            ));
            // Only this job holds the slot: no checkout reads them now.
            let entries = std::fs::read_dir(mirrors).into_iter().flatten().flatten();
            for entry in entries.filter(|e| e.file_name() != "lost+found") {
                let path = entry.path();
                let removed = match path.is_dir() {
                    true => std::fs::remove_dir_all(&path),
                    false => std::fs::remove_file(&path),
                };
                if let Err(e) = removed {
                    tracing::warn!("could not empty git mirror {}: {e}", path.display());
                }
            }
        }
    }
}

/// Bytes under `dir`, for a slot with no file system of its own: not
/// following links and not crossing into mounts' contents twice (hard
/// links are counted once per name, an upper bound).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}
