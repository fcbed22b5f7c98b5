//! open(2) as one system call. musl's `open` follows every O_CLOEXEC open
//! with fcntl(F_SETFD, FD_CLOEXEC), for kernels before 2.6.23 that ignored
//! the flag; its `openat` does not. std's `File::open` and nix's `open` go
//! through `open`: about twenty extra system calls per container's cycle
//! in the agent and the init.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::NixPath;

/// Opens `path` (relative paths from the working directory) close-on-exec.
pub fn open(path: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    open_at(None, path, flags, mode)
}

/// Opens `path` close-on-exec, a relative one from `dir` (the working
/// directory when None).
pub fn open_at<P: ?Sized + NixPath>(
    dir: Option<BorrowedFd<'_>>,
    path: &P,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::openat(dir.map(|d| d.as_raw_fd()), path, flags | OFlag::O_CLOEXEC, mode)?;
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// [`open`] as a `File`, with std's error; a file it creates (O_CREAT) gets
/// std's mode, 0666 less the umask.
pub fn file(path: &Path, flags: OFlag) -> std::io::Result<File> {
    let mode = Mode::from_bits_truncate(0o666);
    open(path, flags, mode).map(File::from).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn opens_close_on_exec_and_says_why_not() {
        let mut f = file(Path::new("/proc/self/stat"), OFlag::O_RDONLY).unwrap();
        let fd_flags = nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0);
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert!(s.starts_with(&format!("{} (", std::process::id())), "{s}");
        let missing = file(Path::new("/nonexistent/pith"), OFlag::O_RDONLY).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
