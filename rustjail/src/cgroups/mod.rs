//! cgroups v1 and v2 for containers: mode detection, creating a container's cgroup, writing OCI
//! resources, device rules (v1 files or a v2 eBPF program, replaceable for hot-plug), moving tasks,
//! freezing, statistics, OOM notification and removal.
//!
//! Every path is taken from a [`SysRoot`], so unit tests run on a fake tree in a temporary
//! directory. On a hybrid host (v1 controllers plus /sys/fs/cgroup/unified) containers are managed
//! through v1, like runc's cgroupfs driver; [`V2Manager::with_dir`] still gives access to the
//! unified hierarchy.
//!
//! ```no_run
//! use rustjail::cgroups::Manager;
//! let m = Manager::new(Some(std::path::Path::new("/pith/c1")), "c1").unwrap();
//! m.create().unwrap();
//! m.apply(&oci_spec::runtime::LinuxResources::default()).unwrap();
//! m.add_task(1234).unwrap();
//! ```

mod bpf;
mod convert;
mod devices;
mod error;
mod fs;
mod mode;
mod path;
mod stats;
mod stats_v1;
mod stats_v2;
mod v1;
mod v1_apply;
mod v2;
mod v2_apply;

#[cfg(test)]
pub(crate) mod tests_fake_tree;
#[cfg(test)]
mod tests_fake_v1;
#[cfg(test)]
mod tests_fake_v2;
#[cfg(test)]
mod tests_real_v1;
#[cfg(test)]
mod tests_real_v2;
#[cfg(test)]
mod tests_units;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

pub use bpf::{clear_device_filters, device_program, set_device_filter, Insn};
pub use convert::{blkio_weight_to_io_weight, shares_to_weight, swap_v2};
pub use devices::{access_str, DevKind, DevRule, DeviceState, V1DeviceWrite, ACC_ALL, ACC_MKNOD, ACC_READ, ACC_WRITE};
pub use error::{Error, Result};
pub use mode::{detect_mode, own_cgroups, CgroupMode, Hierarchies, OwnCgroup, SysRoot, V1Mount, V2Mount};
pub use path::CgroupPath;
pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, CpuUsage, HugetlbStats, MemoryData, MemoryStats, PidsStats, Stats, ThrottlingData,
};
pub use v1::V1Manager;
pub use v2::V2Manager;

/// Freezer state of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    /// Processes run.
    Thawed,
    /// A freeze was requested and has not completed.
    Freezing,
    /// Every process is frozen.
    Frozen,
}

/// How to learn about OOM kills in a container's cgroup.
#[derive(Debug)]
pub enum OomWatch {
    /// v1: an eventfd (non-blocking, close-on-exec) that becomes readable on each OOM event.
    EventFd(OwnedFd),
    /// v2: the memory.events file; watch it with inotify (IN_MODIFY) and read "oom_kill".
    MemoryEvents(PathBuf),
}

/// A container's cgroup, on cgroup v1 or v2.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Manager {
    /// Legacy or hybrid host: one directory per v1 controller.
    V1(V1Manager),
    /// Unified host: one directory in the cgroup2 hierarchy.
    V2(V2Manager),
}

impl Manager {
    /// The manager for a container on this host: `cgroups_path` is OCI `linux.cgroupsPath`
    /// (absolute: from each hierarchy's root; relative or absent: under the caller's own cgroup,
    /// using `container_id` when absent). Nothing is created yet.
    pub fn new(cgroups_path: Option<&Path>, container_id: &str) -> Result<Self> {
        Self::with_root(&SysRoot::host(), cgroups_path, container_id)
    }

    /// Like [`Manager::new`], on the hierarchies described by `root`.
    pub fn with_root(root: &SysRoot, cgroups_path: Option<&Path>, container_id: &str) -> Result<Self> {
        let h = Hierarchies::discover(root)?;
        let own = own_cgroups(root)?;
        Self::on(&h, &own, cgroups_path, container_id)
    }

    /// Like [`Manager::new`], on hierarchies and own cgroups read before
    /// (taking many containers back at once reads mountinfo once).
    pub fn on(h: &Hierarchies, own: &[OwnCgroup], cgroups_path: Option<&Path>, container_id: &str) -> Result<Self> {
        let path = CgroupPath::parse(cgroups_path, container_id)?;
        match h.mode {
            CgroupMode::Unified => Ok(Manager::V2(V2Manager::new(h, own, &path)?)),
            CgroupMode::Legacy | CgroupMode::Hybrid => Ok(Manager::V1(V1Manager::new(h, own, &path)?)),
        }
    }

