//! cgroup v2 manager: one directory in the unified hierarchy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxDeviceCgroup;

use super::devices::DeviceState;
use super::error::{Error, Result};
use super::mode::{own_v2_dir, Hierarchies, OwnCgroup};
use super::path::CgroupPath;
use super::{bpf, fs, FreezerState};

/// How long freeze/thaw wait for cgroup.events to report the new state.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// A container cgroup on cgroup v2.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct V2Manager {
    /// Mount point of the unified hierarchy.
    mount: PathBuf,
    /// The container's cgroup directory.
    path: PathBuf,
}

impl V2Manager {
    /// Resolves the container's directory in the unified hierarchy of `h`.
    pub fn new(h: &Hierarchies, own: &[OwnCgroup], path: &CgroupPath) -> Result<Self> {
        let m = h.v2.as_ref().ok_or_else(|| Error::Unsupported {
            what: "a cgroup2 mount (none found in mountinfo)".into(),
            version: "v2",
        })?;
        let own_dir = own_v2_dir(own, m);
        Ok(V2Manager {
            mount: m.mount_point.clone(),
            path: path.dir_in(&m.mount_point, own_dir.as_deref()),
        })
    }

    /// A manager for the directory `dir` inside the cgroup2 mount `mount` (e.g. the unified mount
    /// of a hybrid host, or a directory restored after an agent restart).
    pub fn with_dir(mount: &Path, dir: &Path) -> Result<Self> {
        if dir == mount || !dir.starts_with(mount) {
            return Err(Error::InvalidPath {
                path: dir.display().to_string(),
                reason: format!("not a sub-directory of the cgroup2 mount {}", mount.display()),
            });
        }
        Ok(V2Manager {
            mount: mount.to_path_buf(),
            path: dir.to_path_buf(),
        })
    }

    /// The container's cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mount point of the unified hierarchy.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Controllers enabled for this cgroup (its cgroup.controllers).
    pub fn controllers(&self) -> Result<Vec<String>> {
        Ok(fs::read_trim(&self.path, "cgroup.controllers")?
            .split_whitespace()
            .map(str::to_string)
            .collect())
    }

    /// Fails with a clear error when `controller` is not enabled for this cgroup.
    pub(crate) fn need(&self, enabled: &[String], controller: &str, resource: &str) -> Result<()> {
        if enabled.iter().any(|c| c == controller) {
            return Ok(());
        }
        Err(Error::MissingController {
            resource: resource.into(),
            controller: controller.into(),
            detail: format!(
                "not listed in {}; the parent's cgroup.subtree_control must enable it",
                self.path.join("cgroup.controllers").display()
            ),
        })
    }

    /// Creates the directory and enables every available controller in the subtree_control of each
    /// ancestor below the mount point (as runc does; controllers that cannot be enabled are skipped,
    /// and [`V2Manager::apply`] then names them).
    pub fn create(&self) -> Result<()> {
        self.create_new().map(|_| ())
    }

    /// Like [`V2Manager::create`]; true when the container's directory was not there.
    pub fn create_new(&self) -> Result<bool> {
        let available = fs::read_opt(&self.mount, "cgroup.controllers")?.unwrap_or_default();
        let wanted: Vec<String> = available.split_whitespace().map(|c| format!("+{c}")).collect();
        let rel = self.path.strip_prefix(&self.mount).unwrap_or(Path::new(""));
        let mut cur = self.mount.clone();
        let mut new = false;
        for comp in rel.components() {
            if !wanted.is_empty() {
                let enabled = fs::read_opt(&cur, "cgroup.subtree_control")?.unwrap_or_default();
                let missing: Vec<&String> = wanted
                    .iter()
                    .filter(|w| !enabled.split_whitespace().any(|e| e == &w[1..]))
                    .collect();
                if !missing.is_empty() {
                    let all = missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
                    if fs::write(&cur, "cgroup.subtree_control", &all).is_err() {
                        for one in missing {
                            let _ = fs::write(&cur, "cgroup.subtree_control", one);
                        }
                    }
                }
            }
            cur = cur.join(comp);
            new = fs::mkdir_new(&cur)?;
        }
        Ok(new)
    }

