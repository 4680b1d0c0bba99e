//! A control group per job run: what the run's build tools and the
//! containers of their `RUN` steps may use together (memory, CPU,
//! processes), and a record of every process the run started.
//!
//! Each server keeps its runs' groups under one directory of its own,
//! `/helix/<instance>` in each hierarchy (the instance is named after the
//! server's data directory), so when a server starts again after a crash
//! it finds the groups of the runs it was executing and kills what is left
//! in them before any job runs ([`Cgroups::reap`]).
//!
//! A run's group holds `tools/` (every program the host starts for the
//! job, placed there before it executes) and `steps/` (where podman and
//! buildah put the `RUN` containers when given `--cgroup-parent`, which
//! the built-in grants pin); the limits are set on the run's group, so
//! they bound both together. cgroup v1 (the `pids`, `memory` and `cpu`
//! hierarchies carry the limits) and a unified v2 hierarchy are
//! supported. In v1 the run's group is made in every hierarchy, because
//! runc makes the steps' groups in each one; all of them go with the run.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// What one job run's build may use, all its processes together. `None`
/// leaves that resource unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BuildLimits {
    /// Memory (without swap), in MiB.
    pub memory_mib: Option<u64>,
    /// CPU time, in CPUs' worth (1.5 = one and a half CPUs).
    pub cpus: Option<f64>,
    /// Processes and threads at once.
    pub pids: Option<u64>,
    /// Disk for the job's workspace and, without the layer cache, its
    /// own container storage, in MiB (a cache slot has its share of the
    /// builder's cache instead).
    pub disk_mib: Option<u64>,
}

/// What a run's processes used together, as its group counted them
/// (processes that left it, and `RUN` steps' groups since removed,
/// included).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time, user and system, in seconds.
    pub cpu_seconds: f64,
    /// The highest memory use at any moment, in bytes (v2 without
    /// `memory.peak`, before Linux 5.19: 0).
    pub peak_memory_bytes: u64,
}

/// A limit a run reached, for the job's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Memory,
    Pids,
}

const CPU_PERIOD_US: u64 = 100_000;
/// How close to its memory limit a run's peak counts as reaching it.
const PAGE_SLACK: u64 = 64 * 1024;
/// How long [`kill_tree`] keeps killing before it gives up.
const KILL_ROUNDS: usize = 100;

/// The control group file systems of this host, and this server's
/// directory in them.
#[derive(Debug)]
pub struct Cgroups {
    layout: Layout,
    /// `/helix/<instance>`, the same in every hierarchy.
    base: String,
    /// This server's directories, removed once neither this nor any run
    /// group made from it is left.
    instance: Arc<Instance>,
}

