//! CopyFile: the host copies a file (or a directory entry, or a symlink) into the
//! guest in chunks, as Kata's runtime does for volumes it cannot share.
//!
//! Semantics (Kata's): `data` lands at `offset` of the file; the file is
//! complete when its size reaches `file_size`. `file_mode` carries the type bits:
//! a directory is created, a symlink points at `data`, anything else is a
//! regular file. Missing parent directories are created with `dir_mode`, owned
//! by `uid`/`gid` (-1 leaves an id alone), as is the file.
//!
//! Differences from Kata's agent, on purpose:
//! * chunks go to a hidden temporary file beside the destination, which is
//!   renamed into place only when the last byte has landed: a reader never sees
//!   half a file;
//! * the destination must lie under one of the allowed roots, and is resolved
//!   from a descriptor of that root with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_MAGICLINKS)`: a `..` component, or a symlink that would lead out
//!   of the root, is refused with INVALID_ARGUMENT;
//! * a `dir_mode` without permission bits means 0755, not 0000.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use super::confine::{self, ConfineError};
use super::{io, sys, GuestError};

/// Permission bits used for created directories when the request has none.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

/// One CopyFile request, independent of the protobuf type.
#[derive(Debug, Clone, Copy)]
pub struct CopyRequest<'a> {
    /// Absolute destination path.
    pub path: &'a str,
    /// Size of the whole file.
    pub file_size: i64,
    /// Type and permission bits of the destination.
    pub file_mode: u32,
    /// Permission bits of created parent directories.
    pub dir_mode: u32,
    /// Owner, -1 to leave it.
    pub uid: i32,
    /// Group, -1 to leave it.
    pub gid: i32,
    /// Where `data` goes in the file.
    pub offset: i64,
    /// A chunk of the file, or a symlink's target.
    pub data: &'a [u8],
}

fn invalid(msg: String) -> GuestError {
    GuestError::InvalidArgument(msg)
}

/// Does one CopyFile request below one of `roots`.
pub fn copy_file(roots: &[PathBuf], req: &CopyRequest<'_>) -> Result<(), GuestError> {
    let path = Path::new(req.path);
    let (root, rel) = confine::place(roots, path).map_err(confine_err)?;
    let name = rel
        .file_name()
        .ok_or_else(|| invalid(format!("CopyFile: {}: no file name", path.display())))?;
    std::fs::create_dir_all(root).map_err(io("mkdir", root.display()))?;
    let root_fd = confine::open_root(root).map_err(confine_err)?;
    let dir = make_parents(&root_fd, root, rel.parent().unwrap_or(Path::new("")), req)?;
    let ids = (id(req.uid), id(req.gid));
    let kind = SFlag::from_bits_truncate(req.file_mode & SFlag::S_IFMT.bits());
    let perm = Mode::from_bits_truncate(req.file_mode & 0o7777);
    match kind {
        k if k == SFlag::S_IFDIR => make_dir(&dir, path, name, perm, ids),
        k if k == SFlag::S_IFLNK => make_symlink(&dir, path, name, req.data, ids),
        k if k == SFlag::S_IFREG || k.is_empty() => write_chunk(&dir, path, name, perm, ids, req),
        _ => Err(invalid(format!(
            "CopyFile: {}: file mode {:o} is not a regular file, directory or symlink",
            path.display(),
            req.file_mode
        ))),
    }
}

