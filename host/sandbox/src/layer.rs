//! A run's own writable layer over a directory tree the host keeps for
//! many runs (a repository's working tree in a cache slot): an overlay
//! file system whose lower layer is the kept tree, read-only to it, and
//! whose upper layer is in the run's directory, within its quota. The run
//! sees the tree without a copy of it; what it writes stays its own and
//! goes with it. Only the host mounts and changes the kept tree, and only
//! while no layer is mounted over it.
//!
//! Mounted in the host's mount namespace, at a directory [`share`]d
//! before the run's jail was made (the host's mounts are private: a
//! later one would not reach the jail otherwise), so the jail is made
//! while the checkout runs; unmounted before the run's directory is
//! removed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Mounts at `target` (an empty directory) a layer over `tree`, its
/// upper layer and overlayfs' work directory made in `layer` (on the
/// file system `target` is on, outside `target`).
pub fn mount(tree: &Path, layer: &Path, target: &Path) -> std::io::Result<()> {
    let (upper, work) = (layer.join("upper"), layer.join("work"));
    for dir in [&upper, &work] {
        std::fs::create_dir_all(dir)?;
    }
    let paths = [tree, &upper, &work].map(|p| p.display().to_string());
    // Mount options are split on commas and lower layers on colons.
    if let Some(path) = paths.iter().find(|p| p.contains([',', ':', '\\'])) {
        return Err(std::io::Error::other(format!(
            "{path} has a character overlayfs options cannot hold"
        )));
    }
    let [lower, upper, work] = paths;
    let output = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={lower},upperdir={upper},workdir={work}"))
        .arg(target)
        .output()?;
    match output.status.success() {
        true => Ok(()),
        false => Err(std::io::Error::other(format!(
            "mount -t overlay failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

/// Makes `dir` a mount of its own (bound onto itself) that shares what
/// is mounted in it later with the copies of it made meanwhile: a jail
/// made now (whose copy only receives, never sends) shows a layer
/// mounted in `dir` afterwards. [`unmount_below`] takes it away.
pub fn share(dir: &Path) -> std::io::Result<()> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    let mounted = |source: *const libc::c_char, flags: libc::c_ulong| {
        // SAFETY: valid NUL-terminated paths (or null where the call
        // takes none) that outlive the call.
        match unsafe {
            libc::mount(
                source,
                path.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    mounted(path.as_ptr(), libc::MS_BIND)?;
    mounted(std::ptr::null(), libc::MS_SHARED)
}

/// Unmounts every layer mounted at or below `dir`, and every directory
/// [`share`]d (bound onto itself) below it (lazily where busy: a killed
/// build's processes may still hold it); nothing when none is.
pub fn unmount_below(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else {
        return;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // `id parent dev root point options [tags] - type source super`.
    let mounts: Vec<(&str, &str, PathBuf, PathBuf, &str)> = info
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let path = |field: &str| PathBuf::from(field.replace("\\040", " "));
            Some((
                *fields.first()?,
                *fields.get(1)?,
                path(fields.get(3)?),
                path(fields.get(4)?),
                after.split(' ').next()?,
            ))
        })
        .collect();
    let bound_onto_itself = |parent: &str, root: &Path, point: &Path| {
        mounts
            .iter()
            .find(|(id, ..)| *id == parent)
            .and_then(|(_, _, parent_root, parent_point, _)| {
                Some(parent_root.join(point.strip_prefix(parent_point).ok()?))
            })
            .is_some_and(|same| same == root)
    };
    let mut points: Vec<PathBuf> = mounts
        .iter()
        .filter(|(_, parent, root, point, kind)| {
            point.starts_with(&dir)
                && (*kind == "overlay" || (*point != dir && bound_onto_itself(parent, root, point)))
        })
        .map(|(_, _, _, point, _)| point.clone())
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        crate::quota::unmount(&point);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (mount), as the host does.
    #[test]
    fn a_layer_shows_the_tree_keeps_its_writes_and_leaves_the_tree_as_it_was() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (tree, layer, target) = (
            dir.path().join("tree"),
            dir.path().join("layer"),
            dir.path().join("target"),
        );
        for d in [&tree, &target] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(tree.join("kept"), "from the tree\n").unwrap();
        mount(&tree, &layer, &target).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("kept")).unwrap(),
            "from the tree\n"
        );
        std::fs::write(target.join("kept"), "the run's\n").unwrap();
        std::fs::write(target.join("new"), "the run's\n").unwrap();
        unmount_below(dir.path());
        assert!(!target.join("kept").exists(), "unmounted");
        assert_eq!(
            std::fs::read_to_string(tree.join("kept")).unwrap(),
            "from the tree\n"
        );
        assert!(!tree.join("new").exists());
        assert!(layer.join("upper/new").exists(), "the run's writes");

        let odd = dir.path().join("a,b");
        std::fs::create_dir_all(&odd).unwrap();
        let refused = mount(&odd, &layer, &target).unwrap_err();
        assert!(refused.to_string().contains("a,b"), "{refused}");
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }
}
