//! `ephemeral`: a tmpfs (or another memory filesystem named by `fstype`, e.g.
//! hugetlbfs) at the mount point, with the storage's options as mount options.
//! `fsgid=N` (or `fs_group`) is not a mount option: it gives the mounted root to
//! group N with the set-group-id bit, as Kata's agent does.

use std::path::Path;

use protocols::agent::Storage;

use super::mount::{give_to_group, MountArgs, Record};
use super::options::{fs_gid, mount_options, FSGID_OPTION};
use super::StorageError;

/// The mount an ephemeral storage makes.
pub fn mount_args(s: &Storage) -> MountArgs {
    let fstype = if s.fstype.is_empty() { "tmpfs" } else { &s.fstype };
    let source = if s.source.is_empty() { fstype } else { &s.source };
    MountArgs {
        source: source.to_string(),
        fstype: fstype.to_string(),
        options: mount_options(&s.options, &[FSGID_OPTION]),
    }
}

/// Mounts it.
pub(super) fn setup(s: &Storage, rec: &mut Record) -> Result<(), StorageError> {
    let gid = fs_gid(s)?;
    let mp = Path::new(&s.mount_point);
    mount_args(s).apply(mp, rec)?;
    if let Some(gid) = gid {
        give_to_group(mp, gid, None)?;
    }
    Ok(())
}

/// UpdateEphemeralMounts, as Kata's agent does it: each storage must be
/// `ephemeral`; its mount point (confined to `roots`) is made if missing, and
/// when it has options the mount is made again with them (Kata's runtime
/// sends `remount,size=...` to resize a memory-backed emptyDir); `fsgid=` is
/// not a mount option and is left out.
pub fn update(roots: &[std::path::PathBuf], storages: &[Storage]) -> Result<(), StorageError> {
    for (i, s) in storages.iter().enumerate() {
        let ctx = |e: StorageError| StorageError::Storage {
            index: i,
            driver: s.driver.clone(),
            mount_point: s.mount_point.clone(),
            source: Box::new(e),
        };
        if s.driver != "ephemeral" {
            return Err(ctx(StorageError::InvalidArgument(format!(
                "unsupported storage type for syncing mounts {:?}: only ephemeral storage update is supported",
                s.driver
            ))));
        }
        let mp = super::confined(roots, &s.mount_point, "mount_point", false).map_err(ctx)?;
        std::fs::create_dir_all(&mp).map_err(|e| ctx(super::mount::io("mkdir", mp.display())(e)))?;
        if s.options.is_empty() {
            continue;
        }
        let a = mount_args(s);
        let mut rec = Record::default();
        super::mount::mount(
            &a.source,
            &mp,
            Some(&a.fstype),
            a.options.flags,
            &a.options.data,
            &mut rec,
        )
        .map_err(ctx)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::mount::MsFlags;

    #[test]
    fn defaults_to_tmpfs_and_drops_fsgid() {
        let mut s = Storage::new();
        s.options = vec!["nosuid,size=1m".into(), "fsgid=5".into()];
        let a = mount_args(&s);
        assert_eq!((a.source.as_str(), a.fstype.as_str()), ("tmpfs", "tmpfs"));
        assert_eq!(a.options.flags, MsFlags::MS_NOSUID);
        assert_eq!(a.options.data, "size=1m");
        s.fstype = "hugetlbfs".into();
        s.source = "nodev".into();
        let a = mount_args(&s);
        assert_eq!((a.source.as_str(), a.fstype.as_str()), ("nodev", "hugetlbfs"));
    }
}