    /// "v1" or "v2".
    pub fn version(&self) -> &'static str {
        match self {
            Manager::V1(_) => "v1",
            Manager::V2(_) => "v2",
        }
    }

    /// Controller -> directory (v2: a single entry with the key "").
    pub fn paths(&self) -> BTreeMap<String, PathBuf> {
        match self {
            Manager::V1(m) => m.paths().clone(),
            Manager::V2(m) => BTreeMap::from([(String::new(), m.path().to_path_buf())]),
        }
    }

    /// Creates the cgroup directories.
    pub fn create(&self) -> Result<()> {
        match self {
            Manager::V1(m) => m.create(),
            Manager::V2(m) => m.create(),
        }
    }

    /// Creates the cgroup directories a container with resources `r` needs
    /// (v1: see [`V1Manager::create_new`]); true when none was there before
    /// (so the cgroup holds no process yet).
    pub fn create_new(&self, r: &LinuxResources) -> Result<bool> {
        match self {
            Manager::V1(m) => m.create_new(r),
            Manager::V2(m) => m.create_new(),
        }
    }

    /// v2: the cgroup's directory, open, for `clone3(CLONE_INTO_CGROUP)`; v1: `None`.
    pub fn v2_dir_fd(&self) -> Result<Option<OwnedFd>> {
        self.v2_dir_fd_after(|| Ok(()))
    }

    /// Like [`Manager::v2_dir_fd`]; on v2, `make` (which creates the
    /// directory) runs first. On v1 `make` does not run.
    pub fn v2_dir_fd_after<E: From<Error>>(
        &self,
        make: impl FnOnce() -> std::result::Result<(), E>,
    ) -> std::result::Result<Option<OwnedFd>, E> {
        match self {
            Manager::V1(_) => Ok(None),
            Manager::V2(m) => {
                make()?;
                Ok(Some(m.dir_fd()?))
            }
        }
    }

    /// Writes every resource of `r`; returns notes about settings that were ignored.
    pub fn apply(&self, r: &LinuxResources) -> Result<Vec<String>> {
        match self {
            Manager::V1(m) => m.apply(r),
            Manager::V2(m) => m.apply(r),
        }
    }

    /// [`Manager::apply`] for a cgroup no process has joined yet (v1: the
    /// device rules written without a read of the current ones).
    pub fn apply_unjoined(&self, r: &LinuxResources) -> Result<Vec<String>> {
        match self {
            Manager::V1(m) => m.apply_unjoined(r),
            Manager::V2(m) => m.apply(r),
        }
    }

    /// Replaces the device rules (for hot-plug into a running container).
    pub fn update_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        match self {
            Manager::V1(m) => m.update_devices(rules),
            Manager::V2(m) => m.update_devices(rules),
        }
    }

    /// Moves process `pid` into the cgroup.
    pub fn add_task(&self, pid: i32) -> Result<()> {
        match self {
            Manager::V1(m) => m.add_task(pid),
            Manager::V2(m) => m.add_task(pid),
        }
    }

    /// Moves the calling (single-threaded) process into the cgroup; cheaper
    /// than [`Manager::add_task`] on v1 (see [`V1Manager::join_self`]).
    pub fn join_self(&self) -> Result<()> {
        match self {
            Manager::V1(m) => m.join_self(),
            Manager::V2(m) => m.join_self(),
        }
    }

    /// The files [`Manager::join_self`] writes, in order.
    fn join_files(&self) -> Vec<PathBuf> {
        match self {
            Manager::V1(m) => m.join_files(),
            Manager::V2(m) => vec![m.path().join("cgroup.procs")],
        }
    }

    /// How many files [`Manager::join_files`] lists, without building them.
    fn join_count(&self) -> usize {
        match self {
            Manager::V1(m) => m.joined_count(),
            Manager::V2(_) => 1,
        }
    }

    /// Opens the files [`Manager::join_self`] writes, for a process that joins
    /// through them ([`Manager::join_self_through`]): the lookups are done by
    /// whoever opens them, off the joining process's way.
    pub fn open_join_files(&self) -> Result<Vec<OwnedFd>> {
        self.join_files()
            .iter()
            .map(|p| {
                crate::open::open(p, OFlag::O_WRONLY, Mode::empty())
                    .map_err(|e| Error::io("open", p, std::io::Error::from(e)))
            })
            .collect()
    }

    /// Like [`Manager::join_self`], through `files` from
    /// [`Manager::open_join_files`]; by path when they are not all there.
    pub fn join_self_through(&self, files: &[OwnedFd]) -> Result<()> {
        // The paths only name a failed write: a run of writes that all
        // succeed builds none (eight joins and allocations in the init).
        if files.len() != self.join_count() {
            return self.join_self();
        }
        for (i, f) in files.iter().enumerate() {
            if let Err(e) = nix::unistd::write(f, b"0") {
                let path = self.join_files().swap_remove(i);
                return Err(Error::io("write", path, std::io::Error::from(e)));
            }
        }
        Ok(())
    }

    /// Freezes every process, waiting until the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        match self {
            Manager::V1(m) => m.freeze(),
            Manager::V2(m) => m.freeze(),
        }
    }

    /// Thaws the cgroup, waiting until the kernel reports it thawed.
    pub fn thaw(&self) -> Result<()> {
        match self {
            Manager::V1(m) => m.thaw(),
            Manager::V2(m) => m.thaw(),
        }
    }

    /// The freezer state.
    pub fn state(&self) -> Result<FreezerState> {
        match self {
            Manager::V1(m) => m.state(),
            Manager::V2(m) => m.state(),
        }
    }

    /// All processes in the cgroup, recursively, sorted.
    pub fn pids(&self) -> Result<Vec<i32>> {
        match self {
            Manager::V1(m) => m.pids(),
            Manager::V2(m) => m.pids(),
        }
    }

    /// Resource usage statistics.
    pub fn stats(&self) -> Result<Stats> {
        match self {
            Manager::V1(m) => m.stats(),
            Manager::V2(m) => m.stats(),
        }
    }

    /// Sets up OOM notification: an eventfd on v1, the memory.events path on v2.
    pub fn oom_watch(&self) -> Result<OomWatch> {
        match self {
            Manager::V1(m) => m.oom_eventfd().map(OomWatch::EventFd),
            Manager::V2(m) => Ok(OomWatch::MemoryEvents(m.memory_events_path())),
        }
    }

    /// Number of OOM kills in the cgroup so far.
    pub fn oom_kill_count(&self) -> Result<u64> {
        match self {
            Manager::V1(m) => m.oom_kill_count(),
            Manager::V2(m) => m.oom_kill_count(),
        }
    }

    /// Removes the cgroup directories (retrying while busy); processes must be gone already.
    pub fn destroy(&self) -> Result<()> {
        match self {
            Manager::V1(m) => m.destroy(),
            Manager::V2(m) => m.destroy(),
        }
    }
}