    /// The directory, open (read-only, close-on-exec), to create a process in it.
    pub fn dir_fd(&self) -> Result<std::os::fd::OwnedFd> {
        std::fs::File::open(&self.path)
            .map(std::os::fd::OwnedFd::from)
            .map_err(|e| Error::io("open", &self.path, e))
    }

    /// Moves process `pid` into the cgroup.
    pub fn add_task(&self, pid: i32) -> Result<()> {
        if pid <= 0 {
            return Err(Error::invalid("pid", pid, "must be a positive process id"));
        }
        fs::write(&self.path, "cgroup.procs", &pid.to_string())
    }

    /// Moves the calling process into the cgroup.
    pub fn join_self(&self) -> Result<()> {
        fs::write(&self.path, "cgroup.procs", "0")
    }

    /// Replaces the device filter with an eBPF program implementing `rules` (hot-plug safe: the new
    /// program is attached before the old one is detached).
    pub fn update_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        let state = DeviceState::from_spec(rules)?;
        bpf::set_device_filter(&self.path, &state)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let v = if frozen { "1" } else { "0" };
        if !fs::exists(&self.path, "cgroup.freeze") {
            return Err(Error::Unsupported {
                what: "freezing (no cgroup.freeze: kernel < 5.2)".into(),
                version: "v2",
            });
        }
        fs::write(&self.path, "cgroup.freeze", v)?;
        let events = self.path.join("cgroup.events");
        fs::wait_for(&events, &format!("frozen {v}"), FREEZE_TIMEOUT, || {
            let ev = fs::read_keyed(&self.path, "cgroup.events")?;
            let now = ev.get("frozen").copied().unwrap_or(0);
            Ok((now == u64::from(frozen), format!("frozen {now}")))
        })
    }

    /// Freezes the cgroup (cgroup.freeze 1) and waits for cgroup.events to say "frozen 1"; thaws
    /// again if that does not happen in time.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true).inspect_err(|_| {
            let _ = fs::write(&self.path, "cgroup.freeze", "0");
        })
    }

    /// Thaws the cgroup and waits for cgroup.events to say "frozen 0".
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    /// Frozen, freezing (requested but not settled) or thawed.
    pub fn state(&self) -> Result<FreezerState> {
        let Some(want) = fs::read_opt(&self.path, "cgroup.freeze")? else {
            return Ok(FreezerState::Thawed);
        };
        let frozen = fs::read_keyed(&self.path, "cgroup.events")?
            .get("frozen")
            .copied()
            .unwrap_or(0)
            == 1;
        Ok(match (want.trim() == "1", frozen) {
            (true, true) => FreezerState::Frozen,
            (true, false) => FreezerState::Freezing,
            (false, _) => FreezerState::Thawed,
        })
    }

    /// All processes in the cgroup and its descendants.
    pub fn pids(&self) -> Result<Vec<i32>> {
        fs::procs_recursive(&self.path)
    }

    /// The memory.events file to watch (inotify IN_MODIFY) for OOM kills.
    pub fn memory_events_path(&self) -> PathBuf {
        self.path.join("memory.events")
    }

    /// How many processes the OOM killer killed in this cgroup (memory.events "oom_kill").
    pub fn oom_kill_count(&self) -> Result<u64> {
        Ok(fs::read_keyed(&self.path, "memory.events")?
            .get("oom_kill")
            .copied()
            .unwrap_or(0))
    }

    /// Removes the cgroup and its sub-cgroups (the device program goes with it).
    pub fn destroy(&self) -> Result<()> {
        fs::remove_cgroup(&self.path)
    }
}
