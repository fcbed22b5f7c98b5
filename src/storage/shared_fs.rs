//! `9p` and `virtio-fs`: the host's shared directory, mounted by its tag
//! (`source`) with the storage's filesystem type and options.

use std::path::Path;

use protocols::agent::Storage;

use super::mount::{MountArgs, Record};
use super::options::mount_options;
use super::StorageError;

/// Filesystem type of `9p` storages when `fstype` is empty.
pub const NINEP_FSTYPE: &str = "9p";
/// Filesystem type of `virtio-fs` storages when `fstype` is empty.
pub const VIRTIOFS_FSTYPE: &str = "virtiofs";

/// The mount of a shared-filesystem storage; `default_fstype` when none given.
pub fn mount_args(s: &Storage, default_fstype: &str) -> Result<MountArgs, StorageError> {
    if s.source.is_empty() {
        return Err(StorageError::InvalidArgument(format!(
            "{} storage at {} has no source (the host's mount tag)",
            s.driver, s.mount_point
        )));
    }
    let fstype = if s.fstype.is_empty() { default_fstype } else { &s.fstype };
    Ok(MountArgs {
        source: s.source.clone(),
        fstype: fstype.to_string(),
        options: mount_options(&s.options, &[]),
    })
}

/// Mounts it.
pub(super) fn setup(s: &Storage, rec: &mut Record, default_fstype: &str) -> Result<(), StorageError> {
    mount_args(s, default_fstype)?.apply(Path::new(&s.mount_point), rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::mount::MsFlags;

    fn storage(driver: &str, options: &[&str]) -> Storage {
        let mut s = Storage::new();
        s.driver = driver.into();
        s.source = "kataShared".into();
        s.mount_point = "/run/kata-containers/shared/containers".into();
        s.options = options.iter().map(|o| o.to_string()).collect();
        s
    }

    #[test]
    fn ninep_arguments() {
        let s = storage(
            "9p",
            &["trans=virtio,version=9p2000.L,cache=mmap", "nodev", "msize=8192"],
        );
        let a = mount_args(&s, NINEP_FSTYPE).unwrap();
        assert_eq!(a.source, "kataShared");
        assert_eq!(a.fstype, "9p");
        assert_eq!(a.options.flags, MsFlags::MS_NODEV);
        assert_eq!(a.options.data, "trans=virtio,version=9p2000.L,cache=mmap,msize=8192");
    }

    #[test]
    fn virtiofs_arguments() {
        let mut s = storage("virtio-fs", &["ro", "dax"]);
        let a = mount_args(&s, VIRTIOFS_FSTYPE).unwrap();
        assert_eq!(a.fstype, "virtiofs");
        assert_eq!(a.options.flags, MsFlags::MS_RDONLY);
        assert_eq!(a.options.data, "dax");
        s.fstype = "virtio_fs".into();
        assert_eq!(mount_args(&s, VIRTIOFS_FSTYPE).unwrap().fstype, "virtio_fs");
        s.source.clear();
        let e = mount_args(&s, VIRTIOFS_FSTYPE).unwrap_err();
        assert!(matches!(e, StorageError::InvalidArgument(_)), "{e}");
    }
}
