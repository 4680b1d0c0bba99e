//! The layer cache between jobs: container storage a builder's jobs reuse,
//! so a rebuild after a small change runs only the steps that changed.
//!
//! Each builder with the cache on has as many storage *slots* as the host
//! has workers, under `<data_dir>/build-cache/<builder>/<n>/`. A job holds
//! one slot alone for its whole run — preferably the one its repository
//! used last, where its layers are — so:
//!
//! - concurrent jobs never share a storage, and a cancelled or failed job
//!   can be cleaned up completely: afterwards the host removes every build
//!   container left in its slot (`buildah rm --all`: a killed build leaves
//!   its working containers and their mounts) and the names the build gave
//!   its image, keeping the layers as cache;
//! - a Dockerfile cannot start `FROM` another job's image by name: the
//!   image name is removed after every build, and before one unless the
//!   slot's last build in this process was cleaned up after; cached layers
//!   are reachable only by content (their digests);
//! - a slot serves one [`CacheScope`] at a time: the jobs of no project
//!   (which share it, as jobs on one BuildKit daemon do), one project's
//!   jobs, or one project's jobs of its protected refs. Handed to another
//!   scope it is emptied first — its layers, its cache mounts and its
//!   managed engine — so no project's cached step ever serves another,
//!   and a build of an unprotected ref never writes what a release build
//!   reads. The scope is kept beside the slot (`<n>.scope`), so a restart
//!   does not forget whose layers a slot holds.
//!
//! A slot also keeps its jobs' `RUN --mount=type=cache` data (`mounts/`,
//! shown to the jail where buildah keeps it) and the tools' blob info
//! cache (`blob-info-cache/`: which compressed blob a registry holds for
//! a layer, so a push sends only the layers the registry lacks), within
//! its size.
//!
//! A slot also keeps a bare git mirror of each repository its jobs built
//! (`<n>.git/`, see `source::mirror`), in a file system of its own of a
//! quarter of the slot's size: only the host writes it (the jail is shown
//! the slot, never its mirrors), it is emptied with the slot, and emptied
//! after a job once mostly full.
//!
//! A slot over the size cap is emptied after its job. Jobs with `no_cache`,
//! and builders with `cache = false`, get a fresh storage of their own,
//! removed with the job. The storage driver is overlay where the kernel
//! and the data directory's file system allow it, else vfs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

mod record;
mod tidy;

use crate::cgroup::LimitHit;
use crate::docker_engine::DockerEngine;
pub use crate::job::CacheScope;
use crate::managed_engine::{EngineError, ManagedEngine};
use crate::quota::{self, DiskQuota};
pub use record::{NameHolder, StorageRecord};

/// What the build tools name the image they build (see `plugins/kit`).
pub const LOCAL_IMAGE: &str = "localhost/helix-image";

/// The container storage's directory in the directory [`storage_conf`]
/// roots it in (a slot's, a job's state directory).
pub const STORAGE: &str = "storage";
/// A slot's directory of cache mounts.
const CACHE_MOUNTS: &str = "mounts";
/// A slot's blob info cache: which blob each registry holds for a layer.
const BLOB_INFO_CACHE: &str = "blob-info-cache";
/// Smallest slot file system: a build's tools need some room.
const MIN_SLOT_MIB: u64 = 64;

/// A containers/storage driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageDriver {
    Overlay,
    Vfs,
}

impl StorageDriver {
    /// overlay when the kernel has it and `dir` is not itself on overlayfs
    /// (which cannot be an overlay's upper layer); vfs otherwise.
    pub fn for_dir(dir: &Path) -> Self {
        const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
        let kernel_has_overlay = std::fs::read_to_string("/proc/filesystems")
            .is_ok_and(|fs| fs.lines().any(|l| l.trim_end().ends_with("\toverlay")));
        let on_overlay = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .ok()
            .and_then(|path| {
                let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
                // SAFETY: `path` is a valid C string and `stat` is written
                // by statfs before it is read.
                let ok = unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) } == 0;
                // f_type's width differs between architectures.
                #[allow(clippy::unnecessary_cast)]
                ok.then(|| unsafe { stat.assume_init() }.f_type as i64)
            })
            .is_some_and(|kind| kind == OVERLAYFS_SUPER_MAGIC);
        if kernel_has_overlay && !on_overlay {
            StorageDriver::Overlay
        } else {
            StorageDriver::Vfs
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StorageDriver::Overlay => "overlay",
            StorageDriver::Vfs => "vfs",
        }
    }
}

