//! The filesystems init mounts before anything else runs: `/proc`, `/sys`,
//! `/dev` and its `pts` and `shm`, `/run`, and the cgroup hierarchies.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

/// A mount that failed.
#[derive(Debug, thiserror::Error)]
#[error("mount {fstype} on {target} (options {options:?}): {source}")]
pub struct MountError {
    /// Filesystem type.
    pub fstype: String,
    /// Mount point.
    pub target: PathBuf,
    /// Data string given.
    pub options: String,
    /// The errno.
    pub source: nix::Error,
}

/// One filesystem to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Source name shown in `/proc/mounts`.
    pub source: &'static str,
    /// Mount point.
    pub target: String,
    /// Filesystem type.
    pub fstype: &'static str,
    /// Mount flags.
    pub flags: MsFlags,
    /// Filesystem options.
    pub data: String,
}

fn m(source: &'static str, target: &str, fstype: &'static str, flags: MsFlags, data: &str) -> Mount {
    Mount {
        source,
        target: target.to_string(),
        fstype,
        flags,
        data: data.to_string(),
    }
}

/// The mounts of a fresh guest, in order (each target lies on an earlier one).
pub fn base_mounts() -> Vec<Mount> {
    let hard = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    vec![
        m("proc", "/proc", "proc", hard, ""),
        m("sysfs", "/sys", "sysfs", hard, ""),
        m("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, "mode=0755"),
        m(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "gid=5,mode=0620,ptmxmode=0666",
        ),
        m(
            "shm",
            "/dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=1777",
        ),
        m(
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=0755",
        ),
    ]
}

/// Whether the kernel command line asks for the unified (v2) cgroup hierarchy.
pub fn wants_cgroup_v2(cmdline: &str) -> bool {
    crate::config::cmdline::parse(cmdline)
        .iter()
        .any(|(k, v)| match (k.as_str(), v.as_deref()) {
            ("cgroup_no_v1", Some(v)) => v.split(',').any(|c| c == "all"),
            ("systemd.unified_cgroup_hierarchy", v) => matches!(v, None | Some("1") | Some("true") | Some("yes")),
            _ => false,
        })
}

/// The cgroup mounts: one cgroup2 at `/sys/fs/cgroup`, or a tmpfs there with a
/// v1 hierarchy per enabled controller of `/proc/cgroups` (`cpu,cpuacct` and
/// `net_cls,net_prio` share one, as systemd mounts them).
pub fn cgroup_mounts(v2: bool, proc_cgroups: &str) -> Vec<Mount> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if v2 {
        return vec![m("cgroup2", "/sys/fs/cgroup", "cgroup2", flags, "")];
    }
    let mut out = vec![m("tmpfs", "/sys/fs/cgroup", "tmpfs", flags, "mode=0755")];
    let enabled: Vec<&str> = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == "1").then_some(f[0])
        })
        .collect();
    let mut done: Vec<&str> = Vec::new();
    for c in &enabled {
        if done.contains(c) {
            continue;
        }
        let group: Vec<&str> = match *c {
            "cpu" | "cpuacct" => vec!["cpu", "cpuacct"],
            "net_cls" | "net_prio" => vec!["net_cls", "net_prio"],
            other => vec![other],
        };
        let group: Vec<&str> = group.into_iter().filter(|g| enabled.contains(g)).collect();
        done.extend(&group);
        let name = group.join(",");
        out.push(m("cgroup", &format!("/sys/fs/cgroup/{name}"), "cgroup", flags, &name));
    }
    out
}

/// Symlinks from each controller of a joint v1 hierarchy to it (`cpu -> cpu,cpuacct`).
pub fn cgroup_v1_links(mounts: &[Mount]) -> Vec<(PathBuf, String)> {
    mounts
        .iter()
        .filter(|m| m.fstype == "cgroup" && m.data.contains(','))
        .flat_map(|m| {
            m.data
                .split(',')
                .map(|c| (Path::new("/sys/fs/cgroup").join(c), m.data.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Mount points already in use, from `/proc/self/mounts` text.
pub fn mounted(proc_mounts: &str) -> Vec<String> {
    proc_mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// Mounts `mnt` (creating its directory) unless something is mounted there already.
pub fn apply(mnt: &Mount, already: &[String]) -> Result<bool, MountError> {
    if already.contains(&mnt.target) {
        return Ok(false);
    }
    let _ = std::fs::create_dir_all(&mnt.target);
    let data = (!mnt.data.is_empty()).then_some(mnt.data.as_str());
    mount(Some(mnt.source), mnt.target.as_str(), Some(mnt.fstype), mnt.flags, data).map_err(|source| MountError {
        fstype: mnt.fstype.to_string(),
        target: PathBuf::from(&mnt.target),
        options: mnt.data.clone(),
        source,
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_when_the_command_line_says_so() {
        assert!(wants_cgroup_v2("console=ttyS0 cgroup_no_v1=all quiet"));
        assert!(wants_cgroup_v2("systemd.unified_cgroup_hierarchy=1"));
        assert!(wants_cgroup_v2("systemd.unified_cgroup_hierarchy"));
        assert!(!wants_cgroup_v2("systemd.unified_cgroup_hierarchy=0"));
        assert!(!wants_cgroup_v2("cgroup_no_v1=memory console=ttyS0"));
        assert!(!wants_cgroup_v2(""));
    }

    #[test]
    fn v1_hierarchies_from_proc_cgroups() {
        let proc_cgroups = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                            cpuset\t0\t1\t1\ncpu\t0\t1\t1\ncpuacct\t0\t1\t1\n\
                            memory\t0\t1\t0\nnet_cls\t0\t1\t1\npids\t0\t1\t1\n";
        let mounts = cgroup_mounts(false, proc_cgroups);
        let targets: Vec<&str> = mounts.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/net_cls",
                "/sys/fs/cgroup/pids"
            ]
        );
        assert_eq!(mounts[2].data, "cpu,cpuacct");
        let links = cgroup_v1_links(&mounts);
        assert_eq!(
            links,
            [
                (PathBuf::from("/sys/fs/cgroup/cpu"), "cpu,cpuacct".to_string()),
                (PathBuf::from("/sys/fs/cgroup/cpuacct"), "cpu,cpuacct".to_string())
            ]
        );
        let v2 = cgroup_mounts(true, proc_cgroups);
        assert_eq!(v2.len(), 1);
        assert_eq!(v2[0].fstype, "cgroup2");
    }

    #[test]
    fn base_mounts_nest_in_order() {
        let mounts = base_mounts();
        for (i, mnt) in mounts.iter().enumerate() {
            let parent = Path::new(&mnt.target).parent().unwrap();
            if parent != Path::new("/") {
                assert!(
                    mounts[..i].iter().any(|p| Path::new(&p.target) == parent),
                    "{}",
                    mnt.target
                );
            }
        }
        let already = mounted("proc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\n");
        assert_eq!(already, ["/proc", "/sys"]);
        assert!(!apply(&mounts[0], &already).unwrap());
    }
}
