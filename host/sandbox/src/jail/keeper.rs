//! One bubblewrap per jail, not per program: bubblewrap makes the jail's
//! mounts and PID namespace once, around a keeper that sleeps until the
//! jail is dropped, and every program of the run joins the keeper's
//! namespaces ([`Entry`]) — 1–2 ms where a bubblewrap of its own took
//! 25–50 ms (its mounts), several times per run.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;

use super::JailError;

/// How long bubblewrap may take to make a jail.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dropping a jail waits for its processes to be gone.
const STOP_TIMEOUT_MS: libc::c_int = 10_000;
/// What the keeper prints once it runs in the finished jail.
const READY: &str = "helix-jail-ready";

/// The keeper: bubblewrap, its init (PID 1 of the jail) and the sleeping
/// program whose namespaces the jail's programs join.
pub(super) struct Keeper {
    bwrap: tokio::process::Child,
    /// The jail's init; when it ends, the kernel ends every process in
    /// the jail's PID namespace.
    init: OwnedFd,
    /// The keeper's namespaces, in the order a program joins them (its
    /// mounts last: the paths of `/proc` are the host's until then).
    namespaces: Vec<(OwnedFd, libc::c_int)>,
}

impl Keeper {
    /// Starts bubblewrap with `args` around the keeper, which first runs
    /// `prelude` (shell commands), in `cgroup` (descriptors that enter it),
    /// the network namespace behind `netns` (or the host's) and as root of
    /// the user namespace behind `userns` (or the host's root).
    pub(super) async fn start(
        bwrap: &Path,
        args: Vec<OsString>,
        prelude: &str,
        cgroup: Vec<RawFd>,
        netns: Option<RawFd>,
        userns: Option<RawFd>,
        cgroup_namespace: bool,
    ) -> Result<Keeper, JailError> {
        let failed = |what: &str, e: io::Error| JailError::Start(format!("{what}: {e}"));
        let mut command = tokio::process::Command::new(bwrap);
        command
            .args(args)
            .args(["--", "/bin/sh", "-c"])
            .arg(format!("{prelude}echo {READY} && exec sleep infinity"))
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure runs between fork and exec and only writes
        // to and joins descriptors opened before the fork.
        unsafe {
            command.pre_exec(move || {
                crate::cgroup::enter(&cgroup)?;
                if let Some(netns) = netns {
                    join(netns, libc::CLONE_NEWNET)?;
                }
                match userns {
                    Some(userns) => join(userns, libc::CLONE_NEWUSER),
                    None => Ok(()),
                }
            });
        }
        let mut bwrap = command.spawn().map_err(|e| failed("cannot run bwrap", e))?;
        let stdout = bwrap.stdout.take().expect("stdout is piped");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        if !matches!(&ready, Ok(Ok(Some(line))) if line == READY) {
            let _ = bwrap.start_kill();
            let mut stderr = String::new();
            if let Some(mut pipe) = bwrap.stderr.take() {
                use tokio::io::AsyncReadExt as _;
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), pipe.read_to_string(&mut stderr))
                        .await;
            }
            return Err(JailError::Start(format!(
                "bwrap did not make the jail: {}",
                stderr.trim()
            )));
        }
        let outer = bwrap
            .id()
            .ok_or_else(|| JailError::Start("bwrap exited".into()))?;
        let init = first_child(outer).map_err(|e| failed("cannot find the jail's init", e))?;
        let keeper = first_child(init).map_err(|e| failed("cannot find the jail's keeper", e))?;
        // The user namespace first: the others are its.
        let mut kinds = Vec::from_iter(userns.map(|_| ("user", libc::CLONE_NEWUSER)));
        kinds.extend([
            ("ipc", libc::CLONE_NEWIPC),
            ("uts", libc::CLONE_NEWUTS),
            ("pid", libc::CLONE_NEWPID),
        ]);
        if cgroup_namespace {
            kinds.push(("cgroup", libc::CLONE_NEWCGROUP));
        }
        kinds.push(("mnt", libc::CLONE_NEWNS));
        let namespaces = kinds
            .into_iter()
            .map(|(name, kind)| {
                let file = std::fs::File::open(format!("/proc/{keeper}/ns/{name}"))?;
                Ok((OwnedFd::from(file), kind))
            })
            .collect::<io::Result<_>>()
            .map_err(|e| failed("cannot open the jail's namespaces", e))?;
        let init = pidfd_open(init).map_err(|e| failed("cannot hold the jail's init", e))?;
        Ok(Keeper {
            bwrap,
            init,
            namespaces,
        })
    }

    /// What a program needs to join the jail, in `cwd`, after it joined
    /// the jail's network namespace `netns`; `root`: the host user the
    /// jail's root is, in a user namespace.
    pub(super) fn entry(&self, netns: Option<RawFd>, root: Option<u32>, cwd: &Path) -> Entry {
        let net = netns.map(|fd| (fd, libc::CLONE_NEWNET));
        Entry {
            namespaces: net
                .into_iter()
                .chain(
                    self.namespaces
                        .iter()
                        .map(|(fd, kind)| (fd.as_raw_fd(), *kind)),
                )
                .collect(),
            // A path with a NUL byte cannot exist; "/" never fails.
            cwd: CString::new(cwd.as_os_str().as_encoded_bytes())
                .unwrap_or_else(|_| c"/".to_owned()),
            root,
        }
    }
}