fn id(v: i32) -> Option<u32> {
    (v >= 0).then_some(v as u32)
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A confinement error as CopyFile reports it.
fn confine_err(e: ConfineError) -> GuestError {
    match e {
        ConfineError::Sys { syscall, path, errno } => GuestError::Sys {
            syscall,
            what: path.display().to_string(),
            source: errno,
        },
        e => invalid(format!("CopyFile: {e}")),
    }
}

/// Opens `rel` below `root` without leaving it.
fn open_beneath(root: &OwnedFd, root_path: &Path, rel: &Path, flags: OFlag) -> Result<OwnedFd, GuestError> {
    confine::open_beneath(root, root_path, rel, flags).map_err(confine_err)
}

/// Opens (creating as needed, with `dir_mode` and the owner) each directory of
/// `parent` below the root; returns the last one.
fn make_parents(root: &OwnedFd, root_path: &Path, parent: &Path, req: &CopyRequest<'_>) -> Result<OwnedFd, GuestError> {
    let mut dir = open_beneath(root, root_path, Path::new(""), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    let mut sofar = PathBuf::new();
    let mode = match req.dir_mode & 0o7777 {
        0 => DEFAULT_DIR_MODE,
        m => m,
    };
    let mode = Mode::from_bits_truncate(mode);
    for c in parent.components() {
        let Component::Normal(name) = c else { continue };
        sofar.push(name);
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        dir = match open_beneath(root, root_path, &sofar, flags) {
            Ok(fd) => fd,
            Err(GuestError::Sys {
                source: Errno::ENOENT, ..
            }) => {
                let shown = root_path.join(&sofar);
                match nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), name, mode) {
                    Ok(()) => {
                        let fd = nix::fcntl::openat(
                            Some(dir.as_raw_fd()),
                            name,
                            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                            Mode::empty(),
                        )
                        .map(owned)
                        .map_err(sys("openat", shown.display()))?;
                        // mkdir applied the umask; set the bits asked for.
                        nix::sys::stat::fchmod(fd.as_raw_fd(), mode).map_err(sys("fchmod", shown.display()))?;
                        chown_fd(&fd, &shown, (id(req.uid), id(req.gid)))?;
                    }
                    Err(Errno::EEXIST) => {} // made meanwhile: fine
                    Err(e) => return Err(sys("mkdirat", shown.display())(e)),
                }
                open_beneath(root, root_path, &sofar, flags)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(dir)
}

fn chown_fd(fd: &OwnedFd, shown: &Path, (uid, gid): (Option<u32>, Option<u32>)) -> Result<(), GuestError> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    nix::unistd::fchown(fd.as_raw_fd(), uid.map(Uid::from_raw), gid.map(Gid::from_raw))
        .map_err(sys("fchown", shown.display()))
}

fn make_dir(
    dir: &OwnedFd,
    path: &Path,
    name: &OsStr,
    perm: Mode,
    ids: (Option<u32>, Option<u32>),
) -> Result<(), GuestError> {
    let d = Some(dir.as_raw_fd());
    match nix::sys::stat::mkdirat(d, name, perm) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            let st = nix::sys::stat::fstatat(d, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(sys("fstatat", path.display()))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                nix::unistd::unlinkat(d, name, UnlinkatFlags::NoRemoveDir).map_err(sys("unlinkat", path.display()))?;
                nix::sys::stat::mkdirat(d, name, perm).map_err(sys("mkdirat", path.display()))?;
            }
        }
        Err(e) => return Err(sys("mkdirat", path.display())(e)),
    }
    let fd = nix::fcntl::openat(
        d,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(owned)
    .map_err(sys("openat", path.display()))?;
    nix::sys::stat::fchmod(fd.as_raw_fd(), perm).map_err(sys("fchmod", path.display()))?;
    chown_fd(&fd, path, ids)
}

/// The hidden name chunks of `name` collect under until the file is whole.
fn temp_name(name: &OsStr) -> std::ffi::OsString {
    let mut t = std::ffi::OsString::from(".");
    t.push(name);
    t.push(".pith-copy");
    t
}

fn make_symlink(
    dir: &OwnedFd,
    path: &Path,
    name: &OsStr,
    target: &[u8],
    (uid, gid): (Option<u32>, Option<u32>),
) -> Result<(), GuestError> {
    if target.is_empty() {
        return Err(invalid(format!(
            "CopyFile: {}: symlink without a target",
            path.display()
        )));
    }
    let d = Some(dir.as_raw_fd());
    let tmp = temp_name(name);
    match nix::unistd::unlinkat(d, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(sys("unlinkat", path.with_file_name(&tmp).display())(e)),
    }
    nix::unistd::symlinkat(OsStr::from_bytes(target), d, tmp.as_os_str()).map_err(sys("symlinkat", path.display()))?;
    if uid.is_some() || gid.is_some() {
        nix::unistd::fchownat(
            d,
            tmp.as_os_str(),
            uid.map(Uid::from_raw),
            gid.map(Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(sys("fchownat", path.display()))?;
    }
    replace(dir, path, &tmp, name)
}

/// Renames `tmp` over `name`; an empty directory in the way is removed first.
fn replace(dir: &OwnedFd, path: &Path, tmp: &OsStr, name: &OsStr) -> Result<(), GuestError> {
    let d = Some(dir.as_raw_fd());
    match nix::fcntl::renameat(d, tmp, d, name) {
        Ok(()) => Ok(()),
        Err(Errno::EISDIR) => {
            nix::unistd::unlinkat(d, name, UnlinkatFlags::RemoveDir).map_err(sys("rmdir", path.display()))?;
            nix::fcntl::renameat(d, tmp, d, name).map_err(sys("renameat", path.display()))
        }
        Err(e) => Err(sys("renameat", path.display())(e)),
    }
}

fn write_chunk(
    dir: &OwnedFd,
    path: &Path,
    name: &OsStr,
    perm: Mode,
    ids: (Option<u32>, Option<u32>),
    req: &CopyRequest<'_>,
) -> Result<(), GuestError> {
    let end = req.offset.checked_add(req.data.len() as i64);
    if req.offset < 0 || req.file_size < 0 || end.is_none_or(|e| e > req.file_size) {
        return Err(invalid(format!(
            "CopyFile: {}: {} bytes at offset {} do not fit a file of {} bytes",
            path.display(),
            req.data.len(),
            req.offset,
            req.file_size
        )));
    }
    let tmp = temp_name(name);
    let shown = path.with_file_name(&tmp);
    let mut flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if req.offset == 0 {
        flags |= OFlag::O_TRUNC;
    }
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        tmp.as_os_str(),
        flags,
        Mode::from_bits_truncate(0o600),
    )
    .map(owned)
    .map_err(sys("openat", shown.display()))?;
    let f = std::fs::File::from(fd);
    std::os::unix::fs::FileExt::write_all_at(&f, req.data, req.offset as u64).map_err(io("pwrite", shown.display()))?;
    let size = f.metadata().map_err(io("fstat", shown.display()))?.len();
    if size < req.file_size as u64 {
        return Ok(()); // more chunks to come
    }
    nix::sys::stat::fchmod(f.as_raw_fd(), perm).map_err(sys("fchmod", shown.display()))?;
    let fd = OwnedFd::from(f);
    chown_fd(&fd, &shown, ids)?;
    nix::unistd::fsync(fd.as_raw_fd()).map_err(sys("fsync", shown.display()))?;
    replace(dir, path, &tmp, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn req<'a>(path: &'a str, data: &'a [u8]) -> CopyRequest<'a> {
        CopyRequest {
            path,
            file_size: data.len() as i64,
            file_mode: libc::S_IFREG | 0o640,
            dir_mode: 0o750,
            uid: -1,
            gid: -1,
            offset: 0,
            data,
        }
    }

    fn setup() -> (tempfile::TempDir, Vec<PathBuf>, String) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let s = root.display().to_string();
        (d, vec![root], s)
    }

    #[test]
    fn chunks_land_atomically_with_mode_and_parents() {
        let (_d, roots, root) = setup();
        let dest = format!("{root}/a/b/file");
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut r = req(&dest, &body[..4000]);
        r.file_size = body.len() as i64;
        r.uid = 1234;
        r.gid = 5678;
        copy_file(&roots, &r).unwrap();
        assert!(!Path::new(&dest).exists(), "visible before the last chunk");
        r.offset = 4000;
        r.data = &body[4000..];
        copy_file(&roots, &r).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), body);
        let m = std::fs::metadata(&dest).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        let parent = std::fs::metadata(format!("{root}/a/b")).unwrap();
        assert_eq!(parent.permissions().mode() & 0o7777, 0o750);
        if nix::unistd::geteuid().is_root() {
            assert_eq!((m.uid(), m.gid()), (1234, 5678));
            assert_eq!((parent.uid(), parent.gid()), (1234, 5678));
        }
        // No temporary left behind.
        let names: Vec<_> = std::fs::read_dir(format!("{root}/a/b")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn replaces_an_existing_file_and_handles_empty_files() {
        let (_d, roots, root) = setup();
        let dest = format!("{root}/f");
        copy_file(&roots, &req(&dest, b"old contents")).unwrap();
        copy_file(&roots, &req(&dest, b"new")).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        copy_file(&roots, &req(&dest, b"")).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"");
    }

    #[test]
    fn directories_and_symlinks_by_mode_bits() {
        let (_d, roots, root) = setup();
        let dir = format!("{root}/d");
        let mut r = req(&dir, b"");
        r.file_mode = libc::S_IFDIR | 0o711;
        copy_file(&roots, &r).unwrap();
        let m = std::fs::symlink_metadata(&dir).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o7777, 0o711);

        let link = format!("{root}/d/link");
        let mut r = req(&link, b"../target");
        r.file_mode = libc::S_IFLNK | 0o777;
        copy_file(&roots, &r).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from("../target"));
        // Again: replaced, not an error.
        let r2 = CopyRequest { data: b"other", ..r };
        copy_file(&roots, &r2).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from("other"));
    }

    #[test]
    fn refuses_paths_outside_the_roots() {
        let (d, roots, root) = setup();
        for bad in [
            "/etc/passwd".to_string(),
            format!("{root}/../escape"),
            format!("{root}/a/../../escape"),
            "relative/path".to_string(),
            root.clone(),
            format!("{}/rootx/file", d.path().display()),
        ] {
            let e = copy_file(&roots, &req(&bad, b"x")).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument, "{bad}: {e}");
        }
        assert!(!d.path().join("escape").exists());
    }

    #[test]
    fn refuses_symlinks_that_lead_out() {
        let (d, roots, root) = setup();
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(&outside, format!("{root}/abs")).unwrap();
        std::os::unix::fs::symlink("../outside", format!("{root}/rel")).unwrap();
        std::os::unix::fs::symlink("sub", format!("{root}/inside")).unwrap();
        for bad in ["abs/f", "rel/f", "abs/new/f"] {
            let p = format!("{root}/{bad}");
            let e = copy_file(&roots, &req(&p, b"x")).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument, "{bad}: {e}");
            assert!(e.to_string().contains("leads out"), "{e}");
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // A symlink that stays inside is followed.
        std::fs::create_dir(format!("{root}/sub")).unwrap();
        copy_file(&roots, &req(&format!("{root}/inside/f"), b"ok")).unwrap();
        assert_eq!(std::fs::read(format!("{root}/sub/f")).unwrap(), b"ok");
    }

    #[test]
    fn a_symlink_at_the_destination_is_replaced_not_followed() {
        let (d, roots, root) = setup();
        std::fs::create_dir_all(&root).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, format!("{root}/f")).unwrap();
        copy_file(&roots, &req(&format!("{root}/f"), b"new")).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(format!("{root}/f")).unwrap().is_symlink());
    }

    #[test]
    fn refuses_chunks_that_do_not_fit_and_odd_types() {
        let (_d, roots, root) = setup();
        let dest = format!("{root}/f");
        let mut r = req(&dest, b"abcdef");
        r.file_size = 3;
        assert_eq!(
            copy_file(&roots, &r).unwrap_err().kind(),
            crate::error::ErrorKind::InvalidArgument
        );
        r.file_size = 10;
        r.offset = -1;
        assert_eq!(
            copy_file(&roots, &r).unwrap_err().kind(),
            crate::error::ErrorKind::InvalidArgument
        );
        let mut fifo = req(&dest, b"");
        fifo.file_mode = libc::S_IFIFO | 0o644;
        assert_eq!(
            copy_file(&roots, &fifo).unwrap_err().kind(),
            crate::error::ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn longest_root_wins_and_zero_dir_mode_means_0755() {
        let d = tempfile::tempdir().unwrap();
        let roots = vec![d.path().to_path_buf(), d.path().join("inner")];
        let p = d.path().join("inner/x/f").display().to_string();
        let mut r = req(&p, b"1");
        r.dir_mode = 0;
        copy_file(&roots, &r).unwrap();
        let m = std::fs::metadata(d.path().join("inner/x")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
    }
}
