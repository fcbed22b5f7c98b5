//! Block storages, Kata's drivers `blk` (virtio-blk: a PCI path, or a `/dev`
//! path), `scsi` (`SCSI-ID:LUN`), `mmioblk` (virtio-mmio: `/dev/vdX`) and
//! `nvdimm` (`/dev/pmemN`): the device the host plugged is waited for (the
//! uevent hub of `crate::device`), then its filesystem (`fstype`, e.g. ext4,
//! xfs, erofs) is mounted at the mount point with the storage's options, and
//! `fs_group` is applied as Kata applies it.
//!
//! Waiting is asynchronous and happens first ([`resolve_sources`], which
//! rewrites `source` to the guest's `/dev` node as Kata's agent does); the
//! mount itself is a synchronous driver like the others ([`setup`]).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use protocols::agent::Storage;

use super::mount::{io, sys, MountArgs, Record};
use super::options::mount_options;
use super::StorageError;
use crate::device::{DeviceAddr, DeviceError, Devices};

/// The block drivers.
pub const DRIVERS: &[&str] = &["blk", "scsi", "mmioblk", "nvdimm"];

/// Whether `driver` is a block driver.
pub fn is_block(driver: &str) -> bool {
    DRIVERS.contains(&driver)
}

/// Why a block storage's device could not be found (a sandbox error of the
/// device's kind: DEADLINE_EXCEEDED when it never came).
#[derive(Debug, thiserror::Error)]
#[error("storage {index} ({driver} at {mount_point:?}): {source}")]
pub struct SourceError {
    /// Its place in the list.
    pub index: usize,
    /// Its driver.
    pub driver: String,
    /// Its mount point.
    pub mount_point: String,
    /// What went wrong.
    pub source: DeviceError,
}

/// The device a block storage names, or None when `source` already is a
/// block device node (Kata's `blk` with a `/dev` path, `mmioblk` or
/// `nvdimm` whose node exists).
fn device_of(s: &Storage) -> Result<Option<DeviceAddr>, DeviceError> {
    let is_node = || {
        std::fs::metadata(&s.source)
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false)
    };
    match s.driver.as_str() {
        // Checked when mounting (after CreateSandbox's kernel modules, as in Kata).
        "blk" if s.source.starts_with("/dev/") => Ok(None),
        "blk" => DeviceAddr::parse("blk", &s.source).map(Some),
        "scsi" => DeviceAddr::parse("scsi", &s.source).map(Some),
        "mmioblk" | "nvdimm" if is_node() => Ok(None),
        "mmioblk" | "nvdimm" => DeviceAddr::parse("mmioblk", &s.source).map(Some),
        other => Err(DeviceError::BadType(other.to_string())),
    }
}

/// Waits for the device of every block storage in `storages` and points its
/// `source` at the guest's node (`/dev/sda`, `/dev/vdb`, `/dev/pmem0`).
pub async fn resolve_sources(devices: &Devices, storages: &mut [Storage]) -> Result<(), SourceError> {
    for (index, s) in storages.iter_mut().enumerate() {
        if !is_block(&s.driver) {
            continue;
        }
        let wrap = |source| SourceError {
            index,
            driver: s.driver.clone(),
            mount_point: s.mount_point.clone(),
            source,
        };
        let Some(addr) = device_of(s).map_err(wrap)? else {
            continue;
        };
        let dev = devices.wait_block(&addr).await.map_err(wrap)?;
        s.source = dev.guest_path();
    }
    Ok(())
}

/// Whether the running kernel has filesystem `fstype`, loading its module
/// when it does not yet (erofs, xfs, ... are often modules).
pub fn filesystem_available(fstype: &str) -> bool {
    let known = |t: &str| {
        std::fs::read_to_string("/proc/filesystems")
            .map(|s| s.lines().any(|l| l.split_whitespace().last() == Some(t)))
            .unwrap_or(false)
    };
    if known(fstype) {
        return true;
    }
    let root = crate::init::modules::running_kernel_root();
    crate::init::modules::load(&root, fstype, &[]).is_ok() && known(fstype)
}

/// The mount of a block storage whose `source` is the guest's device node.
pub fn mount_args(s: &Storage) -> Result<MountArgs, StorageError> {
    if s.fstype.is_empty() {
        return Err(StorageError::InvalidArgument(format!(
            "{} storage at {}: fstype is empty (want the filesystem on {})",
            s.driver, s.mount_point, s.source
        )));
    }
    let mut options = mount_options(&s.options, &[]);
    if s.fstype == "erofs" {
        // A read-only filesystem: mounting it read-write fails with EROFS.
        options.flags |= nix::mount::MsFlags::MS_RDONLY;
    }
    Ok(MountArgs {
        source: s.source.clone(),
        fstype: s.fstype.clone(),
        options,
    })
}

/// Mounts the device's filesystem and applies `fs_group`.
pub(super) fn setup(s: &Storage, rec: &mut Record) -> Result<(), StorageError> {
    let args = mount_args(s)?;
    let is_node = std::fs::metadata(&s.source)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    if !s.source.starts_with("/dev/") || !is_node {
        return Err(StorageError::InvalidArgument(format!(
            "{} storage at {}: source {:?} is not a block device",
            s.driver, s.mount_point, s.source
        )));
    }
    if !filesystem_available(&s.fstype) {
        return Err(StorageError::InvalidArgument(format!(
            "{} storage at {}: fstype {:?} is not supported by this kernel (not in /proc/filesystems, and no module {} to load)",
            s.driver, s.mount_point, s.fstype, s.fstype
        )));
    }
    let mp = Path::new(&s.mount_point);
    args.apply(mp, rec)?;
    if let Some(g) = s.fs_group.as_ref() {
        let read_only = args.options.flags.contains(nix::mount::MsFlags::MS_RDONLY);
        set_ownership(mp, g.group_id, g.group_change_policy.value(), read_only)?;
    }
    Ok(())
}

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const MODE_SETGID: u32 = 0o2000;
/// `FSGroupChangePolicy.OnRootMismatch`.
const ON_ROOT_MISMATCH: i32 = 1;

