//! Confinement of host-given guest paths to allowed directories ("roots").
//!
//! CopyFile destinations and storage mount points (and the sources of
//! bind-like storages) must lie under one of a few directories (Kata's
//! `/run/kata-containers`, the agent's state directory, a configured list).
//! A path is first checked lexically (absolute, no `..`, under a root), then
//! resolved from a descriptor of its root with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)`: a symlink that would lead out of the root is
//! refused, one that stays inside is followed.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Why a path was refused (or could not be resolved).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfineError {
    /// Not an absolute path.
    #[error("{0}: not an absolute path")]
    NotAbsolute(PathBuf),
    /// A `..` component.
    #[error("{0}: '..' is not allowed")]
    ParentDir(PathBuf),
    /// Not below any root (or the root itself).
    #[error("{path} is not under an allowed directory ({roots})")]
    NotUnder {
        /// The path.
        path: PathBuf,
        /// The roots, comma-separated.
        roots: String,
    },
    /// A symlink on the way leads out of the root.
    #[error("{path}: a symlink leads out of {root}")]
    Escapes {
        /// The path.
        path: PathBuf,
        /// Its root.
        root: PathBuf,
    },
    /// A component on the way is not a directory.
    #[error("{0}: not a directory")]
    NotDir(PathBuf),
    /// A NUL byte in the path.
    #[error("{0}: NUL in path")]
    Nul(PathBuf),
    /// The path must exist and does not.
    #[error("{0}: does not exist")]
    Missing(PathBuf),
    /// A syscall failed.
    #[error("{syscall}({path}): {errno}")]
    Sys {
        /// The syscall.
        syscall: &'static str,
        /// Its path.
        path: PathBuf,
        /// The errno.
        errno: Errno,
    },
}

impl ConfineError {
    /// Whether this is the caller's fault (INVALID_ARGUMENT) rather than the system's.
    #[cfg(test)]
    pub fn is_invalid(&self) -> bool {
        !matches!(self, ConfineError::Sys { .. })
    }
}

/// The root `path` lies under (the longest one) and the rest of it, which is
/// never empty: a root itself is not a valid destination.
pub fn place<'p>(roots: &'p [PathBuf], path: &'p Path) -> Result<(&'p Path, &'p Path), ConfineError> {
    if !path.is_absolute() {
        return Err(ConfineError::NotAbsolute(path.to_path_buf()));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(ConfineError::ParentDir(path.to_path_buf()));
    }
    roots
        .iter()
        .filter_map(|r| path.strip_prefix(r).ok().map(|rel| (r.as_path(), rel)))
        .filter(|(_, rel)| !rel.as_os_str().is_empty())
        .max_by_key(|(r, _)| r.as_os_str().len())
        .ok_or_else(|| ConfineError::NotUnder {
            path: path.to_path_buf(),
            roots: roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// An `O_PATH` descriptor of the root directory `root`.
pub fn open_root(root: &Path) -> Result<OwnedFd, ConfineError> {
    rustjail::open::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).map_err(|errno| ConfineError::Sys {
        syscall: "open",
        path: root.to_path_buf(),
        errno,
    })
}

/// Opens `rel` below `root` without leaving it (`openat2(RESOLVE_BENEATH)`).
/// ENOENT comes back as [`ConfineError::Sys`] with `errno` ENOENT.
pub fn open_beneath(root: &OwnedFd, root_path: &Path, rel: &Path, flags: OFlag) -> Result<OwnedFd, ConfineError> {
    use rustjail::paths::{openat2, RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS};
    let shown = root_path.join(rel);
    openat2(root, rel, flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS).map_err(|e| match e {
        Errno::EXDEV | Errno::ELOOP => ConfineError::Escapes {
            path: shown,
            root: root_path.to_path_buf(),
        },
        Errno::ENOTDIR => ConfineError::NotDir(shown),
        Errno::EINVAL if rel.as_os_str().as_bytes().contains(&0) => ConfineError::Nul(shown),
        errno => ConfineError::Sys {
            syscall: "openat2",
            path: shown,
            errno,
        },
    })
}

/// The real path of an open descriptor (`/proc/self/fd/N`).
fn fd_path(fd: &OwnedFd, shown: &Path) -> Result<PathBuf, ConfineError> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| ConfineError::Sys {
        syscall: "readlink",
        path: shown.to_path_buf(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })
}

