//! A run's own writable layer over a directory tree the host keeps for
//! many runs (a repository's working tree in a cache slot): an overlay
//! file system whose lower layer is the kept tree, read-only to it, and
//! whose upper layer is in the run's directory, within its quota. The run
//! sees the tree without a copy of it; what it writes stays its own and
//! goes with it. Only the host mounts and changes the kept tree, and only
//! while no layer is mounted over it.
//!
//! Mounted in the host's mount namespace before the run's jail is made
//! (the host's mounts are private: a later one would not reach the jail),
//! and unmounted before the run's directory is removed.

use std::path::Path;
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

/// Unmounts every layer mounted at or below `dir` (lazily where busy: a
/// killed build's processes may still hold it); nothing when none is.
pub fn unmount_below(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else {
        return;
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<std::path::PathBuf> = mounts
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            (after.split(' ').next()? == "overlay").then_some(())?;
            Some(std::path::PathBuf::from(
                before.split(' ').nth(4)?.replace("\\040", " "),
            ))
        })
        .filter(|point| point.starts_with(&dir))
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
