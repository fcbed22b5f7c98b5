//! Building the container's root: propagation, the rootfs bind, spec mounts,
//! `/dev`, `pivot_root` (or MS_MOVE + chroot), masked and read-only paths.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Spec};

use super::mounts::{mount_one, parse_options};
use crate::error::{io, sys, Result};
use crate::paths::{ensure_in_root, fd_path, open_in_root, open_root, Create};

/// Devices every container gets (as runc): (path, major, minor).
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// The propagation `linux.rootfsPropagation` asks for, as given (default:
/// recursive slave, so that no mount of the container reaches the host).
pub fn requested_propagation(spec: &Spec) -> Result<MsFlags> {
    let value = spec.linux().as_ref().and_then(|l| l.rootfs_propagation().clone());
    match value.as_deref() {
        None | Some("") => Ok(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        Some(v) => match parse_options(&[v.to_string()]).propagation.first() {
            Some(p) => Ok(*p),
            None => Err(crate::error::Error::Spec(format!(
                "linux.rootfsPropagation {v:?}: use shared, slave, private or unbindable (r-prefixed: recursive)"
            ))),
        },
    }
}

/// Sets mount propagation, binds the rootfs onto itself and mounts every spec mount.
///
/// `shared` and `unbindable` as asked would make `pivot_root` (a shared parent)
/// or the rootfs bind (an unbindable source) fail: as crun does, the rootfs's
/// parent mount is made private for the pivot, and the requested propagation is
/// applied to the new root afterwards (see [`enter`]).
pub fn prepare(spec: &Spec, rootfs: &Path, in_userns: bool) -> Result<OwnedFd> {
    let linux = crate::spec::linux_of(spec);
    let requested = requested_propagation(spec)?;
    let before = if requested.contains(MsFlags::MS_SHARED) {
        MsFlags::MS_SHARED
    } else if requested.contains(MsFlags::MS_UNBINDABLE) {
        MsFlags::MS_SLAVE
    } else {
        requested & !MsFlags::MS_REC
    };
    // Recursive whatever was asked: a mount of the container must not reach
    // the host through a submount left shared.
    mount(None::<&str>, "/", None::<&str>, before | MsFlags::MS_REC, None::<&str>)
        .map_err(sys("mount", "/ (rootfs propagation)"))?;
    if before == MsFlags::MS_SHARED {
        make_parent_mount_private(rootfs)?;
    }
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("mount", format_args!("bind {} on itself", rootfs.display())))?;
    let root = open_root(rootfs)?;
    let mount_label = linux.mount_label().as_deref();
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        mount_one(&root, rootfs, m, mount_label)?;
    }
    // The spec's default devices, unless /dev is bound from elsewhere (the
    // host's /dev, as a privileged container has it): then they are there.
    let dev_is_bound = spec.mounts().as_deref().unwrap_or(&[]).iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || parse_options(m.options().as_deref().unwrap_or(&[]))
                    .flags
                    .contains(MsFlags::MS_BIND))
    });
    // mknod honours the umask: without one, each node gets its mode as made.
    let _umask = NoUmask::set();
    if !dev_is_bound {
        // /dev resolved once for the six nodes and the links.
        let dev = ensure_in_root(&root, rootfs, Path::new("/dev"), Create::Dir)?;
        let made_as = if in_userns {
            None
        } else {
            Some(owner_of_new_files(&dev)?)
        };
        for (path, major, minor) in DEFAULT_DEVICES {
            let node = Node {
                kind: SFlag::S_IFCHR,
                major: *major,
                minor: *minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
            };
            if in_userns {
                // mknod is not allowed in a user namespace.
                bind_host_node(&root, rootfs, Path::new(path))?;
            } else {
                node_in(&root, rootfs, &dev, Path::new(path), node, made_as)?;
            }
        }
        for (link, target) in [
            ("/dev/fd", "/proc/self/fd"),
            ("/dev/stdin", "/proc/self/fd/0"),
            ("/dev/stdout", "/proc/self/fd/1"),
            ("/dev/stderr", "/proc/self/fd/2"),
            ("/dev/ptmx", "pts/ptmx"),
        ] {
            let name = link.trim_start_matches("/dev/");
            match nix::unistd::symlinkat(target, Some(std::os::fd::AsRawFd::as_raw_fd(&dev)), name) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => {
                    return Err(sys(
                        "symlinkat",
                        format!("{} -> {target}", rootfs.join(&link[1..]).display()),
                    )(e))
                }
            }
        }
    }
    for d in linux.devices().as_deref().unwrap_or(&[]) {
        spec_device(&root, rootfs, d, in_userns)?;
    }
    Ok(root)
}

fn spec_device(root: &OwnedFd, rootfs: &Path, d: &LinuxDevice, in_userns: bool) -> Result<()> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => return Ok(()),
    };
    let node = Node {
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666),
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    };
    create_device(root, rootfs, d.path(), node, in_userns)
}

