//! Spec mounts inside the new mount namespace: option parsing and mounting onto
//! descriptors resolved in the rootfs.

use std::path::{Path, PathBuf};

use std::os::fd::{FromRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Mount;

use crate::error::{sys, Result};
use crate::paths::{ensure_in_root, fd_path, Create};

/// Mount flags, propagation changes and filesystem data from OCI options.
#[derive(Debug, PartialEq)]
pub struct ParsedOptions {
    /// Flags for the mount itself.
    pub flags: MsFlags,
    /// Propagation to set afterwards (MS_SHARED, MS_SLAVE, ... possibly with MS_REC).
    pub propagation: Vec<MsFlags>,
    /// Comma-separated options the filesystem interprets.
    pub data: String,
    /// Recursive attributes (`rro`, `rnosuid`, ...) to set with mount_setattr(2).
    pub rec_set: u64,
    /// Recursive attributes to clear.
    pub rec_clr: u64,
}

/// MOUNT_ATTR_* from linux/mount.h.
const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;
const ATTR_ATIME_MASK: u64 = 0x70;
const ATTR_RELATIME: u64 = 0x0;
const ATTR_NOATIME: u64 = 0x10;
const ATTR_STRICTATIME: u64 = 0x20;
const ATTR_NODIRATIME: u64 = 0x80;
const ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// The recursive options (as runc names them): (set, clear).
fn recursive_attr(o: &str) -> Option<(u64, u64)> {
    Some(match o {
        "rro" => (ATTR_RDONLY, 0),
        "rrw" => (0, ATTR_RDONLY),
        "rnosuid" => (ATTR_NOSUID, 0),
        "rsuid" => (0, ATTR_NOSUID),
        "rnodev" => (ATTR_NODEV, 0),
        "rdev" => (0, ATTR_NODEV),
        "rnoexec" => (ATTR_NOEXEC, 0),
        "rexec" => (0, ATTR_NOEXEC),
        "rnodiratime" => (ATTR_NODIRATIME, 0),
        "rdiratime" => (0, ATTR_NODIRATIME),
        "rnoatime" => (ATTR_NOATIME, ATTR_ATIME_MASK),
        "rrelatime" => (ATTR_RELATIME, ATTR_ATIME_MASK),
        "rstrictatime" => (ATTR_STRICTATIME, ATTR_ATIME_MASK),
        "ratime" => (0, ATTR_NOATIME),
        "rnorelatime" => (0, 0),
        "rnostrictatime" => (0, ATTR_STRICTATIME),
        "rnosymfollow" => (ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

/// Splits OCI mount options into flags, propagation and data.
pub fn parse_options(options: &[String]) -> ParsedOptions {
    let mut p = ParsedOptions {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: String::new(),
        rec_set: 0,
        rec_clr: 0,
    };
    let mut data = Vec::new();
    for o in options {
        if let Some((set, clr)) = recursive_attr(o) {
            p.rec_set = (p.rec_set & !clr) | set;
            p.rec_clr = (p.rec_clr & !set) | clr;
            continue;
        }
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                let base = match o.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                let rec = if o.starts_with('r') {
                    MsFlags::MS_REC
                } else {
                    MsFlags::empty()
                };
                p.propagation.push(base | rec);
                continue;
            }
            _ => {
                data.push(o.as_str());
                continue;
            }
        };
        p.flags |= set;
        p.flags &= !clear;
    }
    p.data = data.join(",");
    p
}

/// Mounts one spec mount under the rootfs whose descriptor is `root`; new
/// filesystems get the SELinux `mount_label` where they take one.
pub fn mount_one(root: &std::os::fd::OwnedFd, rootfs: &Path, m: &Mount, mount_label: Option<&str>) -> Result<()> {
    let dest = m.destination();
    let typ = m.typ().clone().unwrap_or_default();
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let is_bind = opts.flags.contains(MsFlags::MS_BIND);
    let source: Option<PathBuf> = m.source().clone();
    let create = if is_bind && source.as_ref().is_some_and(|s| !s.is_dir()) {
        Create::File
    } else {
        Create::Dir
    };
    let target = ensure_in_root(root, rootfs, dest, create)?;
    let target_path = fd_path(&target);
    let shown = format!(
        "{} (type {typ:?})",
        rootfs.join(dest.strip_prefix("/").unwrap_or(dest)).display()
    );
    let data = crate::labels::mount_data(&opts.data, &typ, is_bind, mount_label);
    let data = (!data.is_empty()).then_some(data.as_str());
    if typ == "cgroup" && !is_bind {
        return mount_cgroup_v1_view(root, rootfs, dest, &opts, &shown);
    }
    if is_bind {
        let src = source.clone().unwrap_or_default();
        let bind_flags = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
        mount(Some(&src), &target_path, None::<&str>, bind_flags, None::<&str>)
            .map_err(sys("mount", format_args!("bind {} on {shown}", src.display())))?;
        // Bind mounts ignore other flags until remounted.
        let rest = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !rest.is_empty() {
            // Re-resolve: the descriptor names the directory under the new mount.
            let target = ensure_in_root(root, rootfs, dest, Create::Nothing)?;
            mount(
                None::<&str>,
                &fd_path(&target),
                None::<&str>,
                rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
            .map_err(sys("mount", format_args!("remount {shown}")))?;
        }
    } else {
        let src = source.clone().unwrap_or_else(|| PathBuf::from(&typ));
        let fstype = if typ.is_empty() { None } else { Some(typ.as_str()) };
        mount(Some(&src), &target_path, fstype, opts.flags, data).map_err(sys("mount", &shown))?;
    }
    if !opts.propagation.is_empty() {
        let target = ensure_in_root(root, rootfs, dest, Create::Nothing)?;
        for p in &opts.propagation {
            mount(None::<&str>, &fd_path(&target), None::<&str>, *p, None::<&str>)
                .map_err(sys("mount", format_args!("propagation {p:?} on {shown}")))?;
        }
    }
    if opts.rec_set != 0 || opts.rec_clr != 0 {
        let target = ensure_in_root(root, rootfs, dest, Create::Nothing)?;
        set_recursive(&target, opts.rec_set, opts.rec_clr, 0)
            .map_err(sys("mount_setattr", format_args!("{shown} (recursive)")))?;
    }
    Ok(())
}

/// A read-only bind of `path` (a descriptor in the rootfs) on itself, with
/// everything mounted under it read-only too (see [`attach_tree_copy`]):
/// three calls on descriptors, where a bind and a remount each resolve their
/// paths through /proc/self/fd. False, with nothing mounted, before Linux
/// 5.12 (no mount_setattr) or 5.2 (no open_tree).
pub(crate) fn bind_read_only(path: &OwnedFd, shown: &str) -> Result<bool> {
    attach_tree_copy(path, path, ATTR_RDONLY, 0, shown)
}

/// Mounts on `target` a copy of the mount tree at `source`, everything under
/// it included, given the mount attributes `attr` (and propagation
/// `propagation`, unless 0) all through while still detached: the tree cloned
/// (open_tree), set (mount_setattr, AT_RECURSIVE), then attached
/// (move_mount). Nothing is reachable before it has every attribute. False,
/// with nothing mounted, before Linux 5.12 (no mount_setattr) or 5.2 (no
/// open_tree): a detached tree never attached goes with its descriptor.
fn attach_tree_copy(source: &OwnedFd, target: &OwnedFd, attr: u64, propagation: u64, shown: &str) -> Result<bool> {
    use std::os::fd::AsRawFd;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    let empty = c"";
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    // SAFETY: open_tree on a descriptor we own with an empty NUL-terminated path.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, source.as_raw_fd(), empty.as_ptr(), flags) };
    if tree < 0 {
        return match nix::Error::last() {
            nix::Error::ENOSYS => Ok(false),
            e => Err(sys("open_tree", shown)(e)),
        };
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    match set_recursive(&tree, attr, 0, propagation) {
        Ok(()) => {}
        Err(nix::Error::ENOSYS) => return Ok(false),
        Err(e) => return Err(sys("mount_setattr", format_args!("{shown} (recursive, detached)"))(e)),
    }
    let flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: move_mount between two descriptors we own, with empty paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            flags,
        )
    };
    if r != 0 {
        return Err(sys("move_mount", shown)(nix::Error::last()));
    }
    Ok(true)
}

/// mount_setattr(2) with AT_RECURSIVE on the mount at `target` (and the
/// propagation type `propagation`, MS_PRIVATE and the like, unless 0).
fn set_recursive(target: &OwnedFd, set: u64, clr: u64, propagation: u64) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation,
        userns_fd: 0,
    };
    let empty = b"\0";
    // SAFETY: mount_setattr on a descriptor we own, an empty NUL-terminated path
    // (AT_EMPTY_PATH) and a mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            target.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// A `cgroup` mount on a v1 or hybrid host: a tmpfs with each host hierarchy
/// bound under it, as runc does without a cgroup namespace; read-only, the
/// host's own tmpfs bound (see [`bind_host_view`]). On a unified host it is a
/// cgroup2 mount.
fn mount_cgroup_v1_view(
    root: &std::os::fd::OwnedFd,
    rootfs: &Path,
    dest: &Path,
    opts: &ParsedOptions,
    shown: &str,
) -> Result<()> {
    let target = ensure_in_root(root, rootfs, dest, Create::Dir)?;
    let host = Path::new("/sys/fs/cgroup");
    let unified = nix::sys::statfs::statfs(host)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    if unified {
        return mount(
            Some("cgroup2"),
            &fd_path(&target),
            Some("cgroup2"),
            opts.flags,
            None::<&str>,
        )
        .map_err(sys("mount", format_args!("cgroup2 on {shown}")));
    }
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    if ro && bind_host_view(host, &target, opts, shown)? {
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        &fd_path(&target),
        Some("tmpfs"),
        opts.flags & !MsFlags::MS_RDONLY,
        Some("mode=755"),
    )
    .map_err(sys("mount", format_args!("tmpfs on {shown}")))?;
    // The fresh tmpfs, empty and not yet reachable from the container: each
    // hierarchy's directory is made and opened relative to it, one mkdirat and
    // one openat each, not a walk from the root per path.
    let dir = ensure_in_root(root, rootfs, dest, Create::Nothing)?;
    let dirfd = Some(std::os::fd::AsRawFd::as_raw_fd(&dir));
    let entries = std::fs::read_dir(host).map_err(crate::error::io("readdir", host.display()))?;
    let mut links = Vec::new();
    let open_sub = |name: &std::ffi::OsStr| -> nix::Result<std::os::fd::OwnedFd> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(dirfd, name, flags, Mode::empty())?;
        // SAFETY: a fresh descriptor we own.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    };
    let mut bound = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let sub = dest.join(&name);
        let ft = match e.file_type() {
            Ok(t) => t,
            Err(_) => continue,
        };
        if ft.is_symlink() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                links.push((sub, t));
            }
            continue;
        }
        if !ft.is_dir() {
            continue;
        }
        nix::sys::stat::mkdirat(dirfd, name.as_os_str(), Mode::from_bits_truncate(0o755))
            .map_err(sys("mkdirat", format_args!("{} in {shown}", sub.display())))?;
        let t = open_sub(&name).map_err(sys("openat", sub.display()))?;
        let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount(Some(&e.path()), &fd_path(&t), None::<&str>, flags, None::<&str>)
            .map_err(sys("mount", format_args!("bind {} in {shown}", e.path().display())))?;
        bound.push((name, sub));
    }
    for (sub, t) in links {
        let name = sub.file_name().unwrap_or_default();
        let _ = nix::unistd::symlinkat(&t, dirfd, name);
    }
    if !ro {
        return Ok(());
    }
    // The tmpfs and every bind under it in one call, not a remount each (12
    // mounts of a container's ~50 on a host with 11 hierarchies).
    match set_recursive(&dir, ATTR_RDONLY, 0, 0) {
        Ok(()) => return Ok(()),
        Err(nix::Error::ENOSYS) => {}
        Err(e) => return Err(sys("mount_setattr", format_args!("{shown} read-only (recursive)"))(e)),
    }
    // Before Linux 5.12.
    for (name, sub) in bound {
        // Opened again: the bind mount now on top of the directory.
        let t = open_sub(&name).map_err(sys("openat", sub.display()))?;
        mount(
            None::<&str>,
            &fd_path(&t),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(sys("mount", format_args!("remount {} read-only", sub.display())))?;
    }
    mount(
        None::<&str>,
        &fd_path(&dir),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(sys("mount", format_args!("remount {shown} read-only")))?;
    Ok(())
}

/// The read-only v1 view: a copy of the host's cgroup tmpfs with every
/// hierarchy under it, read-only (and nosuid, nodev, noexec as asked) and
/// private all through, attached in one piece ([`attach_tree_copy`]). The
/// same tree as a fresh tmpfs with each hierarchy bound under it, without a
/// new superblock, 11 mkdirs and 11 binds (~0.4 ms of a container's start);
/// private, so that a hierarchy the host mounts later does not appear in it.
/// A container that may write the view gets the fresh tmpfs: its writes must
/// not reach the host's. False before Linux 5.12, with nothing mounted.
fn bind_host_view(host: &Path, target: &OwnedFd, opts: &ParsedOptions, shown: &str) -> Result<bool> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let source = crate::open::open(host, flags, Mode::empty()).map_err(sys("open", host.display()))?;
    let mut set = ATTR_RDONLY;
    for (flag, attr) in [
        (MsFlags::MS_NOSUID, ATTR_NOSUID),
        (MsFlags::MS_NODEV, ATTR_NODEV),
        (MsFlags::MS_NOEXEC, ATTR_NOEXEC),
    ] {
        if opts.flags.contains(flag) {
            set |= attr;
        }
    }
    // c_ulong: u64 here, u32 on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let private = MsFlags::MS_PRIVATE.bits() as u64;
    attach_tree_copy(&source, target, set, private, &format!("{} on {shown}", host.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> ParsedOptions {
        parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_data_and_propagation() {
        let p = opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(p.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(p.data, "mode=755,size=65536k");
        let p = opts(&["rbind", "ro", "rslave"]);
        assert_eq!(p.flags, MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY);
        assert_eq!(p.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        let p = opts(&["ro", "rw"]);
        assert!(!p.flags.contains(MsFlags::MS_RDONLY));
        let p = opts(&["rro", "rnosuid", "rnoatime", "rsuid"]);
        assert_eq!(
            (p.rec_set, p.rec_clr),
            (ATTR_RDONLY | ATTR_NOATIME, ATTR_ATIME_MASK | ATTR_NOSUID)
        );
        assert!(p.data.is_empty());
    }
}