/// `storage.conf` for a storage rooted at `dir`.
pub fn storage_conf(driver: StorageDriver, dir: &Path) -> String {
    // containers/storage reads this file as TOML; Debug quoting is TOML's
    // basic-string escaping for the paths a data dir can have.
    // The same storage for root of a user namespace (a jail's), which
    // containers/storage takes for rootless and which reads only
    // `rootless_storage_path`.
    let storage = dir.join(STORAGE).display().to_string();
    format!(
        "[storage]\ndriver = \"{}\"\ngraphroot = {storage:?}\nrunroot = {:?}\nrootless_storage_path = {storage:?}\n",
        driver.as_str(),
        dir.join("run").display().to_string(),
    )
}

/// The cache of every builder that has one.
#[derive(Debug)]
pub struct BuildCache {
    driver: StorageDriver,
    max_bytes: u64,
    /// Slots by builder.
    slots: BTreeMap<String, BuilderSlots>,
    root: PathBuf,
}

/// One builder's slots.
#[derive(Debug, Default)]
struct BuilderSlots {
    each: Vec<Arc<Mutex<SlotState>>>,
    /// Held (written) while their idle engines are stopped, and read while
    /// a job chooses its slot: a job that comes meanwhile waits for its
    /// repository's slot to be free again instead of taking another,
    /// without its layers, while the stop holds that one.
    engine_stops: tokio::sync::RwLock<()>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The Docker Engine the host runs for it, for a builder in managed
    /// engines (before `disk`: it stops before its data is unmounted).
    engine: Option<ManagedEngine>,
    /// Since when no job has held it (none while one does).
    idle_since: Option<std::time::Instant>,
    /// The repository its last job built.
    repository: Option<String>,
    /// Whose layers it holds, once read from beside it.
    scope: Option<CacheScope>,
    /// Its file system of `max_bytes`, once a job has used it.
    disk: Option<DiskQuota>,
    /// Its repositories' mirrors' file system, once a job has used it.
    mirrors: Option<DiskQuota>,
    /// Whether the last run that built in it removed its leftovers and
    /// kept its layers within bounds after itself: never so once this
    /// host starts (a crash may have left anything), nor while a run
    /// builds in it.
    tidy: bool,
}

/// One slot, held by one job until dropped.
pub struct CacheSlot {
    dir: PathBuf,
    mirrors: PathBuf,
    driver: StorageDriver,
    max_bytes: u64,
    held: OwnedMutexGuard<SlotState>,
    /// The scope whose layers were emptied out of it for this job.
    emptied: Option<CacheScope>,
    /// Why its file systems were made anew for this job, if they were.
    remade: Vec<String>,
}

impl BuildCache {
    /// A cache under `root` for `builders`, `slots` slots each, every slot
    /// a file system of `max_bytes` of its own (so a build cannot write
    /// past it), emptied after a job once mostly full.
    pub fn new(root: PathBuf, builders: &[String], slots: usize, max_bytes: u64) -> Self {
        let driver = StorageDriver::for_dir(root.parent().unwrap_or(&root));
        let slots = builders
            .iter()
            .map(|b| {
                let each = (0..slots.max(1))
                    .map(|_| Arc::new(Mutex::new(SlotState::default())))
                    .collect();
                let slots = BuilderSlots {
                    each,
                    ..BuilderSlots::default()
                };
                (b.clone(), slots)
            })
            .collect();
        BuildCache {
            driver,
            max_bytes,
            slots,
            root,
        }
    }

    pub fn driver(&self) -> StorageDriver {
        self.driver
    }

    /// Stops every slot's managed engine and unmounts its file systems
    /// (their files kept, mounted again by the next [`BuildCache::acquire`]),
    /// waiting for slots in use: what stopping the service does, so no
    /// mount or loop device outlives it.
    pub async fn release(&self) {
        for slot in self.slots.values().flat_map(|slots| &slots.each) {
            let mut held = slot.lock().await;
            if let Some(engine) = held.engine.take() {
                engine.stop().await;
            }
            held.disk = None;
            held.mirrors = None;
        }
    }

