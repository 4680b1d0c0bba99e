//! A jail per job run: every program the host starts for a job's build —
//! the build tool and all it starts, the push, the registry and storage
//! queries, the cache slot's clean-up — runs inside it, never on the host.
//!
//! The jail is made with bubblewrap (`bwrap`) once per run, around a
//! keeper that holds it until it is dropped; each of the run's programs
//! joins the keeper's namespaces ([`Entry`]), so all of them see the same
//! (and a program costs what it costs on the host):
//! - **mounts**: a root of its own (tmpfs) holding `/usr` read-only, an
//!   `/etc` of the few files the tools read ([`ETC_ENTRIES`], never
//!   `shadow`, the operator's config or anything else of the host's; the
//!   run's copy, its directories shown read-only), the jail's own `/etc/hosts`, `/etc/resolv.conf` and CNI config, a fresh
//!   `/proc`, a minimal `/dev`, `/sys` read-only with only the run's
//!   control groups writable, tmpfs `/run` and `/var`, and the run's own
//!   directories at their host paths: its job directory (workspace, its
//!   container state, secrets and its copy of the credentials), its cache
//!   slot, and its scratch directory as `/tmp` and `/var/tmp` (inside the
//!   run's quota). `RUN --mount=type=cache` data and the tools' blob info
//!   cache live in the cache slot, else in the run. Nothing else of the host: not the data
//!   directory, not other jobs, not the operator's auth file or signing
//!   key, not the host's `/var/tmp`;
//! - **processes**: a PID namespace (the jail sees only its own; when the
//!   jail is dropped, every process in it ends), its own IPC and host
//!   name, no new privileges, and the capabilities no build tool needs
//!   dropped ([`DROPPED_CAPABILITIES`], from the bounding set too);
//! - **network** ([`net`]): a network namespace of the run's own, unless
//!   the builder's network is `host`. Its loopback is its own; the
//!   configured registries are reached through the host's forwarders on
//!   it, and with `private` an uplink reaches the world but no address of
//!   the host. The build steps' CNI bridge, its leases and NAT rules are
//!   inside it and go with it.
//!
//! - **users** ([`userns`]): with [`JailSpec::users`], a user namespace
//!   whose root is the first id of an unprivileged host range; the run's
//!   directories are handed over to it ([`Jail::hand_over`]) and its
//!   control groups delegated. Without (a Docker client speaking to an
//!   engine's root-owned socket), root in the jail is the host's root.
//!
//! What the mounts do not show, a flaw in a build tool cannot reach by a
//! path, and what the network namespace does not route to, it cannot
//! contact.

mod keeper;
mod net;
mod netlink;
mod userns;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::cgroup::RunCgroup;
use crate::network::BuildNetwork;

pub(crate) use keeper::Entry;
pub use net::sweep_uplinks;
pub use userns::{BadIdRange, IdRange};

/// What of the host's `/etc` a jail shows (each where it exists): what
/// the tools, their resolver and TLS read.
pub const ETC_ENTRIES: &[&str] = &[
    "passwd",
    "group",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "services",
    "protocols",
    "ethertypes",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "os-release",
    "mime.types",
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "containers",
];

/// Capabilities removed from everything in a jail (by name and number):
/// none of the build
/// tools uses them, and each opens a way around the mounts (reading any
/// file of a file system by handle, loading modules, raw devices) or
/// reaches the whole machine (clock, reboot, kernel log, BPF).
pub const DROPPED_CAPABILITIES: &[(&str, u32)] = &[
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_SYS_MODULE", 16),
    ("CAP_SYS_RAWIO", 17),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_TIME", 25),
    ("CAP_SYSLOG", 34),
    ("CAP_MAC_ADMIN", 33),
    ("CAP_MAC_OVERRIDE", 32),
    ("CAP_WAKE_ALARM", 35),
    ("CAP_BLOCK_SUSPEND", 36),
    ("CAP_AUDIT_CONTROL", 30),
    ("CAP_AUDIT_READ", 37),
    ("CAP_SYS_PACCT", 20),
    ("CAP_SYS_TTY_CONFIG", 26),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_BPF", 39),
    ("CAP_PERFMON", 38),
    ("CAP_CHECKPOINT_RESTORE", 40),
];

/// Where buildah 1.28 (and podman's builds) keep `RUN --mount=type=cache`
/// data as root: under the temporary directory.
const CACHE_MOUNTS: &str = "/var/tmp/buildah-cache";
/// Where containers/image keeps its blob info cache as root.
const BLOB_INFO_CACHE: &str = "/var/lib/containers/cache";

