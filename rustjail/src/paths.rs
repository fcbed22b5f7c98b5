//! Resolving spec paths inside a container's root without following a symlink
//! out of it: `openat2(RESOLVE_IN_ROOT)` on a descriptor of the root, so `..` and
//! absolute symlinks stay inside. Mounts then target `/proc/self/fd/N`, the
//! descriptor we resolved, not a path string someone could swap.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::error::{sys, Error, Result};

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2 `resolve` flag: no /proc magic links.
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// openat2 `resolve` flag: fail (EXDEV) on anything leading out of the directory.
pub const RESOLVE_BENEATH: u64 = 0x08;
/// openat2 `resolve` flag: resolve as if the directory were `/`.
pub const RESOLVE_IN_ROOT: u64 = 0x10;

/// Opens `rel` (taken as relative to `root` even when absolute) with `flags`,
/// confined to `root`.
pub fn open_in_root(root: &OwnedFd, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    openat2(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
}

/// `openat2(root, rel, flags | O_CLOEXEC, resolve)`; `rel` is taken as relative
/// even when absolute, and empty means `root` itself.
pub fn openat2(root: &OwnedFd, rel: &Path, flags: OFlag, resolve: u64) -> nix::Result<OwnedFd> {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = CString::new(rel.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)?;
    let how = OpenHow {
        flags: (flags | OFlag::O_CLOEXEC).bits() as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: openat2 with a valid dirfd, NUL-terminated path and a correctly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Opens a directory as the root for later resolutions.
pub fn open_root(path: &Path) -> Result<OwnedFd> {
    crate::open::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).map_err(sys("open", path.display()))
}

/// The path `/proc/self/fd/N` that names an open descriptor.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// What to create when the target is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Fail with ENOENT.
    Nothing,
    /// A directory (and its parents).
    Dir,
    /// An empty file (parents as directories).
    File,
}

/// Resolves `rel` inside `root`, creating what is missing, and returns an
/// `O_PATH` descriptor of the target. Every step is resolved in the root, so a
/// symlink in the rootfs cannot point a mount outside it.
pub fn ensure_in_root(root: &OwnedFd, root_shown: &Path, rel: &Path, create: Create) -> Result<OwnedFd> {
    let shown = || {
        root_shown
            .join(rel.strip_prefix("/").unwrap_or(rel))
            .display()
            .to_string()
    };
    match open_in_root(root, rel, OFlag::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(nix::Error::ENOENT) if create != Create::Nothing => {}
        Err(e) => return Err(sys("openat2", shown())(e)),
    }
    let comps: Vec<Component> = rel.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    if rel.components().any(|c| c == Component::ParentDir) {
        return Err(Error::Spec(format!("path {} contains '..'", rel.display())));
    }
    // Most targets miss only their last component (a mount point such as
    // /dev/pts in a fresh /dev): when the parent is there, make just that,
    // instead of resolving every prefix again.
    let mut start = 0;
    if let Some((leaf, dirs)) = comps.split_last() {
        let parent_path: PathBuf = std::iter::once(Component::RootDir)
            .chain(dirs.iter().copied())
            .collect();
        if let Ok(parent) = open_in_root(root, &parent_path, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            make_missing(&parent, leaf.as_os_str(), create == Create::File, &shown)?;
            start = comps.len();
        }
    }
    let mut partial = PathBuf::from("/");
    for (i, c) in comps.iter().enumerate().skip(start) {
        let last = i + 1 == comps.len();
        let parent = open_in_root(root, &partial, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(sys(
            "openat2",
            root_shown.join(partial.strip_prefix("/").unwrap()).display(),
        ))?;
        partial.push(c);
        if open_in_root(root, &partial, OFlag::O_PATH).is_ok() {
            continue;
        }
        make_missing(&parent, c.as_os_str(), last && create == Create::File, &shown)?;
    }
    open_in_root(root, rel, OFlag::O_PATH).map_err(sys("openat2", shown()))
}

/// Makes `name` in `parent`: an empty file when `file`, else a directory;
/// one that appeared meanwhile is fine.
fn make_missing(parent: &OwnedFd, name: &std::ffi::OsStr, file: bool, shown: &dyn Fn() -> String) -> Result<()> {
    let r = if file {
        nix::fcntl::openat(
            Some(parent.as_raw_fd()),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(|fd| {
            let _ = nix::unistd::close(fd);
        })
    } else {
        nix::sys::stat::mkdirat(Some(parent.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
    };
    match r {
        Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
        Err(e) => Err(sys(if file { "openat" } else { "mkdirat" }, shown())(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_cannot_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../../", root.join("etc/up")).unwrap();
        let rfd = open_root(&root).unwrap();
        // "/escape/tmp" must land in root/tmp, not the host's /tmp.
        let fd = ensure_in_root(&rfd, &root, Path::new("/escape/tmp/x"), Create::Dir).unwrap();
        let real = std::fs::read_link(fd_path(&fd)).unwrap();
        assert_eq!(real, root.join("tmp/x").canonicalize().unwrap());
        let fd = ensure_in_root(&rfd, &root, Path::new("/etc/up/etc/passwd"), Create::File).unwrap();
        let real = std::fs::read_link(fd_path(&fd)).unwrap();
        assert!(real.starts_with(root.canonicalize().unwrap()), "{}", real.display());
    }

    #[test]
    fn a_missing_leaf_is_made_in_its_parent_as_resolved_in_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("dev/up")).unwrap();
        let rfd = open_root(&root).unwrap();
        let real = |fd: OwnedFd| std::fs::read_link(fd_path(&fd)).unwrap();
        let canon = root.canonicalize().unwrap();
        // Parent there: only the leaf is made.
        let fd = ensure_in_root(&rfd, &root, Path::new("/dev/pts"), Create::Dir).unwrap();
        assert_eq!(real(fd), canon.join("dev/pts"));
        // Parents that are symlinks out of the root land in it.
        let fd = ensure_in_root(&rfd, &root, Path::new("/escape/x"), Create::Dir).unwrap();
        assert_eq!(real(fd), canon.join("x"));
        let fd = ensure_in_root(&rfd, &root, Path::new("/dev/up/f"), Create::File).unwrap();
        assert_eq!(real(fd), canon.join("f"));
        assert!(std::fs::metadata(canon.join("f")).unwrap().is_file());
        // A file where a directory is needed is an error naming the path.
        let e = ensure_in_root(&rfd, &root, Path::new("/file/x"), Create::Dir).unwrap_err();
        assert!(e.to_string().contains("file/x"), "{e}");
        // Nothing below the root: the root itself.
        for p in ["", "/"] {
            assert_eq!(
                real(ensure_in_root(&rfd, &root, Path::new(p), Create::Dir).unwrap()),
                canon
            );
        }
        // Several missing levels still go through the walk.
        let fd = ensure_in_root(&rfd, &root, Path::new("/a/b/c"), Create::File).unwrap();
        assert_eq!(real(fd), canon.join("a/b/c"));
        assert!(std::fs::metadata(canon.join("a/b")).unwrap().is_dir());
    }

    #[test]
    fn dotdot_in_spec_paths_is_refused_when_creating() {
        let dir = tempfile::tempdir().unwrap();
        let rfd = open_root(dir.path()).unwrap();
        let e = ensure_in_root(&rfd, dir.path(), Path::new("/a/../../b"), Create::Dir).unwrap_err();
        assert!(e.to_string().contains(".."), "{e}");
    }
}
