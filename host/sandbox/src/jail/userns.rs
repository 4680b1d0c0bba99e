//! A jail's user namespace: root in the jail (and in its build steps) is
//! an unprivileged range of host ids ([`IdRange`]), never the host's root.
//!
//! bubblewrap maps a single id, so the host makes the namespace itself: a
//! child unshares a user and a network namespace in one call (the network
//! namespace is then owned by the user namespace, so the jail's root may
//! make its build steps' bridge in it), the host writes the child's
//! `uid_map` and `gid_map` as root, keeps both namespaces by descriptor
//! and ends the child. The keeper and each program then join the user
//! namespace and become its root before they join the rest.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The host ids a jail's ids 0, 1, … are: `first` to `first + count - 1`.
/// Written `"FIRST:COUNT"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdRange {
    pub first: u32,
    pub count: u32,
}

impl IdRange {
    /// Above the ids `useradd` hands out as subordinate ids (100000 to
    /// 600100000 by default), so no user's own rootless containers share
    /// them; 65536 ids, as much as an image's files use.
    pub const DEFAULT: IdRange = IdRange {
        first: 1_000_000_000,
        count: 65536,
    };
    /// Below this, ids are the host's system and login users'.
    const LOWEST: u32 = 65536;
}

impl IdRange {
    /// Makes the range's root (a jail's) own `path` and everything below
    /// it that is the host's: what the host wrote for a run (its
    /// directories, checkout, secrets, copy of the credentials) and what
    /// the host's root left in a cache slot, the jail then reads and
    /// writes as its own. What a user of the range owns stays as it is
    /// (so handing over again costs a look at each entry, no change);
    /// links are changed themselves, never followed.
    pub fn hand_over(&self, path: &Path) -> io::Result<()> {
        self.hand_over_but(path, &[])
    }

    /// [`IdRange::hand_over`], leaving out `later` (paths below `path`
    /// still being written, handed over once they are).
    pub(super) fn hand_over_but(&self, path: &Path, later: &[PathBuf]) -> io::Result<()> {
        if later.iter().any(|l| l == path) {
            return Ok(());
        }
        let root = self.first;
        let meta = path.symlink_metadata()?;
        let (end, owner) = (self.first + (self.count - 1), meta.uid());
        if !(root..=end).contains(&owner) {
            std::os::unix::fs::lchown(path, Some(root), Some(root))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                self.hand_over_but(&entry?.path(), later)?;
            }
        }
        Ok(())
    }
}

impl Default for IdRange {
    fn default() -> Self {
        IdRange::DEFAULT
    }
}

/// Why a written range is not one.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not an id range: FIRST:COUNT, FIRST at least 65536 (above the host's own users), \
     COUNT at least 1, ending below 4294967295"
)]
pub struct BadIdRange(String);

impl FromStr for IdRange {
    type Err = BadIdRange;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadIdRange(text.to_string());
        let (first, count) = text.split_once(':').ok_or_else(bad)?;
        let (first, count): (u32, u32) = (
            first.trim().parse().map_err(|_| bad())?,
            count.trim().parse().map_err(|_| bad())?,
        );
        // u32::MAX is the kernel's "no id".
        let fits = first.checked_add(count).is_some_and(|end| end < u32::MAX);
        match first >= IdRange::LOWEST && count >= 1 && fits {
            true => Ok(IdRange { first, count }),
            false => Err(bad()),
        }
    }
}

impl TryFrom<String> for IdRange {
    type Error = BadIdRange;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<IdRange> for String {
    fn from(range: IdRange) -> String {
        range.to_string()
    }
}

impl std::fmt::Display for IdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.first, self.count)
    }
}

/// A user namespace mapping 0… to a range, and the network namespace it
/// owns (taken by the jail's network unless its network is the host's).
pub(super) struct UserNs {
    user: OwnedFd,
    net: Option<OwnedFd>,
    range: IdRange,
}

impl UserNs {
    pub(super) fn create(range: IdRange) -> io::Result<UserNs> {
        let mut command = std::process::Command::new("/bin/sh");
        command
            .args(["-c", "read _"])
            .env_clear()
            .stdin(std::process::Stdio::piped());
        // SAFETY: unshare has no memory-safety preconditions; it runs in
        // the forked child only.
        unsafe {
            command.pre_exec(
                || match libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) {
                    0 => Ok(()),
                    _ => Err(io::Error::last_os_error()),
                },
            );
        }
        let mut child = command.spawn()?;
        let made = (|| {
            let proc = format!("/proc/{}", child.id());
            let map = format!("0 {} {}\n", range.first, range.count);
            std::fs::write(format!("{proc}/uid_map"), &map)?;
            std::fs::write(format!("{proc}/gid_map"), &map)?;
            let open = |ns| std::fs::File::open(format!("{proc}/ns/{ns}")).map(OwnedFd::from);
            Ok(UserNs {
                user: open("user")?,
                net: Some(open("net")?),
                range,
            })
        })();
        // Its stdin closed, the child ends; the namespaces stay, held.
        drop(child.stdin.take());
        child.wait()?;
        made
    }

    pub(super) fn fd(&self) -> RawFd {
        self.user.as_raw_fd()
    }

    /// The network namespace the user namespace owns, once.
    pub(super) fn take_net(&mut self) -> Option<OwnedFd> {
        self.net.take()
    }

    pub(super) fn range(&self) -> IdRange {
        self.range
    }

    /// See [`IdRange::hand_over`].
    pub(super) fn hand_over(&self, path: &Path) -> io::Result<()> {
        self.range.hand_over(path)
    }

    /// See [`IdRange::hand_over_but`].
    pub(super) fn hand_over_but(&self, path: &Path, later: &[PathBuf]) -> io::Result<()> {
        self.range.hand_over_but(path, later)
    }
}

/// Makes the calling process, just joined to a jail's user namespace,
/// its root (host ids map to nothing there): ids 0, no supplementary
/// groups. Only async-signal-safe calls: for a forked child.
pub(super) fn become_root() -> io::Result<()> {
    // SAFETY: plain system calls (not glibc's wrappers, which signal
    // other threads) on valid arguments.
    unsafe {
        for result in [
            libc::syscall(libc::SYS_setresgid, 0, 0, 0),
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            libc::syscall(libc::SYS_setresuid, 0, 0, 0),
        ] {
            if result != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
