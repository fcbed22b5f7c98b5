//! cgroup v1 manager: one directory per mounted controller hierarchy (used in legacy and hybrid mode).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxDeviceCgroup;

use super::devices::DeviceState;
use super::error::{Error, Result};
use super::mode::{own_v1_dir, Hierarchies, OwnCgroup};
use super::path::CgroupPath;
use super::{fs, FreezerState};

/// A container cgroup on cgroup v1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct V1Manager {
    /// Controller name -> cgroup directory (co-mounted controllers share a directory).
    paths: BTreeMap<String, PathBuf>,
    /// Controller name -> mount point of its hierarchy.
    mounts: BTreeMap<String, PathBuf>,
}

impl V1Manager {
    /// Resolves the container's directory in every mounted v1 controller hierarchy. The devices
    /// hierarchy is required: without it the container could open any device.
    pub fn new(h: &Hierarchies, own: &[OwnCgroup], path: &CgroupPath) -> Result<Self> {
        let mut paths = BTreeMap::new();
        let mut mounts = BTreeMap::new();
        for m in &h.v1 {
            let own_dir = own_v1_dir(own, m);
            let dir = path.dir_in(&m.mount_point, own_dir.as_deref());
            for c in m.controllers.iter().filter(|c| !c.starts_with("name=")) {
                paths.insert(c.clone(), dir.clone());
                mounts.insert(c.clone(), m.mount_point.clone());
            }
        }
        if !paths.contains_key("devices") {
            return Err(Error::MissingController {
                resource: "device rules".into(),
                controller: "devices".into(),
                detail: "no cgroup v1 hierarchy has it mounted; refusing to run containers without device isolation"
                    .into(),
            });
        }
        Ok(V1Manager { paths, mounts })
    }

    /// Builds a manager from known directories (e.g. restored after an agent restart).
    pub fn from_paths(paths: BTreeMap<String, PathBuf>, mounts: BTreeMap<String, PathBuf>) -> Self {
        V1Manager { paths, mounts }
    }

    /// Controller name -> cgroup directory.
    pub fn paths(&self) -> &BTreeMap<String, PathBuf> {
        &self.paths
    }

    /// Controller name -> hierarchy mount point.
    pub fn mounts(&self) -> &BTreeMap<String, PathBuf> {
        &self.mounts
    }

    /// The directory for `controller`, if that controller is mounted.
    pub fn path(&self, controller: &str) -> Option<&Path> {
        self.paths.get(controller).map(PathBuf::as_path)
    }

    /// The directory for `controller`, or an error saying which resource needed it.
    pub(crate) fn need(&self, controller: &str, resource: &str) -> Result<&Path> {
        self.path(controller).ok_or_else(|| Error::MissingController {
            resource: resource.into(),
            controller: controller.into(),
            detail: "no cgroup v1 hierarchy has it mounted".into(),
        })
    }

    /// Each distinct directory once.
    fn unique_dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = self.paths.values().map(PathBuf::as_path).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Creates the directory in every hierarchy; cpuset directories get cpuset.cpus/mems copied from
    /// their parents (an empty cpuset refuses tasks).
    pub fn create(&self) -> Result<()> {
        for d in self.unique_dirs() {
            fs::mkdir_all(d)?;
        }
        if let (Some(dir), Some(mount)) = (self.paths.get("cpuset"), self.mounts.get("cpuset")) {
            ensure_cpuset(mount, dir)?;
        }
        Ok(())
    }

    /// Like [`V1Manager::create`]; true when no hierarchy had the directory.
    pub fn create_new(&self) -> Result<bool> {
        let mut new = true;
        for d in self.unique_dirs() {
            new &= fs::mkdir_new(d)?;
        }
        if let (Some(dir), Some(mount)) = (self.paths.get("cpuset"), self.mounts.get("cpuset")) {
            ensure_cpuset(mount, dir)?;
        }
        Ok(new)
    }

