//! Reading, on the host, a file a jail wrote: the jail may have made any
//! name along the way a link (to another team's files, to the host's) or
//! a FIFO, so the file is opened below a directory the jail cannot
//! replace without following a link of any kind (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`),
//! without waiting on a FIFO (`O_NONBLOCK`), only when it is a regular
//! file, and at most `max` bytes of it.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The file at `below` (relative) under `base`, read as the module says;
/// `InvalidData` for one that is no regular file or is larger than `max`.
pub fn read(base: &Path, below: &Path, max: u64) -> io::Result<Vec<u8>> {
    let dir = File::open(base)?;
    let path = CString::new(below.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `open_how` is plain integers, for which zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 on a descriptor this function owns, a NUL-ended
    // path and an `open_how` of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor openat2 just returned, owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd as i32) };
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    if !file.metadata()?.is_file() {
        return Err(invalid(format!(
            "{} is not a regular file",
            below.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(invalid(format!(
            "{} is larger than {max} bytes",
            below.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_only_below_its_base_through_no_link_and_within_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir_all(base.join("a")).unwrap();
        std::fs::write(base.join("a/file"), b"what the jail wrote").unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, b"not the jail's").unwrap();
        assert_eq!(
            read(&base, Path::new("a/file"), 100).unwrap(),
            b"what the jail wrote"
        );

        std::os::unix::fs::symlink(&outside, base.join("a/link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), base.join("up")).unwrap();
        for refused in ["a/link", "up/secret", "../secret", "/etc/passwd"] {
            assert!(read(&base, Path::new(refused), 100).is_err(), "{refused}");
        }
        let fifo = CString::new(base.join("a/fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-ended path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let not_a_file = read(&base, Path::new("a/fifo"), 100).unwrap_err();
        assert_eq!(not_a_file.kind(), io::ErrorKind::InvalidData);
        let too_large = read(&base, Path::new("a/file"), 5).unwrap_err();
        assert_eq!(too_large.kind(), io::ErrorKind::InvalidData);
    }
}