/// Resolves `path` under `roots` without following a symlink out of its root:
/// the real path of its deepest existing ancestor (symlinks inside the root
/// followed) joined with the part that does not exist yet. With `must_exist`,
/// the whole path must exist.
pub fn resolve(roots: &[PathBuf], path: &Path, must_exist: bool) -> Result<PathBuf, ConfineError> {
    let (root, rel) = place(roots, path)?;
    let rel: PathBuf = rel.components().collect();
    let root_fd = match open_root(root) {
        Ok(fd) => fd,
        // Nothing below a missing root can be a symlink yet.
        Err(ConfineError::Sys {
            errno: Errno::ENOENT, ..
        }) if !must_exist => return Ok(root.join(&rel)),
        Err(ConfineError::Sys {
            errno: Errno::ENOENT, ..
        }) => return Err(ConfineError::Missing(path.to_path_buf())),
        Err(e) => return Err(e),
    };
    let mut existing = rel.clone();
    loop {
        match open_beneath(&root_fd, root, &existing, OFlag::O_PATH | OFlag::O_CLOEXEC) {
            Ok(fd) => {
                let real = fd_path(&fd, &root.join(&existing))?;
                let missing = rel.strip_prefix(&existing).unwrap_or(Path::new(""));
                return Ok(if missing.as_os_str().is_empty() {
                    real
                } else {
                    real.join(missing)
                });
            }
            Err(ConfineError::Sys {
                errno: Errno::ENOENT, ..
            }) if !must_exist => {
                if !existing.pop() {
                    // Even the root is gone now (removed meanwhile).
                    return Ok(root.join(&rel));
                }
            }
            Err(ConfineError::Sys {
                errno: Errno::ENOENT, ..
            }) => return Err(ConfineError::Missing(path.to_path_buf())),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn lexical_checks() {
        let roots = vec![PathBuf::from("/run/kata-containers"), PathBuf::from("/run/pith")];
        assert!(matches!(
            place(&roots, Path::new("relative")),
            Err(ConfineError::NotAbsolute(_))
        ));
        assert!(matches!(
            place(&roots, Path::new("/run/pith/../etc")),
            Err(ConfineError::ParentDir(_))
        ));
        for bad in ["/etc", "/run/kata-containers", "/run/kata-containersx/a", "/run"] {
            let e = place(&roots, Path::new(bad)).unwrap_err();
            assert!(matches!(e, ConfineError::NotUnder { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("/run/kata-containers, /run/pith"), "{e}");
        }
        let (r, rel) = place(&roots, Path::new("/run/kata-containers/sandbox/shm")).unwrap();
        assert_eq!((r, rel), (Path::new("/run/kata-containers"), Path::new("sandbox/shm")));
    }

    #[test]
    fn resolves_inside_and_refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        symlink("real", root.join("inside")).unwrap();
        symlink(&outside, root.join("abs")).unwrap();
        symlink("../outside", root.join("rel")).unwrap();
        let roots = vec![root.clone()];
        // Missing tail kept, existing part made real.
        assert_eq!(
            resolve(&roots, &root.join("inside/sub/new/deeper"), false).unwrap(),
            root.canonicalize().unwrap().join("real/sub/new/deeper")
        );
        assert_eq!(
            resolve(&roots, &root.join("fresh/a"), false).unwrap(),
            root.canonicalize().unwrap().join("fresh/a")
        );
        for bad in ["abs", "abs/x", "rel/x/y"] {
            let e = resolve(&roots, &root.join(bad), false).unwrap_err();
            assert!(matches!(e, ConfineError::Escapes { .. }), "{bad}: {e}");
            assert!(e.is_invalid());
        }
        assert!(matches!(
            resolve(&roots, &root.join("nope"), true),
            Err(ConfineError::Missing(_))
        ));
        std::fs::write(root.join("file"), "").unwrap();
        assert!(matches!(
            resolve(&roots, &root.join("file/x"), false),
            Err(ConfineError::NotDir(_))
        ));
        // A root that does not exist yet: the path as given.
        let ghost = vec![d.path().join("ghost")];
        assert_eq!(
            resolve(&ghost, &d.path().join("ghost/a/b"), false).unwrap(),
            d.path().join("ghost/a/b")
        );
    }
}