    /// Moves process `pid` (all its threads) into the cgroup in every hierarchy.
    pub fn add_task(&self, pid: i32) -> Result<()> {
        if pid <= 0 {
            return Err(Error::invalid("pid", pid, "must be a positive process id"));
        }
        for d in self.unique_dirs() {
            fs::write(d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Moves the calling thread into the cgroup in every hierarchy by writing
    /// "0" to `tasks`. For a single-threaded caller that moves the process,
    /// and unlike a pid written to `cgroup.procs` it needs no write lock on the
    /// kernel's threadgroup semaphore, whose RCU grace period costs 5-30 ms.
    pub fn join_self(&self) -> Result<()> {
        for d in self.unique_dirs() {
            fs::write(d, "tasks", "0")?;
        }
        Ok(())
    }

    /// Replaces the device rules, writing only the changes when possible (see [`DeviceState::transition`]).
    pub fn update_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        let target = DeviceState::from_spec(rules)?;
        let dir = self.need("devices", "device rules")?;
        let current = DeviceState::from_v1_list(&fs::read(&dir.join("devices.list"))?)?;
        for w in current.transition(&target) {
            fs::write(dir, w.file(), &w.line)?;
        }
        Ok(())
    }

    /// Freezes every process (freezer.state FROZEN), retrying while it stays FREEZING as runc does;
    /// on failure the cgroup is thawed again.
    pub fn freeze(&self) -> Result<()> {
        let dir = self.need("freezer", "freeze")?;
        let start = std::time::Instant::now();
        for i in 0..1000 {
            if i % 50 == 49 {
                fs::write(dir, "freezer.state", "THAWED")?;
                std::thread::sleep(Duration::from_millis(10));
            }
            fs::write(dir, "freezer.state", "FROZEN")?;
            if i % 25 == 24 {
                std::thread::sleep(Duration::from_micros(100));
            }
            match fs::read_trim(dir, "freezer.state")?.as_str() {
                "FROZEN" => return Ok(()),
                "FREEZING" => continue,
                other => {
                    let _ = fs::write(dir, "freezer.state", "THAWED");
                    return Err(Error::Parse {
                        path: dir.join("freezer.state"),
                        msg: format!("unexpected {other:?}"),
                    });
                }
            }
        }
        let _ = fs::write(dir, "freezer.state", "THAWED");
        Err(Error::Timeout {
            path: dir.join("freezer.state"),
            want: "FROZEN".into(),
            last: "FREEZING".into(),
            ms: start.elapsed().as_millis() as u64,
        })
    }

    /// Thaws the cgroup and waits until freezer.state reads THAWED.
    pub fn thaw(&self) -> Result<()> {
        let dir = self.need("freezer", "thaw")?;
        fs::write(dir, "freezer.state", "THAWED")?;
        let path = dir.join("freezer.state");
        fs::wait_for(&path, "THAWED", Duration::from_secs(5), || {
            let s = fs::read_trim(dir, "freezer.state")?;
            Ok((s == "THAWED", s))
        })
    }

    /// The freezer state (THAWED, FREEZING, FROZEN).
    pub fn state(&self) -> Result<FreezerState> {
        let dir = self.need("freezer", "freezer state")?;
        match fs::read_trim(dir, "freezer.state")?.as_str() {
            "THAWED" => Ok(FreezerState::Thawed),
            "FREEZING" => Ok(FreezerState::Freezing),
            "FROZEN" => Ok(FreezerState::Frozen),
            other => Err(Error::Parse {
                path: dir.join("freezer.state"),
                msg: format!("unknown state {other:?}"),
            }),
        }
    }

    /// All processes in the cgroup and its descendants (read from the pids, freezer or devices hierarchy).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = ["pids", "freezer", "devices", "memory"]
            .iter()
            .find_map(|c| self.path(c))
            .or_else(|| self.unique_dirs().first().copied())
            .ok_or_else(|| Error::invalid("cgroup", "(none)", "no hierarchy"))?;
        fs::procs_recursive(dir)
    }

    /// Registers an eventfd that becomes readable on each OOM event in the memory cgroup
    /// (memory.oom_control via cgroup.event_control); also signalled when the cgroup is removed.
    /// The descriptor is close-on-exec and non-blocking; each read returns an 8-byte counter.
    pub fn oom_eventfd(&self) -> Result<OwnedFd> {
        let dir = self.need("memory", "OOM notification")?;
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            let source = std::io::Error::last_os_error();
            return Err(Error::Sys {
                syscall: "eventfd",
                what: dir.display().to_string(),
                source,
            });
        }
        // SAFETY: raw is a new descriptor returned by eventfd and owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ctl = dir.join("memory.oom_control");
        let ctl_file = File::open(&ctl).map_err(|e| Error::io("open", &ctl, e))?;
        let line = format!("{} {}", efd.as_raw_fd(), ctl_file.as_raw_fd());
        fs::write(dir, "cgroup.event_control", &line)?;
        Ok(efd)
    }

    /// How many processes the OOM killer killed in this cgroup (memory.oom_control "oom_kill").
    pub fn oom_kill_count(&self) -> Result<u64> {
        let dir = self.need("memory", "OOM kill count")?;
        Ok(fs::read_keyed(dir, "memory.oom_control")?
            .get("oom_kill")
            .copied()
            .unwrap_or(0))
    }

    /// Removes the cgroup (and sub-cgroups) from every hierarchy; tries them all, reports the first error.
    pub fn destroy(&self) -> Result<()> {
        let mut first = None;
        for d in self.unique_dirs() {
            if let Err(e) = fs::remove_cgroup(d) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Creates every directory from `mount` down to `dir`, copying empty cpuset.cpus/mems from the parent.
fn ensure_cpuset(mount: &Path, dir: &Path) -> Result<()> {
    let Ok(rel) = dir.strip_prefix(mount) else {
        return Ok(());
    };
    let mut parent = mount.to_path_buf();
    for comp in rel.components() {
        let cur = parent.join(comp);
        fs::mkdir_all(&cur)?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if fs::read_trim(&cur, file)?.is_empty() {
                let v = fs::read_trim(&parent, file)?;
                fs::write(&cur, file, &v)?;
            }
        }
        parent = cur;
    }
    Ok(())
}