impl Drop for Keeper {
    /// Ends the jail's init, which ends every process in the jail, and
    /// waits until they are gone (their control groups are removed next).
    fn drop(&mut self) {
        // SAFETY: the descriptor is an open pidfd; poll gets a valid
        // array of one.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.init.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
            let mut gone = libc::pollfd {
                fd: self.init.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            libc::poll(&mut gone, 1, STOP_TIMEOUT_MS);
        }
        let _ = self.bwrap.start_kill();
    }
}

/// The namespaces and working directory a program of the jail starts in.
pub(crate) struct Entry {
    namespaces: Vec<(RawFd, libc::c_int)>,
    cwd: CString,
    /// The host user the jail's root is, if it has a user namespace.
    root: Option<u32>,
}

impl Entry {
    /// Moves the calling process — a forked child about to execute a
    /// program — into the jail, as bubblewrap would start it there: the
    /// jail's namespaces, `cwd`, no new privileges, without the
    /// [`super::DROPPED_CAPABILITIES`]. A PID namespace holds only the
    /// children made after joining it, so the caller forks: the child
    /// returns (and executes the program, in the jail), the parent stays
    /// outside, waits, and ends as the program ended. Only
    /// async-signal-safe calls.
    pub(crate) fn enter(&self) -> io::Result<()> {
        if let Some(root) = self.root {
            hand_over_pipes(root);
        }
        for &(fd, kind) in &self.namespaces {
            join(fd, kind)?;
        }
        // SAFETY: plain system calls on valid arguments.
        unsafe {
            check(libc::chdir(self.cwd.as_ptr()))?;
            prctl(libc::PR_SET_NO_NEW_PRIVS, 1)?;
            for (_, cap) in super::DROPPED_CAPABILITIES {
                prctl(libc::PR_CAPBSET_DROP, (*cap).into())?;
            }
            drop_inheritable()?;
            // Whatever ends the server ends the program (its jail would
            // end too, with the keeper).
            prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)?;
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                // Its parent is outside its PID namespace (getppid says 0),
                // so a parent gone before this is not seen: the jail's end
                // ends it then.
                0 => prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong),
                program => wait_for(program),
            }
        }
    }
}

/// Waits for `program` and ends as it ended. Signals meant for the
/// program's process group (SIGTERM on cancel) are the program's to
/// answer; SIGKILL ends both.
///
/// # Safety
/// Only in a forked child, which this never returns to.
unsafe fn wait_for(program: libc::pid_t) -> ! {
    unsafe {
        // The error pipe of the spawn (and every other descriptor) is the
        // program's alone: the spawn ends when it executes, not when it exits.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(signal, libc::SIG_IGN);
        }
        let mut status = 0;
        while libc::waitpid(program, &mut status, 0) != program {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let signal = libc::WTERMSIG(status);
        libc::signal(signal, libc::SIG_DFL);
        libc::kill(libc::getpid(), signal);
        libc::_exit(128 + signal)
    }
}

/// Makes the jail's root (host user `root`) own the pipes the program's
/// standard streams are, so it can open them again as `/dev/stdout`
/// (`podman push --digestfile /dev/stdout`), as root on the host can;
/// nothing else (`/dev/null` is the host's).
fn hand_over_pipes(root: u32) {
    for fd in 0..=2 {
        // SAFETY: fstat writes into the zeroed struct; fchown has no
        // memory-safety preconditions.
        unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut stat) == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFIFO {
                libc::fchown(fd, root, root);
            }
        }
    }
}

/// Removes the dropped capabilities from the inheritable set too (the
/// bounding set bounds what an executed program gets, the inheritable
/// set adds to it).
unsafe fn drop_inheritable() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    unsafe {
        check(libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) as libc::c_int)?;
        for (_, cap) in super::DROPPED_CAPABILITIES {
            data[(*cap / 32) as usize].inheritable &= !(1 << (*cap % 32));
        }
        check(libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) as libc::c_int)
    }
}

/// `prctl(option, value, 0, 0, 0)`, every argument the width the kernel
/// reads.
fn prctl(option: libc::c_int, value: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with these options has no memory-safety preconditions.
    check(unsafe {
        libc::prctl(
            option,
            value,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
}

/// Joins the namespace behind `fd`; a user namespace's as its root.
fn join(fd: RawFd, kind: libc::c_int) -> io::Result<()> {
    // SAFETY: setns has no memory-safety preconditions.
    check(unsafe { libc::setns(fd, kind) })?;
    match kind {
        libc::CLONE_NEWUSER => super::userns::become_root(),
        _ => Ok(()),
    }
}

fn check(result: libc::c_int) -> io::Result<()> {
    match result {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// The first child of process `pid` (bubblewrap's init, the init's
/// keeper: each has one).
fn first_child(pid: u32) -> io::Result<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?
        .split_whitespace()
        .next()
        .and_then(|child| child.parse().ok())
        .ok_or_else(|| io::Error::other(format!("process {pid} has no child")))
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open has no memory-safety preconditions.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