    /// Stops the managed engines that have sat without a job for longer
    /// than their builder's `engine_idle_secs` (slots in use are skipped:
    /// their engines are not idle); how many were stopped.
    pub async fn stop_idle_engines(&self) -> usize {
        let mut stopped = 0;
        for (builder, slots) in &self.slots {
            let _stopping = slots.engine_stops.write().await;
            for (n, slot) in slots.each.iter().enumerate() {
                let Ok(mut held) = slot.try_lock() else {
                    continue;
                };
                let idle = held.idle_since.map(|since| since.elapsed());
                let Some((engine, idle)) = held.engine.as_ref().zip(idle) else {
                    continue;
                };
                if idle < engine.idle_stop() {
                    continue;
                }
                tracing::info!(
                    "stopping the managed engine of {builder}'s cache slot {n}: no job for {}s",
                    idle.as_secs()
                );
                if let Some(engine) = held.engine.take() {
                    engine.stop().await;
                    stopped += 1;
                }
            }
        }
        stopped
    }

    /// Whether `builder`'s jobs use the cache.
    pub fn covers(&self, builder: &str) -> bool {
        self.slots.contains_key(builder)
    }

    /// A slot of `builder`'s cache for a job of `repository` in `scope`:
    /// a free one of the scope that last built the repository, else a
    /// free one of the scope, else a free one never used, else any free
    /// one, else the first to come free — emptied first when it held
    /// another scope's layers. While idle engines of the builder are
    /// being stopped, their slots are not free yet: it waits for the
    /// stops. `None` when the builder has no cache.
    pub async fn acquire(
        &self,
        builder: &str,
        scope: &CacheScope,
        repository: &str,
    ) -> std::io::Result<Option<CacheSlot>> {
        let Some(slots) = self.slots.get(builder) else {
            return Ok(None);
        };
        let dir = |n: usize| self.root.join(builder).join(n.to_string());
        let choosing = slots.engine_stops.read().await;
        let mut free: Vec<(usize, OwnedMutexGuard<SlotState>)> = slots
            .each
            .iter()
            .enumerate()
            .filter_map(|(n, slot)| slot.clone().try_lock_owned().ok().map(|g| (n, g)))
            .collect();
        for (n, held) in &mut free {
            load_scope(held, &dir(*n));
        }
        // Lower is better.
        let rank = |(n, held): &(usize, OwnedMutexGuard<SlotState>)| {
            let same_scope = held.scope.as_ref() == Some(scope);
            match (same_scope, held.repository.as_deref() == Some(repository)) {
                (true, true) => 0,
                (true, false) => 1,
                _ if !quota::image_of(&dir(*n)).exists() => 2,
                _ => 3,
            }
        };
        let chosen = free
            .iter()
            .enumerate()
            .min_by_key(|(_, slot)| rank(slot))
            .map(|(at, _)| at)
            .map(|at| free.swap_remove(at));
        drop((free, choosing));
        let (n, mut held) = match chosen {
            Some(chosen) => chosen,
            None => {
                let waits =
                    slots.each.iter().enumerate().map(|(n, slot)| {
                        Box::pin(async move { (n, slot.clone().lock_owned().await) })
                    });
                let (n, mut held) = futures_util::future::select_all(waits).await.0;
                load_scope(&mut held, &dir(n));
                (n, held)
            }
        };
        let dir = dir(n);
        let emptied = match held.scope.as_ref() {
            Some(held_scope) if held_scope != scope => {
                let previous = held_scope.clone();
                empty_for(&mut held, &dir, scope)?;
                Some(previous)
            }
            _ => None,
        };
        let mut slot = CacheSlot {
            mirrors: mirrors_of(&dir),
            remade: Vec::new(),
            dir,
            driver: self.driver,
            max_bytes: self.max_bytes,
            held,
            emptied,
        };
        let mib = (self.max_bytes / (1024 * 1024)).max(MIN_SLOT_MIB);
        if let Some(why) = sound(&mut slot.held.disk, &slot.dir, mib)? {
            // Its engine's data was on the file system made anew.
            slot.held.engine = None;
            slot.remade.push(why);
        }
        let mib = (self.max_bytes / 4 / (1024 * 1024)).max(MIN_SLOT_MIB);
        if let Some(why) = sound(&mut slot.held.mirrors, &slot.mirrors, mib)? {
            slot.remade.push(why);
        }
        slot.held.repository = Some(repository.to_string());
        slot.held.idle_since = None;
        Ok(Some(slot))
    }
}

/// Where the scope of the slot at `dir` is kept: beside it, outside the
/// file system its builds write.
fn scope_file(dir: &Path) -> PathBuf {
    dir.with_extension("scope")
}

