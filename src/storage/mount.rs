//! The syscalls drivers share: making mount points, mounting, and undoing both.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::options::MountOptions;
use super::StorageError;

/// What a filesystem mount of a storage will be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountArgs {
    /// Device, tag or pseudo name.
    pub source: String,
    /// Filesystem type.
    pub fstype: String,
    /// Flags, propagation and data.
    pub options: MountOptions,
}

impl MountArgs {
    /// Makes the mount point (recorded in `rec`), mounts, sets propagation.
    pub fn apply(&self, target: &Path, rec: &mut Record) -> Result<(), StorageError> {
        ensure_dir(target, rec)?;
        let o = &self.options;
        mount(&self.source, target, Some(&self.fstype), o.flags, &o.data, rec)?;
        propagate(target, &o.propagation)
    }
}

/// What a driver did so far, so that it can be undone.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Whether something is mounted at the mount point.
    pub mounted: bool,
    /// Directories and files created, in creation order.
    pub created: Vec<PathBuf>,
}

pub(super) fn sys(syscall: &'static str, what: impl std::fmt::Display) -> impl FnOnce(Errno) -> StorageError {
    move |source| StorageError::Sys {
        syscall,
        what: what.to_string(),
        source,
    }
}

pub(super) fn io(syscall: &'static str, what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> StorageError {
    move |e| StorageError::Sys {
        syscall,
        what: what.to_string(),
        source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Creates `dir` and its missing parents, recording each one made.
pub fn ensure_dir(dir: &Path, rec: &mut Record) -> Result<(), StorageError> {
    let mut missing = Vec::new();
    let mut p = dir;
    loop {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => break,
            Ok(_) if p == dir => {
                return Err(StorageError::InvalidArgument(format!(
                    "mount point {} exists and is not a directory",
                    dir.display()
                )))
            }
            Ok(_) => {
                return Err(StorageError::InvalidArgument(format!(
                    "{} (above mount point {}) is not a directory",
                    p.display(),
                    dir.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(p.to_path_buf()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(StorageError::InvalidArgument(format!(
                    "a path component above mount point {} is not a directory",
                    dir.display()
                )))
            }
            Err(e) => return Err(io("stat", p.display())(e)),
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    for d in missing.into_iter().rev() {
        std::fs::create_dir(&d).map_err(io("mkdir", d.display()))?;
        rec.created.push(d);
    }
    Ok(())
}

/// Creates an empty file at `file` (and its parents) to bind a file onto.
pub fn ensure_file(file: &Path, rec: &mut Record) -> Result<(), StorageError> {
    if let Some(parent) = file.parent() {
        ensure_dir(parent, rec)?;
    }
    match std::fs::symlink_metadata(file) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(StorageError::InvalidArgument(format!(
            "mount point {} exists and is not a file (the source is a file)",
            file.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(file)
                .map_err(io("open", file.display()))?;
            rec.created.push(file.to_path_buf());
            Ok(())
        }
        Err(e) => Err(io("stat", file.display())(e)),
    }
}

/// mount(2), the error naming source, target and type.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: &str,
    rec: &mut Record,
) -> Result<(), StorageError> {
    let data = (!data.is_empty()).then_some(data);
    nix::mount::mount(Some(source), target, fstype, flags, data).map_err(sys(
        "mount",
        format!("{source:?} -> {:?}, {}", target, fstype.unwrap_or("none")),
    ))?;
    if !flags.contains(MsFlags::MS_REMOUNT) {
        rec.mounted = true;
    }
    Ok(())
}

/// Changes the propagation of the mount at `target`.
pub fn propagate(target: &Path, propagation: &[MsFlags]) -> Result<(), StorageError> {
    for p in propagation {
        nix::mount::mount(None::<&str>, target, None::<&str>, *p, None::<&str>)
            .map_err(sys("mount", format!("{target:?}, propagation {p:?}")))?;
    }
    Ok(())
}

/// Gives `path` to group `gid` with the set-group-id bit on directories, so
/// new files there belong to the group (Kata's fsGroup handling).
pub fn give_to_group(path: &Path, gid: u32, mode: Option<u32>) -> Result<(), StorageError> {
    nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
        .map_err(sys("chown", format!("{}, gid {gid}", path.display())))?;
    let m = std::fs::metadata(path).map_err(io("stat", path.display()))?;
    let mut bits = mode.unwrap_or(m.permissions().mode() & 0o7777);
    if m.is_dir() {
        bits |= libc::S_ISGID;
    }
    set_mode(path, bits)
}

/// chmod(2) to exactly `bits`.
pub fn set_mode(path: &Path, bits: u32) -> Result<(), StorageError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits))
        .map_err(io("chmod", format!("{}, {bits:o}", path.display())))
}

/// Undoes `rec` for the storage at `mount_point`: unmounts, then removes what
/// was created, last first. With `remove_contents`, a created mount point is
/// removed with what is in it (a `local` volume's data).
pub fn undo(mount_point: &Path, rec: &mut Record, remove_contents: bool) -> Result<(), StorageError> {
    if rec.mounted {
        match nix::mount::umount2(mount_point, MntFlags::empty()) {
            // EINVAL: not a mount point any more; ENOENT: gone.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(Errno::EBUSY) => nix::mount::umount2(mount_point, MntFlags::MNT_DETACH)
                .map_err(sys("umount2", format!("{}, MNT_DETACH", mount_point.display())))?,
            Err(e) => return Err(sys("umount2", mount_point.display())(e)),
        }
        rec.mounted = false;
    }
    while let Some(p) = rec.created.last() {
        let r = match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() && remove_contents && p == mount_point => std::fs::remove_dir_all(p),
            Ok(m) if m.is_dir() => std::fs::remove_dir(p),
            Ok(_) => std::fs::remove_file(p),
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Someone else put something there: leave the directory.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
            Err(e) => return Err(io("rmdir", p.display())(e)),
        }
        rec.created.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_dir_records_and_undo_removes_only_what_it_made() {
        let d = tempfile::tempdir().unwrap();
        let mut rec = Record::default();
        let mp = d.path().join("a/b/c");
        ensure_dir(&mp, &mut rec).unwrap();
        assert_eq!(
            rec.created,
            vec![d.path().join("a"), d.path().join("a/b"), d.path().join("a/b/c")]
        );
        std::fs::write(mp.join("data"), "x").unwrap();
        undo(&mp, &mut rec, true).unwrap();
        assert!(!d.path().join("a").exists());
        assert!(d.path().exists());
        assert!(rec.created.is_empty());
    }

    #[test]
    fn undo_leaves_a_directory_someone_else_filled() {
        let d = tempfile::tempdir().unwrap();
        let mut rec = Record::default();
        let mp = d.path().join("a/b");
        ensure_dir(&mp, &mut rec).unwrap();
        std::fs::write(d.path().join("a/other"), "x").unwrap();
        undo(&mp, &mut rec, false).unwrap();
        assert!(!mp.exists());
        assert!(d.path().join("a/other").exists());
    }

    #[test]
    fn a_file_in_the_way_is_invalid() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "").unwrap();
        let mut rec = Record::default();
        let e = ensure_dir(&d.path().join("f"), &mut rec).unwrap_err();
        assert!(matches!(e, StorageError::InvalidArgument(_)), "{e}");
        let e = ensure_dir(&d.path().join("f/sub"), &mut rec).unwrap_err();
        assert!(matches!(e, StorageError::InvalidArgument(_)), "{e}");
    }
}
