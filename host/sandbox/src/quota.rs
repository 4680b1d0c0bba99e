//! Disk quotas: a directory with a file system of its own, of a fixed
//! size, so what a build writes there (its workspace, its layers) cannot
//! fill the host's disk.
//!
//! The file system is ext4 in a sparse file beside the directory, mounted
//! through a loop device with `discard`: it takes only what is written,
//! and what is deleted inside goes back to the host.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory whose contents are limited to a fixed size. Dropping it
/// unmounts the file system (and removes its file, unless it is kept).
#[derive(Debug)]
pub struct DiskQuota {
    dir: PathBuf,
    image: PathBuf,
    mib: u64,
    /// Whether the file outlives the mount (a cache slot's, for the next
    /// start).
    persistent: bool,
}

impl DiskQuota {
    /// A new, empty file system of `mib` MiB at `dir` (created), replacing
    /// whatever was mounted or kept there; removed entirely on drop.
    ///
    /// Its file is the spare one made beside `dir` after the last call
    /// (see [`spare_of`]) where there is one, so the caller does not wait
    /// for `mkfs`; the next spare is made meanwhile.
    pub fn fresh(dir: &Path, mib: u64) -> std::io::Result<Self> {
        let image = image_of(dir);
        release(dir, &image);
        if let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e);
        }
        let spare = spare_of(dir, mib);
        // Taken whole or not at all: a rename, and the spare's maker
        // renames it in only once made.
        let _ = std::fs::rename(&spare, &image);
        let quota = Self::mount(dir, image, mib, false);
        make_spare(spare, mib);
        quota
    }

    /// The file system of `mib` MiB at `dir`, as an earlier start of the
    /// server left it (mounted or not), else a new one; its file is kept
    /// on drop, so the contents outlive this process.
    pub fn persistent(dir: &Path, mib: u64) -> std::io::Result<Self> {
        let image = image_of(dir);
        if is_mountpoint(dir) {
            // As mounted by a server before jails had users.
            run(Command::new("mount")
                .args(["-o", "remount,suid,dev"])
                .arg(dir))?;
            return Ok(DiskQuota {
                dir: dir.to_path_buf(),
                image,
                mib,
                persistent: true,
            });
        }
        Self::mount(dir, image, mib, true)
    }

    fn mount(dir: &Path, image: PathBuf, mib: u64, persistent: bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        if !image.exists() {
            make_file_system(&image, mib, persistent)?;
        }
        // Not `nosuid` or `nodev`: a jail's user namespace cannot remount
        // what it binds from here without them, and runc 1.1 (a build
        // step's read-only bind mounts, secrets) does. The jail's root
        // can make no device (no CAP_MKNOD on the host) and no program
        // that runs as a host user outside its range.
        let options = match persistent {
            true => "loop,discard",
            false => "loop,discard,noatime",
        };
        run(Command::new("mount")
            .args(["-o", options])
            .arg(&image)
            .arg(dir))?;
        Ok(DiskQuota {
            dir: dir.to_path_buf(),
            image,
            mib,
            persistent,
        })
    }

    pub fn mib(&self) -> u64 {
        self.mib
    }

    /// Whether the file system is still mounted at its directory and takes
    /// writes: one that turned read-only (ext4 does on an I/O error, such
    /// as its file's disk filling up) or failed answers why not.
    pub fn check(&self) -> std::io::Result<()> {
        if !is_mountpoint(&self.dir) {
            return Err(std::io::Error::other("it is no longer mounted"));
        }
        let probe = self.dir.join(".helix-probe");
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)
    }

    /// Bytes in use on the file system, as it counts them (asked at once,
    /// where walking it would visit every file); `None` when it cannot be
    /// asked.
    pub fn used_bytes(&self) -> Option<u64> {
        space(&self.dir).map(|(free, total)| total.saturating_sub(free))
    }

    /// Whether (nearly) nothing is left: what a build that failed for want
    /// of space leaves.
    pub fn is_full(&self) -> bool {
        space(&self.dir)
            .is_some_and(|(free, _)| free < (self.mib * 1024 * 1024 / 50).max(4 * 1024 * 1024))
    }

    /// Leaves the file system mounted at its directory for good (a failed
    /// job's workspace kept for debugging: unmount it and remove
    /// `<dir>.img` when done).
    pub fn keep_mounted(self) {
        std::mem::forget(self);
    }
}