/// What a run's jail holds.
pub struct JailSpec<'a> {
    /// Directories the run's programs read and write, each shown at its
    /// host path: the run's job directory, its cache slot.
    pub writable: Vec<PathBuf>,
    /// Paths below `writable` the host is still writing while the jail is
    /// made (the checkout): not handed over to its users now, but by the
    /// host once written ([`Jail::hand_over`]).
    pub written_later: Vec<PathBuf>,
    /// Files or directories they may read, at their host paths (a Docker
    /// Engine's socket and client settings), as they are when the jail is
    /// made; one missing is not shown.
    pub readable: Vec<PathBuf>,
    /// The run's scratch directory, inside its quota: the jail's `/tmp`
    /// and `/var/tmp`.
    pub scratch: PathBuf,
    /// Where `RUN --mount=type=cache` data is kept: the cache slot's
    /// directory for it; `None` keeps it in `scratch`, gone with the run.
    pub cache_mounts: Option<PathBuf>,
    /// Where the tools keep what they learned of registries' blobs
    /// (containers/image's blob info cache: which compressed blob a
    /// registry holds for a layer): kept with the storage it is about, so
    /// a push sends only the layers the registry lacks, as on the host;
    /// `None` keeps it in the jail's `/var`, gone with the run.
    pub blob_info_cache: Option<PathBuf>,
    /// Where the host writes the jail's own `/etc` files; not shown to
    /// the jail as a directory.
    pub files: PathBuf,
    pub network: BuildNetwork,
    /// The registries (`host[:port]`, as configured) the jail's programs
    /// reach through the host.
    pub registries: Vec<String>,
    /// The run's control groups, the only ones writable in the jail.
    pub cgroup: Option<&'a RunCgroup>,
    /// Whether the jail's programs get a cgroup namespace rooted at the
    /// run's group, with the hierarchies mounted anew inside it: for a
    /// program that makes groups at paths of its choosing (dockerd and
    /// BuildKit make `/docker/buildkit/<step>`), which then land below the
    /// run's group, within its limits. Otherwise the hierarchies are shown
    /// read-only with the run's groups writable at their host paths.
    pub cgroup_namespace: bool,
    /// The host ids the jail's users are, its root the first: a user
    /// namespace of the run's own. `None`: the host's users, root the
    /// host's root.
    pub users: Option<IdRange>,
}

