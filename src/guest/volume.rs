//! GetVolumeStats and ResizeVolume: a volume the host mounted in the guest
//! (a direct-assigned block volume, usually), by its guest path.

use std::path::{Path, PathBuf};

use super::{sys, GuestError};

/// Capacity of a volume in bytes or inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// In all.
    pub total: u64,
    /// Free.
    pub available: u64,
    /// Used (total - available).
    pub used: u64,
}

/// Bytes and inodes of the filesystem at `path`, as Kata computes them
/// (`available` is the free count, `used` is the rest). The path must open.
pub fn stats(path: &Path) -> Result<(Usage, Usage), GuestError> {
    std::fs::File::open(path).map_err(super::io("open", path.display()))?;
    let st = nix::sys::statfs::statfs(path).map_err(sys("statfs", path.display()))?;
    let bs = st.block_size() as u64;
    let total = st.blocks() * bs;
    let available = st.blocks_free() * bs;
    let bytes = Usage {
        total,
        available,
        used: total.saturating_sub(available),
    };
    let inodes = Usage {
        total: st.files(),
        available: st.files_free(),
        used: st.files().saturating_sub(st.files_free()),
    };
    Ok((bytes, inodes))
}

/// The source and filesystem type of the mount at exactly `path`
/// (the last one, when several are stacked), from `mountinfo` text.
pub fn mount_at(mountinfo: &str, path: &Path) -> Option<(String, String)> {
    mountinfo.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        if Path::new(f.get(4)?) != path {
            return None;
        }
        Some((f.get(sep + 2)?.to_string(), f.get(sep + 1)?.to_string()))
    })
}

/// How to grow a mounted filesystem: the tool and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resize {
    /// `resize2fs` or `xfs_growfs` (looked up in `PATH`).
    pub tool: &'static str,
    /// Its arguments.
    pub args: Vec<String>,
    /// The mounted path, for messages.
    pub path: PathBuf,
    /// The device mounted there.
    pub dev: String,
    /// Its filesystem type.
    pub fstype: String,
}

/// How to grow the filesystem mounted at `path` to `size` bytes (0: to its
/// whole device), after the host grew the device: `resize2fs` for ext2/3/4,
/// `xfs_growfs` for xfs (online, while mounted). The caller runs the tool
/// (`crate::tool`: the agent's reaper takes its exit) and reads the outcome
/// with [`Resize::outcome`].
pub fn resize_plan(path: &Path, size: u64) -> Result<Resize, GuestError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(super::io("read", "/proc/self/mountinfo"))?;
    let path: PathBuf = path.components().collect();
    let (dev, fstype) = mount_at(&info, &path).ok_or_else(|| {
        GuestError::InvalidArgument(format!("ResizeVolume: nothing is mounted at {}", path.display()))
    })?;
    let (tool, args) = match fstype.as_str() {
        "ext2" | "ext3" | "ext4" => {
            let mut a = vec![dev.clone()];
            if size > 0 {
                a.push(format!("{}K", size / 1024));
            }
            ("resize2fs", a)
        }
        "xfs" => {
            let mut a = Vec::new();
            if size > 0 {
                let bs = nix::sys::statfs::statfs(&path)
                    .map_err(sys("statfs", path.display()))?
                    .block_size() as u64;
                a.extend(["-D".to_string(), (size / bs.max(1)).to_string()]);
            }
            a.push(path.display().to_string());
            ("xfs_growfs", a)
        }
        other => {
            return Err(GuestError::InvalidArgument(format!(
                "ResizeVolume: {} is {other} on {dev}; only ext2/3/4 and xfs can be resized",
                path.display()
            )))
        }
    };
    Ok(Resize {
        tool,
        args,
        path,
        dev,
        fstype,
    })
}

impl Resize {
    /// The error for a tool that could not be started (`source` from `execve`).
    pub fn spawn_error(&self, source: std::io::Error) -> GuestError {
        if source.kind() == std::io::ErrorKind::NotFound {
            GuestError::FailedPrecondition(format!(
                "ResizeVolume: {} is not in the guest image (needed for {} at {})",
                self.tool,
                self.fstype,
                self.path.display()
            ))
        } else {
            super::io("execve", self.tool)(source)
        }
    }

    /// The outcome of the tool's run: its exit (`Ok(())` for 0) and stderr.
    pub fn outcome(&self, exit: Result<(), String>, stderr: &str) -> Result<(), GuestError> {
        exit.map_err(|how| {
            GuestError::Internal(format!(
                "ResizeVolume: {} {} failed ({how}): {}",
                self.tool,
                self.dev,
                stderr.trim()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_directory_and_mountinfo_lookup() {
        let d = tempfile::tempdir().unwrap();
        let (b, i) = stats(d.path()).unwrap();
        assert!(b.total > 0 && b.used <= b.total && b.available <= b.total);
        assert_eq!(b.used + b.available, b.total);
        assert_eq!(i.used + i.available, i.total);
        let e = stats(&d.path().join("missing")).unwrap_err();
        assert!(e.to_string().starts_with("open("), "{e}");

        let info = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    30 22 7:3 / /run/kata-containers/sandbox/storage/vol rw,relatime - ext4 /dev/loop3 rw\n";
        assert_eq!(
            mount_at(info, Path::new("/run/kata-containers/sandbox/storage/vol")),
            Some(("/dev/loop3".into(), "ext4".into()))
        );
        assert_eq!(mount_at(info, Path::new("/nope")), None);
    }
}