/// Mounts `quota` (of `mib` MiB at `dir`) if it is not, and checks it
/// takes writes: one that turned read-only or failed (a full data disk
/// under its file does that) is made anew, empty, and the answer says
/// why. An error when even the new one fails.
fn sound(quota: &mut Option<DiskQuota>, dir: &Path, mib: u64) -> std::io::Result<Option<String>> {
    if quota.is_none() {
        *quota = Some(DiskQuota::persistent(dir, mib)?);
    }
    let Some(Err(e)) = quota.as_ref().map(DiskQuota::check) else {
        return Ok(None);
    };
    tracing::warn!(dir = %dir.display(), "cache file system failed, made anew: {e}");
    *quota = None;
    quota::release(dir, &quota::image_of(dir));
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let fresh = DiskQuota::persistent(dir, mib)?;
    fresh.check()?;
    *quota = Some(fresh);
    Ok(Some(format!(
        "the build cache file system {} failed ({e}): made anew, empty",
        dir.display()
    )))
}

/// Where the slot at `dir` keeps its repositories' mirrors: beside it, out
/// of the jail's sight.
fn mirrors_of(dir: &Path) -> PathBuf {
    dir.with_extension("git")
}

/// Reads the slot's scope, once: a slot without the file holds no
/// project's layers (it is new, or from before projects).
fn load_scope(held: &mut SlotState, dir: &Path) {
    if held.scope.is_none() {
        let text = std::fs::read_to_string(scope_file(dir)).unwrap_or_default();
        held.scope = Some(CacheScope::from_stored(text));
    }
}

/// Empties the slot at `dir` for `scope`: its managed engine stopped, its
/// file system (layers and cache mounts) removed, the new scope recorded
/// before anything of it is written.
fn empty_for(held: &mut SlotState, dir: &Path, scope: &CacheScope) -> std::io::Result<()> {
    held.engine = None;
    held.disk = None;
    held.mirrors = None;
    held.repository = None;
    for dir in [dir.to_path_buf(), mirrors_of(dir)] {
        quota::release(&dir, &quota::image_of(&dir));
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(scope_file(dir), scope.as_str())?;
    held.scope = Some(scope.clone());
    Ok(())
}

impl CacheSlot {
    /// The scope whose layers were emptied out of the slot for this job,
    /// if it held another's.
    pub fn emptied(&self) -> Option<&CacheScope> {
        self.emptied.as_ref()
    }

    /// Why the slot's file systems were made anew before this job (they
    /// had turned read-only or failed), if they were.
    pub fn remade(&self) -> &[String] {
        &self.remade
    }

    /// The slot's storage, created if new.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the slot keeps its repositories' mirrors (mounted by
    /// [`BuildCache::acquire`]).
    pub fn mirrors(&self) -> &Path {
        &self.mirrors
    }

    /// The slot's managed engine, started by `start` (given the slot's
    /// directory) when it runs none.
    pub async fn engine<F, Fut>(&mut self, start: F) -> Result<Arc<DockerEngine>, EngineError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<ManagedEngine, EngineError>>,
    {
        if self.held.engine.is_none() {
            self.held.engine = Some(start(self.dir.clone()).await?);
        }
        Ok(self
            .held
            .engine
            .as_ref()
            .expect("just started")
            .engine()
            .clone())
    }

    /// A limit the slot's managed engine reached (during this job: a slot
    /// holds one job at a time, and an engine that reached one is stopped,
    /// so the next starts afresh).
    pub fn engine_limit_hit(&mut self) -> Option<LimitHit> {
        let hit = self.held.engine.as_ref()?.limit_hit();
        if hit.is_some() {
            self.held.engine = None;
        }
        hit
    }

    /// Where its jobs' `RUN --mount=type=cache` data is kept (made on
    /// first use): in the slot, within its size, emptied with it.
    pub fn cache_mounts(&self) -> std::io::Result<PathBuf> {
        let dir = self.dir.join(CACHE_MOUNTS);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Where its jobs' tools keep their blob info cache (made by the jail).
    pub fn blob_info_cache(&self) -> PathBuf {
        self.dir.join(BLOB_INFO_CACHE)
    }

    pub fn driver(&self) -> StorageDriver {
        self.driver
    }

    /// The slot's file system, which bounds what a build writes in it.
    pub fn disk(&self) -> Option<&DiskQuota> {
        self.held.disk.as_ref()
    }
}

impl Drop for CacheSlot {
    fn drop(&mut self) {
        self.held.idle_since = Some(std::time::Instant::now());
    }
}