/// Why a run's jail could not be made: the host's fault.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(
        "bubblewrap is not installed on this host (no `bwrap` on PATH); install the `bubblewrap` package"
    )]
    NoBubblewrap,
    #[error("cannot write the jail's {what}: {source}")]
    Files {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the jail's network: {0}")]
    Network(#[from] net::NetError),
    #[error("cannot make the jail's user namespace: {0}")]
    Users(#[source] std::io::Error),
    #[error("cannot let the jail's root make groups in the run's control groups: {0}")]
    Delegate(#[source] std::io::Error),
    #[error("cannot hand {} over to the jail's root: {source}", path.display())]
    HandOver {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the jail: {0}")]
    Start(String),
}

/// A run's jail; dropping it ends every process in it and removes its
/// network namespace, uplink and forwarders (the control groups go with
/// the run's [`RunCgroup`]).
pub struct Jail {
    /// Dropped first: the jail's processes end before its network goes.
    keeper: keeper::Keeper,
    net: Option<net::JailNet>,
    users: Option<userns::UserNs>,
}

impl std::fmt::Debug for Jail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jail")
            .field("description", &self.describe())
            .finish()
    }
}

impl Jail {
    /// Makes the jail `spec` describes.
    pub async fn create(spec: JailSpec<'_>) -> Result<Jail, JailError> {
        let bwrap = find_on_path("bwrap").ok_or(JailError::NoBubblewrap)?;
        let files = |what, source| JailError::Files { what, source };
        let etc = spec.files.join("etc");
        std::fs::create_dir_all(etc.join("cni/net.d")).map_err(|e| files("directory", e))?;
        let etc_dirs = copy_etc(&etc).map_err(|e| files("/etc", e))?;
        std::fs::create_dir_all(&spec.scratch).map_err(|e| files("scratch directory", e))?;
        if let Some(cache) = &spec.blob_info_cache {
            std::fs::create_dir_all(cache).map_err(|e| files("blob info cache", e))?;
        }
        let mut users = spec
            .users
            .map(userns::UserNs::create)
            .transpose()
            .map_err(JailError::Users)?;
        let net = match spec.network {
            BuildNetwork::Host => None,
            network => {
                let netns = users.as_mut().and_then(userns::UserNs::take_net);
                Some(net::JailNet::create(network, &spec.registries, netns).await?)
            }
        };
        let hosts = net.as_ref().map(net::JailNet::hosts).unwrap_or_default();
        std::fs::write(etc.join("hosts"), hosts_file(&hosts))
            .map_err(|e| files("/etc/hosts", e))?;
        // The host's resolvers, for `private` steps' and tools' names
        // (the configured registries' names are in the jail's hosts).
        let resolv = match spec.network {
            BuildNetwork::None => String::new(),
            _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        std::fs::write(etc.join("resolv.conf"), resolv)
            .map_err(|e| files("/etc/resolv.conf", e))?;
        if spec.network == BuildNetwork::Private {
            std::fs::write(
                etc.join("cni/net.d")
                    .join(format!("{}.conflist", crate::network::PRIVATE_NETWORK)),
                crate::network::CNI_CONFIG,
            )
            .map_err(|e| files("CNI config", e))?;
        }
        if let Some(users) = &users {
            let handed = [&spec.files, &spec.scratch]
                .into_iter()
                .chain(&spec.writable)
                .chain(&spec.cache_mounts)
                .chain(&spec.blob_info_cache);
            for path in handed {
                users
                    .hand_over_but(path, &spec.written_later)
                    .map_err(|source| JailError::HandOver {
                        path: path.clone(),
                        source,
                    })?;
            }
            if let Some(cgroup) = spec.cgroup {
                cgroup
                    .delegate(users.range().first)
                    .map_err(JailError::Delegate)?;
            }
        }
        let prelude = match (spec.cgroup_namespace, spec.cgroup) {
            (true, Some(cgroup)) => mount_hierarchies(cgroup),
            _ => String::new(),
        };
        let keeper = keeper::Keeper::start(
            &bwrap,
            bwrap_args(&spec, &etc, &etc_dirs),
            &prelude,
            spec.cgroup.map(RunCgroup::enter_fds).unwrap_or_default(),
            net.as_ref().map(net::JailNet::fd),
            users.as_ref().map(userns::UserNs::fd),
            spec.cgroup_namespace,
        )
        .await?;
        Ok(Jail { keeper, net, users })
    }

    /// Makes the jail's root own `path` and everything below it, which
    /// the host wrote for the run after the jail was made (the checkout,
    /// the secrets); nothing without a user namespace.
    pub fn hand_over(&self, path: &Path) -> Result<(), JailError> {
        match &self.users {
            Some(users) => users.hand_over(path).map_err(|source| JailError::HandOver {
                path: path.to_path_buf(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// The host ids the jail's users are, if it has a user namespace.
    pub fn users(&self) -> Option<IdRange> {
        self.users.as_ref().map(userns::UserNs::range)
    }

    /// Variables every program of the jail gets: in a user namespace,
    /// podman and buildah take themselves for rootless (root of a user
    /// namespace without the host's capabilities) and must not try to
    /// make one of their own.
    pub(crate) fn env(&self) -> &'static [(&'static str, &'static str)] {
        match self.users {
            Some(_) => &[("_CONTAINERS_USERNS_CONFIGURED", "1")],
            None => &[],
        }
    }

    /// How a program joins the jail, to run in `cwd` (see [`Entry`]).
    pub(crate) fn entry(&self, cwd: &Path) -> Entry {
        self.keeper.entry(
            self.net.as_ref().map(net::JailNet::fd),
            self.users().map(|range| range.first),
            cwd,
        )
    }

    /// What the jail is, for the job's log.
    pub fn describe(&self) -> String {
        let users = match self.users() {
            Some(range) => format!(
                "; its root is host user {} (ids {}–{})",
                range.first,
                range.first,
                range.first + (range.count - 1)
            ),
            None => "; its root is the host's root".into(),
        };
        let what = match &self.net {
            None => {
                "[helix] jail: the run's programs see only its directories, in a PID namespace of \
                     their own, on the host's network (builder network `host`)"
                    .into()
            }
            Some(net) => format!(
                "[helix] jail: the run's programs see only its directories, in PID and network \
                 namespaces of their own; {}",
                net.describe()
            ),
        };
        what + &users
    }
}

fn bind(how: &str, source: &Path, target: &Path) -> [OsString; 3] {
    [how.into(), source.into(), target.into()]
}

/// bubblewrap's arguments for the jail `spec` describes, its `/etc` in
/// `etc` with the host's `etc_dirs` shown in it.
fn bwrap_args(spec: &JailSpec<'_>, etc: &Path, etc_dirs: &[PathBuf]) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--hostname",
        "helix-jail",
    ]
    .map(OsString::from)
    .to_vec();
    for (cap, _) in DROPPED_CAPABILITIES {
        args.extend(["--cap-drop".into(), OsString::from(cap)]);
    }
    args.extend(bind("--ro-bind", Path::new("/usr"), Path::new("/usr")));
    // Merged /usr: /bin and the rest are links into it; else shown as is.
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match std::fs::read_link(&host) {
            Ok(target) => args.extend(["--symlink".into(), target.into(), host.into()]),
            Err(_) if host.is_dir() => args.extend(bind("--ro-bind", &host, &host)),
            Err(_) => {}
        }
    }
    // Writable, as a tmpfs would be (dockerd makes /etc/docker): the
    // run's own copy.
    args.extend(bind("--bind", etc, Path::new("/etc")));
    for dir in etc_dirs {
        args.extend(bind("--ro-bind", dir, dir));
    }
    args.extend(
        [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/dev/shm",
            "--ro-bind",
            "/sys",
            "/sys",
        ]
        .map(OsString::from),
    );
    if spec.cgroup_namespace {
        args.extend(["--unshare-cgroup", "--tmpfs", "/sys/fs/cgroup"].map(OsString::from));
    } else if let Some(cgroup) = spec.cgroup {
        args.extend(["--tmpfs".into(), "/sys/fs/cgroup".into()]);
        for (hierarchy, run) in cgroup.hierarchies() {
            args.extend(bind("--ro-bind", hierarchy, hierarchy));
            args.extend(bind("--bind", run, run));
        }
    }
    args.extend(["--tmpfs", "/run", "--tmpfs", "/var", "--tmpfs", "/root"].map(OsString::from));
    if spec.users.is_some() {
        // Rootless podman and buildah read networks from root's home.
        args.extend(bind(
            "--bind",
            &etc.join("cni"),
            Path::new("/root/.config/cni"),
        ));
    }
    for dir in ["/tmp", "/var/tmp"] {
        args.extend(bind("--bind", &spec.scratch, Path::new(dir)));
    }
    if let Some(cache) = &spec.cache_mounts {
        args.extend(bind("--bind", cache, Path::new(CACHE_MOUNTS)));
    }
    if let Some(cache) = &spec.blob_info_cache {
        args.extend(bind("--bind", cache, Path::new(BLOB_INFO_CACHE)));
    }
    for dir in &spec.writable {
        args.extend(bind("--bind", dir, dir));
    }
    // An engine's socket may not be there (yet): the client then says so.
    for path in &spec.readable {
        args.extend(bind("--ro-bind-try", path, path));
    }
    args
}

/// The temporary directory the jail's programs are told of: the run's
/// scratch directory.
pub(crate) const TMPDIR: &str = "/var/tmp";

/// Shell commands that mount each of `cgroup`'s hierarchies at its host
/// path, as the host mounts it (in a cgroup namespace the mount's root is
/// the namespace's: the run's group).
fn mount_hierarchies(cgroup: &RunCgroup) -> String {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut script = String::new();
    for (hierarchy, _) in cgroup.hierarchies() {
        let point = hierarchy.display().to_string();
        let Some((fstype, options)) = mountinfo.lines().find_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            (before.split(' ').nth(4)? == point).then_some(())?;
            let mut after = after.split(' ');
            Some((after.next()?.to_string(), after.nth(1)?.to_string()))
        }) else {
            continue;
        };
        let mount = match fstype.as_str() {
            "cgroup2" => format!("mount -t cgroup2 cgroup2 {point}"),
            _ => {
                let mut kept: Vec<&str> = options
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro" | "xattr" | "clone_children" | "noprefix")
                    })
                    .filter(|o| !o.starts_with("release_agent="))
                    .collect();
                if kept.iter().all(|o| o.starts_with("name=")) {
                    kept.insert(0, "none");
                }
                format!("mount -t cgroup -o {} cgroup {point}", kept.join(","))
            }
        };
        script.push_str(&format!("mkdir -p {point} && {mount} && "));
    }
    script
}

/// Copies into `etc` each of [`ETC_ENTRIES`] the host has that is a file
/// (a link as a link) and makes a mount point for each that is a
/// directory: one mount for the jail's `/etc` instead of one per entry.
/// The directories to show at those points.
fn copy_etc(etc: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in ETC_ENTRIES {
        let (host, copy) = (Path::new("/etc").join(entry), etc.join(entry));
        let Ok(meta) = host.symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            std::fs::create_dir_all(&copy)?;
            dirs.push(host);
        } else if meta.is_symlink() {
            match std::fs::remove_file(&copy) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => std::os::unix::fs::symlink(std::fs::read_link(&host)?, &copy)?,
            }
        } else {
            std::fs::copy(&host, &copy)?;
        }
    }
    Ok(dirs)
}

fn hosts_file(registries: &[(String, std::net::IpAddr)]) -> String {
    let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
    for (name, address) in registries {
        text.push_str(&format!("{address}\t{name}\n"));
    }
    text
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Drops `holder` (a jail, or what holds one) off the runtime's threads:
/// a jail's end waits for its processes to be gone. `what` names it in
/// the log if that fails.
pub async fn end_off_runtime<T: Send + 'static>(holder: T, what: &str) {
    if let Err(e) = tokio::task::spawn_blocking(move || drop(holder)).await {
        tracing::error!("ending {what} failed: {e}");
    }
}