/// A server's directory in every hierarchy, removed when the last holder
/// goes (where no run is left in it): a run's group may outlive the
/// [`Cgroups`] it was made from (a `plugin test` trial's does).
#[derive(Debug)]
struct Instance {
    dirs: Vec<PathBuf>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[derive(Debug, Clone)]
enum Layout {
    /// One mount per controller: `pids`, `memory`, `cpu` carry the limits;
    /// `others` are the rest (`cpuset`, `devices`, `freezer`, a `name=`
    /// or unified one, ...), where runc makes a group for each `RUN`
    /// container too, so a run's group is made and removed there alike.
    V1 {
        pids: PathBuf,
        memory: PathBuf,
        cpu: PathBuf,
        others: Vec<PathBuf>,
    },
    /// One hierarchy for all.
    V2 { root: PathBuf },
}

/// Why this host's control groups cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v1 `{name}` hierarchy at {}", dir.display())]
    NoHierarchy { name: String, dir: PathBuf },
    #[error("cannot list {}: {source}", dir.display())]
    List {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create control group {group}: {source}")]
    Create {
        group: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enable the pids, memory and cpu controllers for {group}: {source}")]
    Controllers {
        group: String,
        #[source]
        source: std::io::Error,
    },
}

/// The directory, in every hierarchy, of the server whose data directory
/// is `data_dir`: `helix/<instance>`, named after the directory.
pub fn server_group(data_dir: &Path) -> String {
    use sha2::Digest as _;
    let data_dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    format!("helix/{}", &hex::encode(digest)[..16])
}

impl Layout {
    /// Every hierarchy's mount point.
    fn hierarchies(&self) -> Vec<PathBuf> {
        match self {
            Layout::V1 {
                pids,
                memory,
                cpu,
                others,
            } => [pids, memory, cpu]
                .into_iter()
                .chain(others)
                .cloned()
                .collect(),
            Layout::V2 { root } => vec![root.clone()],
        }
    }
}

impl Cgroups {
    /// This host's control groups, for the server whose data directory is
    /// `data_dir`; an error says why they cannot be used.
    pub fn detect(data_dir: &Path) -> Result<Self, CgroupError> {
        let root = Path::new("/sys/fs/cgroup");
        let layout = if root.join("cgroup.controllers").is_file() {
            Layout::V2 {
                root: root.to_path_buf(),
            }
        } else {
            let controller = |name: &str| {
                let dir = root.join(name);
                match dir.join("cgroup.procs").is_file() {
                    true => Ok(dir),
                    false => Err(CgroupError::NoHierarchy {
                        name: name.to_string(),
                        dir,
                    }),
                }
            };
            let (pids, memory, cpu) = (
                controller("pids")?,
                controller("memory")?,
                controller("cpu")?,
            );
            let limited = [&pids, &memory, &cpu].map(|d| d.canonicalize().ok());
            let mut others: Vec<PathBuf> = std::fs::read_dir(root)
                .map_err(|source| CgroupError::List {
                    dir: root.to_path_buf(),
                    source,
                })?
                .flatten()
                .map(|e| e.path())
                .filter(|d| d.join("cgroup.procs").is_file())
                .filter(|d| !limited.contains(&d.canonicalize().ok()))
                .collect();
            // `cpu,cpuacct` and its links are one hierarchy.
            others.sort();
            others.dedup_by(|a, b| a.canonicalize().ok() == b.canonicalize().ok());
            Layout::V1 {
                pids,
                memory,
                cpu,
                others,
            }
        };
        let instance = server_group(data_dir);
        let dirs = layout
            .hierarchies()
            .iter()
            .map(|h| h.join(&instance))
            .collect();
        let cgroups = Cgroups {
            layout,
            base: format!("/{instance}"),
            instance: Arc::new(Instance { dirs }),
        };
        cgroups
            .create_everywhere(&cgroups.base)
            .map_err(|source| CgroupError::Create {
                group: cgroups.base.clone(),
                source,
            })?;
        if let Layout::V2 { root } = &cgroups.layout {
            enable_controllers(root, &cgroups.base).map_err(|source| CgroupError::Controllers {
                group: cgroups.base.clone(),
                source,
            })?;
        }
        Ok(cgroups)
    }

    /// The directories of `path` (`/a/b`) in the hierarchies that carry
    /// the limits: pids, memory, cpu in v1 (in that order), the one in v2.
    fn dirs(&self, path: &str) -> Vec<PathBuf> {
        let inside = path.trim_start_matches('/');
        match &self.layout {
            Layout::V1 {
                pids, memory, cpu, ..
            } => [pids, memory, cpu].map(|h| h.join(inside)).to_vec(),
            Layout::V2 { root } => vec![root.join(inside)],
        }
    }

    /// Creates `path` in every hierarchy; in v1's `cpuset` each new level
    /// gets its parent's CPUs and memory nodes, which a group needs before
    /// a process may join it (runc would write them itself, which it
    /// cannot from inside a jail, where only the run's groups are
    /// writable).
    fn create_everywhere(&self, path: &str) -> std::io::Result<()> {
        for hierarchy in self.layout.hierarchies() {
            let mut dir = hierarchy.clone();
            for part in path.trim_start_matches('/').split('/') {
                let parent = dir.clone();
                dir.push(part);
                create_dir(&dir)?;
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let own = std::fs::read_to_string(dir.join(file));
                    let inherited = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                    if own.is_ok_and(|v| v.trim().is_empty()) && !inherited.trim().is_empty() {
                        write(&dir, file, inherited.trim())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Kills every process left in this server's run groups (a run cut
    /// short by a crash) and removes the groups; the number killed.
    pub fn reap(&self) -> usize {
        let mut killed = 0;
        let inside = self.base.trim_start_matches('/');
        for dir in self.layout.hierarchies().iter().map(|h| h.join(inside)) {
            let Ok(runs) = std::fs::read_dir(&dir) else {
                continue;
            };
            for run in runs.flatten().filter(|e| e.path().is_dir()) {
                killed += kill_tree(&run.path());
                remove_tree(&run.path());
            }
        }
        killed
    }

    /// A new group for run `name` (replacing one of that name), limited
    /// by `limits`.
    pub fn create(&self, name: &str, limits: &BuildLimits) -> std::io::Result<RunCgroup> {
        let path = format!("{}/{name}", self.base);
        let inside = path.trim_start_matches('/');
        let mut run = RunCgroup {
            dirs: self.dirs(&path),
            everywhere: self
                .layout
                .hierarchies()
                .into_iter()
                .map(|h| (h.clone(), h.join(inside)))
                .collect(),
            v2: matches!(self.layout, Layout::V2 { .. }),
            steps: format!("{path}/steps"),
            tools: Vec::new(),
            _instance: self.instance.clone(),
        };
        run.kill_and_remove();
        self.create_everywhere(&path)?;
        if let Layout::V2 { root } = &self.layout {
            enable_controllers(root, &path)?;
        }
        run.limit(limits)?;
        // In every hierarchy, not only those with limits: a cgroup
        // namespace is rooted where its maker is in each one, and a
        // program making groups of its own there (dockerd) must make
        // them within the run's.
        self.create_everywhere(&format!("{path}/tools"))?;
        run.tools = run
            .everywhere
            .iter()
            .map(|(_, dir)| {
                File::options()
                    .write(true)
                    .open(dir.join("tools/cgroup.procs"))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(run)
    }
}

/// One run's control group; dropping it kills whatever is left in it and
/// removes it.
#[derive(Debug)]
pub struct RunCgroup {
    /// One per hierarchy that carries limits; in v1: pids, memory, cpu.
    dirs: Vec<PathBuf>,
    /// Each hierarchy's mount point and the run's group in it.
    everywhere: Vec<(PathBuf, PathBuf)>,
    v2: bool,
    /// Where `RUN` containers go (`--cgroup-parent`), as a cgroup path.
    steps: String,
    /// `tools/cgroup.procs` in every hierarchy, open for [`RunCgroup::enter`].
    tools: Vec<File>,
    /// Its server's directories, kept until it is gone (dropped after
    /// [`RunCgroup`]'s own drop removed its groups).
    _instance: Arc<Instance>,
}

impl RunCgroup {
    fn limit(&self, limits: &BuildLimits) -> std::io::Result<()> {
        let (pids, memory, cpu) = match self.v2 {
            false => (&self.dirs[0], &self.dirs[1], &self.dirs[2]),
            true => (&self.dirs[0], &self.dirs[0], &self.dirs[0]),
        };
        if let Some(max) = limits.pids {
            write(pids, "pids.max", &max.to_string())?;
        }
        if let Some(mib) = limits.memory_mib {
            let bytes = (mib * 1024 * 1024).to_string();
            if self.v2 {
                write(memory, "memory.max", &bytes)?;
                write(memory, "memory.swap.max", "0")?;
            } else {
                write(memory, "memory.limit_in_bytes", &bytes)?;
                // Where swap is accounted, none of it either.
                if memory.join("memory.memsw.limit_in_bytes").exists() {
                    write(memory, "memory.memsw.limit_in_bytes", &bytes)?;
                }
            }
        }
        if let Some(cpus) = limits.cpus {
            let quota = ((cpus * CPU_PERIOD_US as f64) as u64).max(1000);
            if self.v2 {
                write(cpu, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                write(cpu, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                write(cpu, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        Ok(())
    }

    fn kill_and_remove(&self) {
        for (_, dir) in &self.everywhere {
            kill_tree(dir);
            remove_tree(dir);
        }
    }

    /// The cgroup path for the build tool's `--cgroup-parent`.
    pub fn steps_path(&self) -> &str {
        &self.steps
    }

    /// Each hierarchy's mount point and the run's group in it: what a jail
    /// shows of the control groups (the hierarchies read-only, the run's
    /// groups writable).
    pub fn hierarchies(&self) -> &[(PathBuf, PathBuf)] {
        &self.everywhere
    }

    /// Lets the host user `id` make groups in the run's group and its
    /// `tools/` in every hierarchy (a jail's root: runc makes the build
    /// steps' groups there, dockerd in a cgroup namespace rooted at
    /// `tools/`): those directories become `id`'s, their files — the
    /// limits — stay the host's.
    pub fn delegate(&self, id: u32) -> std::io::Result<()> {
        for (_, dir) in &self.everywhere {
            for delegated in [dir.clone(), dir.join("tools")] {
                std::os::unix::fs::chown(delegated, Some(id), Some(id))?;
            }
        }
        Ok(())
    }

    /// Descriptors that, written "0" to, move the writing process into the
    /// run's group: for a child between fork and exec, where nothing may
    /// allocate.
    pub fn enter_fds(&self) -> Vec<RawFd> {
        self.tools.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// What the run has used so far; read it before the group is dropped.
    /// In v1 the CPU time is `cpuacct.usage`, in whichever hierarchy
    /// carries `cpuacct` (with `cpu` or on its own).
    pub fn usage(&self) -> Usage {
        if self.v2 {
            let dir = &self.dirs[0];
            return Usage {
                cpu_seconds: counter(&dir.join("cpu.stat"), "usage_usec") as f64 / 1e6,
                peak_memory_bytes: read_number(&dir.join("memory.peak")),
            };
        }
        let nanoseconds = self
            .everywhere
            .iter()
            .map(|(_, dir)| dir.join("cpuacct.usage"))
            .find(|file| file.is_file())
            .map_or(0, |file| read_number(&file));
        Usage {
            cpu_seconds: nanoseconds as f64 / 1e9,
            peak_memory_bytes: read_number(&self.dirs[1].join("memory.max_usage_in_bytes")),
        }
    }

    /// A limit the run reached, if it reached one.
    pub fn limit_hit(&self) -> Option<LimitHit> {
        // A refused fork is counted where it was tried (v1: in the step's
        // group, gone with it), so the peak tells too.
        let pids = &self.dirs[0];
        let max = std::fs::read_to_string(pids.join("pids.max")).unwrap_or_default();
        let at_max = max
            .trim()
            .parse::<u64>()
            .is_ok_and(|max| read_number(&pids.join("pids.peak")) >= max);
        if at_max || counter(&pids.join("pids.events"), "max") > 0 {
            return Some(LimitHit::Pids);
        }
        let memory = &self.dirs[if self.v2 { 0 } else { 1 }];
        let reached = match self.v2 {
            true => {
                let events = memory.join("memory.events");
                counter(&events, "oom_kill") + counter(&events, "max") > 0
            }
            // v1's failure counters stay 0 on some kernels when the
            // memory+swap limit is set too; the peak does not lie.
            false => {
                let limit = read_number(&memory.join("memory.limit_in_bytes"));
                let peak = read_number(&memory.join("memory.max_usage_in_bytes"));
                limit > 0 && peak + PAGE_SLACK >= limit
            }
        };
        reached.then_some(LimitHit::Memory)
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        self.kill_and_remove();
    }
}

/// Moves the calling process into the groups behind `fds` (see
/// [`RunCgroup::enter_fds`]). Only async-signal-safe calls: it runs in a
/// forked child.
pub fn enter(fds: &[RawFd]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: writing a static buffer to a descriptor; no allocation.
        let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if written != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn write(dir: &Path, file: &str, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(file))
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

/// Turns on the controllers for the children of each group along `path`
/// (v2 delegates them level by level).
fn enable_controllers(root: &Path, path: &str) -> std::io::Result<()> {
    let mut dir = root.to_path_buf();
    for part in path.trim_start_matches('/').split('/') {
        write(&dir, "cgroup.subtree_control", "+pids +memory +cpu")?;
        dir.push(part);
    }
    Ok(())
}

/// `name N` in a flat keyed file such as `pids.events`; 0 when absent.
fn counter(file: &Path, name: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

fn read_number(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The processes in `dir` and the groups below it.
fn processes(dir: &Path, into: &mut Vec<libc::pid_t>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        into.extend(
            text.lines()
                .filter_map(|l| l.trim().parse::<libc::pid_t>().ok()),
        );
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            processes(&entry.path(), into);
        }
    }
}

/// SIGKILLs every process in `dir`'s subtree until none is left (a
/// process forking meanwhile lands in the same groups); the number
/// killed.
fn kill_tree(dir: &Path) -> usize {
    let mut killed = 0;
    for _ in 0..KILL_ROUNDS {
        let mut pids = Vec::new();
        processes(dir, &mut pids);
        if pids.is_empty() {
            return killed;
        }
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions; a process
            // already gone gives ESRCH.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::warn!("processes survived SIGKILL in {}", dir.display());
    killed
}

/// Removes `dir` and the groups below it, deepest first (a group goes
/// only once it is empty).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            remove_tree(&entry.path());
        }
    }
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return,
        }
    }
}