/// A device node to make: its type, numbers, mode and owner.
#[derive(Clone, Copy)]
struct Node {
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// Makes the node at `path` in the rootfs, or in a user namespace (where
/// mknod is not allowed) binds the host's node there.
fn create_device(root: &OwnedFd, rootfs: &Path, path: &Path, node: Node, in_userns: bool) -> Result<()> {
    if in_userns {
        return bind_host_node(root, rootfs, path);
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let dir = ensure_in_root(root, rootfs, parent, Create::Dir)?;
    node_in(root, rootfs, &dir, path, node, None)
}

/// Clears the umask until dropped, then puts the old one back.
struct NoUmask(Mode);

impl NoUmask {
    fn set() -> NoUmask {
        NoUmask(nix::sys::stat::umask(Mode::empty()))
    }
}

impl Drop for NoUmask {
    fn drop(&mut self) {
        nix::sys::stat::umask(self.0);
    }
}

/// The owner (uid, gid) a file this process makes in `dir` gets: its
/// effective ids, or `dir`'s group where `dir` is set-group-ID.
fn owner_of_new_files(dir: &OwnedFd) -> Result<(u32, u32)> {
    let st = nix::sys::stat::fstat(dir.as_raw_fd()).map_err(sys("fstat", fd_path(dir).display()))?;
    let gid = if st.st_mode & libc::S_ISGID != 0 {
        st.st_gid
    } else {
        nix::unistd::getegid().as_raw()
    };
    Ok((nix::unistd::geteuid().as_raw(), gid))
}

/// Binds the host's node at `path` on the same path in the rootfs.
fn bind_host_node(root: &OwnedFd, rootfs: &Path, path: &Path) -> Result<()> {
    let shown = rootfs.join(path.strip_prefix("/").unwrap_or(path));
    let target = ensure_in_root(root, rootfs, path, Create::File)?;
    mount(
        Some(path),
        &fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys(
        "mount",
        format_args!("bind {} on {}", path.display(), shown.display()),
    ))
}

/// Makes `node` named as `path`'s last component in the directory `dir`
/// (the rootfs's copy of `path`'s parent), with no umask set; `made_as` is
/// the owner a new file there gets, when known (no chown to that owner).
fn node_in(
    root: &OwnedFd,
    rootfs: &Path,
    dir: &OwnedFd,
    path: &Path,
    node: Node,
    made_as: Option<(u32, u32)>,
) -> Result<()> {
    let shown = rootfs.join(path.strip_prefix("/").unwrap_or(path));
    let name = path.file_name().unwrap_or_default();
    let Node {
        kind,
        major,
        minor,
        mode,
        uid,
        gid,
    } = node;
    // Relative to the directory's descriptor: no walk through /proc/self/fd
    // for each of the three calls.
    let at = Some(dir.as_raw_fd());
    match mknodat(at, name, kind, Mode::from_bits_truncate(mode), makedev(major, minor)) {
        Ok(()) => {}
        Err(nix::Error::EEXIST) => return check_existing(&fd_path(dir).join(name), &shown, kind, major, minor),
        // Not allowed to create nodes here (no CAP_MKNOD, a nodev mount, ...).
        Err(nix::Error::EPERM) if path.exists() => return bind_host_node(root, rootfs, path),
        Err(e) => return Err(sys("mknodat", shown.display())(e)),
    }
    if made_as == Some((uid, gid)) {
        return Ok(());
    }
    nix::unistd::fchownat(
        at,
        name,
        Some(uid.into()),
        Some(gid.into()),
        nix::fcntl::AtFlags::empty(),
    )
    .map_err(sys("fchownat", shown.display()))
}

/// A device path that exists already must be the device asked for.
fn check_existing(full: &Path, shown: &Path, kind: SFlag, major: u64, minor: u64) -> Result<()> {
    let st = nix::sys::stat::lstat(full).map_err(sys("lstat", shown.display()))?;
    let same_kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == kind;
    let same_node = kind == SFlag::S_IFIFO || st.st_rdev == makedev(major, minor);
    if same_kind && same_node {
        return Ok(());
    }
    Err(crate::error::Error::Spec(format!(
        "device {}: a different file exists there (mode {:o}, device {}:{}), not {kind:?} {major}:{minor}",
        shown.display(),
        st.st_mode,
        nix::sys::stat::major(st.st_rdev),
        nix::sys::stat::minor(st.st_rdev)
    )))
}

/// Makes the mount holding `rootfs` (the first mount point at or above it) and
/// "/" private, so that `pivot_root` finds no shared parent and the rootfs
/// bind does not propagate to the host.
fn make_parent_mount_private(rootfs: &Path) -> Result<()> {
    for dir in rootfs.ancestors() {
        match mount(None::<&str>, dir, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>) {
            Ok(()) => break,
            // Not a mount point: try the directory above.
            Err(nix::Error::EINVAL) => continue,
            Err(e) => return Err(sys("mount", format_args!("{} (make private)", dir.display()))(e)),
        }
    }
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_PRIVATE, None::<&str>).map_err(sys("mount", "/ (make private)"))
}

/// Makes `rootfs` the root: `pivot_root` and detach the old root, or with
/// `no_pivot` (a root on initramfs, where pivot_root fails) MS_MOVE + chroot.
/// Then gives the new root the `propagation` the spec asked for.
pub fn enter(rootfs: &Path, no_pivot: bool, propagation: MsFlags) -> Result<()> {
    nix::unistd::chdir(rootfs).map_err(sys("chdir", rootfs.display()))?;
    // pivot_root refuses (EINVAL) a root that is the initramfs: fall back to
    // MS_MOVE + chroot there even when the caller did not ask for it.
    let pivoted = match no_pivot {
        true => Err(nix::Error::EINVAL),
        false => nix::unistd::pivot_root(".", "."),
    };
    if no_pivot || (pivoted == Err(nix::Error::EINVAL) && root_is_initramfs()) {
        mount(Some(rootfs), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(sys("mount", format_args!("move {} to /", rootfs.display())))?;
        nix::unistd::chroot(".").map_err(sys("chroot", rootfs.display()))?;
    } else {
        pivoted.map_err(sys("pivot_root", rootfs.display()))?;
        // The old root is stacked under the new one at "."; keep its unmount
        // away from the host, then drop it. Private rather than slave (as
        // crun): detaching a tree of slaves costs milliseconds more.
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys("mount", "old root (make rprivate)"))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(sys("umount2", "old root"))?;
    }
    nix::unistd::chdir("/").map_err(sys("chdir", "/"))?;
    mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
        .map_err(sys("mount", format_args!("/ (rootfs propagation {propagation:?})")))
}

/// Whether "/" is the kernel's rootfs (ramfs or tmpfs): an initramfs root.
fn root_is_initramfs() -> bool {
    nix::sys::statfs::statfs("/").is_ok_and(|s| {
        // RAMFS_MAGIC and TMPFS_MAGIC from linux/magic.h. f_type is i64 on
        // glibc, u64 on musl: the cast is needed there.
        #[allow(clippy::unnecessary_cast)]
        let t = s.filesystem_type().0 as i64;
        t == 0x8584_58f6 || t == 0x0102_1994
    })
}

/// Writes the sysctls, masks paths (dirs get an empty read-only tmpfs, files
/// /dev/null) and makes read-only paths read-only. Runs before the root is
/// entered, with every path resolved by descriptor in the rootfs (`root`), so
/// that it needs no `/proc` inside the container.
pub fn mask_and_protect(spec: &Spec, root: &OwnedFd) -> Result<()> {
    let linux = crate::spec::linux_of(spec);
    // Sysctls first: /proc/sys is usually among the read-only paths. The
    // files resolve in the namespaces of the writer (this process), whichever
    // /proc mount they are reached through.
    for (k, v) in linux.sysctl().clone().unwrap_or_default() {
        if k.contains('/') || k.split('.').any(|c| c.is_empty() || c == "..") {
            return Err(crate::error::Error::Spec(format!("invalid sysctl name {k:?}")));
        }
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&path, v.as_bytes()).map_err(io("write", &path))?;
    }
    // One empty read-only tmpfs for every masked directory: the first is
    // mounted, the others are binds of it (no new superblock each).
    let mut empty_dir: Option<OwnedFd> = None;
    for p in linux.masked_paths().as_deref().unwrap_or(&[]) {
        let fd = match open_in_root(root, Path::new(p), nix::fcntl::OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) => continue,
            Err(e) => return Err(sys("openat2", p)(e)),
        };
        let target = fd_path(&fd);
        let is_dir = nix::sys::stat::fstat(fd.as_raw_fd())
            .map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR)
            .unwrap_or(false);
        let r = match (is_dir, &empty_dir) {
            (true, Some(empty)) => mount(
                Some(&fd_path(empty)),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
            (true, None) => mount(Some("tmpfs"), &target, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>),
            (false, _) => mount(Some("/dev/null"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>),
        };
        r.map_err(sys("mount", format_args!("mask {p}")))?;
        if is_dir && empty_dir.is_none() {
            // Opened again: the tmpfs now on top of the directory.
            let fd = open_in_root(root, Path::new(p), nix::fcntl::OFlag::O_PATH).map_err(sys("openat2", p))?;
            empty_dir = Some(fd);
        }
    }
    for p in linux.readonly_paths().as_deref().unwrap_or(&[]) {
        let fd = match open_in_root(root, Path::new(p), nix::fcntl::OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) => continue,
            Err(e) => return Err(sys("openat2", p)(e)),
        };
        if super::mounts::bind_read_only(&fd, p)? {
            continue;
        }
        // Before Linux 5.12: a bind, then a remount of its top.
        let target = fd_path(&fd);
        mount(
            Some(&target),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys("mount", format_args!("bind {p} (read-only path)")))?;
        let fd = open_in_root(root, Path::new(p), nix::fcntl::OFlag::O_PATH).map_err(sys("openat2", p))?;
        mount(
            None::<&str>,
            &fd_path(&fd),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys("mount", format_args!("remount {p} read-only")))?;
    }
    Ok(())
}

/// Remounts "/" read-only when `root.readonly` asks for it (after [`enter`]).
pub fn readonly_root(spec: &Spec) -> Result<()> {
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(sys("mount", "remount / read-only"))?;
    }
    Ok(())
}
