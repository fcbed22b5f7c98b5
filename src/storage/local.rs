//! `local`: a plain directory the agent makes at the mount point (Kata's
//! emptyDir on the guest's root filesystem). `mode=0750` sets its permissions;
//! `fsgid=N` (or `fs_group`) gives it to group N with the set-group-id bit.

use std::path::Path;

use protocols::agent::Storage;

use super::mount::{ensure_dir, give_to_group, set_mode, Record};
use super::options::{fs_gid, mode};
use super::StorageError;

/// Makes the directory.
pub(super) fn setup(s: &Storage, rec: &mut Record) -> Result<(), StorageError> {
    let mode = mode(s)?;
    let gid = fs_gid(s)?;
    let mp = Path::new(&s.mount_point);
    ensure_dir(mp, rec)?;
    match (gid, mode) {
        (Some(gid), mode) => give_to_group(mp, gid, mode),
        (None, Some(mode)) => set_mode(mp, mode),
        (None, None) => Ok(()),
    }
}