/// Kata's fsGroup handling of a volume: every file and directory below `mp`
/// goes to group `gid`, readable and writable by it (read-only volumes:
/// readable), directories searchable and set-group-id. With OnRootMismatch the
/// walk is skipped when the root already has that group and those bits.
pub fn set_ownership(mp: &Path, gid: u32, policy: i32, read_only: bool) -> Result<(), StorageError> {
    let mask = if read_only { RO_MASK } else { RW_MASK };
    if policy == ON_ROOT_MISMATCH {
        let m = std::fs::metadata(mp).map_err(io("stat", mp.display()))?;
        let want = mask | EXEC_MASK;
        if m.gid() == gid && m.mode() & want == want && m.mode() & MODE_SETGID != 0 {
            return Ok(());
        }
    }
    change_group(mp, gid, mask)
}

fn change_group(p: &Path, gid: u32, mask: u32) -> Result<(), StorageError> {
    let m = std::fs::symlink_metadata(p).map_err(io("lstat", p.display()))?;
    if m.file_type().is_symlink() {
        // Never through a symlink: its target may be anywhere.
        return Ok(());
    }
    let mut bits = mask;
    if m.is_dir() {
        for e in std::fs::read_dir(p).map_err(io("opendir", p.display()))? {
            let e = e.map_err(io("getdents", p.display()))?;
            change_group(&e.path(), gid, mask)?;
        }
        bits |= EXEC_MASK | MODE_SETGID;
    }
    nix::unistd::chown(p, None, Some(nix::unistd::Gid::from_raw(gid)))
        .map_err(sys("chown", format!("{}, gid {gid}", p.display())))?;
    let mode = (m.mode() & 0o7777) | bits;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", format!("{}, {mode:o}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(driver: &str, source: &str) -> Storage {
        let mut s = Storage::new();
        s.driver = driver.into();
        s.source = source.into();
        s.mount_point = "/run/kata-containers/sandbox/storage/x".into();
        s
    }

    #[test]
    fn device_addresses_as_kata_sends_them() {
        assert!(matches!(
            device_of(&storage("blk", "02/03")),
            Ok(Some(DeviceAddr::Pci(_)))
        ));
        assert!(matches!(
            device_of(&storage("scsi", "0:1")),
            Ok(Some(DeviceAddr::Scsi(_)))
        ));
        assert_eq!(
            device_of(&storage("mmioblk", "/dev/pith-no-vdz")).unwrap(),
            Some(DeviceAddr::Mmio("pith-no-vdz".into()))
        );
        assert_eq!(
            device_of(&storage("nvdimm", "/dev/pith-no-pmem9")).unwrap(),
            Some(DeviceAddr::Mmio("pith-no-pmem9".into()))
        );
        // A /dev path is used as it is (checked when mounting); garbage addresses fail.
        assert_eq!(device_of(&storage("blk", "/dev/null")).unwrap(), None);
        assert!(device_of(&storage("scsi", "zero")).is_err());
        assert!(device_of(&storage("blk", "xx/yy")).is_err());
    }

    #[test]
    fn mount_arguments() {
        let mut s = storage("blk", "/dev/vdb");
        s.options = vec!["rw".into(), "noatime".into()];
        assert!(mount_args(&s).is_err(), "no fstype");
        s.fstype = "ext4".into();
        let a = mount_args(&s).unwrap();
        assert_eq!((a.source.as_str(), a.fstype.as_str()), ("/dev/vdb", "ext4"));
        assert_eq!(a.options.flags, nix::mount::MsFlags::MS_NOATIME);
        s.fstype = "erofs".into();
        assert!(mount_args(&s)
            .unwrap()
            .options
            .flags
            .contains(nix::mount::MsFlags::MS_RDONLY));
        assert!(filesystem_available("proc"));
        assert!(!filesystem_available("pithnosuchfs"));
    }

    #[test]
    #[cfg_attr(not(pith_root), ignore = "needs root")]
    fn fs_group_walks_the_tree_unless_the_root_already_matches() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), "x").unwrap();
        std::fs::set_permissions(d.path().join("sub/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        set_ownership(d.path(), 4321, 0, false).unwrap();
        let f = std::fs::metadata(d.path().join("sub/f")).unwrap();
        assert_eq!((f.gid(), f.mode() & 0o7777), (4321, 0o660));
        let sub = std::fs::metadata(d.path().join("sub")).unwrap();
        assert_eq!(sub.gid(), 4321);
        assert_ne!(sub.mode() & MODE_SETGID, 0);
        // OnRootMismatch with a matching root: nothing below is touched.
        std::fs::set_permissions(d.path().join("sub/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        set_ownership(d.path(), 4321, ON_ROOT_MISMATCH, false).unwrap();
        let f = std::fs::metadata(d.path().join("sub/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o600);
    }
}
