//! `bind`: bind-mounts `source` (a directory or a file in the guest) at the
//! mount point. `rbind` makes it recursive; `ro`, `nosuid`, `nodev`, `noexec`
//! and friends are applied by a remount, as bind mounts ignore them at first;
//! propagation options (`rprivate`, ...) are applied last.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use protocols::agent::Storage;

use super::mount::{ensure_dir, ensure_file, io, mount, propagate, Record};
use super::options::mount_options;
use super::StorageError;

/// The mounts a bind storage makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindArgs {
    /// MS_BIND, with MS_REC for `rbind`.
    pub flags: MsFlags,
    /// The remount that applies the other flags, if any.
    pub remount: Option<MsFlags>,
    /// Propagation changes.
    pub propagation: Vec<MsFlags>,
}

/// What `s` asks for; an option that is not a mount flag is an error.
pub fn mount_args(s: &Storage) -> Result<BindArgs, StorageError> {
    if s.source.is_empty() {
        return Err(StorageError::InvalidArgument(format!(
            "bind storage at {} has no source",
            s.mount_point
        )));
    }
    let o = mount_options(&s.options, &[]);
    if !o.data.is_empty() {
        return Err(StorageError::InvalidArgument(format!(
            "bind storage at {}: options {:?} are not mount flags",
            s.mount_point, o.data
        )));
    }
    let flags = MsFlags::MS_BIND | (o.flags & MsFlags::MS_REC);
    let rest = o.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
    Ok(BindArgs {
        flags,
        remount: (!rest.is_empty()).then_some(MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rest),
        propagation: o.propagation,
    })
}

/// Mounts it. The source must lie under `roots` too (resolved without
/// following a symlink out of its root).
pub(super) fn setup(s: &Storage, roots: &[PathBuf], rec: &mut Record) -> Result<(), StorageError> {
    let a = mount_args(s)?;
    let src = super::confined(roots, &s.source, "source", true)?;
    let meta = std::fs::metadata(&src).map_err(io("stat", src.display()))?;
    let mp = Path::new(&s.mount_point);
    if meta.is_dir() {
        ensure_dir(mp, rec)?;
    } else {
        ensure_file(mp, rec)?;
    }
    let src = src.display().to_string();
    mount(&src, mp, None, a.flags, "", rec)?;
    if let Some(flags) = a.remount {
        mount(&src, mp, None, flags, "", rec)?;
    }
    propagate(mp, &a.propagation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(options: &[&str]) -> Storage {
        let mut s = Storage::new();
        s.source = "/src".into();
        s.mount_point = "/dst".into();
        s.options = options.iter().map(|o| o.to_string()).collect();
        s
    }

    #[test]
    fn arguments() {
        let a = mount_args(&storage(&["rbind", "ro", "nosuid", "rslave"])).unwrap();
        assert_eq!(a.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(
            a.remount,
            Some(MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID)
        );
        assert_eq!(a.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        let plain = mount_args(&storage(&["bind"])).unwrap();
        assert_eq!(plain.flags, MsFlags::MS_BIND);
        assert_eq!(plain.remount, None);
        assert!(matches!(
            mount_args(&storage(&["size=1m"])),
            Err(StorageError::InvalidArgument(_))
        ));
    }
}
