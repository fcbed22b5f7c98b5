//! Finding the cgroup hierarchies: mode detection (v1 / hybrid / unified) from mountinfo, and the
//! caller's own cgroup from /proc/self/cgroup.

use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use super::fs;

/// Where the cgroup hierarchies and the process files are; everything can live under a test root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoot {
    /// Prefix prepended to every mount point read from mountinfo ("/" on a real host).
    pub prefix: PathBuf,
    /// The mountinfo file (normally /proc/self/mountinfo).
    pub mountinfo: PathBuf,
    /// The caller's cgroup membership file (normally /proc/self/cgroup).
    pub self_cgroup: PathBuf,
}

impl SysRoot {
    /// The real host: mount points as they are, /proc/self/{mountinfo,cgroup}.
    pub fn host() -> Self {
        SysRoot {
            prefix: PathBuf::from("/"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            self_cgroup: PathBuf::from("/proc/self/cgroup"),
        }
    }

    /// A fake tree under `dir`: `dir/proc/self/{mountinfo,cgroup}`, mount points below `dir`.
    pub fn under(dir: &Path) -> Self {
        SysRoot {
            prefix: dir.to_path_buf(),
            mountinfo: dir.join("proc/self/mountinfo"),
            self_cgroup: dir.join("proc/self/cgroup"),
        }
    }

    /// Maps a mount point from mountinfo to a path on this root.
    pub fn resolve(&self, mount_point: &Path) -> PathBuf {
        self.prefix.join(mount_point.strip_prefix("/").unwrap_or(mount_point))
    }
}

/// How cgroups are mounted on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only cgroup v1 hierarchies.
    Legacy,
    /// v1 controller hierarchies plus a cgroup2 mount (e.g. /sys/fs/cgroup/unified); controllers are
    /// managed through v1.
    Hybrid,
    /// Only cgroup v2 (a single unified hierarchy).
    Unified,
}

/// A cgroup v1 hierarchy mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Controllers bound to it, e.g. ["cpu", "cpuacct"]; named hierarchies appear as "name=systemd".
    pub controllers: Vec<String>,
    /// Mount point, already resolved under the [`SysRoot`].
    pub mount_point: PathBuf,
    /// The cgroup path of the mount's root inside the hierarchy (mountinfo field 4).
    pub root: PathBuf,
}

/// The cgroup v2 mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Mount {
    /// Mount point, already resolved under the [`SysRoot`].
    pub mount_point: PathBuf,
    /// The cgroup path of the mount's root inside the hierarchy.
    pub root: PathBuf,
}

/// All cgroup mounts found in mountinfo, and the resulting mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    /// The mode derived from the mounts.
    pub mode: CgroupMode,
    /// v1 hierarchies with at least one controller (first mount of each controller set).
    pub v1: Vec<V1Mount>,
    /// The cgroup2 mount, if any.
    pub v2: Option<V2Mount>,
}

/// The cgroup v1 controllers the kernel knows (mount options that are not controllers are ignored).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
    "debug",
];

/// Undoes the octal escapes (`\040` for space, ...) of a mountinfo field.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Hierarchies {
    /// Reads the mounts from `root.mountinfo` and works out the mode.
    pub fn discover(root: &SysRoot) -> Result<Self> {
        let text = fs::read(&root.mountinfo)?;
        Self::parse(root, &text)
    }

    /// Parses mountinfo text (see proc(5)).
    pub fn parse(root: &SysRoot, text: &str) -> Result<Self> {
        let mut v1: Vec<V1Mount> = Vec::new();
        let mut v2 = None;
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            if sep < 5 || fields.len() < sep + 4 {
                continue;
            }
            let (mroot, mpoint) = (PathBuf::from(unescape(fields[3])), PathBuf::from(unescape(fields[4])));
            match fields[sep + 1] {
                "cgroup2" if v2.is_none() => {
                    v2 = Some(V2Mount {
                        mount_point: root.resolve(&mpoint),
                        root: mroot,
                    });
                }
                "cgroup" => {
                    let controllers: Vec<String> = fields[sep + 3]
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    let dup = v1.iter().any(|m| m.controllers.iter().any(|c| controllers.contains(c)));
                    if !controllers.is_empty() && !dup {
                        v1.push(V1Mount {
                            controllers,
                            mount_point: root.resolve(&mpoint),
                            root: mroot,
                        });
                    }
                }
                _ => {}
            }
        }
        let real_v1 = v1.iter().any(|m| m.controllers.iter().any(|c| !c.starts_with("name=")));
        let mode = match (real_v1, v2.is_some()) {
            (true, true) => CgroupMode::Hybrid,
            (true, false) => CgroupMode::Legacy,
            (false, true) => CgroupMode::Unified,
            (false, false) => {
                return Err(Error::NoCgroupMounts {
                    path: root.mountinfo.clone(),
                })
            }
        };
        Ok(Hierarchies { mode, v1, v2 })
    }

    /// The v1 mount holding `controller`, if mounted.
    pub fn v1_mount(&self, controller: &str) -> Option<&V1Mount> {
        self.v1.iter().find(|m| m.controllers.iter().any(|c| c == controller))
    }
}

/// Detects the cgroup mode of the host described by `root`.
pub fn detect_mode(root: &SysRoot) -> Result<CgroupMode> {
    Ok(Hierarchies::discover(root)?.mode)
}

/// One line of /proc/self/cgroup: hierarchy id, controllers, cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCgroup {
    /// Controllers of the hierarchy (empty for the v2 "0::" line).
    pub controllers: Vec<String>,
    /// The cgroup path inside that hierarchy.
    pub path: PathBuf,
}

/// Parses /proc/self/cgroup (or the file `root.self_cgroup`).
pub fn own_cgroups(root: &SysRoot) -> Result<Vec<OwnCgroup>> {
    let text = fs::read(&root.self_cgroup)?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::Parse {
                path: root.self_cgroup.clone(),
                msg: format!("line {line:?}"),
            });
        };
        let controllers = ctrls.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect();
        out.push(OwnCgroup {
            controllers,
            path: PathBuf::from(path),
        });
    }
    Ok(out)
}

/// Maps a cgroup path (as in /proc/self/cgroup) to a directory under a mount whose root is `mroot`.
pub(crate) fn under_mount(mount_point: &Path, mroot: &Path, cg_path: &Path) -> PathBuf {
    let rel = cg_path.strip_prefix(mroot).unwrap_or(cg_path);
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    if rel.as_os_str().is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(rel)
    }
}

/// The caller's own cgroup directory in the v1 hierarchy of `m`.
pub(crate) fn own_v1_dir(own: &[OwnCgroup], m: &V1Mount) -> Option<PathBuf> {
    let line = own
        .iter()
        .find(|o| o.controllers.iter().any(|c| m.controllers.contains(c)))?;
    Some(under_mount(&m.mount_point, &m.root, &line.path))
}

/// The caller's own cgroup directory in the v2 hierarchy `m`.
pub(crate) fn own_v2_dir(own: &[OwnCgroup], m: &V2Mount) -> Option<PathBuf> {
    let line = own.iter().find(|o| o.controllers.is_empty())?;
    Some(under_mount(&m.mount_point, &m.root, &line.path))
}
