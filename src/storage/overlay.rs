//! `overlayfs`: an overlay filesystem at the mount point, from the
//! `lowerdir=`/`upperdir=`/`workdir=` options (each directory confined to
//! the allowed roots like every storage path). Kata's option
//! `io.katacontainers.fs-opt.overlay-rw` asks the agent for a writable
//! layer: the agent makes `upper` and `work` in a scratch directory beside
//! the mount point (`<mount point>.rw/`, removed with the storage; Kata puts
//! them under `/run/kata-containers/<container>/`).

use std::path::{Path, PathBuf};

use protocols::agent::Storage;

use super::mount::{ensure_dir, MountArgs, Record};
use super::options::mount_options;
use super::StorageError;

/// Kata's option asking for a writable upper layer.
pub const OVERLAY_RW_OPTION: &str = "io.katacontainers.fs-opt.overlay-rw";
/// Options naming directories of the overlay.
const DIR_OPTIONS: &[&str] = &["lowerdir", "upperdir", "workdir"];

/// Where the writable layer of an overlay at `mp` lives.
pub fn rw_dir(mp: &Path) -> PathBuf {
    let mut name = mp.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".rw");
    mp.with_file_name(name)
}

fn wants_rw(s: &Storage) -> bool {
    s.options
        .iter()
        .flat_map(|o| o.split(','))
        .any(|o| o.trim() == OVERLAY_RW_OPTION)
}

/// The overlay's mount, every directory option resolved under `roots`, with
/// `upperdir`/`workdir` under `rw` when the writable layer is asked for.
pub fn mount_args(s: &Storage, roots: &[PathBuf], rw: Option<&Path>) -> Result<MountArgs, StorageError> {
    let mut opts: Vec<String> = Vec::new();
    let mut has_lower = false;
    for o in s.options.iter().flat_map(|o| o.split(',')).map(str::trim) {
        if o.is_empty() || o == OVERLAY_RW_OPTION || o.starts_with("io.katacontainers.") {
            continue;
        }
        match o.split_once('=') {
            Some((k, v)) if DIR_OPTIONS.contains(&k) => {
                let field = format!("options: {k}");
                let dirs: Result<Vec<String>, StorageError> = v
                    .split(':')
                    .map(|d| super::confined(roots, d, &field, true).map(|p| p.display().to_string()))
                    .collect();
                has_lower |= k == "lowerdir";
                opts.push(format!("{k}={}", dirs?.join(":")));
            }
            _ => opts.push(o.to_string()),
        }
    }
    if !has_lower {
        return Err(StorageError::InvalidArgument(format!(
            "overlayfs storage at {}: options have no lowerdir=",
            s.mount_point
        )));
    }
    if let Some(rw) = rw {
        opts.push(format!("upperdir={}", rw.join("upper").display()));
        opts.push(format!("workdir={}", rw.join("work").display()));
    }
    let fstype = if s.fstype.is_empty() || s.fstype == "overlayfs" {
        "overlay"
    } else {
        &s.fstype
    };
    let source = if s.source.is_empty() { "overlay" } else { &s.source };
    Ok(MountArgs {
        source: source.to_string(),
        fstype: fstype.to_string(),
        options: mount_options(&opts, &[]),
    })
}

/// The writable layer an overlay storage `s` gets, if it asks for one.
pub fn rw_layer(s: &Storage) -> Option<PathBuf> {
    wants_rw(s).then(|| rw_dir(Path::new(&s.mount_point)))
}

/// Mounts it (making the writable layer first when asked).
pub(super) fn setup(s: &Storage, roots: &[PathBuf], rec: &mut Record) -> Result<(), StorageError> {
    let mp = Path::new(&s.mount_point);
    let rw = rw_layer(s);
    let args = mount_args(s, roots, rw.as_deref())?;
    if let Some(rw) = &rw {
        ensure_dir(&rw.join("upper"), rec)?;
        ensure_dir(&rw.join("work"), rec)?;
    }
    args.apply(mp, rec)
}

/// Removes a writable layer (after its overlay was unmounted).
pub(super) fn remove_layer(layer: &Path) -> Result<(), StorageError> {
    match std::fs::remove_dir_all(layer) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(super::mount::io("rmdir", layer.display())(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_confined_and_rw_adds_upper_and_work() {
        let d = tempfile::tempdir().unwrap();
        let roots = vec![d.path().to_path_buf()];
        std::fs::create_dir_all(d.path().join("l1")).unwrap();
        std::fs::create_dir_all(d.path().join("l2")).unwrap();
        let mut s = Storage::new();
        s.driver = "overlayfs".into();
        s.mount_point = d.path().join("mnt").display().to_string();
        s.options = vec![
            format!(
                "lowerdir={}:{}",
                d.path().join("l1").display(),
                d.path().join("l2").display()
            ),
            OVERLAY_RW_OPTION.into(),
            "index=off".into(),
        ];
        let rw = rw_dir(Path::new(&s.mount_point));
        assert_eq!(rw, d.path().join("mnt.rw"));
        let a = mount_args(&s, &roots, Some(&rw)).unwrap();
        assert_eq!(a.fstype, "overlay");
        assert_eq!(
            a.options.data,
            format!(
                "lowerdir={}:{},index=off,upperdir={}/upper,workdir={}/work",
                d.path().join("l1").display(),
                d.path().join("l2").display(),
                rw.display(),
                rw.display()
            )
        );
        s.options = vec!["lowerdir=/etc".into()];
        let e = mount_args(&s, &roots, None).unwrap_err();
        assert!(e.to_string().contains("options: lowerdir: /etc is not under"), "{e}");
        s.options = vec!["index=off".into()];
        assert!(mount_args(&s, &roots, None).is_err());
    }
}