impl Drop for DiskQuota {
    fn drop(&mut self) {
        let image = self
            .image
            .canonicalize()
            .unwrap_or_else(|_| self.image.clone());
        if unmount(&self.dir) {
            await_detached(&image);
        }
        if !self.persistent {
            let _ = std::fs::remove_file(&self.image);
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Makes `image` a file of `mib` MiB holding an empty ext4 file system:
/// with a journal if it is `persistent`.
fn make_file_system(image: &Path, mib: u64, persistent: bool) -> std::io::Result<()> {
    let file = std::fs::File::create(image)?;
    file.set_len(mib * 1024 * 1024)?;
    // No reserved blocks and lazy initialisation: a build gets all of it,
    // and making it takes milliseconds. A job's own file system goes with
    // the job, so it needs no journal: the build tools' many fsyncs then
    // cost what they cost outside.
    let features = if persistent {
        "has_journal"
    } else {
        "^has_journal"
    };
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-O", features, "-E"])
        .arg("lazy_itable_init=1,lazy_journal_init=1,nodiscard")
        .arg(image))
}

/// The file [`DiskQuota::fresh`] takes for a directory beside `dir`, of
/// `mib` MiB, instead of making one: an empty file system made by the
/// host and never mounted, in the directory that holds `dir` (which no
/// jail shows: only `dir` itself).
pub fn spare_of(dir: &Path, mib: u64) -> PathBuf {
    dir.with_file_name(format!(".spare-{mib}MiB.img"))
}

/// Makes `spare` (of `mib` MiB) on a thread of its own, unless it is there
/// or being made: written under a name of its own and renamed to
/// `spare` once whole.
fn make_spare(spare: PathBuf, mib: u64) {
    static MAKING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let making = || MAKING.lock().unwrap_or_else(|e| e.into_inner());
    {
        let mut making = making();
        if spare.exists() || making.contains(&spare) {
            return;
        }
        making.push(spare.clone());
    }
    std::thread::spawn(move || {
        let mut partial = spare.clone().into_os_string();
        partial.push(format!(".{}.partial", std::process::id()));
        let partial = PathBuf::from(partial);
        match make_file_system(&partial, mib, false) {
            Ok(()) => {
                if let Err(e) = std::fs::rename(&partial, &spare) {
                    tracing::warn!(
                        "cannot keep a spare file system at {}: {e}",
                        spare.display()
                    );
                }
            }
            Err(e) => tracing::warn!("cannot make a spare file system {}: {e}", spare.display()),
        }
        let _ = std::fs::remove_file(&partial);
        making().retain(|s| *s != spare);
    });
}

/// Removes the spare file systems kept in `dir` and any a killed process
/// left half made: what the next [`DiskQuota::fresh`] would otherwise
/// take could be of a size no longer asked for.
pub fn remove_spares(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(".spare-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Unmounts whatever a quota left at `dir` (kept, or left by a crash)
/// and removes its file.
pub fn release(dir: &Path, image: &Path) {
    if is_mountpoint(dir) {
        unmount(dir);
    }
    let _ = std::fs::remove_file(image);
}

/// Unmounts every quota file system whose file is gone — left mounted by
/// a server that never stopped (killed, or a test's) after its data dir
/// was removed: its loop device is attached to `<dir>.img (deleted)` —
/// and returns their directories. Unmounting detaches the loop device
/// (mount set it to clear itself).
pub fn sweep_orphans() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for line in mounts.lines() {
        // `id parent dev root point options [tags] - type source super`
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(point), Some(source)) = (fields.get(4), fields.get(dash + 2)) else {
            continue;
        };
        let Some(device) = source
            .strip_prefix("/dev/")
            .filter(|d| d.starts_with("loop"))
        else {
            continue;
        };
        let backing = std::fs::read_to_string(format!("/sys/block/{device}/loop/backing_file"))
            .unwrap_or_default();
        let point = PathBuf::from(point.replace("\\040", " "));
        let orphan = format!("{} (deleted)", image_of(&point).display());
        if backing.trim_end_matches('\n') == orphan {
            unmount(&point);
            swept.push(point);
        }
    }
    swept
}

/// Bytes free (to an unprivileged writer) and in all on the file system
/// holding `path`; `None` when it cannot be asked.
pub fn space(path: &Path) -> Option<(u64, u64)> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs writes the struct it is given; read only on success.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let stat = unsafe { stat.assume_init() };
    // The fields' widths differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    let (free, total) = (
        stat.f_bavail as u64 * stat.f_frsize as u64,
        stat.f_blocks as u64 * stat.f_frsize as u64,
    );
    Some((free, total))
}

/// The file holding `dir`'s file system: beside it, so the directory's
/// own contents never include it.
pub fn image_of(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".img");
    dir.with_file_name(name)
}

/// Unmounts `dir`, lazily when busy: mounts a killed build left inside
/// go with it. Whether it was unmounted at once.
pub(crate) fn unmount(dir: &Path) -> bool {
    let done = Command::new("umount").arg(dir).output();
    if done.is_ok_and(|o| o.status.success()) {
        return true;
    }
    let _ = Command::new("umount").arg("-l").arg(dir).output();
    false
}

/// Waits (at most a second) until no loop device is attached to `image`:
/// the kernel detaches one that clears itself a moment after its last
/// unmount, from a work queue, and nothing may be left once the quota's
/// holder is gone.
fn await_detached(image: &Path) {
    let attached = || {
        let devices = std::fs::read_dir("/sys/block")
            .into_iter()
            .flatten()
            .flatten();
        devices.into_iter().any(|device| {
            std::fs::read_to_string(device.path().join("loop/backing_file"))
                .is_ok_and(|backing| Path::new(backing.trim_end_matches('\n')) == image)
        })
    };
    // Usually gone within a few milliseconds: asked every one.
    for _ in 0..1000 {
        if !attached() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn is_mountpoint(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(1))
            .any(|point| Path::new(&point.replace("\\040", " ")) == dir)
    })
}

fn run(command: &mut Command) -> std::io::Result<()> {
    let output = command.output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{:?} failed: {}",
        command.get_program(),
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}
